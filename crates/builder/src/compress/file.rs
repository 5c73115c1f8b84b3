//! Compressing regular files into pclusters, on all workers.
//!
//! Each file is cut into segments of [`SEGMENT_SIZE`] (as mkfs.erofs does, so a large
//! file uses every core); each segment is compressed on its own into extents of
//! whole pclusters. Encoded blocks go to a spill file until the layout knows where
//! the file's data lives in the image; the extents stay in memory. The result of a
//! segment depends only on its bytes, so the image is the same for any number of
//! workers.
//!
//! An extent is compressed when that saves at least one block (its pcluster, rounded
//! to blocks, is smaller than its input); otherwise the input is stored as one
//! uncompressed block at a time. With ztailpacking, the last extent of a file is also
//! prepared for storage inline after the inode (compressed if that is smaller than its
//! input, else raw when under a block); the layout decides whether it fits there.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::Compression;
use super::codec::Encoder;
use crate::data::Source;
use crate::error::{Error, Result};
use crate::scan::Tree;

/// Input compressed independently of the rest of its file.
pub(crate) const SEGMENT_SIZE: u64 = 16 << 20;
/// Largest input of one extent unless `--max-extent-bytes` says less (mkfs.erofs's
/// limit too): bounds the memory of each read, in the kernel and here.
const MAX_EXTENT: u64 = 4000 << 10;

/// One extent of a compressed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZExtent {
    /// Byte offset in the file.
    pub lstart: u64,
    /// Decompressed length.
    pub len: u32,
    /// Encoded length in blocks.
    pub blocks: u32,
    /// Compressed with the first (HEAD1) algorithm; else stored uncompressed.
    pub compressed: bool,
}

/// A last extent that may be stored inline after the inode (ztailpacking).
#[derive(Debug, Clone)]
pub(crate) struct InlineTail {
    pub len: u32,
    /// Encoded bytes (compressed) or the data itself (raw), under one block.
    pub data: Vec<u8>,
    pub compressed: bool,
}

/// A file, compressed.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZFile {
    /// Extents with data blocks, in file order. When `inline` is set, the last
    /// `fallback` of them store the inline candidate's range in blocks instead.
    pub extents: Vec<ZExtent>,
    /// Where the encoded blocks of `extents` are in the spill file, in order.
    pub pieces: Vec<(u64, u64)>,
    pub inline: Option<InlineTail>,
    pub fallback: usize,
    /// SHA-256 of the content (fingerprints).
    pub digest: Option<[u8; 32]>,
    /// Index of its algorithm in the `-z` list.
    pub algorithm: usize,
}

impl ZFile {
    /// Blocks of the extents, without the fallback ones when the tail is inline.
    pub(crate) fn blocks(&self, use_inline: bool) -> u64 {
        let n = self.extents.len() - if use_inline { self.fallback } else { 0 };
        self.extents[..n].iter().map(|e| u64::from(e.blocks)).sum()
    }
}

/// The unnamed temporary file that holds encoded blocks until the layout is known.
pub(crate) struct Spill {
    pub file: File,
    path: std::path::PathBuf,
    end: AtomicU64,
}

impl Spill {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir)
            .map_err(|e| Error::io(dir, "create a temporary file in", e))?;
        Ok(Self {
            file,
            path: dir.to_path_buf(),
            end: AtomicU64::new(0),
        })
    }

    fn put(&self, data: &[u8]) -> Result<u64> {
        let off = self.end.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.file
            .write_all_at(data, off)
            .map_err(|e| Error::io(&self.path, "write a temporary file in", e))?;
        Ok(off)
    }
}

/// What the compression pass needs.
pub(crate) struct Pass<'a> {
    pub tree: &'a Tree,
    pub cfg: &'a Compression,
    pub block_size: u32,
    pub hash: bool,
    pub spill: &'a Spill,
    pub progress: Option<&'a dyn crate::options::Progress>,
}

enum Work {
    Segment {
        node: usize,
        seg: u64,
        last: bool,
        pcluster: u32,
        alg: usize,
    },
    Hash {
        node: usize,
    },
}

struct SegOut {
    extents: Vec<ZExtent>,
    piece: (u64, u64),
    inline: Option<InlineTail>,
    fallback: usize,
    digest: Option<[u8; 32]>,
}

/// Compresses the regular files `nodes` (node, pcluster size, algorithm index);
/// returns their results in the same order.
pub(crate) fn compress_all(pass: &Pass<'_>, nodes: &[(usize, u32, usize)]) -> Result<Vec<ZFile>> {
    let mut work = Vec::new();
    for &(node, pcluster, alg) in nodes {
        let size = pass.tree.nodes[node].size;
        let segs = size.div_ceil(SEGMENT_SIZE).max(1);
        for seg in 0..segs {
            work.push(Work::Segment {
                node,
                seg,
                last: seg + 1 == segs,
                pcluster,
                alg,
            });
        }
        if segs > 1 && pass.hash {
            work.push(Work::Hash { node });
        }
    }
    let threads = rayon::current_num_threads();
    let nalg = pass.cfg.algorithms.len();
    // One encoder per worker thread and algorithm, created on first use.
    let mut encoders: Vec<std::sync::Mutex<Option<Encoder>>> = Vec::new();
    encoders.resize_with((threads + 1) * nalg, || std::sync::Mutex::new(None));
    let max_pcluster = pass.cfg.max_pcluster();
    // Largest work first: a 16 MiB segment takes a core for a good part of a second
    // with the slower algorithms, and one met last leaves the other cores idle.
    // (Results are put back in work order below, so the image does not change.)
    let cost = |w: &Work| match *w {
        Work::Segment { node, seg, .. } => {
            (pass.tree.nodes[node].size - seg * SEGMENT_SIZE).min(SEGMENT_SIZE)
        }
        // Hashing is an order of magnitude faster than compressing.
        Work::Hash { node } => pass.tree.nodes[node].size / 16,
    };
    let mut order: Vec<(u64, usize, Work)> = work
        .into_iter()
        .enumerate()
        .map(|(i, w)| (cost(&w), i, w))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let done: Vec<(usize, (usize, SegOut))> = order
        .into_par_iter()
        .with_max_len(1)
        .map(|(_, i, w)| match w {
            Work::Segment {
                node,
                seg,
                last,
                pcluster,
                alg,
            } => {
                let slot = rayon::current_thread_index().unwrap_or(threads) * nalg + alg;
                let mut guard = encoders[slot].lock().expect("encoder lock");
                if guard.is_none() {
                    *guard = Some(Encoder::new(&pass.cfg.algorithms[alg], max_pcluster)?);
                }
                let enc = guard.as_mut().expect("encoder");
                let out = segment(pass, enc, node, seg, last, pcluster)?;
                Ok((i, (node, out)))
            }
            Work::Hash { node } => Ok((
                i,
                (
                    node,
                    SegOut {
                        extents: Vec::new(),
                        piece: (0, 0),
                        inline: None,
                        fallback: 0,
                        digest: Some(hash_file(pass, node)?),
                    },
                ),
            )),
        })
        .collect::<Result<_>>()?;
    let mut results: Vec<Option<(usize, SegOut)>> = Vec::new();
    results.resize_with(done.len(), || None);
    for (i, r) in done {
        results[i] = Some(r);
    }
    let results = results
        .into_iter()
        .map(|r| r.expect("every work item done"));

    let mut files = Vec::with_capacity(nodes.len());
    let mut it = results.into_iter().peekable();
    for &(node, _, alg) in nodes {
        let mut z = ZFile {
            algorithm: alg,
            ..ZFile::default()
        };
        while let Some((_, s)) = it.next_if(|(n, _)| *n == node) {
            z.extents.extend_from_slice(&s.extents);
            if s.piece.1 > 0 {
                z.pieces.push(s.piece);
            }
            if s.inline.is_some() {
                z.inline = s.inline;
                z.fallback = s.fallback;
            }
            if s.digest.is_some() {
                z.digest = s.digest;
            }
        }
        files.push(z);
    }
    Ok(files)
}

fn hash_file(pass: &Pass<'_>, node: usize) -> Result<[u8; 32]> {
    let size = pass.tree.nodes[node].size;
    let src = Source::open(pass.tree, node)?;
    let mut buf = vec![0u8; (1 << 20).min(size as usize)];
    let mut h = Sha256::new();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], pos, size)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

/// Compresses segment `seg` of file `node`.
fn segment(
    pass: &Pass<'_>,
    enc: &mut Encoder,
    node: usize,
    seg: u64,
    last: bool,
    pcluster: u32,
) -> Result<SegOut> {
    let size = pass.tree.nodes[node].size;
    let start = seg * SEGMENT_SIZE;
    let len = (size - start).min(SEGMENT_SIZE) as usize;
    let src = Source::open(pass.tree, node)?;
    let mut input = vec![0u8; len];
    src.read_exact_at(&mut input, start, size)?;
    let digest = (last && seg == 0 && pass.hash).then(|| Sha256::digest(&input).into());

    let bs = pass.block_size as usize;
    let pcluster = pcluster as usize;
    let max_extent = pass
        .cfg
        .max_extent_bytes
        .unwrap_or(MAX_EXTENT)
        .min(MAX_EXTENT) as usize;
    let tailpack = pass.cfg.ztailpacking && last;
    let mut out: Vec<u8> = Vec::with_capacity(len / 2);
    let mut dst = vec![0u8; pcluster];
    let mut extents = Vec::new();
    let mut inline = None;
    let mut fallback = 0;
    let mut head = 0usize;
    while head < len {
        let rem = len - head;
        let lstart = start + head as u64;
        // Under a block and no ztailpacking: compressing cannot save a block.
        if rem <= bs && !tailpack {
            raw(&mut out, &mut extents, &input[head..], lstart, bs);
            break;
        }
        let take = rem.min(max_extent);
        let (used, n) = enc.dest_size(&input[head..head + take], &mut dst)?;
        let is_tail = tailpack && used == rem;
        if is_tail && n < bs && n < used {
            // Inline candidate, compressed; its block form if it does not fit.
            inline = Some(InlineTail {
                len: used as u32,
                data: dst[..n].to_vec(),
                compressed: true,
            });
            let before = extents.len();
            if used > bs {
                put_compressed(&mut out, &mut extents, &dst[..n], lstart, used, bs);
            } else {
                raw(&mut out, &mut extents, &input[head..], lstart, bs);
            }
            fallback = extents.len() - before;
            break;
        }
        if used == 0 || n.next_multiple_of(bs) >= used {
            // No block saved: store uncompressed, one block at a time.
            if tailpack && rem < bs {
                inline = Some(InlineTail {
                    len: rem as u32,
                    data: input[head..].to_vec(),
                    compressed: false,
                });
                raw(&mut out, &mut extents, &input[head..], lstart, bs);
                fallback = 1;
                break;
            }
            // As many blocks as the attempt covered (up to a pcluster), so data
            // that does not compress is not tried again block by block.
            let nblk = (used.min(pcluster).min(rem) / bs).max(1);
            for _ in 0..nblk {
                let k = (len - head).min(bs);
                if k == 0 {
                    break;
                }
                let l = start + head as u64;
                raw(&mut out, &mut extents, &input[head..head + k], l, bs);
                head += k;
            }
            continue;
        }
        put_compressed(&mut out, &mut extents, &dst[..n], lstart, used, bs);
        head += used;
    }
    if let Some(p) = pass.progress {
        p.advance(len as u64);
    }
    let piece = if out.is_empty() {
        (0, 0)
    } else {
        (pass.spill.put(&out)?, out.len() as u64)
    };
    Ok(SegOut {
        extents,
        piece,
        inline,
        fallback,
        digest,
    })
}

/// Appends an uncompressed extent of `data` (at most a block) in one block.
fn raw(out: &mut Vec<u8>, extents: &mut Vec<ZExtent>, data: &[u8], lstart: u64, bs: usize) {
    debug_assert!(data.len() <= bs && !data.is_empty());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(bs), 0);
    extents.push(ZExtent {
        lstart,
        len: data.len() as u32,
        blocks: 1,
        compressed: false,
    });
}

/// Appends a compressed extent: its encoding end-aligned in whole blocks behind
/// zero padding (`ZERO_PADDING`), where the kernel looks for it.
fn put_compressed(
    out: &mut Vec<u8>,
    extents: &mut Vec<ZExtent>,
    enc: &[u8],
    lstart: u64,
    used: usize,
    bs: usize,
) {
    let plen = enc.len().next_multiple_of(bs);
    out.resize(out.len() + plen - enc.len(), 0);
    out.extend_from_slice(enc);
    extents.push(ZExtent {
        lstart,
        len: used as u32,
        blocks: (plen / bs) as u32,
        compressed: true,
    });
}
