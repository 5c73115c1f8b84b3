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
//!
//! With fragments, the end of a file that fits one pcluster (or that compresses into
//! less than one) is not compressed here: it becomes the file's tail fragment, kept
//! in the spill file until the merge (`frag`) puts it in the packed inode.
//!
//! With all-fragments, files go whole into the packed inode; those whose end equals
//! the end of an earlier one's fragment are compressed up to a pcluster boundary
//! within the matched part and keep only the rest as their fragment (see
//! [`compress_all_fragments`]).
//!
//! With dedupe, files are compressed one after another in node order: before each
//! new extent, the data ahead is looked up among the starts of every extent written
//! so far (`dedupe`), and a match becomes an extent that reuses that pcluster.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::Compression;
use super::codec::Encoder;
use super::dedupe::{Dedupe, Item};
use crate::error::{Error, Result};
use crate::tree::Source;
use crate::tree::Tree;

/// Input compressed independently of the rest of its file.
pub(crate) const SEGMENT_SIZE: u64 = 16 << 20;
/// Largest input of one extent unless `--max-extent-bytes` says less (mkfs.erofs's
/// limit too): bounds the memory of each read, in the kernel and here.
const MAX_EXTENT: u64 = 4000 << 10;

/// Where an extent's pcluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The file's own next blocks; their encoded bytes are at byte `spill` of the
    /// spill file until copied. `hash` (xxh3 of those bytes) finds identical
    /// pclusters when fragments are on.
    Own { spill: u64, hash: u64 },
    /// Blocks written for another extent: `blk` blocks after the start of node
    /// `node`'s data blocks (deduplicated).
    Shared { node: usize, blk: u32 },
}

/// One extent of a compressed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZExtent {
    /// Byte offset in the file.
    pub lstart: u64,
    /// Decompressed length.
    pub len: u32,
    /// Encoded length in blocks.
    pub blocks: u32,
    /// Compressed with the file's algorithm; else stored uncompressed.
    pub compressed: bool,
    /// Only a prefix of the pcluster's decoded data belongs to this extent.
    pub partial: bool,
    pub at: At,
}

/// A last extent that may be stored inline after the inode (ztailpacking).
#[derive(Debug, Clone)]
pub(crate) struct InlineTail {
    pub len: u32,
    /// Encoded bytes (compressed) or the data itself (raw), under one block.
    pub data: Vec<u8>,
    pub compressed: bool,
}

/// The end of a file (or the whole file) stored in the packed inode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frag {
    /// Byte offset in the file; the fragment runs to its end.
    pub lstart: u64,
    pub len: u64,
    /// Where its bytes are until the merge: this offset of the spill file, or (for
    /// whole files) the source.
    pub spill: Option<u64>,
    /// Byte offset in the packed inode's data, set by the merge.
    pub offset: u64,
    /// It is the end of node `suffix_of`'s fragment (found before compressing).
    pub suffix_of: Option<usize>,
}

/// A file, compressed.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZFile {
    /// Extents with data blocks, in file order. When `inline` is set, the last
    /// `fallback` of them store the inline candidate's range in blocks instead.
    pub extents: Vec<ZExtent>,
    pub inline: Option<InlineTail>,
    pub fallback: usize,
    /// The tail fragment, after `extents`.
    pub frag: Option<Frag>,
    /// Some extent reuses another's pcluster or is partial: full indexes.
    pub dedupe: bool,
    /// SHA-256 of the content (fingerprints).
    pub digest: Option<[u8; 32]>,
    /// Index of its algorithm in the `-z` list.
    pub algorithm: usize,
}

impl ZFile {
    /// The extents the map lists: without the fallback ones when the tail is inline.
    pub(crate) fn used(&self, use_inline: bool) -> &[ZExtent] {
        let n = self.extents.len() - if use_inline { self.fallback } else { 0 };
        &self.extents[..n]
    }

    /// Blocks of the file's own extents (the ones it lists).
    pub(crate) fn blocks(&self, use_inline: bool) -> u64 {
        self.used(use_inline)
            .iter()
            .filter(|e| matches!(e.at, At::Own { .. }))
            .map(|e| u64::from(e.blocks))
            .sum()
    }
}

/// Whether keeping `z` compressed saves space: blocks, inline tail and the map must
/// take less than the data itself (mkfs.erofs's rule, with the full-index map size).
/// A file with a fragment is always kept (mkfs.erofs too).
pub(crate) fn worth_keeping(z: &ZFile, size: u64, bs: u64) -> bool {
    if z.frag.is_some() {
        return true;
    }
    let inline = z.inline.as_ref().map_or(0, |t| t.data.len() as u64);
    let cost = z.blocks(inline > 0) * bs + inline + super::index::full_size(size.div_ceil(bs));
    cost < size
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

    pub(crate) fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| Error::io(&self.path, "read a temporary file in", e))
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
    /// Ends of files become tail fragments (not for the packed inode itself).
    pub fragments: bool,
    /// Inline tails allowed (ztailpacking, and no fragments).
    pub tailpacking: bool,
    /// Uncompressed blocks stored rotated (`ADVISE_INTERLACED_PCLUSTER`).
    pub interlaced: bool,
    /// Hash each pcluster's encoded bytes (to find identical ones).
    pub pcluster_hashes: bool,
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
    /// Files (by index in the node list) ending with the same 64 bytes.
    Group {
        members: Vec<usize>,
    },
}

struct SegOut {
    extents: Vec<ZExtent>,
    inline: Option<InlineTail>,
    fallback: usize,
    frag: Option<Frag>,
    dedupe: bool,
    digest: Option<[u8; 32]>,
}

impl SegOut {
    fn digest(d: [u8; 32]) -> Self {
        SegOut {
            extents: Vec::new(),
            inline: None,
            fallback: 0,
            frag: None,
            dedupe: false,
            digest: Some(d),
        }
    }
}

fn work_list(pass: &Pass<'_>, nodes: &[(usize, u32, usize)]) -> Vec<Work> {
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
    work
}

/// Gathers the segments of each file, in `nodes` order.
fn assemble(nodes: &[(usize, u32, usize)], results: Vec<(usize, SegOut)>) -> Vec<ZFile> {
    let mut files = Vec::with_capacity(nodes.len());
    let mut it = results.into_iter().peekable();
    for &(node, _, alg) in nodes {
        let mut z = ZFile {
            algorithm: alg,
            ..ZFile::default()
        };
        while let Some((_, s)) = it.next_if(|(n, _)| *n == node) {
            z.extents.extend_from_slice(&s.extents);
            if s.inline.is_some() {
                z.inline = s.inline;
                z.fallback = s.fallback;
            }
            if s.frag.is_some() {
                z.frag = s.frag;
            }
            z.dedupe |= s.dedupe;
            if s.digest.is_some() {
                z.digest = s.digest;
            }
        }
        files.push(z);
    }
    files
}

/// Compresses the regular files `nodes` (node, pcluster size, algorithm index) on
/// all workers; returns their results in the same order.
///
/// With fragments, files whose last 64 bytes are the same are compressed one after
/// another in node order (different such groups in parallel), each after looking for
/// the longest end it shares with an earlier one's fragment, as mkfs.erofs does
/// (its workers serialize files by the same hash).
pub(crate) fn compress_all(pass: &Pass<'_>, nodes: &[(usize, u32, usize)]) -> Result<Vec<ZFile>> {
    let groups = if pass.fragments {
        end_groups(pass, nodes)?
    } else {
        Vec::new()
    };
    let mut grouped = vec![false; nodes.len()];
    for g in &groups {
        for &k in g {
            grouped[k] = true;
        }
    }
    let singles: Vec<(usize, u32, usize)> = nodes
        .iter()
        .zip(&grouped)
        .filter(|(_, g)| !**g)
        .map(|(n, _)| *n)
        .collect();
    let mut work = work_list(pass, &singles);
    work.extend(groups.into_iter().map(|members| Work::Group { members }));
    let pool = EncoderPool::new(pass.cfg);
    let with_encoder =
        |alg: usize, f: &mut dyn FnMut(&mut Encoder) -> Result<()>| pool.with(alg, f);
    let run = |w: Work| -> Result<Out> {
        match w {
            Work::Segment {
                node,
                seg,
                last,
                pcluster,
                alg,
            } => {
                let seg = Seg {
                    node,
                    seg,
                    last,
                    pcluster,
                    alg,
                    blk_base: 0,
                    matched: None,
                };
                let mut out = None;
                with_encoder(alg, &mut |enc| {
                    out = Some(segment(pass, enc, &seg, None)?);
                    Ok(())
                })?;
                Ok(Out::Seg(node, out.expect("compressed")))
            }
            Work::Hash { node } => Ok(Out::Seg(node, SegOut::digest(hash_file(pass, node)?))),
            Work::Group { members } => Ok(Out::Files(fragment_group(
                pass,
                nodes,
                &members,
                &with_encoder,
            )?)),
        }
    };
    // Largest work first: a 16 MiB segment takes a core for a good part of a second
    // with the slower algorithms, and one met last leaves the other cores idle.
    // (Results are put back in work order, so the image does not change.)
    let size = |node: usize| pass.tree.nodes[node].size;
    let cost = |w: &Work| match w {
        Work::Segment { node, seg, .. } => (size(*node) - seg * SEGMENT_SIZE).min(SEGMENT_SIZE),
        // Hashing is an order of magnitude faster than compressing.
        Work::Hash { node } => size(*node) / 16,
        Work::Group { members } => members.iter().map(|&k| size(nodes[k].0)).sum(),
    };
    let mut order: Vec<(u64, usize, Work)> = work
        .into_iter()
        .enumerate()
        .map(|(i, w)| (cost(&w), i, w))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut results: Vec<(usize, Out)> = order
        .into_par_iter()
        .with_max_len(1)
        .map(|(_, i, w)| Ok((i, run(w)?)))
        .collect::<Result<_>>()?;
    results.sort_unstable_by_key(|r| r.0);
    let mut segs = Vec::new();
    let mut files: Vec<Option<ZFile>> = vec![None; nodes.len()];
    for (_, r) in results {
        match r {
            Out::Seg(node, s) => segs.push((node, s)),
            Out::Files(v) => {
                for (k, z) in v {
                    files[k] = Some(z);
                }
            }
        }
    }
    let mut singles = assemble(&singles, segs).into_iter();
    Ok(files
        .into_iter()
        .map(|z| z.unwrap_or_else(|| singles.next().expect("one result per file")))
        .collect())
}

enum Out {
    Seg(usize, SegOut),
    /// Files of a group, by their index in the node list.
    Files(Vec<(usize, ZFile)>),
}

/// Compresses the files one after another, deduplicating against everything
/// written before; a file that does not gain is dropped (`None`) together with
/// what it added to the dedupe index. With fragments, each file's end is first
/// matched against earlier fragments ending the same way (as mkfs.erofs, which
/// compresses in one thread with dedupe).
pub(crate) fn compress_dedupe(
    pass: &Pass<'_>,
    nodes: &[(usize, u32, usize)],
) -> Result<Vec<Option<ZFile>>> {
    let bs = u64::from(pass.block_size);
    let max_pcluster = pass.cfg.max_pcluster();
    let mut encoders: Vec<Option<Encoder>> = Vec::new();
    encoders.resize_with(pass.cfg.algorithms.len(), || None);
    let mut dd = Dedupe::new(pass.block_size as usize);
    let mut cands: std::collections::HashMap<u64, Vec<Cand>> = Default::default();
    let mut out = Vec::with_capacity(nodes.len());
    for &(node, pcluster, alg) in nodes {
        let size = pass.tree.nodes[node].size;
        let mark = dd.mark();
        let tofh = if pass.fragments {
            end_hash(pass, node)?
        } else {
            None
        };
        let (matched, end) = match tofh.and_then(|h| cands.get(&h)) {
            Some(c) => {
                let (m, end) = match_end(pass, node, c)?;
                (m, Some(end))
            }
            None => ((0, 0), None),
        };
        let segs = size.div_ceil(SEGMENT_SIZE).max(1);
        let mut results = Vec::with_capacity(segs as usize + 1);
        let mut blk_base = 0u32;
        for seg in 0..segs {
            if encoders[alg].is_none() {
                encoders[alg] = Some(Encoder::new(&pass.cfg.algorithms[alg], max_pcluster)?);
            }
            let enc = encoders[alg].as_mut().expect("encoder");
            let last = seg + 1 == segs;
            let s = Seg {
                node,
                seg,
                last,
                pcluster,
                alg,
                blk_base,
                matched: (last && matched.0 > 0)
                    .then_some((matched.0.min(SEGMENT_SIZE) as usize, matched.1)),
            };
            let r = segment(pass, enc, &s, Some(&mut dd))?;
            for e in &r.extents {
                if matches!(e.at, At::Own { .. }) {
                    blk_base = blk_base.wrapping_add(e.blocks);
                }
            }
            results.push((node, r));
        }
        if segs > 1 && pass.hash {
            results.push((node, SegOut::digest(hash_file(pass, node)?)));
        }
        let z = assemble(&[(node, pcluster, alg)], results)
            .pop()
            .expect("one file");
        if worth_keeping(&z, size, bs) {
            if let Some(h) = tofh
                && let Some(c) = own_fragment(pass, node, &z, end)?
            {
                cands.entry(h).or_default().push(c);
            }
            out.push(Some(z));
        } else {
            dd.rollback(mark);
            out.push(None);
        }
    }
    Ok(out)
}

/// A file stored whole in the packed inode (`-E all-fragments`): only its digest is
/// computed here; the merge copies it.
pub(crate) fn whole_fragment(pass: &Pass<'_>, node: usize, alg: usize) -> Result<ZFile> {
    let size = pass.tree.nodes[node].size;
    let digest = if pass.hash {
        Some(hash_file(pass, node)?)
    } else {
        None
    };
    if let Some(p) = pass.progress {
        p.advance(size);
    }
    Ok(ZFile {
        frag: Some(Frag {
            lstart: 0,
            len: size,
            spill: None,
            offset: 0,
            suffix_of: None,
        }),
        digest,
        algorithm: alg,
        ..ZFile::default()
    })
}

/// `-E all-fragments`: every file goes whole into the packed inode, except that, as
/// in mkfs.erofs, a file whose end equals the end of an earlier one's fragment (the
/// longest such match) is compressed up to there and keeps only that end as its
/// fragment (or, if the match is the whole file, is that end). Files are grouped by
/// a hash of their last 64 bytes (only files in one group can match); groups are
/// processed in parallel, each in node order.
pub(crate) fn compress_all_fragments(
    pass: &Pass<'_>,
    nodes: &[(usize, u32, usize)],
) -> Result<Vec<ZFile>> {
    let groups = end_groups(pass, nodes)?;
    let mut grouped = vec![false; nodes.len()];
    let mut jobs: Vec<Vec<usize>> = Vec::new();
    for g in groups {
        for &k in &g {
            grouped[k] = true;
        }
        jobs.push(g);
    }
    jobs.extend((0..nodes.len()).filter(|&k| !grouped[k]).map(|k| vec![k]));
    let pool = EncoderPool::new(pass.cfg);
    let with_encoder =
        |alg: usize, f: &mut dyn FnMut(&mut Encoder) -> Result<()>| pool.with(alg, f);
    let results: Vec<Vec<(usize, ZFile)>> = jobs
        .into_par_iter()
        .map(|members| {
            if let [k] = members[..] {
                let (node, _, alg) = nodes[k];
                return Ok(vec![(k, whole_fragment(pass, node, alg)?)]);
            }
            fragment_group(pass, nodes, &members, &with_encoder)
        })
        .collect::<Result<_>>()?;
    let mut all: Vec<(usize, ZFile)> = results.into_iter().flatten().collect();
    all.sort_by_key(|(k, _)| *k);
    Ok(all.into_iter().map(|(_, z)| z).collect())
}

/// Bytes of a fragment's end kept to match later files against (mkfs.erofs's).
const MATCH_KEEP: u64 = 256 << 10;
/// Fragments match only when their last this many bytes are equal.
const TAIL_HASH_LEN: u64 = 64;

/// An earlier fragment a file may end like.
struct Cand {
    node: usize,
    /// Its last bytes (up to [`MATCH_KEEP`]).
    data: Vec<u8>,
    /// Where it is in its file.
    lstart: u64,
    len: u64,
}

/// xxh3 of a file's last 64 bytes (`None` for files no longer than that).
fn end_hash(pass: &Pass<'_>, node: usize) -> Result<Option<u64>> {
    let size = pass.tree.nodes[node].size;
    if size <= TAIL_HASH_LEN {
        return Ok(None);
    }
    let mut b = [0u8; TAIL_HASH_LEN as usize];
    Source::open(pass.tree, node)?.read_exact_at(&mut b, size - TAIL_HASH_LEN, size)?;
    Ok(Some(xxhash_rust::xxh3::xxh3_64(&b)))
}

/// The files (by index in `nodes`) that end with the same 64 bytes as another, in
/// groups in node order.
fn end_groups(pass: &Pass<'_>, nodes: &[(usize, u32, usize)]) -> Result<Vec<Vec<usize>>> {
    let tofh: Vec<Option<u64>> = nodes
        .par_iter()
        .map(|&(node, ..)| end_hash(pass, node))
        .collect::<Result<_>>()?;
    let mut groups: std::collections::HashMap<u64, Vec<usize>> = Default::default();
    for (k, h) in tofh.iter().enumerate() {
        if let Some(h) = h {
            groups.entry(*h).or_default().push(k);
        }
    }
    let mut out: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    out.sort_by_key(|g| g[0]);
    Ok(out)
}

/// The longest end of `node` that ends one of `cands` ((length, that node), 0 for
/// none), and the file's last bytes.
fn match_end(pass: &Pass<'_>, node: usize, cands: &[Cand]) -> Result<((u64, usize), Vec<u8>)> {
    let size = pass.tree.nodes[node].size;
    let keep = size.min(MATCH_KEEP);
    let mut end = vec![0u8; keep as usize];
    Source::open(pass.tree, node)?.read_exact_at(&mut end, size - keep, size)?;
    let mut best = (0u64, 0usize);
    for c in cands {
        let mut l = end
            .iter()
            .rev()
            .zip(c.data.iter().rev())
            .take_while(|(a, b)| a == b)
            .count() as u64;
        if l == keep.min(c.data.len() as u64) && l < size.min(c.len) {
            // All in memory matched: go on comparing the files themselves.
            l = longer_match(pass, (node, 0, size), (c.node, c.lstart, c.len), l)?;
        }
        if l > best.0 {
            best = (l, c.node);
        }
    }
    Ok((best, end))
}

/// The candidate that `z`'s own fragment (if any, and longer than 64 bytes) makes
/// for later files; `end` holds the file's last bytes when already read.
fn own_fragment(
    pass: &Pass<'_>,
    node: usize,
    z: &ZFile,
    end: Option<Vec<u8>>,
) -> Result<Option<Cand>> {
    let Some(f) = &z.frag else { return Ok(None) };
    if f.suffix_of.is_some() || f.len <= TAIL_HASH_LEN {
        return Ok(None);
    }
    let size = pass.tree.nodes[node].size;
    let n = f.len.min(MATCH_KEEP);
    let data = match end {
        Some(e) if e.len() as u64 >= n => e[e.len() - n as usize..].to_vec(),
        _ => {
            let mut d = vec![0u8; n as usize];
            Source::open(pass.tree, node)?.read_exact_at(&mut d, size - n, size)?;
            d
        }
    };
    Ok(Some(Cand {
        node,
        data,
        lstart: f.lstart,
        len: f.len,
    }))
}

/// One encoder per worker thread and algorithm, created on first use.
struct EncoderPool<'a> {
    cfg: &'a Compression,
    threads: usize,
    encoders: Vec<std::sync::Mutex<Option<Encoder>>>,
}

impl<'a> EncoderPool<'a> {
    fn new(cfg: &'a Compression) -> Self {
        let threads = rayon::current_num_threads();
        let mut encoders = Vec::new();
        encoders.resize_with((threads + 1) * cfg.algorithms.len(), || {
            std::sync::Mutex::new(None)
        });
        EncoderPool {
            cfg,
            threads,
            encoders,
        }
    }

    /// Runs `f` with this thread's encoder for algorithm `alg`.
    fn with(&self, alg: usize, f: &mut dyn FnMut(&mut Encoder) -> Result<()>) -> Result<()> {
        let thread = rayon::current_thread_index().unwrap_or(self.threads);
        let slot = thread * self.cfg.algorithms.len() + alg;
        let mut guard = self.encoders[slot].lock().expect("encoder lock");
        if guard.is_none() {
            *guard = Some(Encoder::new(
                &self.cfg.algorithms[alg],
                self.cfg.max_pcluster(),
            )?);
        }
        f(guard.as_mut().expect("encoder"))
    }
}

type WithEncoder<'e> =
    dyn Fn(usize, &mut dyn FnMut(&mut Encoder) -> Result<()>) -> Result<()> + Sync + 'e;

/// Compresses a group of files ending the same way, in node order, each after
/// matching its end against the earlier ones' fragments.
fn fragment_group(
    pass: &Pass<'_>,
    nodes: &[(usize, u32, usize)],
    members: &[usize],
    with_encoder: &WithEncoder<'_>,
) -> Result<Vec<(usize, ZFile)>> {
    let whole = pass.cfg.all_fragments;
    let mut out = Vec::with_capacity(members.len());
    let mut cands: Vec<Cand> = Vec::new();
    for &k in members {
        let (node, pcluster, alg) = nodes[k];
        let size = pass.tree.nodes[node].size;
        let ((m, mnode), end) = match_end(pass, node, &cands)?;
        if whole && m == 0 {
            out.push((k, whole_fragment(pass, node, alg)?));
            cands.push(Cand {
                node,
                data: end,
                lstart: 0,
                len: size,
            });
            continue;
        }
        if whole && m >= size {
            let mut z = whole_fragment(pass, node, alg)?;
            if let Some(f) = z.frag.as_mut() {
                f.suffix_of = Some(mnode);
            }
            out.push((k, z));
            continue;
        }
        let segs = size.div_ceil(SEGMENT_SIZE).max(1);
        let mut results = Vec::with_capacity(segs as usize + 1);
        for seg in 0..segs {
            let last = seg + 1 == segs;
            let s = Seg {
                node,
                seg,
                last,
                pcluster,
                alg,
                blk_base: 0,
                matched: (last && m > 0).then_some((m.min(SEGMENT_SIZE) as usize, mnode)),
            };
            with_encoder(alg, &mut |enc| {
                results.push((node, segment(pass, enc, &s, None)?));
                Ok(())
            })?;
        }
        if segs > 1 && pass.hash {
            results.push((node, SegOut::digest(hash_file(pass, node)?)));
        }
        let z = assemble(&[(node, pcluster, alg)], results)
            .pop()
            .expect("one file");
        if let Some(c) = own_fragment(pass, node, &z, Some(end))? {
            cands.push(c);
        }
        out.push((k, z));
    }
    Ok(out)
}

/// How far back from their ends `a` (node, fragment start, fragment length) and `b`
/// stay equal, given that their last `known` bytes are.
fn longer_match(
    pass: &Pass<'_>,
    a: (usize, u64, u64),
    b: (usize, u64, u64),
    known: u64,
) -> Result<u64> {
    const STEP: u64 = 64 << 10;
    let sa = Source::open(pass.tree, a.0)?;
    let sb = Source::open(pass.tree, b.0)?;
    let (size_a, size_b) = (pass.tree.nodes[a.0].size, pass.tree.nodes[b.0].size);
    let max = a.2.min(b.2);
    let mut l = known;
    let mut x = vec![0u8; STEP as usize];
    let mut y = vec![0u8; STEP as usize];
    while l < max {
        let n = (max - l).min(STEP) as usize;
        sa.read_exact_at(&mut x[..n], a.1 + a.2 - l - n as u64, size_a)?;
        sb.read_exact_at(&mut y[..n], b.1 + b.2 - l - n as u64, size_b)?;
        let same = x[..n]
            .iter()
            .rev()
            .zip(y[..n].iter().rev())
            .take_while(|(p, q)| p == q)
            .count();
        l += same as u64;
        if same < n {
            break;
        }
    }
    Ok(l)
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

/// One segment to compress.
struct Seg {
    node: usize,
    seg: u64,
    last: bool,
    pcluster: u32,
    alg: usize,
    /// Own blocks of the file's earlier segments (dedupe index addresses).
    blk_base: u32,
    /// Last segment: its last `matched.0` bytes end node `matched.1`'s fragment.
    matched: Option<(usize, usize)>,
}

/// Output of a segment being built: encoded blocks and the extents over them.
struct Builder {
    out: Vec<u8>,
    extents: Vec<ZExtent>,
    bs: usize,
    interlaced: bool,
    hashes: bool,
}

impl Builder {
    fn own(&self, hash_from: usize) -> At {
        let hash = if self.hashes {
            xxhash_rust::xxh3::xxh3_64(&self.out[hash_from..])
        } else {
            0
        };
        // Relative to the segment's output until it is spilled.
        At::Own {
            spill: hash_from as u64,
            hash,
        }
    }

    /// Appends an uncompressed extent of `data` (at most a block) in one block;
    /// interlaced, the data starts at its offset in the lcluster and wraps around.
    fn raw(&mut self, data: &[u8], lstart: u64) {
        let bs = self.bs;
        debug_assert!(data.len() <= bs && !data.is_empty());
        let at = self.out.len();
        self.out.resize(at + bs, 0);
        let shift = if self.interlaced {
            (lstart % bs as u64) as usize
        } else {
            0
        };
        let right = (bs - shift).min(data.len());
        self.out[at + shift..at + shift + right].copy_from_slice(&data[..right]);
        self.out[at..at + data.len() - right].copy_from_slice(&data[right..]);
        let a = self.own(at);
        self.extents.push(ZExtent {
            lstart,
            len: data.len() as u32,
            blocks: 1,
            compressed: false,
            partial: false,
            at: a,
        });
    }

    /// Appends a compressed extent: its encoding end-aligned in whole blocks behind
    /// zero padding (`ZERO_PADDING`), where the kernel looks for it.
    fn compressed(&mut self, enc: &[u8], lstart: u64, used: usize) {
        let bs = self.bs;
        let at = self.out.len();
        let plen = enc.len().next_multiple_of(bs);
        self.out.resize(at + plen - enc.len(), 0);
        self.out.extend_from_slice(enc);
        let a = self.own(at);
        self.extents.push(ZExtent {
            lstart,
            len: used as u32,
            blocks: (plen / bs) as u32,
            compressed: true,
            partial: false,
            at: a,
        });
    }
}

/// Compresses segment `s.seg` of file `s.node`, deduplicating with `dd` if given.
fn segment(
    pass: &Pass<'_>,
    enc: &mut Encoder,
    s: &Seg,
    mut dd: Option<&mut Dedupe>,
) -> Result<SegOut> {
    let size = pass.tree.nodes[s.node].size;
    let start = s.seg * SEGMENT_SIZE;
    let len = (size - start).min(SEGMENT_SIZE) as usize;
    let src = Source::open(pass.tree, s.node)?;
    let mut input = vec![0u8; len];
    src.read_exact_at(&mut input, start, size)?;
    drop(src);
    let digest = (s.last && s.seg == 0 && pass.hash).then(|| Sha256::digest(&input).into());

    let bs = pass.block_size as usize;
    let pcluster = s.pcluster as usize;
    let max_extent = pass
        .cfg
        .max_extent_bytes
        .unwrap_or(MAX_EXTENT)
        .min(MAX_EXTENT) as usize;
    let frag = pass.fragments && s.last;
    let tailpack = pass.tailpacking && s.last;
    let mut b = Builder {
        out: Vec::with_capacity(len / 2),
        extents: Vec::new(),
        bs,
        interlaced: pass.interlaced,
        hashes: pass.pcluster_hashes,
    };
    let mut dst = vec![0u8; pcluster];
    let mut inline = None;
    let mut fallback = 0;
    let mut tail = None;
    let mut deduped = false;
    // Own blocks so far (dedupe index addresses).
    let mut own_blocks = s.blk_base;
    // With a matched end (mkfs.erofs's deduplicated fragment), the data before it is
    // compressed first; its last piece is then compressed together with the matched
    // bytes into a pcluster sized to it, until what is left lies within the match
    // (it becomes the end of that fragment) or fits a pcluster (a new fragment).
    let (matched, matched_node) = s.matched.filter(|_| frag).unwrap_or((0, 0));
    let mut fixing = false;
    let mut limit = len - matched.min(len);
    let mut pc = pcluster;
    let mut shared = false;
    let mut head = 0usize;
    while head < len {
        if head >= limit {
            // The data before the match ended on a pcluster boundary.
            tail = Some(head);
            shared = true;
            break;
        }
        if let Some(dd) = dd.as_deref_mut() {
            head = dedupe_at(
                pass,
                dd,
                s.alg,
                &input[..limit],
                head,
                start,
                &mut b.extents,
                &mut deduped,
            )?;
            if head >= limit {
                continue;
            }
        }
        let rem = limit - head;
        let lstart = start + head as u64;
        if frag && rem <= pc {
            if matched > 0 && !fixing {
                (pc, fixing, limit) = (rem.next_multiple_of(bs), true, len);
                continue;
            }
            tail = Some(head);
            break;
        }
        // Under a block and no ztailpacking: compressing cannot save a block.
        if rem <= bs && !tailpack {
            b.raw(&input[head..limit], lstart);
            break;
        }
        let take = rem.min(max_extent);
        let (mut used, mut n) = enc.dest_size(&input[head..head + take], &mut dst[..pc])?;
        if tailpack && used == rem && n > bs && n % bs != 0 && n.next_multiple_of(bs) < used {
            // The last extent ends in a partly filled block: if a block less holds
            // most of it and the rest is smaller than what that saves, the rest can
            // go inline (mkfs.erofs's recompression of the trailing extent).
            let first = dst[..n].to_vec();
            let (u2, n2) = enc.dest_size(&input[head..head + take], &mut dst[..n / bs * bs])?;
            if u2 > 0 && n2 > 0 && n2 + (used - u2) < n.next_multiple_of(bs) {
                (used, n) = (u2, n2);
            } else {
                dst[..n].copy_from_slice(&first);
            }
        }
        if frag && used == rem && n < pc {
            if matched > 0 && !fixing && n % bs != 0 {
                (pc, fixing, limit) = (n.next_multiple_of(bs), true, len);
                continue;
            }
            if matched == 0 || fixing {
                // The rest compresses into less than a pcluster: a fragment.
                tail = Some(head);
                break;
            }
        }
        let is_tail = tailpack && used == rem;
        if is_tail && n < bs && n < used {
            // Inline candidate, compressed; its block form if it does not fit.
            inline = Some(InlineTail {
                len: used as u32,
                data: dst[..n].to_vec(),
                compressed: true,
            });
            let before = b.extents.len();
            if used > bs {
                b.compressed(&dst[..n], lstart, used);
            } else {
                b.raw(&input[head..], lstart);
            }
            fallback = b.extents.len() - before;
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
                b.raw(&input[head..], lstart);
                fallback = 1;
                break;
            }
            // As many blocks as the attempt covered (up to a pcluster), so data
            // that does not compress is not tried again block by block; one with
            // dedupe, which looks for a match before every block, or while fitting
            // the data before a matched end.
            let nblk = if dd.is_some() || fixing {
                1
            } else {
                (used.min(pc).min(rem) / bs).max(1)
            };
            for _ in 0..nblk {
                let k = (limit - head).min(bs);
                if k == 0 {
                    break;
                }
                let l = start + head as u64;
                b.raw(&input[head..head + k], l);
                if let Some(dd) = dd.as_deref_mut() {
                    index(
                        dd,
                        s,
                        &input[head..head + k],
                        l,
                        b.extents.last(),
                        own_blocks,
                    );
                }
                own_blocks = own_blocks.wrapping_add(1);
                head += k;
            }
        } else {
            b.compressed(&dst[..n], lstart, used);
            if let Some(dd) = dd.as_deref_mut() {
                index(
                    dd,
                    s,
                    &input[head..head + used],
                    lstart,
                    b.extents.last(),
                    own_blocks,
                );
            }
            own_blocks = own_blocks.wrapping_add(b.extents.last().map_or(0, |e| e.blocks));
            head += used;
        }
        if fixing {
            let left = len - head;
            if left <= matched {
                tail = Some(head);
                shared = true;
                break;
            }
            pc = pcluster.min((left - matched).next_multiple_of(bs));
        }
    }
    if let Some(p) = pass.progress {
        p.advance(len as u64);
    }
    let frag = match tail {
        Some(h) if shared => Some(Frag {
            lstart: start + h as u64,
            len: (len - h) as u64,
            spill: None,
            offset: 0,
            suffix_of: Some(matched_node),
        }),
        Some(h) => Some(Frag {
            lstart: start + h as u64,
            len: (len - h) as u64,
            spill: Some(pass.spill.put(&input[h..])?),
            offset: 0,
            suffix_of: None,
        }),
        None => None,
    };
    let mut extents = b.extents;
    if !b.out.is_empty() {
        let base = pass.spill.put(&b.out)?;
        for e in &mut extents {
            if let At::Own { spill, .. } = &mut e.at {
                *spill += base;
            }
        }
    }
    Ok(SegOut {
        extents,
        inline,
        fallback,
        frag,
        dedupe: deduped,
        digest,
    })
}

/// Records a new extent (just written at `lstart`, over `data`) in the dedupe index.
fn index(dd: &mut Dedupe, s: &Seg, data: &[u8], lstart: u64, e: Option<&ZExtent>, blk: u32) {
    if let Some(e) = e {
        dd.insert(
            data,
            Item {
                node: s.node,
                lstart,
                len: e.len,
                blocks: e.blocks,
                compressed: e.compressed,
                alg: s.alg,
                blk,
            },
        );
    }
}

/// Replaces the data at `head` with extents reusing earlier pclusters, as long as
/// matches are found (mkfs.erofs's rules: a match may start inside the previous
/// extent, which then keeps only its first part, but at least a block of it; a
/// big pcluster must be referenced across two lclusters, where its block count is
/// stored). Returns the new head.
#[allow(clippy::too_many_arguments)]
fn dedupe_at(
    pass: &Pass<'_>,
    dd: &mut Dedupe,
    alg: usize,
    input: &[u8],
    mut head: usize,
    start: u64,
    extents: &mut Vec<ZExtent>,
    deduped: &mut bool,
) -> Result<usize> {
    let bs = pass.block_size as usize;
    let bs64 = bs as u64;
    loop {
        let prev_len = extents.last().map_or(0, |e| e.len as usize);
        let back = if prev_len <= bs {
            0
        } else {
            head.min(prev_len - bs)
        };
        let Some(m) = dd.find(pass.tree, alg, input, head - back, head)? else {
            return Ok(head);
        };
        let delta = head - m.cur;
        let lstart = start + m.cur as u64;
        if m.item.blocks > 1 && lstart % bs64 + (m.len as u64) < 2 * bs64 {
            return Ok(head);
        }
        if delta > 0 {
            let p = extents
                .last_mut()
                .expect("a match before head needs a previous extent");
            let kept = u64::from(p.len) - delta as u64;
            if p.blocks > 1 && p.lstart % bs64 + kept < 2 * bs64 {
                return Ok(head);
            }
            p.len = kept as u32;
            p.partial = p.compressed;
        }
        extents.push(ZExtent {
            lstart,
            len: m.len as u32,
            blocks: m.item.blocks,
            compressed: m.item.compressed,
            partial: m.item.compressed && m.len < m.item.len as usize,
            at: At::Shared {
                node: m.item.node,
                blk: m.item.blk,
            },
        });
        *deduped = true;
        head = m.cur + m.len;
        if head >= input.len() {
            return Ok(head);
        }
    }
}
