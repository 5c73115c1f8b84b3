//! Mounts that clean up after themselves: tmpfs, kernel EROFS (file-backed or through a loop
//! device), bind mounts and FUSE daemons.
//!
//! Contract: each mount lives on its own fresh temporary directory (a bind mount on the
//! given target) and is unmounted on drop, lazily if it is busy; a drop never panics
//! unless a FUSE daemon was asked to exit with its unmount ([`FuseMount::require_exit`])
//! and did not. Creating a mount needs root.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::mount::MountFlags;

use crate::tools::{require_root, run, run_unchecked, try_run};

/// A fresh temporary directory to mount on, named `prefix...`.
pub fn mount_point(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create mount point")
}

/// Unmounts `dir`, falling back to a lazy unmount if it is busy. Never panics (used in Drop).
pub fn unmount(dir: &Path) {
    use rustix::mount::{UnmountFlags, unmount};
    if unmount(dir, UnmountFlags::empty()).is_err() {
        let _ = unmount(dir, UnmountFlags::DETACH);
    }
}

/// Whether `dir` is the mount point of a filesystem of type `fstype` (as /proc/self/mountinfo
/// names it, e.g. `fuse.ishare`).
pub fn is_mounted(dir: &Path, fstype: &str) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = dir.to_str().expect("mount point is UTF-8");
    let kind = format!(" - {fstype} ");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want) && l.contains(&kind))
}

/// mount(2), panicking with a readable message on failure.
fn mount(source: &Path, target: &Path, fstype: &str, flags: MountFlags, data: &str) {
    let cdata = CString::new(data).expect("mount options without NUL");
    rustix::mount::mount(source, target, fstype, flags, cdata.as_c_str()).unwrap_or_else(|e| {
        panic!(
            "mount -t {fstype} -o {data} {} {}: {e} (see dmesg)",
            source.display(),
            target.display()
        )
    });
}

/// A mount on a fresh temporary directory, unmounted on drop; `K` says which kind
/// ([`Tmpfs`], [`ErofsMount`], [`LoopMount`]) and so how it is made.
#[derive(Debug)]
pub struct Mount<K> {
    // Dropped (removed) after `Drop::drop` unmounted it.
    dir: tempfile::TempDir,
    kind: std::marker::PhantomData<K>,
}

impl<K> Mount<K> {
    fn on(dir: tempfile::TempDir) -> Mount<K> {
        Mount {
            dir,
            kind: std::marker::PhantomData,
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates the directory `name` in the mount and returns its path.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl<K> Drop for Mount<K> {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// The kinds of [`Mount`].
#[derive(Debug)]
pub enum TmpfsKind {}
#[derive(Debug)]
pub enum ErofsKind {}
#[derive(Debug)]
pub enum LoopKind {}

/// A fresh tmpfs (at most 2 GiB, memory used only as it fills). tmpfs holds `user.`,
/// `trusted.` and `security.` xattrs up to 64 KiB (ext4 limits them to a block), POSIX
/// ACLs, device nodes and sockets.
pub type Tmpfs = Mount<TmpfsKind>;

impl Mount<TmpfsKind> {
    pub fn new() -> Tmpfs {
        require_root();
        let dir = mount_point("ishare-tmpfs-");
        mount(
            Path::new("tmpfs"),
            dir.path(),
            "tmpfs",
            MountFlags::empty(),
            "size=2g,mode=0755",
        );
        Mount::on(dir)
    }
}

impl Default for Tmpfs {
    fn default() -> Tmpfs {
        Tmpfs::new()
    }
}

/// A read-only kernel mount of an EROFS image. mount(2) is called directly with the image
/// file as source, which gives EROFS's file-backed mode: mount(8) would set up a loop device
/// instead, and in that mode `device=` needs block devices, not files.
pub type ErofsMount = Mount<ErofsKind>;

impl Mount<ErofsKind> {
    /// `devices` are the extra blob devices, in order (`-o device=PATH` each).
    pub fn new(image: &Path, devices: &[PathBuf]) -> ErofsMount {
        require_root();
        let dir = mount_point("ishare-erofs-");
        let opts: Vec<String> = devices
            .iter()
            .map(|d| format!("device={}", d.to_str().expect("device path is UTF-8")))
            .collect();
        mount(
            image,
            dir.path(),
            "erofs",
            MountFlags::RDONLY,
            &opts.join(","),
        );
        Mount::on(dir)
    }
}

/// A loop mount by the host kernel (`mount -t erofs -o ro,loop`; the kernel frees the loop
/// device with the unmount).
pub type LoopMount = Mount<LoopKind>;

impl Mount<LoopKind> {
    /// Mounts `image`; the error holds mount(8)'s output.
    pub fn new(image: &Path) -> Result<LoopMount, String> {
        let dir = mount_point("ishare-loop-");
        try_run(
            Command::new("mount")
                .args(["-t", "erofs", "-o", "ro,loop"])
                .arg(image)
                .arg(dir.path()),
        )?;
        Ok(Mount::on(dir))
    }
}

/// A bind mount of `src` onto `dst`, undone on drop.
#[derive(Debug)]
pub struct BindMount(PathBuf);

impl BindMount {
    pub fn new(src: &Path, dst: &Path) -> BindMount {
        rustix::mount::mount_bind(src, dst).expect("bind mount");
        BindMount(dst.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// A FUSE filesystem served by a daemon (for the tests, `ishare mount`), unmounted on drop.
///
/// The daemon's stderr (or its `log=` file) goes to `<mount point>.log`, removed on drop
/// unless `ISHARE_TEST_KEEP_LOGS` is set.
#[derive(Debug)]
pub struct FuseMount {
    dir: tempfile::TempDir,
    /// The daemon, when it runs in the foreground as our child.
    child: Option<Child>,
    log: PathBuf,
    /// Fail (on drop or [`FuseMount::unmount`]) if the daemon does not exit after the
    /// unmount.
    require_exit: bool,
}

/// How long a daemon may take to mount, and to exit after its unmount.
const DAEMON_WAIT: Duration = Duration::from_secs(20);

impl FuseMount {
    /// Runs the command `make(mount point, log file)` returns, which must mount a
    /// `fstype` filesystem on the mount point and return (a daemon that detaches).
    pub fn detached(fstype: &str, make: impl FnOnce(&Path, &Path) -> Command) -> FuseMount {
        let dir = mount_point("ishare-mnt-");
        let log = dir.path().with_extension("log");
        run(&mut make(dir.path(), &log));
        assert!(
            is_mounted(dir.path(), fstype),
            "not mounted after the mount command returned"
        );
        FuseMount {
            dir,
            child: None,
            log,
            require_exit: false,
        }
    }

    /// Spawns the command `make(mount point)` returns as a child that serves in the
    /// foreground (its stderr to the log), and waits until the `fstype` mount is visible.
    pub fn foreground(fstype: &str, make: impl FnOnce(&Path) -> Command) -> FuseMount {
        let dir = mount_point("ishare-mnt-");
        let log = dir.path().with_extension("log");
        let child = make(dir.path())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create the daemon's log"))
            .spawn()
            .expect("spawn the FUSE daemon");
        let mut m = FuseMount {
            dir,
            child: Some(child),
            log,
            require_exit: false,
        };
        let start = Instant::now();
        while !is_mounted(m.path(), fstype) {
            if let Some(st) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "the FUSE daemon exited ({st}) before mounting: {}",
                    m.log_text()
                );
            }
            assert!(
                start.elapsed() < DAEMON_WAIT,
                "the FUSE daemon did not mount: {}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// Takes over a FUSE mount already made on `dir` (no daemon child, no log).
    pub fn adopt(dir: tempfile::TempDir) -> FuseMount {
        FuseMount {
            dir,
            child: None,
            log: PathBuf::from("/nonexistent"),
            require_exit: false,
        }
    }

    /// Makes the unmount (on drop too) fail the test if the foreground daemon does not
    /// exit within 20 s of it.
    pub fn require_exit(mut self) -> FuseMount {
        self.require_exit = true;
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails unless `rel` in the mount reads as `want` (showing the daemon's log).
    pub fn assert_reads(&self, rel: &str, want: &[u8]) {
        let p = self.path().join(rel);
        let got = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        assert!(
            got == want,
            "wrong bytes in {rel} through {}\n{}",
            self.path().display(),
            self.log_text()
        );
    }

    /// The foreground daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("foreground mount").id()
    }

    /// Unmounts and waits for a foreground daemon to exit.
    pub fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        unmount(self.dir.path());
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > DAEMON_WAIT {
                    let _ = c.kill();
                    let _ = c.wait();
                    if self.require_exit && !std::thread::panicking() {
                        panic!("the mount daemon did not exit after unmount");
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `BIN mount --dedicated -o OPTS,log=LOG IMAGE DIR`: an `ishare mount` with a daemon of
/// its own, which detaches; `bin` is the `ishare` binary (see [`crate::ishare_bin`]).
pub fn ishare_mount(bin: &Path, image: &Path, opts: &str) -> FuseMount {
    FuseMount::detached("fuse.ishare", |dir, log| {
        let mut c = Command::new(bin);
        c.args([
            "mount",
            "--dedicated",
            "-o",
            &format!("{opts},log={}", log.display()),
        ])
        .arg(image)
        .arg(dir);
        c
    })
}

/// `[WRAPPER...] BIN mount -f -o OPTS IMAGE DIR` as a child process (e.g. under `prlimit`),
/// once its mount is visible.
pub fn ishare_mount_foreground(
    bin: &Path,
    wrapper: &[&str],
    image: &Path,
    opts: &str,
) -> FuseMount {
    FuseMount::foreground("fuse.ishare", |dir| {
        let mut c = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.args(["mount", "-f", "-o", opts]).arg(image).arg(dir);
        c
    })
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("ISHARE_TEST_KEEP_LOGS").is_none() {
            let _ = fs::remove_file(&self.log);
        }
    }
}

/// A node daemon (`ishare daemon`) of a test, on a socket of its own: started as a
/// child process (`start`) or found through the socket's lock file once some
/// `ishare mount` started it (`at`); stopped (SIGTERM, which detaches its mounts) and
/// waited for when dropped.
#[derive(Debug)]
pub struct NodeDaemon {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl NodeDaemon {
    /// A socket path in a fresh directory, no daemon yet (the first `ishare mount
    /// --socket` starts one).
    pub fn at() -> NodeDaemon {
        let dir = tempfile::Builder::new()
            .prefix("ishare-node-")
            .tempdir()
            .expect("socket directory");
        let log = dir.path().join("daemon.log");
        NodeDaemon {
            dir,
            child: None,
            log,
        }
    }

    /// `BIN daemon --socket S --log L` in the foreground, once it listens.
    pub fn start(bin: &Path) -> NodeDaemon {
        let mut d = NodeDaemon::at();
        let child = Command::new(bin)
            .arg("daemon")
            .arg("--socket")
            .arg(d.socket())
            .arg("--log")
            .arg(&d.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ishare daemon");
        d.child = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(d.socket()).is_err() {
            assert!(start.elapsed() < DAEMON_WAIT, "the daemon does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// `BIN mount --socket SOCKET -o OPTS IMAGE DIR`, the domain id in the
    /// environment (never on a command line): its output, whatever its status.
    pub fn mount(&self, bin: &Path, domain: &str, image: &Path, dir: &Path, opts: &str) -> Output {
        run_unchecked(
            Command::new(bin)
                .env("ISHARE_DOMAIN_ID", domain)
                .arg("mount")
                .arg("--socket")
                .arg(self.socket())
                .args(["-o", opts])
                .arg(image)
                .arg(dir),
        )
    }

    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("daemon.sock")
    }

    /// Its log file (when started here).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid, from its lock file.
    pub fn pid(&self) -> Option<u32> {
        let mut lock = self.socket().into_os_string();
        lock.push(".lock");
        fs::read_to_string(lock).ok()?.trim().parse().ok()
    }

    /// Pids of the fd holders of its socket (`ishare fd-holder --socket S.holder`).
    pub fn holders(&self) -> Vec<u32> {
        let mut needle = self.socket().into_os_string().into_encoded_bytes();
        needle.extend_from_slice(b".holder");
        fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.get(1) == Some(&&b"fd-holder"[..]) && args.contains(&needle.as_slice())
                })
            })
            .collect()
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = self
            .pid()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Whether the process `pid` still runs.
    pub fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        let pid = self.pid();
        // A signal stops the daemon but keeps its mounts (held for the next daemon): a
        // `stop` request unmounts them too, as a test's end wants.
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(DAEMON_WAIT));
            if s.write_all(b"{\"op\":\"stop\"}\n").is_ok() {
                let _ = s.read(&mut [0u8; 256]);
            }
        }
        self.signal(rustix::process::Signal::TERM);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        } else if let Some(pid) = pid {
            let start = Instant::now();
            while NodeDaemon::alive(pid) && start.elapsed() < DAEMON_WAIT {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Fresh mount points that are unmounted (lazily, if an ishare mount is still there)
/// and removed when dropped.
#[derive(Debug)]
pub struct MountPoints(Vec<tempfile::TempDir>);

impl MountPoints {
    /// `n` mount points named `PREFIX…`.
    pub fn new(prefix: &str, n: usize) -> MountPoints {
        MountPoints((0..n).map(|_| mount_point(prefix)).collect())
    }

    /// The `i`-th.
    pub fn path(&self, i: usize) -> &Path {
        self.0[i].path()
    }
}

impl Drop for MountPoints {
    fn drop(&mut self) {
        for d in &self.0 {
            if is_mounted(d.path(), "fuse.ishare") {
                unmount(d.path());
            }
        }
    }
}
