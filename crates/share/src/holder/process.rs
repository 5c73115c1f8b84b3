//! The holder process: one thread polling its socket, its clients and the
//! connections it holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::HeldMount;
use super::wire::{self, Msg};

/// How a holder that lost the race to start says so.
pub(super) const ALREADY: &str = "a holder already runs";
/// How long a new holder waits for its first client before giving up.
const FIRST_CLIENT: Duration = Duration::from_secs(30);
/// Clients served at once (the daemon uses one at a time).
const MAX_CLIENTS: usize = 16;
/// After a round that only took registrations in, the holder waits this long before
/// looking again. A registration sent is queued in the holder's socket, the holder's
/// whatever becomes of the daemon, so nothing waits for it to be read; a burst of
/// first opens then wakes the holder once per pause rather than once per file (each
/// wake-up an interrupt to the other CPU in the middle of the daemon's answer to an
/// open).
const REGISTRATIONS_PAUSE: Duration = Duration::from_millis(5);

/// Runs the holder on `socket` until it holds nothing and no client is connected.
/// Prints `ready` (or `error: MESSAGE`) on standard output once listening, then points
/// its standard streams at `/dev/null` and leaves the caller's session.
pub fn run_fd_holder(socket: &Path) -> std::io::Result<()> {
    let mut out = std::io::stdout();
    let (_lock, listener) = match listen(socket) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            std::process::exit(1);
        }
    };
    let _ = rustix::process::setsid();
    let _ = std::env::set_current_dir("/");
    writeln!(out, "ready")?;
    out.flush()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    drop(null);
    serve(&listener);
    let _ = std::fs::remove_file(socket);
    Ok(())
}

type Listening = (std::fs::File, OwnedFd);

/// Takes the holder lock and binds the socket (0600 from the start).
fn listen(socket: &Path) -> std::io::Result<Listening> {
    let mut lock_path = socket.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&lock_path)?;
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(std::io::Error::other(format!(
            "{ALREADY} on {}",
            socket.display()
        )));
    }
    let bind = || -> std::io::Result<OwnedFd> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = SocketAddrUnix::new(socket)?;
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = rustix::net::bind(&fd, &addr);
        rustix::process::umask(old);
        bound?;
        rustix::net::listen(&fd, 16)?;
        Ok(fd)
    };
    let fd =
        bind().map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    Ok((lock, fd))
}

/// Whether the peer of `conn` is root or our own user.
fn peer_allowed(conn: &OwnedFd) -> bool {
    rustix::net::sockopt::socket_peercred(conn)
        .is_ok_and(|c| c.uid.as_raw() == 0 || c.uid == rustix::process::geteuid())
}

/// The poll loop.
fn serve(listener: &OwnedFd) {
    let started = Instant::now();
    let mut served = false;
    let mut held: Held = BTreeMap::new();
    let mut clients: Vec<Client> = Vec::new();
    let mut only_registrations = false;
    loop {
        if only_registrations {
            std::thread::sleep(REGISTRATIONS_PAUSE);
        }
        // A daemon's connection that only reports registrations does not keep an
        // empty holder alive.
        let busy = clients.iter().any(|c| !c.log_only);
        if held.is_empty() && !busy && (served || started.elapsed() > FIRST_CLIENT) {
            return;
        }
        let (ready_listener, ready_clients, gone) = {
            let mut fds = Vec::with_capacity(1 + clients.len() + held.len());
            fds.push(PollFd::new(listener, PollFlags::IN));
            fds.extend(clients.iter().map(|c| PollFd::new(&c.fd, PollFlags::IN)));
            // Nothing asked of a connection: its end shows as POLLERR (or POLLHUP). But
            // a poll that sleeps waits on the connection's request queue, and the kernel
            // wakes every such waiter for every request it queues: while a daemon
            // serves the mounts (and says when one ends), the connections are looked at
            // only without sleeping on them, after each wake-up.
            let watch = !clients.iter().any(|c| c.serving);
            if watch {
                fds.extend(
                    held.values()
                        .map(|h| PollFd::new(&h.conn, PollFlags::empty())),
                );
            }
            let timeout = (!served).then(|| Timespec {
                tv_sec: FIRST_CLIENT.saturating_sub(started.elapsed()).as_secs() as i64 + 1,
                tv_nsec: 0,
            });
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let ready_listener = fds[0].revents().contains(PollFlags::IN);
            let ready_clients: Vec<usize> = (0..clients.len())
                .filter(|i| !fds[1 + i].revents().is_empty())
                .collect();
            let gone = if watch {
                ended(held.keys().copied(), &fds[1 + clients.len()..])
            } else {
                // A zero timeout registers no waiter.
                let mut conns: Vec<PollFd> = held
                    .values()
                    .map(|h| PollFd::new(&h.conn, PollFlags::empty()))
                    .collect();
                let zero = Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                match poll(&mut conns, Some(&zero)) {
                    Ok(_) => ended(held.keys().copied(), &conns),
                    Err(_) => Vec::new(),
                }
            };
            (ready_listener, ready_clients, gone)
        };
        for k in gone {
            held.remove(&k);
        }
        // In the order they connected: an earlier daemon's registrations (queued before
        // it died) are taken in before a new daemon's `take`. Clients whose connection
        // ended or misbehaved are dropped.
        let mut kept = Vec::with_capacity(clients.len());
        only_registrations = !ready_listener && !ready_clients.is_empty();
        for (i, mut c) in clients.drain(..).enumerate() {
            if !ready_clients.contains(&i) {
                kept.push(c);
            } else if answer(&mut c, &mut held) {
                only_registrations &= c.log_only;
                kept.push(c);
            } else {
                only_registrations = false;
            }
        }
        clients = kept;
        if ready_listener && let Ok(conn) = rustix::net::accept_with(listener, SocketFlags::CLOEXEC)
        {
            served = true;
            // A client that stops reading cannot stall the holder for long.
            let _ = rustix::net::sockopt::set_socket_timeout(
                &conn,
                rustix::net::sockopt::Timeout::Send,
                Some(Duration::from_secs(5)),
            );
            if !peer_allowed(&conn) {
                let _ = wire::send(
                    conn.as_fd(),
                    &Msg::Failed {
                        error: "permission denied: the fd holder serves root only".into(),
                    },
                    None,
                );
            } else if clients.len() >= MAX_CLIENTS {
                let _ = wire::send(
                    conn.as_fd(),
                    &Msg::Failed {
                        error: "the fd holder is busy; try again".into(),
                    },
                    None,
                );
            } else {
                clients.push(Client {
                    fd: conn,
                    log_only: false,
                    serving: false,
                });
            }
        }
    }
}

/// One held mount.
struct Entry {
    mount: HeldMount,
    /// The connection.
    conn: OwnedFd,
    /// Its backing file registrations: node id to the kernel's id.
    backing: BTreeMap<u64, u32>,
}

type Held = BTreeMap<u64, Entry>;

/// The keys whose connection (polled in `fds`, in the same order) has ended.
fn ended(keys: impl Iterator<Item = u64>, fds: &[PollFd]) -> Vec<u64> {
    let ended = PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL;
    keys.zip(fds)
        .filter(|(_, f)| f.revents().intersects(ended))
        .map(|(k, _)| k)
        .collect()
}

/// A connected client.
struct Client {
    fd: OwnedFd,
    /// It has sent registrations only (see [`Msg::Backing`]).
    log_only: bool,
    /// It serves the held mounts (see [`Msg::Serving`]).
    serving: bool,
}

/// Answers every message `c` has queued; false when the client is done (closed, or
/// sent something wrong).
fn answer(c: &mut Client, held: &mut Held) -> bool {
    let mut first = true;
    loop {
        let got = wire::receive(c.fd.as_fd(), !first);
        first = false;
        let (msg, fd) = match got {
            Ok(Some(m)) => m,
            Ok(None) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) => {
                let _ = wire::send(
                    c.fd.as_fd(),
                    &Msg::Failed {
                        error: e.to_string(),
                    },
                    None,
                );
                return false;
            }
        };
        if let Msg::Serving {} = msg {
            c.log_only = true;
            c.serving = true;
            if wire::send(c.fd.as_fd(), &Msg::Done {}, None).is_err() {
                return false;
            }
            continue;
        }
        if let Msg::Backing { mount_id, nid, id } = msg {
            c.log_only = true;
            if let Some(e) = held.get_mut(&mount_id) {
                match id {
                    Some(id) => e.backing.insert(nid, id),
                    None => e.backing.remove(&nid),
                };
            }
            continue;
        }
        c.log_only = false;
        if !answer_one(c.fd.as_fd(), msg, fd, held) {
            return false;
        }
    }
}

/// Answers one request; false when the client is done.
fn answer_one(conn: BorrowedFd, msg: Msg, fd: Option<OwnedFd>, held: &mut Held) -> bool {
    let reply = match (msg, fd) {
        (Msg::Put { mount }, Some(fd)) => {
            // The same connection again (a new daemon took it over): its registrations
            // stay, they are the kernel's.
            let backing = match held.remove(&mount.mount_id) {
                Some(old) if old.mount.dev == mount.dev => old.backing,
                _ => BTreeMap::new(),
            };
            held.insert(
                mount.mount_id,
                Entry {
                    mount,
                    conn: fd,
                    backing,
                },
            );
            Msg::Done {}
        }
        (Msg::Put { .. }, None) => Msg::Failed {
            error: "put: no connection attached".into(),
        },
        (Msg::Drop { mount_id }, _) => {
            held.remove(&mount_id);
            Msg::Done {}
        }
        (Msg::Take {}, _) => {
            for e in held.values() {
                let msg = Msg::Held {
                    mount: e.mount.clone(),
                };
                if wire::send(conn, &msg, Some(e.conn.as_fd())).is_err() {
                    return false;
                }
                for (&nid, &id) in &e.backing {
                    let msg = Msg::Backing {
                        mount_id: e.mount.mount_id,
                        nid,
                        id: Some(id),
                    };
                    if wire::send(conn, &msg, None).is_err() {
                        return false;
                    }
                }
            }
            Msg::Done {}
        }
        (other, _) => Msg::Failed {
            error: format!("unexpected message {other:?}"),
        },
    };
    wire::send(conn, &reply, None).is_ok()
}
