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
//!
//! This module holds the report and the verdicts; `probe` finds the facts.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::mount::{has_cap_sys_admin, stack_depth_for};
use crate::units::human_bytes;

mod probe;

use crate::kernel::config::{enabled, has_inode_share, kernel_config, parse_kernel_version};
pub use probe::StoreCheck;
use probe::{examine_store, filesystems, module_installed, probe_mount};

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
    /// `fuse_device`, `fuse_mount`, `fuse_wakeup`, `passthrough`, `store`).
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
    /// How FUSE serves shared files (the mode of `mode=fuse`, and of `mode=auto` for
    /// images the kernel is not given).
    pub mode: MountMode,
    /// `mode=auto` gives images whose fingerprints all verify to the kernel's own EROFS
    /// with `inode_share` (`Ok`), or why it cannot on this host.
    pub kernel_mode: Result<(), String>,
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
        inode_share: has_inode_share(version, cfg),
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
    let kernel_mode = if !erofs_there {
        Err("no kernel EROFS".to_string())
    } else if !(Path::new("/dev/loop-control").exists() || module_installed(&release, "loop")) {
        Err("no loop devices (/dev/loop-control, loop module)".to_string())
    } else {
        crate::kernel::config::inode_share_support()
    };
    let (status, detail) = match &kernel_mode {
        Ok(()) => (
            CheckStatus::Ok,
            "mode=auto mounts images whose every fingerprint verifies with the kernel's EROFS              (inode_share, loop device); mode=kernel requires it"
                .to_string(),
        ),
        Err(why) => (
            CheckStatus::Warn,
            format!("no kernel mode (mode=auto uses FUSE, mode=kernel fails): {why}"),
        ),
    };
    check("kernel_mode", status, false, detail);

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

    // Informative: where the kernel wakes a mount's FUSE thread (see `crate::wakeup`).
    let (status, detail) = match crate::wakeup::wakes_on_requesting_cpu() {
        Some(true) => (
            CheckStatus::Ok,
            format!(
                "the kernel wakes FUSE threads on the reader's CPU ({}=Y): they do not spin (spin=auto)",
                crate::wakeup::WAKE_HERE_PARAM
            ),
        ),
        Some(false) => (
            CheckStatus::Warn,
            format!(
                "{}=N: FUSE threads spin {} µs after each request (spin=auto); echo Y > {} (as the systemd unit does) makes warm opens cheaper on hosts whose idle CPUs halt",
                crate::wakeup::WAKE_HERE_PARAM,
                crate::options::DEFAULT_SPIN_US,
                crate::wakeup::WAKE_HERE_PARAM
            ),
        ),
        None => (
            CheckStatus::Ok,
            format!(
                "this kernel wakes FUSE threads on any CPU: they spin {} µs after each request (spin=auto)",
                crate::options::DEFAULT_SPIN_US
            ),
        ),
    };
    check("fuse_wakeup", status, false, detail);

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
        kernel_mode,
        checks,
    }
}
