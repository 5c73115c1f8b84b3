//! The FUSE filesystem: one EROFS image served read-only, as a kernel mount of it
//! would show it, with shared files' data coming from store objects.
//!
//! * Node ids are NIDs (plus 2 when the image could hold inodes at NID 0 or 1, which
//!   FUSE reserves), so `st_ino` equals the kernel's inode number for ordinary images;
//!   the root is node 1 but reports its NID.
//! * Attributes: mode, owner, nlink, size, rdev as stored; atime = ctime = mtime as
//!   the kernel does; `st_blocks` as the kernel computes it; entries and
//!   attributes are cached for a day (the image is immutable); negative lookups too.
//! * Xattrs: what Linux shows (user., trusted., security., POSIX ACLs); hidden ones
//!   (such as the fingerprint) are neither listed nor readable; `trusted.` names are
//!   listed for root only, as the kernel lists them only to CAP_SYS_ADMIN.
//! * Regular files: unshared ones are read from the image through the reader and
//!   cached by FUSE (`keep_cache`); shared ones pass through to their store object
//!   (kernel FUSE passthrough: read, mmap, splice all act on the object's page cache)
//!   or, without passthrough, are opened `direct_io` and read by the daemon from the
//!   object, so the object's page cache is the only copy for reads (mmap of such a
//!   file fills the mount's own cache).
//! * Errors from the reader are EIO with a log line naming the image and the path.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::num::NonZeroU64;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use ishare_erofs::{DirEntry, ExtentKind, FileType, Image, Inode};
use log::{error, warn};
use rustix::fs::Advice;

use crate::share::{Decision, Sharing};
use crate::store::Object;

/// An xattr name and value.
type NameValue = (Vec<u8>, Vec<u8>);

/// Entry and attribute timeout: the image never changes.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// File handle of opens that pass through to a backing file.
const FH_PASSTHROUGH: u64 = 1;

/// The passthrough state of a mount, shared with the daemon.
#[derive(Debug, Default)]
pub struct PassthroughState {
    /// Shared files are opened with passthrough.
    pub active: AtomicBool,
    /// The kernel offered FUSE_PASSTHROUGH at init.
    pub kernel_offers: AtomicBool,
    /// `max_stack_depth` requested at init.
    pub stack_depth: AtomicU64,
}

/// How one regular file is served, decided at its first open.
#[derive(Debug)]
struct FileState {
    inode: Inode,
    decision: Decision,
}

/// One image served over FUSE.
pub struct ImageFs {
    img: Image,
    root_nid: u64,
    ino_offset: u64,
    block_size: u32,
    total_blocks: u64,
    sharing: Option<Arc<Sharing>>,
    passthrough: Arc<PassthroughState>,
    /// Passthrough wanted at all (sharing on and `passthrough` not `off`).
    want_passthrough: bool,
    stack_depth: u32,
    files: Mutex<HashMap<u64, Arc<OnceLock<FileState>>>>,
    backing: Mutex<HashMap<u64, (BackingId, u64)>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    /// Parent and name of every inode looked up, for paths in log lines.
    names: Mutex<HashMap<u64, (u64, Vec<u8>)>>,
}

impl std::fmt::Debug for ImageFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFs").field("img", &self.img).finish()
    }
}

impl ImageFs {
    /// Serves `img`; `sharing` when `inode_share` applies; `want_passthrough` unless
    /// `passthrough=off`; `stack_depth` is the FUSE `max_stack_depth` to request.
    pub fn new(
        img: Image,
        sharing: Option<Arc<Sharing>>,
        want_passthrough: bool,
        stack_depth: u32,
        passthrough: Arc<PassthroughState>,
    ) -> ImageFs {
        let sb = img.superblock();
        let root_nid = sb.root_nid;
        // NIDs 0 and 1 cannot hold inodes when the metadata area starts at byte 0 (the
        // superblock is there); otherwise shift node ids past FUSE's reserved 0 and 1.
        let ino_offset = if sb.meta_blkaddr == 0 { 0 } else { 2 };
        let block_size = sb.block_size();
        let total_blocks = sb.blocks + img.devices().iter().map(|d| d.blocks).sum::<u64>();
        ImageFs {
            img,
            root_nid,
            ino_offset,
            block_size,
            total_blocks,
            want_passthrough: want_passthrough && sharing.is_some(),
            sharing,
            passthrough,
            stack_depth,
            files: Mutex::new(HashMap::new()),
            backing: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(2),
            names: Mutex::new(HashMap::new()),
        }
    }

    fn nid(&self, ino: INodeNo) -> u64 {
        if ino == INodeNo::ROOT {
            self.root_nid
        } else {
            ino.0 - self.ino_offset
        }
    }

    /// `st_ino` of an inode.
    fn st_ino(&self, nid: u64) -> u64 {
        nid + self.ino_offset
    }

    /// FUSE node id of an inode.
    fn node(&self, nid: u64) -> u64 {
        if nid == self.root_nid {
            INodeNo::ROOT.0
        } else {
            self.st_ino(nid)
        }
    }

    fn image(&self) -> &str {
        self.img.name()
    }

    /// The path of `nid` inside the image, as far as lookups told us.
    fn path(&self, nid: u64) -> String {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts = Vec::new();
        let mut cur = nid;
        while cur != self.root_nid && parts.len() < 4096 {
            match names.get(&cur) {
                Some((parent, name)) => {
                    parts.push(String::from_utf8_lossy(name).into_owned());
                    cur = *parent;
                }
                None => return format!("(nid {nid})"),
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn remember(&self, parent: u64, name: &[u8], nid: u64) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.entry(nid).or_insert_with(|| (parent, name.to_vec()));
    }

    /// Logs a reader error and returns EIO.
    fn eio(&self, nid: u64, what: &str, e: impl std::fmt::Display) -> Errno {
        error!("{}: {}: {what}: {e}", self.image(), self.path(nid));
        Errno::EIO
    }

    fn inode(&self, nid: u64) -> Result<Inode, Errno> {
        self.img
            .inode(nid)
            .map_err(|e| self.eio(nid, "cannot read inode", e))
    }

    fn attr(&self, inode: &Inode, ino: u64) -> FileAttr {
        let kind = match inode.file_type {
            FileType::Regular => fuser::FileType::RegularFile,
            FileType::Directory => fuser::FileType::Directory,
            FileType::Symlink => fuser::FileType::Symlink,
            FileType::CharDevice => fuser::FileType::CharDevice,
            FileType::BlockDevice => fuser::FileType::BlockDevice,
            FileType::Fifo => fuser::FileType::NamedPipe,
            FileType::Socket => fuser::FileType::Socket,
        };
        let t = if inode.mtime >= 0 {
            UNIX_EPOCH + Duration::new(inode.mtime as u64, inode.mtime_nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(inode.mtime.unsigned_abs())
                + Duration::from_nanos(u64::from(inode.mtime_nsec))
        };
        let bs = u64::from(self.block_size);
        FileAttr {
            ino: INodeNo(ino),
            size: inode.size,
            // As the kernel: the stored block count for compressed files, else the
            // size rounded up to blocks.
            blocks: inode
                .compressed_blocks()
                .unwrap_or_else(|| inode.size.div_ceil(bs))
                * (bs / 512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm: inode.permissions(),
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: inode.rdev,
            blksize: self.block_size,
            flags: 0,
        }
    }

    /// The attributes of a child entry (ino = node id, as FUSE requires).
    fn entry_attr(&self, inode: &Inode) -> FileAttr {
        self.attr(inode, self.node(inode.nid))
    }

    fn file_state(&self, nid: u64) -> Result<Arc<OnceLock<FileState>>, Errno> {
        let cell = {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            files.entry(nid).or_default().clone()
        };
        if cell.get().is_none() {
            let inode = self.inode(nid)?;
            cell.get_or_init(|| {
                let decision = match &self.sharing {
                    Some(s) => s.decide(&self.img, &inode, &|| self.path(nid)),
                    None => Decision::Unshared,
                };
                FileState { inode, decision }
            });
        }
        Ok(cell)
    }

    fn visible_xattrs(&self, req: &Request, nid: u64) -> Result<Vec<NameValue>, Errno> {
        let inode = self.inode(nid)?;
        let xattrs = self
            .img
            .xattrs(&inode)
            .map_err(|e| self.eio(nid, "cannot read xattrs", e))?;
        let root = req.uid() == 0;
        Ok(xattrs
            .into_iter()
            .filter(|x| x.is_visible() && (root || !x.name.starts_with(b"trusted.")))
            .map(|x| (x.name, x.value))
            .collect())
    }

    fn open_passthrough(&self, nid: u64, obj: &Object, reply: ReplyOpen) -> Option<ReplyOpen> {
        let mut backing = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, count)) = backing.get_mut(&nid) {
            *count += 1;
            reply.opened_passthrough(FileHandle(FH_PASSTHROUGH), FopenFlags::empty(), id);
            return None;
        }
        match reply.open_backing(&obj.file) {
            Ok(id) => {
                reply.opened_passthrough(FileHandle(FH_PASSTHROUGH), FopenFlags::empty(), &id);
                backing.insert(nid, (id, 1));
                None
            }
            Err(e) => {
                if self.passthrough.active.swap(false, Ordering::Relaxed) {
                    warn!(
                        "{}: kernel FUSE passthrough failed ({e}); shared files are now read \
                         by the daemon from their objects",
                        self.image()
                    );
                }
                Some(reply)
            }
        }
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        let optional = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        let _ = config.add_capabilities(caps & optional);
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        let offers = caps.contains(InitFlags::FUSE_PASSTHROUGH);
        self.passthrough
            .kernel_offers
            .store(offers, Ordering::Relaxed);
        if self.want_passthrough && offers {
            let depth = match config.set_max_stack_depth(self.stack_depth) {
                Ok(_) => self.stack_depth,
                Err(max) => {
                    let _ = config.set_max_stack_depth(max);
                    max
                }
            };
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
                self.passthrough
                    .stack_depth
                    .store(u64::from(depth), Ordering::Relaxed);
                self.passthrough.active.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let pnid = self.nid(parent);
        let res = (|| {
            let dir = self.inode(pnid)?;
            if !dir.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            let found = self
                .img
                .lookup(&dir, name.as_bytes())
                .map_err(|e| self.eio(pnid, "cannot look up a name", e))?;
            match found {
                Some(e) => {
                    self.remember(pnid, name.as_bytes(), e.nid);
                    let inode = self.inode(e.nid)?;
                    Ok(Some(self.entry_attr(&inode)))
                }
                None => Ok(None),
            }
        })();
        match res {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => {
                // A negative entry (node id 0) cached as long as positive ones.
                reply.entry(&TTL, &negative_attr(), Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let nid = self.nid(ino);
        match self.inode(nid) {
            Ok(inode) => reply.attr(&TTL, &self.attr(&inode, self.st_ino(nid))),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let nid = self.nid(ino);
        let res = self.inode(nid).and_then(|inode| {
            if inode.file_type != FileType::Symlink {
                return Err(Errno::EINVAL);
            }
            self.img
                .read_link(&inode)
                .map_err(|e| self.eio(nid, "cannot read the symlink", e))
        });
        match res {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let nid = self.nid(ino);
        if flags.0 & O_ACCMODE_WRITE != 0 {
            return reply.error(Errno::EROFS);
        }
        let cell = match self.file_state(nid) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let state = cell.get().expect("initialized by file_state");
        match &state.decision {
            Decision::Shared(obj) => {
                let reply = if self.passthrough.active.load(Ordering::Relaxed) {
                    match self.open_passthrough(nid, obj, reply) {
                        None => return,
                        Some(r) => r,
                    }
                } else {
                    reply
                };
                // Daemon reads from the object; no FUSE page cache, so the object's
                // cache is the only copy.
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
            }
            Decision::Unshared => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let nid = self.nid(ino);
        let cell = match self.file_state(nid) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let state = cell.get().expect("initialized by file_state");
        let n = (u64::from(size)).min(state.inode.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; n];
        let res = match &state.decision {
            Decision::Shared(obj) => obj
                .file
                .read_exact_at(&mut buf, offset)
                .map(|()| n)
                .map_err(|e| self.eio(nid, "cannot read the shared object", e)),
            Decision::Unshared => self
                .read_unshared(&state.inode, offset, &mut buf)
                .map_err(|e| self.eio(nid, "cannot read", e)),
        };
        match res {
            Ok(got) => reply.data(&buf[..got]),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if fh.0 == FH_PASSTHROUGH {
            let nid = self.nid(ino);
            let mut backing = self.backing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, count)) = backing.get_mut(&nid) {
                *count -= 1;
                if *count == 0 {
                    // Dropping the BackingId closes it in the kernel.
                    backing.remove(&nid);
                }
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let nid = self.nid(ino);
        let res = self.inode(nid).and_then(|dir| {
            if !dir.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            let mut entries = Vec::new();
            if dir.dot_omitted {
                entries.push(DirEntry {
                    name: b".".to_vec(),
                    nid,
                    file_type: dir.file_type.dirent_type(),
                });
            }
            self.img
                .for_each_entry(&dir, |e| {
                    entries.push(e);
                    Ok(())
                })
                .map_err(|e| self.eio(nid, "cannot read the directory", e))?;
            Ok(entries)
        });
        match res {
            Ok(entries) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh, Arc::new(entries));
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.dir_entries(fh) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let ino = self.st_ino(e.nid);
            if reply.add(
                INodeNo(ino),
                i as u64 + 1,
                dirent_kind(e.file_type),
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dnid = self.nid(ino);
        let Some(entries) = self.dir_entries(fh) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let inode = match self.inode(e.nid) {
                Ok(i) => i,
                Err(err) => return reply.error(err),
            };
            let dots = e.is_dot_or_dotdot();
            if !dots {
                self.remember(dnid, &e.name, e.nid);
            }
            // "." and ".." are not linked by the kernel; give them their st_ino.
            let attr = if dots {
                self.attr(&inode, self.st_ino(e.nid))
            } else {
                self.entry_attr(&inode)
            };
            if reply.add(
                attr.ino,
                i as u64 + 1,
                OsStr::from_bytes(&e.name),
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let inos = self.img.superblock().inos;
        reply.statfs(
            self.total_blocks,
            0,
            0,
            u64::MAX,
            u64::MAX - inos,
            self.block_size,
            255,
            self.block_size,
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let nid = self.nid(ino);
        match self.visible_xattrs(req, nid) {
            Ok(xattrs) => match xattrs.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
                Some((_, v)) => xattr_reply(reply, size, v),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let nid = self.nid(ino);
        match self.visible_xattrs(req, nid) {
            Ok(xattrs) => {
                let mut list = Vec::new();
                for (n, _) in &xattrs {
                    list.extend_from_slice(n);
                    list.push(0);
                }
                xattr_reply(reply, size, &list);
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel (default_permissions).
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else {
            reply.ok()
        }
    }
}

impl ImageFs {
    /// Reads file data from the image. Data blocks read from image files are dropped
    /// from the image file's page cache again: FUSE caches the file's pages, a second
    /// copy under the image file would only double the memory.
    fn read_unshared(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<usize, String> {
        let err = |e: ishare_erofs::Error| e.to_string();
        let want = (buf.len() as u64).min(inode.size.saturating_sub(pos)) as usize;
        let mut done = 0;
        while done < want {
            let at = pos + done as u64;
            let ext = self.img.map(inode, at).map_err(err)?;
            let skip = at - ext.logical;
            let n = ((ext.len - skip) as usize).min(want - done);
            let out = &mut buf[done..done + n];
            let mut handled = false;
            if let ExtentKind::Mapped { device, offset } = ext.kind {
                let src = self
                    .img
                    .device_file(device, offset + skip, n as u64)
                    .map_err(err)?;
                if let Some((f, off)) = src {
                    f.read_exact_at(out, off).map_err(|e| {
                        format!(
                            "{}: read of {n} bytes at offset {off} failed: {e}",
                            self.img.name()
                        )
                    })?;
                    // The extent on the device: [off - skip, off - skip + ext.len).
                    drop_behind(f, off - skip, off - skip + ext.len, off + n as u64);
                    handled = true;
                }
            }
            if !handled {
                self.img.read_at(inode, at, out).map_err(err)?;
            }
            done += n;
        }
        Ok(done)
    }

    fn dir_entries(&self, fh: FileHandle) -> Option<Arc<Vec<DirEntry>>> {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned()
    }
}

/// `O_WRONLY | O_RDWR`.
const O_ACCMODE_WRITE: i32 = 0o3;

/// Drops the image file's cached pages of one file extent `[start, end)` behind
/// position `upto`: whole 2 MiB windows only (the page cache holds large folios, which
/// DONTNEED drops only when the range covers them), going back 8 MiB, never outside the
/// extent (other files' pages stay).
fn drop_behind(f: &std::fs::File, start: u64, end: u64, upto: u64) {
    const WINDOW: u64 = 2 << 20;
    let hi = if upto >= end {
        end
    } else {
        upto / WINDOW * WINDOW
    };
    let lo = hi.saturating_sub(4 * WINDOW).max(start);
    if let Some(len) = NonZeroU64::new(hi.saturating_sub(lo)) {
        let _ = rustix::fs::fadvise(f, lo, Some(len), Advice::DontNeed);
    }
}

fn dirent_kind(t: u8) -> fuser::FileType {
    use ishare_erofs::format::*;
    match t {
        FT_DIR => fuser::FileType::Directory,
        FT_SYMLINK => fuser::FileType::Symlink,
        FT_CHRDEV => fuser::FileType::CharDevice,
        FT_BLKDEV => fuser::FileType::BlockDevice,
        FT_FIFO => fuser::FileType::NamedPipe,
        FT_SOCK => fuser::FileType::Socket,
        _ => fuser::FileType::RegularFile,
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// The attributes of a negative entry (node id 0: "no such name", cached).
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 512,
        flags: 0,
    }
}
