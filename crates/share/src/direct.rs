//! Reading image file data without leaving it in the page cache.
//!
//! The daemon reads an image's file data only to copy it into a store object, to hash
//! it, or to hand it to FUSE, which caches it itself. Plain buffered reads would leave
//! a second copy under the image file: dropping it afterwards (`POSIX_FADV_DONTNEED`)
//! misses what readahead brought in past the range and large folios straddling its
//! ends (measured: two thirds of every image's data stayed cached). So:
//!
//! * short extents (most files), and the last [`BULK`] bytes of long ones, are read
//!   with `O_DIRECT`, which never caches;
//! * the rest of long extents is read buffered, with the kernel's readahead, and
//!   dropped behind the reads: `O_DIRECT` reads a third as fast as readahead here
//!   (1.1 against 3 GB/s; prefetching with `POSIX_FADV_WILLNEED` instead of
//!   readahead measured half as fast). Readahead runs at most its window (8 MiB
//!   here) past the reads, which stay [`BULK`] bytes short of the extent's end, so it
//!   never reaches other files; what it brought into the end of the extent is
//!   dropped when the `O_DIRECT` part begins.
//!
//! Where the filesystem refuses `O_DIRECT` (tmpfs, some FUSE filesystems), short
//! extents take the second path too.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};

/// Offset and memory alignment used when the kernel does not report one (it does from
/// Linux 6.1): a page covers every logical block size in use.
const DEFAULT_ALIGN: usize = 4096;

/// A buffer whose data starts at an address aligned for `O_DIRECT`; after a read, it
/// holds exactly the bytes asked for.
#[derive(Default)]
pub struct AlignedBuf {
    vec: Vec<u8>,
    start: usize,
    len: usize,
    /// Its buffer goes to [`SPARE`] when dropped.
    spare: bool,
}

/// Buffers of [`SLICE`] windows that left the cache, for the next ones. A walk makes
/// and drops windows by the thousand: freed to malloc, their buffers stayed in
/// whichever of its arenas the freeing thread used (measured: the node daemon's PSS
/// 4–6 MiB over its windows' budget), and new ones were zeroed each time.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Spare buffers kept at most: as many as the windows' budget holds.
const SPARE_MAX: usize = (WINDOWS_BUDGET / SLICE) as usize;

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.spare {
            let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
            if spare.len() < SPARE_MAX {
                spare.push(std::mem::take(&mut self.vec));
            }
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

impl AlignedBuf {
    /// An empty buffer made of a spare one if there is one, given back when dropped.
    fn spare() -> AlignedBuf {
        let vec = SPARE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        AlignedBuf {
            vec,
            spare: true,
            ..AlignedBuf::default()
        }
    }

    /// The bytes of the last read.
    pub fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }

    /// A window of `len` bytes starting at an `align`ed address; the buffer then
    /// holds nothing until [`AlignedBuf::filled`].
    fn window(&mut self, align: usize, len: usize) -> &mut [u8] {
        let need = len + align;
        if self.vec.len() < need {
            self.vec = vec![0; need];
        }
        self.start = self.vec.as_ptr().align_offset(align).min(align);
        self.len = 0;
        &mut self.vec[self.start..self.start + len]
    }

    /// The first `len` bytes of the buffer, to fill by other means than
    /// [`DirectReader::read`]; they become the buffer's data.
    pub fn unaligned(&mut self, len: usize) -> &mut [u8] {
        self.window(1, len);
        self.filled(0, len);
        &mut self.vec[self.start..self.start + len]
    }

    /// Marks `len` bytes from `skip` bytes into the window as the data read.
    fn filled(&mut self, skip: usize, len: usize) {
        self.start += skip;
        self.len = len;
    }
}

/// Reads with at least this much of their extent left after them are buffered;
/// the others use `O_DIRECT`. Twice the largest readahead window in common use.
const BULK: u64 = 16 << 20;

/// Largest piece copied at once.
const PIECE: u64 = 4 << 20;

/// How far behind a buffered read pages are dropped again: large folios that
/// straddled the previous drop's start go with the next one.
const BEHIND: u64 = 2 * PIECE;

/// The other descriptors of an image file.
struct Twin {
    /// `O_DIRECT`, with its alignment; `None` where the filesystem refuses it.
    direct: Option<(File, usize)>,
    /// Buffered, with its own readahead state.
    bulk: File,
    /// Buffered reads happened since the last drop at an extent's end: only then can
    /// readahead have left pages behind (short extents never read buffered).
    buffered: AtomicBool,
    /// Its size when opened (images do not change).
    size: u64,
    /// Its key in the process's data windows.
    key: (u64, u64),
}

/// By device and inode number of the reader library's descriptor: its twins.
type Twins = HashMap<(u64, u64), Arc<Twin>>;

/// Reads and copies of image file data that leave no pages cached.
#[derive(Default)]
pub struct DirectReader {
    twins: Mutex<Twins>,
}

impl std::fmt::Debug for DirectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectReader").finish_non_exhaustive()
    }
}

impl Drop for DirectReader {
    /// Its images' data windows go with it: once no mount holds an image open, its
    /// inode number may name another file.
    fn drop(&mut self) {
        let twins = self.twins.get_mut().unwrap_or_else(|e| e.into_inner());
        if !twins.is_empty() {
            data_windows().retain(|k, _| !twins.contains_key(&k.0));
        }
    }
}

impl DirectReader {
    /// The twins of `f`, opened at first use.
    fn twin(&self, f: &File) -> io::Result<Arc<Twin>> {
        let md = f.metadata()?;
        let mut twins = self.twins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = twins.get(&(md.dev(), md.ino())) {
            return Ok(t.clone());
        }
        let bulk = reopen(f, OFlags::empty())?;
        let t = Arc::new(Twin {
            direct: open_direct(f).ok(),
            bulk,
            buffered: Default::default(),
            size: md.len(),
            key: (md.dev(), md.ino()),
        });
        twins.insert((md.dev(), md.ino()), t.clone());
        Ok(t)
    }

    /// Reads `len` bytes of `f` at `off` into `buf` (see [`AlignedBuf::as_slice`]);
    /// the extent they belong to ends at `extent_end` (on `f`).
    pub fn read(
        &self,
        f: &File,
        off: u64,
        len: usize,
        extent_end: u64,
        buf: &mut AlignedBuf,
    ) -> io::Result<()> {
        let t = self.twin(f)?;
        let end = off.saturating_add(len as u64);
        if extent_end.saturating_sub(end) < BULK
            && let Some((direct, align)) = &t.direct
        {
            // Whatever readahead brought in of the rest of the extent.
            drop_cache(&t.bulk, off, extent_end.saturating_sub(off));
            let read = if len <= SMALL_READ {
                read_windowed(&t, direct, *align, off, len, buf)
            } else {
                read_past_window(&t, direct, *align, off, len, buf)
            };
            match read {
                Ok(()) => {
                    if end >= extent_end && t.buffered.swap(false, Ordering::Relaxed) {
                        // Readahead still in flight at the drop above (its pages were
                        // locked, so the drop skipped them) has landed by now.
                        let from = extent_end.saturating_sub(2 * BULK);
                        drop_cache(&t.bulk, from, extent_end - from);
                    }
                    return Ok(());
                }
                // Alignment rules we did not meet (odd devices): buffered instead.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        t.buffered.store(true, Ordering::Relaxed);
        t.bulk.read_exact_at(buf.unaligned(len), off)?;
        let from = off.saturating_sub(BEHIND);
        drop_cache(&t.bulk, from, end - from);
        Ok(())
    }

    /// Copies `len` bytes of `f` from `off` to `out` at `out_off`. (Through a
    /// buffer: `copy_file_range` between two ext4 files, a splice in 64 KiB steps,
    /// measured at less than half the speed of reading and writing 4 MiB at a time;
    /// writing on a second thread while reading the next piece measured no faster.)
    pub fn copy(&self, f: &File, off: u64, len: u64, out: &File, out_off: u64) -> io::Result<()> {
        let mut buf = AlignedBuf::default();
        let end = off.saturating_add(len);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(PIECE);
            self.read(f, off + done, n as usize, end, &mut buf)?;
            out.write_all_at(buf.as_slice(), out_off + done)?;
            done += n;
        }
        Ok(())
    }
}

/// Reads of file data up to this size go through the data windows.
const SMALL_READ: usize = 64 << 10;

/// Bytes per data window: an image lays small files out one after another, so the
/// first open of each file of a directory (copying or hashing it) finds it in the
/// window its neighbour's read brought in, instead of waiting for a read of its own
/// (a cold read of the ten-image family made 117,145 `O_DIRECT` reads of 23 KiB on
/// average, each a round trip to the disk).
const DATA_WINDOW: u64 = 128 << 10;

/// Bytes of data windows the process keeps: a few per image being read at once.
const DATA_WINDOWS_BUDGET: u64 = 2 << 20;

/// ((device, inode) of the image file, window start).
type DataKey = ((u64, u64), u64);

/// Cached `O_DIRECT` windows, weighed by their buffers' size.
type WindowCache<K> = quick_cache::sync::Cache<K, Arc<AlignedBuf>, BufWeight>;

#[derive(Clone)]
struct BufWeight;

impl<K> quick_cache::Weighter<K, Arc<AlignedBuf>> for BufWeight {
    fn weight(&self, _key: &K, val: &Arc<AlignedBuf>) -> u64 {
        val.vec.len() as u64
    }
}

fn window_cache<K: Eq + std::hash::Hash + Clone>(budget: u64, window: u64) -> WindowCache<K> {
    WindowCache::with_weighter((budget / window) as usize, budget, BufWeight)
}

/// The window of `cache` at `key`, filled by `read` into `new()` when not cached.
fn cached_window<K: Eq + std::hash::Hash + Clone>(
    cache: &WindowCache<K>,
    key: K,
    new: fn() -> AlignedBuf,
    read: impl FnOnce(&mut AlignedBuf) -> io::Result<()>,
) -> io::Result<Arc<AlignedBuf>> {
    if let Some(w) = cache.get(&key) {
        return Ok(w);
    }
    let mut w = new();
    read(&mut w)?;
    let w = Arc::new(w);
    cache.insert(key, w.clone());
    Ok(w)
}

fn data_windows() -> &'static WindowCache<DataKey> {
    static CACHE: std::sync::OnceLock<WindowCache<DataKey>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| window_cache(DATA_WINDOWS_BUDGET, DATA_WINDOW))
}

/// Reads `len` bytes of the twin's image at `off` through the data windows.
fn read_windowed(
    t: &Twin,
    direct: &File,
    align: usize,
    off: u64,
    len: usize,
    buf: &mut AlignedBuf,
) -> io::Result<()> {
    let end = off
        .checked_add(len as u64)
        .filter(|&e| e <= t.size)
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let out = buf.unaligned(len);
    let mut pos = off;
    while pos < end {
        let start = pos / DATA_WINDOW * DATA_WINDOW;
        let n = DATA_WINDOW.min(t.size - start) as usize;
        let w = cached_window(data_windows(), (t.key, start), AlignedBuf::default, |w| {
            read_direct(direct, align, start, n, w)
        })?;
        let from = (pos - start) as usize;
        let n = ((end - pos) as usize).min(w.as_slice().len().saturating_sub(from));
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let at = (pos - off) as usize;
        out[at..at + n].copy_from_slice(&w.as_slice()[from..from + n]);
        pos += n as u64;
    }
    Ok(())
}

/// Reads `len` bytes of the twin's image at `off` with `O_DIRECT`, except what a cached
/// data window holds of their start: the window read for the small file before often
/// runs into this one (measured, preparing minbase with a fresh store: 14 of the 48
/// MiB read twice from disk).
fn read_past_window(
    t: &Twin,
    direct: &File,
    align: usize,
    off: u64,
    len: usize,
    buf: &mut AlignedBuf,
) -> io::Result<()> {
    let start = off / DATA_WINDOW * DATA_WINDOW;
    let from = (off - start) as usize;
    let cached = data_windows()
        .get(&(t.key, start))
        .filter(|w| w.as_slice().len() > from);
    let Some(w) = cached else {
        return read_direct(direct, align, off, len, buf);
    };
    let have = (w.as_slice().len() - from).min(len);
    let mut rest = AlignedBuf::default();
    if have < len {
        read_direct(direct, align, off + have as u64, len - have, &mut rest)?;
    }
    let out = buf.unaligned(len);
    out[..have].copy_from_slice(&w.as_slice()[from..from + have]);
    out[have..].copy_from_slice(rest.as_slice());
    Ok(())
}

/// Bytes per cached window of a [`DirectSource`] reading with `O_DIRECT`, and the
/// largest read served through windows: inodes, xattrs and directories cluster in
/// the metadata area, so one disk read serves many lookups.
const WINDOW: u64 = 256 << 10;

/// Bytes of windows the process keeps, over all its images (one budget: a node
/// daemon serves many images, and 32 windows per image made 83 MiB of its 160 MiB
/// with ten Debian images). A walk of the whole tree (`find`) goes depth first over
/// an image laid out breadth first; with 16 windows of 128 KiB it read the 15 MiB
/// metadata area of minbase 5 times over and took twice as long (measured: 573 reads
/// and 0.17 s, against 58 reads and 0.08 s; the kernel 0.07 s), so the budget holds
/// a whole such area and then some; mounts walked one after another share it.
/// Cut to 6 MiB for the node daemon's 40 MiB target (issue 11): a cold walk of a
/// large image reads some windows twice, a warm one sends the daemon nothing. Then
/// to 4 MiB once windows pushed out during a burst of reads were found again in the
/// page cache (see [`crate::burst`]) rather than read from the disk again.
const WINDOWS_BUDGET: u64 = 4 << 20;

/// Bytes per cached window of a [`DirectSource`] reading through the page cache
/// ([`crate::burst`], which still brings in 256 KiB units): a window missed is then
/// a copy from the page cache, so small windows keep eight times as many places of a
/// metadata area at hand for the same budget. (With 256 KiB windows, the first
/// opens of the ten-image family after a restart spent a quarter of the mount
/// thread's time copying windows and faulting in their fresh buffers.)
const SLICE: u64 = 32 << 10;

/// (source, window start).
type WindowKey = (u64, u64);

/// The process's windows, of every [`DirectSource`].
fn windows() -> &'static WindowCache<WindowKey> {
    static CACHE: std::sync::OnceLock<WindowCache<WindowKey>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| window_cache(WINDOWS_BUDGET, SLICE))
}

/// An image file as the reader library sees it: metadata (and compressed or inline
/// data) read through a few cached windows, so that a mount keeps its own small cache
/// instead of page cache under every image: with file data shared, the images'
/// metadata was most of what the mounts added (measured: 330 MiB for ten images, half
/// as much as all their distinct content). FUSE caches attributes and entries; the
/// windows serve the reader's bursts. Windows are read through the page cache only
/// while the image is busy ([`crate::burst`]); large reads with `O_DIRECT`.
pub struct DirectSource {
    /// Buffered: the reader's [`ishare_erofs::ReadAt::as_file`], for [`DirectReader`],
    /// and the fallback without `O_DIRECT`.
    file: File,
    /// For reads past the windows' size (compressed clusters).
    direct: Option<(File, usize)>,
    /// Where windows are read from: the page cache while the image is busy.
    burst: Option<Arc<crate::burst::Burst>>,
    size: u64,
    /// Its key in the process's windows (unique in the process).
    id: u64,
}

impl Drop for DirectSource {
    /// Its windows go with it rather than when the budget pushes them out.
    fn drop(&mut self) {
        let id = self.id;
        windows().retain(|k, _| k.0 != id);
    }
}

impl std::fmt::Debug for DirectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSource").finish_non_exhaustive()
    }
}

impl DirectSource {
    /// Opens `path`.
    pub fn open(path: &std::path::Path) -> io::Result<DirectSource> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(DirectSource {
            direct: open_direct(&file).ok(),
            burst: reopen(&file, OFlags::empty())
                .and_then(crate::burst::Burst::new)
                .ok(),
            file,
            size,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        })
    }

    /// The window starting at `start`, read if not cached: buffered, kept in the page
    /// cache while the image is busy ([`crate::burst`]); with `O_DIRECT` where no
    /// [`crate::burst::Burst`] could be set up.
    fn window(&self, direct: &File, align: usize, start: u64) -> io::Result<Arc<AlignedBuf>> {
        let len = self.window_len().min(self.size.saturating_sub(start)) as usize;
        let new = match self.burst {
            Some(_) => AlignedBuf::spare,
            None => AlignedBuf::default,
        };
        cached_window(windows(), (self.id, start), new, |w| match &self.burst {
            Some(burst) => {
                let got = burst.read(w.unaligned(len), start)?;
                w.filled(0, got);
                Ok(())
            }
            None => read_direct(direct, align, start, len, w),
        })
    }

    /// Its windows' size (fixed: the same start always names the same window).
    fn window_len(&self) -> u64 {
        if self.burst.is_some() { SLICE } else { WINDOW }
    }
}

impl ishare_erofs::ReadAt for DirectSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let Some((direct, align)) = &self.direct else {
            FileExt::read_exact_at(&self.file, buf, offset)?;
            drop_cache(&self.file, offset, buf.len() as u64);
            return Ok(());
        };
        if buf.len() as u64 > WINDOW {
            // Large reads (compressed clusters): past the windows.
            let mut tmp = AlignedBuf::default();
            read_direct(direct, *align, offset, buf.len(), &mut tmp)?;
            buf.copy_from_slice(tmp.as_slice());
            return Ok(());
        }
        let mut pos = offset;
        let window = self.window_len();
        while pos < end {
            let start = pos / window * window;
            let w = self.window(direct, *align, start)?;
            let from = (pos - start) as usize;
            let n = ((end - pos) as usize).min(w.as_slice().len() - from);
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&w.as_slice()[from..from + n]);
            pos += n as u64;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// A new open file description of `f` (so flags and readahead state are its own).
fn reopen(f: &File, flags: OFlags) -> io::Result<File> {
    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
    Ok(File::from(rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | flags,
        Mode::empty(),
    )?))
}

/// An `O_DIRECT` descriptor of `f` and the alignment its reads need.
fn open_direct(f: &File) -> io::Result<(File, usize)> {
    let direct = reopen(f, OFlags::DIRECT)?;
    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
    let align = match rustix::fs::statx(CWD, path.as_str(), AtFlags::empty(), StatxFlags::DIOALIGN)
    {
        Ok(st) if st.stx_mask & StatxFlags::DIOALIGN.bits() != 0 => {
            if st.stx_dio_offset_align == 0 {
                // The filesystem reports no O_DIRECT support for this file.
                return Err(io::Error::from(io::ErrorKind::Unsupported));
            }
            (st.stx_dio_offset_align.max(st.stx_dio_mem_align) as usize).max(1)
        }
        _ => DEFAULT_ALIGN,
    };
    if !align.is_power_of_two() {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    Ok((direct, align))
}

fn read_direct(
    file: &File,
    align: usize,
    off: u64,
    len: usize,
    buf: &mut AlignedBuf,
) -> io::Result<()> {
    let a = align as u64;
    let lo = off / a * a;
    let skip = (off - lo) as usize;
    let end = off
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let hi = end.div_ceil(a) * a;
    let span = (hi - lo) as usize;
    let window = buf.window(align, span);
    let mut got = 0;
    // The window may end past the end of the file: a short read there is fine as long
    // as it covers what was asked for.
    while got < skip + len {
        match file.read_at(&mut window[got..], lo + got as u64) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if got % align != 0 && got < skip + len {
            // A short read in the middle cannot be continued at an unaligned offset.
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
    }
    buf.filled(skip, len);
    Ok(())
}

/// Drops pages of `f` we read only to pass them on.
pub fn drop_cache(f: &File, off: u64, len: u64) {
    if let Some(len) = NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(f, off, Some(len), rustix::fs::Advice::DontNeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ishare_testkit::pagecache::resident_bytes as cached;
    use std::io::Write;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Unaligned ranges, ranges ending at the end of the file and past it, read as
    /// short extents (O_DIRECT) and as parts of a long one (buffered), on a filesystem
    /// with O_DIRECT (the temp dir) and on tmpfs.
    #[test]
    fn reads_exact_ranges() {
        // Longer than BULK, so that both ways of reading run.
        let data = pattern(20 * (1 << 20) + 123);
        let size = data.len() as u64;
        for dir in [std::env::temp_dir(), "/dev/shm".into()] {
            if !dir.is_dir() {
                continue;
            }
            let mut tmp = tempfile::NamedTempFile::new_in(&dir).unwrap();
            tmp.write_all(&data).unwrap();
            tmp.flush().unwrap();
            let f = tmp.reopen().unwrap();
            let r = DirectReader::default();
            let mut buf = AlignedBuf::default();
            for (off, len) in [
                (0, 1),
                (0, 4096),
                (1, 4096),
                (4095, 2),
                (5000, 7000),
                (12, 0),
                (0, data.len()),
                (data.len() - 123, 123),
                (data.len() - 1, 1),
                // Longer reads starting in a data window read before: its part from it.
                (100_000, 100_000),
                (3, 200_000),
                (data.len() - 70_000, 70_000),
                (1 << 20, 2 << 20),
                (1 << 20, 17 << 20),
            ] {
                for extent_end in [(off + len) as u64, size] {
                    r.read(&f, off as u64, len, extent_end, &mut buf).unwrap();
                    assert_eq!(buf.as_slice(), &data[off..off + len], "{dir:?} {off}+{len}");
                }
            }
            for extent_end in [size, size + 1] {
                let past = r.read(&f, size - 10, 11, extent_end, &mut buf);
                assert!(past.is_err(), "{dir:?}: read past the end succeeded");
            }
            let out = tempfile::tempfile_in(&dir).unwrap();
            r.copy(&f, 77, size - 77, &out, 5).unwrap();
            let mut copied = vec![0u8; data.len() - 77];
            out.read_exact_at(&mut copied, 5).unwrap();
            assert!(copied == data[77..], "{dir:?}: copy differs");
        }
    }

    /// The source returns the same bytes as the file for reads within, across and
    /// beyond windows, refuses reads past the end, and leaves nothing in the page
    /// cache once closed where O_DIRECT works.
    #[test]
    fn source_reads_like_the_file() {
        use ishare_erofs::ReadAt;
        let data = pattern(5 * WINDOW as usize + 777);
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        tmp.as_file().sync_all().unwrap();
        drop_cache(tmp.as_file(), 0, data.len() as u64);
        let src = DirectSource::open(tmp.path()).unwrap();
        assert_eq!(src.size().unwrap(), data.len() as u64);
        let w = WINDOW as usize;
        for (off, len) in [
            (0, 1),
            (100, 4096),
            (w - 10, 20),
            (w * 2 - 1, w + 2),
            (3, 2 * w + 5),
            (data.len() - 777, 777),
            (data.len() - 1, 1),
            (7, 0),
        ] {
            let mut buf = vec![0u8; len];
            src.read_exact_at(&mut buf, off as u64).unwrap();
            assert!(buf == data[off..off + len], "{off}+{len}");
        }
        let mut buf = vec![0u8; 2];
        assert!(src.read_exact_at(&mut buf, data.len() as u64 - 1).is_err());
        // Its windows stay in the page cache while it is busy (see `crate::burst`),
        // never past its end.
        let direct = src.direct.is_some();
        drop(src);
        if direct && cached(tmp.path()) != 0 {
            panic!("the source left pages in the page cache");
        }
    }

    /// On the temp dir's filesystem (ext4 in CI), reading short extents, reading a
    /// long one and copying it leave nothing in the page cache, unlike a plain read.
    #[test]
    fn leaves_no_page_cache() {
        let data = pattern(40 << 20);
        let size = data.len() as u64;
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        tmp.as_file().sync_all().unwrap();
        let f = tmp.reopen().unwrap();
        let r = DirectReader::default();
        let mut buf = AlignedBuf::default();
        let out = tempfile::tempfile().unwrap();
        let steps: [(&str, &dyn Fn()); 3] = [
            ("short extents", &|| {
                let mut buf = AlignedBuf::default();
                for off in (0..size).step_by(64 << 10) {
                    r.read(&f, off + 5, (64 << 10) - 5, off + (64 << 10), &mut buf)
                        .unwrap();
                }
            }),
            ("a long extent", &|| {
                let mut buf = AlignedBuf::default();
                for off in (0..size).step_by(1 << 20) {
                    r.read(&f, off, 1 << 20, size, &mut buf).unwrap();
                }
            }),
            ("a copy", &|| r.copy(&f, 0, size, &out, 0).unwrap()),
        ];
        for (what, step) in steps {
            drop_cache(&f, 0, size);
            if cached(tmp.path()) != 0 {
                eprintln!("skipped: the page cache of a synced file cannot be dropped here");
                return;
            }
            step();
            assert_eq!(cached(tmp.path()), 0, "{what} left pages cached");
        }
        assert!(
            r.twin(&f).unwrap().direct.is_some(),
            "no O_DIRECT on the temp dir"
        );
        // The measurement sees cached pages at all.
        r.read(&f, 0, 4096, 4096, &mut buf).unwrap();
        let mut plain = vec![0u8; 1 << 20];
        f.read_exact_at(&mut plain, 0).unwrap();
        assert!(cached(tmp.path()) >= 1 << 20);
    }
}
