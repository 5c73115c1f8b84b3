//! Where the archive's bytes come from: an uncompressed archive in a regular file,
//! read in place, or a stream (gzip, zstd or xz, detected by magic bytes; standard
//! input; a pipe) copied to a temporary file as it is decompressed and parsed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::Error;

/// Write buffer of the temporary copy of a stream.
pub(super) const SPOOL_BUF: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compressed {
    None,
    Gzip,
    Zstd,
    Xz,
}

/// The compression of a stream starting with `magic`; `Err` names a known but
/// unsupported one.
pub(super) fn detect(magic: &[u8]) -> std::result::Result<Compressed, &'static str> {
    Ok(match magic {
        [0x1f, 0x8b, ..] => Compressed::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compressed::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compressed::Xz,
        [
            b'B',
            b'Z',
            b'h',
            b'1'..=b'9',
            0x31,
            0x41,
            0x59,
            0x26,
            0x53,
            0x59,
            ..,
        ] => {
            return Err("bzip2");
        }
        [0x04, 0x22, 0x4d, 0x18, ..] => return Err("lz4"),
        _ => Compressed::None,
    })
}

/// Reads until `buf` is full or the end; returns how many bytes were read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(super) fn unsupported(archive: &Path, name: &str) -> Error {
    Error::Tar {
        archive: archive.to_path_buf(),
        what: format!(
            "is compressed with {name}, which is not supported (gzip, zstd and xz are); \
             decompress it first"
        ),
    }
}

/// Where the parser reads the archive from.
pub(super) trait Stream {
    /// Reads until `buf` is full or the archive ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Skips up to `n` bytes; returns how many there were.
    fn skip(&mut self, n: u64) -> io::Result<u64>;
    /// Bytes consumed so far: the offset of the next byte in the archive.
    fn pos(&self) -> u64;
}

/// An uncompressed archive in a regular file, read in place.
pub(super) struct FileStream<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
    pub(super) len: u64,
}

impl Stream for FileStream<'_> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.file.read_at(&mut buf[n..], self.pos) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let k = n.min(self.len.saturating_sub(self.pos));
        self.pos += k;
        Ok(k)
    }

    fn pos(&self) -> u64 {
        self.pos
    }
}

/// A decompressed stream, copied to the temporary file as it is read.
pub(super) struct TeeStream<'a> {
    pub(super) inner: Box<dyn Read + 'a>,
    /// The temporary copy; `None` when the bytes are not needed afterwards.
    pub(super) spool: Option<BufWriter<File>>,
    pub(super) spool_dir: &'a Path,
    pub(super) pos: u64,
}

impl TeeStream<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(k) => {
                    let Some(spool) = self.spool.as_mut() else {
                        self.pos += k as u64;
                        return Ok(k);
                    };
                    spool.write_all(&buf[..k]).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot write the decompressed archive to a temporary file in {}: {e}",
                                self.spool_dir.display()
                            ),
                        )
                    })?;
                    self.pos += k as u64;
                    return Ok(k);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Stream for TeeStream<'_> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.read_some(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; n.min(1 << 16) as usize];
        let mut done = 0;
        while done < n {
            let want = (n - done).min(buf.len() as u64) as usize;
            match self.read_some(&mut buf[..want])? {
                0 => break,
                k => done += k as u64,
            }
        }
        Ok(done)
    }

    fn pos(&self) -> u64 {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Ok(Compressed::Gzip));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Ok(Compressed::Zstd));
        assert_eq!(detect(b"\xfd7zXZ\0"), Ok(Compressed::Xz));
        assert_eq!(detect(b"BZh91AY&SY"), Err("bzip2"));
        assert_eq!(detect(b"./file"), Ok(Compressed::None));
        assert_eq!(detect(b""), Ok(Compressed::None));
    }
}
