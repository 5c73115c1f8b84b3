//! Real containerd 2.1.9 (unpacked by `scripts/install-deps.sh` from Debian sid's
//! package) with runc, for the snapshotter's tests: a private containerd (its own root,
//! state, sockets and config), an `ishare snapshotter` process, OCI images built offline
//! with umoci, and the page cache charged to a container's memory cgroup.
//!
//! Contract: everything lives under a directory the test owns; drops kill the
//! containers, stop the processes this module started (by their pid) and unmount what
//! is left under that directory, never panicking.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::{cache_dir, require_tool, run, run_unchecked};

/// The namespace the tests use (ctr's default).
pub const NAMESPACE: &str = "default";

/// The directory of `containerd`, `ctr` and `containerd-shim-runc-v2`.
pub fn bin_dir() -> PathBuf {
    let dir = cache_dir().join("containerd-2.1.9/usr/bin");
    for b in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        require_tool(dir.join(b));
    }
    require_tool(PathBuf::from("/usr/sbin/runc"));
    dir
}

/// PATH with containerd's directory first (containerd finds its shim, the shim runc),
/// then mkfs.erofs 1.9.4 (for the `erofs` differ's fingerprints).
fn path_env() -> std::ffi::OsString {
    let mut p = bin_dir().into_os_string();
    p.push(":");
    p.push(crate::tools::mkfs_194().parent().unwrap());
    p.push(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    p
}

fn wait_for_socket(socket: &Path, child: &mut Child, what: &str, log: &Path) {
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {}:\n{}",
                socket.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} does not listen on {}:\n{}",
            socket.display(),
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Unmounts (lazily, deepest first) every mount under `dir`.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A private containerd.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with everything under `dir`, the proxy snapshotter `ishare` at
    /// `proxy`, and import unpacking for linux/amd64 into `ishare`, `overlayfs` and
    /// `erofs` (by `ctr images import --snapshotter`; erofs layers with fingerprints).
    pub fn start(dir: &Path, proxy: &Path) -> Containerd {
        Containerd::start_with(dir, &[("ishare", proxy, "walking")])
    }

    /// As [`Containerd::start`] with several proxy snapshotters: (name, socket, the
    /// differ that unpacks into it: `walking`, or `erofs` for the EROFS differ's fast
    /// path).
    pub fn start_with(dir: &Path, proxies: &[(&str, &Path, &str)]) -> Containerd {
        fs::create_dir_all(dir).unwrap();
        let mut extra = String::new();
        for (name, socket, differ) in proxies {
            extra += &format!(
                "[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = \"{}\"\n\
                 [[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]\n  \
                 platform = \"linux/amd64\"\n  snapshotter = \"{name}\"\n  differ = \"{differ}\"\n",
                socket.display()
            );
        }
        let d = dir.display();
        let config = format!(
            r#"version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
{extra}[[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
    differ = "walking"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "erofs"
    differ = "erofs"
[plugins."io.containerd.differ.v1.erofs"]
  mkfs_options = ["--xattr-inode-digest"]
"#
        );
        let cfg = dir.join("config.toml");
        fs::write(&cfg, config).unwrap();
        let log = dir.join("containerd.log");
        let out = fs::File::create(&log).unwrap();
        let mut child = Command::new(bin_dir().join("containerd"))
            .arg("--config")
            .arg(&cfg)
            .env("PATH", path_env())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start containerd");
        wait_for_socket(&dir.join("containerd.sock"), &mut child, "containerd", &log);
        Containerd {
            dir: dir.to_path_buf(),
            child: Some(child),
        }
    }

    /// `ctr -a SOCKET` with containerd's PATH.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(bin_dir().join("ctr"));
        c.arg("-a")
            .arg(self.dir.join("containerd.sock"))
            .env("PATH", path_env());
        c
    }

    /// Runs `ctr ARGS`, panicking with its output (and containerd's log) on failure;
    /// returns its standard output.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = run_unchecked(self.ctr().args(args));
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}{}\n--- containerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            crate::tools::tail(&fs::read(self.dir.join("containerd.log")).unwrap_or_default())
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Where a running container's root filesystem is mounted.
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(NAMESPACE)
            .join(id)
            .join("rootfs")
    }

    /// Starts container `id` of `image` on `snapshotter` in the background, running
    /// `sh -c SCRIPT`.
    pub fn run_detached(&self, snapshotter: &str, image: &str, id: &str, script: &str) {
        self.ctr_ok(&[
            "run",
            "-d",
            "--snapshotter",
            snapshotter,
            image,
            id,
            "sh",
            "-c",
            script,
        ]);
    }

    /// Waits until the running container `id` has written `file` (a path in its root
    /// filesystem) with a newline at its end; returns its content.
    pub fn wait_file(&self, id: &str, file: &str) -> String {
        let p = self.rootfs(id).join(file.trim_start_matches('/'));
        let start = Instant::now();
        loop {
            if let Ok(s) = fs::read_to_string(&p)
                && s.ends_with('\n')
            {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "container {id} did not write {file}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills and deletes every container.
    pub fn remove_containers(&self) {
        let out = run_unchecked(self.ctr().args(["containers", "ls", "-q"]));
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = run_unchecked(self.ctr().args(["tasks", "kill", "-s", "KILL", id]));
            let start = Instant::now();
            while !run_unchecked(self.ctr().args(["tasks", "rm", "-f", id]))
                .status
                .success()
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = run_unchecked(self.ctr().args(["containers", "rm", id]));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_containers();
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
        unmount_under(&self.dir);
    }
}

/// Bytes of page cache charged to container `id`'s memory cgroup (`ctr run` puts it
/// at `/NAMESPACE/ID`): `cache` on cgroup v1, `file` on v2.
pub fn container_page_cache(id: &str) -> u64 {
    let (stat, key) = if Path::new("/sys/fs/cgroup/memory").is_dir() {
        (
            PathBuf::from(format!(
                "/sys/fs/cgroup/memory/{NAMESPACE}/{id}/memory.stat"
            )),
            "cache",
        )
    } else {
        (
            PathBuf::from(format!("/sys/fs/cgroup/{NAMESPACE}/{id}/memory.stat")),
            "file",
        )
    };
    let s = fs::read_to_string(&stat).unwrap_or_else(|e| panic!("{}: {e}", stat.display()));
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", stat.display()))
}

/// Drops the page cache of every regular file under `dir` on `dir`'s filesystem
/// (mounts below it are skipped), so a measurement starts cold without dropping the
/// whole machine's cache. Each file is synced first: dirty pages would stay.
pub fn evict_under(dir: &Path) {
    let dev = fs::metadata(dir).unwrap().dev();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file()
                && let Ok(f) = fs::File::open(e.path())
            {
                let _ = f.sync_data();
                let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
            }
        }
    }
}

/// `ishare snapshotter` as a process (log at debug level in `DIR/snapshotter.log`).
#[derive(Debug)]
pub struct SnapshotterProc {
    cmd_args: Vec<std::ffi::OsString>,
    bin: PathBuf,
    domain: String,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl SnapshotterProc {
    /// Starts `BIN snapshotter` with its state in `root`, listening on `socket`, layers
    /// mounted through the node daemon at `daemon_socket` into `store`, in `domain`
    /// (given in ISHARE_DOMAIN_ID).
    pub fn start(
        bin: &Path,
        root: &Path,
        socket: &Path,
        daemon_socket: &Path,
        store: &Path,
        domain: &str,
    ) -> SnapshotterProc {
        let cmd_args = vec![
            "snapshotter".into(),
            "--root".into(),
            root.as_os_str().to_owned(),
            "--address".into(),
            socket.as_os_str().to_owned(),
            "--socket".into(),
            daemon_socket.as_os_str().to_owned(),
            "--store".into(),
            store.as_os_str().to_owned(),
        ];
        let mut p = SnapshotterProc {
            cmd_args,
            bin: bin.to_path_buf(),
            domain: domain.to_string(),
            socket: socket.to_path_buf(),
            log: root.with_extension("log"),
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "--- start").unwrap();
        let mut child = Command::new(&self.bin)
            .args(&self.cmd_args)
            .env("ISHARE_DOMAIN_ID", &self.domain)
            .env("ISHARE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ishare snapshotter");
        wait_for_socket(&self.socket, &mut child, "ishare snapshotter", &self.log);
        self.child = Some(child);
    }

    /// Stops it (SIGTERM) and starts it again.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
        self.spawn();
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SnapshotterProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
    }
}

/// An OCI image layout built with umoci.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// `umoci init` in `dir` (which must not exist).
    pub fn init(dir: &Path) -> OciLayout {
        run(Command::new(umoci()).args(["init", "--layout"]).arg(dir));
        OciLayout {
            dir: dir.to_path_buf(),
        }
    }

    fn image_ref(&self, name: &str) -> String {
        format!("{}:{name}", self.dir.display())
    }

    /// A new image `name`: one layer per `layers` entry, each made by the closure from
    /// the root filesystem so far (umoci diffs it: a deleted file becomes a whiteout);
    /// the command is `/bin/sh`.
    pub fn image(&self, name: &str, layers: &[&dyn Fn(&Path)]) {
        run(Command::new(umoci())
            .args(["new", "--image"])
            .arg(self.image_ref(name)));
        for make in layers {
            let bundle = self.dir.with_extension(format!("bundle-{name}"));
            let _ = fs::remove_dir_all(&bundle);
            run(Command::new(umoci())
                .args(["unpack", "--image"])
                .arg(self.image_ref(name))
                .arg(&bundle));
            make(&bundle.join("rootfs"));
            run(Command::new(umoci())
                .args(["repack", "--image"])
                .arg(self.image_ref(name))
                .arg(&bundle));
            fs::remove_dir_all(&bundle).unwrap();
        }
        run(Command::new(umoci())
            .args(["config", "--config.cmd", "/bin/sh", "--image"])
            .arg(self.image_ref(name)));
    }

    /// Adds the tar archive `layer` as-is (whiteout files and all) as a layer of `name`.
    pub fn add_tar_layer(&self, name: &str, layer: &Path) {
        run(Command::new(umoci())
            .args(["raw", "add-layer", "--image"])
            .arg(self.image_ref(name))
            .arg(layer));
    }

    /// The layout as a tar archive at `out` (what `ctr images import` reads).
    pub fn archive(&self, out: &Path) {
        run(Command::new("tar")
            .arg("-C")
            .arg(&self.dir)
            .arg("-cf")
            .arg(out)
            .arg("."));
    }
}

fn umoci() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/umoci"))
}

/// The busybox-static binary with the applets the tests' scripts use linked next to it,
/// in `rootfs/bin`.
pub fn install_busybox(rootfs: &Path) {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(
        require_tool(PathBuf::from("/bin/busybox")),
        bin.join("busybox"),
    )
    .unwrap();
    for applet in [
        "sh",
        "ls",
        "cat",
        "sha256sum",
        "rm",
        "echo",
        "sleep",
        "mkdir",
        "test",
        "stat",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}
