//! Checking and publishing prepared objects in the background, in batches.
//!
//! A prepared object is a copy of one file's content, served to that file at once
//! from its unpublished file. Checking it against its `sha256:` fingerprint (SHA-256
//! runs at half the speed the disk reads here), making it durable and linking it
//! under its name happen on one thread per mount, behind the readers; no other file
//! gets the object before it is published, so verification still comes before
//! sharing. Objects queued together are made durable with one
//! `syncfs` instead of one `fdatasync` each (opening thousands of small files would
//! otherwise queue thousands of journal commits). The queue is bounded by the open
//! file limit: every queued object holds descriptors until it is linked, and a full
//! queue makes the next preparation wait instead of running out of them.
//!
//! A checked copy also verifies the file it was copied from (recorded in the domain's
//! records, see [`crate::store::trust`]), and a published verified object is sealed as
//! it is once linked, so later mounts trust it without hashing it again.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{debug, warn};

use crate::content::hash_file;
use crate::stats::Stats;
use crate::store::trust::{ImageId, Trust};
use crate::store::{ObjectLock, Published, Store, TmpObject};

/// Most objects queued at once.
const MAX_QUEUE: u64 = 256;

/// The outcome of checking a prepared object: not yet, it matched, it did not.
#[derive(Debug, Default)]
pub struct Verdict(AtomicU8);

const PENDING: u8 = 0;
const MATCHED: u8 = 1;
const MISMATCHED: u8 = 2;

impl Verdict {
    /// `None` while the check runs (or was never made: the daemon stopped first),
    /// then whether the content matched its fingerprint.
    pub fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            PENDING => None,
            v => Some(v == MATCHED),
        }
    }

    fn set(&self, matched: bool) {
        let v = if matched { MATCHED } else { MISMATCHED };
        self.0.store(v, Ordering::Release);
    }
}

/// What a prepared object is checked against.
#[derive(Debug)]
pub struct Check {
    /// The SHA-256 its content must have.
    pub want: [u8; 32],
    /// Where the outcome goes.
    pub verdict: Arc<Verdict>,
    /// The fingerprint value (the published object is sealed under it).
    pub fp: Vec<u8>,
    /// The image file and NID the copy was made from, unchanged while it was copied:
    /// recorded as verified when the copy matches.
    pub source: Option<(ImageId, u64)>,
}

/// An object to publish.
#[derive(Debug)]
pub struct Job {
    /// The written, complete object.
    pub tmp: TmpObject,
    /// Its size.
    pub size: u64,
    /// Check before publishing (published as verified), or publish unverified.
    pub check: Option<Check>,
    /// Replaces a damaged object of the same name.
    pub replace: bool,
    /// The preparation lock, released once published.
    pub lock: Option<ObjectLock>,
    /// Image and path, for log lines.
    pub shown: String,
    /// When its first open asked for it.
    pub started: Instant,
}

/// The publishing thread of one mount.
pub struct Publisher {
    queue: Mutex<Option<(SyncSender<Job>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher into `store`.
    pub fn new(
        store: Arc<Store>,
        stats: Arc<Stats>,
        trust: Arc<Trust>,
    ) -> std::io::Result<Publisher> {
        // Each queued object holds three descriptors (file, directory, lock); keep the
        // queue to a small share of what the process may open.
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let bound = (soft / 16).clamp(2, MAX_QUEUE) as usize;
        let (tx, rx) = sync_channel(bound);
        let handle = std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || run(&store, &stats, &trust, &rx, bound))?;
        Ok(Publisher {
            queue: Mutex::new(Some((tx, handle))),
        })
    }

    /// Queues `job`, waiting while the queue is full. After [`Publisher::finish`] the
    /// object is dropped unpublished (it was served; the next mount prepares it again).
    pub fn submit(&self, job: Job) {
        let tx = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(tx, _)| tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(job);
        }
    }

    /// Publishes what is queued and stops.
    pub fn finish(&self) {
        let taken = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, handle)) = taken {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn run(store: &Store, stats: &Stats, trust: &Trust, rx: &Receiver<Job>, bound: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            if let Some(job) = check(job, stats, trust) {
                batch.push(job);
            }
            next = if batch.len() < bound {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        let synced = if batch.len() > 1 {
            match rustix::fs::syncfs(&batch[0].tmp.file) {
                Ok(()) => true,
                Err(e) => {
                    debug!("syncfs failed ({e}); syncing objects one by one");
                    false
                }
            }
        } else {
            false
        };
        for job in batch {
            publish(store, stats, trust, job, synced);
        }
    }
}

/// Checks a prepared object against its fingerprint; `None` (dropping it, and with it
/// the preparation lock) when it does not match or cannot be read.
fn check(job: Job, stats: &Stats, trust: &Trust) -> Option<Job> {
    let Some(c) = &job.check else {
        return Some(job);
    };
    stats.hashed.fetch_add(1, Ordering::Relaxed);
    let matched = match hash_file(&job.tmp.file, job.size) {
        Ok(got) => got == c.want,
        Err(e) => {
            warn!("{}: cannot check its copy: {e}; not shared", job.shown);
            false
        }
    };
    c.verdict.set(matched);
    if matched {
        if let Some((id, nid)) = &c.source {
            trust.add_verified(id, *nid, &c.fp);
        }
        return Some(job);
    }
    stats.mismatches.fetch_add(1, Ordering::Relaxed);
    warn!(
        "{}: content does not match its sha256 fingerprint; served from its own copy, \
         not shared",
        job.shown
    );
    None
}

fn publish(store: &Store, stats: &Stats, trust: &Trust, job: Job, synced: bool) {
    let Job {
        tmp,
        size,
        check,
        replace,
        lock,
        shown,
        started,
    } = job;
    match store.publish(tmp, check.is_some(), replace, synced) {
        Ok(Published::Ours(obj)) => {
            // Sealed as linked (and after the temporary name, if any, went: that
            // moves the ctime too).
            if let Some(c) = &check
                && let Err(e) = trust.seal(&c.fp, &obj.file)
            {
                debug!("{shown}: cannot seal its object: {e}");
            }
            stats.published.fetch_add(1, Ordering::Relaxed);
            stats.published_bytes.fetch_add(size, Ordering::Relaxed);
            debug!(
                "{shown}: published a shared object of {size} bytes, {:.1?} after its first open",
                started.elapsed()
            )
        }
        Ok(Published::Theirs(_)) => {
            debug!("{shown}: another mount published the object first; this mount keeps its copy")
        }
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
}
