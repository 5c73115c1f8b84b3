//! The node daemon: one process serving every `ishare mount` of the host, taking
//! requests on a control socket.
//!
//! # Contract
//!
//! * One daemon per socket: it holds an exclusive `flock` on `SOCKET.lock` (holding
//!   its pid) for its life; a second one exits with [`Error::AlreadyRunning`]. A
//!   stale socket file (left by a daemon that died) is replaced.
//! * The socket is mode 0600 in a directory of mode 0755 owned by the daemon's user;
//!   each connection's peer is checked with `SO_PEERCRED`: only root (or the daemon's
//!   own user) is served, anyone else gets an error reply naming the rule.
//! * One request per connection, read within [`READ_TIMEOUT`]; at most
//!   [`MAX_CLIENTS`] connections are handled at once (more are told to retry), so
//!   neither slow nor many clients can stall mounts or exhaust threads.
//! * Every FUSE mount's connection is handed to the fd holder (`crate::holder`),
//!   which keeps it while no daemon runs. A daemon starting on the socket first serves
//!   again every mount the holder keeps (an earlier daemon's: a restart, an upgrade,
//!   `kill -9`), then has the kernel send again the requests the earlier one read and
//!   did not answer (`FUSE_NOTIFY_RESEND`). Readers see a pause, never an error.
//! * SIGTERM, SIGINT, SIGHUP: the daemon stops and the mounts stay (as
//!   `systemctl restart` needs): those the holder keeps wait for the next daemon, any
//!   other FUSE mount is detached (it goes once no longer busy). `ishare daemon
//!   --stop` (a `stop` request) detaches every FUSE mount, then exits. Kernel mode
//!   mounts stay either way, and the next daemon on the socket lists them.
//! * Started by a launcher (`launched`), it answers `ready` or `error: MESSAGE` on its
//!   standard output once listening, then leaves the launcher's session and points its
//!   standard streams at its log, as a mount daemon does (see `crate::daemon`); under
//!   systemd (`NOTIFY_SOCKET`) it sends `READY=1`.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use log::{info, warn};
use rustix::fs::{FlockOperation, flock};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::protocol::{self, Reply, Request};
use super::table::Table;
use crate::error::{Error, Result};
use crate::holder::HolderClient;
use crate::options::MountOptions;

/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections handled at once.
pub const MAX_CLIENTS: usize = 64;
/// How long an unmount request waits for the mount's session to end.
const UNMOUNT_WAIT: Duration = Duration::from_secs(60);
/// How long a stopping daemon waits for its sessions.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How the node daemon runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The control socket.
    pub socket: PathBuf,
    /// Where to log once detached (`None`: syslog if present, else nowhere).
    pub log: Option<PathBuf>,
    /// Started by a launcher waiting for `ready` on our standard output.
    pub launched: bool,
}

/// The lock that makes this process the socket's one daemon (kept open for life).
fn take_lock(socket: &Path) -> Result<File> {
    let path = lock_path(socket);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        return Err(Error::AlreadyRunning {
            path: socket.to_path_buf(),
            pid: pid.trim().to_string(),
        });
    }
    f.set_len(0).map_err(|e| Error::io(&path, e))?;
    writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
    Ok(f)
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The socket's directory: created 0755 if missing; refused unless owned by us and
/// writable by no one else (whoever could write there could replace the socket).
fn check_dir(socket: &Path) -> Result<()> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir);
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !md.is_dir() || md.uid() != rustix::process::geteuid().as_raw() || md.mode() & 0o022 != 0 {
        return Err(Error::io(
            dir,
            std::io::Error::other(
                "the control socket's directory must be a directory owned by the daemon's user \
                 and writable by no one else",
            ),
        ));
    }
    Ok(())
}

/// Binds the control socket (replacing a stale one; our lock says no daemon uses it).
fn bind(socket: &Path) -> Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(socket, e)),
    }
    // Created with no access for others from the start, then set to 0600.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(socket);
    rustix::process::umask(old);
    let listener = listener.map_err(|e| Error::io(socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(socket, e))?;
    Ok(listener)
}

/// What marks this daemon's kernel mounts: a hash of its socket's path, so that a
/// daemon on another socket (a test's) never takes them for its own.
fn daemon_tag(socket: &Path) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let path = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    protocol::hex(&digest[..8]).into_bytes()
}

/// Tells systemd (Type=notify) that the daemon is ready, when run by it.
fn notify_systemd() {
    // Hand-written: one datagram; not worth a dependency.
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.send_to(b"READY=1", PathBuf::from(path));
    }
}

/// Runs the node daemon until a signal stops it.
pub fn run_node(cfg: &NodeConfig) -> Result<()> {
    let res = (|| -> Result<_> {
        check_dir(&cfg.socket)?;
        let lock = take_lock(&cfg.socket)?;
        let listener = bind(&cfg.socket)?;
        Ok((lock, listener))
    })();
    let mut out = std::io::stdout();
    let (_lock, listener) = match res {
        Ok(v) => v,
        Err(e) if cfg.launched => {
            let _ = writeln!(out, "error: {e}");
            std::process::exit(1);
        }
        Err(e) => return Err(e),
    };
    if cfg.launched {
        let _ = rustix::process::setsid();
        crate::daemon::detach(cfg.log.as_deref(), &mut out)?;
    }
    notify_systemd();
    info!(
        "ishare daemon {} serving {} (pid {})",
        env!("CARGO_PKG_VERSION"),
        cfg.socket.display(),
        std::process::id()
    );
    let table = Arc::new(Table::new(
        daemon_tag(&cfg.socket),
        Some(Arc::new(HolderClient::new(&cfg.socket))),
    ));
    table.resume_held();
    stop_on_signals(table.clone(), cfg.socket.clone())?;
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = protocol::send(&stream, &Reply::failed("the daemon is busy; try again"));
            continue;
        }
        let (table, active, socket) = (table.clone(), active.clone(), cfg.socket.clone());
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                handle(&table, stream, &socket);
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            warn!("control socket: cannot start a thread: {e}");
        }
    }
    Ok(())
}

fn stop_on_signals(table: Arc<Table>, socket: PathBuf) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = std::fs::remove_file(&socket);
                let kept = table.stop_unheld(STOP_WAIT);
                info!(
                    "signal {sig}: stopping; {kept} mount(s) kept by the fd holder for the \
                     next daemon (`ishare daemon --stop` unmounts them)"
                );
                stop(&table);
            }
        })?;
    Ok(())
}

/// Exits, once every sharing state has published what it prepared.
fn stop(table: &Table) -> ! {
    // Objects prepared but not yet published, and verification records not yet
    // written, would otherwise be prepared and hashed again.
    table.finish();
    std::process::exit(0);
}

/// Who may talk to the daemon: root, and the daemon's own user.
fn peer_allowed(stream: &UnixStream) -> std::result::Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let uid = cred.uid.as_raw();
    if uid == 0 || uid == rustix::process::geteuid().as_raw() {
        Ok(())
    } else {
        Err(format!(
            "permission denied: the ishare daemon takes requests from root only (peer uid {uid})"
        ))
    }
}

/// Answers one connection's request.
fn handle(table: &Arc<Table>, stream: UnixStream, socket: &Path) {
    let reply = match peer_allowed(&stream) {
        Err(msg) => {
            warn!("control socket: {msg}");
            Reply::failed(msg)
        }
        Ok(()) => {
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            match protocol::receive::<Request>(BufReader::new(&stream)) {
                Ok(req) => answer(table, req, socket, &stream),
                // A probe (connect and close) is not a bad request.
                Err(e) if e.to_string().starts_with("empty request") => {
                    log::debug!("control socket: {e}");
                    return;
                }
                Err(e) => {
                    let msg = match e.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            format!("no request within {} s", READ_TIMEOUT.as_secs())
                        }
                        _ => e.to_string(),
                    };
                    warn!("control socket: {msg}");
                    Reply::failed(msg)
                }
            }
        }
    };
    let _ = protocol::send(&stream, &reply);
}

fn answer(table: &Arc<Table>, req: Request, socket: &Path, stream: &UnixStream) -> Reply {
    let res = match req {
        Request::Mount {
            image,
            mountpoint,
            options,
            domain,
        } => mount(table, &image, &mountpoint, &options, domain.as_deref()),
        Request::Unmount { mountpoint, lazy } => table
            .unmount(&mountpoint, lazy, UNMOUNT_WAIT)
            .map(|()| Reply::done()),
        Request::List {} => Ok(Reply {
            mounts: Some(table.list()),
            pid: Some(std::process::id()),
            ..Reply::done()
        }),
        Request::Stop {} => {
            info!("stop requested: detaching every mount and stopping");
            let _ = std::fs::remove_file(socket);
            table.stop_all(STOP_WAIT);
            // The reply goes before the exit (the caller waits for the pid to end).
            let _ = protocol::send(stream, &Reply::done());
            stop(table);
        }
    };
    res.unwrap_or_else(|e| Reply::failed(crate::daemon::with_sources(&e)))
}

fn mount(
    table: &Arc<Table>,
    image: &Path,
    mountpoint: &Path,
    options: &[String],
    domain: Option<&str>,
) -> Result<Reply> {
    let env_domain = match domain {
        None => None,
        Some(h) => Some(
            protocol::unhex(h)
                .ok_or_else(|| Error::BadOption("the request's domain is not hex".into()))?,
        ),
    };
    if !image.is_absolute() || !mountpoint.is_absolute() {
        return Err(Error::BadOption(
            "the image and the mount point must be absolute paths".into(),
        ));
    }
    let opts = MountOptions::parse(options, env_domain)?;
    // The lists came from a command line (`ishare mount`, mount(8)): say so in the
    // log too, where whoever runs the mounts looks (the client told its stderr).
    if let Some(w) = crate::options::command_line_domain_warning(options) {
        warn!("{}: {w}", image.display());
    }
    let info = table.mount(image, mountpoint, &opts, options, domain)?;
    Ok(Reply {
        mount: Some(info),
        ..Reply::done()
    })
}
