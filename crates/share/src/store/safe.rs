//! Where a store may live: a "safe path" check in the manner of sshd's `StrictModes`
//! and systemd's `chase()`.
//!
//! Whoever can change the store directory, or any directory above it, can plant
//! symlinks for root to follow, read every object (the content of images they could not
//! read) and swap objects for content that the next mount serves. So the store and
//! every ancestor up to `/` must be directories owned by root (or by this process's
//! euid) and not writable by group or others. An ancestor that is writable by others
//! but sticky (`/tmp`) is accepted: the sticky bit stops others from renaming or
//! removing the next component, which itself must pass the same owner check.
//!
//! The path is walked one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`
//! from an fd of `/`, each directory checked through its fd, so what is checked is what
//! is used: the walk ends with an fd of the store root that no rename elsewhere can
//! redirect. Symlinks in the part of the path that exists are resolved once first
//! (`/var/run` → `/run`); the resolved path is then checked component by component, so
//! a symlink swapped meanwhile can only lead to another directory that passes the
//! same checks.
//!
//! Missing components are created (with [`create`](open_root)) only under a checked
//! directory, mode `0700`: nobody but the store's owner needs to traverse them (FUSE
//! passthrough opens objects as the daemon, which is root or the owner).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, RawMode, Stat};
use rustix::io::Errno;

/// Mode of the directories we create.
pub(crate) const DIR_MODE: RawMode = 0o700;

fn refuse(path: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "unsafe store path: {}: {why} (the store and each directory above it must be owned by root and not writable by group or others)",
            path.display()
        ),
    )
}

/// Checks one directory of the path (`last`: the store root itself).
fn check(path: &Path, st: &Stat, euid: u32, last: bool) -> io::Result<()> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(refuse(path, "not a directory".into()));
    }
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(refuse(
            path,
            format!(
                "owned by uid {}, who could replace what lies below",
                st.st_uid
            ),
        ));
    }
    let sticky = st.st_mode & 0o1000 != 0;
    if st.st_mode & 0o022 != 0 && (last || !sticky) {
        return Err(refuse(
            path,
            format!(
                "mode {:04o}: writable by {}",
                st.st_mode & 0o7777,
                if st.st_mode & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                }
            ),
        ));
    }
    Ok(())
}

/// `path` with the symlinks of its longest existing prefix resolved, and the rest
/// (which must be plain names) appended.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        match std::fs::canonicalize(cur) {
            Ok(mut p) => {
                for c in missing.iter().rev() {
                    p.push(c);
                }
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = match cur.components().next_back() {
                    Some(Component::Normal(n)) => n,
                    _ => return Err(refuse(path, "`..` in a missing part of the path".into())),
                };
                missing.push(name.to_os_string());
                cur = cur.parent().ok_or(e)?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_dir(at: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the store root `path` (absolute) after checking it and every ancestor (see the
/// module documentation); with `create`, missing directories are made, mode `0700`.
/// With `create` (a mount), an existing store root of ours that others may read (made
/// by an older version, `0755`) is tightened to `0700`; one that others may write is refused (they could
/// have planted anything in it).
pub(crate) fn open_root(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let euid = rustix::process::geteuid().as_raw();
    let path = std::path::absolute(path)?;
    let real = resolve(&path)?;
    let comps: Vec<&OsStr> = real
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut shown = PathBuf::from("/");
    let mut fd = open_dir(rustix::fs::CWD, OsStr::new("/"))?;
    check(&shown, &rustix::fs::fstat(&fd)?, euid, comps.is_empty())?;
    for (i, name) in comps.iter().enumerate() {
        shown.push(name);
        let last = i + 1 == comps.len();
        let next = match open_dir(&fd, name) {
            Err(Errno::NOENT) if create => {
                // The parent passed the checks: nobody else can rename what we make here
                // (a sticky parent included); a name planted meanwhile is checked below.
                match rustix::fs::mkdirat(&fd, *name, Mode::from_raw_mode(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_at(&shown, e)),
                }
                open_dir(&fd, name).map_err(|e| io_at(&shown, e))?
            }
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(refuse(&shown, "a symlink or not a directory".into()));
            }
            Err(e) => return Err(io_at(&shown, e)),
            Ok(f) => f,
        };
        let st = rustix::fs::fstat(&next)?;
        check(&shown, &st, euid, last)?;
        if create && last && st.st_mode & 0o077 != 0 && st.st_uid == euid {
            rustix::fs::fchmod(&next, Mode::from_raw_mode(DIR_MODE))?;
        }
        fd = next;
    }
    Ok(fd)
}

fn io_at(path: &Path, e: Errno) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// What is unsafe about the store path `path`, for tools that only read the store
/// (`store stat`, `store gc`, `doctor`): `None` when it is safe or does not exist yet
/// (a mount checks the parents it creates it under).
pub fn problem(path: &Path) -> Option<String> {
    match open_root(path, false) {
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn safe_paths_open_and_unsafe_ones_are_named() {
        // Under /tmp-like sticky directories (the tempdir's parent is /tmp).
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("a/b");
        open_root(&store, true).unwrap();
        for p in [t.path().join("a"), store.clone()] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        // A readable store root is tightened only when opened to be used.
        chmod(&store, 0o755);
        assert_eq!(problem(&store), None);
        assert_eq!(
            std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
            0o755
        );
        open_root(&store, true).unwrap();
        assert_eq!(
            std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A group-writable ancestor is named; nothing is created below it.
        chmod(&t.path().join("a"), 0o775);
        let e = open_root(&t.path().join("a/b/c"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{}: mode 0775", t.path().join("a").display())),
            "{e}"
        );
        assert!(!t.path().join("a/b/c").exists());
        assert!(problem(&store).is_some());
        chmod(&t.path().join("a"), 0o700);
        // A writable sticky store root is not accepted (only ancestors may be sticky).
        chmod(&store, 0o1777);
        assert!(open_root(&store, true).is_err());
        chmod(&store, 0o700);
        // A symlink to a safe directory is resolved; a missing `..` is refused.
        std::os::unix::fs::symlink(&store, t.path().join("link")).unwrap();
        open_root(&t.path().join("link"), true).unwrap();
        assert!(open_root(&t.path().join("x/../y"), true).is_err());
    }
}
