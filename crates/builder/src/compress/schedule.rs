//! Scheduling the compression of regular files on the workers: which files are
//! compressed independently (segment by segment, in parallel, largest work first),
//! which must go one after another, and putting each file's results back together.
//!
//! - By default every segment of every file is its own work item.
//! - With fragments, files whose last 64 bytes are the same are compressed one after
//!   another in node order (different such groups in parallel), each after looking
//!   for the longest end it shares with an earlier one's fragment (`tail`), as
//!   mkfs.erofs does (its workers serialize files by the same hash).
//! - With all-fragments, files go whole into the packed inode; those whose end
//!   equals the end of an earlier one's fragment are compressed up to a pcluster
//!   boundary within the matched part and keep only the rest as their fragment
//!   (see [`compress_all_fragments`]).
//! - With dedupe, files are compressed one after another in node order: before each
//!   new extent, the data ahead is looked up among the starts of every extent
//!   written so far (`dedupe`), and a match becomes an extent that reuses that
//!   pcluster.
//!
//! Results are put back in node order, so the image does not depend on the order
//! in which the work ran.

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::dedupe::Dedupe;
use super::extent::{At, Frag, ZFile, worth_keeping};
use super::pass::Pass;
use super::pool::EncoderPool;
use super::segment::{SEGMENT_SIZE, Seg, segment};
use super::tail::{Cand, end_groups, end_hash, match_end, own_fragment};
use crate::error::Result;
use crate::tree::Source;

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
fn assemble(nodes: &[(usize, u32, usize)], results: Vec<(usize, ZFile)>) -> Vec<ZFile> {
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
            z.unaligned |= s.unaligned;
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
                let out = pool.with(alg, |enc| segment(pass, enc, &seg, None))?;
                Ok(Out::Seg(node, out))
            }
            Work::Hash { node } => Ok(Out::Seg(node, ZFile::digest(hash_file(pass, node)?))),
            Work::Group { members } => {
                Ok(Out::Files(fragment_group(pass, nodes, &members, &pool)?))
            }
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
    Seg(usize, ZFile),
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
    let pool = EncoderPool::new(pass.cfg);
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
                let ((m, mnode), end) = match_end(pass, node, c)?;
                ((pass.cfg.fragdedupe.keep(m, size), mnode), Some(end))
            }
            None => ((0, 0), None),
        };
        let z = compress_file(pass, (node, pcluster, alg), matched, |s| {
            pool.with(alg, |enc| segment(pass, enc, s, Some(&mut dd)))
        })?;
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
    let results: Vec<Vec<(usize, ZFile)>> = jobs
        .into_par_iter()
        .map(|members| {
            if let [k] = members[..] {
                let (node, _, alg) = nodes[k];
                return Ok(vec![(k, whole_fragment(pass, node, alg)?)]);
            }
            fragment_group(pass, nodes, &members, &pool)
        })
        .collect::<Result<_>>()?;
    let mut all: Vec<(usize, ZFile)> = results.into_iter().flatten().collect();
    all.sort_by_key(|(k, _)| *k);
    Ok(all.into_iter().map(|(_, z)| z).collect())
}

/// Compresses a group of files ending the same way, in node order, each after
/// matching its end against the earlier ones' fragments.
fn fragment_group(
    pass: &Pass<'_>,
    nodes: &[(usize, u32, usize)],
    members: &[usize],
    pool: &EncoderPool<'_>,
) -> Result<Vec<(usize, ZFile)>> {
    let whole = pass.cfg.all_fragments;
    let mut out = Vec::with_capacity(members.len());
    let mut cands: Vec<Cand> = Vec::new();
    for &k in members {
        let (node, pcluster, alg) = nodes[k];
        let size = pass.tree.nodes[node].size;
        let ((m, mnode), end) = match_end(pass, node, &cands)?;
        let m = pass.cfg.fragdedupe.keep(m, size);
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
        let z = compress_file(pass, (node, pcluster, alg), (m, mnode), |s| {
            pool.with(alg, |enc| segment(pass, enc, s, None))
        })?;
        if let Some(c) = own_fragment(pass, node, &z, Some(end))? {
            cands.push(c);
        }
        out.push((k, z));
    }
    Ok(out)
}

/// Compresses file `node` (with its pcluster size and algorithm) one segment after
/// another with `compress`, then hashes it whole if it has more than one segment;
/// its last `matched.0` bytes end node `matched.1`'s fragment (0: none).
fn compress_file(
    pass: &Pass<'_>,
    (node, pcluster, alg): (usize, u32, usize),
    matched: (u64, usize),
    mut compress: impl FnMut(&Seg) -> Result<ZFile>,
) -> Result<ZFile> {
    let size = pass.tree.nodes[node].size;
    let segs = size.div_ceil(SEGMENT_SIZE).max(1);
    let mut results = Vec::with_capacity(segs as usize + 1);
    // Own blocks of the earlier segments: the dedupe index addresses blocks from
    // the start of the file's data.
    let mut blk_base = 0u32;
    for seg in 0..segs {
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
        let r = compress(&s)?;
        for e in &r.extents {
            if matches!(e.at, At::Own { .. }) {
                blk_base = blk_base.wrapping_add(e.blocks);
            }
        }
        results.push((node, r));
    }
    if segs > 1 && pass.hash {
        results.push((node, ZFile::digest(hash_file(pass, node)?)));
    }
    Ok(assemble(&[(node, pcluster, alg)], results)
        .pop()
        .expect("one file"))
}

/// SHA-256 of a file's content, read in 1 MiB pieces.
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
