//! Opening the layer images and refusing the ones rebuild mode cannot use, each
//! error naming the layer: a merged image refers to a layer's blocks by number on
//! one device per layer, so every layer must share one block size.
//!
//! A layer may keep its data on one extra device of its own, as erofs-utils 1.9.4
//! allows: a tar index (`--tar=i`, whose device is the tar, appended to the image
//! as containerd does or kept apart), a `--blobdev` image, or a merged image of one
//! layer. The merged image then refers to that device rather than to the layer image
//! (its slot takes the device's size and tag), so it is mounted with `device=` naming
//! the tars. As in mkfs.erofs, a layer with several devices is refused, and so is a
//! mix of layers with and without one when the data stays in place (each slot is
//! either a layer image or a layer's device).

use std::path::{Path, PathBuf};

use ishare_erofs::{DeviceInfo, Image};

use super::mode::RebuildData;
use crate::error::{Error, Result};

/// One opened layer.
pub(crate) struct Layer {
    pub path: PathBuf,
    pub image: Image,
    /// The layer's own extra device, which holds its file data.
    pub device: Option<DeviceInfo>,
    /// The layer's file data can be read from the layer file: it has no extra
    /// device, or the device is appended to it whole at its unified address (the
    /// reader then finds it there, as the kernel does without `device=`).
    pub readable: bool,
}

impl Layer {
    /// Blocks of the device the merged image refers to for this layer: the layer's
    /// own extra device, or else the layer image (its superblock's count, or the
    /// file's length if that is shorter: a truncated layer).
    pub(crate) fn blocks(&self) -> u64 {
        match &self.device {
            Some(d) => d.blocks,
            None => {
                let sb = self.image.superblock();
                sb.blocks.min(self.image.size() >> sb.blkszbits)
            }
        }
    }

    /// Why the data of this layer's files cannot be read here (for copying it or
    /// taking its digest), when it cannot.
    pub(crate) fn unreadable(&self) -> Option<String> {
        let d = self.device.as_ref().filter(|_| !self.readable)?;
        Some(format!(
            "its data is on its extra device ({} blocks, the tar of a tar index or a blob) \
             and that device is not appended to it; append it (cat LAYER TAR > ...), \
             as containerd does",
            d.blocks
        ))
    }
}

/// The error for something wrong in layer `path`.
pub(crate) fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::Layer {
        layer: path.to_path_buf(),
        what: what.into(),
    }
}

/// Opens every layer, lowest first.
pub(crate) fn open_all(paths: &[PathBuf], data: RebuildData) -> Result<Vec<Layer>> {
    if paths.is_empty() {
        return Err(Error::InvalidOption(
            "rebuild mode needs at least one layer image".into(),
        ));
    }
    // The device table's count is 16 bits, and device ids in chunk indexes too.
    if paths.len() > usize::from(u16::MAX) {
        return Err(Error::InvalidOption(format!(
            "{} layers given, an image refers to at most {}",
            paths.len(),
            u16::MAX
        )));
    }
    let mut out: Vec<Layer> = Vec::with_capacity(paths.len());
    for path in paths {
        let image =
            Image::open(path).map_err(|e| bad(path, format!("not a usable EROFS image: {e}")))?;
        if let Some(first) = out.first()
            && first.image.superblock().block_size() != image.superblock().block_size()
        {
            return Err(bad(
                path,
                format!(
                    "its block size is {} bytes, that of {} is {}: all layers must share one",
                    image.superblock().block_size(),
                    first.path.display(),
                    first.image.superblock().block_size()
                ),
            ));
        }
        let (device, readable) = own_device(path, &image)?;
        out.push(Layer {
            path: path.clone(),
            image,
            device,
            readable,
        });
    }
    // Each slot of the merged device table is either a layer image or a layer's
    // own device: mkfs.erofs takes one kind for all, and so does ishare.
    if data == RebuildData::BlobIndex
        && let Some(with) = out.iter().find(|l| l.device.is_some())
        && let Some(without) = out.iter().find(|l| l.device.is_none())
    {
        return Err(bad(
            &without.path,
            format!(
                "it holds its own data, but {} keeps its data on an extra device (a tar \
                 index or a blob): a merged image refers to the layers' devices or to the \
                 layer images, not both (as with mkfs.erofs); use --clean=data to copy the data",
                with.path.display()
            ),
        ));
    }
    Ok(out)
}

/// The layer's own extra device (at most one, as mkfs.erofs requires), and whether
/// it is appended to the layer file whole (then its data is readable in place).
fn own_device(path: &Path, image: &Image) -> Result<(Option<DeviceInfo>, bool)> {
    let devices = image.devices();
    let d = match devices.as_slice() {
        [] => return Ok((None, true)),
        [d] => d.clone(),
        _ => {
            return Err(bad(
                path,
                format!(
                    "it has {} extra devices (a merged image of several layers?); a layer \
                     may have one at most, its tar or blob (as with mkfs.erofs)",
                    devices.len()
                ),
            ));
        }
    };
    let bs = u64::from(image.superblock().block_size());
    // Where the device starts and ends in the layer file when appended to it.
    let start = d.uniaddr.checked_mul(bs);
    let end = d
        .uniaddr
        .checked_add(d.blocks)
        .and_then(|b| b.checked_mul(bs));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(bad(
            path,
            format!(
                "its device table puts its extra device at block {} ({} blocks), out of range",
                d.uniaddr, d.blocks
            ),
        ));
    };
    let size = image.size();
    // Nothing after the layer's own blocks: the device is a file of its own (kept
    // apart from the image, as `mkfs.erofs --tar=i IMAGE TAR` leaves it).
    if d.uniaddr == 0 || size <= start {
        return Ok((Some(d), false));
    }
    if size < end {
        return Err(bad(
            path,
            format!(
                "its extra device (the appended tar or blob, {} blocks from byte {start}) is \
                 cut short: the file ends at byte {size}, {} bytes early",
                d.blocks,
                end - size
            ),
        ));
    }
    Ok((Some(d), true))
}
