//! Opening the layer images and refusing the ones rebuild mode cannot use, each
//! error naming the layer: a merged image refers to a layer's blocks by number on
//! its own device, so every layer must share one block size and keep its data in
//! itself (no extra devices of its own).

use std::path::{Path, PathBuf};

use ishare_erofs::Image;

use crate::error::{Error, Result};

/// One opened layer.
pub(crate) struct Layer {
    pub path: PathBuf,
    pub image: Image,
}

/// The error for something wrong in layer `path`.
pub(crate) fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::Layer {
        layer: path.to_path_buf(),
        what: what.into(),
    }
}

/// Opens every layer, lowest first.
pub(crate) fn open_all(paths: &[PathBuf]) -> Result<Vec<Layer>> {
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
        let devices = image.devices().len();
        if devices > 0 {
            return Err(bad(
                path,
                format!(
                    "it has {devices} extra device(s) of its own (a tar index or a merged image); \
                     rebuild mode takes images that hold their data"
                ),
            ));
        }
        out.push(Layer {
            path: path.clone(),
            image,
        });
    }
    Ok(out)
}
