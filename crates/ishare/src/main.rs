//! `ishare`: EROFS images with page cache sharing.

mod doctor;
mod dump;
mod extract;
mod fsck;
mod generate;
mod help;
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
#[command(
    name = "ishare",
    version,
    about = "Build, read and share EROFS images",
    long_about = help::ISHARE,
    after_long_help = help::ISHARE_AFTER
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the superblock, statistics, an inode, a directory or a file of an image.
    ///
    /// Reads any EROFS image, compressed or not, without mounting it. Without options
    /// it prints the superblock with every feature named; -S adds statistics (file
    /// types, size histogram, files with fingerprints). --nid or --path picks one inode
    /// and prints it (layout, size, times, xattrs, the fingerprint as sha256:HEX); with
    /// --ls it lists that directory, with -e its extents, with --cat its contents on
    /// standard output. --json prints the same as JSON.
    #[command(after_long_help = help::DUMP)]
    Dump(dump::Args),
    /// Recreate the image's tree in a directory.
    ///
    /// Writes every file of IMAGE under DIR as a kernel mount shows it: contents (holes
    /// kept sparse), modes, ownership (when run as root), times, extended attributes,
    /// symbolic and hard links, device nodes, fifos and sockets, on all cores. Nothing
    /// is written outside DIR: a name holding '/' is refused as corruption and no path
    /// is followed through a symbolic link. DIR must be empty unless --overwrite is
    /// given.
    #[command(after_long_help = help::EXTRACT)]
    Extract(extract::Args),
    /// Check an image's consistency (and its fingerprints).
    ///
    /// Walks the whole image and reads every file as a mount would: the superblock and
    /// its checksum, every inode, every directory listing (names in order, '.' and '..'
    /// right, no cycle), extended attributes and compressed data. With
    /// --xattr-inode-digest each file's content is hashed (SHA-256) and compared with
    /// its fingerprint, the xattr page cache sharing trusts.
    #[command(after_long_help = help::FSCK)]
    Fsck(fsck::Args),
    /// Predict the page cache a set of images needs, with and without sharing.
    ///
    /// Predicts from the images' metadata alone, before anything is mounted, how much
    /// page cache a set of images needs when each is mounted on its own and when
    /// identical files share one copy (the same fingerprint and size, the kernel's
    /// rule). Per image: regular files, bytes, bytes in whole pages and the part another
    /// listed image also holds; for the set: both totals and the saving, then the
    /// largest shared contents. Files of images without fingerprints are hashed, so
    /// what a rebuild would save is reported too. --verify hashes every file and counts
    /// a file whose content does not match its fingerprint as not shared.
    #[command(after_long_help = help::REPORT)]
    Report(report::Args),
    /// Build an EROFS image from a directory or a tar (mkfs.erofs 1.9.4's options).
    #[command(after_long_help = help::MKFS)]
    Mkfs(mkfs::RawArgs),
    /// Mount an image over FUSE, sharing page cache across images (-o inode_share).
    ///
    /// Serves IMAGE read-only at MOUNTPOINT over FUSE, as a kernel EROFS mount shows it.
    /// With -o inode_share and a sharing domain id, each file with a fingerprint reads
    /// from one verified backing object per content in the object store (store=DIR),
    /// through FUSE passthrough where the kernel allows it: identical files of every
    /// mount in the same domain share one copy in the page cache. Only images trusted
    /// alike should share a domain id (see the security model in ishare's
    /// documentation).
    ///
    /// The node daemon (ishare daemon, ishare.service) serves the mount, and is started
    /// when none runs; --dedicated gives the mount a daemon of its own, -f serves it
    /// from this process. Linked as /sbin/mount.fuse.ishare, it is what
    /// `mount -t fuse.ishare IMAGE DIR -o OPTIONS` and /etc/fstab run.
    #[command(after_long_help = help::MOUNT)]
    Mount(mount::Args),
    /// Unmount an `ishare mount`.
    ///
    /// Unmounts MOUNTPOINT and, when the mount had a daemon of its own, waits up to
    /// --timeout seconds for it to exit (it may first publish the objects it copied
    /// into the store). -l detaches the mount at once and does not wait.
    #[command(after_long_help = help::UMOUNT)]
    Umount(mount::UmountArgs),
    /// List the node daemon's mounts and what each shares.
    ///
    /// Asks the node daemon over its control socket for the mounts it serves: for each,
    /// the image, the mount point, the mode it runs in (passthrough, daemon reads or
    /// the kernel's) and how many files and bytes it shares.
    #[command(after_long_help = help::MOUNTS)]
    Mounts(mount::MountsArgs),
    /// Run the node daemon: one process serving every `ishare mount` of the host.
    ///
    /// Runs in the foreground, listening on the control socket (--socket):
    /// `ishare mount` asks it for each mount, so every mount of the host shares one
    /// process and one set of open backing objects. ishare.service runs it and is told
    /// when it is ready (sd_notify); `ishare mount` starts one when none runs. Stopping
    /// it detaches the mounts it serves. The log level comes from ISHARE_LOG (warn,
    /// info, debug, trace; /etc/default/ishare for the service).
    #[command(after_long_help = help::DAEMON)]
    Daemon(mount::DaemonArgs),
    /// Inspect (stat) or clean up (gc) the object store of shared mounts.
    ///
    /// The store holds one backing file per sharing domain and content (a name derived
    /// from the fingerprint, keyed by the domain id) for the mounts of
    /// `ishare mount -o inode_share`: stat tells what is in it and what it saves, gc
    /// removes what no live mount uses.
    #[command(after_long_help = help::STORE)]
    Store(store::Args),
    /// Serve containerd's snapshots API: layers become shared EROFS images.
    ///
    /// Listens on a unix socket (--address) that containerd's configuration names under
    /// [proxy_plugins.ishare]. Each layer containerd unpacks becomes a fingerprinted
    /// EROFS image, mounted through the node daemon with inode_share, so identical
    /// files of every container's layers share one copy in the page cache.
    /// ishare-snapshotter.service runs it; restarting it leaves running containers
    /// alone, as their mounts belong to the node daemon.
    #[command(after_long_help = help::SNAPSHOTTER)]
    Snapshotter(snapshotter::Args),
    /// Tell what this host supports and the mode `ishare mount` will run in.
    ///
    /// Checks the kernel and its EROFS (compressors, its own inode_share), /dev/fuse
    /// with a real test mount, FUSE passthrough (a backing file registered on the
    /// store's filesystem) and the store (filesystem, free space, O_TMPFILE), then
    /// names the mode `ishare mount` will run in. Each line is marked ok, warn or no.
    #[command(after_long_help = help::DOCTOR)]
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
