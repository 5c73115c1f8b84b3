//! Publishing prepared objects in the background, in batches.
//!
//! A prepared object is served at once from its unpublished file; making it durable
//! and linking it under its name waits for the disk, so one thread per mount does
//! that behind the readers. Objects queued together are made durable with one
//! `syncfs` instead of one `fdatasync` each (opening thousands of small files would
//! otherwise queue thousands of journal commits). The queue is bounded by the open
//! file limit: every queued object holds descriptors until it is linked, and a full
//! queue makes the next preparation wait instead of running out of them.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{debug, warn};

use crate::store::{ObjectLock, Published, Store, TmpObject};

/// Most objects queued at once.
const MAX_QUEUE: u64 = 256;

/// An object to publish.
#[derive(Debug)]
pub struct Job {
    /// The written, complete object.
    pub tmp: TmpObject,
    /// Checked against a `sha256:` fingerprint.
    pub verified: bool,
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
    pub fn new(store: Arc<Store>) -> std::io::Result<Publisher> {
        // Each queued object holds three descriptors (file, directory, lock); keep the
        // queue to a small share of what the process may open.
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let bound = (soft / 16).clamp(2, MAX_QUEUE) as usize;
        let (tx, rx) = sync_channel(bound);
        let handle = std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || run(&store, &rx, bound))?;
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

fn run(store: &Store, rx: &Receiver<Job>, bound: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < bound {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
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
            publish(store, job, synced);
        }
    }
}

fn publish(store: &Store, job: Job, synced: bool) {
    let Job {
        tmp,
        verified,
        replace,
        lock,
        shown,
        started,
    } = job;
    match store.publish(tmp, verified, replace, synced) {
        Ok(Published::Ours(o)) => debug!(
            "{shown}: published a shared object of {} bytes, {:.1?} after its first open",
            o.size,
            started.elapsed()
        ),
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
