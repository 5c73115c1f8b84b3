//! `ishare mount` and `ishare umount`.
//!
//! Without `-f` the command starts the daemon as a child process of its own
//! executable (`ishare mount --daemon-child IMAGE MOUNTPOINT`, options on its standard
//! input so the domain id never shows in its command line), waits until the mount is
//! ready, and exits 0, or prints the daemon's error and exits 1. The daemon starts a
//! new session, changes to `/`, and once mounted points its standard output and
//! error at the log (`log=FILE`, else syslog, else nowhere).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use ishare_share::daemon;
use ishare_share::logger;
use ishare_share::options::{DOMAIN_ID_ENV, MountOptions};
use log::info;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Stay in the foreground (log to stderr; Ctrl-C unmounts).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options, comma-separated (repeatable): inode_share, domain_id=ID,
    /// device=PATH, ro, store=DIR, verify=on|off, passthrough=auto|on|off, allow_other,
    /// threads=N, log=FILE, [no]dev, [no]suid, [no]exec. The domain id may come from
    /// ISHARE_DOMAIN_ID instead: command lines are world-readable (the detached daemon's
    /// never holds it; with -f the foreground process's does).
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
    /// Detach now, clean up when no longer busy (MNT_DETACH).
    #[arg(short = 'l', long)]
    lazy: bool,
    /// The mount point of an `ishare mount`.
    mountpoint: PathBuf,
}

/// What the launcher hands the daemon on its standard input.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildConfig {
    options: Vec<String>,
    env_domain: Option<Vec<u8>>,
}

fn env_domain() -> Option<Vec<u8>> {
    std::env::var_os(DOMAIN_ID_ENV).map(|v| v.as_bytes().to_vec())
}

pub fn run(args: Args) -> Result<()> {
    logger::init();
    if args.daemon_child {
        return daemon_child(&args);
    }
    // Check the options before anything else, in the launcher.
    let opts = MountOptions::parse(&args.options, env_domain()).map_err(anyhow::Error::msg)?;
    if args.foreground {
        let mounted = daemon::mount(&args.image, &args.mountpoint, &opts)?;
        info!("{}", mounted.summary);
        return serve(mounted);
    }
    let exe = std::env::current_exe().context("cannot find the ishare executable")?;
    let mut child = Command::new(exe)
        .arg("mount")
        .arg("--daemon-child")
        .arg(&args.image)
        .arg(&args.mountpoint)
        .env_remove(DOMAIN_ID_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the mount daemon")?;
    let cfg = ChildConfig {
        options: args.options.clone(),
        env_domain: env_domain(),
    };
    {
        let mut stdin = child.stdin.take().expect("piped");
        serde_json::to_writer(&mut stdin, &cfg)?;
        stdin.flush()?;
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim_end() == "ready" {
        return Ok(());
    }
    let status = child.wait()?;
    match line.trim_end().strip_prefix("error: ") {
        Some(msg) => bail!("{msg}"),
        None => bail!("the mount daemon exited ({status}) before the mount was ready"),
    }
}

fn daemon_child(args: &Args) -> Result<()> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let cfg: ChildConfig = serde_json::from_slice(&input).context("bad daemon configuration")?;
    input.fill(0);
    let mut out = std::io::stdout();
    let res = (|| -> Result<_> {
        let opts = MountOptions::parse(&cfg.options, cfg.env_domain.clone())
            .map_err(anyhow::Error::msg)?;
        // Leave the launcher's session (no terminal signals reach the daemon).
        let _ = rustix::process::setsid();
        let mounted = daemon::mount(&args.image, &args.mountpoint, &opts)?;
        Ok((mounted, opts))
    })();
    let (mounted, opts) = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(out, "error: {e:#}");
            std::process::exit(1);
        }
    };
    // From now on nothing may hold the launcher's output open.
    let target = logger::detached_target(opts.log.as_deref())?;
    let sink = match &target {
        logger::Target::File(f) => f.try_clone()?,
        _ => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    let _ = std::env::set_current_dir("/");
    writeln!(out, "ready")?;
    out.flush()?;
    rustix::stdio::dup2_stdout(&sink)?;
    rustix::stdio::dup2_stderr(&sink)?;
    let null_in = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null_in)?;
    logger::set_target(target);
    info!("{}", mounted.summary);
    serve(mounted)
}

/// Serves until unmounted; SIGTERM, SIGINT and SIGHUP unmount (lazily, so a busy
/// mount goes away once no longer used).
fn serve(mounted: daemon::Mounted) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mountpoint = mounted.mountpoint().to_path_buf();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!("signal {sig}: unmounting {}", mountpoint.display());
                let _ = rustix::mount::unmount(&mountpoint, rustix::mount::UnmountFlags::DETACH);
            }
        })?;
    mounted.run()?;
    info!("unmounted");
    Ok(())
}

/// The file system type of the mount at `path` from /proc/self/mountinfo (the
/// last one mounted there).
fn mount_type(path: &Path) -> Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() > 4 && unescape(fields[4]) == want {
            found = fields.get(sep + 1).map(|s| s.to_string());
        }
    }
    Ok(found)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub fn umount(args: UmountArgs) -> Result<()> {
    // Not canonicalize: a mount whose daemon died fails every stat (ENOTCONN).
    let path = std::path::absolute(&args.mountpoint)?;
    match mount_type(&path)? {
        None => bail!("{}: not mounted", path.display()),
        Some(t) if t != "fuse.ishare" => {
            bail!("{}: not an ishare mount (type {t})", path.display())
        }
        Some(_) => {}
    }
    let flags = if args.lazy {
        rustix::mount::UnmountFlags::DETACH
    } else {
        rustix::mount::UnmountFlags::empty()
    };
    match rustix::mount::unmount(&path, flags) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            // Not root: the setuid helper unmounts FUSE mounts of their owner.
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u");
            if args.lazy {
                cmd.arg("-z");
            }
            let st = cmd.arg(&path).status().context("cannot run fusermount3")?;
            if !st.success() {
                bail!("fusermount3 -u {} failed ({st})", path.display());
            }
            Ok(())
        }
        Err(rustix::io::Errno::BUSY) => {
            bail!(
                "{}: busy (ishare umount -l detaches it now and cleans up later)",
                path.display()
            )
        }
        Err(e) => bail!("cannot unmount {}: {e}", path.display()),
    }
}
