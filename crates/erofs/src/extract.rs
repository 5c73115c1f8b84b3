//! Extraction (cargo feature `extract`): [`Image::extract`] recreates an image's
//! tree in a directory, as `ishare extract` does: contents (holes left sparse,
//! mapped extents copied with `copy_file_range`), symlinks, device nodes, FIFOs and
//! sockets, hard links, xattrs, owners (as root), modes and times.
//!
//! Everything is created relative to directory file descriptors opened with
//! `O_NOFOLLOW`, so no name in the image (the reader already refuses `/`, NUL and
//! empty names; "." and ".." entries are skipped) and no symlink it creates can make
//! us write outside the target directory. The tree is walked depth first
//! ([`Image::walk`]) by the calling thread, which creates every entry in order;
//! larger files' contents and metadata go to worker threads.
//!
//! Extraction never leaves part of the tree out and still succeeds: the walk refuses
//! a listing whose "." and ".." entries are not exactly the directory and its parent
//! (a second ".." would otherwise be skipped with its subtree), and any error of the
//! walk ends the extraction with that error, naming the path.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use rustix::fs::{
    self as rfs, AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;

use crate::data::{Extent, ExtentKind};
use crate::image::Image;
use crate::inode::{FileType, Inode};
use crate::walk::{WalkOrder, WalkStep};

/// What [`Image::extract`] does.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Extract into a directory that is not empty, replacing what is in the way.
    pub overwrite: bool,
    /// Threads writing file contents and metadata (`None`: one per core; 1 does
    /// everything in the walking thread; at most 64).
    pub workers: Option<usize>,
    /// Restore extended attributes.
    pub xattrs: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            overwrite: false,
            workers: None,
            xattrs: true,
        }
    }
}

/// Why an extraction failed. The variants that wrap another error name the place
/// (a path inside the image, shown from its root `/`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// Reading the image failed, or it is corrupt.
    #[error(transparent)]
    Image(#[from] crate::Error),
    /// A system call on the target failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The target directory is not empty and [`ExtractOptions::overwrite`] is off.
    #[error("{} is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// The target directory could not be read, created or opened.
    #[error("cannot {action} {}", path.display())]
    Target {
        /// "read", "create" or "open".
        action: &'static str,
        /// The target directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The image's root inode is not a directory.
    #[error("{image}: root inode {nid} is not a directory")]
    RootNotDirectory {
        /// The image's name.
        image: String,
        /// The root's NID.
        nid: u64,
    },
    /// A device of the image ended before an extent on it.
    #[error("{image}: unexpected end of device at offset {offset}")]
    DeviceEnd {
        /// The image's name.
        image: String,
        /// Where on the device.
        offset: u64,
    },
    /// The default ACL of a directory to fill could not be removed.
    #[error("cannot clear a default ACL")]
    ClearAcl(#[source] io::Error),
    /// An extended attribute could not be set.
    #[error("cannot set xattr {name}")]
    SetXattr {
        /// Its name.
        name: String,
        /// What failed.
        source: io::Error,
    },
    /// The worker threads stopped before the walk ended.
    #[error("extraction workers stopped")]
    WorkersStopped,
    /// Creating a directory failed.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// Its path in the image.
        path: String,
        /// What failed.
        source: Box<ExtractError>,
    },
    /// Extracting a non-directory failed.
    #[error("cannot extract {path}")]
    Entry {
        /// Its path in the image.
        path: String,
        /// What failed.
        source: Box<ExtractError>,
    },
    /// Setting a directory's xattrs or metadata (done when its subtree is complete)
    /// failed.
    #[error("{path}")]
    Directory {
        /// Its path in the image.
        path: String,
        /// What failed.
        source: Box<ExtractError>,
    },
}

impl From<Errno> for ExtractError {
    fn from(e: Errno) -> Self {
        Self::Io(e.into())
    }
}

type Result<T, E = ExtractError> = std::result::Result<T, E>;

impl Image {
    /// Recreates the image's tree in directory `dir` (created if missing). A
    /// directory that is not empty is refused unless `opts.overwrite`.
    pub fn extract(&self, dir: &Path, opts: &ExtractOptions) -> Result<()> {
        prepare_target(dir, opts.overwrite)?;
        let root_fd = rfs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| target("open", dir, e.into()))?;
        let zero_copy = AtomicBool::new(true);
        let failed = Mutex::new(None);
        let xattrs = opts.xattrs;
        // The walker creates entries in order; file contents and metadata, most of the
        // work, are spread over the other cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = opts.workers.unwrap_or(cores).clamp(1, 64);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
        let rx = Mutex::new(rx);
        std::thread::scope(|s| {
            let jobs = if workers > 1 {
                for _ in 0..workers {
                    s.spawn(|| {
                        let mut w = Writer::new(self, xattrs, &zero_copy);
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok(job) = job else { break };
                            let mut first = failed.lock().unwrap_or_else(|e| e.into_inner());
                            if first.is_some() {
                                continue; // drain, so the walker never blocks
                            }
                            drop(first);
                            if let Err(e) = w.finish_file(&job) {
                                first = failed.lock().unwrap_or_else(|e| e.into_inner());
                                first.get_or_insert(ExtractError::Entry {
                                    path: show(&job.path),
                                    source: Box::new(e),
                                });
                            }
                        }
                    });
                }
                Some(tx)
            } else {
                None
            };
            let mut x = Extractor {
                img: self,
                root_fd: &root_fd,
                overwrite: opts.overwrite,
                w: Writer::new(self, xattrs, &zero_copy),
                jobs,
                failed: &failed,
                links: HashMap::new(),
            };
            let res = x.extract_tree();
            drop(x); // closes the channel: workers finish the queue and stop
            res
        })?;
        match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn target(action: &'static str, path: &Path, source: io::Error) -> ExtractError {
    ExtractError::Target {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn prepare_target(dir: &Path, overwrite: bool) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if !overwrite && it.next().is_some() {
                return Err(ExtractError::NotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| target("create", dir, e))
        }
        Err(e) => Err(target("read", dir, e)),
    }
}

struct Extractor<'a> {
    img: &'a Image,
    root_fd: &'a OwnedFd,
    overwrite: bool,
    w: Writer<'a>,
    /// Regular files go to worker threads, when there are any.
    jobs: Option<SyncSender<Job>>,
    /// The first error a worker hit.
    failed: &'a Mutex<Option<ExtractError>>,
    /// First path (relative to the target: no leading `/`) extracted for each
    /// non-directory NID, to recreate hard links.
    links: HashMap<u64, Vec<u8>>,
}

/// Smaller files are finished by the walker itself: handing them to a worker costs
/// more than writing them.
const WORKER_MIN_SIZE: u64 = 64 << 10;

/// A regular file created by the walker, for a worker to fill.
struct Job {
    fd: OwnedFd,
    inode: Inode,
    /// Its path in the image (`/` first).
    path: Vec<u8>,
}

/// A path in the image as errors show it.
fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Extractor<'_> {
    fn extract_tree(&mut self) -> Result<()> {
        let img = self.img;
        let root = img.root()?;
        if !root.is_dir() {
            return Err(ExtractError::RootNotDirectory {
                image: img.name().to_owned(),
                nid: root.nid,
            });
        }
        let root_fd = rustix::io::dup(self.root_fd)?;
        // A default ACL on the target would be inherited by everything we create;
        // the image root's own ACLs are applied when the walk leaves it.
        clear_default_acl(&root_fd)?;
        // The directories on the walk's current path; metadata is applied when one
        // is left, so its mtime survives the creation of its children.
        let mut dirs = vec![root_fd];
        let mut walk = img.walk(root, WalkOrder::DepthFirst);
        loop {
            if self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                return Ok(()); // reported by the caller
            }
            let Some(step) = walk.next() else {
                return Ok(());
            };
            let e = match step? {
                WalkStep::Enter(_) => continue,
                WalkStep::Leave(done) => {
                    let fd = dirs.pop().expect("one per directory entered");
                    // Directory xattrs last: a default ACL set earlier would be
                    // inherited by the children created since.
                    self.w
                        .apply_xattrs(fd.as_fd(), None, &done.inode, &done.path)
                        .and_then(|()| self.w.apply_meta(fd.as_fd(), None, &done.inode))
                        .map_err(|e| ExtractError::Directory {
                            path: show(&done.path),
                            source: Box::new(e),
                        })?;
                    continue;
                }
                WalkStep::Entry(e) => e,
            };
            if let Some(cycle) = e.cycle_error() {
                return Err(cycle.into());
            }
            let parent = dirs.last().expect("inside a directory").as_fd();
            if e.inode.is_dir() {
                let fd =
                    self.make_dir(parent, e.name())
                        .map_err(|err| ExtractError::CreateDir {
                            path: e.path_str(),
                            source: Box::new(err),
                        })?;
                dirs.push(fd);
            } else {
                self.extract_leaf(parent, e.name(), &e.inode, &e.path)
                    .map_err(|err| ExtractError::Entry {
                        path: e.path_str(),
                        source: Box::new(err),
                    })?;
            }
        }
    }

    fn make_dir(&self, parent: BorrowedFd, name: &[u8]) -> Result<OwnedFd> {
        match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) if self.overwrite => {
                // Reuse an existing directory, replace anything else.
                let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Directory {
                    rfs::unlinkat(parent, name, AtFlags::empty())?;
                    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        let fd = open_dir(parent, name)?;
        if self.overwrite {
            clear_default_acl(&fd)?;
        }
        Ok(fd)
    }

    /// Removes `name` in `parent` when overwriting, so it can be created afresh.
    fn clear(&self, parent: BorrowedFd, name: &[u8]) -> Result<()> {
        if self.overwrite {
            match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let dir = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory;
                    if dir {
                        remove_tree(parent, name)?;
                    } else {
                        rfs::unlinkat(parent, name, AtFlags::empty())?;
                    }
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates non-directory `name` in `parent`, `path` in the image (`/` first).
    fn extract_leaf(
        &mut self,
        parent: BorrowedFd,
        name: &[u8],
        inode: &Inode,
        path: &[u8],
    ) -> Result<()> {
        self.clear(parent, name)?;
        if let Some(first) = self.links.get(&inode.nid) {
            // A hard link to something already extracted: resolve its parent beneath
            // the target without following symlinks.
            let (dir, base) = match first.iter().rposition(|&b| b == b'/') {
                Some(i) => (&first[..i], &first[i + 1..]),
                None => (&b"."[..], &first[..]),
            };
            let dfd = rfs::openat2(
                self.root_fd,
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            )?;
            rfs::linkat(&dfd, base, parent, name, AtFlags::empty())?;
            return Ok(());
        }
        let perm = Mode::from_raw_mode(0o600);
        match inode.file_type {
            FileType::Regular => {
                let fd = rfs::openat(
                    parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    perm,
                )?;
                let job = Job {
                    fd,
                    inode: inode.clone(),
                    path: path.to_vec(),
                };
                match &self.jobs {
                    Some(tx) if inode.size >= WORKER_MIN_SIZE => {
                        tx.send(job).map_err(|_| ExtractError::WorkersStopped)?
                    }
                    _ => self.w.finish_file(&job)?,
                }
            }
            FileType::Symlink => {
                let target = self.img.read_link(inode)?;
                rfs::symlinkat(target.as_slice(), parent, name)?;
                self.w.apply_xattrs(parent, Some(name), inode, path)?;
                self.w.apply_meta(parent, Some(name), inode)?;
            }
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
                let ft = match inode.file_type {
                    FileType::CharDevice => rfs::FileType::CharacterDevice,
                    FileType::BlockDevice => rfs::FileType::BlockDevice,
                    FileType::Fifo => rfs::FileType::Fifo,
                    _ => rfs::FileType::Socket,
                };
                let (major, minor) = inode.device_numbers();
                rfs::mknodat(parent, name, ft, perm, rfs::makedev(major, minor))?;
                self.w.apply_xattrs(parent, Some(name), inode, path)?;
                self.w.apply_meta(parent, Some(name), inode)?;
            }
            FileType::Directory => unreachable!("directories are handled by the walker"),
        }
        self.links.insert(inode.nid, path[1..].to_vec());
        Ok(())
    }
}

/// Writes file contents and metadata; one per thread.
struct Writer<'a> {
    img: &'a Image,
    xattrs: bool,
    as_root: bool,
    /// `copy_file_range` works between the image and the target.
    zero_copy: &'a AtomicBool,
    buf: Vec<u8>,
}

impl<'a> Writer<'a> {
    fn new(img: &'a Image, xattrs: bool, zero_copy: &'a AtomicBool) -> Self {
        let as_root = rustix::process::geteuid().is_root();
        Self {
            img,
            xattrs,
            as_root,
            zero_copy,
            buf: vec![0; 1 << 20],
        }
    }

    /// Contents, xattrs, owner, mode and times of a regular file just created.
    fn finish_file(&mut self, job: &Job) -> Result<()> {
        self.copy_data(&job.fd, &job.inode)?;
        self.apply_xattrs(job.fd.as_fd(), None, &job.inode, &job.path)?;
        self.apply_meta(job.fd.as_fd(), None, &job.inode)
    }

    /// Copies file data: mapped extents on the primary image with
    /// `copy_file_range` (no copy through userspace), holes left sparse.
    fn copy_data(&mut self, out: &OwnedFd, inode: &Inode) -> Result<()> {
        let img = self.img;
        let mut pos = 0;
        let mut trailing_hole = false;
        while pos < inode.size {
            let ext = img.map(inode, pos)?;
            let end = ext.logical + ext.len;
            trailing_hole = ext.kind == ExtentKind::Hole;
            match ext.kind {
                ExtentKind::Hole => pos = end,
                ExtentKind::Mapped { device, offset } => {
                    let skip = pos - ext.logical;
                    match img.device_file(device, offset + skip, end - pos)? {
                        Some((src, mut off_in)) if self.zero_copy.load(Ordering::Relaxed) => {
                            while pos < end {
                                let mut off_out = pos;
                                let want = usize::try_from(end - pos)
                                    .unwrap_or(usize::MAX)
                                    .min(1 << 30);
                                match rfs::copy_file_range(
                                    src,
                                    Some(&mut off_in),
                                    out,
                                    Some(&mut off_out),
                                    want,
                                ) {
                                    Ok(0) => {
                                        return Err(ExtractError::DeviceEnd {
                                            image: img.name().to_owned(),
                                            offset: off_in,
                                        });
                                    }
                                    Ok(n) => pos += n as u64,
                                    // Across filesystems (or where unsupported) fall back
                                    // to copying through memory, for the rest of the run.
                                    Err(
                                        Errno::XDEV
                                        | Errno::NOSYS
                                        | Errno::OPNOTSUPP
                                        | Errno::INVAL,
                                    ) => {
                                        self.zero_copy.store(false, Ordering::Relaxed);
                                        self.copy_buffered(out, inode, &ext, &mut pos)?;
                                    }
                                    Err(e) => return Err(e.into()),
                                }
                            }
                        }
                        Some(_) | None => self.copy_buffered(out, inode, &ext, &mut pos)?,
                    }
                }
                // Inline tails, compressed extents and fragments: through memory.
                ExtentKind::Inline { .. }
                | ExtentKind::Compressed(_)
                | ExtentKind::Fragment { .. } => self.copy_buffered(out, inode, &ext, &mut pos)?,
            }
        }
        // Holes are not written: a file ending in one needs its size set.
        if trailing_hole {
            rfs::ftruncate(out, inode.size)?;
        }
        Ok(())
    }

    /// Copies extent `ext` from `pos` to its end through the buffer, without mapping
    /// it again. A compressed extent is read whole, so that it is decoded once,
    /// straight into the buffer (grown to the extent's length, which the reader
    /// bounds to 12 MiB).
    fn copy_buffered(
        &mut self,
        out: &OwnedFd,
        inode: &Inode,
        ext: &Extent,
        pos: &mut u64,
    ) -> Result<()> {
        let end = ext.logical + ext.len;
        if let ExtentKind::Compressed(_) = ext.kind
            && *pos == ext.logical
            && let Ok(len) = usize::try_from(ext.len)
            && len > self.buf.len()
        {
            self.buf.resize(len, 0);
        }
        while *pos < end {
            let n = ((end - *pos) as usize).min(self.buf.len());
            let buf = &mut self.buf[..n];
            self.img.read_extent(inode, ext, *pos - ext.logical, buf)?;
            write_all_at(out, buf, *pos)?;
            *pos += n as u64;
        }
        Ok(())
    }

    fn apply_xattrs(
        &self,
        fd: BorrowedFd,
        name: Option<&[u8]>,
        inode: &Inode,
        path: &[u8],
    ) -> Result<()> {
        if !self.xattrs || inode.xattr_isize == 0 {
            return Ok(());
        }
        let list = self.img.xattrs(inode).map_err(|e| e.at_path(show(path)))?;
        for x in list.iter().filter(|x| x.is_visible()) {
            let res = match name {
                None => rfs::fsetxattr(fd, x.name.as_slice(), &x.value, XattrFlags::empty()),
                // No fd for symlinks and device nodes: go through this process's view
                // of the parent directory fd, which cannot be redirected.
                Some(n) => {
                    let mut p = format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&fd))
                        .into_bytes();
                    p.extend_from_slice(n);
                    rfs::lsetxattr(
                        p.as_slice(),
                        x.name.as_slice(),
                        &x.value,
                        XattrFlags::empty(),
                    )
                }
            };
            res.map_err(|e| ExtractError::SetXattr {
                name: String::from_utf8_lossy(&x.name).into_owned(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    fn apply_meta(&self, fd: BorrowedFd, name: Option<&[u8]>, inode: &Inode) -> Result<()> {
        let uid = rfs::Uid::from_raw(inode.uid);
        let gid = rfs::Gid::from_raw(inode.gid);
        let t = Timespec {
            tv_sec: inode.mtime,
            tv_nsec: inode.mtime_nsec.into(),
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        let mode = Mode::from_raw_mode(u32::from(inode.permissions()));
        match name {
            None => {
                if self.as_root {
                    rfs::fchown(fd, Some(uid), Some(gid))?;
                }
                rfs::fchmod(fd, mode)?;
                rfs::futimens(fd, &times)?;
            }
            Some(n) => {
                if self.as_root {
                    rfs::chownat(fd, n, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
                }
                if inode.file_type != FileType::Symlink {
                    rfs::chmodat(fd, n, mode, AtFlags::empty())?;
                }
                rfs::utimensat(fd, n, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            }
        }
        Ok(())
    }
}

fn write_all_at(fd: &OwnedFd, mut data: &[u8], mut pos: u64) -> Result<()> {
    while !data.is_empty() {
        let n = rustix::io::pwrite(fd, data, pos)?;
        data = &data[n..];
        pos += n as u64;
    }
    Ok(())
}

/// Removes the default ACL of a directory we are about to fill (an existing target
/// or a directory reused by `--overwrite`), so the children do not inherit it; the
/// image's own ACLs are applied when the directory is complete.
fn clear_default_acl(dir: &OwnedFd) -> Result<()> {
    match rfs::fremovexattr(dir, "system.posix_acl_default") {
        Ok(()) | Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(ExtractError::ClearAcl(e.into())),
    }
}

/// Opens directory `name` in `parent`, refusing a symlink (or anything else) there.
fn open_dir(parent: BorrowedFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes directory `name` in `parent` and everything under it, never following
/// symlinks.
fn remove_tree(parent: BorrowedFd, name: &[u8]) -> Result<()> {
    let fd = open_dir(parent, name)?;
    let mut names = Vec::new();
    for ent in rfs::Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), ent.file_type() == rfs::FileType::Directory));
        }
    }
    for (n, is_dir) in names {
        if is_dir {
            remove_tree(fd.as_fd(), &n)?;
        } else {
            rfs::unlinkat(&fd, n.as_slice(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}
