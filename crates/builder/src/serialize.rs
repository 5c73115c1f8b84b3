//! Serializing metadata: an inode with its xattrs and chunk or compressed map, the
//! device table slot of a tar index, and the superblock. The writer decides where
//! each goes; this file only turns placed nodes into bytes.

use ishare_erofs::format::*;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::chunk::ChunkAt;
use crate::compress::config::{LZ4_MAX_DISTANCE, algorithms_bitmap, uses_cfgs};
use crate::compress::map::zmap;
use crate::error::{Error, Result};
use crate::layout::{ChunkTarget, Layout, NULL_STARTBLK, Placed};
use crate::options::BuildOptions;
use crate::tree::{Kind, Node, Tree};
use crate::wide::InodeFormat;
use crate::xattr::Prefixes;

/// Serializes inode `i` of `tree` as placed in `lay`: the inode, its xattrs, and its
/// chunk map or compressed map.
#[allow(clippy::too_many_arguments)]
pub(crate) fn inode_record(
    buf: &mut Vec<u8>,
    tree: &Tree,
    lay: &Layout,
    i: usize,
    body: &crate::xattr::Body,
    fingerprint: &[u8],
    z: Option<&crate::compress::extent::ZFile>,
    opts: &BuildOptions,
    enc: &Encoding<'_>,
) {
    let p = &lay.inodes[i];
    // Rebuild mode: where the file's chunks lie in its layer.
    let layer_chunks = tree
        .layers
        .as_ref()
        .and_then(|l| l.files.get(&i)?.chunks.as_ref())
        .map(|c| c.blocks.as_slice());
    let enc = Encoding {
        layer_chunks,
        ..*enc
    };
    inode_bytes(buf, &tree.nodes[i], p, i, body, fingerprint, &enc);
    if let (Some(z), Some(zp)) = (z, &p.z) {
        buf.resize((zp.map_off - p.off) as usize, 0);
        let start_of = |n: usize| lay.inodes[n].startblk;
        let map = zmap(
            z, p.size, zp.inline, p.startblk, &start_of, opts, zp.map_off, lay.far,
        );
        buf.extend_from_slice(&map.bytes);
        // The form (so the size) cannot depend on where the data starts (see
        // PROVISIONAL_STARTBLK); writing past the placed length would corrupt the
        // next inode, so this is checked in every build.
        assert!(
            map.layout == p.layout && buf.len() as u64 == p.meta_len,
            "map of inode {i} changed form between layout and write"
        );
    }
}

/// Bytes of a device table slot.
pub(crate) const DEVT_SLOT: u64 = DEVT_SLOT_SIZE as u64;

/// The device table slot of the tar in `--tar=i`: its blocks follow the image's own
/// in the unified address space, so the image with the tar appended mounts with no
/// `device=` option (and with one, the tar is the device).
pub(crate) fn device_slot(a: &crate::tree::Archive, lay: &Layout, bs: u64) -> Result<DeviceSlot> {
    let blocks = a.len.div_ceil(bs);
    // Chunk indexes hold 32-bit addresses without the 48-bit feature, and the
    // unified address of the last tar block must fit them too.
    if lay.blocks + blocks > u64::from(u32::MAX) {
        return Err(Error::TooLarge(format!(
            "the image and the tar take {} blocks of {bs} bytes; an index holds 2^32 - 1",
            lay.blocks + blocks
        )));
    }
    Ok(DeviceSlot {
        tag: [0; 64],
        blocks_lo: U32::new(blocks as u32),
        uniaddr_lo: U32::new(lay.blocks as u32),
        blocks_hi: U16::new(0),
        uniaddr_hi: U16::new(0),
        reserved: [0; 52],
    })
}

/// What an inode's bytes depend on besides its node and placement.
pub(crate) struct Encoding<'a> {
    pub(crate) fmt: &'a InodeFormat,
    /// A chunk-based file's map (empty for other inodes).
    pub(crate) blob_map: &'a [ChunkAt],
    /// First block of the chunk blob in the image.
    pub(crate) blob_start: u64,
    /// Rebuild mode: each chunk's first block in the file's layer (`u32::MAX`: a
    /// hole); set by `inode_record`.
    pub(crate) layer_chunks: Option<&'a [u32]>,
}

/// Serializes an inode with its xattrs and chunk map.
pub(crate) fn inode_bytes(
    out: &mut Vec<u8>,
    n: &Node,
    p: &Placed,
    index: usize,
    body: &crate::xattr::Body,
    fingerprint: &[u8],
    enc: &Encoding<'_>,
) {
    let Encoding {
        fmt,
        blob_map,
        blob_start,
        layer_chunks,
    } = *enc;
    let i_u = match (&n.kind, &p.chunks) {
        (Kind::Special, _) => n.rdev,
        (_, Some(c)) => u32::from(c.format),
        // Compressed: the blocks the data takes (st_blocks).
        _ if p.z.is_some() => p.nblocks as u32,
        // An empty file was never given a data address: mkfs.erofs leaves 0.
        (Kind::File, None) if p.size == 0 => 0,
        _ => p.startblk,
    };
    // i_ino is informational (32-bit stat); the serial number, as mkfs.erofs.
    let ino = U32::new((index as u32).wrapping_add(1));
    let mut i_format = p.layout << I_DATALAYOUT_BIT;
    if fmt.dot_omitted && matches!(n.kind, Kind::Dir { .. }) {
        i_format |= 1 << I_DOT_OMITTED_BIT;
    }
    // 48-bit: an uncompressed flat inode without data blocks has the null address,
    // whose upper 16 bits go in `i_nb` where that is not the link count (extended
    // inodes), as mkfs.erofs writes it.
    let null_hi = fmt.wide
        && i_u == NULL_STARTBLK
        && p.chunks.is_none()
        && p.z.is_none()
        && !matches!(n.kind, Kind::Special);
    if p.extended {
        let d = InodeExtended {
            i_format: U16::new(INODE_LAYOUT_EXTENDED | i_format),
            i_xattr_icount: U16::new(body.icount()),
            i_mode: U16::new(n.mode),
            i_nb: U16::new(if null_hi { u16::MAX } else { 0 }),
            i_size: U64::new(p.size),
            i_u: U32::new(i_u),
            i_ino: ino,
            i_uid: U32::new(n.uid),
            i_gid: U32::new(n.gid),
            i_mtime: U64::new(n.mtime as u64),
            i_mtime_nsec: U32::new(n.mtime_nsec),
            i_nlink: U32::new(n.nlink),
            i_reserved2: [0; 16],
        };
        out.extend_from_slice(d.as_bytes());
    } else {
        // Fits were checked by the layout; without the 48-bit layout the mtime is
        // the epoch, offset 0.
        let d = InodeCompact {
            i_format: U16::new(INODE_LAYOUT_COMPACT | i_format),
            i_xattr_icount: U16::new(body.icount()),
            i_mode: U16::new(n.mode),
            i_nb: U16::new(n.nlink as u16),
            i_size: U32::new(p.size as u32),
            i_mtime: U32::new(fmt.compact_mtime(n.mtime, n.mtime_nsec).unwrap_or(0)),
            i_u: U32::new(i_u),
            i_ino: ino,
            i_uid: U16::new(n.uid as u16),
            i_gid: U16::new(n.gid as u16),
            i_reserved: U32::new(0),
        };
        out.extend_from_slice(d.as_bytes());
    }
    body.write(out, fingerprint);
    if let Some(c) = &p.chunks {
        out.resize((out.len() as u64).next_multiple_of(c.unit) as usize, 0);
        for k in 0..c.count {
            // Block addresses were checked to fit 32 bits by the layout (image) and
            // by `check_device_blocks` (the tar of `--tar=i`).
            let (device, blk) = match c.target {
                ChunkTarget::Blob { device } => match blob_map[k as usize] {
                    // Holes are the null address on the primary device, as mkfs.erofs.
                    ChunkAt::Hole => (0, u32::MAX),
                    ChunkAt::At { blk, .. } if device => (1, blk as u32),
                    ChunkAt::At { blk, .. } => (0, (blob_start + blk) as u32),
                },
                ChunkTarget::Device(start) => (1, (start + k * c.blocks_per_chunk) as u32),
                ChunkTarget::Hole => (0, u32::MAX),
                // Checked against the layer by `rebuild::chunks`.
                ChunkTarget::Layer(l) => match layer_chunks.map(|c| c[k as usize]) {
                    Some(u32::MAX) | None => (0, u32::MAX),
                    Some(b) => (l, b),
                },
            };
            if c.format & CHUNK_FORMAT_INDEXES != 0 {
                let idx = ChunkIndex {
                    startblk_hi: U16::new(0),
                    device_id: U16::new(device),
                    startblk_lo: U32::new(blk),
                };
                out.extend_from_slice(idx.as_bytes());
            } else {
                out.extend_from_slice(&blk.to_le_bytes());
            }
        }
    }
    debug_assert!(p.z.is_some() || out.len() as u64 == p.meta_len);
}

/// Where the superblock's packed-inode related fields come from.
pub(crate) struct Packing<'a> {
    /// Byte offset of the long prefix table: in the image, or in the packed inode.
    pub(crate) prefix_off: u64,
    pub(crate) plain_prefixes: bool,
    pub(crate) packed_nid: Option<u64>,
    /// Some pcluster is shared or partly referenced.
    pub(crate) dedupe: bool,
    /// The image's compression settings (with the metabox's algorithm).
    pub(crate) compression: Option<&'a crate::compress::config::Compression>,
}

pub(crate) fn superblock(
    opts: &BuildOptions,
    bits: u8,
    tree: &Tree,
    lay: &Layout,
    prefixes: &Prefixes,
    xplan: &crate::xattr::Plan,
    pk: Packing<'_>,
) -> SuperBlock {
    let bs = u64::from(opts.block_size);
    let mut compat = FEATURE_COMPAT_MTIME;
    let mut incompat = 0;
    if opts.sb_checksum {
        compat |= FEATURE_COMPAT_SB_CHKSUM;
    }
    if xplan.any_filter {
        compat |= FEATURE_COMPAT_XATTR_FILTER;
    }
    if !prefixes.table.is_empty() {
        if pk.plain_prefixes {
            compat |= FEATURE_COMPAT_PLAIN_XATTR_PFX;
        }
        incompat |= FEATURE_INCOMPAT_XATTR_PREFIXES;
    }
    // Also DEDUPE (the same bit).
    if pk.packed_nid.is_some() || pk.dedupe {
        incompat |= FEATURE_INCOMPAT_FRAGMENTS;
    }
    if prefixes.fingerprint.is_some() {
        compat |= FEATURE_COMPAT_ISHARE_XATTRS;
    }
    if lay.inodes.iter().any(|p| p.chunks.is_some()) {
        incompat |= FEATURE_INCOMPAT_CHUNKED_FILE;
    }
    let mut u1 = 0;
    if let Some(c) = pk.compression {
        incompat |= FEATURE_INCOMPAT_LZ4_0PADDING;
        if uses_cfgs(c, opts.block_size) {
            // Also BIG_PCLUSTER (the same bit).
            incompat |= FEATURE_INCOMPAT_COMPR_CFGS;
            u1 = algorithms_bitmap(c);
        } else {
            u1 = LZ4_MAX_DISTANCE;
        }
        if lay.inodes.iter().any(|p| p.z.is_some_and(|z| z.inline)) {
            incompat |= FEATURE_INCOMPAT_ZTAILPACKING;
        }
    }
    let wide = opts.format_48bit || opts.dot_omitted;
    if wide {
        incompat |= FEATURE_INCOMPAT_48BIT;
    }
    let mut volume_name = [0u8; 16];
    volume_name[..opts.label.len()].copy_from_slice(&opts.label);
    SuperBlock {
        magic: U32::new(SUPER_MAGIC_V1),
        checksum: U32::new(0),
        feature_compat: U32::new(compat),
        blkszbits: bits,
        sb_extslots: 0,
        rootnid_2b: U16::new(lay.nid(0, bs) as u16),
        inos: U64::new(tree.nodes.len() as u64),
        epoch: U64::new(crate::wide::epoch(opts, wide)),
        fixed_nsec: U32::new(0),
        blocks_lo: U32::new(lay.blocks as u32),
        meta_blkaddr: U32::new(lay.meta_blkaddr),
        xattr_blkaddr: U32::new(0),
        uuid: opts.uuid,
        volume_name,
        feature_incompat: U32::new(incompat),
        u1: U16::new(u1),
        extra_devices: U16::new(0),
        devt_slotoff: U16::new(0),
        dirblkbits: 0,
        xattr_prefix_count: prefixes.table.len() as u8,
        xattr_prefix_start: U32::new((pk.prefix_off / 4) as u32),
        packed_nid: U64::new(pk.packed_nid.unwrap_or(0)),
        xattr_filter_reserved: 0,
        ishare_xattr_prefix_id: prefixes.fingerprint.unwrap_or(0),
        reserved: [0; 2],
        build_time: U32::new(crate::wide::build_time(opts, wide)),
        rootnid_8b: U64::new(0),
        reserved2: [0; 8],
        metabox_nid: U64::new(0),
        reserved3: [0; 8],
    }
}
