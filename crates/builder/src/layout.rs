//! Where everything goes: each inode's version (compact or extended) and data layout,
//! its place in the metadata area, and its data blocks.
//!
//! The image is: the superblock (bytes 1024..1152), the shared xattrs, the long
//! prefix table, then the metadata area (inodes, their inline xattrs, chunk maps and
//! inline tails), then the data blocks in inode order. With `--MZ` the metadata area
//! (and with `d` the directory blocks) follows the data instead; with `-m` the tree's
//! inodes go into a metabox scratch region after the image's blocks. Nothing here
//! depends on file contents, so the layout is fixed before any data is read.

use std::collections::BTreeSet;

use ishare_erofs::format::{
    BLOCK_MAP_ENTRY_SIZE, CHUNK_FORMAT_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, ChunkIndex,
    INODE_CHUNK_BASED, INODE_FLAT_INLINE, INODE_FLAT_PLAIN, ISLOTBITS, InodeCompact, InodeExtended,
};

use crate::chunk::ChunkPlan;
use crate::compress::extent::ZFile;
use crate::compress::map::zmap;

use crate::dir::DirLayout;
use crate::error::{Error, Result};
use crate::options::{BuildOptions, InodeVersion, TarData};
use crate::rebuild::mode::RebuildData;
use crate::tree::{Kind, Tree};
use crate::wide::InodeFormat;
use crate::xattr::Body;

/// Inode slot size: inodes start at multiples of it.
const SLOT: u64 = 1 << ISLOTBITS;
/// Largest root NID the 16-bit superblock field holds.
const MAX_ROOT_NID: u64 = u16::MAX as u64;
/// "No data blocks" in a flat inode's start block, as mkfs.erofs writes it.
pub(crate) const NULL_STARTBLK: u32 = u32::MAX;

/// Chunk-based file details.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunks {
    /// `i_u` chunk format: chunk size shift over the block size, INDEXES flag.
    pub format: u16,
    /// Blocks per chunk.
    pub blocks_per_chunk: u64,
    /// Number of map entries.
    pub count: u64,
    /// Bytes per map entry (4 or 8).
    pub unit: u64,
    /// Where the chunks are.
    pub target: ChunkTarget,
}

/// Where a chunk-based file's chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkTarget {
    /// On extra device 1 (the tar of `--tar=i`), from this block.
    Device(u64),
    /// Nowhere: the file reads as zeros (`--tar=headerball`).
    Hole,
    /// In the chunk blob (`--chunksize`): after the image's other data, or on
    /// extra device 1 (`--blobdev`); the map's entries are in the chunk plan.
    Blob { device: bool },
    /// In a layer image (rebuild mode), at the blocks of the tree's chunk map, on
    /// this device: extra device `layer + 1`, or 0 for the image itself (the base
    /// of an incremental build in place).
    Layer(u16),
}

/// One inode, placed.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub extended: bool,
    /// `INODE_FLAT_PLAIN`, `INODE_FLAT_INLINE` or `INODE_CHUNK_BASED`.
    pub layout: u16,
    /// `i_size`.
    pub size: u64,
    /// Byte offset of the inode in the image.
    pub off: u64,
    /// Bytes of inode, xattrs and chunk map (the inline tail follows).
    pub meta_len: u64,
    /// Inline tail bytes.
    pub tail: u64,
    /// Data blocks.
    pub nblocks: u64,
    /// First data block, [`NULL_STARTBLK`] without data blocks.
    pub startblk: u32,
    pub chunks: Option<Chunks>,
    /// Compressed files: whether the last pcluster is inline (`tail` bytes of it).
    pub z: Option<ZPlaced>,
    /// In the metabox (`-m`): `off` is then in the scratch region from
    /// [`Layout::box_base`], and the NID carries the metabox bit.
    pub in_box: bool,
}

/// How a compressed file is placed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZPlaced {
    /// The tail extent is stored inline after the map.
    pub inline: bool,
    /// Byte offset of the map (header and indexes), 8-aligned.
    pub map_off: u64,
}

/// Placeholder first block for sizing a map before the layout knows the real one:
/// any value at least the largest block count the compact form looks back over
/// gives the same form and size.
pub(crate) const PROVISIONAL_STARTBLK: u32 = 1 << 24;

impl Placed {
    /// Byte offset of the inline tail.
    pub(crate) fn tail_off(&self) -> u64 {
        self.off + self.meta_len
    }
}

/// The whole image's placement.
#[derive(Debug)]
pub(crate) struct Layout {
    pub inodes: Vec<Placed>,
    /// `meta_blkaddr`.
    pub meta_blkaddr: u32,
    /// Total blocks (without the metabox scratch region).
    pub blocks: u64,
    /// First block of the chunk blob when it is in the image.
    pub blob_start: u64,
    /// Byte offset of the metabox scratch region (just past `blocks`).
    pub box_base: u64,
    /// Bytes of metabox data (a whole number of blocks; 0 without a metabox).
    pub box_len: u64,
    /// First free byte of the metadata before the data (the rest of its last block
    /// is unused).
    pub meta_free: u64,
    /// Data may lie past 4 GiB: extent records keep the high half of addresses.
    pub far: bool,
}

/// Where the metadata goes besides the usual area before the data.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Placement {
    /// `-m`: the first this many nodes (the tree's own) go into the metabox, whose
    /// data starts with this many bytes of other things (the long prefix table).
    pub metabox: Option<(usize, u64)>,
    /// `--MZ`.
    pub zone: crate::metabox::MetaZone,
    /// Data blocks start at this block rather than after the metadata.
    pub data_start: Option<u64>,
}

impl Layout {
    pub(crate) fn nid(&self, node: usize, bs: u64) -> u64 {
        let p = &self.inodes[node];
        if p.in_box {
            return 1 << 63 | (p.off - self.box_base) >> ISLOTBITS;
        }
        (p.off - u64::from(self.meta_blkaddr) * bs) >> ISLOTBITS
    }
}

/// Metadata space allocator: a cursor, plus the unused ends of blocks that were left
/// when an item had to start a new block, reused best-fit so small inodes fill them.
struct MetaAlloc {
    bs: u64,
    cursor: u64,
    /// (free bytes, start), each running to the end of its block.
    gaps: BTreeSet<(u64, u64)>,
}

impl MetaAlloc {
    fn take_gap(&mut self, need: u64) -> Option<u64> {
        let &(len, start) = self.gaps.range((need, 0)..).next()?;
        self.gaps.remove(&(len, start));
        let rest = (start + need).next_multiple_of(SLOT);
        let end = start + len;
        if rest + SLOT <= end {
            self.gaps.insert((end - rest, rest));
        }
        Some(start)
    }

    /// Places `need` bytes inside one block.
    fn place_in_block(&mut self, need: u64) -> u64 {
        debug_assert!(need <= self.bs);
        if let Some(at) = self.take_gap(need) {
            return at;
        }
        let at = self.cursor.next_multiple_of(SLOT);
        let in_block = at % self.bs;
        if in_block + need <= self.bs {
            self.cursor = at + need;
            return at;
        }
        let next = at - in_block + self.bs;
        if next - at >= SLOT {
            self.gaps.insert((next - at, at));
        }
        self.cursor = next + need;
        next
    }

    /// Places `need` bytes that have no inline tail: in a left-over gap that holds
    /// them, else at the cursor, across a block boundary if it comes to that. As
    /// mkfs.erofs 1.9.4 does (only inline data must stay inside one block; the
    /// kernel reads an inode, its xattrs and its map across blocks): keeping every
    /// such item inside one block wastes up to a slot per block, 4% of the metadata
    /// of a tar index, whose 72-byte inodes (extended, one chunk index) fill
    /// 512-byte blocks.
    fn place(&mut self, need: u64) -> u64 {
        if let Some(at) = self.take_gap(need) {
            return at;
        }
        let at = self.cursor.next_multiple_of(SLOT);
        self.cursor = at + need;
        at
    }
}

/// Sizes of an inode's data before placement.
struct Shape {
    extended: bool,
    size: u64,
    /// Inline tail candidate (0 = none).
    tail: u64,
    /// Data blocks if the tail is inlined.
    full_blocks: u64,
    chunks: Option<Chunks>,
}

fn shape(
    tree: &Tree,
    node: usize,
    dirs: &[Option<DirLayout>],
    opts: &BuildOptions,
    fmt: &InodeFormat,
    plan: Option<&ChunkPlan>,
    sparse: bool,
) -> Result<Shape> {
    let n = &tree.nodes[node];
    let bs = u64::from(opts.block_size);
    let bits = opts.block_size.trailing_zeros();
    let (size, inline_ok) = match &n.kind {
        Kind::Dir { .. } => (dirs[node].as_ref().map_or(0, |d| d.size), true),
        Kind::Symlink(t) => (t.len() as u64, true),
        // A base file kept in place by an incremental build keeps its tail inline.
        Kind::File => (
            n.size,
            opts.inline_data
                || tree
                    .layers
                    .as_ref()
                    .is_some_and(|l| l.files.get(&node).is_some_and(|f| f.keep.is_some())),
        ),
        Kind::Special => (0, false),
    };
    let fits_compact = size <= u64::from(u32::MAX)
        && n.uid <= u32::from(u16::MAX)
        && n.gid <= u32::from(u16::MAX)
        && n.nlink <= u32::from(u16::MAX);
    // Compact inodes carry no time of their own on kernels before 6.15 (they show
    // the superblock epoch), so only inodes whose mtime is exactly the epoch are
    // compact, as mkfs.erofs does; that keeps every kernel since 6.4 correct.
    // With the 48-bit layout compact inodes hold their own mtime (`wide`).
    let same_time = fmt.compact_mtime(n.mtime, n.mtime_nsec).is_some();
    let extended = match opts.inode_version {
        InodeVersion::Extended => true,
        // `--ignore-mtime`: the mtime alone does not make an inode extended.
        InodeVersion::Auto => !(fits_compact && (same_time || opts.ignore_mtime)),
        InodeVersion::Compact if fits_compact => false,
        InodeVersion::Compact => {
            return Err(Error::Unrepresentable {
                path: tree.path(node),
                what: "cannot be a compact inode (size, owner or link count too large)".into(),
            });
        }
    };
    let layer = tree
        .layers
        .as_ref()
        .and_then(|l| Some((l.data, l.files.get(&node)?)));
    let chunks = match (opts.chunk_size, &n.kind) {
        // Rebuild mode: the data stays in the layer, or only its room is taken.
        _ if layer.is_some() => match layer {
            Some((RebuildData::BlobIndex, f)) => {
                let c = f
                    .chunks
                    .as_ref()
                    .expect("chunk maps are made in blob index mode");
                Some(Chunks {
                    format: c.rel | CHUNK_FORMAT_INDEXES,
                    blocks_per_chunk: 1 << c.rel,
                    count: c.blocks.len() as u64,
                    unit: size_of::<ChunkIndex>() as u64,
                    target: ChunkTarget::Layer(f.layer as u16 + 1),
                })
            }
            // An incremental build in place: the base image's files keep their
            // blocks, which are this image's own (a block map, device 0).
            Some((_, f)) if f.chunks.is_some() => {
                let c = f.chunks.as_ref().expect("checked");
                Some(Chunks {
                    format: c.rel,
                    blocks_per_chunk: 1 << c.rel,
                    count: c.blocks.len() as u64,
                    unit: BLOCK_MAP_ENTRY_SIZE as u64,
                    target: ChunkTarget::Layer(0),
                })
            }
            _ => None,
        },
        // Tar index and headerball modes: the data is not in the image. One chunk
        // covers the file where the format allows, as mkfs.erofs does.
        (_, Kind::File) if size > 0 && opts.tar_data != TarData::Copy => {
            let max_rel = u32::from(CHUNK_FORMAT_BLKBITS_MASK);
            let need = u64::BITS - (size - 1).leading_zeros();
            let rel = need.saturating_sub(bits).min(max_rel);
            let (target, unit, mut format) = match (opts.tar_data, n.archive_offset) {
                (TarData::Index, Some(off)) => {
                    if off % bs != 0 {
                        return Err(Error::Unrepresentable {
                            path: tree.path(node),
                            what: format!(
                                "its data at byte {off} of the tar is not aligned to the {bs}-byte block size"
                            ),
                        });
                    }
                    (
                        ChunkTarget::Device(off / bs),
                        size_of::<ChunkIndex>(),
                        CHUNK_FORMAT_INDEXES,
                    )
                }
                _ => (ChunkTarget::Hole, BLOCK_MAP_ENTRY_SIZE, 0),
            };
            format |= rel as u16;
            Some(Chunks {
                format,
                blocks_per_chunk: 1 << rel,
                count: size.div_ceil(bs << rel),
                unit: unit as u64,
                target,
            })
        }
        // Copied files: their map was planned with the chunks' deduplication.
        (Some(_), Kind::File) if size > 0 => plan.and_then(|p| p.files[node].as_ref()).map(|f| {
            let blobdev = opts.blob_device.is_some();
            let indexes = opts.chunk_indexes || blobdev;
            let mut format = f.rel_bits as u16;
            if indexes {
                format |= CHUNK_FORMAT_INDEXES;
            }
            Chunks {
                format,
                blocks_per_chunk: 1 << f.rel_bits,
                count: f.chunks.len() as u64,
                unit: if indexes {
                    size_of::<ChunkIndex>()
                } else {
                    BLOCK_MAP_ENTRY_SIZE
                } as u64,
                target: ChunkTarget::Blob { device: blobdev },
            }
        }),
        _ => None,
    };
    // A chunk-based file has no data blocks of its own, nor (48-bit layout) does
    // a file that is entirely holes.
    let (tail, full_blocks) = if chunks.is_some() || sparse {
        (0, 0)
    } else if !inline_ok {
        (0, size.div_ceil(bs))
    } else {
        (size % bs, size / bs)
    };
    Ok(Shape {
        extended,
        size,
        tail,
        full_blocks,
        chunks,
    })
}

/// What reading the files before the layout found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prescan<'a> {
    /// Chunk-based files' maps (`--chunksize`).
    pub chunks: Option<&'a ChunkPlan>,
    /// By node: `Some` for files that are entirely holes and get no blocks (48-bit
    /// layout); may be empty.
    pub sparse: &'a [Option<[u8; 32]>],
}

/// Places every inode, starting the metadata area at byte `meta_start`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layout(
    tree: &Tree,
    bodies: &[Body],
    dirs: &[Option<DirLayout>],
    zfiles: &[Option<ZFile>],
    opts: &BuildOptions,
    meta_start: u64,
    pre: Prescan<'_>,
    placement: Placement,
) -> Result<Layout> {
    let Prescan {
        chunks: plan,
        sparse,
    } = pre;
    let bs = u64::from(opts.block_size);
    let fmt = InodeFormat::new(opts);
    let zone = placement.zone.inodes;
    // In a metadata zone, offsets are relative to the zone until the data is placed.
    let mut primary = MetaAlloc {
        bs,
        cursor: if zone { 0 } else { meta_start },
        gaps: BTreeSet::new(),
    };
    let (box_nodes, box_start) = placement.metabox.unwrap_or((0, 0));
    let mut boxed = MetaAlloc {
        bs,
        cursor: box_start,
        gaps: BTreeSet::new(),
    };
    let mut inodes = Vec::with_capacity(tree.nodes.len());
    // Pclusters shared with other files: their address does not change the map's
    // form (such maps use full indexes).
    let provisional = |_| PROVISIONAL_STARTBLK;
    // Whether pclusters may start past 4 GiB, from a bound on the image size (every
    // node's data and metadata, each rounded up), so that the form of extent records
    // is fixed before the data is placed.
    let bound = tree
        .nodes
        .iter()
        .zip(bodies)
        .fold(meta_start, |acc, (n, b)| {
            acc.saturating_add(n.size.next_multiple_of(bs) + 2 * bs + u64::from(b.size))
        });
    let far = bound > u64::from(u32::MAX);
    for (node, body) in bodies.iter().enumerate() {
        let in_box = node < box_nodes;
        let alloc = if in_box { &mut boxed } else { &mut primary };
        let is_sparse = sparse.get(node).is_some_and(Option::is_some);
        let s = shape(tree, node, dirs, opts, &fmt, plan, is_sparse)?;
        let isize = if s.extended {
            size_of::<InodeExtended>()
        } else {
            size_of::<InodeCompact>()
        } as u64;
        let mut meta_len = isize + u64::from(body.size);
        if let Some(c) = &s.chunks {
            meta_len = meta_len.next_multiple_of(c.unit) + c.count * c.unit;
        }
        if let Some(z) = &zfiles[node] {
            // Inode and xattrs, the map at the next multiple of 8, then the inline tail.
            let map_rel = (isize + u64::from(body.size)).next_multiple_of(8);
            let inline = z.inline.as_ref().map_or(0, |t| t.data.len() as u64);
            let map_len = |use_inline| {
                zmap(
                    z,
                    s.size,
                    use_inline,
                    PROVISIONAL_STARTBLK,
                    &provisional,
                    opts,
                    map_rel,
                    far,
                )
                .bytes
                .len() as u64
            };
            let with_inline = map_rel + map_len(true);
            let (use_inline, meta_len, off) = if inline > 0 && with_inline + inline <= bs {
                (
                    true,
                    with_inline,
                    alloc.place_in_block(with_inline + inline),
                )
            } else {
                let m = map_rel + map_len(false);
                (false, m, alloc.place(m))
            };
            inodes.push(Placed {
                extended: s.extended,
                layout: zmap(
                    z,
                    s.size,
                    use_inline,
                    PROVISIONAL_STARTBLK,
                    &provisional,
                    opts,
                    map_rel,
                    far,
                )
                .layout,
                size: s.size,
                off,
                meta_len,
                tail: if use_inline { inline } else { 0 },
                nblocks: z.blocks(use_inline, bs),
                startblk: NULL_STARTBLK,
                chunks: None,
                z: Some(ZPlaced {
                    inline: use_inline,
                    map_off: off + map_rel,
                }),
                in_box,
            });
            continue;
        }
        let (layout, off, tail, nblocks) = if s.chunks.is_some() {
            (INODE_CHUNK_BASED, alloc.place(meta_len), 0, s.full_blocks)
        } else if s.tail > 0 && meta_len + s.tail <= bs {
            // The inline tail must sit in the same block as the inode.
            let off = alloc.place_in_block(meta_len + s.tail);
            (INODE_FLAT_INLINE, off, s.tail, s.full_blocks)
        } else {
            let nblocks = s.full_blocks + u64::from(s.tail > 0);
            (INODE_FLAT_PLAIN, alloc.place(meta_len), 0, nblocks)
        };
        // An incremental build in place: a base file whose tail stays inline keeps
        // its whole blocks where they are.
        let keep = tree
            .layers
            .as_ref()
            .and_then(|l| l.files.get(&node)?.keep)
            .filter(|_| layout == INODE_FLAT_INLINE && nblocks == s.full_blocks);
        inodes.push(Placed {
            extended: s.extended,
            layout,
            size: s.size,
            off,
            meta_len,
            tail,
            nblocks,
            startblk: keep.unwrap_or(NULL_STARTBLK),
            chunks: s.chunks,
            z: None,
            in_box,
        });
    }

    // Directory blocks that go into the metadata zone, after its inodes.
    let zone_dir = |node: usize| {
        placement.zone.dirdata
            && matches!(
                tree.nodes.get(node).map(|n| &n.kind),
                Some(Kind::Dir { .. })
            )
    };
    let meta_free = if zone { meta_start } else { primary.cursor };
    let mut next = if let Some(d) = placement.data_start {
        d
    } else if zone {
        meta_start.div_ceil(bs)
    } else {
        primary.cursor.div_ceil(bs)
    };
    let assign = |p: &mut Placed, node: usize, next: &mut u64| -> Result<()> {
        // `--dsunit`: file data starts on a multiple of the stripe unit.
        let is_file = tree
            .nodes
            .get(node)
            .is_some_and(|n| matches!(n.kind, Kind::File));
        // Blocks already placed (kept where they are in the image).
        if p.startblk != NULL_STARTBLK {
            return Ok(());
        }
        if p.nblocks > 0 && is_file && opts.dsunit > 1 {
            *next = next.next_multiple_of(opts.dsunit);
        }
        if p.nblocks > 0 {
            p.startblk = u32::try_from(*next)
                .ok()
                .filter(|&b| b != NULL_STARTBLK)
                .ok_or_else(|| Error::TooLarge("more than 2^32 blocks".into()))?;
            *next += p.nblocks;
        }
        Ok(())
    };
    for (node, p) in inodes.iter_mut().enumerate() {
        if !zone_dir(node) {
            assign(p, node, &mut next)?;
        }
    }
    // The metadata zone: its inodes after the data, then its directory blocks.
    let zone_start = next * bs;
    if zone {
        for p in inodes.iter_mut().filter(|p| !p.in_box) {
            p.off += zone_start;
            if let Some(z) = p.z.as_mut() {
                z.map_off += zone_start;
            }
        }
        next += primary.cursor.div_ceil(bs);
        for (node, p) in inodes.iter_mut().enumerate() {
            if zone_dir(node) {
                assign(p, node, &mut next)?;
            }
        }
    }

    // The root NID must fit the superblock's 16 bits; NID 0 is avoided because
    // inode number 0 means "no inode" to some programs. A root in the metabox has
    // a 64-bit NID (48-bit superblock) and needs no base.
    let root_off = inodes[0].off;
    let area_start = if zone { zone_start } else { meta_start };
    let meta_base = if box_nodes > 0 || (!zone && root_off >> ISLOTBITS <= MAX_ROOT_NID) {
        0
    } else {
        let base = area_start / bs * bs;
        if base == root_off { base - bs } else { base }
    };
    let meta_blkaddr = u32::try_from(meta_base / bs)
        .map_err(|_| Error::TooLarge("metadata start beyond 2^32 blocks".into()))?;
    // `--fsalignblks`: the image's size is a multiple of this many blocks (rounded
    // up to a power of two, as mkfs.erofs does); with a metabox, once it is appended.
    // The chunk blob follows everything else, as mkfs.erofs appends it (on a
    // stripe unit with `--dsunit`, since its files are aligned inside it); a
    // metabox comes after it.
    let mut blob_start = next;
    if let Some(p) = plan.filter(|_| opts.blob_device.is_none()) {
        if opts.dsunit > 1 {
            blob_start = blob_start.next_multiple_of(opts.dsunit);
        }
        next = blob_start + p.blob_blocks;
    }
    if opts.fsalign_blocks > 1 && box_nodes == 0 {
        let align = opts
            .fsalign_blocks
            .checked_next_power_of_two()
            .ok_or_else(|| Error::TooLarge("--fsalignblks".into()))?;
        next = next.next_multiple_of(align);
    }
    if next > u64::from(u32::MAX) {
        return Err(Error::TooLarge(format!("{next} blocks, at most 2^32 - 1")));
    }
    // The metabox scratch region follows the image's blocks.
    let box_base = next * bs;
    let box_len = if box_nodes > 0 {
        boxed.cursor.next_multiple_of(bs)
    } else {
        0
    };
    for p in inodes.iter_mut().filter(|p| p.in_box) {
        p.off += box_base;
        if let Some(z) = p.z.as_mut() {
            z.map_off += box_base;
        }
    }
    Ok(Layout {
        inodes,
        meta_blkaddr,
        blocks: next,
        blob_start,
        box_base,
        box_len,
        meta_free,
        far,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(bs: u64, cursor: u64) -> MetaAlloc {
        MetaAlloc {
            bs,
            cursor,
            gaps: BTreeSet::new(),
        }
    }

    #[test]
    fn items_without_tails_may_cross_blocks() {
        let mut a = alloc(512, 1152);
        // An inline item leaves a gap; one without a tail fills it, the next crosses.
        assert_eq!(a.place_in_block(300), 1152); // cursor 1452
        assert_eq!(a.place_in_block(100), 1536); // 1472 + 100 crosses: gap 1472..1536
        assert_eq!(a.place(64), 1472); // the gap
        assert_eq!(a.place(72), 1664); // the cursor (1636) rounded up to a slot
        assert_eq!(a.place(72), 1760);
        assert_eq!(a.place(300), 1856); // 1856..2156 crosses 2048
        assert_eq!(a.cursor, 2156);
    }

    #[test]
    fn items_stay_inside_one_block_and_gaps_are_reused() {
        let mut a = alloc(512, 1152);
        // (size, expected offset)
        let cases = [
            (300, 1152), // fits block 2 (1024..1536)
            (200, 1536), // 1152+300 -> 1472; 1472+200 crosses: new block, gap 1472..1536
            (64, 1472),  // best fit: the 64-byte gap
            (100, 1760), // the cursor (1736) rounded up to a slot
        ];
        for (need, want) in cases {
            let at = a.place_in_block(need);
            assert_eq!(at, want, "placing {need}");
            assert_eq!(at % SLOT, 0);
            if need <= 512 {
                assert_eq!(
                    at / 512,
                    (at + need - 1) / 512,
                    "{need} bytes at {at} cross a block"
                );
            }
        }
    }

    #[test]
    fn gap_remainders_are_slot_aligned() {
        let mut a = alloc(4096, 0);
        a.place_in_block(4000); // cursor 4000
        a.place_in_block(200); // new block; gap 4000..4096
        assert_eq!(a.take_gap(40), Some(4000));
        // 4040 rounds up to 4064, leaving 32 bytes.
        assert_eq!(a.gaps.iter().copied().collect::<Vec<_>>(), vec![(32, 4064)]);
        assert_eq!(a.take_gap(33), None);
    }
}
