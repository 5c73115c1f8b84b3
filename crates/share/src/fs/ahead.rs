//! Preparing a mount's shared files in the background from mount on (`prepare=mount`,
//! the default): every file with a fingerprint is verified against it, and copied into
//! a new object where the store has none, before anything opens it.
//!
//! Why: a first open that must hash or copy its file answers only once that is done,
//! on the mount's one FUSE thread, file after file: a cold read of the ten-image family
//! spent five times the kernel's time there (117,145 first opens, each a few hundred
//! microseconds of reads, hashing, a new store file and records). Done ahead, on every
//! core at a lower priority, in the order a reader walks the tree, a first open finds
//! its file verified and its object made: a store lookup and a registration, no reading
//! or hashing. The price is paid once per image file and domain (the records remember
//! it across mounts and reboots): one read of the image's shared files, and store space
//! for all of them rather than for those opened. Objects made ahead leave no pages
//! cached (see [`crate::publish::Job::ahead`]). `prepare=open` keeps the work at first
//! opens.
//!
//! One queue per process: mounts are prepared one after the other, in the order they
//! were made (the node daemon's mounts share it), each on a pool of one thread per
//! core. An unmounted image is dropped from the queue, mid-way if need be.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use ishare_erofs::{FileType, Reached, WalkOrder, WalkStep};
use log::{info, warn};
use rayon::prelude::*;

use super::ImageFs;
use crate::sharing::Ahead;

/// How much lower than the FUSE threads the preparing threads run (`nice`): opens,
/// which readers wait for, go first.
const NICE: i32 = 10;

/// [`super::Counters::prepare`] (0, its default: no preparation, as with
/// `prepare=open`, nothing shared, or a kernel mount): waiting for earlier mounts.
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;
/// Ended early: the mount ended, or the image could not be walked (logged).
const STOPPED: u8 = 4;

/// A [`super::Counters::prepare`] value as `ishare mounts` shows it ("" for none).
pub(crate) fn state_name(state: u8) -> &'static str {
    match state {
        QUEUED => "queued",
        RUNNING => "running",
        DONE => "done",
        STOPPED => "stopped",
        _ => "",
    }
}

/// Mounts waiting for their preparation, oldest first.
struct Queue {
    mounts: Mutex<VecDeque<Weak<ImageFs>>>,
    ready: Condvar,
}

/// The process's queue.
static QUEUE: Queue = Queue {
    mounts: Mutex::new(VecDeque::new()),
    ready: Condvar::new(),
};

/// A mount's preparation, armed at the session's INIT (the mount's state is complete
/// from then on) and started once the mount is served ([`crate::mount::Mounted::run`]):
/// its work and its log line come after the mount's own, and a detached daemon points
/// its log at the file only once the launcher has its answer (a preparation started at
/// INIT could finish, and log, before that).
#[derive(Debug, Clone, Default)]
pub struct Start(Arc<Mutex<Option<Weak<ImageFs>>>>);

impl Start {
    /// The session's state is `fs`.
    pub(crate) fn arm(&self, fs: &Arc<ImageFs>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(fs));
    }

    /// Queues the armed mount (once; nothing when never armed).
    pub(crate) fn start(&self) {
        let armed = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(fs) = armed.and_then(|w| w.upgrade()) {
            enqueue(&fs);
        }
    }
}

/// Queues `fs` for preparation (starting the process's preparing thread at the first).
fn enqueue(fs: &Arc<ImageFs>) {
    static STARTED: OnceLock<bool> = OnceLock::new();
    let started = *STARTED.get_or_init(|| {
        match std::thread::Builder::new()
            .name("ahead".into())
            .spawn(|| run(&QUEUE))
        {
            Ok(_) => true,
            Err(e) => {
                warn!("cannot start the thread that prepares shared files ahead: {e}; they are prepared at their first open");
                false
            }
        }
    });
    if started {
        fs.counters.prepare.store(QUEUED, Ordering::Relaxed);
        QUEUE
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Arc::downgrade(fs));
        QUEUE.ready.notify_one();
    }
}

fn run(q: &Queue) {
    loop {
        let mut next = Some(wait(q));
        // A pool while there is work: its threads (and what they hold) go when the
        // queue is empty.
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .thread_name(|i| format!("ahead-{i}"))
            // setpriority on a thread's own id sets that thread's nice value (Linux).
            .start_handler(|_| {
                let _ = rustix::process::setpriority_process(None, NICE);
            })
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    "cannot start the threads that prepare shared files ahead: {e}; they are prepared at their first open"
                );
                return;
            }
        };
        while let Some(w) = next {
            if let Some(fs) = w.upgrade() {
                pool.install(|| prepare_mount(&fs));
            }
            next = q
                .mounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
        }
        drop(pool);
        crate::malloc::trim();
    }
}

/// The next mount to prepare, waiting for one.
fn wait(q: &Queue) -> Weak<ImageFs> {
    let mut m = q.mounts.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match m.pop_front() {
            Some(w) => return w,
            None => m = q.ready.wait(m).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// What one mount's preparation did, for its log line.
#[derive(Debug, Default)]
struct Tally([AtomicU64; 4]);

impl Tally {
    fn count(&self, a: Ahead) -> &AtomicU64 {
        &self.0[match a {
            Ahead::Done => 0,
            Ahead::Verified => 1,
            Ahead::Copied => 2,
            Ahead::Unshared => 3,
        }]
    }

    fn add(&self, a: Ahead) {
        self.count(a).fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, a: Ahead) -> u64 {
        self.count(a).load(Ordering::Relaxed)
    }
}

/// True while the mount is served: its FUSE session holds the other reference.
fn mounted(fs: &Arc<ImageFs>) -> bool {
    Arc::strong_count(fs) > 1
}

/// Prepares every shared file of `fs`, depth first in name order (as `find | sort`
/// and most tree walks go), hard links once. The walk feeds the pool's threads one
/// file at a time as each becomes free (`par_bridge`): a large file holds up only its
/// own thread.
fn prepare_mount(fs: &Arc<ImageFs>) {
    let Some(sharing) = &fs.sharing else { return };
    let started = Instant::now();
    let state = &fs.counters.prepare;
    state.store(RUNNING, Ordering::Relaxed);
    let root = match fs.img.root() {
        Ok(r) => r,
        Err(e) => {
            warn!("{}: cannot prepare its files ahead: {e}", fs.image());
            state.store(STOPPED, Ordering::Relaxed);
            return;
        }
    };
    let tally = Tally::default();
    let stopped = AtomicBool::new(false);
    fs.img
        .walk(root, WalkOrder::DepthFirst)
        // Stops the walk (seen by the next file taken) at an unmount or an error.
        .take_while(|step| {
            if stopped.load(Ordering::Relaxed) || !mounted(fs) {
                return false;
            }
            if let Err(e) = step {
                // Its opens report it; the rest of the tree is left to them.
                warn!("{}: preparing its files ahead stopped: {e}", fs.image());
                stopped.store(true, Ordering::Relaxed);
                return false;
            }
            true
        })
        .filter_map(|step| match step {
            Ok(WalkStep::Entry(e))
                if e.reached == Reached::First
                    && e.inode.file_type == FileType::Regular
                    && e.inode.size > 0 =>
            {
                Some(e)
            }
            _ => None,
        })
        .par_bridge()
        .for_each(|e| {
            if !mounted(fs) {
                stopped.store(true, Ordering::Relaxed);
                return;
            }
            let done = sharing.prepare(&fs.img, &fs.direct, &e.inode, &|| e.path_str());
            if done != Ahead::Unshared {
                fs.counters.prepared_files.fetch_add(1, Ordering::Relaxed);
            }
            tally.add(done);
        });
    let ended = if stopped.load(Ordering::Relaxed) || !mounted(fs) {
        STOPPED
    } else {
        DONE
    };
    state.store(ended, Ordering::Relaxed);
    info!(
        "{}: shared files prepared ahead in {:.1?}: {} copied into new objects, {} verified, \
         {} ready already, {} not shared or left to their opens",
        fs.image(),
        started.elapsed(),
        tally.get(Ahead::Copied),
        tally.get(Ahead::Verified),
        tally.get(Ahead::Done),
        tally.get(Ahead::Unshared)
    );
}
