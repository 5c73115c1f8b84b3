//! `ishare`: EROFS images with page cache sharing.

mod doctor;
mod dump;
mod extract;
mod fsck;
mod mkfs;
mod mount;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ishare", version, about = "Build, read and share EROFS images")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the superblock, statistics, an inode, a directory or a file of an image.
    Dump(dump::Args),
    /// Recreate the image's tree in a directory.
    Extract(extract::Args),
    /// Check an image's consistency (and its fingerprints).
    Fsck(fsck::Args),
    /// Build an EROFS image from a directory (fingerprints on by default).
    Mkfs(Box<mkfs::Args>),
    /// Mount an image over FUSE, sharing page cache across images (-o inode_share,domain_id=ID).
    Mount(mount::Args),
    /// Unmount an `ishare mount`.
    Umount(mount::UmountArgs),
    /// Inspect (stat) or clean up (gc) the object store of `ishare mount -o inode_share`.
    Store(store::Args),
    /// Tell what this host supports (EROFS, FUSE, passthrough, the store) and the mode
    /// `ishare mount` will run in.
    Doctor(doctor::Args),
}

/// Extra devices, as `--device PATH` (repeatable), shared by the reading commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Extra device (blob) file of a multi-device image, in device table order.
    #[arg(long = "device", value_name = "PATH")]
    pub devices: Vec<PathBuf>,
}

impl DeviceArgs {
    /// Opens an image with these devices.
    pub fn open(&self, image: &std::path::Path) -> anyhow::Result<ishare_erofs::Image> {
        let opts = ishare_erofs::OpenOptions {
            devices: self.devices.clone(),
        };
        Ok(ishare_erofs::Image::open_with(image, &opts)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Dump(a) => dump::run(a),
        Cmd::Extract(a) => extract::run(a),
        Cmd::Fsck(a) => fsck::run(a),
        Cmd::Mkfs(a) => mkfs::run(*a),
        Cmd::Mount(a) => mount::run(a),
        Cmd::Umount(a) => mount::umount(a),
        Cmd::Store(a) => store::run(a),
        Cmd::Doctor(a) => doctor::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (e.g. `ishare dump --cat | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("ishare: {e:#}");
            ExitCode::FAILURE
        }
    }
}
