//! Finding the facts `ishare doctor` judges: the kernel's filesystems and modules (its
//! version and configuration are `crate::kernel::config`'s), the store directory (as a mount would create and use it), and a test
//! FUSE mount that asks for passthrough and registers a backing file.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{
    BackingId, Config, Filesystem, InitFlags, KernelConfig, MountOption, Request, Session,
};
use rustix::fs::{Access, AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::mountinfo::filesystem_of;

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

/// The file systems in `/proc/filesystems`.
pub(super) fn filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// An installed module for `name` (modules.dep lists `.../name.ko[.xz|.zst|.gz]`).
pub(super) fn module_installed(release: &str, name: &str) -> bool {
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
pub(super) fn examine_store(path: &Path) -> (StoreCheck, Option<OwnedFd>) {
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
    // A mount refuses a store path that others can change (see `store::safe`).
    if st.error.is_none()
        && let Some(why) = crate::store::safe::problem(&path)
    {
        st.error = Some(why);
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
pub(super) fn probe_mount(
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

#[cfg(test)]
mod tests {
    use super::*;

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
