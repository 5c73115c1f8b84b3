//! Boots Debian sid's Linux 7.2 (cloud-amd64 flavour, built with
//! `CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y`) under QEMU with a generated busybox initramfs, runs a
//! shell script inside it and returns the lines the script marked with `RESULT `.
//!
//! ```ignore
//! let out = vm::Vm::new()
//!     .image("a.erofs", &image_a)
//!     .script("mount_erofs a.erofs /mnt/a inode_share,domain_id=d1\nmeasure r1 memtool read /mnt/a/f")
//!     .run()?;
//! assert_eq!(out.results, ["r1 32772"]);
//! ```
//!
//! Everything comes from Debian packages that `scripts/install-deps.sh` installs and caches:
//! the kernel and its modules (`erofs.ko`, `loop.ko`) in `${ISHARE_CACHE:-/var/cache/ishare}/
//! linux-7.2/` (fetched by `scripts/vm/fetch-linux.sh`), `qemu-system-x86_64`, `busybox-static`
//! and gcc with a static libc (for `memtool.c`, compiled per run). A missing piece is an error
//! naming `scripts/install-deps.sh`, never a reason to skip.
//!
//! Inside the VM (see [`HELPERS`] for the shell functions the script can use):
//!
//! * `/` is the initramfs (tmpfs). Images are at `/images/NAME`; they must be mounted through
//!   a loop device (`mount_erofs`): Linux 7.2 refuses file-backed EROFS mounts of tmpfs files
//!   ("Block device required").
//! * `/bin/memtool` reads files through one kernel path each (read(2), mmap, sendfile, splice);
//!   see `memtool.c`.
//! * [`Vm::executable`] adds a dynamically linked program of the host (the `ishare` binary)
//!   as `/bin/NAME`, debug information stripped, with the shared libraries `ldd` names at
//!   their host paths.
//! * `/boot/config-RELEASE` is the kernel's configuration, as Debian installs it (programs
//!   that read the kernel's features from it, `ishare`, find them).
//! * `Cached:` of `/proc/meminfo` includes the initramfs itself (tmpfs is shmem), a constant:
//!   only differences are meaningful.
//!
//! Debugging: `ISHARE_VM_KEEP=1` keeps the work directory (initramfs, memtool) and prints its
//! path; `ISHARE_VM_TIMEOUT=SECONDS` changes the default timeout.
//!
//! Boot with `quiet`: kernel messages of warning level and above still reach the console
//! and end up in [`VmOutput::console`]. The guest's `dmesg` is returned in
//! [`VmOutput::dmesg`].

pub mod share;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::tools::cache_dir;

/// What to run so that a missing piece appears.
const INSTALL_HINT: &str = "run `scripts/install-deps.sh` (as root) to install it";

/// Marker lines the harness's `/init` prints (never prefixed `RESULT `).
const READY_MARK: &str = "ISHARE-VM-READY";
const EXIT_MARK: &str = "ISHARE-VM-EXIT ";
const DMESG_MARK: &str = "ISHARE-VM-DMESG ";
const RESULT_MARK: &str = "RESULT ";

/// Shell functions available to every script (sourced before it, with `set -e` on).
pub const HELPERS: &str = r#"
# result WORDS...: report a line to the harness.
result() { echo "RESULT $*"; }
# cached_kib: the Cached: line of /proc/meminfo, in KiB.
cached_kib() { sed -n 's/^Cached: *\([0-9]*\) kB$/\1/p' /proc/meminfo; }
# drop_caches: write back and drop the page cache, dentries and inodes.
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# mount_erofs IMAGE DIR [OPTIONS]: loop-mount /images/IMAGE read-only on DIR.
mount_erofs() {
  _dev=$(losetup -f) || return 1
  losetup -r "$_dev" "/images/$1" || return 1
  mkdir -p "$2"
  mount -t erofs -o "ro${3:+,$3}" "$_dev" "$2" || { losetup -d "$_dev"; return 1; }
}
# umount_erofs DIR: unmount DIR and detach its loop device.
umount_erofs() {
  _dev=$(awk -v d="$1" '$2 == d { print $1 }' /proc/mounts)
  umount "$1" || return 1
  losetup -d "$_dev"
}
# measure LABEL CMD...: run CMD (output discarded unless it fails) and report
# "RESULT LABEL <growth of Cached: in KiB>".
measure() {
  _label=$1; shift
  _before=$(cached_kib)
  _out=$("$@" 2>&1) || { echo "$_out"; echo "measure $_label: '$*' failed"; return 1; }
  _after=$(cached_kib)
  result "$_label" $((_after - _before))
}
"#;

/// The Linux 7.2 kernel and modules cached by `scripts/vm/fetch-linux.sh`.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. `7.2.13+deb14-cloud-amd64`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// Its configuration.
    pub config: PathBuf,
    /// Uncompressed modules in load order (dependencies first).
    pub modules: Vec<PathBuf>,
}

impl Kernel {
    /// Finds the cached kernel; an error names `scripts/install-deps.sh`.
    pub fn locate() -> Result<Kernel> {
        let dir = cache_dir().join("linux-7.2");
        ensure!(
            dir.join(".complete").is_file(),
            "Linux 7.2 for the VM tests is not cached in {}: {INSTALL_HINT} (it runs \
             scripts/vm/fetch-linux.sh)",
            dir.display()
        );
        let version = fs::read_to_string(dir.join("VERSION"))
            .with_context(|| format!("{}/VERSION: {INSTALL_HINT}", dir.display()))?
            .trim()
            .to_owned();
        let config = fs::read_to_string(dir.join("config"))
            .with_context(|| format!("{}/config: {INSTALL_HINT}", dir.display()))?;
        ensure!(
            config
                .lines()
                .any(|l| l == "CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y"),
            "the cached kernel {version} ({}) lacks CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y; delete \
             the directory and {INSTALL_HINT}",
            dir.display()
        );
        let order = fs::read_to_string(dir.join("modules.order"))
            .with_context(|| format!("{}/modules.order: {INSTALL_HINT}", dir.display()))?;
        let modules: Vec<PathBuf> = order
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| dir.join(l))
            .collect();
        for m in modules.iter().chain([&dir.join("vmlinuz")]) {
            ensure!(m.is_file(), "{} is missing: {INSTALL_HINT}", m.display());
        }
        Ok(Kernel {
            version,
            vmlinuz: dir.join("vmlinuz"),
            config: dir.join("config"),
            modules,
        })
    }
}

/// What a VM run produced.
#[derive(Debug, Clone)]
pub struct VmOutput {
    /// The lines the script printed with `result` (or `echo "RESULT ..."`), without the
    /// `RESULT ` prefix, in order.
    pub results: Vec<String>,
    /// The guest's `dmesg`, read after the script ended.
    pub dmesg: Vec<String>,
    /// The whole serial console, for diagnostics.
    pub console: String,
    /// From starting QEMU to `/init` having loaded the modules.
    pub boot_time: Duration,
    /// From starting QEMU to QEMU's exit.
    pub total_time: Duration,
    pub kernel_version: String,
}

impl VmOutput {
    /// The value after `LABEL ` in the first result line starting with it.
    pub fn value(&self, label: &str) -> Option<&str> {
        self.results.iter().find_map(|l| {
            l.strip_prefix(label)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::trim)
        })
    }

    /// The last `n` console lines other than the guest's dmesg, for messages.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self
            .console
            .lines()
            .filter(|l| !l.starts_with(DMESG_MARK))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A VM to boot once: images, a script, limits.
#[derive(Debug, Clone)]
pub struct Vm {
    images: Vec<(String, PathBuf)>,
    executables: Vec<(String, PathBuf)>,
    script: String,
    timeout: Duration,
    memory_mib: Option<u64>,
    cpus: u32,
    cmdline_extra: String,
}

impl Default for Vm {
    fn default() -> Self {
        Self::new()
    }
}

impl Vm {
    pub fn new() -> Vm {
        Vm {
            images: Vec::new(),
            executables: Vec::new(),
            script: String::new(),
            timeout: Duration::from_secs(
                std::env::var("ISHARE_VM_TIMEOUT")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(120),
            ),
            memory_mib: None,
            cpus: 1,
            cmdline_extra: String::new(),
        }
    }

    /// Puts the file at `path` into the initramfs as `/images/NAME` (NAME: no `/`).
    pub fn image(mut self, name: &str, path: impl AsRef<Path>) -> Vm {
        assert!(
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "image name {name:?} must be a plain file name"
        );
        self.images
            .push((name.to_owned(), path.as_ref().to_owned()));
        self
    }

    /// Puts the host executable at `path` into the initramfs as `/bin/NAME` (debug
    /// information stripped), with the shared libraries it needs.
    pub fn executable(mut self, name: &str, path: impl AsRef<Path>) -> Vm {
        assert!(
            !name.is_empty() && !name.contains('/'),
            "executable name {name:?} must be a plain file name"
        );
        self.executables
            .push((name.to_owned(), path.as_ref().to_owned()));
        self
    }

    /// Appends shell (busybox ash) to the script; [`HELPERS`] are defined and `set -e` is on.
    pub fn script(mut self, script: &str) -> Vm {
        self.script.push_str(script);
        if !self.script.ends_with('\n') {
            self.script.push('\n');
        }
        self
    }

    /// Kills QEMU after this long (default 120 s, or `ISHARE_VM_TIMEOUT` seconds).
    pub fn timeout(mut self, timeout: Duration) -> Vm {
        self.timeout = timeout;
        self
    }

    /// Guest memory; the default is 768 MiB plus twice the images (the initramfs holds them
    /// once as the loaded archive, once unpacked, until the kernel frees the archive).
    pub fn memory_mib(mut self, mib: u64) -> Vm {
        self.memory_mib = Some(mib);
        self
    }

    /// Virtual CPUs (default 1).
    pub fn cpus(mut self, cpus: u32) -> Vm {
        self.cpus = cpus.max(1);
        self
    }

    /// Extra kernel command line words.
    pub fn cmdline(mut self, extra: &str) -> Vm {
        self.cmdline_extra = extra.to_owned();
        self
    }

    /// Builds the initramfs, boots, runs the script, powers off. Fails if a tool is missing,
    /// QEMU fails or times out, or the script exits non-zero (the error carries the end of the
    /// console).
    pub fn run(self) -> Result<VmOutput> {
        let kernel = Kernel::locate()?;
        let qemu = find_tool("qemu-system-x86_64", "qemu-system-x86")?;
        let busybox = static_busybox()?;
        let mut work = tempfile::Builder::new()
            .prefix("ishare-vm-")
            .tempdir()
            .context("creating the VM work directory")?;
        if std::env::var_os("ISHARE_VM_KEEP").is_some_and(|v| !v.is_empty()) {
            work.disable_cleanup(true);
            eprintln!(
                "ISHARE_VM_KEEP: the initramfs and memtool stay in {}",
                work.path().display()
            );
        }
        let memtool = compile_memtool(work.path())?;

        // Uncompressed newc: the images are incompressible and gunzip in the emulated guest
        // gains nothing (measured: gzip -1 took 6 s on the host, boot time unchanged).
        let initramfs = work.path().join("initramfs.cpio");
        let mut images_bytes = 0u64;
        {
            let mut cpio = Cpio::new(BufWriter::new(File::create(&initramfs)?));
            for d in [
                "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys",
            ] {
                cpio.dir(d)?;
            }
            for d in ["tmp", "mnt", "images", "modules", "lib"] {
                cpio.dir(d)?;
            }
            cpio.char_dev("dev/console", 5, 1)?;
            cpio.file_from("bin/busybox", &busybox, 0o755)?;
            cpio.file_from("bin/memtool", &memtool, 0o755)?;
            let mut order = String::new();
            for m in &kernel.modules {
                let name = m.file_name().unwrap().to_str().unwrap();
                cpio.file_from(&format!("modules/{name}"), m, 0o644)?;
                order.push_str(name);
                order.push('\n');
            }
            cpio.file_bytes("modules/order", order.as_bytes(), 0o644)?;
            cpio.dir("boot")?;
            cpio.file_from(
                &format!("boot/config-{}", kernel.version),
                &kernel.config,
                0o644,
            )?;
            let mut libs = std::collections::BTreeSet::new();
            for (name, path) in &self.executables {
                let stripped = strip_debug(path, &work.path().join(name))?;
                cpio.file_from(&format!("bin/{name}"), &stripped, 0o755)?;
                libs.extend(shared_libraries(path)?);
            }
            let mut dirs = std::collections::BTreeSet::new();
            for lib in &libs {
                let rel = lib.strip_prefix("/").unwrap_or(lib);
                for a in rel.ancestors().skip(1) {
                    if !a.as_os_str().is_empty() && a != Path::new("lib") {
                        dirs.insert(a.to_path_buf());
                    }
                }
            }
            // Parents before children (BTreeSet order sorts "lib64" after "lib").
            for d in &dirs {
                cpio.dir(d.to_str().context("library directory not UTF-8")?)?;
            }
            for lib in &libs {
                let rel = lib.strip_prefix("/").unwrap_or(lib);
                cpio.file_from(rel.to_str().context("library path not UTF-8")?, lib, 0o755)?;
            }
            for (name, path) in &self.images {
                images_bytes += fs::metadata(path)
                    .with_context(|| format!("image {name}: {}", path.display()))?
                    .len();
                cpio.file_from(&format!("images/{name}"), path, 0o644)?;
            }
            cpio.file_bytes("lib/ishare-vm.sh", HELPERS.as_bytes(), 0o644)?;
            cpio.file_bytes("test.sh", self.script.as_bytes(), 0o644)?;
            cpio.file_bytes("init", INIT.as_bytes(), 0o755)?;
            cpio.finish()?.flush()?;
        }

        let memory = self
            .memory_mib
            .unwrap_or(768 + 2 * images_bytes.div_ceil(1 << 20));
        let mut cmd = Command::new(&qemu);
        // TCG only: the development machines have no usable KVM (with /dev/kvm present,
        // `-accel kvm` aborts on an MSR write).
        cmd.args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .args(["-machine", "q35", "-cpu", "max"])
        .args(["-accel", "tcg"])
        .args(["-smp", &self.cpus.to_string()])
        .args(["-m", &memory.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 {}",
            self.cmdline_extra
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;

        // The console is read on threads (QEMU blocks when a pipe is full); the main thread
        // watches the clock.
        let console = Arc::new(Mutex::new(Vec::<u8>::new()));
        let ready_at = Arc::new(Mutex::new(None::<Instant>));
        let mut stdout = child.stdout.take().unwrap();
        let out_thread = {
            let console = Arc::clone(&console);
            let ready_at = Arc::clone(&ready_at);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut seen = 0usize;
                loop {
                    match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut c = console.lock().unwrap();
                            c.extend_from_slice(&buf[..n]);
                            let mut r = ready_at.lock().unwrap();
                            if r.is_none() {
                                let from = seen.saturating_sub(READY_MARK.len());
                                if c[from..]
                                    .windows(READY_MARK.len())
                                    .any(|w| w == READY_MARK.as_bytes())
                                {
                                    *r = Some(Instant::now());
                                }
                            }
                            seen = c.len();
                        }
                    }
                }
            })
        };
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });

        let deadline = start + self.timeout;
        let (status, timed_out) = loop {
            if let Some(st) = child.try_wait()? {
                break (Some(st), false);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let total_time = start.elapsed();
        let _ = out_thread.join();
        let qemu_stderr = err_thread.join().unwrap_or_default();
        let console = String::from_utf8_lossy(&console.lock().unwrap())
            .replace("\r\n", "\n")
            .replace('\r', "");
        let boot_time = ready_at
            .lock()
            .unwrap()
            .map(|t| t - start)
            .unwrap_or(total_time);

        let mut out = VmOutput {
            results: Vec::new(),
            dmesg: Vec::new(),
            console,
            boot_time,
            total_time,
            kernel_version: kernel.version,
        };
        let mut exit = None;
        for line in out.console.lines() {
            if let Some(r) = line.strip_prefix(RESULT_MARK) {
                out.results.push(r.to_owned());
            } else if let Some(d) = line.strip_prefix(DMESG_MARK) {
                out.dmesg.push(d.to_owned());
            } else if let Some(e) = line.strip_prefix(EXIT_MARK) {
                exit = e.trim().parse::<i32>().ok();
            }
        }
        let context = || {
            let console: String = out
                .console
                .lines()
                .filter(|l| !l.starts_with(DMESG_MARK))
                .map(|l| format!("{l}\n"))
                .collect();
            format!(
                "\n--- last console lines ---\n{}\n--- last guest dmesg lines ---\n{}\n\
                 --- qemu stderr ---\n{}",
                tail_lines(&console, 40),
                tail_lines(&out.dmesg.join("\n"), 15),
                tail_lines(&qemu_stderr, 20)
            )
        };
        if timed_out {
            bail!(
                "the VM did not power off within {:?} (killed){}",
                self.timeout,
                context()
            );
        }
        let status = status.unwrap();
        ensure!(
            status.success(),
            "qemu-system-x86_64 failed ({status}){}",
            context()
        );
        match exit {
            Some(0) => Ok(out),
            Some(rc) => Err(anyhow!("the VM script failed (exit {rc}){}", context())),
            None => Err(anyhow!(
                "the VM powered off without running the script to its end{}",
                context()
            )),
        }
    }
}

/// `/init`: mounts the API filesystems, loads the modules, runs `/test.sh` with the helpers
/// in a subshell with `set -e`, reports its status and dmesg, powers off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
  insmod "/modules/$m" || echo "insmod $m failed"
done
echo ISHARE-VM-READY
( set -e; . /lib/ishare-vm.sh; . /test.sh )
rc=$?
dmesg | sed 's/^/ISHARE-VM-DMESG /'
echo "ISHARE-VM-EXIT $rc"
poweroff -f
"#;

/// The path of `name` on PATH or in the usual directories, or an error naming the Debian
/// package and `scripts/install-deps.sh`.
fn find_tool(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if fs::metadata(&p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
        {
            return Ok(p);
        }
    }
    bail!("{name} (Debian package {package}) is missing: {INSTALL_HINT}")
}

/// `/bin/busybox` if it is statically linked (package busybox-static, not busybox).
fn static_busybox() -> Result<PathBuf> {
    let p = PathBuf::from("/bin/busybox");
    let elf = fs::read(&p).map_err(|e| {
        anyhow!(
            "{}: {e}: the VM needs busybox-static: {INSTALL_HINT}",
            p.display()
        )
    })?;
    ensure!(
        !has_interp(&elf),
        "{} is dynamically linked (package busybox, not busybox-static): the VM needs \
         busybox-static: {INSTALL_HINT}",
        p.display()
    );
    Ok(p)
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn has_interp(elf: &[u8]) -> bool {
    let rd16 = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let rd32 = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let rd64 = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return true; // not what we expect: treat as unusable
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd64(0x20), rd16(0x36), rd16(0x38)) else {
        return true;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum as usize).any(|i| rd32(phoff as usize + i * phentsize as usize) == Some(PT_INTERP))
}

/// A copy of the executable `src` at `dst` without debug information (`objcopy
/// --strip-debug`: a debug build of ishare is 98 MiB, 21 MiB stripped).
fn strip_debug(src: &Path, dst: &Path) -> Result<PathBuf> {
    let objcopy = find_tool("objcopy", "binutils")?;
    let res = Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(src)
        .arg(dst)
        .output()
        .with_context(|| format!("running {}", objcopy.display()))?;
    ensure!(
        res.status.success(),
        "objcopy --strip-debug {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(dst.to_path_buf())
}

/// The shared libraries (and the dynamic loader) `ldd` says `exe` loads, as absolute
/// paths on the host; none for a static executable.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .with_context(|| format!("running ldd {} (package libc-bin)", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable"
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            _ if line.contains("not found") => bail!("ldd {}: {line}", exe.display()),
            _ => {}
        }
    }
    Ok(libs)
}

/// The source of memtool, the reader through one kernel path each (read(2), mmap,
/// sendfile, splice) the VM and the host's page cache tests use.
pub fn memtool_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/vm/memtool.c")
}

/// Compiles `memtool.c` statically into `dir`.
fn compile_memtool(dir: &Path) -> Result<PathBuf> {
    let src = memtool_source();
    let out = dir.join("memtool");
    let gcc = find_tool("gcc", "build-essential")?;
    let res = Command::new(&gcc)
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .with_context(|| format!("running {}", gcc.display()))?;
    ensure!(
        res.status.success(),
        "gcc -static {} failed (a static libc, libc.a from libc6-dev, is needed: \
         {INSTALL_HINT}):\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(out)
}

/// A writer of "newc" cpio archives (the initramfs format), all entries owned by root.
struct Cpio<W: Write> {
    w: W,
    ino: u32,
    off: u64,
}

impl<W: Write> Cpio<W> {
    fn new(w: W) -> Self {
        Cpio { w, ino: 1, off: 0 }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.off += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.off % 4) % 4;
        self.put(&[0u8; 3][..n as usize])
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name}: newc cpio entries are < 4 GiB")))?;
        let ino = self.ino;
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0o040755, 0, (0, 0))
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        self.header(name, 0o020600, 0, (major, minor))
    }

    fn file_bytes(&mut self, name: &str, data: &[u8], perm: u32) -> io::Result<()> {
        self.header(name, 0o100000 | perm, data.len() as u64, (0, 0))?;
        self.put(data)?;
        self.pad()
    }

    fn file_from(&mut self, name: &str, path: &Path, perm: u32) -> Result<()> {
        let mut f = File::open(path).with_context(|| format!("{}", path.display()))?;
        let len = f.metadata()?.len();
        self.header(name, 0o100000 | perm, len, (0, 0))?;
        let copied = io::copy(&mut f, &mut self.w)?;
        ensure!(
            copied == len,
            "{} changed size while copying",
            path.display()
        );
        self.off += copied;
        self.pad()?;
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, (0, 0))?;
        Ok(self.w)
    }
}
