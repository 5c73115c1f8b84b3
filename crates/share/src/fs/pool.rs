//! The open pool: a few threads, shared by every mount of the process, that finish
//! the first open of a file (deciding whether it is shared, copying or hashing its
//! content, registering its backing file).
//!
//! Each mount is served by one FUSE thread (`threads=1` by default): a second thread
//! reading the same connection only adds wake-ups and lock traffic to every request
//! (a warm open measured ~25 µs with two, ~20 µs with one). What one thread cannot
//! afford is to wait for the first open of a large file, which may read all of it from
//! disk; those come here, and the mount's thread answers the next request meanwhile.
//! Smaller files are opened on the mount's thread: handing one over costs more
//! (measured: ~20 µs more per first open) than reading it.
//!
//! A channel and blocked threads, not rayon: rayon's idle workers spin before they
//! sleep, which on a small host takes the CPU from the very process waiting for the
//! open (measured: first opens 25 µs slower).

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use log::error;

/// Files from this size on are opened on the pool: reading 1 MiB takes ~1 ms here.
pub(super) const MIN_SIZE: u64 = 1 << 20;

/// Threads of the pool: first opens wait mostly on the disk, so more than the cores.
const THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

fn start() -> Option<Mutex<Sender<Job>>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..THREADS {
        let rx = rx.clone();
        let started = std::thread::Builder::new()
            .name(format!("open-{i}"))
            .spawn(move || {
                loop {
                    // The lock is held only to take one job.
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = started {
            if i == 0 {
                error!("cannot start the open pool ({e}); first opens run inline");
                return None;
            }
            break;
        }
    }
    Some(Mutex::new(tx))
}

/// Runs `job` on the open pool (on the caller's thread when the pool could not be
/// made: slower, never wrong).
pub(super) fn spawn(job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let rejected = match POOL.get_or_init(start) {
        Some(tx) => tx.lock().unwrap_or_else(|e| e.into_inner()).send(job).err(),
        None => Some(std::sync::mpsc::SendError(job)),
    };
    if let Some(std::sync::mpsc::SendError(job)) = rejected {
        job();
    }
}
