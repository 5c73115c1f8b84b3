//! Rebuild mode (`mkfs.erofs IMAGE LAYER1.erofs LAYER2.erofs ...`): one image whose
//! tree is the overlay of EROFS layer images, later layers above earlier ones, as
//! overlayfs would show them stacked.
//!
//! One file per job:
//! - `open`: opens and vets each layer (hostile images fail here or in `merge`,
//!   with the layer's name, never later in the writer);
//! - `merge`: the overlay of the layers' trees into the one [`Tree`] every later
//!   pass reads, with whiteouts and opaque directories resolved or kept;
//! - `chunks`: where each file's data stays in its layer, for the default mode
//!   whose image holds metadata only.
//!
//! The rest of the build (xattrs, layout, data, writer) is the ordinary pipeline:
//! it asks [`Layers`] where a node's data is.

mod chunks;
mod merge;
mod open;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ishare_erofs::{Image, Inode};

use crate::error::Result;
use crate::options::BuildOptions;
use crate::writer::BuildReport;

/// What becomes of the layers' file data (`--clean=X` / `--incremental=X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildData {
    /// The default: the image holds metadata only; each regular file is
    /// chunk-indexed into its layer, which is an extra device of the image (its
    /// device table lists the layers in the order given; mount with
    /// `-o device=LAYER1,device=LAYER2,...`).
    BlobIndex,
    /// `=data`: the data is copied into the image, which stands alone.
    Full,
    /// `=rvsp`: room for the data is reserved in the image but not written (the
    /// files read as zeros until a later tool fills the blocks in).
    Reserve,
}

/// How to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The layer images, lowest first.
    pub layers: Vec<PathBuf>,
    /// Where file data goes.
    pub data: RebuildData,
    /// `--ovlfs-strip=1`: drop whiteouts and `trusted.overlay.opaque` from the
    /// result (they are resolved against the layers below either way); without it
    /// they stay, so the image can itself be a layer of an overlay.
    pub ovlfs_strip: bool,
    /// `--incremental`: the first layer is the image being added to, which is
    /// replaced by the result. Its files are always copied (with `Reserve` too:
    /// their data is there already), and its UUID is kept unless `keep_uuid` is
    /// false. [`RebuildData::BlobIndex`] cannot be combined with it.
    pub incremental: bool,
    /// With `incremental`: the result takes the base image's UUID.
    pub keep_uuid: bool,
}

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

/// Builds the overlay of `ro.layers` at `image`.
pub fn build_rebuild(
    ro: &RebuildOptions,
    image: &Path,
    opts: &BuildOptions,
) -> Result<BuildReport> {
    if ro.incremental && ro.data == RebuildData::BlobIndex {
        return Err(crate::error::Error::InvalidOption(
            "an incremental build copies the data (data) or reserves room for it (rvsp)".into(),
        ));
    }
    // The layers' files keep their own chunking (or are copied flat); a blob of
    // deduplicated chunks, in the image or on a device, is not made from them.
    if opts.chunk_size.is_some() || opts.blob_device.is_some() {
        return Err(crate::error::Error::InvalidOption(
            "--chunksize and --blobdev do not apply to rebuild mode (EROFS images as sources)"
                .into(),
        ));
    }
    let layers = open::open_all(&ro.layers)?;
    let mut opts = opts.clone();
    if ro.incremental && ro.keep_uuid {
        opts.uuid = layers[0].image.superblock().raw.uuid;
    }
    // The layers' blocks are referenced (or copied) as they are, so the image takes
    // their block size whatever -b says, as mkfs.erofs does.
    opts.block_size = layers[0].image.superblock().block_size();
    // Inline tails would sit among the metadata; chunk maps and reserved ranges
    // cover whole blocks. Nor is there data to compress: it stays in the layers,
    // or is still to come (as with mkfs.erofs, `-z` then changes nothing).
    if ro.data != RebuildData::Full {
        opts.inline_data = false;
        opts.compression = None;
    }
    // Reserved room holds no data to take a digest of, and the layers' digests are
    // of the data still to come: carry them as they are (as mkfs.erofs does).
    if ro.data == RebuildData::Reserve {
        opts.fingerprint = None;
    }
    // Without fingerprints of our own the layers' are carried as they are; naming
    // them through a long prefix, as in the layers, keeps each to a few bytes.
    if opts.fingerprint.is_none() {
        for l in &layers {
            if let Some(p) = l.image.fingerprint_prefix() {
                let name = p.full_name();
                if !opts.xattr_prefixes.contains(&name) {
                    opts.xattr_prefixes.push(name);
                }
            }
        }
    }
    crate::writer::in_pool(&opts, || {
        let tree = merge::merge(layers, ro, &opts)?;
        crate::writer::finish(tree, image, &opts)
    })
}

/// The device table of a merged image: one slot per layer, in the order given
/// (device `i + 1` is layer `i`), tagged with the layer's UUID in hex as mkfs.erofs
/// does, its blocks following the image's own (`primary_blocks`) and each other's
/// in the unified address space.
pub(crate) fn device_slots(
    layers: &Layers,
    primary_blocks: u64,
) -> Result<Vec<ishare_erofs::format::DeviceSlot>> {
    use zerocopy::little_endian::{U16, U32};
    let mut uniaddr = primary_blocks;
    let mut out = Vec::with_capacity(layers.images.len());
    for l in &layers.images {
        let blocks = chunks::layer_blocks(l);
        if uniaddr + blocks > u64::from(u32::MAX) {
            return Err(crate::error::Error::TooLarge(format!(
                "the image and its layers take {} blocks; a device table holds 2^32 - 1",
                uniaddr + blocks
            )));
        }
        let mut tag = [0u8; 64];
        let hex: String = l
            .image
            .superblock()
            .raw
            .uuid
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tag[..32].copy_from_slice(hex.as_bytes());
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
