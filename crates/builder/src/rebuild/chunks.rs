//! Where a file's data stays in its layer ([`RebuildData::BlobIndex`]): the merged
//! image gets a chunk-based inode whose indexes name the layer's device and block.
//!
//! A contiguous file (flat layout) becomes one chunk of the smallest power of two
//! that covers it, capped at the format's largest, as mkfs.erofs does; a
//! chunk-based file keeps its chunk size and each chunk's block. Everything is
//! checked against the layer, since the kernel would otherwise read past a device:
//! extents must be block-aligned, contiguous over each chunk and inside the layer.
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
    let limit = layer_blocks(layer).max(1);
    if count > limit {
        return Err(bad(
            &layer.path,
            format!(
                "{}: {size} bytes is larger than the layer could hold",
                name()
            ),
        ));
    }
    let mut blocks = Vec::with_capacity(count as usize);
    for k in 0..count {
        let pos = k * chunk;
        let want = chunk.min(size - pos);
        let ext = img
            .map(inode, pos)
            .map_err(|e| bad(&layer.path, format!("{}: {e}", name())))?;
        match ext.kind {
            ExtentKind::Hole => blocks.push(HOLE),
            ExtentKind::Mapped { device: 0, offset } => {
                let covered = ext.logical + ext.len - pos;
                let end = offset.checked_add(want.next_multiple_of(bs));
                if !offset.is_multiple_of(bs)
                    || ext.logical != pos
                    || covered < want
                    || end.is_none_or(|e| e > layer_blocks(layer) * bs)
                {
                    return Err(bad(
                        &layer.path,
                        format!(
                            "{}: its data at byte {offset} is not block-aligned, contiguous \
                             and inside the layer",
                            name()
                        ),
                    ));
                }
                let blk = u32::try_from(offset / bs).map_err(|_| {
                    Error::TooLarge(format!("block {} of {}", offset / bs, layer.path.display()))
                })?;
                blocks.push(blk);
            }
            ExtentKind::Inline { .. } => return Err(inline_msg()),
            _ => {
                return Err(bad(
                    &layer.path,
                    format!("{}: its data is not on the layer's own device", name()),
                ));
            }
        }
    }
    Ok(ChunkMap {
        rel: rel as u16,
        blocks,
    })
}

/// Blocks of the layer's own device: its superblock's count, or the file's length
/// if that is shorter (a truncated layer).
pub(crate) fn layer_blocks(layer: &Layer) -> u64 {
    let sb = layer.image.superblock();
    sb.blocks.min(layer.image.size() >> sb.blkszbits)
}
