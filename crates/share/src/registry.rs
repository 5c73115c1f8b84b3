//! Which process serves which mount, so that `ishare umount` can wait for it.
//!
//! # Contract
//!
//! * A daemon, once mounted, [`register`]s: a file `fuse-MAJOR-MINOR` (its FUSE
//!   connection's device number) in the runtime directory (`/run/ishare` for root,
//!   else `$XDG_RUNTIME_DIR/ishare`) holding `PID MOUNT_ID exits|stays`, with an exclusive `flock`
//!   on it for as long as the process lives (the kernel drops it at exit, even after
//!   `kill -9`). The file is replaced by rename, so a later daemon given the same
//!   device number after ours ended takes the name over.
//! * [`find`] trusts a record only while its lock is held and its mount id is the one
//!   of the mount being unmounted; waiting for the daemon is waiting for that lock to
//!   go (the record stays open, so a later record under the same name does not
//!   count). The lock is held per mount: a mount daemon of its own holds it until it
//!   exits, the node daemon until the mount's session has ended. For a daemon that
//!   `exits` with its mount, [`find`] also opens a pidfd and waiting ends with the
//!   exit itself (the lock goes a moment before the process does).
//! * Registration is best effort: a daemon that cannot register still serves (and
//!   `ishare umount` then cannot wait for it, and says nothing about it).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use crate::fusemount::MountId;

/// The runtime directories, the daemon's own first.
fn dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if rustix::process::geteuid().is_root() {
        out.push(PathBuf::from("/run/ishare"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        out.push(PathBuf::from(x).join("ishare"));
    }
    out
}

fn name(dev: (u32, u32)) -> String {
    format!("fuse-{}-{}", dev.0, dev.1)
}

/// A daemon's record, removed when dropped (if still its own).
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
    /// Open (and locked) for the life of the daemon.
    file: File,
}

/// Records this process as the daemon of the mount `id`; None when there is no safe
/// runtime directory (one owned by us and writable by no one else). `exits`: the
/// process ends with the mount (a daemon of its own), so `ishare umount` waits for its
/// exit too, not only for the record's release.
pub(crate) fn register(id: MountId, exits: bool) -> Option<Registration> {
    let dir = dirs().into_iter().next()?;
    let _ = std::fs::DirBuilder::new().mode(0o755).create(&dir);
    let md = std::fs::symlink_metadata(&dir).ok()?;
    if !md.is_dir() || md.uid() != rustix::process::geteuid().as_raw() || md.mode() & 0o022 != 0 {
        return None;
    }
    let pid = std::process::id();
    let tmp = dir.join(format!(".tmp.{pid}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nofollow_flag())
        .open(&tmp)
        .ok()?;
    let ok = flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
        && file
            .write_all(
                format!(
                    "{pid} {} {}\n",
                    id.mount_id,
                    if exits { EXITS } else { STAYS }
                )
                .as_bytes(),
            )
            .is_ok();
    let path = dir.join(name(id.dev));
    if !ok || std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    Some(Registration { path, file })
}

/// `O_NOFOLLOW`, as the flags `OpenOptionsExt::custom_flags` takes.
fn nofollow_flag() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Only our own file: a later daemon may have taken the name over.
        if let (Ok(ours), Ok(there)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path))
            && ours.ino() == there.ino()
            && ours.dev() == there.dev()
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Third word of a record: the daemon exits with the mount, or serves on.
const EXITS: &str = "exits";
const STAYS: &str = "stays";

/// The running daemon of a mount, found by its record (kept open: its lock is held
/// for as long as the daemon serves the mount).
#[derive(Debug)]
pub(crate) struct Daemon {
    /// Its pid.
    pub(crate) pid: u32,
    record: File,
    /// A pidfd of a daemon that exits with the mount, opened while it still served it
    /// (so a reused pid is never waited for).
    process: Option<OwnedFd>,
}

/// Whether someone (the daemon) holds the lock on `f`.
fn locked(f: &File) -> bool {
    match flock(f, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = flock(f, FlockOperation::Unlock);
            false
        }
        Err(e) => e == Errno::WOULDBLOCK,
    }
}

/// The daemon serving the mount with device `dev` and mount id `mount_id`, if it
/// registered and still serves it.
pub(crate) fn find(dev: (u32, u32), mount_id: u64) -> Option<Daemon> {
    for dir in dirs() {
        let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nofollow_flag())
            .open(dir.join(name(dev)))
        else {
            continue;
        };
        let mut text = String::new();
        if !locked(&f) || f.read_to_string(&mut text).is_err() {
            continue;
        }
        let mut words = text.split_whitespace();
        let mut fields = words.by_ref().take(2).map(|w| w.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(mid))) = (fields.next(), fields.next()) else {
            continue;
        };
        if mid == mount_id {
            let process = (words.next() == Some(EXITS))
                .then(|| {
                    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
                })
                .flatten();
            return Some(Daemon {
                pid: pid as u32,
                record: f,
                process,
            });
        }
    }
    None
}

impl Daemon {
    /// Waits up to `timeout` for the daemon to be done with the mount (its session
    /// ended and its record released: a mount daemon of its own has then exited, the
    /// node daemon has dropped the mount, or either died); true if it was.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // The lock, not the pid: a node daemon serving other mounts lives on.
            if !locked(&self.record) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // A daemon of its own releases the record just before it exits: wait for the
        // exit itself (the pidfd turns readable), so nothing of it outlives the umount.
        let Some(fd) = &self.process else {
            return true;
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let left = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        loop {
            match rustix::event::poll(&mut fds, Some(&left)) {
                Ok(n) => return n > 0,
                Err(Errno::INTR) => continue,
                Err(_) => return true,
            }
        }
    }
}
