//! An image's metadata read through the page cache while reads of it keep coming, and
//! dropped from it once they stop.
//!
//! The daemon keeps a few metadata windows of its own (see [`crate::direct`]), a
//! budget sized for steady service. A cold walk, or the first opens after a reboot,
//! go over a whole metadata area (42 MiB for the family's largest image) in the
//! order of the tree, not of the disk, and several at once (the FUSE thread, the
//! preparation ahead, the files read ahead): with windows read by `O_DIRECT` they
//! were read from the disk again and again (measured, ten images, caches dropped: the
//! walk read 271–414 MiB against the kernel's 136 MiB, and the opens of minbase after
//! it another 450 MiB). Read buffered instead, a window pushed out of the budget is
//! found again in the page cache, as a kernel mount finds its metadata.
//!
//! Pages come in by [`UNIT`] (one disk read for a cluster of metadata), while the
//! windows copied out of them are small (see [`crate::direct`]). A kernel mount keeps
//! those pages for good; the daemon only while they are in use: the units read are
//! recorded, and [`IDLE`] after the image's last read they are dropped
//! (`POSIX_FADV_DONTNEED` on exactly those ranges; readahead is off on this
//! descriptor, so nothing else came in with them).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use log::warn;
use rustix::fs::Advice;

/// Quiet time after which an image's windows leave the page cache.
const IDLE: Duration = Duration::from_secs(2);

/// How often the dropping thread looks.
const TICK: Duration = Duration::from_millis(500);

/// Bytes of windows one image keeps cached at most: a whole metadata area (42 MiB for
/// the family's largest image) and then some. Compressed data is read through the
/// windows too: a long run of it (the preparation of a compressed image) would
/// otherwise keep up to the whole image cached until it ends. Past this, what the
/// image holds is dropped and held anew.
#[cfg(not(test))]
const HELD_MAX: u64 = 64 << 20;
#[cfg(test)]
const HELD_MAX: u64 = 1 << 20;

/// Bytes brought into the page cache at once: metadata clusters (a directory's
/// inodes and blocks lie together), so one disk read serves many lookups.
pub const UNIT: u64 = 256 << 10;

/// The units one image holds (by start) and their bytes.
#[derive(Debug, Default)]
struct Held {
    units: BTreeSet<u64>,
    bytes: u64,
}

/// One image file's metadata windows held in the page cache.
#[derive(Debug)]
pub struct Burst {
    /// A descriptor of its own: readahead off without changing the others'.
    file: File,
    /// The units read since the last drop.
    held: Mutex<Held>,
    /// When a window was last read, in milliseconds since [`epoch`].
    last: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Every live [`Burst`] of the process, for the dropping thread.
static LIVE: Mutex<Vec<Weak<Burst>>> = Mutex::new(Vec::new());

/// How many [`Burst`]s hold units: the dropping thread sleeps while none does (a
/// daemon with nothing held is not woken every [`TICK`]).
static HOLDING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Counts one more (`true`) or one less [`Burst`] holding units.
fn holding(more: bool) {
    let mut n = HOLDING.0.lock().unwrap_or_else(|e| e.into_inner());
    if more {
        *n += 1;
        HOLDING.1.notify_one();
    } else {
        *n = n.saturating_sub(1);
    }
}

impl Burst {
    /// Reads through `file`, a descriptor of its own (its readahead is turned off).
    pub fn new(file: File) -> io::Result<Arc<Burst>> {
        rustix::fs::fadvise(&file, 0, None, Advice::Random)?;
        let b = Arc::new(Burst {
            file,
            held: Mutex::new(Held::default()),
            last: AtomicU64::new(now_ms()),
        });
        static STARTED: OnceLock<bool> = OnceLock::new();
        let started = *STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("drop-meta".into())
                .spawn(run)
                .map_err(|e| warn!("cannot start the thread that drops idle metadata: {e}"))
                .is_ok()
        });
        if !started {
            return Err(io::Error::other("no thread to drop idle metadata"));
        }
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&b));
        Ok(b)
    }

    /// Reads `buf.len()` bytes at `off`, keeping the [`UNIT`]s they lie in cached
    /// until the image goes quiet. A unit read for the first time since the last drop
    /// is asked for whole (one disk read for its metadata neighbours too), so callers
    /// copy out only the slice they need.
    pub fn read(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.last.store(now_ms(), Ordering::Relaxed);
        let end = off.saturating_add(buf.len() as u64).max(off + 1);
        let units = (off / UNIT..end.div_ceil(UNIT)).map(|u| u * UNIT);
        let (new, full) = self.hold(units.clone());
        if full {
            // Everything held goes, then this read's units are held anew.
            self.drop_all();
            self.hold(units.clone());
        }
        if new || full {
            // Readahead is off on this descriptor: WILLNEED brings in exactly these
            // units, their disk reads started before the copy below waits on them.
            let start = off / UNIT * UNIT;
            let _ = rustix::fs::fadvise(
                &self.file,
                start,
                NonZeroU64::new(end.div_ceil(UNIT) * UNIT - start),
                Advice::WillNeed,
            );
        }
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Records `units` (their starts) as held: whether one was not before, and
    /// whether the image now holds more than [`HELD_MAX`].
    fn hold(&self, units: impl Iterator<Item = u64>) -> (bool, bool) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = held.units.is_empty();
        let mut new = false;
        for u in units {
            if held.units.insert(u) {
                held.bytes += UNIT;
                new = true;
            }
        }
        if was_empty && new {
            holding(true);
        }
        (new, held.bytes > HELD_MAX)
    }

    /// Drops every unit read so far from the page cache.
    pub fn drop_all(&self) {
        let held = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if !held.units.is_empty() {
                holding(false);
            }
            std::mem::take(&mut *held)
        };
        for off in held.units {
            let _ = rustix::fs::fadvise(&self.file, off, NonZeroU64::new(UNIT), Advice::DontNeed);
        }
    }

    fn idle(&self, now: u64) -> bool {
        now.saturating_sub(self.last.load(Ordering::Relaxed)) >= IDLE.as_millis() as u64
    }
}

impl Drop for Burst {
    /// The image is closed (its mount ended): nothing of it stays cached.
    fn drop(&mut self) {
        self.drop_all();
    }
}

/// The dropping thread: every [`TICK`] while some image holds units, drops those of
/// images quiet for [`IDLE`].
fn run() {
    loop {
        {
            let mut n = HOLDING.0.lock().unwrap_or_else(|e| e.into_inner());
            while *n == 0 {
                n = HOLDING.1.wait(n).unwrap_or_else(|e| e.into_inner());
            }
        }
        std::thread::sleep(TICK);
        let live: Vec<Arc<Burst>> = LIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let now = now_ms();
        for b in live {
            if b.idle(now) {
                b.drop_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ishare_testkit::pagecache::resident_bytes as cached;
    use std::io::Write;

    /// A synced file of `len` bytes `byte` with nothing of it cached, and a [`Burst`]
    /// reading it; `None` (the test skipped) where its page cache cannot be dropped.
    fn uncached(byte: u8, len: usize) -> Option<(tempfile::NamedTempFile, Arc<Burst>)> {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&vec![byte; len]).unwrap();
        tmp.as_file().sync_all().unwrap();
        let f = tmp.reopen().unwrap();
        rustix::fs::fadvise(&f, 0, None, Advice::DontNeed).unwrap();
        if cached(tmp.path()) != 0 {
            eprintln!("skipped: the page cache of a synced file cannot be dropped here");
            return None;
        }
        Some((tmp, Burst::new(f).unwrap()))
    }

    /// A read brings in its whole unit, which stays cached while reads go on and
    /// leaves the page cache once the image is quiet, or closed; nothing past it is
    /// read ahead.
    #[test]
    fn windows_stay_while_read_and_go_when_quiet() {
        let Some((tmp, b)) = uncached(7, 8 << 20) else {
            return;
        };
        let mut buf = vec![0u8; 32 << 10];
        assert_eq!(b.read(&mut buf, (1 << 20) + 4096).unwrap(), buf.len());
        assert!(buf.iter().all(|&x| x == 7));
        assert_eq!(cached(tmp.path()), UNIT, "its unit alone is cached");
        // Quiet long enough: dropped by the thread.
        std::thread::sleep(IDLE + 3 * TICK);
        assert_eq!(cached(tmp.path()), 0, "dropped once quiet");
        b.read(&mut buf, 0).unwrap();
        assert_eq!(cached(tmp.path()), UNIT);
        drop(b);
        assert_eq!(cached(tmp.path()), 0, "dropped with the image");
    }

    /// Past [`HELD_MAX`] an image's units are dropped and held anew: a long run of
    /// reads keeps at most that much cached.
    #[test]
    fn an_image_holds_at_most_its_share() {
        let Some((tmp, b)) = uncached(3, 4 << 20) else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let units = HELD_MAX / UNIT;
        for i in 0..units {
            b.read(&mut buf, i * UNIT + 8192).unwrap();
        }
        assert_eq!(cached(tmp.path()), HELD_MAX, "all held up to the limit");
        b.read(&mut buf, units * UNIT).unwrap();
        assert_eq!(cached(tmp.path()), UNIT, "dropped, the last one held");
    }
}
