//! `ishare mount`, `ishare umount`, `ishare mounts` and `ishare daemon` (the daemons,
//! their launch and unmounting are `ishare_share`'s).
//!
//! By default the command asks the node daemon (`ishare daemon`, one process for
//! every mount of the host) over its control socket, starting it when none runs
//! (`ishare daemon --launched`); the domain id travels over the socket only. With
//! `--dedicated` the mount gets a daemon of its own, a child process of this
//! executable (`ishare mount --daemon-child IMAGE MOUNTPOINT`, options on its standard
//! input); with `-f` this process is that daemon. Either way the command exits 0 once
//! the mount is ready, or prints the daemon's error and exits 1.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use ishare_share::{DEFAULT_SOCKET, MountOptions, domain_from_env};

/// The node daemon's control socket, as every command that talks to it takes it.
#[derive(clap::Args, Debug, Clone)]
pub struct SocketArg {
    /// The node daemon's control socket.
    #[arg(long, value_name = "PATH", env = "ISHARE_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Stay in the foreground (log to stderr; Ctrl-C unmounts).
    #[arg(short = 'f', long, conflicts_with = "dedicated")]
    foreground: bool,
    /// Serve this mount from a daemon of its own instead of the node daemon.
    #[arg(long)]
    dedicated: bool,
    #[command(flatten)]
    socket: SocketArg,
    /// Mount options, comma-separated (repeatable), e.g. inode_share,domain_id_file=PATH.
    ///
    /// inode_share (share page cache with every mount of the same domain);
    /// domain_id_file=PATH (the sharing domain id, from a root-owned file of mode 0600
    /// or 0400; or ISHARE_DOMAIN_ID; domain_id=ID works but draws a warning, as command
    /// lines are world-readable); store=DIR (the object store, default
    /// /var/cache/ishare/store); verify=on|off (check fingerprints before sharing,
    /// default on); passthrough=auto|on|off (FUSE passthrough); prepare=mount|open
    /// (verify shared files and copy them into the store in the background from the
    /// mount on, the default, or at each one's first open); mode=auto|fuse|kernel
    /// (who serves the mount: auto takes the kernel's EROFS where it has inode_share);
    /// device=PATH (an extra device, repeatable); allow_other (every user may enter;
    /// implies nosuid,nodev unless suid/dev are given); [no]dev, [no]suid, [no]exec;
    /// threads=N (FUSE worker threads); spin=MICROSECONDS|auto (how long a FUSE thread
    /// keeps asking for the next request before it sleeps, 0: at once; auto, the
    /// default: none where the kernel wakes FUSE threads on the reader's CPU, the fuse
    /// parameter wake_here, else 50);
    /// log=FILE (a started daemon's log); ro and mount(8)'s generic options are
    /// accepted, rw is refused.
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
    /// Seconds to wait for the mount's daemon to exit.
    ///
    /// A daemon of the mount's own may first finish publishing objects; exit 1 if it
    /// still runs then.
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
    if !args.dedicated {
        let socket = args.socket.socket.clone();
        let start = || {
            let mut cmd = Command::new(&exe);
            cmd.arg("daemon")
                .arg("--launched")
                .arg("--socket")
                .arg(&socket);
            // The first mount's log= is the daemon's log.
            if let Some(log) = &opts.log {
                cmd.arg("--log")
                    .arg(std::path::absolute(log).unwrap_or(log.clone()));
            }
            cmd
        };
        ishare_share::mount_via_daemon(
            &socket,
            start,
            &args.image,
            &args.mountpoint,
            &args.options,
            domain_from_env(),
        )?;
        return Ok(());
    }
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

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Log to FILE (appended).
    ///
    /// Without it the log goes to standard error in the foreground (the journal, under
    /// systemd) and, for a daemon started by `ishare mount`, to syslog, else nowhere.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Internal: started by `ishare mount`, which waits for `ready` on standard output.
    #[arg(long, hide = true)]
    launched: bool,
    /// Stop the running daemon and unmount every mount it serves (a signal stops it
    /// but keeps the mounts for the next daemon).
    #[arg(long, conflicts_with_all = ["log", "launched"])]
    stop: bool,
}

pub fn daemon(args: DaemonArgs) -> Result<()> {
    if args.stop {
        return stop_daemon(&args.socket.socket);
    }
    ishare_share::init_logging();
    if let (Some(log), false) = (&args.log, args.launched) {
        let target = ishare_share::logger_target(Some(log))
            .with_context(|| format!("cannot open the log {}", log.display()))?;
        ishare_share::set_log_target(target);
    }
    Ok(ishare_share::run_node(&ishare_share::NodeConfig {
        socket: args.socket.socket,
        log: args.log,
        launched: args.launched,
    })?)
}

/// `ishare daemon --stop`: asks the daemon to unmount everything and exit, and waits
/// for it to be gone.
fn stop_daemon(socket: &Path) -> Result<()> {
    let Some((pid, _)) = ishare_share::list_mounts(socket)? else {
        eprintln!("ishare: no daemon runs on {}", socket.display());
        return Ok(());
    };
    ishare_share::request(socket, &ishare_share::Request::Stop {})
        .with_context(|| format!("cannot stop the daemon on {}", socket.display()))?;
    let start = std::time::Instant::now();
    // Gone, or a zombie its parent has not reaped yet.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, t)| t.starts_with(" Z")))
    };
    while running() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            anyhow::bail!("the daemon (pid {pid}) still runs after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct HolderArgs {
    /// The holder's socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
}

/// The fd holder process (see `ishare_share::run_fd_holder`).
pub fn fd_holder(args: HolderArgs) -> Result<()> {
    Ok(ishare_share::run_fd_holder(&args.socket)?)
}

#[derive(clap::Args, Debug)]
pub struct MountsArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// One JSON object: the daemon's pid and its mounts.
    #[arg(long)]
    json: bool,
}

pub fn mounts(args: MountsArgs) -> Result<()> {
    use std::io::Write;
    let listed = ishare_share::list_mounts(&args.socket.socket)?;
    // Errors writing (a closed pipe) end the command; main treats EPIPE as success.
    let mut out = std::io::stdout().lock();
    if args.json {
        let (pid, mounts) = listed.unwrap_or_default();
        let v = serde_json::json!({
            "daemon": if pid == 0 { serde_json::Value::Null } else { pid.into() },
            "mounts": mounts,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let Some((pid, mounts)) = listed else {
        writeln!(out, "no ishare daemon at {}", args.socket.socket.display())?;
        return Ok(());
    };
    writeln!(out, "ishare daemon pid {pid}: {} mounts", mounts.len())?;
    for m in mounts {
        let prepared = if m.prepare.is_empty() {
            String::new()
        } else {
            format!(
                "\tprepared ahead: {} ({} files)",
                m.prepare, m.prepared_files
            )
        };
        writeln!(
            out,
            "{}\t{}\t{}\t{} shared files\t{}{prepared}",
            m.mountpoint.display(),
            m.image.display(),
            m.mode,
            m.shared_files,
            ishare_share::human_bytes(m.shared_bytes),
        )?;
    }
    Ok(())
}
