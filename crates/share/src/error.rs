//! The one error type of the crate: mount options, mounting and serving, the detached
//! daemon's launch, unmounting, the store tools.
//!
//! Each message is complete as shown: a variant that wraps another error prints it and
//! does not also offer it as its `source` (so `anyhow`'s `{:#}` does not print it
//! twice). The store's file operations (and the publisher on top of them) keep
//! `io::Result`: everything they do is file I/O, and their failures are logged, never
//! returned to a caller of the crate.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// What went wrong. (Non-exhaustive: the node daemon will add its own cases.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The I/O error (not a `source`: the message already shows it).
        error: io::Error,
    },
    /// An I/O operation failed whose error says enough on its own.
    #[error(transparent)]
    Os(#[from] io::Error),
    /// A size argument (`--max-size`) is not understood.
    #[error(
        "invalid size {0:?}: expected a number of bytes, optionally followed by K, M, G, T, P or E (powers of 1024, also KiB, MiB, ...) or KB, MB, ... (powers of 1000)"
    )]
    BadSize(String),
    /// A mount option (`-o`) is not understood or not allowed; the message says which
    /// and why.
    #[error("{0}")]
    BadOption(String),
    /// A command line argument does not fit (e.g. `ishare report --device` against the
    /// images' device tables); the message says why.
    #[error("{0}")]
    BadArgument(String),
    /// The image cannot be read (not EROFS, corrupt, unsupported).
    #[error("{0}")]
    Image(ishare_erofs::Error),
    /// Reading an image's data failed.
    #[error("{image}: read of {len} bytes at offset {offset} failed: {error}")]
    ImageRead {
        /// The image's name.
        image: String,
        /// Bytes asked for.
        len: usize,
        /// Where, in the image or device file.
        offset: u64,
        /// Why.
        error: io::Error,
    },
    /// The store directory of the domain cannot be opened or created.
    #[error("store {}: {error}", path.display())]
    Store {
        /// The store root.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// `passthrough=on` was asked for and cannot be had; the message says why.
    #[error("{0}")]
    Passthrough(String),
    /// The FUSE mount failed.
    #[error("cannot mount {}: {error}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The detached mount daemon could not be started.
    #[error("cannot start the mount daemon: {0}")]
    Launch(io::Error),
    /// The detached mount daemon reported this error (its message as it wrote it).
    #[error("{0}")]
    Daemon(String),
    /// The detached mount daemon ended without saying why.
    #[error("the mount daemon exited ({0}) before the mount was ready")]
    DaemonExited(ExitStatus),
    /// The launcher's hand-off to the detached daemon is not understood.
    #[error("bad daemon configuration: {0}")]
    Handoff(String),
    /// `mode=kernel` was asked for and the kernel was not given the image.
    #[error("{}: mode=kernel: not mounted by the kernel: {reason}", image.display())]
    KernelMode {
        /// The image.
        image: PathBuf,
        /// Why not.
        reason: String,
    },
    /// `ishare umount`: nothing is mounted there.
    #[error("{}: not mounted", .0.display())]
    NotMounted(PathBuf),
    /// `ishare umount`: the mount there is not ours.
    #[error("{}: not an ishare mount (type {fstype})", path.display())]
    NotOurs {
        /// The mount point.
        path: PathBuf,
        /// Its filesystem type.
        fstype: String,
    },
    /// `ishare umount`: the mount is in use.
    #[error("{}: busy (ishare umount -l detaches it now and cleans up later)", .0.display())]
    Busy(PathBuf),
    /// `ishare umount`: `umount2(2)` failed.
    #[error("cannot unmount {}: {error}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// `ishare umount`: unmounted, but the daemon did not exit in time.
    #[error(
        "{}: unmounted, but its daemon (pid {pid}) still serves it after {} s (publishing objects?)",
        path.display(),
        waited.as_secs()
    )]
    DaemonLingers {
        /// The mount point.
        path: PathBuf,
        /// The daemon.
        pid: u32,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// The node daemon's control socket cannot be reached (no daemon runs there).
    #[error("no ishare daemon at {}: {error}", path.display())]
    NoDaemon {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The node daemon runs already (its lock is held).
    #[error("an ishare daemon already serves {} (pid {pid})", path.display())]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
        /// Its pid, as its lock file says.
        pid: String,
    },
    /// Talking to the node daemon failed.
    #[error("ishare daemon at {}: {error}", path.display())]
    Control {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// `ishare umount` without privileges: `fusermount3` could not be run.
    #[error("cannot run fusermount3: {0}")]
    FusermountMissing(io::Error),
    /// `ishare umount` without privileges: `fusermount3` failed.
    #[error("fusermount3 -u {} failed ({status})", path.display())]
    Fusermount {
        /// The mount point.
        path: PathBuf,
        /// How it ended.
        status: ExitStatus,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
