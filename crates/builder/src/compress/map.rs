//! A compressed file's map from its extents: where each extent's pcluster is in
//! the image (its own blocks in order from the file's start, or another file's),
//! its inline tail and its fragment, handed to the lcluster index encoder (`index`).

use super::extent::{At, ZFile};
use super::index::{Ext, Map, MapSpec, RecordSpec};
use super::{index, records};
use crate::options::BuildOptions;

/// The map of compressed file `z` whose data starts at block `startblk`, for a map
/// at byte `map_pos` (only its value modulo 32 matters); `start_of(node)` gives the
/// first data block of another file whose pclusters `z` reuses; `far`: data may
/// lie past 4 GiB (48-bit layout, see `records`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn zmap(
    z: &ZFile,
    size: u64,
    use_inline: bool,
    startblk: u32,
    start_of: &dyn Fn(usize) -> u32,
    opts: &BuildOptions,
    map_pos: u64,
    far: bool,
) -> Map {
    use ishare_erofs::format::{
        FULL_INDEX_PAD, INODE_COMPRESSED_FULL, LCLUSTER_TYPE_HEAD1, LCLUSTER_TYPE_PLAIN,
    };
    let c = opts.compression.as_ref().expect("compressed build");
    let used = z.used(use_inline);
    if let Some(f) = &z.frag
        && used.is_empty()
        && f.lstart == 0
    {
        // The whole file is a fragment: the header, read as one little-endian u64
        // with bit 63 set, is its offset in the packed inode.
        let mut bytes = (f.offset | 1 << 63).to_le_bytes().to_vec();
        bytes.resize(8 + FULL_INDEX_PAD as usize, 0);
        return Map {
            bytes,
            layout: INODE_COMPRESSED_FULL,
        };
    }
    let typ = |compressed: bool| {
        if compressed {
            LCLUSTER_TYPE_HEAD1
        } else {
            LCLUSTER_TYPE_PLAIN
        }
    };
    let bs = u64::from(opts.block_size);
    // The file's own pclusters follow each other from its first data block.
    let mut own = u64::from(startblk) * bs;
    let mut exts: Vec<Ext> = used
        .iter()
        .map(|e| {
            let (pstart, shared) = match e.at {
                At::Own { .. } => {
                    let p = own;
                    own += u64::from(e.plen);
                    (p, false)
                }
                At::Shared { node, pos } => (u64::from(start_of(node)) * bs + pos, true),
            };
            Ext {
                len: u64::from(e.len),
                typ: typ(e.compressed),
                blkaddr: (pstart / bs) as u32,
                blocks: e.blocks,
                pstart,
                plen: e.plen,
                inline: false,
                fragment: false,
                partial: e.partial,
                shared,
            }
        })
        .collect();
    let mut inline_size = 0;
    if use_inline && let Some(t) = &z.inline {
        inline_size = t.data.len() as u16;
        exts.push(Ext {
            len: u64::from(t.len),
            typ: typ(t.compressed),
            blkaddr: (own / bs) as u32,
            blocks: 1,
            pstart: own,
            plen: t.data.len() as u32,
            inline: true,
            fragment: false,
            partial: false,
            shared: false,
        });
    }
    if let Some(f) = &z.frag {
        // A HEAD1 lcluster with no blocks; in full indexes its address holds the
        // high 32 bits of the fragment offset.
        exts.push(Ext {
            len: f.len,
            typ: LCLUSTER_TYPE_HEAD1,
            blkaddr: (f.offset >> 32) as u32,
            blocks: 0,
            pstart: own,
            plen: 0,
            inline: false,
            fragment: true,
            partial: false,
            shared: false,
        });
    }
    let spec = MapSpec {
        exts: &exts,
        blkszbits: opts.block_size.trailing_zeros(),
        big_pcluster: c.max_pcluster() > opts.block_size,
        allow_compact: !c.legacy_indexes,
        // Each file uses one algorithm, as HEAD1 (mkfs.erofs writes no HEAD2).
        algorithmtype: c.algorithms[z.algorithm].algorithm.id(),
        inline_size,
        // Byte-aligned plain pclusters are never rotated (mkfs.erofs).
        interlaced: c.interlaced() && !z.unaligned,
        fragmentoff: z.frag.map(|f| f.offset),
        force_full: z.dedupe,
        records: opts.extent_records().then_some(RecordSpec {
            size,
            far,
            unaligned: z.unaligned,
        }),
    };
    // mkfs.erofs writes no records for a file with an inline tail.
    if let Some(rs) = spec.records
        && spec.inline_size == 0
        && let Some(m) = records::encode(&spec, rs, map_pos)
    {
        return m;
    }
    index::encode(&spec, map_pos)
}
