//! `ishare extract`: recreate an image's tree in a directory.
//!
//! Everything is created relative to directory file descriptors opened with
//! `O_NOFOLLOW`, so no name in the image (the reader already refuses `/`, NUL and
//! empty names; "." and ".." entries are skipped) and no symlink it creates can make
//! us write outside the target directory.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use anyhow::{Context, Result, bail};
use ishare_erofs::{Extent, ExtentKind, FileType, Image, Inode};
use rustix::fs::{
    self as rfs, AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;

use crate::DeviceArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    devices: DeviceArgs,
    /// Extract into a directory that is not empty, replacing what is in the way.
    #[arg(long)]
    overwrite: bool,
    /// Threads writing file contents and metadata (default: one per core; 1 does
    /// everything in the walking thread).
    #[arg(long)]
    workers: Option<usize>,
    /// Do not restore extended attributes.
    #[arg(long)]
    no_xattrs: bool,
    /// The EROFS image.
    image: PathBuf,
    /// Target directory (created if missing).
    dir: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let img = a.devices.open(&a.image)?;
    prepare_target(&a.dir, a.overwrite)?;
    let root_fd = rfs::open(
        &a.dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", a.dir.display()))?;
    let zero_copy = AtomicBool::new(true);
    let failed = Mutex::new(None);
    let xattrs = !a.no_xattrs;
    // The walker creates entries in order; file contents and metadata, most of the
    // work, are spread over the other cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = a.workers.unwrap_or(cores).clamp(1, 64);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        let jobs = if workers > 1 {
            for _ in 0..workers {
                s.spawn(|| {
                    let mut w = Writer::new(&img, xattrs, &zero_copy);
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
                            first.get_or_insert(
                                e.context(format!("cannot extract {}", show(&job.path))),
                            );
                        }
                    }
                });
            }
            Some(tx)
        } else {
            None
        };
        let mut x = Extractor {
            img: &img,
            root_fd: &root_fd,
            overwrite: a.overwrite,
            w: Writer::new(&img, xattrs, &zero_copy),
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

fn prepare_target(dir: &Path, overwrite: bool) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if !overwrite && it.next().is_some() {
                bail!(
                    "{} is not empty (use --overwrite to extract into it anyway)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
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
    failed: &'a Mutex<Option<anyhow::Error>>,
    /// First path (relative to the target) extracted for each non-directory NID, to
    /// recreate hard links.
    links: HashMap<u64, Vec<u8>>,
}

/// Smaller files are finished by the walker itself: handing them to a worker costs
/// more than writing them.
const WORKER_MIN_SIZE: u64 = 64 << 10;

/// A regular file created by the walker, for a worker to fill.
struct Job {
    fd: OwnedFd,
    inode: Inode,
    path: Vec<u8>,
}

/// A directory still being filled: its fd, inode and path; metadata is applied
/// when it is left, so its mtime survives the creation of its children.
struct Pending {
    fd: OwnedFd,
    inode: Inode,
    path: Vec<u8>,
    entries: std::vec::IntoIter<ishare_erofs::DirEntry>,
}

fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        format!("/{}", String::from_utf8_lossy(path))
    }
}

impl Extractor<'_> {
    fn extract_tree(&mut self) -> Result<()> {
        let img = self.img;
        let root = img.root()?;
        if !root.is_dir() {
            bail!("{}: root inode {} is not a directory", img.name(), root.nid);
        }
        let root_fd = rustix::io::dup(self.root_fd)?;
        // A default ACL on the target would be inherited by everything we create;
        // the image root's own ACLs are applied when the walk leaves it.
        clear_default_acl(&root_fd)?;
        let entries = img.read_dir(&root).map_err(|e| e.at_path("/"))?;
        let mut seen_dirs = std::collections::HashSet::from([root.nid]);
        let mut stack = vec![Pending {
            fd: root_fd,
            inode: root,
            path: Vec::new(),
            entries: entries.into_iter(),
        }];
        while let Some(top) = stack.last_mut() {
            if self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                return Ok(()); // reported by the caller
            }
            let Some(ent) = top.entries.next() else {
                let done = stack.pop().expect("non-empty");
                // Directory xattrs last: a default ACL set earlier would be inherited
                // by the children created since.
                self.w
                    .apply_xattrs(done.fd.as_fd(), None, &done.inode, &done.path)
                    .with_context(|| show(&done.path))?;
                self.w
                    .apply_meta(done.fd.as_fd(), None, &done.inode)
                    .with_context(|| show(&done.path))?;
                continue;
            };
            if ent.is_dot_or_dotdot() {
                continue;
            }
            let mut path = top.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&ent.name);
            let shown = show(&path);
            let inode = img.inode(ent.nid).map_err(|e| e.at_path(shown.clone()))?;
            let parent = top.fd.as_fd();
            if inode.is_dir() {
                if !seen_dirs.insert(inode.nid) {
                    bail!(
                        "{}: {shown} (nid {}): corrupt image: directory reached twice (cycle or directory hard link)",
                        img.name(),
                        inode.nid
                    );
                }
                let fd = self
                    .make_dir(parent, &ent.name)
                    .with_context(|| format!("cannot create directory {shown}"))?;
                let entries = img.read_dir(&inode).map_err(|e| e.at_path(shown.clone()))?;
                stack.push(Pending {
                    fd,
                    inode,
                    path,
                    entries: entries.into_iter(),
                });
            } else {
                self.extract_leaf(parent, &ent.name, &inode, &path)
                    .with_context(|| format!("cannot extract {shown}"))?;
            }
        }
        Ok(())
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
        let fd = rfs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
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
                    Some(tx) if inode.size >= WORKER_MIN_SIZE => tx
                        .send(job)
                        .map_err(|_| anyhow::anyhow!("extraction workers stopped"))?,
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
        self.links.insert(inode.nid, path.to_vec());
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
    pub fn copy_data(&mut self, out: &OwnedFd, inode: &Inode) -> Result<()> {
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
                                    Ok(0) => bail!(
                                        "{}: unexpected end of device at offset {off_in}",
                                        img.name()
                                    ),
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
            res.with_context(|| format!("cannot set xattr {}", String::from_utf8_lossy(&x.name)))?;
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
        Err(e) => Err(e).context("cannot clear a default ACL"),
    }
}

/// Removes directory `name` in `parent` and everything under it, never following
/// symlinks.
fn remove_tree(parent: BorrowedFd, name: &[u8]) -> Result<()> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
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
