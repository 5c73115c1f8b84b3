//! The layers behind a merged tree, as the rest of the pipeline (layout, data,
//! writer) sees them: where each regular file's data is, and the device table that
//! names the layers. Kept apart from `rebuild/mod.rs`, which drives the pipeline, so
//! that the pipeline's imports of this file make no circle.

use std::collections::HashMap;
use std::path::Path;

use ishare_erofs::{Image, Inode};

use super::mode::RebuildData;
use super::{chunks, open};
use crate::error::Result;

/// The layers behind a merged tree, and where each regular file's data is.
pub(crate) struct Layers {
    /// Opened layer images, lowest first (device `i + 1` is layer `i`).
    pub images: Vec<open::Layer>,
    /// Regular file nodes with data (by node index).
    pub files: HashMap<usize, LayerFile>,
    pub data: RebuildData,
    /// Layer 0 is the image being added to (`--incremental`).
    pub base: bool,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("layers", &self.images.len())
            .field("files", &self.files.len())
            .field("data", &self.data)
            .finish()
    }
}

/// A regular file of the merged tree, as it is in its layer.
#[derive(Debug)]
pub(crate) struct LayerFile {
    /// Index into [`Layers::images`].
    pub layer: usize,
    pub inode: Inode,
    /// The layer's fingerprint of it, when it had a well-formed one.
    pub digest: Option<[u8; 32]>,
    /// [`RebuildData::BlobIndex`]: the chunk size shift over the block size and
    /// each chunk's first block in the layer (`None` = a hole).
    pub chunks: Option<chunks::ChunkMap>,
    /// An incremental build in place: the first block of this base file's whole
    /// blocks, which it keeps (its inline tail is written anew with its inode).
    pub keep: Option<u32>,
}

impl LayerFile {
    /// Whether the placed inode `p` keeps this file's blocks where they are.
    pub(crate) fn kept(&self, p: &crate::layout::Placed) -> bool {
        self.keep.is_some_and(|b| b == p.startblk)
            && p.layout == ishare_erofs::format::INODE_FLAT_INLINE
    }
}

impl Layers {
    /// Whether node `node` only gets room for its data (`rvsp`), not the data:
    /// the files of an incremental build's base image keep theirs.
    pub(crate) fn reserved(&self, node: usize) -> bool {
        self.data == RebuildData::Reserve
            && self
                .files
                .get(&node)
                .is_some_and(|f| !(self.base && f.layer == 0))
    }

    /// The layer image of node `node`, with its inode and path, if it is a
    /// regular file taken from a layer.
    pub(crate) fn file(&self, node: usize) -> Option<(&Image, &Inode, &Path)> {
        let f = self.files.get(&node)?;
        let l = &self.images[f.layer];
        Some((&l.image, &f.inode, &l.path))
    }
}

/// The device table of a merged image: one slot per layer, in the order given
/// (device `i + 1` is layer `i`), its blocks following the image's own
/// (`primary_blocks`) and each other's in the unified address space. A slot is the
/// layer image, tagged with its UUID in hex; or, for a layer that keeps its data on
/// an extra device of its own (a tar index), that device, with its size and its tag
/// (the layer's UUID in hex when it has none), as mkfs.erofs flattens them.
pub(crate) fn device_slots(
    layers: &Layers,
    primary_blocks: u64,
) -> Result<Vec<ishare_erofs::format::DeviceSlot>> {
    use zerocopy::little_endian::{U16, U32};
    let mut uniaddr = primary_blocks;
    let mut out = Vec::with_capacity(layers.images.len());
    for l in &layers.images {
        let blocks = l.blocks();
        if uniaddr + blocks > u64::from(u32::MAX) {
            return Err(open::bad(
                &l.path,
                format!(
                    "with its {blocks} blocks the image and its layers take {} blocks; \
                     a device table addresses 2^32 - 1",
                    uniaddr + blocks
                ),
            ));
        }
        let mut tag = [0u8; 64];
        match &l.device {
            Some(d) if !d.tag.is_empty() => tag[..d.tag.len()].copy_from_slice(&d.tag),
            _ => {
                let hex = hex::encode(l.image.superblock().raw.uuid);
                tag[..32].copy_from_slice(hex.as_bytes());
            }
        }
        out.push(ishare_erofs::format::DeviceSlot {
            tag,
            blocks_lo: U32::new(blocks as u32),
            uniaddr_lo: U32::new(uniaddr as u32),
            blocks_hi: U16::new(0),
            uniaddr_hi: U16::new(0),
            reserved: [0; 52],
        });
        uniaddr += blocks;
    }
    Ok(out)
}
