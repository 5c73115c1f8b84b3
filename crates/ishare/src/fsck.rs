//! `ishare fsck`: walk the whole image and check it, as `fsck.erofs` does;
//! `--xattr-inode-digest` also recomputes every fingerprint.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ishare_erofs::CheckOptions;

use crate::DeviceArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    devices: DeviceArgs,
    /// Recompute the SHA-256 of every file and compare it with its fingerprint xattr.
    #[arg(long)]
    xattr_inode_digest: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The EROFS image.
    image: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let img = a.devices.open(&a.image)?;
    if a.xattr_inode_digest && img.fingerprint_prefix().is_none() {
        bail!(
            "{}: image has no inode digest xattrs (was --xattr-inode-digest used when it was built?)",
            img.name()
        );
    }
    let opts = CheckOptions {
        verify_fingerprints: a.xattr_inode_digest,
        ..CheckOptions::default()
    };
    let r = img.check(&opts)?;
    if a.json {
        let v = serde_json::json!({
            "image": img.name(),
            "inodes": r.inodes,
            "directories": r.directories,
            "files": r.files,
            "file_bytes": r.file_bytes,
            "fingerprints_verified": r.fingerprints_verified,
            "fingerprints_missing": r.fingerprints_missing,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: clean: {} inodes ({} directories, {} files, {} bytes)",
            img.name(),
            r.inodes,
            r.directories,
            r.files,
            r.file_bytes
        );
        if a.xattr_inode_digest {
            println!(
                "fingerprints: {} verified, {} files without one",
                r.fingerprints_verified, r.fingerprints_missing
            );
        }
    }
    Ok(())
}
