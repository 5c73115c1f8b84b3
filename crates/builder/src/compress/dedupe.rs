//! The index of `-E dedupe`: the first block of data of every extent written so far,
//! found again anywhere in new data with a rolling hash.
//!
//! As in mkfs.erofs, the window is one block. Before a new extent is compressed,
//! positions from the current one back into the previous extent are tried, nearest
//! first; a window whose hash, then xxh3, then bytes equal an indexed extent's start
//! is extended as far as the data stays equal (up to that extent's length). The
//! match is kept if it reaches past the current position. Indexed data is read back
//! from the source, so the index holds no file data.

use std::collections::HashMap;

use crate::error::Result;
use crate::tree::Source;
use crate::tree::Tree;

/// Multiplier of the polynomial rolling hash (odd, so every power is invertible).
const R: u64 = 0x0000_0100_0000_01B3;
/// Bits of the prefilter bitmap (512 KiB).
const FILTER_BITS: u32 = 22;

/// An extent whose pcluster can be reused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    pub node: usize,
    /// Where its data starts in its file.
    pub lstart: u64,
    /// Its decoded length.
    pub len: u32,
    pub blocks: u32,
    pub compressed: bool,
    /// Algorithm index of its file (only compressed items need the same one).
    pub alg: usize,
    /// Its first block, counted from the start of its file's data blocks.
    pub blk: u32,
}

/// A match: the data at `cur` equals the first `len` bytes of `item`'s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Match {
    pub cur: usize,
    pub len: usize,
    pub item: Item,
}

pub(crate) struct Dedupe {
    window: usize,
    /// R^(window-1).
    rm: u64,
    /// (rolling hash, xxh3 of the window, item).
    items: Vec<(u64, u64, Item)>,
    buckets: HashMap<u64, Vec<u32>>,
    filter: Vec<u64>,
}

fn rolling(data: &[u8]) -> u64 {
    // sum of data[i] * R^i
    data.iter()
        .rev()
        .fold(0u64, |h, &b| h.wrapping_mul(R).wrapping_add(u64::from(b)))
}

impl Dedupe {
    pub(crate) fn new(window: usize) -> Self {
        let rm = (1..window).fold(1u64, |m, _| m.wrapping_mul(R));
        Self {
            window,
            rm,
            items: Vec::new(),
            buckets: HashMap::new(),
            filter: vec![0; 1 << (FILTER_BITS - 6)],
        }
    }

    fn bit(h: u64) -> usize {
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
    }

    /// Index position, for [`Self::rollback`].
    pub(crate) fn mark(&self) -> usize {
        self.items.len()
    }

    /// Forgets the items added since `mark` (their file is stored uncompressed).
    pub(crate) fn rollback(&mut self, mark: usize) {
        while self.items.len() > mark {
            let (h, _, _) = self.items.pop().expect("above mark");
            let id = self.items.len() as u32;
            if let Some(b) = self.buckets.get_mut(&h) {
                b.retain(|&i| i != id);
                if b.is_empty() {
                    self.buckets.remove(&h);
                }
            }
        }
    }

    /// Indexes an extent whose data is `data` (shorter than a window: not indexed;
    /// a window already indexed keeps its first extent).
    pub(crate) fn insert(&mut self, data: &[u8], item: Item) {
        let w = self.window;
        if data.len() < w || self.items.len() >= u32::MAX as usize {
            return;
        }
        let h = rolling(&data[..w]);
        let wh = xxhash_rust::xxh3::xxh3_64(&data[..w]);
        let bucket = self.buckets.entry(h).or_default();
        if bucket.iter().any(|&i| self.items[i as usize].1 == wh) {
            return;
        }
        bucket.push(self.items.len() as u32);
        self.items.push((h, wh, item));
        let b = Self::bit(h);
        self.filter[b / 64] |= 1 << (b % 64);
    }

    /// Looks for the nearest position in `start..=head` (of `input`) where an indexed
    /// extent's data starts and runs on past `head`.
    pub(crate) fn find(
        &mut self,
        tree: &Tree,
        alg: usize,
        input: &[u8],
        start: usize,
        head: usize,
    ) -> Result<Option<Match>> {
        let w = self.window;
        let end = input.len();
        if self.items.is_empty() || end < w {
            return Ok(None);
        }
        let mut cur = head.min(end - w);
        if cur < start {
            return Ok(None);
        }
        // Indexed data read back in this call (runs of equal windows hit the same
        // items again and again).
        let mut cache: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut cached = 0usize;
        let mut h = rolling(&input[cur..cur + w]);
        loop {
            let b = Self::bit(h);
            if self.filter[b / 64] & (1 << (b % 64)) != 0
                && let Some(ids) = self.buckets.get(&h)
            {
                for &id in ids {
                    let (_, _, item) = self.items[id as usize];
                    if item.compressed && item.alg != alg {
                        continue;
                    }
                    if !cache.contains_key(&id) {
                        if cached > CACHE_BYTES {
                            cache.clear();
                            cached = 0;
                        }
                        let mut data = vec![0u8; item.len as usize];
                        let size = tree.nodes[item.node].size;
                        Source::open(tree, item.node)?.read_exact_at(
                            &mut data,
                            item.lstart,
                            size,
                        )?;
                        cached += data.len();
                        cache.insert(id, data);
                    }
                    let theirs = &cache[&id];
                    // It must cover `head` too: first the byte there, then the
                    // window, then backwards from `head`, so that in long runs of
                    // equal data a difference just before `head` is seen at once.
                    let need = head - cur + 1;
                    let n = theirs.len().min(end - cur);
                    if need > n || theirs[need - 1] != input[head] {
                        break;
                    }
                    if theirs[..w] != input[cur..cur + w] {
                        continue;
                    }
                    let from = w.min(need);
                    if !same_backwards(&theirs[from..need], &input[cur + from..cur + need]) {
                        break;
                    }
                    let more = common_prefix(&theirs[need..n], &input[cur + need..cur + n]);
                    return Ok(Some(Match {
                        cur,
                        len: need + more,
                        item,
                    }));
                }
            }
            if cur == start {
                return Ok(None);
            }
            // Slide the window back by one byte.
            let out = u64::from(input[cur + w - 1]).wrapping_mul(self.rm);
            h = u64::from(input[cur - 1]).wrapping_add(R.wrapping_mul(h.wrapping_sub(out)));
            cur -= 1;
        }
    }
}

/// Indexed data kept in memory by one lookup before it starts over.
const CACHE_BYTES: usize = 64 << 20;

/// Whether `a == b`, comparing from the end in 64-byte steps.
fn same_backwards(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let mut end = a.len();
    while end > 0 {
        let s = end.saturating_sub(64);
        if a[s..end] != b[s..end] {
            return false;
        }
        end = s;
    }
    true
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 64 <= n && a[i..i + 64] == b[i..i + 64] {
        i += 64;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_back_equals_direct() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let w = 64;
        let d = Dedupe::new(w);
        let mut cur = data.len() - w;
        let mut h = rolling(&data[cur..cur + w]);
        while cur > 0 {
            let out = u64::from(data[cur + w - 1]).wrapping_mul(d.rm);
            h = u64::from(data[cur - 1]).wrapping_add(R.wrapping_mul(h.wrapping_sub(out)));
            cur -= 1;
            assert_eq!(h, rolling(&data[cur..cur + w]), "at {cur}");
        }
    }
}
