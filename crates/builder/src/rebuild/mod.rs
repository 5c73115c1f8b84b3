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
//!   whose image holds metadata only;
//! - `layers`: what the ordinary pipeline asks of the merged tree's layers (where a
//!   node's data is, the device table); it imports nothing of the pipeline, which
//!   imports it, while this file drives the pipeline.
//!
//! The rest of the build (xattrs, layout, data, writer) is the ordinary pipeline:
//! it asks [`Layers`] where a node's data is.

mod chunks;
pub(crate) mod layers;
mod merge;
pub(crate) mod mode;
mod open;

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::options::BuildOptions;
use crate::writer::BuildReport;

pub use mode::RebuildData;

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
    /// `--incremental`: the first layer is the image being added to, which becomes
    /// the result: written in place after its blocks when it can be (its files
    /// keep their data there), else afresh over it (see `in_place_start`). Its
    /// files' data is kept (with `Reserve` too), and its UUID unless `keep_uuid` is
    /// false. [`RebuildData::BlobIndex`] cannot be combined with it.
    pub incremental: bool,
    /// With `incremental`: the result takes the base image's UUID.
    pub keep_uuid: bool,
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
    let layers = open::open_all(&ro.layers, ro.data)?;
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
    let append = if ro.incremental {
        in_place_start(&layers[0], image, &opts)
    } else {
        None
    };
    crate::writer::in_pool(&opts, || {
        let tree = merge::merge(layers, ro, &opts, append.is_some())?;
        crate::writer::finish_at(tree, image, &opts, append)
    })
}

/// `--incremental`, as mkfs.erofs does it: the new metadata and data are written
/// after the base image's blocks, which stay as they are (its files keep their
/// data there), and the new superblock, written last, points at them. Unlike
/// mkfs.erofs, which rewrites the root inode and the `..` entries of kept
/// directories inside the old blocks, every inode is written anew after them, so
/// the old blocks are never written to: a crash before the superblock leaves the
/// old image (with unused bytes after it), and the superblock is one small write.
///
/// Returns the block to start at, or `None` when the image is written afresh
/// instead (temporary file and rename): when the base has extra devices or a
/// metabox, or the build needs more than the superblock in block 0 (compression
/// configs other than the base's, a metadata zone, a metabox, `--offset`).
/// (mkfs.erofs refuses compression the base lacks; ishare writes afresh then.)
fn in_place_start(base: &open::Layer, image: &Path, opts: &BuildOptions) -> Option<u64> {
    let sb = base.image.superblock();
    // The compression configs follow the superblock: those of the base, or none.
    let cfgs_kept = opts.compression.as_ref().is_none_or(|c| {
        let want = crate::compress::config::compr_cfgs(c, opts.block_size);
        let mut have = vec![0u8; want.len()];
        let at = ishare_erofs::format::SUPER_OFFSET + 128;
        want.is_empty()
            || (std::fs::File::open(image)
                .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut have, at))
                .is_ok()
                && have == want)
    });
    let simple = base.device.is_none()
        && sb.metabox_nid.is_none()
        && cfgs_kept
        && opts.metabox.is_none()
        && opts.metazone == crate::metabox::MetaZone::default()
        && opts.offset == 0
        && opts.block_map.is_none()
        && base.path == image;
    // The file as it is now: its blocks, rounded up, are kept.
    let len = std::fs::metadata(image).ok()?.len();
    simple.then(|| len.div_ceil(u64::from(sb.block_size())))
}
