//! The FUSE requests: lookups, attributes, opening and reading files, directories,
//! xattrs, statfs. Read-only: every write is refused with EROFS, every ioctl with
//! ENOTTY.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};
use ishare_erofs::FileType;

use super::attr::{dirent_kind, negative_attr};
use super::{ImageFs, MountFs, pool, prefetch};

/// Entry and attribute timeout: the image never changes.
const TTL: Duration = Duration::from_secs(24 * 3600);

impl Filesystem for MountFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // The session calls init before any request: nothing else holds the state yet.
        let Some(this) = Arc::get_mut(&mut self.0) else {
            return Err(io::Error::other("FUSE init after the first request"));
        };
        this.negotiate(config)?;
        // Only now: the preparation holds the state now and then.
        if let Some(start) = &self.prepare_ahead {
            start.arm(&self.0);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.contained("lookup", || {
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
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.contained("getattr", || {
            let nid = self.nid(ino);
            match self.inode(nid) {
                Ok(inode) => reply.attr(&TTL, &self.attr(&inode, self.st_ino(nid))),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.contained("readlink", || {
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
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.contained("open", || {
            let nid = self.nid(ino);
            if flags.0 & O_ACCMODE_WRITE != 0 {
                return reply.error(Errno::EROFS);
            }
            if self.no_open {
                return reply.error(Errno::ENOSYS);
            }
            let passthrough =
                self.sharing.is_some() && self.passthrough.active.load(Ordering::Relaxed);
            // A file opened before is answered from its registration alone.
            let reply = if passthrough {
                match self.open_registered(nid, reply) {
                    None => return,
                    Some(r) => r,
                }
            } else {
                reply
            };
            let state = match self.file_state(nid) {
                Ok(s) => s,
                Err(e) => return reply.error(e),
            };
            // Not opened before in this process: the next files likely are not either.
            // (Asked once this file has its object: the files read ahead are held
            // only until the first of them is opened.)
            let read_ahead = || {
                if passthrough {
                    prefetch::first_open(&self.0, nid);
                }
            };
            if self.sharing.is_none() || state.inode.size < pool::MIN_SIZE {
                self.open_first(nid, &state, passthrough, reply);
                return read_ahead();
            }
            read_ahead();
            // The first open of a large file may read all of it (to copy or hash it):
            // the pool finishes it, this mount's thread goes on serving.
            let fs = Arc::clone(&self.0);
            pool::spawn(move || {
                fs.contained("open", || fs.open_first(nid, &state, passthrough, reply))
            });
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.contained("read", || {
            let nid = self.nid(ino);
            let state = match self.file_state(nid) {
                Ok(s) => s,
                Err(e) => return reply.error(e),
            };
            let n = (u64::from(size)).min(state.inode.size.saturating_sub(offset)) as usize;
            let obj = self
                .handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&fh.0)
                .cloned();
            let res = match obj {
                Some(obj) => {
                    let mut buf = vec![0u8; n];
                    obj.file
                        .read_exact_at(&mut buf, offset)
                        .map(|()| buf)
                        .map_err(|e| self.eio(nid, "cannot read the shared object", e))
                }
                None => self
                    .read_unshared(&state.inode, offset, n)
                    .map_err(|e| self.eio(nid, "cannot read", e)),
            };
            match res {
                Ok(buf) => reply.data(&buf),
                Err(e) => reply.error(e),
            }
        });
    }

    /// Nothing to flush on a read-only filesystem: ENOSYS makes the kernel send no
    /// FLUSH again (one request less at every close).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
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
        self.contained("release", || {
            if fh.0 != self.fh_passthrough() {
                // Closes the object unless another open file uses it.
                self.handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&fh.0);
            } else {
                self.release_backing(self.nid(ino));
            }
            reply.ok();
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.contained("opendir", || {
            if self.no_opendir {
                return reply.error(Errno::ENOSYS);
            }
            let nid = self.nid(ino);
            match self.inode(nid) {
                Ok(dir) if dir.is_dir() => reply.opened(
                    FileHandle(0),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                ),
                Ok(_) => reply.error(Errno::ENOTDIR),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.contained("readdir", || {
            let entries = match self.dir_listing(self.nid(ino)) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
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
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.contained("readdirplus", || {
            let dnid = self.nid(ino);
            let entries = match self.dir_listing(dnid) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
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
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.contained("statfs", || {
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
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.contained("getxattr", || {
            let nid = self.nid(ino);
            match self.visible_xattrs(req, nid) {
                Ok(xattrs) => match xattrs.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
                    Some((_, v)) => xattr_reply(reply, size, v),
                    None => reply.error(Errno::NO_XATTR),
                },
                Err(e) => reply.error(e),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.contained("listxattr", || {
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
        });
    }

    /// No ioctl is supported: ENOTTY, as the kernel's EROFS answers TCGETS (which every
    /// `open()` of Python and of a C stdio stream asks), and quietly (fuser's default
    /// logs a warning per call and answers ENOSYS).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
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

/// `O_WRONLY | O_RDWR`.
const O_ACCMODE_WRITE: i32 = 0o3;

fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl ImageFs {
    /// What the mount asks of the kernel at FUSE_INIT, and what it learns from it.
    fn negotiate(&mut self, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        let optional = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        let _ = config.add_capabilities(caps & optional);
        // Refusing the first OPENDIR (OPEN) with ENOSYS tells the kernel to send none
        // again; it then caches listings (and pages) as `cache_dir` (`keep_cache`).
        self.no_opendir = caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        // Passthrough and daemon reads from objects need the open: only a mount that
        // shares nothing can do without.
        self.no_open = self.sharing.is_none() && caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
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
}
