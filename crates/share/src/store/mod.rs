//! The content-addressed object store behind page cache sharing.
//!
//! One directory per trusted domain; one object file per sharing key (domain,
//! fingerprint value). Every mount process of the domain opens the same object file,
//! so the kernel keeps one page cache for it, whichever image and path a file comes
//! from.
//!
//! ```text
//! STORE/v1/<domain tag>/<2 hex>/<object name>        verified against its sha256: fingerprint
//! STORE/v1/<domain tag>/<2 hex>/<object name>.u      not verified (verify=off, or no sha256:)
//! STORE/v1/<domain tag>/records/                      what was verified, objects' seals
//! ```
//!
//! Names come from a keyed hash: `K = HMAC-SHA256(domain_id, "ishare store v1")`, the
//! domain tag is the first 128 bits of `HMAC(K, "domain")` in hex, an object name is
//! `HMAC(K, "object" 0 fingerprint)` in hex. Without the domain id nothing in the store
//! reveals the domain, nor links an object to a fingerprint (which for `sha256:`
//! fingerprints would tell whose files are where).
//!
//! Objects are published atomically: written to an unnamed `O_TMPFILE` (or a
//! `.tmp.*` file when the filesystem lacks it) in the object's directory, synced,
//! then linked under the final name with `linkat`, which fails if a concurrent mount
//! published first (its object is then used). A crash at any point leaves no partial
//! object under a final name. Directories are `0700`.
//!
//! # Which objects are in use
//!
//! A mount process holds a shared `flock` on every object file it serves from (and on
//! its temporary objects while it writes them), taken right after opening the file and
//! held for as long as the file is open, so the kernel drops it when the process dies.
//! `ishare store gc` takes `LOCK_EX | LOCK_NB` on an object before unlinking it, and
//! leaves it if that fails. The exclusive lock is held only from the check until the
//! unlink, so a mount opening the object meanwhile waits for it briefly; having got its
//! shared lock, the mount checks that the path still names the file it opened, and
//! looks again (finding the next object, or none and preparing one) when it does not.
//! Either way it never serves from a file that gc is about to remove, and a file that
//! is removed while open keeps its data until closed, so removing objects (or the
//! whole store) never changes what a live mount reads.
//!
//! Preparation locks (`<name>.lock`) follow the same rule: whoever removes a lock file
//! holds it exclusively, and whoever gets it checks it is still in place.
//!
//! # Modules
//!
//! * this one: names, opening, preparing and publishing objects (what mounts do);
//! * [`record`]: authenticated record files, merged by concurrent processes;
//! * [`identity`]: a file's identity and state (`statx`);
//! * [`trust`]: the records of verified image files and the seals of objects;
//! * [`scan`]: walking the store, what each file is and whether a mount holds it;
//! * [`stat`]: `ishare store stat`;
//! * [`gc`]: `ishare store gc`.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use rustix::fs::{AtFlags, CWD, FlockOperation, Mode, OFlags};
use sha2::Sha256;

use crate::options::DomainId;

mod compact;
pub mod gc;
mod identity;
mod record;
pub mod safe;
mod scan;
pub mod stat;
pub(crate) mod trust;

type HmacSha256 = Hmac<Sha256>;

/// Layout version directory under the store root.
pub(crate) const VERSION_DIR: &str = "v1";

/// Suffix of objects published without verification.
pub(crate) const UNVERIFIED_SUFFIX: &str = ".u";

/// Suffix of the preparation lock files of earlier versions (one per object; gc
/// removes them).
pub(crate) const LOCK_SUFFIX: &str = ".lock";

/// The file in a domain directory holding the preparation locks (byte ranges).
pub(crate) const LOCKS_NAME: &str = "prepare.lock";

/// Name of the file in a domain directory that mounts probe FUSE passthrough with.
pub(crate) const PROBE_NAME: &str = "passthrough-probe";

/// Directory in a domain directory holding its records (see [`trust`]).
pub(crate) const RECORDS_DIR: &str = "records";

/// Prefix of named temporary files (only when `O_TMPFILE` is unavailable).
pub const TMP_PREFIX: &str = ".tmp.";

/// How often opening a file that keeps being removed or replaced under us is retried
/// (each retry means another process made progress: published, collected or released
/// it; the bound only guards against bugs).
const RETRIES: usize = 1000;

/// An object file, open read-only.
#[derive(Debug)]
pub struct Object {
    /// The open object file.
    pub file: File,
    /// Its size.
    pub size: u64,
    /// Its content was checked against a `sha256:` fingerprint when published.
    pub verified: bool,
    /// Served to a reader (set by whoever served it): an object made ahead of any open
    /// keeps its pages once published (see [`crate::publish`]).
    pub opened: std::sync::atomic::AtomicBool,
}

/// The store directory of one domain.
pub struct Store {
    root: PathBuf,
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.key.fill(0);
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn mkdir_private(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Opens (creating, `0700`) the directory `name` in `parent` without following a
/// symlink; one of ours that others may read is tightened to `0700`.
fn private_subdir(parent: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    let open = |p: &dyn AsFd| {
        rustix::fs::openat(
            p.as_fd(),
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open(&parent) {
        Err(rustix::io::Errno::NOENT) => {
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(safe::DIR_MODE)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            open(&parent)?
        }
        r => r?,
    };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & 0o077 != 0 && st.st_uid == rustix::process::geteuid().as_raw() {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(safe::DIR_MODE))?;
    }
    Ok(fd)
}

/// Runs `op` on a file in `dir`, creating `dir` first. `ishare store gc` removes empty
/// directories, possibly right between our mkdir and `op`: then `dir` is created again
/// and `op` retried.
fn in_dir<T>(dir: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        match mkdir_private(dir).and_then(|()| op()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < RETRIES => tries += 1,
            r => return r,
        }
    }
}

/// True when `path` still names the file open as `fd` (not removed or replaced since
/// it was opened).
fn still_at(fd: impl AsFd, path: &Path) -> io::Result<bool> {
    let open = rustix::fs::fstat(fd)?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == open.st_dev && now.ino() == open.st_ino),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Marks a file used by this process (see the module documentation): a shared `flock`,
/// released when the last descriptor of this open file goes.
fn hold_shared(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::flock(fd, FlockOperation::LockShared)?)
}

/// A temporary object being written; removed unless published.
#[derive(Debug)]
pub struct TmpObject {
    /// The file to write the content into.
    pub file: File,
    dir: OwnedFd,
    /// Name of a named temporary file; `None` for `O_TMPFILE`.
    named: Option<String>,
    name: String,
}

impl TmpObject {
    /// A read-only open file of the same inode (through `/proc/self/fd`; a duplicate
    /// of the writable one if that fails), marked in use like an object: it is served
    /// from before it is published and after.
    pub fn reopen_read_only(&self) -> io::Result<File> {
        let proc = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.file)
        );
        let f = File::open(proc).or_else(|_| self.file.try_clone())?;
        hold_shared(&f)?;
        Ok(f)
    }
}

impl Drop for TmpObject {
    fn drop(&mut self) {
        if let Some(n) = self.named.take() {
            let _ = rustix::fs::unlinkat(&self.dir, n.as_str(), AtFlags::empty());
        }
    }
}

/// What [`Store::publish`] did.
#[derive(Debug)]
// The object is for callers that serve from it (tests do); the publisher only needs to
// know who won.
#[cfg_attr(not(test), allow(dead_code))]
pub enum Published {
    /// Our object is now in the store.
    Ours(Object),
    /// Another process published first; its object.
    Theirs(Object),
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An exclusive lock on preparing one object (`flock` on `<name>.lock`): mounts of a
/// domain wait for the one preparing an object instead of preparing it again. The
/// kernel releases it when its holder dies.
#[derive(Debug)]
pub struct ObjectLock {
    _fd: OwnedFd,
}

impl ObjectLock {
    /// Releases the lock once the object is published (closing the descriptor
    /// releases it; whoever waited finds the object).
    pub fn release_published(self) {}
}

impl Store {
    /// Opens (creating as needed) the store directory of `domain` under `root`.
    ///
    /// The root and every directory above it must be safe (see [`safe`]); missing ones
    /// are created `0700` under a safe parent. The layout directories below are opened
    /// without following symlinks and tightened to `0700` (stores of older versions
    /// had `0755`), so that only the store's owner can reach the objects.
    pub fn open(root: &Path, domain: &DomainId) -> io::Result<Store> {
        let key = hmac(domain.expose(), &[b"ishare store v1"]);
        let tag = hex::encode(&hmac(&key, &[b"domain"])[..16]);
        let mut fd = safe::open_root(root, true)?;
        for name in [VERSION_DIR, tag.as_str()] {
            fd = private_subdir(&fd, name)?;
        }
        let dir = root.join(VERSION_DIR).join(tag);
        Ok(Store {
            root: root.to_path_buf(),
            dir,
            key,
        })
    }

    /// The store root (shown in logs; it reveals nothing about the domain).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The domain's directory.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `HMAC(K, parts...)`: names and keys derived from the domain id (each use with
    /// its own first part).
    pub(crate) fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        hmac(&self.key, parts)
    }

    /// Where the domain's records are (for log lines).
    pub(crate) fn records_path(&self) -> PathBuf {
        self.dir.join(RECORDS_DIR)
    }

    /// Opens the domain's records directory, walking from the store root as
    /// [`Store::open`] does (the directories may have been removed by gc since);
    /// with `create`, missing directories are made, else `None` when one is missing.
    pub(crate) fn records_dir(&self, create: bool) -> io::Result<Option<OwnedFd>> {
        let names = [
            VERSION_DIR,
            self.dir
                .file_name()
                .and_then(OsStr::to_str)
                .ok_or_else(|| io::Error::other("bad domain directory"))?,
            RECORDS_DIR,
        ];
        let mut fd = match safe::open_root(&self.root, create) {
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r?,
        };
        for name in names {
            fd = if create {
                private_subdir(&fd, name)?
            } else {
                match rustix::fs::openat(
                    &fd,
                    name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Err(rustix::io::Errno::NOENT) => return Ok(None),
                    r => r?,
                }
            };
        }
        Ok(Some(fd))
    }

    /// The object name of a fingerprint value (hex of a keyed hash).
    pub fn object_name(&self, fingerprint: &[u8]) -> String {
        hex::encode(hmac(&self.key, &[b"object", &[0], fingerprint]))
    }

    fn object_dir(&self, name: &str) -> PathBuf {
        self.dir.join(&name[..2])
    }

    fn final_name(name: &str, verified: bool) -> String {
        if verified {
            name.to_owned()
        } else {
            format!("{name}{UNVERIFIED_SUFFIX}")
        }
    }

    /// Path of an object (for tests and tools).
    pub fn object_path(&self, fingerprint: &[u8], verified: bool) -> PathBuf {
        let name = self.object_name(fingerprint);
        self.object_dir(&name)
            .join(Self::final_name(&name, verified))
    }

    /// Opens a published object and marks it in use by this process (see the module
    /// documentation).
    fn open_object(path: &Path, verified: bool) -> io::Result<Option<Object>> {
        for _ in 0..RETRIES {
            let file = match rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map(File::from)
            .map_err(io::Error::from)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            // Waits only while gc holds the object to unlink it.
            hold_shared(&file)?;
            // Collected or replaced while we waited: look again.
            if !still_at(&file, path)? {
                continue;
            }
            let size = file.metadata()?.len();
            return Ok(Some(Object {
                file,
                size,
                verified,
                opened: Default::default(),
            }));
        }
        Err(io::Error::other(format!(
            "{} keeps being replaced",
            path.display()
        )))
    }

    /// The published object of `fingerprint`: the verified one, else (unless
    /// `verified_only`) an unverified one.
    pub fn lookup(&self, fingerprint: &[u8], verified_only: bool) -> io::Result<Option<Object>> {
        if let Some(o) = Self::open_object(&self.object_path(fingerprint, true), true)? {
            return Ok(Some(o));
        }
        if verified_only {
            return Ok(None);
        }
        Self::open_object(&self.object_path(fingerprint, false), false)
    }

    /// Waits for and takes the preparation lock of `fingerprint`'s object: a one-byte
    /// write lock (an open file description lock, which excludes other descriptors of
    /// this process too) in the domain's one lock file, at an offset drawn from the
    /// object's name. A lock file per object cost an inode creation and removal per
    /// new object, which made ext4 scan its inode tables for recently deleted inodes:
    /// about a third of the daemon's CPU when many objects were made. Two names
    /// meeting at one offset (one in 2^62) only make one wait for the other.
    pub fn lock(&self, fingerprint: &[u8]) -> io::Result<ObjectLock> {
        let name = self.object_name(fingerprint);
        let offset = u64::from_str_radix(&name[..16], 16).map_err(io::Error::other)? >> 2;
        let path = self.dir.join(LOCKS_NAME);
        for _ in 0..RETRIES {
            let fd = in_dir(&self.dir, || {
                Ok(rustix::fs::open(
                    &path,
                    OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?)
            })?;
            // Held shared while in use: gc removes the file only when nobody holds it.
            hold_shared(&fd)?;
            if !still_at(&fd, &path)? {
                continue;
            }
            let range = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: offset as libc::off_t,
                l_len: 1,
                l_pid: 0,
            };
            loop {
                match nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_OFD_SETLKW(&range)) {
                    Ok(_) => return Ok(ObjectLock { _fd: fd }),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(io::Error::other(format!(
            "{} keeps being replaced",
            path.display()
        )))
    }

    /// A file in the domain's directory to probe FUSE passthrough with (it lies on the
    /// objects' filesystem, whose stacking depth matters). Marked in use like an object,
    /// so gc removes it only once no mount of the domain holds it.
    pub fn probe_file(&self) -> io::Result<File> {
        let path = self.dir.join(PROBE_NAME);
        // Never through a symlink: one planted here would make us create or open a file
        // anywhere.
        let f = in_dir(&self.dir, || {
            Ok(File::from(rustix::fs::open(
                &path,
                OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?))
        })?;
        hold_shared(&f)?;
        Ok(f)
    }

    /// A new temporary object for `fingerprint`, in the directory it will be
    /// published in (so publishing is a link within one directory).
    pub fn create_tmp(&self, fingerprint: &[u8]) -> io::Result<TmpObject> {
        let name = self.object_name(fingerprint);
        let odir = self.object_dir(&name);
        // The directory cannot go away once we hold it open and it holds our lock file
        // (or, when replacing, the object in use): gc removes empty directories only.
        let dir = in_dir(&odir, || {
            Ok(rustix::fs::open(
                &odir,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)
        })?;
        // Owner-readable only: an object holds the content of an image that others may not
        // be allowed to read; the daemon (root or the store's owner) is its only reader.
        let mode = Mode::from_raw_mode(0o400);
        match rustix::fs::openat(
            &dir,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        ) {
            Ok(fd) => {
                hold_shared(&fd)?;
                return Ok(TmpObject {
                    file: File::from(fd),
                    dir,
                    named: None,
                    name,
                });
            }
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL => {}
            Err(e) => return Err(e.into()),
        }
        let tmp = format!(
            "{TMP_PREFIX}{name}.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        )?;
        // gc removes a named temporary only when nobody holds it (and it is old enough
        // to rule out the moment between creating and locking it).
        hold_shared(&fd)?;
        Ok(TmpObject {
            file: File::from(fd),
            dir,
            named: Some(tmp),
            name,
        })
    }

    /// Makes a fully written temporary object durable (unless the caller `synced` its
    /// filesystem since it was written) and visible under its final name. With
    /// `replace`, an existing object of that name is replaced (it was found damaged);
    /// otherwise an existing one wins and is returned.
    pub fn publish(
        &self,
        mut tmp: TmpObject,
        verified: bool,
        replace: bool,
        synced: bool,
    ) -> io::Result<Published> {
        // The data must be on disk before the name: after a crash a name never
        // stands for incomplete content. The name itself need not be durable (the
        // directory is not synced): an object lost in a crash is prepared again.
        if !synced {
            rustix::fs::fdatasync(&tmp.file)?;
        }
        let final_name = Self::final_name(&tmp.name, verified);
        // Give an O_TMPFILE a temporary name first when it must replace an object
        // (linkat never replaces).
        if tmp.named.is_none() && replace {
            let n = format!(
                "{TMP_PREFIX}{}.{}.{}",
                tmp.name,
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            link_tmpfile(&tmp.file, &tmp.dir, &n)?;
            tmp.named = Some(n);
        }
        let res = match (&tmp.named, replace) {
            (Some(n), true) => {
                rustix::fs::renameat(&tmp.dir, n.as_str(), &tmp.dir, final_name.as_str())
                    .map(|()| tmp.named = None)
            }
            (Some(n), false) => rustix::fs::linkat(
                &tmp.dir,
                n.as_str(),
                &tmp.dir,
                final_name.as_str(),
                AtFlags::empty(),
            ),
            (None, _) => link_tmpfile(&tmp.file, &tmp.dir, &final_name),
        };
        let path = self.object_dir(&tmp.name).join(&final_name);
        match res {
            Ok(()) => {
                // Reopen read-only: the object is served through read-only opens only.
                let obj = Self::open_object(&path, verified)?
                    .ok_or_else(|| io::Error::other("object vanished after publishing"))?;
                Ok(Published::Ours(obj))
            }
            Err(e) if e == rustix::io::Errno::EXIST => {
                let obj = Self::open_object(&path, verified)?.ok_or_else(|| {
                    io::Error::other("object vanished after a concurrent publish")
                })?;
                Ok(Published::Theirs(obj))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Links an `O_TMPFILE` file into `dir` as `name`: `AT_EMPTY_PATH` (needs
/// CAP_DAC_READ_SEARCH), else through `/proc/self/fd`.
fn link_tmpfile(file: &File, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    match rustix::fs::linkat(file.as_fd(), "", dir, name, AtFlags::EMPTY_PATH) {
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::PERM => {
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            rustix::fs::linkat(
                CWD,
                OsStr::from_bytes(proc.as_bytes()),
                dir,
                name,
                AtFlags::SYMLINK_FOLLOW,
            )
        }
        r => r,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::time::Duration;

    use super::*;

    fn store(dir: &Path, domain: &str) -> Store {
        Store::open(dir, &DomainId::new(domain)).unwrap()
    }

    /// Publishes `data` as the object of `fp`.
    pub(crate) fn publish(s: &Store, fp: &[u8], data: &[u8], verified: bool) {
        let mut t = s.create_tmp(fp).unwrap();
        t.file.write_all(data).unwrap();
        let Published::Ours(_) = s.publish(t, verified, false, false).unwrap() else {
            panic!("not published")
        };
    }

    #[test]
    fn preparation_locks_exclude_per_object_and_create_no_file_per_object() {
        let t = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(t.path(), "d"));
        let held = s.lock(b"a").unwrap();
        // Another object is not held up.
        drop(s.lock(b"b").unwrap());
        // The same object waits, also within this process.
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || {
            let l = s2.lock(b"a").unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "not excluded"
        );
        held.release_published();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("never woken");
        waiter.join().unwrap();
        let files: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, [LOCKS_NAME], "one lock file for the domain");
    }

    #[test]
    fn names_hide_the_domain_and_differ_per_domain() {
        let t = tempfile::tempdir().unwrap();
        let a = store(t.path(), "secret-domain-a");
        let b = store(t.path(), "secret-domain-b");
        assert_ne!(a.dir(), b.dir());
        assert_ne!(a.object_name(b"fp"), b.object_name(b"fp"));
        assert_ne!(a.object_name(b"fp"), a.object_name(b"fq"));
        for p in [a.dir(), &a.object_path(b"fp", true)] {
            assert!(!p.to_string_lossy().contains("secret"), "{p:?}");
        }
        let mode = std::fs::metadata(a.dir()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn publish_is_atomic_and_first_wins() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path(), "d");
        assert!(s.lookup(b"fp", false).unwrap().is_none());
        let mut t1 = s.create_tmp(b"fp").unwrap();
        let mut t2 = s.create_tmp(b"fp").unwrap();
        t1.file.write_all(b"first").unwrap();
        t2.file.write_all(b"second").unwrap();
        // Nothing is visible before publishing.
        assert!(s.lookup(b"fp", false).unwrap().is_none());
        let Published::Ours(o1) = s.publish(t1, true, false, false).unwrap() else {
            panic!("first publish lost")
        };
        assert_eq!(o1.size, 5);
        let Published::Theirs(o2) = s.publish(t2, true, false, false).unwrap() else {
            panic!("second publish won")
        };
        let mut buf = [0u8; 5];
        o2.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"first");
        // Replacing works, and no temporary files stay behind.
        let mut t3 = s.create_tmp(b"fp").unwrap();
        t3.file.write_all(b"third!").unwrap();
        let Published::Ours(o3) = s.publish(t3, true, true, false).unwrap() else {
            panic!("replace lost")
        };
        assert_eq!(o3.size, 6);
        let obj_dir = s.object_path(b"fp", true).parent().unwrap().to_path_buf();
        let names: Vec<_> = std::fs::read_dir(obj_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Unverified objects live under another name; lookup prefers verified ones.
        let mut t4 = s.create_tmp(b"other").unwrap();
        t4.file.write_all(b"x").unwrap();
        s.publish(t4, false, false, false).unwrap();
        assert!(s.lookup(b"other", true).unwrap().is_none());
        assert!(!s.lookup(b"other", false).unwrap().unwrap().verified);
        assert!(s.lookup(b"fp", false).unwrap().unwrap().verified);
    }

    #[test]
    fn an_unpublished_temporary_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path(), "d");
        {
            let mut tmp = s.create_tmp(b"fp").unwrap();
            tmp.file.write_all(b"partial").unwrap();
        }
        let obj_dir = s.object_path(b"fp", true).parent().unwrap().to_path_buf();
        assert_eq!(std::fs::read_dir(obj_dir).unwrap().count(), 0);
    }

    #[test]
    fn a_collected_object_stays_readable_where_it_is_open() {
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", b"content", true);
        let obj = s.lookup(b"a", true).unwrap().unwrap();
        // Removed behind the holder's back (rm -rf of the store).
        fs::remove_dir_all(t.path().join(VERSION_DIR)).unwrap();
        let mut buf = [0u8; 7];
        obj.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"content");
        assert!(s.lookup(b"a", true).unwrap().is_none());
    }

    #[test]
    fn lookup_racing_gc_gets_the_object_or_none() {
        // gc holds the object exclusively; a lookup waits, then finds it gone.
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", b"content", true);
        let path = s.object_path(b"a", true);
        let f = fs::File::open(&path).unwrap();
        rustix::fs::flock(&f, FlockOperation::LockExclusive).unwrap();
        std::thread::scope(|sc| {
            let h = sc.spawn(|| s.lookup(b"a", true).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            assert!(!h.is_finished(), "lookup did not wait for gc's lock");
            fs::remove_file(&path).unwrap();
            drop(f);
            assert!(
                h.join().unwrap().is_none(),
                "lookup returned a removed object"
            );
        });
    }
}
