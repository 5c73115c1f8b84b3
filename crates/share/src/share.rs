//! Which files share a backing object, and preparing those objects: the kernel's
//! `inode_share` rules (regular files whose fingerprint value is 1 byte to one block
//! long; equal sizes) plus verification of `sha256:` fingerprints against content.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ishare_erofs::{ExtentKind, FileType, Image, Inode};
use log::{debug, warn};
use sha2::{Digest, Sha256};

use crate::direct::{AlignedBuf, DirectReader};
use crate::publish::{Job, Publisher};
use crate::store::{Object, ObjectLock, Store};

/// Bytes per read while copying or hashing a file.
const CHUNK: usize = 4 << 20;

/// How one regular file is served.
#[derive(Debug, Clone)]
pub enum Decision {
    /// From its own image.
    Unshared,
    /// From a store object shared by every file with its key.
    Shared(Arc<Object>),
}

/// Counters for the log and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Files served from a shared object.
    pub shared: AtomicU64,
    /// Objects this process published.
    pub published: AtomicU64,
    /// Bytes this process wrote into published objects.
    pub published_bytes: AtomicU64,
    /// Files refused because their content does not match their fingerprint.
    pub mismatches: AtomicU64,
}

/// Per fingerprint value: serializes preparing its object in this process, and finds
/// the object while the mount still holds it. (Held weakly: past the budget of
/// [`Kept`], a mount keeps an object open only while it serves from it, so the number
/// of descriptors stays bounded whatever the number of files in the image.)
type Slot = Arc<Mutex<Weak<Object>>>;

/// Objects kept open, by address, with their order of arrival.
#[derive(Debug, Default)]
struct Kept {
    objects: HashMap<usize, Arc<Object>>,
    order: std::collections::VecDeque<usize>,
    budget: usize,
}

impl Kept {
    /// Keeps `obj` open, closing the oldest kept object beyond the budget.
    fn keep(&mut self, obj: &Arc<Object>) {
        let key = Arc::as_ptr(obj) as usize;
        if self.budget == 0 || self.objects.contains_key(&key) {
            return;
        }
        if self.order.len() >= self.budget
            && let Some(old) = self.order.pop_front()
        {
            self.objects.remove(&old);
        }
        self.objects.insert(key, obj.clone());
        self.order.push_back(key);
    }
}

/// How many objects a mount keeps open once their files are closed: half of what it
/// may open, less a reserve for open files, FUSE and the store.
fn keep_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    (soft / 2).saturating_sub(64).min(1 << 20) as usize
}

/// How an object is prepared.
enum Prepare {
    /// A new one, under its preparation lock.
    New(ObjectLock),
    /// Replacing a damaged one.
    Replace,
}

/// Sharing state of one mount: the domain's store and the objects opened so far.
#[derive(Debug)]
pub struct Sharing {
    store: Arc<Store>,
    verify: bool,
    /// Publishes prepared objects in the background.
    publisher: Publisher,
    /// Objects kept open after their files are closed, oldest first: a mount marks
    /// the objects it has used as in use (see [`crate::store`]) as long as it may
    /// hold that many descriptors.
    kept: Mutex<Kept>,
    /// One slot per fingerprint value.
    slots: Mutex<HashMap<Vec<u8>, Slot>>,
    unverifiable_noted: AtomicBool,
    /// Counters.
    pub stats: Stats,
}

/// The digest of a `sha256:` fingerprint (the 7 ASCII bytes and 32 raw bytes that
/// mkfs.erofs and `ishare mkfs` write).
pub fn sha256_digest(fp: &[u8]) -> Option<[u8; 32]> {
    fp.strip_prefix(b"sha256:")
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
}

fn reader_err(e: ishare_erofs::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl Sharing {
    /// Sharing through `store`; `verify` checks `sha256:` fingerprints.
    pub fn new(store: Store, verify: bool) -> io::Result<Self> {
        let store = Arc::new(store);
        Ok(Sharing {
            publisher: Publisher::new(store.clone())?,
            store,
            verify,
            kept: Mutex::new(Kept {
                budget: keep_budget(),
                ..Kept::default()
            }),
            slots: Mutex::new(HashMap::new()),
            unverifiable_noted: AtomicBool::new(false),
            stats: Stats::default(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for objects still being synced and linked into the store.
    pub fn wait_published(&self) {
        self.publisher.finish();
    }

    /// The sharing key's fingerprint of `inode` if it takes part in sharing, as the
    /// kernel decides: a regular file whose fingerprint xattr value is 1 byte to one
    /// block long. (Empty files are left out: there is nothing to share.)
    pub fn fingerprint(img: &Image, inode: &Inode) -> Option<Vec<u8>> {
        if inode.file_type != FileType::Regular || inode.size == 0 {
            return None;
        }
        let bs = img.superblock().block_size() as usize;
        match img.fingerprint(inode) {
            Ok(Some(fp)) if (1..=bs).contains(&fp.len()) => Some(fp),
            _ => None,
        }
    }

    /// Decides how `inode` is served, preparing its shared object if needed. `checked`
    /// says this mount has already found the file's content to match its fingerprint
    /// (it is being shared again after its object was closed). `path` names the file
    /// in log lines.
    pub fn decide(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        checked: bool,
        path: &dyn Fn() -> String,
    ) -> Decision {
        let Some(fp) = Self::fingerprint(img, inode) else {
            debug!(
                "{}: {}: no usable fingerprint; unshared",
                img.name(),
                path()
            );
            return Decision::Unshared;
        };
        let image = img.name();
        let sha = sha256_digest(&fp);
        if self.verify && sha.is_none() {
            if !self.unverifiable_noted.swap(true, Ordering::Relaxed) {
                warn!(
                    "{image}: fingerprints that are not sha256: digests cannot be verified; \
                     such files are not shared (first: {}); verify=off trusts them as the kernel does",
                    path()
                );
            }
            return Decision::Unshared;
        }
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(fp.clone()).or_default().clone()
        };
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let cannot_open = |e: io::Error| {
            warn!(
                "{image}: {}: cannot open its shared object in {}: {e}; served unshared",
                path(),
                self.store.root().display()
            );
            Decision::Unshared
        };
        let mut existing = match guard.upgrade() {
            Some(o) => Some(o),
            None => match self.store.lookup(&fp, self.verify) {
                Ok(o) => o.map(Arc::new),
                Err(e) => return cannot_open(e),
            },
        };
        // Not in the store yet: wait for any other mount preparing it, then look again.
        let mut lock = None;
        if existing.is_none() {
            let l = match self.store.lock(&fp) {
                Ok(l) => l,
                Err(e) => return cannot_open(e),
            };
            existing = match self.store.lookup(&fp, self.verify) {
                Ok(o) => o.map(Arc::new),
                Err(e) => return cannot_open(e),
            };
            if existing.is_none() {
                lock = Some(l);
            } else {
                // Published while we waited: the lock file is of no use any more.
                l.release_published();
            }
        }
        let decision = match existing {
            Some(obj) if obj.size == inode.size => {
                if self.verify && !checked {
                    match check_content(img, direct, inode, &sha.expect("checked above")) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.stats.mismatches.fetch_add(1, Ordering::Relaxed);
                            warn!(
                                "{image}: {}: content does not match its sha256 fingerprint; \
                                 served from the image, unshared",
                                path()
                            );
                            return Decision::Unshared;
                        }
                        Err(e) => {
                            warn!("{image}: {}: cannot verify: {e}; served unshared", path());
                            return Decision::Unshared;
                        }
                    }
                }
                Decision::Shared(obj)
            }
            Some(obj) if self.verify && obj.verified => {
                // A verified object always has the size of the content its name was
                // derived from; if ours matches the fingerprint, the object is damaged.
                debug!(
                    "{image}: {}: shared object has {} bytes, the file {}; rebuilding it",
                    path(),
                    obj.size,
                    inode.size
                );
                self.materialize(img, direct, inode, &fp, sha, Prepare::Replace, path)
            }
            Some(obj) => {
                warn!(
                    "{image}: {}: same fingerprint as a shared file of another size \
                     ({} bytes here, {} there); not shared",
                    path(),
                    inode.size,
                    obj.size
                );
                return Decision::Unshared;
            }
            None => match lock {
                Some(l) => self.materialize(img, direct, inode, &fp, sha, Prepare::New(l), path),
                None => unreachable!("locked when no object exists"),
            },
        };
        if let Decision::Shared(obj) = &decision {
            *guard = Arc::downgrade(obj);
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep(obj);
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    /// Copies `inode` from the image into a new object (hashing it when verifying)
    /// and publishes it.
    #[allow(clippy::too_many_arguments)]
    fn materialize(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        fp: &[u8],
        sha: Option<[u8; 32]>,
        how: Prepare,
        path: &dyn Fn() -> String,
    ) -> Decision {
        let (replace, lock) = match how {
            Prepare::New(l) => (false, Some(l)),
            Prepare::Replace => (true, None),
        };
        let image = img.name();
        let started = std::time::Instant::now();
        let res = (|| -> io::Result<Option<Object>> {
            let tmp = self.store.create_tmp(fp)?;
            let want = if self.verify { sha } else { None };
            let digest = transfer(img, direct, inode, Some(&tmp.file), want.is_some())?;
            if let (Some(want), Some(got)) = (want, digest)
                && want != got
            {
                return Ok(None);
            }
            // Serve the complete, checked content right away from the unpublished file
            // (same inode, so same page cache, as the object it becomes); syncing it and
            // linking it under its name (which waits for the disk) goes on in the
            // background. A crash before the link leaves nothing behind.
            let obj = Object {
                file: tmp.reopen_read_only()?,
                size: inode.size,
                verified: want.is_some(),
            };
            self.publisher.submit(Job {
                tmp,
                verified: want.is_some(),
                replace,
                lock,
                shown: format!("{image}: {}", path()),
                started,
            });
            Ok(Some(obj))
        })();
        match res {
            Ok(Some(obj)) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .published_bytes
                    .fetch_add(obj.size, Ordering::Relaxed);
                debug!(
                    "{image}: {}: prepared a shared object of {} bytes in {:.1?}",
                    path(),
                    obj.size,
                    started.elapsed()
                );
                Decision::Shared(Arc::new(obj))
            }
            Ok(None) => {
                self.stats.mismatches.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "{image}: {}: content does not match its sha256 fingerprint; \
                     served from the image, unshared",
                    path()
                );
                Decision::Unshared
            }
            Err(e) => {
                warn!(
                    "{image}: {}: cannot prepare its shared object in {}: {e}; served unshared",
                    path(),
                    self.store.root().display()
                );
                Decision::Unshared
            }
        }
    }
}

/// True when the file's content hashes to `want`.
fn check_content(
    img: &Image,
    direct: &DirectReader,
    inode: &Inode,
    want: &[u8; 32],
) -> io::Result<bool> {
    Ok(transfer(img, direct, inode, None, true)?.is_some_and(|d| &d == want))
}

/// How a file's content is read: by whole extents, in chunks of at most [`CHUNK`].
struct Chunks<'a> {
    img: &'a Image,
    direct: &'a DirectReader,
    inode: &'a Inode,
    pos: u64,
}

/// One chunk of content: data at a position, or a run of zeros (a hole).
enum Chunk {
    Data(u64, AlignedBuf),
    Hole(u64),
}

impl Chunks<'_> {
    /// The next chunk, read into `buf` (a recycled buffer) if it is data.
    fn next(&mut self, mut buf: AlignedBuf) -> io::Result<Option<Chunk>> {
        let (img, inode) = (self.img, self.inode);
        if self.pos >= inode.size {
            return Ok(None);
        }
        let at = self.pos;
        let ext = img.map(inode, at).map_err(reader_err)?;
        let skip = at - ext.logical;
        let n = (ext.len - skip).min(CHUNK as u64);
        self.pos += n;
        let n_usize = n as usize;
        if let ExtentKind::Hole = ext.kind {
            return Ok(Some(Chunk::Hole(n)));
        }
        if let ExtentKind::Mapped { device, offset } = ext.kind
            && let Some((f, off)) = img
                .device_file(device, offset + skip, n)
                .map_err(reader_err)?
        {
            self.direct.read(f, off, n_usize, &mut buf)?;
        } else {
            // Inline tails and compressed extents, through the reader.
            img.read_at(inode, at, buf.unaligned(n_usize))
                .map_err(reader_err)?;
        }
        Ok(Some(Chunk::Data(at, buf)))
    }
}

fn hash_chunk(h: &mut Sha256, chunk: &Chunk) {
    match chunk {
        Chunk::Data(_, buf) => h.update(buf.as_slice()),
        Chunk::Hole(len) => {
            let mut left = *len;
            while left > 0 {
                let n = left.min(ZEROS.len() as u64) as usize;
                h.update(&ZEROS[..n]);
                left -= n as u64;
            }
        }
    }
}

/// Zeros hashed in place of holes.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Streams the content of `inode` into `out` (holes stay holes), hashing it when
/// `hash`; returns the SHA-256. Image data is read past the page cache (see
/// [`crate::direct`]), so preparing an object leaves no second copy behind. Large files
/// go through a pipeline (reading, hashing, writing on three threads), as the cold
/// first read of a shared file waits for all of it.
fn transfer(
    img: &Image,
    direct: &DirectReader,
    inode: &Inode,
    out: Option<&File>,
    hash: bool,
) -> io::Result<Option<[u8; 32]>> {
    let mut chunks = Chunks {
        img,
        direct,
        inode,
        pos: 0,
    };
    let mut hasher = hash.then(Sha256::new);
    let write = |chunk: &Chunk| -> io::Result<()> {
        if let (Some(out), Chunk::Data(pos, buf)) = (out, chunk) {
            out.write_all_at(buf.as_slice(), *pos)?;
        }
        Ok(())
    };
    if inode.size <= CHUNK as u64 {
        let mut buf = AlignedBuf::default();
        while let Some(chunk) = chunks.next(buf)? {
            if let Some(h) = hasher.as_mut() {
                hash_chunk(h, &chunk);
            }
            write(&chunk)?;
            buf = match chunk {
                Chunk::Data(_, b) => b,
                Chunk::Hole(_) => AlignedBuf::default(),
            };
        }
    } else {
        use std::sync::mpsc::{channel, sync_channel};
        let (read_tx, read_rx) = sync_channel::<io::Result<Chunk>>(2);
        let (write_tx, write_rx) = sync_channel::<Chunk>(2);
        let (back_tx, back_rx) = channel::<AlignedBuf>();
        std::thread::scope(|s| -> io::Result<()> {
            s.spawn(move || {
                let mut buf = AlignedBuf::default();
                loop {
                    match chunks.next(buf) {
                        Ok(None) => return,
                        Ok(Some(c)) => {
                            if read_tx.send(Ok(c)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = read_tx.send(Err(e));
                            return;
                        }
                    }
                    buf = back_rx.try_recv().unwrap_or_default();
                }
            });
            let writer = s.spawn(move || -> io::Result<()> {
                for chunk in write_rx {
                    write(&chunk)?;
                    if let Chunk::Data(_, b) = chunk {
                        let _ = back_tx.send(b);
                    }
                }
                Ok(())
            });
            let mut res = Ok(());
            for chunk in read_rx {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                };
                if let Some(h) = hasher.as_mut() {
                    hash_chunk(h, &chunk);
                }
                if write_tx.send(chunk).is_err() {
                    break;
                }
            }
            drop(write_tx);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
            res.and(written)
        })?;
    }
    if let Some(out) = out {
        out.set_len(inode.size)?;
    }
    Ok(hasher.map(|h| h.finalize().into()))
}
