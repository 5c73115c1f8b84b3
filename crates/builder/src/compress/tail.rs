//! Tail matching for fragments: files whose ends are the same (found by an xxh3 of
//! their last 64 bytes, then compared byte by byte, first the last bytes kept in
//! memory and then the files themselves) share one tail fragment, as in
//! mkfs.erofs; the earlier file's fragment holds the later one's end.

use rayon::prelude::*;

use super::extent::ZFile;
use super::pass::Pass;
use crate::error::Result;
use crate::tree::Source;

/// Bytes of a fragment's end kept to match later files against (mkfs.erofs's).
const MATCH_KEEP: u64 = 256 << 10;
/// Fragments match only when their last this many bytes are equal.
const TAIL_HASH_LEN: u64 = 64;

/// An earlier fragment a file may end like.
pub(crate) struct Cand {
    pub node: usize,
    /// Its last bytes (up to [`MATCH_KEEP`]).
    pub data: Vec<u8>,
    /// Where it is in its file.
    pub lstart: u64,
    pub len: u64,
}

/// xxh3 of a file's last 64 bytes (`None` for files no longer than that).
pub(crate) fn end_hash(pass: &Pass<'_>, node: usize) -> Result<Option<u64>> {
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
pub(crate) fn end_groups(
    pass: &Pass<'_>,
    nodes: &[(usize, u32, usize)],
) -> Result<Vec<Vec<usize>>> {
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
pub(crate) fn match_end(
    pass: &Pass<'_>,
    node: usize,
    cands: &[Cand],
) -> Result<((u64, usize), Vec<u8>)> {
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
pub(crate) fn own_fragment(
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
