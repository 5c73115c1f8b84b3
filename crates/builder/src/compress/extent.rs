//! What compressing a file produces: its extents (each a pcluster of the file's own,
//! or one reused from another file), the inline tail candidate, the tail fragment,
//! and the rule for whether keeping the file compressed is worth it.

/// Where an extent's pcluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The file's own next blocks; their encoded bytes are at byte `spill` of the
    /// spill file until copied. `hash` (xxh3 of those bytes) finds identical
    /// pclusters when fragments are on.
    Own { spill: u64, hash: u64 },
    /// Bytes written for another extent: `pos` bytes after the start of node
    /// `node`'s data blocks (deduplicated).
    Shared { node: usize, pos: u64 },
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
    /// Encoded length in bytes: `blocks` whole blocks, except for byte-aligned
    /// pclusters (48-bit layout, see `segment`), which follow each other unpadded.
    pub plen: u32,
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

/// A file, compressed (or, while it is compressed, the part one segment made).
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
    /// Its pclusters are byte-aligned (48-bit layout with zstd or libdeflate).
    pub unaligned: bool,
}

impl ZFile {
    /// The part of a file that is only its digest (taken apart from its segments).
    pub(crate) fn digest(d: [u8; 32]) -> Self {
        ZFile {
            digest: Some(d),
            ..ZFile::default()
        }
    }

    /// The extents the map lists: without the fallback ones when the tail is inline.
    pub(crate) fn used(&self, use_inline: bool) -> &[ZExtent] {
        let n = self.extents.len() - if use_inline { self.fallback } else { 0 };
        &self.extents[..n]
    }

    /// Bytes of the file's own extents (the ones it lists).
    pub(crate) fn own_bytes(&self, use_inline: bool) -> u64 {
        self.used(use_inline)
            .iter()
            .filter(|e| matches!(e.at, At::Own { .. }))
            .map(|e| u64::from(e.plen))
            .sum()
    }

    /// Blocks of the file's own extents.
    pub(crate) fn blocks(&self, use_inline: bool, bs: u64) -> u64 {
        self.own_bytes(use_inline).div_ceil(bs)
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
    let cost = if z.unaligned {
        // Byte-aligned pclusters count in bytes, with their extent records
        // (mkfs.erofs's rule; 16 bytes a record bounds them).
        z.own_bytes(false) + 16 + 16 * z.extents.len() as u64
    } else {
        z.blocks(inline > 0, bs) * bs + inline + super::index::full_size(size.div_ceil(bs))
    };
    cost < size
}
