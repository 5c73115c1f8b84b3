//! The client side of the node daemon: what `ishare mount`, `ishare mounts` (and the
//! snapshotter) use to talk to it, and starting it when none runs.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::protocol::{self, MountInfo, Reply, Request};
use crate::error::{Error, Result};
use crate::options::DOMAIN_ID_ENV;

/// Where the node daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ishare/daemon.sock";

/// How long a client waits for the daemon's reply (a mount of a large image reads
/// its root and the kernel's INIT; an unmount waits for the session's end).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a mount keeps trying to reach a daemon it (or another client) started.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// Sends `req` to the daemon at `socket` and returns its reply (an error reply as
/// [`Error::Daemon`]); [`Error::NoDaemon`] when no daemon listens there.
pub fn request(socket: &Path, req: &Request) -> Result<Reply> {
    let stream = UnixStream::connect(socket).map_err(|error| Error::NoDaemon {
        path: socket.to_path_buf(),
        error,
    })?;
    let ctl = |error| Error::Control {
        path: socket.to_path_buf(),
        error,
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(ctl)?;
    // A refusing daemon may answer and close before reading the request: its reply
    // says more than the failed write.
    let sent = protocol::send(&stream, req);
    let reply: Reply = match (protocol::receive(BufReader::new(&stream)), sent) {
        (Ok(r), _) => r,
        (Err(_), Err(e)) | (Err(e), Ok(())) => return Err(ctl(e)),
    };
    if reply.ok {
        Ok(reply)
    } else {
        Err(Error::Daemon(
            reply
                .error
                .unwrap_or_else(|| "failed (no reason given)".into()),
        ))
    }
}

/// Starts a node daemon with `daemon` (a command that runs [`super::run_node`] with
/// `launched`) and waits until it listens. Another daemon winning the race to start
/// is as good.
pub fn start(mut daemon: Command) -> Result<()> {
    let child = daemon
        .env_remove(DOMAIN_ID_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(Error::Launch)?;
    match crate::daemon::wait_ready(child) {
        Err(Error::Daemon(msg)) if msg.starts_with("an ishare daemon already serves") => Ok(()),
        other => other,
    }
}

/// Mounts through the daemon at `socket`, starting it with `daemon()` when none runs:
/// `image` and `mountpoint` are made absolute here (the daemon's working directory
/// is `/`); `env_domain` is the caller's [`DOMAIN_ID_ENV`], which travels only over
/// the socket.
pub fn mount_via_daemon(
    socket: &Path,
    daemon: impl Fn() -> Command,
    image: &Path,
    mountpoint: &Path,
    lists: &[String],
    env_domain: Option<Vec<u8>>,
) -> Result<MountInfo> {
    let req = Request::Mount {
        image: absolute(image)?,
        mountpoint: absolute(mountpoint)?,
        options: lists.to_vec(),
        domain: env_domain.as_deref().map(protocol::hex),
    };
    // Started here, or by whoever won the race to start one. The lock that decides
    // the race can still be held by a daemon that is exiting (its socket already
    // gone, its last threads not yet): the start then reports a daemon that never
    // listens, so it is tried again until START_PATIENCE has passed.
    let deadline = std::time::Instant::now() + START_PATIENCE;
    let reply = loop {
        match request(socket, &req) {
            Err(Error::NoDaemon { .. }) if std::time::Instant::now() < deadline => {
                start(daemon())?;
                match request(socket, &req) {
                    Err(Error::NoDaemon { .. }) => std::thread::sleep(Duration::from_millis(100)),
                    other => break other?,
                }
            }
            other => break other?,
        }
    };
    reply
        .mount
        .ok_or_else(|| Error::Daemon("the daemon's reply names no mount".into()))
}

/// The daemon's mounts and pid; `None` when no daemon runs at `socket`.
pub fn list(socket: &Path) -> Result<Option<(u32, Vec<MountInfo>)>> {
    match request(socket, &Request::List {}) {
        Ok(r) => Ok(Some((r.pid.unwrap_or(0), r.mounts.unwrap_or_default()))),
        Err(Error::NoDaemon { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}
