//! `ishare mount` and `ishare umount` (the daemon, its launch and unmounting are
//! `ishare_share`'s).
//!
//! Without `-f` the command starts the daemon as a child process of its own
//! executable (`ishare mount --daemon-child IMAGE MOUNTPOINT`, options on its standard
//! input so the domain id never shows in its command line), waits until the mount is
//! ready, and exits 0, or prints the daemon's error and exits 1.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use ishare_share::{MountOptions, domain_from_env};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Stay in the foreground (log to stderr; Ctrl-C unmounts).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options, comma-separated (repeatable): inode_share, domain_id=ID,
    /// domain_id_file=PATH, device=PATH, ro, store=DIR, verify=on|off,
    /// passthrough=auto|on|off, allow_other (implies nosuid,nodev unless suid/dev are
    /// given), threads=N, log=FILE, [no]dev, [no]suid, [no]exec. Give the domain id with
    /// domain_id_file=PATH (a root-owned file of mode 0600/0400) or ISHARE_DOMAIN_ID:
    /// command lines are world-readable, so domain_id= draws a warning.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Internal: run as the detached daemon (options on stdin).
    #[arg(long, hide = true)]
    daemon_child: bool,
    /// The EROFS image.
    image: PathBuf,
    /// Where to mount it.
    mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Detach now, clean up when no longer busy (MNT_DETACH); does not wait for the
    /// daemon.
    #[arg(short = 'l', long)]
    lazy: bool,
    /// Seconds to wait for the mount's daemon to exit (it may finish publishing
    /// objects first); exit 1 if it still runs then.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// The mount point of an `ishare mount`.
    mountpoint: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    ishare_share::init_logging();
    if args.daemon_child {
        return Ok(ishare_share::run_detached(&args.image, &args.mountpoint)?);
    }
    // The lists stood on our command line (mount(8)'s and the helper's too when run as
    // `mount -t fuse.ishare`): a domain id there was readable by every user.
    if let Some(w) = ishare_share::command_line_domain_warning(&args.options) {
        eprintln!("ishare mount: {w}");
    }
    // Check the options before anything else, in the launcher.
    let opts = MountOptions::parse(&args.options, domain_from_env())?;
    if args.foreground {
        return Ok(ishare_share::run_foreground(
            &args.image,
            &args.mountpoint,
            &opts,
        )?);
    }
    let exe = std::env::current_exe().context("cannot find the ishare executable")?;
    let mut child = Command::new(exe);
    child
        .arg("mount")
        .arg("--daemon-child")
        .arg(&args.image)
        .arg(&args.mountpoint);
    Ok(ishare_share::launch_detached(
        child,
        &args.options,
        domain_from_env(),
    )?)
}

pub fn umount(args: UmountArgs) -> Result<()> {
    Ok(ishare_share::unmount(
        &args.mountpoint,
        args.lazy,
        std::time::Duration::from_secs(args.timeout),
    )?)
}
