//! `ishare doctor`: what this host supports, and so which mode `ishare mount` runs in.
//!
//! Everything is probed the way a mount would meet it, where that is cheap and leaves
//! nothing behind: `/dev/fuse` is opened; a FUSE file system is mounted on a temporary
//! directory to see whether the kernel offers passthrough, and a backing file on the
//! store's filesystem is registered with it (which is where CAP_SYS_ADMIN and the
//! stacking depth are checked); `O_TMPFILE` is tried in the store directory (or the
//! nearest existing parent, where a mount would create it). The kernel's own EROFS
//! support (compressors, `inode_share`) is read from its configuration when the kernel
//! publishes it (`/proc/config.gz`, `/boot/config-RELEASE`), and is only informative:
//! `ishare mount` reads images itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{
    BackingId, Config, Filesystem, InitFlags, KernelConfig, MountOption, Request, Session,
};
use rustix::fs::{Access, AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::mount::{has_cap_sys_admin, stack_depth_for};
use crate::mountinfo::filesystem_of;
use crate::units::human_bytes;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Supported.
    Ok,
    /// Missing, with a fallback (or only informative).
    Warn,
    /// Missing.
    No,
}

impl CheckStatus {
    /// "ok", "warn" or "no".
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::No => "no",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    /// Short stable name (`kernel`, `erofs`, `erofs_compressors`, `erofs_inode_share`,
    /// `fuse_device`, `fuse_mount`, `passthrough`, `store`).
    pub name: &'static str,
    /// The outcome.
    pub status: CheckStatus,
    /// `ishare mount` cannot work (with `-o inode_share`, for the store) without it.
    pub required: bool,
    /// What was found.
    pub detail: String,
}

/// The kernel's EROFS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsSupport {
    /// `erofs` is in `/proc/filesystems`.
    pub registered: bool,
    /// Not registered, but a module for it is installed (`mount -t erofs` loads it).
    pub module: bool,
    /// `CONFIG_EROFS_FS` (`y`, `m`), when the configuration is known.
    pub config: Option<String>,
    /// Compression algorithms the kernel decodes (`lz4`, `lzma`, `deflate`, `zstd`);
    /// `None` when its configuration is unknown.
    pub compressors: Option<Vec<&'static str>>,
    /// The kernel's own page cache sharing (`CONFIG_EROFS_FS_PAGE_CACHE_SHARE`, Linux
    /// 7.0+); `None` when unknown.
    pub inode_share: Option<bool>,
}

/// FUSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseSupport {
    /// `/dev/fuse` exists.
    pub device: bool,
    /// Opening `/dev/fuse` read-write failed with this (`None`: it opened).
    pub open_error: Option<String>,
    /// How mounts are made: `mount(2)` with CAP_SYS_ADMIN, or the `fusermount3` helper.
    pub mounter: Option<String>,
    /// A test mount failed with this (`None`: it worked, or was not tried).
    pub mount_error: Option<String>,
    /// The test mount was made.
    pub mounted: bool,
}

/// FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughSupport {
    /// `CONFIG_FUSE_PASSTHROUGH`, when the configuration is known.
    pub config: Option<bool>,
    /// This process has CAP_SYS_ADMIN.
    pub cap_sys_admin: bool,
    /// The kernel offered passthrough to the test mount (`None`: no test mount).
    pub offered: Option<bool>,
    /// Registering a backing file on the store's filesystem: `Ok` or why not
    /// (`None`: not tried).
    pub backing: Option<Result<(), String>>,
    /// The stacking depth requested (2 when the store is on overlayfs or FUSE).
    pub stack_depth: u32,
}

impl PassthroughSupport {
    /// A mount would use passthrough.
    pub fn usable(&self) -> bool {
        self.cap_sys_admin && self.offered == Some(true) && matches!(self.backing, Some(Ok(())))
    }
}

/// The store directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCheck {
    /// The store root asked about.
    pub path: PathBuf,
    /// It exists.
    pub exists: bool,
    /// The directory examined: the store, or its nearest existing parent (where a
    /// mount would create it).
    pub examined: Option<PathBuf>,
    /// Filesystem type (from `/proc/self/mountinfo`).
    pub filesystem: Option<String>,
    /// Bytes available to this user.
    pub free_bytes: Option<u64>,
    /// This process may create files there.
    pub writable: bool,
    /// `O_TMPFILE` works there (`None`: could not be tried).
    pub o_tmpfile: Option<bool>,
    /// What is wrong, when something is.
    pub error: Option<String>,
}

/// How `ishare mount -o inode_share` serves shared files on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountMode {
    /// Kernel FUSE passthrough to store objects.
    Passthrough,
    /// The daemon reads store objects (files opened `direct_io`), because of this.
    DirectIo(String),
    /// `ishare mount` cannot mount, because of this.
    Unavailable(String),
}

impl MountMode {
    /// "passthrough", "direct_io" or "unavailable".
    pub fn as_str(&self) -> &'static str {
        match self {
            MountMode::Passthrough => "passthrough",
            MountMode::DirectIo(_) => "direct_io",
            MountMode::Unavailable(_) => "unavailable",
        }
    }
}

/// Everything `ishare doctor` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// `uname -r`.
    pub kernel_release: String,
    /// Its major and minor version.
    pub kernel_version: Option<(u32, u32)>,
    /// Where the kernel configuration was read from.
    pub kernel_config: Option<String>,
    /// The kernel's EROFS.
    pub erofs: ErofsSupport,
    /// FUSE.
    pub fuse: FuseSupport,
    /// FUSE passthrough.
    pub passthrough: PassthroughSupport,
    /// The store.
    pub store: StoreCheck,
    /// The resulting mode.
    pub mode: MountMode,
    /// One line per check, in order.
    pub checks: Vec<HostCheck>,
}

impl HostReport {
    /// Everything `ishare mount` needs is there.
    pub fn ready(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| c.required && c.status == CheckStatus::No)
    }
}

/// Parses "6.18.44-foo" into (6, 18).
pub(crate) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Parses a kernel configuration: `CONFIG_X=value` lines (`# CONFIG_X is not set` and
/// comments are left out).
pub(crate) fn parse_kernel_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The running kernel's configuration and where it came from.
fn kernel_config(release: &str) -> Option<(HashMap<String, String>, String)> {
    if let Ok(f) = File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some((parse_kernel_config(&text), "/proc/config.gz".into()));
        }
    }
    let boot = format!("/boot/config-{release}");
    let text = std::fs::read_to_string(&boot).ok()?;
    Some((parse_kernel_config(&text), boot))
}

fn enabled(config: &HashMap<String, String>, key: &str) -> bool {
    config.get(key).is_some_and(|v| v == "y" || v == "m")
}

/// The file systems in `/proc/filesystems`.
fn filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// An installed module for `name` (modules.dep lists `.../name.ko[.xz|.zst|.gz]`).
fn module_installed(release: &str, name: &str) -> bool {
    let dep = format!("/lib/modules/{release}/modules.dep");
    std::fs::read_to_string(dep).is_ok_and(|t| {
        t.lines().any(|l| {
            l.split(':').next().is_some_and(|m| {
                m.rsplit('/')
                    .next()
                    .is_some_and(|f| f.split('.').next() == Some(name))
            })
        })
    })
}

/// Examines the store directory; returns an `O_TMPFILE` opened there (a file on the
/// store's filesystem for the passthrough probe, gone once closed) when it works.
fn examine_store(path: &Path) -> (StoreCheck, Option<OwnedFd>) {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut st = StoreCheck {
        path: path.clone(),
        exists: false,
        examined: None,
        filesystem: None,
        free_bytes: None,
        writable: false,
        o_tmpfile: None,
        error: None,
    };
    let mut dir = path.as_path();
    let md = loop {
        match std::fs::metadata(dir) {
            Ok(md) => break md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match dir.parent() {
                Some(p) => dir = p,
                None => {
                    st.error = Some(format!("{}: {e}", path.display()));
                    return (st, None);
                }
            },
            Err(e) => {
                st.error = Some(format!("{}: {e}", dir.display()));
                return (st, None);
            }
        }
    };
    st.exists = dir == path;
    if !md.is_dir() {
        st.error = Some(format!("{}: not a directory", dir.display()));
        return (st, None);
    }
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    st.examined = Some(dir.to_path_buf());
    st.filesystem = filesystem_of(&canonical);
    if let Ok(vfs) = rustix::fs::statvfs(dir) {
        st.free_bytes = Some(vfs.f_bavail.saturating_mul(vfs.f_frsize));
    }
    st.writable = rustix::fs::accessat(
        CWD,
        dir,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .is_ok();
    let mut tmp = None;
    match rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => {
            st.o_tmpfile = Some(true);
            st.writable = true;
            tmp = Some(fd);
        }
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => st.o_tmpfile = Some(false),
        Err(Errno::ACCESS | Errno::PERM | Errno::ROFS) => {
            st.writable = false;
        }
        Err(e) => st.error = Some(format!("{}: O_TMPFILE: {e}", dir.display())),
    }
    if !st.writable && st.error.is_none() {
        st.error = Some(format!(
            "{}: this user cannot create files there",
            dir.display()
        ));
    }
    (st, tmp)
}

/// A FUSE file system that only answers `init`, noting whether the kernel offers
/// passthrough and asking for it.
#[derive(Debug)]
struct ProbeFs {
    depth: u32,
    offered: Arc<AtomicBool>,
}

impl Filesystem for ProbeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH) {
            self.offered.store(true, Ordering::Relaxed);
            if let Err(max) = config.set_max_stack_depth(self.depth) {
                let _ = config.set_max_stack_depth(max);
            }
            let _ = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH);
        }
        Ok(())
    }
}

/// A temporary mount point, removed on drop.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Mounts [`ProbeFs`], then registers `backing` (a file on the store's filesystem) as a
/// passthrough backing file, as `ishare mount` does with objects: (offered, backing).
fn probe_mount(
    depth: u32,
    backing: &dyn std::os::fd::AsFd,
) -> io::Result<(bool, Result<(), String>)> {
    let dir = std::env::temp_dir().join(format!(
        "ishare-doctor-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir(&dir)?;
    let dir = TmpDir(dir);
    let offered = Arc::new(AtomicBool::new(false));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("ishare-doctor".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    let fs = ProbeFs {
        depth,
        offered: offered.clone(),
    };
    // Returns once the kernel's INIT is answered; dropping it unmounts.
    let session = Session::new(fs, &dir.0, &config)?;
    let offered = offered.load(Ordering::Relaxed);
    let backing = if offered {
        // The id stays registered until the connection ends, right below.
        BackingId::create_raw(&session, backing)
            .map(|_| ())
            .map_err(|e| match e.raw_os_error() {
                Some(1) => {
                    "the kernel refused the backing file: no CAP_SYS_ADMIN (EPERM)".to_string()
                }
                _ => format!("the kernel refused the backing file: {e}"),
            })
    } else {
        Err("the kernel does not offer FUSE passthrough (Linux before 6.9, or CONFIG_FUSE_PASSTHROUGH off)".into())
    };
    drop(session);
    Ok((offered, backing))
}

/// Examines the host, with `store` as the store directory.
pub fn examine_host(store: &Path) -> HostReport {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let version = parse_kernel_version(&release);
    let config = kernel_config(&release);
    let cfg = config.as_ref().map(|(c, _)| c);
    let fss = filesystems();
    let mut checks = Vec::new();
    let mut check = |name, status, required, detail: String| {
        checks.push(HostCheck {
            name,
            status,
            required,
            detail,
        })
    };

    check(
        "kernel",
        if version.is_some() {
            CheckStatus::Ok
        } else {
            CheckStatus::Warn
        },
        false,
        format!(
            "Linux {release}{}",
            config.as_ref().map_or(
                ", configuration not published".to_string(),
                |(_, src)| format!(", configuration from {src}")
            )
        ),
    );

    // The kernel's EROFS: informative (ishare mount reads images in userspace).
    let erofs = ErofsSupport {
        registered: fss.iter().any(|f| f == "erofs"),
        module: module_installed(&release, "erofs"),
        config: cfg.and_then(|c| c.get("CONFIG_EROFS_FS").cloned()),
        compressors: cfg.map(|c| {
            let mut v = Vec::new();
            if enabled(c, "CONFIG_EROFS_FS_ZIP") {
                v.push("lz4");
                for (key, name) in [
                    ("CONFIG_EROFS_FS_ZIP_LZMA", "lzma"),
                    ("CONFIG_EROFS_FS_ZIP_DEFLATE", "deflate"),
                    ("CONFIG_EROFS_FS_ZIP_ZSTD", "zstd"),
                ] {
                    if enabled(c, key) {
                        v.push(name);
                    }
                }
            }
            v
        }),
        inode_share: match (cfg, version) {
            (Some(c), _) => Some(enabled(c, "CONFIG_EROFS_FS_PAGE_CACHE_SHARE")),
            (None, Some(v)) if v < (7, 0) => Some(false),
            _ => None,
        },
    };
    let erofs_there = erofs.registered || erofs.module;
    check(
        "erofs",
        if erofs_there {
            CheckStatus::Ok
        } else {
            CheckStatus::Warn
        },
        false,
        if erofs.registered {
            match erofs.config.as_deref() {
                Some("y") => "kernel EROFS built in".to_string(),
                Some("m") => "kernel EROFS module loaded".to_string(),
                _ => "kernel EROFS available".to_string(),
            }
        } else if erofs.module {
            "kernel EROFS module installed, not loaded (mount -t erofs loads it)".to_string()
        } else {
            "no kernel EROFS (not needed by ishare mount, which reads images itself)".to_string()
        },
    );
    let (status, detail) = match (&erofs.compressors, erofs_there) {
        (_, false) => (CheckStatus::Warn, "none (no kernel EROFS)".to_string()),
        (None, true) => (
            CheckStatus::Warn,
            "unknown (the kernel configuration is not published)".to_string(),
        ),
        (Some(v), true) if v.is_empty() => (
            CheckStatus::Warn,
            "none: CONFIG_EROFS_FS_ZIP is off (the kernel reads uncompressed images only)"
                .to_string(),
        ),
        (Some(v), true) => (
            CheckStatus::Ok,
            format!("kernel EROFS decodes {}", v.join(", ")),
        ),
    };
    check("erofs_compressors", status, false, detail);
    let vshow = version.map_or("this kernel".to_string(), |(a, b)| format!("Linux {a}.{b}"));
    let (status, detail) = match erofs.inode_share {
        Some(true) if erofs_there => (
            CheckStatus::Ok,
            "the kernel's own inode_share (CONFIG_EROFS_FS_PAGE_CACHE_SHARE) is on".to_string(),
        ),
        Some(_) | None if !erofs_there => (CheckStatus::No, "no kernel EROFS".to_string()),
        Some(_) => (
            CheckStatus::No,
            format!(
                "{vshow} has no inode_share of its own (Linux 7.0+ with CONFIG_EROFS_FS_PAGE_CACHE_SHARE); ishare mount -o inode_share provides it"
            ),
        ),
        None => (
            CheckStatus::Warn,
            "unknown whether the kernel has inode_share (configuration not published)".to_string(),
        ),
    };
    check("erofs_inode_share", status, false, detail);

    // FUSE: required.
    let mut fuse = FuseSupport {
        device: Path::new("/dev/fuse").exists(),
        open_error: None,
        mounter: None,
        mount_error: None,
        mounted: false,
    };
    match rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        Ok(_) => {}
        Err(e) => fuse.open_error = Some(e.to_string()),
    }
    check(
        "fuse_device",
        if fuse.open_error.is_none() {
            CheckStatus::Ok
        } else {
            CheckStatus::No
        },
        true,
        match &fuse.open_error {
            None => "/dev/fuse opens read-write".to_string(),
            Some(e) if !fuse.device => format!(
                "/dev/fuse is missing ({e}); modprobe fuse, or pass the device into the container"
            ),
            Some(e) => format!("/dev/fuse cannot be opened: {e}"),
        },
    );
    let cap = has_cap_sys_admin();
    fuse.mounter = if cap {
        Some("mount(2)".to_string())
    } else {
        [
            "/usr/bin/fusermount3",
            "/bin/fusermount3",
            "/usr/local/bin/fusermount3",
        ]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
    };

    let (store, tmpfile) = examine_store(store);
    let depth = stack_depth_for(store.examined.as_deref().unwrap_or(Path::new("/")));
    let mut pt = PassthroughSupport {
        config: cfg.map(|c| enabled(c, "CONFIG_FUSE_PASSTHROUGH")),
        cap_sys_admin: cap,
        offered: None,
        backing: None,
        stack_depth: depth,
    };
    if fuse.open_error.is_none() && fuse.mounter.is_some() {
        // A file on the store's filesystem, as objects are; else any file will tell
        // whether the kernel takes backing files from this process at all.
        let backing: io::Result<OwnedFd> = match tmpfile {
            Some(fd) => Ok(fd),
            None => std::env::current_exe()
                .and_then(File::open)
                .map(OwnedFd::from),
        };
        match backing {
            Ok(b) => match probe_mount(depth, &b) {
                Ok((offered, backing)) => {
                    fuse.mounted = true;
                    pt.offered = Some(offered);
                    pt.backing = Some(backing);
                }
                // fusermount3's message ends with a newline.
                Err(e) => fuse.mount_error = Some(e.to_string().trim_end().to_string()),
            },
            Err(e) => fuse.mount_error = Some(format!("no file to probe with: {e}")),
        }
    }
    let (status, detail) = match (&fuse.mounter, &fuse.mount_error, fuse.mounted) {
        (Some(m), None, true) => (
            CheckStatus::Ok,
            format!("a test mount worked (through {m})"),
        ),
        (Some(m), Some(e), _) => (
            CheckStatus::No,
            format!("a test mount through {m} failed: {e}"),
        ),
        (None, _, _) => (
            CheckStatus::No,
            "no CAP_SYS_ADMIN for mount(2) and no fusermount3 (install fuse3)".to_string(),
        ),
        _ => (
            CheckStatus::No,
            "not tried: /dev/fuse cannot be opened".to_string(),
        ),
    };
    check("fuse_mount", status, true, detail);

    let (status, detail) = if pt.usable() {
        (
            CheckStatus::Ok,
            format!(
                "kernel FUSE passthrough works for this process (CAP_SYS_ADMIN; backing file on the store's filesystem accepted, max_stack_depth {depth})"
            ),
        )
    } else {
        let why = if !fuse.mounted {
            "not probed: no test mount".to_string()
        } else if !cap {
            match pt.offered {
                Some(true) => {
                    "the kernel offers it, but this process lacks CAP_SYS_ADMIN".to_string()
                }
                _ => {
                    "the kernel does not offer it and this process lacks CAP_SYS_ADMIN".to_string()
                }
            }
        } else {
            match &pt.backing {
                Some(Err(e)) => e.clone(),
                _ => "unknown".to_string(),
            }
        };
        (CheckStatus::Warn, format!("no FUSE passthrough: {why}"))
    };
    check("passthrough", status, false, detail);

    let (status, detail) = match &store.error {
        Some(e) => (CheckStatus::No, format!("{}: {e}", store.path.display())),
        None => {
            let mut d = format!(
                "{}: {}",
                store.path.display(),
                if store.exists {
                    "exists".to_string()
                } else {
                    format!(
                        "will be created in {}",
                        store
                            .examined
                            .as_deref()
                            .unwrap_or(Path::new("?"))
                            .display()
                    )
                }
            );
            if let Some(t) = &store.filesystem {
                d.push_str(&format!(", {t}"));
            }
            if let Some(f) = store.free_bytes {
                d.push_str(&format!(", {} free", human_bytes(f)));
            }
            match store.o_tmpfile {
                Some(true) => d.push_str(", O_TMPFILE works"),
                _ => d.push_str(", no O_TMPFILE (named temporary files are used)"),
            }
            (
                if store.o_tmpfile == Some(true) {
                    CheckStatus::Ok
                } else {
                    CheckStatus::Warn
                },
                d,
            )
        }
    };
    check("store", status, true, detail);

    let mode = if let Some(c) = checks
        .iter()
        .find(|c| c.required && c.status == CheckStatus::No)
    {
        MountMode::Unavailable(format!("{}: {}", c.name, c.detail))
    } else if pt.usable() {
        MountMode::Passthrough
    } else {
        let why = checks
            .iter()
            .find(|c| c.name == "passthrough")
            .map(|c| c.detail.clone())
            .unwrap_or_default();
        MountMode::DirectIo(why)
    };
    HostReport {
        kernel_release: release,
        kernel_version: version,
        kernel_config: config.map(|(_, src)| src),
        erofs,
        fuse,
        passthrough: pt,
        store,
        mode,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_and_configs_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_kernel_version("7.0-rc1"), Some((7, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
        let c = parse_kernel_config(
            "# comment\nCONFIG_EROFS_FS=y\n# CONFIG_EROFS_FS_ZIP_ZSTD is not set\nCONFIG_X=\"s\"\n",
        );
        assert!(enabled(&c, "CONFIG_EROFS_FS"));
        assert!(!enabled(&c, "CONFIG_EROFS_FS_ZIP_ZSTD"));
        assert_eq!(c.get("CONFIG_X").map(String::as_str), Some("s"));
    }

    #[test]
    fn a_missing_store_is_examined_at_its_parent() {
        let t = tempfile::tempdir().unwrap();
        let (st, tmp) = examine_store(&t.path().join("a/b/store"));
        assert!(!st.exists);
        assert_eq!(st.examined.as_deref(), Some(t.path()));
        assert!(st.writable, "{st:?}");
        assert!(st.o_tmpfile.is_some());
        assert_eq!(tmp.is_some(), st.o_tmpfile == Some(true));
        // Nothing was left behind.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
