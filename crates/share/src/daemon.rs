//! A mount daemon of its own (`ishare mount -f`, `ishare mount --dedicated`) as a
//! process: started in the foreground, or detached by a launcher, and serving one
//! mount until it is unmounted. (The node daemon, serving every mount, is `node`.)
//!
//! Detached, the launcher ([`launch_detached`]) starts the daemon as a child process
//! (the command is the caller's: `ishare mount --daemon-child IMAGE MOUNTPOINT`) and
//! hands it the options on its standard input, so the domain id never shows in its
//! command line or environment. The daemon ([`run_detached`]) leaves the launcher's
//! session, mounts, and answers on its standard output with one line: `ready`, or
//! `error: MESSAGE`; the launcher returns once it has that line. Then the daemon changes
//! to `/` and points its standard streams at the log (`log=FILE`, else syslog, else
//! nowhere), so nothing holds the launcher's output open.
//!
//! SIGTERM, SIGINT and SIGHUP unmount (lazily, so a busy mount goes away once no
//! longer used), and only the daemon's own mount (see `mount::Stopper`): never one
//! made on the same path after ours ended. The daemon exits when its session ends,
//! however it ended (a signal, `ishare umount`, umount(8)).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use log::info;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::error::{Error, Result};
use crate::kernel;
use crate::logger;
use crate::mount::{Mounted, mount};
use crate::options::{DOMAIN_ID_ENV, MountOptions};

/// What the launcher hands the daemon on its standard input: the `-o` lists and the
/// domain id of the launcher's environment, as NUL-terminated records tagged `o` and
/// `d` (neither arguments nor environment values can hold a NUL).
#[derive(Debug, Default, PartialEq, Eq)]
struct Handoff {
    options: Vec<String>,
    env_domain: Option<Vec<u8>>,
}

impl Handoff {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for o in &self.options {
            out.push(b'o');
            out.extend_from_slice(o.as_bytes());
            out.push(0);
        }
        if let Some(d) = &self.env_domain {
            out.push(b'd');
            out.extend_from_slice(d);
            out.push(0);
        }
        out
    }

    fn decode(input: &[u8]) -> Result<Handoff> {
        let bad = |why: &str| Error::Handoff(why.to_string());
        let mut h = Handoff::default();
        if input.is_empty() {
            return Ok(h);
        }
        let Some(body) = input.strip_suffix(&[0]) else {
            return Err(bad("unterminated record"));
        };
        for rec in body.split(|b| *b == 0) {
            match rec.split_first() {
                Some((b'o', v)) => h.options.push(
                    String::from_utf8(v.to_vec()).map_err(|_| bad("an option is not UTF-8"))?,
                ),
                Some((b'd', v)) => h.env_domain = Some(v.to_vec()),
                _ => return Err(bad("unknown record")),
            }
        }
        Ok(h)
    }
}

/// Starts `daemon` (a command that calls [`run_detached`]) with the mount options
/// `lists` and `env_domain` (the launcher's [`DOMAIN_ID_ENV`]), and waits until the
/// mount is ready or the daemon reports why it is not.
pub fn launch_detached(
    mut daemon: Command,
    lists: &[String],
    env_domain: Option<Vec<u8>>,
) -> Result<()> {
    let mut child = daemon
        .env_remove(DOMAIN_ID_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(Error::Launch)?;
    let mut handoff = Handoff {
        options: lists.to_vec(),
        env_domain,
    }
    .encode();
    {
        let mut stdin = child.stdin.take().expect("piped");
        let res = stdin.write_all(&handoff).and_then(|()| stdin.flush());
        handoff.fill(0);
        res?;
    }
    wait_ready(child)
}

/// Waits for a started daemon's first line on its (piped) standard output: `ready`,
/// or `error: MESSAGE` (then [`Error::Daemon`]); a daemon that exits without a line
/// gives [`Error::DaemonExited`]. Used for mount daemons and the node daemon alike.
pub(crate) fn wait_ready(mut child: std::process::Child) -> Result<()> {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim_end() == "ready" {
        return Ok(());
    }
    let status = child.wait()?;
    match line.trim_end().strip_prefix("error: ") {
        Some(msg) => Err(Error::Daemon(msg.to_string())),
        None => Err(Error::DaemonExited(status)),
    }
}

/// The detached daemon's side of [`launch_detached`]: reads the options from standard
/// input, mounts `image` on `mountpoint`, tells the launcher, and serves until
/// unmounted (a kernel mode mount, see `crate::kernel`, needs no serving: the process
/// then ends once it is made). When mounting fails it reports the error to the launcher and exits the
/// process with status 1 (the launcher shows the error; nobody else should).
pub fn run_detached(image: &Path, mountpoint: &Path) -> Result<()> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let decoded = Handoff::decode(&input);
    input.fill(0);
    let mut handoff = decoded?;
    let mut out = std::io::stdout();
    let res = (|| -> Result<_> {
        let opts = MountOptions::parse(&handoff.options, handoff.env_domain.take())?;
        // Leave the launcher's session (no terminal signals reach the daemon).
        let _ = rustix::process::setsid();
        // A kernel mount needs no daemon: this process ends once it is made. (The
        // kernel's lack of inode_share is not worth a line on the launcher's stderr.)
        let told = AtomicBool::new(true);
        if let Some(km) = kernel::try_mount(image, mountpoint, &opts, b"dedicated", &told)? {
            return Ok(Err(km));
        }
        let mounted = mount(image, mountpoint, &opts)?;
        Ok(Ok((mounted, opts)))
    })();
    let (mounted, opts) = match res {
        Ok(Ok(v)) => v,
        Ok(Err(_kernel)) => {
            let _ = writeln!(out, "ready");
            return Ok(());
        }
        Err(e) => {
            let _ = writeln!(out, "error: {}", with_sources(&e));
            std::process::exit(1);
        }
    };
    detach(opts.log.as_deref(), &mut out)?;
    // The lists come from the launcher's command line: say so in the log too, where
    // whoever runs the mounts will look (the launcher already told its stderr).
    if let Some(w) = crate::options::command_line_domain_warning(&handoff.options) {
        log::warn!("{w}");
    }
    info!("{}", mounted.summary);
    serve(mounted)
}

/// Tells the launcher `ready` on `out`, then lets go of everything the launcher
/// holds: changes to `/` and points the standard streams at the log (`log`, else
/// syslog, else nowhere), so nothing holds the launcher's output open.
pub(crate) fn detach(log: Option<&Path>, out: &mut std::io::Stdout) -> Result<()> {
    let target = logger::detached_target(log)?;
    let sink = match &target {
        logger::Target::File(f) => f.try_clone()?,
        _ => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    let _ = std::env::set_current_dir("/");
    writeln!(out, "ready")?;
    out.flush()?;
    rustix::stdio::dup2_stdout(&sink).map_err(std::io::Error::from)?;
    rustix::stdio::dup2_stderr(&sink).map_err(std::io::Error::from)?;
    let null_in = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null_in).map_err(std::io::Error::from)?;
    logger::set_target(target);
    Ok(())
}

/// Mounts `image` on `mountpoint` and serves it from this process until unmounted
/// (logging to standard error).
pub fn run_foreground(image: &Path, mountpoint: &Path, opts: &MountOptions) -> Result<()> {
    let mounted = mount(image, mountpoint, opts)?;
    info!("{}", mounted.summary);
    serve(mounted)
}

/// Serves until unmounted; SIGTERM, SIGINT and SIGHUP unmount (lazily).
fn serve(mounted: Mounted) -> Result<()> {
    let stopper = mounted.stopper();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!("signal {sig}: unmounting (if the mount is still this daemon's)");
                stopper.stop();
            }
        })?;
    mounted.run()?;
    info!("unmounted");
    Ok(())
}

/// `e` and its sources, as `anyhow` shows an error with `{:#}` ("outer: inner").
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handoff_round_trips() {
        for h in [
            Handoff::default(),
            Handoff {
                options: vec!["ro,inode_share".into(), String::new(), "a=b\nc".into()],
                env_domain: Some(b"s3cret".to_vec()),
            },
            Handoff {
                options: vec![],
                env_domain: Some(Vec::new()),
            },
        ] {
            assert_eq!(Handoff::decode(&h.encode()).unwrap(), h);
        }
        assert!(Handoff::decode(b"oro").is_err());
        assert!(Handoff::decode(b"xro\0").is_err());
    }
}
