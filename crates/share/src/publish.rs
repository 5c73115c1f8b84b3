//! Checking and publishing prepared objects in the background, in batches.
//!
//! A prepared object is a copy of one file's content, served to that file at once
//! from its unpublished file. Checking it against its `sha256:` fingerprint, making it
//! durable and linking it under its name happen behind the readers: checker threads
//! (one per core) hash the copies, so that a mount preparing many objects (or many
//! mounts of one node daemon sharing one publisher) is not held to one core; one
//! publishing thread then syncs and links what passed. No other file gets the object
//! before its check passed ([`Verdict`]), so verification still comes before sharing.
//! Objects queued together are made durable with one `syncfs` instead of one
//! `fdatasync` each (opening thousands of small files would otherwise queue thousands
//! of journal commits). The queues are bounded by the open file limit: every queued
//! object holds descriptors until it is linked, and full queues make the next
//! preparation wait instead of running out of them.
//!
//! A checked copy also verifies the file it was copied from (recorded in the domain's
//! records, see [`crate::store::trust`]), and a published verified object is sealed as
//! it is once linked, so later mounts trust it without hashing it again.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{debug, warn};

use crate::content::hash_file;
use crate::stats::Stats;
use crate::store::trust::{ImageId, Trust};
use crate::store::{Object, ObjectLock, Published, Store, TmpObject};

/// Most objects queued at once.
const MAX_QUEUE: u64 = 256;

/// The outcome of checking a prepared object: not yet, it matched, it did not, or
/// never checked (dropped first: the daemon stopped, or the queue was closed).
#[derive(Debug, Default)]
pub struct Verdict {
    state: Mutex<u8>,
    decided: Condvar,
}

const PENDING: u8 = 0;
const MATCHED: u8 = 1;
const MISMATCHED: u8 = 2;
const ABANDONED: u8 = 3;

impl Verdict {
    fn state(&self) -> std::sync::MutexGuard<'_, u8> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` while the check runs (or when it was never made: the daemon stopped
    /// first), then whether the content matched its fingerprint.
    pub fn get(&self) -> Option<bool> {
        decided(*self.state())
    }

    /// Waits for the check, then says what [`Verdict::get`] says (`None`: it will never
    /// be made).
    pub fn wait(&self) -> Option<bool> {
        let mut st = self.state();
        while *st == PENDING {
            st = self.decided.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        decided(*st)
    }

    fn set(&self, to: u8) {
        let mut st = self.state();
        if *st == PENDING {
            *st = to;
            self.decided.notify_all();
        }
    }
}

fn decided(state: u8) -> Option<bool> {
    match state {
        MATCHED => Some(true),
        MISMATCHED => Some(false),
        _ => None,
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

impl Drop for Check {
    /// A check dropped unmade (the object was dropped unpublished) must not leave
    /// anyone waiting for it.
    fn drop(&mut self) {
        self.verdict.set(ABANDONED);
    }
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
    /// Prepared ahead of any open (see [`crate::fs::ahead`]): the object served from,
    /// held until published; its pages are dropped from the page cache then (written
    /// and synced, nobody asked for them yet), unless a reader opened it meanwhile.
    pub ahead: Option<Arc<Object>>,
    /// Image and path, for log lines.
    pub shown: String,
    /// When its first open asked for it.
    pub started: Instant,
}

/// The checker and publishing threads of one sharing state.
struct Pipeline {
    /// To the checkers.
    tx: SyncSender<Job>,
    checkers: Vec<JoinHandle<()>>,
    publisher: JoinHandle<()>,
}

/// The checker and publishing threads of one sharing state (one mount, or every mount
/// of one store, domain and verify= in the node daemon).
pub struct Publisher {
    queue: Mutex<Option<Pipeline>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// How many checker threads: one per core (hashing is CPU work), at most 8.
fn checker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

impl Publisher {
    /// A publisher into `store`.
    pub fn new(
        store: Arc<Store>,
        stats: Arc<Stats>,
        trust: Arc<Trust>,
    ) -> std::io::Result<Publisher> {
        // Each queued object holds three descriptors (file, directory, lock); keep the
        // queues and a batch to a small share of what the process may open (each
        // queue holds half a batch).
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let bound = (soft / 16).clamp(2, MAX_QUEUE) as usize;
        let (tx, rx) = sync_channel::<Job>(bound / 2);
        let (ptx, prx) = sync_channel::<Job>(bound / 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut checkers = Vec::new();
        for i in 0..checker_count() {
            let (rx, ptx, stats, trust) = (rx.clone(), ptx.clone(), stats.clone(), trust.clone());
            checkers.push(
                std::thread::Builder::new()
                    .name(format!("check-{i}"))
                    .spawn(move || run_checker(&rx, &ptx, &stats, &trust))?,
            );
        }
        // The publisher's queue closes once every checker has ended.
        drop(ptx);
        let publisher = std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || run(&store, &stats, &trust, &prx, bound))?;
        Ok(Publisher {
            queue: Mutex::new(Some(Pipeline {
                tx,
                checkers,
                publisher,
            })),
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
            .map(|p| p.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(job);
        }
    }

    /// Checks and publishes what is queued and stops.
    pub fn finish(&self) {
        let taken = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = taken {
            drop(p.tx);
            for c in p.checkers {
                let _ = c.join();
            }
            let _ = p.publisher.join();
        }
    }
}

/// One checker: checks queued objects and hands those that passed to the publisher.
fn run_checker(rx: &Mutex<Receiver<Job>>, to: &SyncSender<Job>, stats: &Stats, trust: &Trust) {
    loop {
        // (Held only while waiting: the other checkers hash meanwhile.)
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else {
            return;
        };
        if let Some(job) = check(job, stats, trust) {
            let _ = to.send(job);
        }
    }
}

fn run(store: &Store, stats: &Stats, trust: &Trust, rx: &Receiver<Job>, bound: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < bound {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
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
    c.verdict.set(if matched { MATCHED } else { MISMATCHED });
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
        ahead,
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
    if let Some(obj) = ahead
        && !obj.opened.load(Ordering::Relaxed)
    {
        // Clean once synced (`Store::publish` syncs when the batch was not): dropped,
        // unless mapped. (Kept when a reader opened it first: the other mounts of
        // its content read it next. A reader opening it right now reads it from disk.)
        let _ = rustix::fs::fadvise(&obj.file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::AtomicBool;

    /// Publishes an object made ahead, opened by a reader first or not; whether its
    /// pages are still cached afterwards.
    fn cached_after_publication(opened: bool) -> bool {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let store = Arc::new(Store::open(dir.path(), &crate::options::DomainId::new("p")).unwrap());
        let trust = Trust::new(store.clone());
        let fp = format!("sha256:{opened}").into_bytes();
        let mut tmp = store.create_tmp(&fp).unwrap();
        tmp.file.write_all(&vec![9u8; 1 << 20]).unwrap();
        let obj = Arc::new(Object {
            file: tmp.reopen_read_only().unwrap(),
            size: 1 << 20,
            verified: false,
            opened: AtomicBool::new(opened),
        });
        let job = Job {
            tmp,
            size: 1 << 20,
            check: None,
            replace: false,
            lock: None,
            ahead: Some(obj),
            shown: "test".into(),
            started: Instant::now(),
        };
        publish(&store, &Stats::default(), &trust, job, false);
        ishare_testkit::pagecache::resident_bytes(&store.object_path(&fp, false)) > 0
    }

    /// An object made ahead leaves the page cache when published, unless a reader
    /// opened it meanwhile (the other mounts of its content read it next).
    #[test]
    fn publication_drops_the_pages_of_objects_nobody_opened() {
        if cached_after_publication(false) {
            eprintln!("skipped: the page cache of a synced file cannot be dropped here");
            return;
        }
        assert!(
            cached_after_publication(true),
            "an opened object's pages were dropped"
        );
    }

    fn check(verdict: &Arc<Verdict>) -> Check {
        Check {
            want: [0; 32],
            verdict: verdict.clone(),
            fp: b"sha256:x".to_vec(),
            source: None,
        }
    }

    #[test]
    fn a_waiter_gets_the_verdict_set_later() {
        let v = Arc::new(Verdict::default());
        assert_eq!(v.get(), None);
        let waiter = {
            let v = v.clone();
            std::thread::spawn(move || v.wait())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        v.set(MISMATCHED);
        assert_eq!(waiter.join().unwrap(), Some(false));
        // Decided once: a later outcome changes nothing.
        v.set(MATCHED);
        assert_eq!(v.get(), Some(false));
    }

    #[test]
    fn a_check_dropped_unmade_releases_its_waiters() {
        let v = Arc::new(Verdict::default());
        let c = check(&v);
        let waiter = {
            let v = v.clone();
            std::thread::spawn(move || v.wait())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(c);
        assert_eq!(waiter.join().unwrap(), None);
        assert_eq!(v.get(), None);
    }

    #[test]
    fn a_made_check_keeps_its_verdict_when_dropped() {
        let v = Arc::new(Verdict::default());
        let c = check(&v);
        v.set(MATCHED);
        drop(c);
        assert_eq!(v.wait(), Some(true));
    }
}
