//! Walking the object store for `stat` and `gc`: what each file is, and whether a
//! live mount holds it.
//!
//! "In use" is what the kernel says: every mount process holds a shared `flock` on each
//! object it serves from (see [`crate::store`]), so an object is in use exactly when
//! `LOCK_EX | LOCK_NB` on it fails ([`exclusive`], which also removes a file while
//! holding that lock, after checking that the path still names the file it locked).
//!
//! Everything here recognizes the store's own names only (domain tags, object names,
//! lock and temporary files, the files of a domain's `records` directory); other files
//! are counted and never removed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::{
    LOCK_SUFFIX, LOCKS_NAME, PROBE_NAME, RECORDS_DIR, TMP_PREFIX, UNVERIFIED_SUFFIX, VERSION_DIR,
};
use crate::error::{Error, Result};

/// What a file in the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A published object.
    Object { verified: bool },
    /// A preparation lock file (the domain's `prepare.lock`, or an earlier version's
    /// `<name>.lock`).
    Lock,
    /// A named temporary object (`.tmp.*`; only where `O_TMPFILE` is missing).
    Tmp,
    /// The passthrough probe file of a domain.
    Probe,
    /// A file of a domain's records (see [`super::trust`]): worth keeping only while
    /// the domain has objects.
    Record,
    /// Not one of ours.
    Other,
}

/// A file found in the store.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) kind: Kind,
    pub(super) path: PathBuf,
    /// Index into [`Scan::domains`].
    pub(super) domain: Option<usize>,
    /// Index into [`Scan::dirs`] of the directory holding it.
    pub(super) dir: Option<usize>,
    pub(super) size: u64,
    /// Allocated bytes (what `du` counts).
    pub(super) disk: u64,
    /// max(atime, mtime) in nanoseconds since the epoch: when a mount last read it, as
    /// far as the filesystem's atime policy tells (relatime: at least daily).
    pub(super) last_use: i128,
    pub(super) mtime: i128,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

/// A directory gc may remove once empty (domain and object directories).
#[derive(Debug)]
pub(super) struct Dir {
    pub(super) path: PathBuf,
    pub(super) parent: Option<usize>,
    /// Entries when scanned.
    pub(super) entries: usize,
    /// Entries removed since.
    pub(super) gone: usize,
}

#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Domain tags (directory names).
    pub(super) domains: Vec<String>,
    pub(super) files: Vec<Found>,
    /// Each domain directory before its object directories.
    pub(super) dirs: Vec<Dir>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn classify(name: &str, dir_name: &str) -> Kind {
    if is_hex(name, 64) && name.starts_with(dir_name) {
        return Kind::Object { verified: true };
    }
    let under = |suffix: &str| {
        name.strip_suffix(suffix)
            .is_some_and(|n| is_hex(n, 64) && n.starts_with(dir_name))
    };
    if under(UNVERIFIED_SUFFIX) {
        Kind::Object { verified: false }
    } else if under(LOCK_SUFFIX) {
        Kind::Lock
    } else if name.starts_with(TMP_PREFIX) {
        Kind::Tmp
    } else {
        Kind::Other
    }
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Directory entries sorted by name; `None` when the directory is gone.
fn entries(dir: &Path) -> Result<Option<Vec<fs::DirEntry>>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut v = rd
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    v.sort_by_key(|e| e.file_name());
    Ok(Some(v))
}

impl Scan {
    /// Records a file (nothing when it vanished meanwhile: a mount or gc removed it).
    fn file(
        &mut self,
        path: PathBuf,
        kind: Kind,
        domain: Option<usize>,
        dir: Option<usize>,
    ) -> Result<()> {
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        };
        // Only regular files are ours, whatever their name.
        let kind = if md.is_file() { kind } else { Kind::Other };
        let mtime = nanos(md.mtime(), md.mtime_nsec());
        self.files.push(Found {
            kind,
            path,
            domain,
            dir,
            size: md.len(),
            disk: md.blocks() * 512,
            last_use: mtime.max(nanos(md.atime(), md.atime_nsec())),
            mtime,
            dev: md.dev(),
            ino: md.ino(),
        });
        Ok(())
    }

    /// Everything under `root/v1`; `None` when `root` does not exist.
    pub(super) fn of(root: &Path) -> Result<Option<Scan>> {
        match fs::metadata(root) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(root, e)),
        }
        let mut scan = Scan::default();
        let v1 = root.join(VERSION_DIR);
        // Entries below are classified without following symlinks; `v1` itself must not
        // be one either, or gc would remove files wherever it points.
        if fs::symlink_metadata(&v1).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::io(
                v1,
                io::Error::other("a symlink, not the store's directory; not walked"),
            ));
        }
        for e in entries(&v1)?.unwrap_or_default() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && is_hex(&name, 32) {
                scan.domain(e.path(), name)?;
            } else if !is_dir {
                scan.file(e.path(), Kind::Other, None, None)?;
            }
        }
        Ok(Some(scan))
    }

    fn domain(&mut self, path: PathBuf, tag: String) -> Result<()> {
        let Some(list) = entries(&path)? else {
            return Ok(());
        };
        let d = self.domains.len();
        self.domains.push(tag);
        let ddir = self.dirs.len();
        self.dirs.push(Dir {
            path,
            parent: None,
            entries: list.len(),
            gone: 0,
        });
        for e in list {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && name == RECORDS_DIR {
                let Some(recs) = entries(&e.path())? else {
                    self.dirs[ddir].gone += 1;
                    continue;
                };
                let rdir = self.dirs.len();
                self.dirs.push(Dir {
                    path: e.path(),
                    parent: Some(ddir),
                    entries: recs.len(),
                    gone: 0,
                });
                for r in recs {
                    self.file(r.path(), Kind::Record, Some(d), Some(rdir))?;
                }
            } else if is_dir && is_hex(&name, 2) {
                let Some(objs) = entries(&e.path())? else {
                    // Removed meanwhile.
                    self.dirs[ddir].gone += 1;
                    continue;
                };
                let odir = self.dirs.len();
                self.dirs.push(Dir {
                    path: e.path(),
                    parent: Some(ddir),
                    entries: objs.len(),
                    gone: 0,
                });
                for o in objs {
                    let oname = o.file_name().to_string_lossy().into_owned();
                    let kind = classify(&oname, &name);
                    self.file(o.path(), kind, Some(d), Some(odir))?;
                }
            } else if !is_dir {
                let kind = if name == PROBE_NAME {
                    Kind::Probe
                } else if name == LOCKS_NAME {
                    Kind::Lock
                } else {
                    Kind::Other
                };
                self.file(e.path(), kind, Some(d), Some(ddir))?;
            }
        }
        Ok(())
    }
}

/// Whether a file is held by some process.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    Yes,
    No,
    /// Removed or replaced since it was scanned.
    Gone,
}

/// Takes `LOCK_EX | LOCK_NB` on `path` (the file `f` was scanned as); without `unlink`
/// only tells whether that succeeded, with it removes the file while holding the lock.
pub(super) fn exclusive(f: &Found, unlink: bool) -> io::Result<Held> {
    // O_NONBLOCK: something that is not a regular file any more must not block us.
    let fd = match rustix::fs::open(
        &f.path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Held::Gone),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_dev != f.dev || st.st_ino != f.ino {
        return Ok(Held::Gone);
    }
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(Held::Yes),
        Err(e) => return Err(e.into()),
    }
    // The path must still name what we locked: unlinking a file that replaced it
    // would remove an object we never checked.
    match fs::symlink_metadata(&f.path) {
        Ok(md) if md.dev() == f.dev && md.ino() == f.ino => {}
        Ok(_) => return Ok(Held::Gone),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Held::Gone),
        Err(e) => return Err(e),
    }
    if unlink {
        match fs::remove_file(&f.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Held::Gone),
            Err(e) => return Err(e),
        }
    }
    // Closing `fd` releases the lock; a mount waiting for it finds the path gone.
    Ok(Held::No)
}
