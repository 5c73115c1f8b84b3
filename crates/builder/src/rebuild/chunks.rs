//! Where a file's data stays in its layer ([`RebuildData::BlobIndex`]): the merged
//! image gets a chunk-based inode whose indexes name the layer's device and block.
//!
//! A contiguous file (flat layout) becomes one chunk of the smallest power of two
//! that covers it, capped at the format's largest, as mkfs.erofs does; a
//! chunk-based file keeps its chunk size and each chunk's block. Everything is
//! checked against the layer, since the kernel would otherwise read past a device:
//! extents must be block-aligned, contiguous over each chunk and inside the layer.
//!
//! A layer with an extra device of its own (a tar index's tar) is referred to
//! through that device: its files' chunks must all be there, and keep their block
//! numbers on it, as mkfs.erofs flattens them.
//!
//! [`RebuildData::BlobIndex`]: super::RebuildData::BlobIndex

use ishare_erofs::format::CHUNK_FORMAT_BLKBITS_MASK;
use ishare_erofs::{DataLayout, ExtentKind, Image, Inode};

use super::open::{Layer, bad};
use crate::error::{Error, Result};

/// Block address of a hole in a chunk index.
pub(crate) const HOLE: u32 = u32::MAX;

/// A file's chunks in its layer.
#[derive(Debug, Clone)]
pub(crate) struct ChunkMap {
    /// Chunk size shift over the block size.
    pub rel: u16,
    /// Each chunk's first block on the layer's device, [`HOLE`] for a hole.
    pub blocks: Vec<u32>,
}

/// The chunk map of `inode` (a regular file of `size > 0`) in `layer`; `path` is
/// its path in the merged tree, for messages.
pub(crate) fn map(layer: &Layer, inode: &Inode, path: &[u8]) -> Result<ChunkMap> {
    let img: &Image = &layer.image;
    let sb = img.superblock();
    let bits = u32::from(sb.blkszbits);
    let bs = 1u64 << bits;
    let size = inode.size;
    let name = || String::from_utf8_lossy(path).into_owned();
    let inline_msg = || {
        bad(
            &layer.path,
            format!(
                "{}: its last block is inline in the metadata and cannot be referenced \
                 in place; build the layer with -Enoinline_data, or use --clean=data",
                name()
            ),
        )
    };
    if inode.layout == DataLayout::FlatInline && !size.is_multiple_of(bs) {
        return Err(inline_msg());
    }
    let rel = match inode.layout {
        DataLayout::FlatPlain | DataLayout::FlatInline => {
            let need = u64::BITS - (size - 1).leading_zeros();
            need.saturating_sub(bits)
                .min(u32::from(CHUNK_FORMAT_BLKBITS_MASK))
        }
        DataLayout::ChunkBased => u32::from(inode.chunk_format() & CHUNK_FORMAT_BLKBITS_MASK),
        _ => {
            return Err(bad(
                &layer.path,
                format!(
                    "{}: compressed files cannot be referenced in place; \
                     use --clean=data to copy the data, or build the layer uncompressed",
                    name()
                ),
            ));
        }
    };
    let chunk = bs << rel;
    let count = size.div_ceil(chunk);
    // One index per chunk: a hostile size could ask for billions.
    let limit = layer.blocks().max(1);
    if count > limit {
        return Err(bad(
            &layer.path,
            format!(
                "{}: {size} bytes is larger than the layer could hold",
                name()
            ),
        ));
    }
    // A device's size is the layer's word (a tar kept apart is not seen): grow the
    // map as the chunks prove to be there rather than trusting the count.
    let mut blocks = Vec::with_capacity(count.min(1 << 16) as usize);
    for k in 0..count {
        let pos = k * chunk;
        let want = chunk.min(size - pos);
        let ext = img
            .map(inode, pos)
            .map_err(|e| bad(&layer.path, format!("{}: {e}", name())))?;
        let (device, offset) = match ext.kind {
            ExtentKind::Hole => {
                blocks.push(HOLE);
                continue;
            }
            ExtentKind::Mapped { device, offset } => (device, offset),
            ExtentKind::Inline { .. } => return Err(inline_msg()),
            _ => {
                return Err(bad(
                    &layer.path,
                    format!("{}: its data is not stored plainly", name()),
                ));
            }
        };
        let offset = on_own_device(layer, device, offset).ok_or_else(|| {
            bad(
                &layer.path,
                format!(
                    "{}: its data is in the layer image, not on the layer's extra device \
                     (its tar or blob) that the merged image refers to; use --clean=data",
                    name()
                ),
            )
        })?;
        let covered = ext.logical + ext.len - pos;
        let end = offset.checked_add(want.next_multiple_of(bs));
        if !offset.is_multiple_of(bs)
            || ext.logical != pos
            || covered < want
            || end.is_none_or(|e| e > layer.blocks() * bs)
        {
            return Err(bad(
                &layer.path,
                format!(
                    "{}: its data at byte {offset} of {} is not block-aligned, contiguous \
                     and inside it ({} blocks)",
                    name(),
                    if layer.device.is_some() {
                        "the layer's extra device"
                    } else {
                        "the layer"
                    },
                    layer.blocks()
                ),
            ));
        }
        let blk = u32::try_from(offset / bs).map_err(|_| {
            Error::TooLarge(format!("block {} of {}", offset / bs, layer.path.display()))
        })?;
        blocks.push(blk);
    }
    Ok(ChunkMap {
        rel: rel as u16,
        blocks,
    })
}

/// Byte `offset` of device `device` of the layer as an offset on the device the
/// merged image refers to for it: the layer image (device 0) when it has no extra
/// device; else its extra device, addressed directly (device 1) or through the
/// layer's unified address space. `None` when the data is elsewhere.
fn on_own_device(layer: &Layer, device: u16, offset: u64) -> Option<u64> {
    let bs = u64::from(layer.image.superblock().block_size());
    match (&layer.device, device) {
        (None, 0) => Some(offset),
        (Some(_), 1) => Some(offset),
        (Some(d), 0) => {
            let start = d.uniaddr.checked_mul(bs)?;
            let local = offset.checked_sub(start)?;
            (d.uniaddr != 0 && local < d.blocks.checked_mul(bs)?).then_some(local)
        }
        _ => None,
    }
}

/// A base file of an incremental build in place whose data is whole blocks and an
/// inline tail (`FlatInline`): the first of its whole blocks, when they lie inside
/// the image, so that they are kept and only the tail is written anew.
pub(crate) fn kept_blocks(layer: &Layer, inode: &Inode) -> Option<u32> {
    let bs = u64::from(layer.image.superblock().block_size());
    let full = inode.size / bs;
    if layer.device.is_some()
        || inode.layout != DataLayout::FlatInline
        || full == 0
        || inode.size.is_multiple_of(bs)
    {
        return None;
    }
    let start = inode.start_block()?;
    (start.checked_add(full)? <= layer.blocks())
        .then(|| u32::try_from(start).ok())
        .flatten()
        .filter(|&b| keepable(layer, b))
}

/// Whether block `blk` of the base image (or a hole) can stay where it is in an
/// incremental build in place: not the superblock's block or one before it, which
/// the build rewrites (only a damaged base puts file data there).
pub(crate) fn keepable(layer: &Layer, blk: u32) -> bool {
    let bs = u64::from(layer.image.superblock().block_size());
    let sb_end = ishare_erofs::format::SUPER_OFFSET + 128;
    blk == HOLE || u64::from(blk) * bs >= sb_end.next_multiple_of(bs)
}
