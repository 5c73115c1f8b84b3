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
//! * Regular files: unshared ones are read from the image through the reader (data
//!   blocks with `O_DIRECT`) and cached by FUSE (`keep_cache`); shared ones pass
//!   through to their store object (kernel FUSE passthrough: read, mmap, splice all
//!   act on the object's page cache) or, without passthrough, are opened `direct_io`
//!   and read by the daemon from the object, so the object's page cache is the only
//!   copy for reads (mmap of such a file fills the mount's own cache).
//! * A mount keeps the objects it has used open (marking them in use for `ishare store
//!   gc`) up to half its open file limit; past that, an object stays open only while
//!   a file is open from it (with passthrough, the kernel holds it), so a mount never
//!   runs out of descriptors, whatever the number of files in the image. A backing
//!   file registered for passthrough stays registered after its last close (see
//!   [`backing`]), so opening the file again is answered from a table.
//! * The image never changes, so what the kernel may cache, it caches for good:
//!   entries, attributes and negative lookups for a day, file pages (`keep_cache`)
//!   and directory listings (`cache_dir`); directories are not opened (the kernel's
//!   `no_opendir`: no OPENDIR and RELEASEDIR requests, listings are stateless) and
//!   FLUSH is refused once (`no_flush`), so a warm stat walk sends no request at all
//!   and an open sends OPEN and RELEASE only. A mount sharing nothing does not open
//!   files either (`no_open`).
//! * What the mount remembers of files and names is in the process's one metadata
//!   budget ([`meta`]); evicted entries are found again in the image.
//! * Errors from the reader are EIO with a log line naming the image and the path.
//! * With `prepare=mount` (the default) the shared files are verified and their
//!   objects made in the background from the session's start ([`ahead`]), so that a
//!   first open finds them ready instead of hashing or copying on the mount's thread.
//!
//! This module holds the mount's state and how a file is opened and read; [`attr`]
//! maps inodes to what `stat` shows, [`ops`] answers the FUSE requests.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::{BackingId, Errno, FileHandle, FopenFlags, INodeNo, ReplyOpen, Request};
use ishare_erofs::{DirEntry, ExtentKind, Image, Inode};
use log::{error, warn};

use crate::direct::{AlignedBuf, DirectReader};
use crate::error::Error;
use crate::publish::Verdict;
use crate::sharing::{Decision, Sharing};
use crate::store::Object;

pub(crate) mod ahead;
mod attr;
mod backing;
mod meta;
mod ops;
mod pool;
mod prefetch;

/// An xattr name and value.
type NameValue = (Vec<u8>, Vec<u8>);

/// File handle of opens that pass through to a backing file.
const FH_PASSTHROUGH: u64 = 1;

/// Told of every backing file registration of a mount (the node id and the kernel's
/// id) and of its end (`None`): the fd holder keeps them for the next daemon, which must
/// answer opens of a file still open with the same id.
pub type BackingLog = Arc<dyn Fn(u64, Option<u32>) + Send + Sync>;

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

/// What one mount has served shared, for `ishare mounts`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Regular files served from a shared object (counted at their first open).
    pub shared_files: AtomicU64,
    /// Their bytes.
    pub shared_bytes: AtomicU64,
    /// Where the preparation ahead stands (see [`ahead::state_name`]).
    pub prepare: std::sync::atomic::AtomicU8,
    /// Files the preparation ahead found ready, verified or copied.
    pub prepared_files: AtomicU64,
}

/// How one regular file is served.
#[derive(Debug)]
enum Served {
    /// Not decided yet (never opened).
    Undecided,
    /// From the image.
    Unshared,
    /// From a store object: the object while this mount holds it.
    Shared(Weak<Object>),
    /// From a copy of its own content, shared once the check passes.
    Own(Weak<Object>, Arc<Verdict>),
}

/// A regular file opened at least once.
#[derive(Debug)]
struct FileState {
    inode: Inode,
    served: Mutex<Served>,
    /// Counted in the mount's shared files (at its first open served shared).
    counted: AtomicBool,
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
    backing: Mutex<backing::Backing>,
    /// Told of registrations (see [`BackingLog`]).
    backing_log: Option<BackingLog>,
    /// Objects of open files the daemon reads from (no passthrough), by file handle.
    handles: Mutex<HashMap<u64, Arc<Object>>>,
    direct: DirectReader,
    next_fh: AtomicU64,
    /// What this process's file handles start at: a connection served again by a new
    /// daemon (see `crate::holder`) still has files opened by the earlier one, whose
    /// handles must never be taken for ours (see [`ImageFs::set_generation`]).
    fh_base: u64,
    /// File states and names (for paths in log lines), within the process's budget.
    meta: meta::MountMeta,
    /// The kernel sends no OPENDIR (we refuse the first one: `no_opendir`).
    no_opendir: bool,
    /// The kernel sends no OPEN (refused: `no_open`; only when nothing is shared).
    no_open: bool,
    counters: Arc<Counters>,
    /// `prepare=mount`: armed at INIT, started when the mount is served.
    prepare_ahead: Option<ahead::Start>,
    /// The files read ahead of the last first open (see [`prefetch`]).
    prefetch: prefetch::Window,
}

impl std::fmt::Debug for ImageFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFs").field("img", &self.img).finish()
    }
}

/// What a FUSE session runs: the mount's state behind an `Arc`, so that a first open
/// can finish on the open pool ([`pool`]) while the session's thread serves on.
pub struct MountFs(Arc<ImageFs>);

impl MountFs {
    pub fn new(fs: ImageFs) -> MountFs {
        MountFs(Arc::new(fs))
    }
}

impl Deref for MountFs {
    type Target = ImageFs;
    fn deref(&self) -> &ImageFs {
        &self.0
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
        counters: Arc<Counters>,
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
            backing: Mutex::new(backing::Backing::default()),
            backing_log: None,
            handles: Mutex::new(HashMap::new()),
            direct: DirectReader::default(),
            next_fh: AtomicU64::new(2),
            fh_base: 0,
            meta: meta::MountMeta::new(),
            no_opendir: false,
            no_open: false,
            counters,
            prepare_ahead: None,
            prefetch: prefetch::Window::default(),
        }
    }

    /// The connection was served by `generation` daemons before this one: this one's
    /// file handles are `generation << 40 | n`. A READ on a handle of an earlier daemon
    /// (a file opened before the restart, without passthrough) finds no object and is
    /// read from the image (the same bytes); its RELEASE releases nothing of ours.
    pub fn set_generation(&mut self, generation: u64) {
        self.fh_base = generation << 40;
        self.next_fh = AtomicU64::new(self.fh_base + 2);
    }

    /// Prepares the shared files in the background (see [`ahead`]) once `start` is
    /// started, until they are all prepared or the mount ends (nothing when no file is
    /// shared).
    pub(crate) fn set_prepare_ahead(&mut self, start: ahead::Start) {
        self.prepare_ahead = self.sharing.is_some().then_some(start);
    }

    /// Tells `log` of every backing file registration from now on.
    pub fn set_backing_log(&mut self, log: BackingLog) {
        self.backing_log = Some(log);
    }

    /// Takes over the backing file registrations of an earlier daemon on this
    /// connection (node id, kernel id): opens of those files answer with them (the
    /// kernel refuses another backing file for a file still open). They count as idle.
    pub fn inherit_backing(&mut self, ids: &[(u64, u32)]) {
        let b = self.backing.get_mut().unwrap_or_else(|e| e.into_inner());
        for &(nid, id) in ids {
            b.inherit(nid, BackingId::inherited(id));
        }
    }

    /// The file handle of opens that pass through to a backing file.
    fn fh_passthrough(&self) -> u64 {
        self.fh_base + FH_PASSTHROUGH
    }

    fn nid(&self, ino: INodeNo) -> u64 {
        if ino == INodeNo::ROOT {
            self.root_nid
        } else {
            self.img.nid_of(ino.0 - self.ino_offset)
        }
    }

    /// `st_ino` of an inode: the kernel's inode number (see `Image::ino_of`).
    fn st_ino(&self, nid: u64) -> u64 {
        self.img.ino_of(nid) + self.ino_offset
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

    /// The path of `nid` inside the image, as far as lookups told us (and the names
    /// are still cached).
    fn path(&self, nid: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = nid;
        while cur != self.root_nid && parts.len() < 4096 {
            match self.meta.name(cur) {
                Some(n) => {
                    parts.push(String::from_utf8_lossy(&n.1).into_owned());
                    cur = n.0;
                }
                None => return format!("(nid {nid})"),
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn remember(&self, parent: u64, name: &[u8], nid: u64) {
        self.meta.remember(parent, name, nid);
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

    fn file_state(&self, nid: u64) -> Result<Arc<FileState>, Errno> {
        if let Some(st) = self.meta.file(nid) {
            return Ok(st);
        }
        let inode = self.inode(nid)?;
        Ok(self.meta.insert_file(
            nid,
            Arc::new(FileState {
                inode,
                served: Mutex::new(Served::Undecided),
                counted: AtomicBool::new(false),
            }),
        ))
    }

    /// The object a file is served from, or `None` when it is served from the image;
    /// decides at the first open (or when read ahead, see [`prefetch`]), and opens the
    /// object again when nothing of this mount holds it any more.
    fn shared_object(&self, nid: u64, state: &FileState) -> Option<Arc<Object>> {
        let sharing = self.sharing.as_ref()?;
        let mut served = state.served.lock().unwrap_or_else(|e| e.into_inner());
        let checked = match &*served {
            Served::Unshared => return None,
            Served::Shared(obj) => match obj.upgrade() {
                Some(o) => return Some(o),
                None => true,
            },
            // Its own copy is right for it whatever the check says.
            Served::Own(obj, verdict) => match (obj.upgrade(), verdict.get()) {
                (Some(o), _) => return Some(o),
                (None, Some(true)) => true,
                (None, Some(false)) => {
                    *served = Served::Unshared;
                    return None;
                }
                (None, None) => false,
            },
            Served::Undecided => false,
        };
        match sharing.decide(&self.img, &self.direct, &state.inode, checked, &|| {
            self.path(nid)
        }) {
            Decision::Shared(o) => {
                *served = Served::Shared(Arc::downgrade(&o));
                Some(o)
            }
            Decision::Own(o, verdict) => {
                *served = Served::Own(Arc::downgrade(&o), verdict);
                Some(o)
            }
            Decision::Unshared => {
                *served = Served::Unshared;
                None
            }
        }
    }

    /// Handles one request. A panic in it (a bug that a hostile image found) stays in
    /// the request: it is logged, the reply dropped unsent answers EIO (fuser does
    /// that), and the worker thread goes on serving this mount and the others.
    fn contained(&self, op: &str, f: impl FnOnce()) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            error!("{}: a {op} request panicked; answered EIO", self.image());
        }
    }

    /// An open of a file served shared from `obj`: the file is counted once, the
    /// object marked as read.
    fn serving(&self, state: &FileState, obj: &Object) {
        obj.opened.store(true, Ordering::Relaxed);
        if !state.counted.swap(true, Ordering::Relaxed) {
            self.counters.shared_files.fetch_add(1, Ordering::Relaxed);
            self.counters
                .shared_bytes
                .fetch_add(state.inode.size, Ordering::Relaxed);
        }
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

    /// The open of a file that has no backing file registration (the first open, or
    /// any open without passthrough): decides how it is served.
    fn open_first(&self, nid: u64, state: &FileState, passthrough: bool, reply: ReplyOpen) {
        let reply = if passthrough {
            match self.open_passthrough(nid, state, reply) {
                None => return,
                Some(r) => r,
            }
        } else {
            reply
        };
        self.open_daemon(nid, state, reply);
    }

    fn reply_passthrough(&self, reply: ReplyOpen, id: &BackingId) {
        reply.opened_passthrough(FileHandle(self.fh_passthrough()), FopenFlags::empty(), id);
    }

    /// Answers an open of `nid` from its backing file registration, if it has one:
    /// the warm path, which needs nothing else of the file.
    fn open_registered(&self, nid: u64, reply: ReplyOpen) -> Option<ReplyOpen> {
        let mut backing = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        match backing.acquire(nid) {
            Some(id) => {
                self.reply_passthrough(reply, id);
                None
            }
            None => Some(reply),
        }
    }

    /// Opens a shared file with passthrough to its object; gives the reply back when
    /// passthrough fails (the mount then reads objects in the daemon).
    /// (The caller found no registration; one made meanwhile is found under the lock.)
    fn open_passthrough(&self, nid: u64, state: &FileState, reply: ReplyOpen) -> Option<ReplyOpen> {
        let Some(obj) = self.shared_object(nid, state) else {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
            return None;
        };
        self.serving(state, &obj);
        let mut backing = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = backing.acquire(nid) {
            // Another open registered it meanwhile.
            self.reply_passthrough(reply, id);
            return None;
        }
        // The kernel holds the object file (and with it the flock marking it in use)
        // from here until the id is dropped; `obj` closes when dropped.
        match reply.open_backing(&obj.file) {
            Ok(id) => {
                // The holder knows the id before the kernel has the reply.
                if let Some(log) = &self.backing_log {
                    log(nid, Some(id.id()));
                }
                let id = backing.insert(nid, id);
                self.reply_passthrough(reply, id);
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

    /// The last open file of `nid` passing through was closed: its backing file stays
    /// registered for the next open (within [`backing::IDLE_LIMIT`]).
    fn release_backing(&self, nid: u64) {
        // Logged under the lock, so the holder hears of a close before a new
        // registration of the same file.
        let mut backing = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        let closed = backing.release(nid);
        if let Some(log) = &self.backing_log {
            for old in closed {
                log(old, None);
            }
        }
    }

    /// Opens a file read by the daemon: from its object when shared (no FUSE cache,
    /// so the object's page cache is the only copy), else from the image.
    fn open_daemon(&self, nid: u64, state: &FileState, reply: ReplyOpen) {
        match self.shared_object(nid, state) {
            Some(obj) => {
                self.serving(state, &obj);
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh, obj);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            None => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }
}

impl ImageFs {
    /// Reads `n` bytes of file data from the image at `pos`. Data blocks come past the
    /// image file's page cache (see [`crate::direct`]): FUSE caches the file's pages, a
    /// second copy under the image file would only double the memory.
    fn read_unshared(&self, inode: &Inode, pos: u64, n: usize) -> Result<Vec<u8>, Error> {
        let err = Error::Image;
        let mut out = vec![0u8; n];
        let mut done = 0;
        let mut direct = AlignedBuf::default();
        while done < n {
            let at = pos + done as u64;
            let ext = self.img.map(inode, at).map_err(err)?;
            let skip = at - ext.logical;
            let len = ((ext.len - skip) as usize).min(n - done);
            let dst = &mut out[done..done + len];
            let mut handled = false;
            if let ExtentKind::Mapped { device, offset } = ext.kind
                && let Some((f, off)) = self
                    .img
                    .device_file(device, offset + skip, len as u64)
                    .map_err(err)?
            {
                let extent_end = off + (ext.len - skip);
                self.direct
                    .read(f, off, len, extent_end, &mut direct)
                    .map_err(|error| Error::ImageRead {
                        image: self.img.name().to_string(),
                        len,
                        offset: off,
                        error,
                    })?;
                dst.copy_from_slice(direct.as_slice());
                handled = true;
            }
            if !handled {
                self.img.read_at(inode, at, dst).map_err(err)?;
            }
            done += len;
        }
        Ok(out)
    }

    /// The entries of directory `nid` in on-disk order, "." first when the image omits
    /// it (readdir is stateless: the kernel caches listings, and sends no OPENDIR).
    fn dir_listing(&self, nid: u64) -> Result<Vec<DirEntry>, Errno> {
        let dir = self.inode(nid)?;
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
    }
}
