//! Which files share a backing object, and preparing those objects: the kernel's
//! `inode_share` rules (regular files whose fingerprint value is 1 byte to one block
//! long; equal sizes) plus verification of `sha256:` fingerprints against content.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ishare_erofs::{ExtentKind, FileType, Image, Inode};
use log::{debug, warn};
use sha2::{Digest, Sha256};

use crate::store::{Object, ObjectLock, Published, Store};

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

type Slot = Arc<Mutex<Option<Arc<Object>>>>;

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
    /// Background publications still running (joined before the daemon exits).
    pending: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// One slot per fingerprint value: serializes preparing it in this process and
    /// remembers its object.
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
    pub fn new(store: Store, verify: bool) -> Self {
        Sharing {
            store: Arc::new(store),
            verify,
            pending: Mutex::new(Vec::new()),
            slots: Mutex::new(HashMap::new()),
            unverifiable_noted: AtomicBool::new(false),
            stats: Stats::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for objects still being synced and linked into the store.
    pub fn wait_published(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for h in pending {
            let _ = h.join();
        }
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

    /// Decides how `inode` is served, preparing its shared object if needed. `path`
    /// names the file in log lines.
    pub fn decide(&self, img: &Image, inode: &Inode, path: &dyn Fn() -> String) -> Decision {
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
        let mut existing = match &*guard {
            Some(o) => Some(o.clone()),
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
                if self.verify {
                    match check_content(img, inode, &sha.expect("checked above")) {
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
                self.materialize(img, inode, &fp, sha, Prepare::Replace, path)
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
                Some(l) => self.materialize(img, inode, &fp, sha, Prepare::New(l), path),
                None => unreachable!("locked when no object exists"),
            },
        };
        if let Decision::Shared(obj) = &decision {
            *guard = Some(obj.clone());
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    /// Copies `inode` from the image into a new object (hashing it when verifying)
    /// and publishes it.
    fn materialize(
        &self,
        img: &Image,
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
            let digest = transfer(img, inode, Some(&tmp.file), want.is_some())?;
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
            let store = self.store.clone();
            let (shown, size) = (format!("{image}: {}", path()), inode.size);
            let verified = want.is_some();
            let handle = std::thread::Builder::new()
                .name("publish".into())
                .spawn(move || {
                    match store.publish(tmp, verified, replace) {
                        Ok(Published::Ours(_)) => debug!(
                            "{shown}: published a shared object of {size} bytes, {:.1?} after its first open",
                            started.elapsed()
                        ),
                        Ok(Published::Theirs(_)) => debug!(
                            "{shown}: another mount published the object first; this mount keeps its copy"
                        ),
                        Err(e) => {
                            warn!(
                                "{shown}: cannot publish its shared object in {}: {e}",
                                store.root().display()
                            );
                            return;
                        }
                    }
                    if let Some(l) = lock {
                        l.release_published();
                    }
                })?;
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|h| !h.is_finished());
            pending.push(handle);
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
fn check_content(img: &Image, inode: &Inode, want: &[u8; 32]) -> io::Result<bool> {
    Ok(transfer(img, inode, None, true)?.is_some_and(|d| &d == want))
}

/// A piece of file content in order.
enum Piece {
    Data(u64, Vec<u8>),
    Hole(u64),
}

/// Streams the content of `inode` from the image into `out` (holes stay holes),
/// hashing it when `hash`; returns the SHA-256. Image pages read on the way are
/// dropped from the page cache (`POSIX_FADV_DONTNEED`), so preparing an object does
/// not leave a second cached copy of the file behind.
fn transfer(
    img: &Image,
    inode: &Inode,
    out: Option<&File>,
    hash: bool,
) -> io::Result<Option<[u8; 32]>> {
    if !hash && let Some(out) = out {
        copy_plain(img, inode, out)?;
        return Ok(None);
    }
    // Reading and hashing/writing overlap: a reader thread fills buffers.
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Piece>>(2);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut hasher = hash.then(Sha256::new);
    std::thread::scope(|s| -> io::Result<()> {
        s.spawn(move || {
            if let Err(e) = read_pieces(img, inode, &tx, &back_rx) {
                let _ = tx.send(Err(e));
            }
        });
        let zeros = vec![0u8; CHUNK];
        for piece in rx {
            match piece? {
                Piece::Data(pos, buf) => {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&buf);
                    }
                    if let Some(out) = out {
                        out.write_all_at(&buf, pos)?;
                    }
                    let _ = back_tx.send(buf);
                }
                Piece::Hole(mut len) => {
                    if let Some(h) = hasher.as_mut() {
                        while len > 0 {
                            let n = len.min(CHUNK as u64);
                            h.update(&zeros[..n as usize]);
                            len -= n;
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    if let Some(out) = out {
        out.set_len(inode.size)?;
    }
    Ok(hasher.map(|h| h.finalize().into()))
}

fn read_pieces(
    img: &Image,
    inode: &Inode,
    tx: &std::sync::mpsc::SyncSender<io::Result<Piece>>,
    recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut pos = 0u64;
    // Image ranges read, dropped from the cache once more at the end: pages still in
    // flight or in per-CPU LRU batches when their chunk was dropped stay otherwise.
    let mut read_ranges: Vec<(&File, u64, u64)> = Vec::new();
    let res = (|| -> io::Result<()> {
        while pos < inode.size {
            let ext = img.map(inode, pos).map_err(reader_err)?;
            let skip = pos - ext.logical;
            let len = ext.len - skip;
            if ext.kind == ExtentKind::Hole {
                if tx.send(Ok(Piece::Hole(len))).is_err() {
                    return Ok(());
                }
                pos += len;
                continue;
            }
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(CHUNK as u64) as usize;
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.resize(n, 0);
                let at = pos + done;
                match ext.kind {
                    ExtentKind::Mapped { device, offset } => {
                        let dev_off = offset + skip + done;
                        match img
                            .device_file(device, dev_off, n as u64)
                            .map_err(reader_err)?
                        {
                            Some((f, off)) => {
                                f.read_exact_at(&mut buf, off)?;
                                drop_cache(f, off, n as u64);
                                match read_ranges.last_mut() {
                                    Some((lf, lo, ll))
                                        if std::ptr::eq(*lf, f) && *lo + *ll == off =>
                                    {
                                        *ll += n as u64
                                    }
                                    _ => read_ranges.push((f, off, n as u64)),
                                }
                            }
                            None => {
                                img.read_at(inode, at, &mut buf).map_err(reader_err)?;
                            }
                        }
                    }
                    _ => {
                        img.read_at(inode, at, &mut buf).map_err(reader_err)?;
                    }
                }
                if tx.send(Ok(Piece::Data(at, buf))).is_err() {
                    return Ok(());
                }
                done += n as u64;
            }
            pos += len;
        }
        Ok(())
    })();
    for (f, off, len) in read_ranges {
        drop_cache(f, off, len);
    }
    res
}

/// Copies without looking at the bytes: `copy_file_range` from the image (a
/// reflink or an in-kernel copy), falling back to read and write.
fn copy_plain(img: &Image, inode: &Inode, out: &File) -> io::Result<()> {
    let mut pos = 0u64;
    let mut buf = Vec::new();
    while pos < inode.size {
        let ext = img.map(inode, pos).map_err(reader_err)?;
        let skip = pos - ext.logical;
        let len = ext.len - skip;
        match ext.kind {
            ExtentKind::Hole => {}
            ExtentKind::Mapped { device, offset } => {
                let src = img
                    .device_file(device, offset + skip, len)
                    .map_err(reader_err)?;
                let mut copied = 0u64;
                if let Some((f, off)) = src {
                    let (mut from, mut to) = (off, pos);
                    while copied < len {
                        let want = (len - copied).min(1 << 30) as usize;
                        match rustix::fs::copy_file_range(
                            f,
                            Some(&mut from),
                            out,
                            Some(&mut to),
                            want,
                        ) {
                            Ok(0) => break,
                            Ok(n) => copied += n as u64,
                            Err(_) => break,
                        }
                    }
                    drop_cache(f, off, copied);
                }
                // What copy_file_range did not do (no file, or refused): read and write.
                while copied < len {
                    let n = (len - copied).min(CHUNK as u64) as usize;
                    buf.resize(n, 0);
                    img.read_at(inode, pos + copied, &mut buf)
                        .map_err(reader_err)?;
                    out.write_all_at(&buf, pos + copied)?;
                    copied += n as u64;
                }
            }
            // Inline tails and (issue 4) compressed extents and fragments: read_at.
            _ => {
                buf.resize(len as usize, 0);
                img.read_at(inode, pos, &mut buf).map_err(reader_err)?;
                out.write_all_at(&buf, pos)?;
            }
        }
        pos += len;
    }
    out.set_len(inode.size)
}

/// Drops image pages we read only to copy or hash them.
fn drop_cache(f: &File, off: u64, len: u64) {
    if let Some(len) = NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(f, off, Some(len), rustix::fs::Advice::DontNeed);
    }
}
