//! The daemon's side of the holder: handing it connections, telling it which mounts
//! ended, taking the held ones back at start.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::HeldMount;
use super::process::ALREADY;
use super::wire::{self, Msg};

/// How long the daemon waits for the holder's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A held mount as taken back: its record, its connection, its backing file
/// registrations (node id, kernel id).
pub(crate) type Taken = (HeldMount, OwnedFd, Vec<(u64, u32)>);

/// The holder of one daemon socket.
#[derive(Debug)]
pub(crate) struct HolderClient {
    socket: PathBuf,
    /// The connection registrations go on, which also says that this daemon serves
    /// the held mounts (opened at the first mount handed over or taken back).
    log: Mutex<Option<OwnedFd>>,
}

impl HolderClient {
    /// The holder for the daemon socket `daemon_socket`.
    pub(crate) fn new(daemon_socket: &Path) -> HolderClient {
        HolderClient {
            socket: super::holder_socket(daemon_socket),
            log: Mutex::new(None),
        }
    }

    fn connect(&self) -> io::Result<OwnedFd> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(&self.socket)?)?;
        let timeout = Some(REPLY_TIMEOUT);
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            timeout,
        )?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Send,
            timeout,
        )?;
        Ok(fd)
    }

    /// Starts a holder (`THIS_BINARY fd-holder --socket S`) and waits until it listens;
    /// another one winning the race is as good.
    fn start(&self) -> io::Result<()> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("fd-holder")
            .arg("--socket")
            .arg(&self.socket)
            .env_remove(crate::options::DOMAIN_ID_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        let out = child.stdout.take().expect("piped");
        io::BufRead::read_line(&mut io::BufReader::new(out), &mut line)?;
        // Reaped by a thread of its own: the holder outlives this call (and often us).
        let _ = std::thread::Builder::new()
            .name("holder-reaper".into())
            .spawn(move || child.wait());
        match line.trim_end() {
            "ready" => Ok(()),
            l if l.contains(ALREADY) => Ok(()),
            l => Err(io::Error::other(format!(
                "the fd holder did not start: {}",
                l.strip_prefix("error: ").unwrap_or("no answer")
            ))),
        }
    }

    /// Sends `msg` (with `fd`) and collects the replies up to `Done`.
    fn request(&self, conn: &OwnedFd, msg: &Msg, fd: Option<BorrowedFd>) -> io::Result<Vec<Taken>> {
        wire::send(conn.as_fd(), msg, fd)?;
        let mut held: Vec<Taken> = Vec::new();
        loop {
            match wire::receive(conn.as_fd(), false)? {
                None => return Err(io::Error::other("the fd holder closed the connection")),
                Some((Msg::Done {}, _)) => return Ok(held),
                Some((Msg::Failed { error }, _)) => return Err(io::Error::other(error)),
                Some((Msg::Held { mount }, Some(fd))) => held.push((mount, fd, Vec::new())),
                Some((
                    Msg::Backing {
                        mount_id,
                        nid,
                        id: Some(id),
                    },
                    _,
                )) => {
                    if let Some(h) = held.last_mut().filter(|h| h.0.mount_id == mount_id) {
                        h.2.push((nid, id));
                    }
                }
                Some((other, _)) => {
                    return Err(io::Error::other(format!(
                        "unexpected answer from the fd holder: {other:?}"
                    )));
                }
            }
        }
    }

    /// Hands the holder `mount` and its connection `conn`, starting the holder when
    /// none runs.
    pub(crate) fn put(&self, mount: &HeldMount, conn: BorrowedFd) -> io::Result<()> {
        let msg = Msg::Put {
            mount: mount.clone(),
        };
        let mut tries = 0;
        loop {
            let res = match self.connect() {
                Ok(s) => self.request(&s, &msg, Some(conn)),
                Err(_) => self
                    .start()
                    .and_then(|()| self.connect())
                    .and_then(|s| self.request(&s, &msg, Some(conn))),
            };
            // A holder that has just let its last mount go may exit under our request
            // (and keep its lock a moment): try again.
            tries += 1;
            match res {
                Err(_) if tries < 3 => std::thread::sleep(Duration::from_millis(50)),
                Ok(_) => {
                    self.serving();
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells the holder that the mount `mount_id` ended (nothing to do when no holder
    /// runs).
    pub(crate) fn forget(&self, mount_id: u64) -> io::Result<()> {
        let Ok(sock) = self.connect() else {
            return Ok(());
        };
        self.request(&sock, &Msg::Drop { mount_id }, None)
            .map(|_| ())
    }

    /// Every mount the holder holds, each with a duplicate of its connection (none
    /// when no holder runs).
    pub(crate) fn take(&self) -> io::Result<Vec<Taken>> {
        let Ok(sock) = self.connect() else {
            return Ok(Vec::new());
        };
        let taken = self.request(&sock, &Msg::Take {}, None)?;
        if !taken.is_empty() {
            self.serving();
        }
        Ok(taken)
    }

    /// Makes sure the holder knows that we serve its mounts: a registrations'
    /// connection is open (the holder exits with its last mount, and a new one may
    /// have started since).
    fn serving(&self) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let alive = log.as_ref().is_some_and(|s| {
            let mut fds = [rustix::event::PollFd::new(
                s,
                rustix::event::PollFlags::empty(),
            )];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&zero)).is_ok() && fds[0].revents().is_empty()
        });
        if !alive {
            *log = self.open_log();
        }
    }

    /// Tells the holder that the mount `mount_id` registered backing file `id` for node
    /// `nid` (`None`: closed it). Sent without waiting (before the open it is for is
    /// answered, so even a daemon killed right after has told it); lost when no holder
    /// runs, which only matters to a mount the holder does not keep.
    pub(crate) fn note_backing(&self, mount_id: u64, nid: u64, id: Option<u32>) {
        self.send_log(&Msg::Backing { mount_id, nid, id });
    }

    /// A new registrations' connection, on which the holder has taken [`Msg::Serving`]
    /// (it then leaves watching the connections to us). A holder from before that
    /// message (started by an earlier version, kept across an upgrade) refuses it and
    /// drops the connection: the next one only takes registrations.
    fn open_log(&self) -> Option<OwnedFd> {
        let sock = self.connect().ok()?;
        match self.request(&sock, &Msg::Serving {}, None) {
            Ok(_) => Some(sock),
            Err(_) => self.connect().ok(),
        }
    }

    /// Sends `msg` on the registrations' connection without waiting, connecting it
    /// when there is none or the holder went.
    fn send_log(&self, msg: &Msg) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            if log.is_none() {
                *log = self.open_log();
            }
            let Some(sock) = log.as_ref() else {
                return;
            };
            if wire::send(sock.as_fd(), msg, None).is_ok() {
                return;
            }
            // The holder went (it exits with its last mount); a new one may run.
            *log = None;
        }
    }
}
