//! Directory contents: entries sorted by name bytes ("." and ".." included) and
//! split into blocks of dirents followed by names, no entry crossing a block.

use ishare_erofs::format::Dirent;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U64};

const DIRENT_SIZE: usize = size_of::<Dirent>();

/// A directory entry as stored: name, target node, `FT_*` type.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub name: Vec<u8>,
    pub node: usize,
    pub file_type: u8,
}

/// A directory's entries split into blocks.
#[derive(Debug)]
pub(crate) struct DirLayout {
    /// Entries in name order.
    pub entries: Vec<DirEntry>,
    /// End index (exclusive) in `entries` of each block.
    pub block_ends: Vec<usize>,
    /// Directory size: full blocks plus the used part of the last one.
    pub size: u64,
}

impl DirLayout {
    /// Sorts `entries` and packs them greedily into blocks of `bs` bytes.
    pub(crate) fn new(mut entries: Vec<DirEntry>, bs: usize) -> Self {
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut block_ends = Vec::new();
        let mut used = 0;
        for (i, e) in entries.iter().enumerate() {
            let need = DIRENT_SIZE + e.name.len();
            if used + need > bs {
                block_ends.push(i);
                used = 0;
            }
            used += need;
        }
        block_ends.push(entries.len());
        let size = (block_ends.len() as u64 - 1) * bs as u64 + used as u64;
        Self {
            entries,
            block_ends,
            size,
        }
    }

    /// The bytes of block `i` (only the used part for the last block), with each
    /// entry's NID from `nid`.
    pub(crate) fn block(&self, i: usize, bs: usize, nid: impl Fn(usize) -> u64) -> Vec<u8> {
        let start = if i == 0 { 0 } else { self.block_ends[i - 1] };
        let ents = &self.entries[start..self.block_ends[i]];
        let mut out = Vec::with_capacity(bs);
        let mut nameoff = ents.len() * DIRENT_SIZE;
        for e in ents {
            let d = Dirent {
                nid: U64::new(nid(e.node)),
                nameoff: U16::new(nameoff as u16),
                file_type: e.file_type,
                reserved: 0,
            };
            out.extend_from_slice(d.as_bytes());
            nameoff += e.name.len();
        }
        for e in ents {
            out.extend_from_slice(&e.name);
        }
        if i + 1 < self.block_ends.len() {
            out.resize(bs, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&[u8]]) -> Vec<DirEntry> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntry {
                name: n.to_vec(),
                node: i,
                file_type: 1,
            })
            .collect()
    }

    #[test]
    fn sorted_by_bytes_with_dot_entries() {
        let d = DirLayout::new(entries(&[b"b", b"..", b"!", b".", b"a", b"\xff"]), 4096);
        let names: Vec<&[u8]> = d.entries.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(names, [&b"!"[..], b".", b"..", b"a", b"b", b"\xff"]);
        assert_eq!(d.size, 6 * 12 + 7);
        assert_eq!(d.block_ends, [6]);
    }

    #[test]
    fn blocks_are_filled_without_crossing() {
        let names: Vec<Vec<u8>> = (0..40)
            .map(|i| vec![b'a' + (i % 26) as u8; 20 + i])
            .collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        for bs in [512usize, 1024, 4096] {
            let d = DirLayout::new(entries(&refs), bs);
            let mut start = 0;
            let mut total = 0;
            for (i, &end) in d.block_ends.iter().enumerate() {
                let used: usize = d.entries[start..end]
                    .iter()
                    .map(|e| 12 + e.name.len())
                    .sum();
                assert!(used <= bs);
                // A block is closed only when the next entry does not fit.
                if let Some(next) = d.entries.get(end) {
                    assert!(used + 12 + next.name.len() > bs);
                }
                let block = d.block(i, bs, |n| n as u64 + 100);
                let last = i + 1 == d.block_ends.len();
                assert_eq!(block.len(), if last { used } else { bs });
                total = i * bs + used;
                start = end;
            }
            assert_eq!(d.size, total as u64);
        }
    }
}
