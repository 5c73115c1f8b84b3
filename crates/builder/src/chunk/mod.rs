//! Chunk-based files (`--chunksize`), deduplicated as mkfs.erofs 1.9.4 does.
//!
//! Every regular file is cut into chunks of the asked size. Chunks are stored once
//! in a blob, in file order: a chunk equal (by SHA-256) to one stored before points
//! at it, a chunk of zeros is a hole, and sparse ranges of the source are holes
//! without being read. The blob goes after the image's other data, or on an extra
//! device (`--blobdev`), in which case the image holds only metadata and a device
//! table slot. Each file's map then uses the largest chunk size its placed chunks
//! allow (`merge`).
//!
//! All files are read (and hashed) on the workers before the layout, since where a
//! chunk goes depends on the chunks before it; the placement itself runs in inode
//! order on one thread, so the image does not depend on `--workers`. The data pass
//! (`copy`) then copies each stored chunk from the first file that has it.

mod copy;
mod merge;
pub(crate) mod scan;

use std::collections::HashMap;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::options::BuildOptions;
use crate::tree::{Kind, Tree};

pub(crate) use copy::copy_chunks;
pub(crate) use merge::ChunkAt;

/// A chunk-based file's map, before the blob's place is known.
#[derive(Debug)]
pub(crate) struct FileChunks {
    /// Chunk size shift over the block size.
    pub rel_bits: u32,
    /// One entry per chunk: a hole or a block of the blob.
    pub chunks: Vec<ChunkAt>,
}

/// One stored chunk: copied from `node` at byte `src` (`len` bytes) to blob block `blk`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copy {
    pub node: usize,
    pub src: u64,
    pub len: u64,
    pub blk: u64,
}

/// Every chunk-based file's map and what the blob holds.
#[derive(Debug, Default)]
pub(crate) struct ChunkPlan {
    /// By node; `None` for nodes that are not chunk-based files.
    pub files: Vec<Option<FileChunks>>,
    /// By node: file digests taken while reading.
    pub digests: Vec<Option<[u8; 32]>>,
    /// Chunks to store, in blob order.
    pub copies: Vec<Copy>,
    /// Blocks in the blob.
    pub blob_blocks: u64,
}

/// Reads the regular files of `tree` that `chunked(node)` picks and places their
/// chunks. `chunk_size` is `opts.chunk_size`, already validated.
pub(crate) fn plan(
    tree: &Tree,
    opts: &BuildOptions,
    chunk_size: u64,
    chunked: impl Fn(usize) -> bool + Sync,
) -> Result<ChunkPlan> {
    let bs_bits = opts.block_size.trailing_zeros();
    let max_bits = bs_bits + u32::from(ishare_erofs::format::CHUNK_FORMAT_BLKBITS_MASK);
    let bits = chunk_size.trailing_zeros();
    let digest = opts.fingerprint.is_some();
    let nodes: Vec<usize> = (0..tree.nodes.len())
        .filter(|&i| matches!(tree.nodes[i].kind, Kind::File) && tree.nodes[i].size > 0)
        .filter(|&i| chunked(i))
        .collect();
    let scanned: Vec<scan::Scanned> = nodes
        .par_iter()
        .map(|&i| scan::scan(tree, i, bits, bs_bits, max_bits, digest))
        .collect::<Result<_>>()?;

    // A chunk of zeros reads the same as a hole (mkfs.erofs seeds its table with it).
    let zero_sha: [u8; 32] = {
        let mut h = Sha256::new();
        let zeros = vec![0u8; chunk_size.min(1 << 20) as usize];
        let mut left = chunk_size;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            left -= k as u64;
        }
        h.finalize().into()
    };
    let bs = u64::from(opts.block_size);
    let mut plan = ChunkPlan {
        files: (0..tree.nodes.len()).map(|_| None).collect(),
        digests: vec![None; tree.nodes.len()],
        ..Default::default()
    };
    let mut stored: HashMap<[u8; 32], u64> = HashMap::new();
    let mut cursor = 0u64;
    for (&node, s) in nodes.iter().zip(scanned) {
        let size = tree.nodes[node].size;
        // `--dsunit`: a file's data starts on a stripe unit when that cannot split
        // a chunk (as mkfs.erofs: only for units up to the chunk size).
        if opts.dsunit > 1 && opts.dsunit <= 1 << (s.bits - bs_bits) {
            cursor = cursor.next_multiple_of(opts.dsunit);
        }
        let chunk = 1u64 << s.bits;
        let mut chunks = Vec::with_capacity(s.pieces.len());
        for (k, p) in s.pieces.iter().enumerate() {
            let placed = match *p {
                scan::Piece::Sparse => ChunkAt::Hole,
                scan::Piece::Data { sha, len } if opts.chunk_dedupe => {
                    if len == chunk && sha == zero_sha {
                        ChunkAt::Hole
                    } else if let Some(&blk) = stored.get(&sha) {
                        ChunkAt::At { blk, len }
                    } else {
                        stored.insert(sha, cursor);
                        store(&mut plan, &mut cursor, node, k as u64 * chunk, len, bs)
                    }
                }
                scan::Piece::Data { len, .. } => {
                    store(&mut plan, &mut cursor, node, k as u64 * chunk, len, bs)
                }
            };
            chunks.push(placed);
        }
        let to = merge::merged_bits(&chunks, size, s.bits, bs_bits, max_bits);
        if to != s.bits {
            chunks = merge::regroup(&chunks, size, s.bits, to);
        }
        plan.files[node] = Some(FileChunks {
            rel_bits: to - bs_bits,
            chunks,
        });
        plan.digests[node] = s.digest;
    }
    plan.blob_blocks = cursor;
    Ok(plan)
}

/// Appends a chunk to the blob (whole blocks: the last one is zero-padded).
fn store(
    plan: &mut ChunkPlan,
    cursor: &mut u64,
    node: usize,
    src: u64,
    len: u64,
    bs: u64,
) -> ChunkAt {
    let blk = *cursor;
    plan.copies.push(Copy {
        node,
        src,
        len,
        blk,
    });
    *cursor += len.div_ceil(bs);
    ChunkAt::At { blk, len }
}
