//! `ishare`: EROFS images with page cache sharing.

mod doctor;
mod dump;
mod extract;
mod fsck;
mod generate;
mod mkfs;
mod mount;
mod report;
mod snapshotter;
mod store;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
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
    /// What a set of images would share under inode_share: page cache with and without.
    Report(report::Args),
    /// Build an EROFS image from a directory or a tar, with mkfs.erofs 1.9.4's options
    /// (fingerprints on by default); `ishare mkfs --help` lists them.
    Mkfs(mkfs::RawArgs),
    /// Mount an image over FUSE, sharing page cache across images (-o inode_share,domain_id=ID).
    Mount(mount::Args),
    /// Unmount an `ishare mount`.
    Umount(mount::UmountArgs),
    /// List the node daemon's mounts (image, mount point, mode, shared files and bytes).
    Mounts(mount::MountsArgs),
    /// Run the node daemon: one process serving every `ishare mount` of the host.
    Daemon(mount::DaemonArgs),
    /// Inspect (stat) or clean up (gc) the object store of `ishare mount -o inode_share`.
    Store(store::Args),
    /// Serve containerd's snapshots API (a proxy snapshotter): layers become
    /// fingerprinted EROFS images shared through the node daemon.
    Snapshotter(snapshotter::Args),
    /// Tell what this host supports (EROFS, FUSE, passthrough, the store) and the mode
    /// `ishare mount` will run in.
    Doctor(doctor::Args),
    /// Write the man pages or the shell completions (for packaging).
    #[command(hide = true)]
    Generate(generate::Args),
    /// Internal: keep the node daemon's FUSE connections across its restarts (started by
    /// the daemon).
    #[command(hide = true)]
    FdHolder(mount::HolderArgs),
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

/// Called as `mount.fuse.ishare` or `mount.ishare` (a link to this program in
/// `/sbin`), `mount -t fuse.ishare IMAGE DIR -o OPTIONS` runs us with mount(8)'s helper
/// arguments, `SOURCE TARGET [-sfnv] [-o OPTIONS] [-t TYPE]`: the `ishare mount`
/// command line they stand for; `None` when called under another name, or to do
/// nothing (`-f`, fake).
fn mount_helper_args(argv: Vec<OsString>) -> Option<Result<Vec<OsString>, String>> {
    let name = Path::new(argv.first()?).file_name()?.to_str()?;
    if name != "mount.fuse.ishare" && name != "mount.ishare" {
        return None;
    }
    let mut out: Vec<OsString> = vec!["ishare".into(), "mount".into()];
    let mut places = Vec::new();
    let mut it = argv.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let Some(v) = it.next() else {
                    return Some(Err("-o needs a value".into()));
                };
                // mount(8) adds `rw` unless told `ro`; the mount is read-only
                // either way, as a kernel EROFS mount is.
                let v = v.to_string_lossy();
                let kept: Vec<&str> = v.split(',').filter(|o| *o != "rw").collect();
                if !kept.is_empty() {
                    out.extend(["-o".into(), kept.join(",").into()]);
                }
            }
            // The type, already known; sloppy, no mtab, verbose: nothing to do.
            Some("-t") => {
                it.next();
            }
            Some("-s" | "-n" | "-v") => {}
            Some("-f") => return Some(Ok(Vec::new())),
            Some(o) if o.starts_with('-') => {
                return Some(Err(format!("unknown mount helper option {o}")));
            }
            _ => places.push(a),
        }
    }
    if places.len() != 2 {
        return Some(Err("usage: mount.fuse.ishare IMAGE DIR [-o OPTIONS]".into()));
    }
    out.extend(places);
    Some(Ok(out))
}

fn main() -> ExitCode {
    // Called as `mkfs.erofs` (a link to this program): mkfs.erofs's command line.
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(name) = argv.first().and_then(|a| Path::new(a).file_name())
        && name == "mkfs.erofs"
    {
        let program = argv.remove(0).to_string_lossy().into_owned();
        return mkfs::main_mkfs_erofs(argv, &program);
    }
    let cli = match mount_helper_args(argv) {
        None => Cli::parse(),
        Some(Ok(args)) if args.is_empty() => return ExitCode::SUCCESS,
        Some(Ok(args)) => Cli::parse_from(args),
        Some(Err(e)) => {
            eprintln!("mount.fuse.ishare: {e}");
            return ExitCode::from(32); // mount(8)'s "mount failure"
        }
    };
    let res = match cli.cmd {
        Cmd::Dump(a) => dump::run(a),
        Cmd::Extract(a) => extract::run(a),
        Cmd::Fsck(a) => fsck::run(a),
        Cmd::Report(a) => report::run(a),
        Cmd::Mkfs(a) => mkfs::run_ishare(a),
        Cmd::Mount(a) => mount::run(a),
        Cmd::Umount(a) => mount::umount(a),
        Cmd::Mounts(a) => mount::mounts(a),
        Cmd::Daemon(a) => mount::daemon(a),
        Cmd::Store(a) => store::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Snapshotter(a) => snapshotter::run(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::FdHolder(a) => mount::fd_holder(a),
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
