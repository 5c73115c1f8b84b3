//! `ishare extract`: recreate an image's tree in a directory, with the reader's
//! [`Image::extract`](ishare_erofs::Image::extract) (fd-relative, never writing
//! outside the target).

use std::path::PathBuf;

use anyhow::{Result, bail};
use ishare_erofs::{ExtractError, ExtractOptions};

use crate::DeviceArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    devices: DeviceArgs,
    /// Extract into a directory that is not empty, replacing what is in the way.
    #[arg(long)]
    overwrite: bool,
    /// Threads writing file contents and metadata (default: one per core).
    ///
    /// 1 does everything in the walking thread.
    #[arg(long)]
    workers: Option<usize>,
    /// Do not restore extended attributes.
    #[arg(long)]
    no_xattrs: bool,
    /// The EROFS image.
    image: PathBuf,
    /// Target directory (created if missing).
    dir: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let img = a.devices.open(&a.image)?;
    let opts = ExtractOptions {
        overwrite: a.overwrite,
        workers: a.workers,
        xattrs: !a.no_xattrs,
    };
    match img.extract(&a.dir, &opts) {
        Err(ExtractError::NotEmpty(dir)) => bail!(
            "{} is not empty (use --overwrite to extract into it anyway)",
            dir.display()
        ),
        res => Ok(res?),
    }
}
