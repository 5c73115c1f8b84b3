//! External tools and commands.
//!
//! Contract: every lookup returns the path of an existing executable file or fails the test
//! with a message naming `scripts/install-deps.sh`: CI installs every tool, so a missing one
//! is an error, never a reason to skip. The cache directory is `$ISHARE_CACHE` (an empty
//! value is ignored) or `/var/cache/ishare`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Panics unless the effective uid is 0.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (they mount tmpfs and EROFS, mknod device nodes, chown, and set \
         trusted.* xattrs): run them as root"
    );
}

/// The cache directory `scripts/install-deps.sh` fills (erofs-utils 1.9.4, Linux 7.2, the
/// benchmarks' trees).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ISHARE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ishare"))
}

/// Whether `path` is a file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Returns `path` if it is an executable file, and fails the test otherwise.
pub fn require_tool(path: PathBuf) -> PathBuf {
    assert!(
        is_executable(&path),
        "required tool {} is missing: run `scripts/install-deps.sh` (as root) to install it \
         (erofs-utils 1.5 from Debian, 1.9.4 built into $ISHARE_CACHE)",
        path.display()
    );
    path
}

fn eu194(name: &str) -> PathBuf {
    require_tool(cache_dir().join("erofs-utils-1.9.4/bin").join(name))
}

/// mkfs.erofs 1.5 (Debian bookworm's `erofs-utils` package).
pub fn mkfs_15() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/mkfs.erofs"))
}

/// fsck.erofs 1.5 (Debian bookworm's `erofs-utils` package).
pub fn fsck_15() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/fsck.erofs"))
}

/// mkfs.erofs 1.9.4 (built by `scripts/install-deps.sh`).
pub fn mkfs_194() -> PathBuf {
    eu194("mkfs.erofs")
}

/// fsck.erofs 1.9.4 (built by `scripts/install-deps.sh`).
pub fn fsck_194() -> PathBuf {
    eu194("fsck.erofs")
}

/// dump.erofs 1.9.4 (built by `scripts/install-deps.sh`).
pub fn dump_194() -> PathBuf {
    eu194("dump.erofs")
}

/// `mkfs.erofs --quiet ARGS IMAGE SRC` of erofs-utils 1.9.4, which must succeed.
pub fn mkfs_erofs(args: &[&str], image: &Path, src: &Path) -> Output {
    run(Command::new(mkfs_194())
        .arg("--quiet")
        .args(args)
        .arg(image)
        .arg(src))
}

/// Writes `hints` into `dir/hints` and returns mkfs.erofs's `--compress-hints=` option
/// naming it.
pub fn compress_hints(dir: &Path, hints: &str) -> String {
    let path = dir.join("hints");
    fs::write(&path, hints).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    format!("--compress-hints={}", path.display())
}

/// An executable from PATH (tar, gzip, zstd, xz, setfattr, ...).
pub fn host_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!("{name} is missing: run scripts/install-deps.sh (it installs it from Debian)")
        })
}

/// The path of the `ishare` binary cargo built for this test run (only in the `ishare`
/// crate's integration tests, where cargo sets `CARGO_BIN_EXE_ishare`).
#[macro_export]
macro_rules! ishare_bin {
    () => {
        ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_ishare"))
    };
}

/// The last few KiB of a command's output, for error messages (mkfs.erofs 1.5 prints a
/// progress line per file).
pub fn tail(out: &[u8]) -> String {
    const MAX: usize = 4000;
    let s = String::from_utf8_lossy(&out[out.len().saturating_sub(MAX)..]).replace('\r', "\n");
    if out.len() > MAX {
        format!("[...]{s}")
    } else {
        s
    }
}

/// Runs `cmd`; an error text with (the tail of) its output if it cannot start or fails.
pub fn try_run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e} (see `scripts/install-deps.sh`)"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        ))
    }
}

/// Runs `cmd`, panicking with its output if it cannot be started or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Output {
    try_run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` and returns its output whatever its exit status.
pub fn run_unchecked(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}
