//! Reading image file data past the page cache (`O_DIRECT`).
//!
//! The daemon reads an image's file data only to copy it into a store object, to hash
//! it, or to hand it to FUSE, which caches it itself. Buffered reads would leave a
//! second copy under the image file: dropping it afterwards (`POSIX_FADV_DONTNEED`)
//! misses what readahead brought in past the range and large folios that straddle
//! its ends (measured: two thirds of every image's data stayed cached). `O_DIRECT`
//! never caches. Where the filesystem refuses it (tmpfs, some FUSE filesystems), reads
//! fall back to buffered ones followed by a drop.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
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
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

impl AlignedBuf {
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

/// The `O_DIRECT` twin of an open file, with its alignment.
struct Twin {
    file: File,
    align: usize,
}

/// By device and inode number of the buffered file: its twin, `None` when its
/// filesystem refuses `O_DIRECT`.
type Twins = HashMap<(u64, u64), Option<Arc<Twin>>>;

/// `O_DIRECT` descriptors of the image files, opened once each.
#[derive(Default)]
pub struct DirectReader {
    twins: Mutex<Twins>,
}

impl std::fmt::Debug for DirectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectReader").finish_non_exhaustive()
    }
}

impl DirectReader {
    /// The `O_DIRECT` twin of `f`, or `None` when its filesystem refuses `O_DIRECT`.
    fn twin(&self, f: &File) -> Option<Arc<Twin>> {
        let md = f.metadata().ok()?;
        let mut twins = self.twins.lock().unwrap_or_else(|e| e.into_inner());
        twins
            .entry((md.dev(), md.ino()))
            .or_insert_with(|| open_twin(f).ok().map(Arc::new))
            .clone()
    }

    /// Reads `len` bytes of `f` at `off` into `buf` (see [`AlignedBuf::as_slice`]),
    /// past the page cache when possible.
    pub fn read(&self, f: &File, off: u64, len: usize, buf: &mut AlignedBuf) -> io::Result<()> {
        if let Some(t) = self.twin(f) {
            match read_direct(&t, off, len, buf) {
                Ok(()) => return Ok(()),
                // Alignment rules we did not meet (odd devices): buffered instead.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        let window = buf.window(1, len);
        f.read_exact_at(window, off)?;
        buf.filled(0, len);
        drop_cache(f, off, len as u64);
        Ok(())
    }
}

fn open_twin(f: &File) -> io::Result<Twin> {
    // Reopening through /proc gives a new open file description, so O_DIRECT does
    // not affect the buffered descriptor the reader library uses.
    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
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
    Ok(Twin {
        file: File::from(fd),
        align,
    })
}

fn read_direct(t: &Twin, off: u64, len: usize, buf: &mut AlignedBuf) -> io::Result<()> {
    let a = t.align as u64;
    let lo = off / a * a;
    let skip = (off - lo) as usize;
    let end = off
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let hi = end.div_ceil(a) * a;
    let span = (hi - lo) as usize;
    let window = buf.window(t.align, span);
    let mut got = 0;
    // The window may end past the end of the file: a short read there is fine as long
    // as it covers what was asked for.
    while got < skip + len {
        match t.file.read_at(&mut window[got..], lo + got as u64) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if got % t.align != 0 && got < skip + len {
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
    use std::io::Write;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Unaligned ranges, ranges ending at the end of the file and past it, on a
    /// filesystem with O_DIRECT (the temp dir) and one without (tmpfs /dev/shm).
    #[test]
    fn reads_exact_ranges() {
        let data = pattern(3 * 4096 + 123);
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
                (0, data.len()),
                (data.len() - 123, 123),
                (data.len() - 1, 1),
                (12, 0),
            ] {
                r.read(&f, off as u64, len, &mut buf).unwrap();
                assert_eq!(buf.as_slice(), &data[off..off + len], "{dir:?} {off}+{len}");
            }
            let past = r.read(&f, data.len() as u64 - 10, 11, &mut buf);
            assert!(past.is_err(), "{dir:?}: read past the end succeeded");
        }
    }

    /// Bytes of `path` in the page cache, by util-linux's fincore.
    fn cached(path: &std::path::Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        assert!(out.status.success(), "fincore failed");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// On a filesystem with O_DIRECT (the temp dir, ext4 in CI), reading leaves
    /// nothing in the page cache, unlike a buffered read.
    #[test]
    fn leaves_no_page_cache() {
        let data = pattern(8 << 20);
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        tmp.as_file().sync_all().unwrap();
        let f = tmp.reopen().unwrap();
        drop_cache(&f, 0, data.len() as u64);
        if cached(tmp.path()) != 0 {
            eprintln!("skipped: the page cache of a synced file cannot be dropped here");
            return;
        }
        let r = DirectReader::default();
        assert!(
            r.twin(&f).is_some(),
            "no O_DIRECT on the temp dir's filesystem"
        );
        let mut buf = AlignedBuf::default();
        for off in (0..data.len()).step_by(1 << 20) {
            r.read(&f, off as u64 + 5, (1 << 20) - 5, &mut buf).unwrap();
        }
        assert_eq!(cached(tmp.path()), 0, "direct reads left pages cached");
        // The measurement sees cached pages at all.
        let mut plain = vec![0u8; 1 << 20];
        f.read_exact_at(&mut plain, 0).unwrap();
        assert!(cached(tmp.path()) >= 1 << 20);
    }
}
