//! A shared file's content: copying it out of its image into an object, hashing it
//! there or in the image, and the `sha256:` fingerprints it is checked against.
//!
//! Below both the sharing decisions ([`crate::sharing`]) and the background publisher
//! ([`crate::publish`]), which each hash content: neither imports the other for it.
//! Image data is read past the page cache (see [`crate::direct`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use ishare_erofs::{ExtentKind, Image, Inode};
use sha2::{Digest, Sha256};

use crate::direct::{AlignedBuf, DirectReader};
use crate::error::{Error, Result};

/// Bytes per read while copying or hashing a file.
const CHUNK: usize = 4 << 20;

/// The digest of a `sha256:` fingerprint (the 7 ASCII bytes and 32 raw bytes that
/// mkfs.erofs and `ishare mkfs` write).
pub(crate) fn sha256_digest(fp: &[u8]) -> Option<[u8; 32]> {
    fp.strip_prefix(b"sha256:")
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
}

fn reader_err(e: ishare_erofs::Error) -> Error {
    Error::Image(e)
}

/// True when the file's content, as its image holds it, hashes to `want`.
pub(crate) fn check_content(
    img: &Image,
    direct: &DirectReader,
    inode: &Inode,
    want: &[u8; 32],
) -> Result<bool> {
    Ok(&hash_content(img, direct, inode)? == want)
}

/// Copies the content of `inode` into `out` (holes stay holes), leaving no image
/// pages cached (see [`crate::direct`]).
pub(crate) fn copy_content(
    img: &Image,
    direct: &DirectReader,
    inode: &Inode,
    out: &File,
) -> Result<()> {
    let mut pos = 0u64;
    let mut buf = AlignedBuf::default();
    while pos < inode.size {
        let ext = img.map(inode, pos).map_err(reader_err)?;
        let skip = pos - ext.logical;
        let len = ext.len - skip;
        let mapped = match ext.kind {
            ExtentKind::Hole => {
                pos += len;
                continue;
            }
            ExtentKind::Mapped { device, offset } => img
                .device_file(device, offset + skip, len)
                .map_err(reader_err)?,
            _ => None,
        };
        match mapped {
            Some((f, off)) => direct.copy(f, off, len, out, pos)?,
            // Inline tails and compressed extents, through the reader.
            None => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(CHUNK as u64);
                    img.read_at(inode, pos + done, buf.unaligned(n as usize))
                        .map_err(reader_err)?;
                    out.write_all_at(buf.as_slice(), pos + done)?;
                    done += n;
                }
            }
        }
        pos += len;
    }
    Ok(out.set_len(inode.size)?)
}

/// The SHA-256 of the content of `inode` as its image holds it, leaving no image
/// pages cached.
pub(crate) fn hash_content(img: &Image, direct: &DirectReader, inode: &Inode) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut pos = 0u64;
    let mut buf = AlignedBuf::default();
    while pos < inode.size {
        let ext = img.map(inode, pos).map_err(reader_err)?;
        let skip = pos - ext.logical;
        let n = (ext.len - skip).min(CHUNK as u64);
        let mapped = match ext.kind {
            ExtentKind::Hole => {
                hash_zeros(&mut h, n);
                pos += n;
                continue;
            }
            ExtentKind::Mapped { device, offset } => img
                .device_file(device, offset + skip, n)
                .map_err(reader_err)?
                .map(|(f, off)| (f, off, off + (ext.len - skip))),
            _ => None,
        };
        match mapped {
            Some((f, off, end)) => direct.read(f, off, n as usize, end, &mut buf)?,
            None => {
                img.read_at(inode, pos, buf.unaligned(n as usize))
                    .map_err(reader_err)?;
            }
        }
        h.update(buf.as_slice());
        pos += n;
    }
    Ok(h.finalize().into())
}

/// The SHA-256 of the first `size` bytes of `f` (a prepared object: its pages were
/// just written, so this reads the page cache).
pub(crate) fn hash_file(f: &File, size: u64) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; (CHUNK as u64).min(size) as usize];
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

fn hash_zeros(h: &mut Sha256, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// Zeros hashed in place of holes.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
