//! Reading ahead across files: at the first open of a shared file in this process, the
//! objects of the next few files in the image's inode order are read into the page
//! cache in the background.
//!
//! Why: a kernel mount reads an image as one file, so its readahead runs on into the
//! next files' data (inline tails sit right after their inodes), and a cold read of
//! many small files costs few, large disk reads. Through ishare each shared file is
//! its own object file, read only when opened: one small synchronous read per file,
//! one after the other (measured on the ten-image family, store prepared, caches
//! dropped: ~27,000 reads of 35 KiB against the kernel's 3,600 of 720 KiB, and a read
//! of every file of minbase twice the kernel's time with the same time spent in the
//! disk). Asking for the next files' objects while the reader works on this one keeps
//! several reads in flight.
//!
//! Mkfs tools write the inodes of a directory's entries one after another, so the
//! files after this one in inode order are mostly those a walk opens next (for the
//! family's images, 98% of the opens of a `find | sort` walk found their file among
//! the 8 read ahead before). What they bring in is the content of shared files, clean
//! and reclaimable, like the kernel's own readahead past a file. Warm opens (the file
//! registered) read nothing ahead.
//!
//! A small file read ahead is decided here as its open would decide it (the record
//! looked up, its object found and marked in use, see [`ImageFs::shared_object`]),
//! and the object is held until the file is opened, which then only registers it: the
//! decision is the larger part of a first open, and made here it runs beside the
//! reader instead of before it (measured: the read ahead opened every object a
//! second time, and the two together took a third of the machine's CPU during the
//! first opens after a restart). Large files are only asked for (their decision may
//! hash them: their open does that on the pool, see [`super::pool`]); nothing waits for
//! the reads (`POSIX_FADV_WILLNEED`), and an object that is not there is skipped.
//!
//! One thread for the process, fed through a short queue: requests that find it full
//! are dropped (the reader is then ahead of it anyway).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use log::warn;
use rustix::fs::{Advice, Mode, OFlags};

use super::{ImageFs, pool};
use crate::sharing::Sharing;
use crate::store::Object;

/// Files read ahead of the last one opened.
const FILES: usize = 8;

/// Inodes looked at per request at most (directories, symbolic links and files
/// without a fingerprint are passed over).
const SCAN: usize = 64;

/// Bytes of each object asked for: the start of large files (the kernel's readahead
/// goes on from there once the file is read).
const BYTES: u64 = 256 << 10;

/// Requests queued at most.
const QUEUE: usize = 32;

/// A mount's files read ahead and not opened yet, in inode order, with the objects of
/// those decided ahead.
#[derive(Debug, Default)]
pub(super) struct Window(Mutex<VecDeque<(u64, Option<Arc<Object>>)>>);

type Request = (Weak<ImageFs>, u64);

static QUEUE_TX: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();

fn start() -> Option<SyncSender<Request>> {
    let (tx, rx) = sync_channel(QUEUE);
    match std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || run(&rx))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            warn!("cannot start the thread that reads files ahead: {e}; files are read as opened");
            None
        }
    }
}

/// File `nid` of `fs` is opened for the first time: reads the next files ahead.
pub(super) fn first_open(fs: &Arc<ImageFs>, nid: u64) {
    if fs.sharing.is_none() {
        return;
    }
    if let Some(tx) = QUEUE_TX.get_or_init(start) {
        // Full: dropped (see the module documentation).
        let _ = tx.try_send((Arc::downgrade(fs), nid));
    }
}

fn run(rx: &Receiver<Request>) {
    while let Ok((fs, nid)) = rx.recv() {
        let Some(fs) = fs.upgrade() else { continue };
        // A hostile image's panic in the reader stays in this request.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_ahead(&fs, nid)));
        if done.is_err() {
            warn!(
                "{}: reading files ahead failed (a panic); going on",
                fs.image()
            );
        }
    }
}

/// Reads ahead the files after `nid` that are not read ahead already, up to [`FILES`]
/// past it.
fn read_ahead(fs: &ImageFs, nid: u64) {
    let Some(sharing) = &fs.sharing else { return };
    let mut window = fs.prefetch.0.lock().unwrap_or_else(|e| e.into_inner());
    // Opened in the order read ahead: go on past the last one. Else start again here.
    let from = match window.iter().position(|&(n, _)| n == nid) {
        Some(i) => {
            window.drain(..=i);
            match window.back() {
                Some(_) if window.len() >= FILES / 2 => return,
                Some(&(last, _)) => last,
                None => nid,
            }
        }
        None => {
            window.clear();
            nid
        }
    };
    let img = &fs.img;
    let mut at = match img.inode(from).ok().and_then(|i| img.nid_after(&i)) {
        Some(n) => n,
        None => return,
    };
    let mut misses = 0;
    for _ in 0..SCAN {
        if window.len() >= FILES {
            break;
        }
        let inode = match img.inode(at) {
            Ok(i) => {
                misses = 0;
                i
            }
            // Padding: the next inode starts at the next block (twice in a row: past
            // the inodes).
            Err(_) => {
                misses += 1;
                match img.nid_at_next_block(at) {
                    Some(n) if misses < 2 => {
                        at = n;
                        continue;
                    }
                    _ => break,
                }
            }
        };
        if let Some(fp) = Sharing::fingerprint(img, &inode) {
            let obj = if inode.size < pool::MIN_SIZE {
                let obj = fs
                    .file_state(at)
                    .ok()
                    .and_then(|st| fs.shared_object(at, &st));
                if let Some(o) = &obj {
                    will_need(&o.file, inode.size);
                }
                obj
            } else {
                fetch(sharing, &fp, inode.size);
                None
            };
            window.push_back((at, obj));
        }
        at = match img.nid_after(&inode) {
            Some(n) => n,
            None => break,
        };
    }
}

/// Asks the kernel to read the start of `fp`'s object, if the store has it.
fn fetch(sharing: &Sharing, fp: &[u8], size: u64) {
    let path = sharing.store().object_path(fp, true);
    // O_NOATIME: reading ahead is not a use. No in-use lock: nothing is served from
    // this descriptor, closed at once.
    if let Ok(fd) = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOATIME,
        Mode::empty(),
    ) {
        will_need(fd, size);
    }
}

/// Asks the kernel to read the start of an object of `size` bytes.
fn will_need(fd: impl AsFd, size: u64) {
    let len = std::num::NonZeroU64::new(size.min(BYTES));
    let _ = rustix::fs::fadvise(fd.as_fd(), 0, len, Advice::WillNeed);
}
