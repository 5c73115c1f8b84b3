//! Reading one file for chunking: the SHA-256 of each chunk (what deduplication
//! compares), the sparse ranges left out (holes, found with `SEEK_DATA` as
//! mkfs.erofs does, so a sparse file costs no blocks), and the whole file's digest
//! (its fingerprint) on the same read.

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::tree::{Source, Tree};

/// Bytes read at a time.
const READ_SIZE: usize = 1 << 20;

/// One chunk of a file as read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece {
    /// A sparse range of the source: no data to store.
    Sparse,
    /// Data: its SHA-256 and length (the chunk size but for the last chunk).
    Data { sha: [u8; 32], len: u64 },
}

/// A file read for chunking.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Chunk size shift: the asked one, or one chunk over the whole file when the
    /// file is entirely sparse (as mkfs.erofs).
    pub bits: u32,
    pub pieces: Vec<Piece>,
    /// SHA-256 of the whole file, when fingerprints are on.
    pub digest: Option<[u8; 32]>,
}

/// The first byte at or after `pos` (relative to the file's data) that is not in a
/// hole, `None` if only holes follow. File systems without `SEEK_DATA` report the
/// position itself.
pub(crate) fn next_data(src: &Source<'_>, pos: u64, size: u64) -> Result<Option<u64>> {
    // A layer file read through the EROFS reader has no file to ask: all data.
    let Some(file) = src.file() else {
        return Ok(Some(pos));
    };
    match rustix::fs::seek(file, SeekFrom::Data(src.base + pos)) {
        Ok(off) if off - src.base >= size => Ok(None),
        Ok(off) => Ok(Some(off.saturating_sub(src.base).max(pos))),
        Err(Errno::NXIO) => Ok(None),
        Err(Errno::INVAL | Errno::NOTSUP) => Ok(Some(pos)),
        Err(e) => Err(src.read_err(e.into())),
    }
}

/// Hashes `n` zero bytes into `h` (a hole's share of the file digest).
pub(crate) fn hash_zeros(h: &mut Sha256, mut n: u64) {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Reads regular file `node` (of `size` bytes > 0) in chunks of `1 << bits` bytes.
pub(crate) fn scan(
    tree: &Tree,
    node: usize,
    bits: u32,
    bs_bits: u32,
    max_bits: u32,
    digest: bool,
) -> Result<Scanned> {
    let size = tree.nodes[node].size;
    let src = Source::open(tree, node)?;
    let mut file_hash = digest.then(Sha256::new);
    let bits = if next_data(&src, 0, size)?.is_none() {
        // Entirely sparse: one hole chunk covers it where the format allows.
        (u64::BITS - (size - 1).leading_zeros()).max(bs_bits)
    } else {
        bits
    }
    .min(max_bits);
    let chunk = 1u64 << bits;
    let mut pieces = Vec::with_capacity(size.div_ceil(chunk) as usize);
    let mut buf = vec![0u8; (chunk.min(size) as usize).min(READ_SIZE)];
    let mut pos = 0u64;
    while pos < size {
        // Holes up to the chunk holding the next data byte.
        let data_chunk =
            next_data(&src, pos, size)?.map_or(size.next_multiple_of(chunk), |d| d / chunk * chunk);
        if data_chunk > pos {
            if let Some(h) = file_hash.as_mut() {
                hash_zeros(h, data_chunk.min(size) - pos);
            }
            while pos < data_chunk {
                pieces.push(Piece::Sparse);
                pos += chunk;
            }
            continue;
        }
        let len = (size - pos).min(chunk);
        let mut h = Sha256::new();
        let mut done = 0u64;
        while done < len {
            let k = (len - done).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..k], pos + done, size)?;
            h.update(&buf[..k]);
            if let Some(fh) = file_hash.as_mut() {
                fh.update(&buf[..k]);
            }
            done += k as u64;
        }
        pieces.push(Piece::Data {
            sha: h.finalize().into(),
            len,
        });
        pos += len;
    }
    Ok(Scanned {
        bits,
        pieces,
        digest: file_hash.map(|h| h.finalize().into()),
    })
}
