//! A file's identity as `statx` gives it: which file (device, inode, birth time where
//! the filesystem has one) in which state (size, mtime, ctime).
//!
//! Any write to a file, any `utimensat`, `chmod` or link count change moves its ctime,
//! which no system call can set back; so an identity that matches says the file was not
//! changed since the identity was taken (short of a clock set back by root, or a
//! filesystem that lies). The btime tells a new file at a reused inode number apart
//! even where ctimes are coarse.

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, StatxFlags};

/// Seconds and nanoseconds.
type Time = (i64, u32);

/// Which file, in which state (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: Time,
    pub ctime: Time,
    /// `None` where the filesystem does not report a birth time.
    pub btime: Option<Time>,
}

/// Length of [`FileId::encode`]'s output.
pub(crate) const ENCODED_LEN: usize = 3 * 8 + 3 * 12 + 1;

impl FileId {
    /// The identity of the open file `fd`.
    pub fn of(fd: impl AsFd) -> io::Result<FileId> {
        let st = rustix::fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )?;
        let t = |ts: rustix::fs::StatxTimestamp| (ts.tv_sec, ts.tv_nsec);
        let has = |f: StatxFlags| st.stx_mask & f.bits() != 0;
        // Without these we could not tell a changed file: no identity at all.
        if !has(StatxFlags::INO | StatxFlags::SIZE | StatxFlags::MTIME | StatxFlags::CTIME) {
            return Err(io::Error::other("statx gives no inode, size or times"));
        }
        Ok(FileId {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime: t(st.stx_mtime),
            ctime: t(st.stx_ctime),
            btime: has(StatxFlags::BTIME).then(|| t(st.stx_btime)),
        })
    }

    /// A fixed-length encoding (for keys, MACs and record values).
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let mut at = 0;
        let mut put = |b: &[u8]| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&self.dev.to_le_bytes());
        put(&self.ino.to_le_bytes());
        put(&self.size.to_le_bytes());
        for (s, ns) in [self.mtime, self.ctime, self.btime.unwrap_or_default()] {
            put(&s.to_le_bytes());
            put(&ns.to_le_bytes());
        }
        put(&[u8::from(self.btime.is_some())]);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use super::*;

    #[test]
    fn writes_and_times_change_the_identity_and_reads_do_not() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"content").unwrap();
        let f = File::open(&p).unwrap();
        let a = FileId::of(&f).unwrap();
        assert_eq!(a.size, 7);
        let _ = std::fs::read(&p).unwrap();
        assert_eq!(FileId::of(&f).unwrap(), a);
        // Same size, same mtime set back: the ctime still moves.
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all(b"CONTENT")
            .unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let b = FileId::of(&f).unwrap();
        assert_eq!((b.size, b.mtime), (a.size, a.mtime));
        assert_ne!(b, a);
        assert_ne!(b.encode(), a.encode());
    }
}
