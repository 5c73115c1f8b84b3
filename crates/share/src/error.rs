//! The error type of the store tools (`ishare store stat|gc`) and `ishare doctor`.
//!
//! (The mount path reports `io::Error`s with context strings: everything it does is
//! file I/O, and its errors end up in the daemon's log.)

use std::io;
use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The I/O error (not a `source`: the message already shows it).
        error: io::Error,
    },
    /// A size argument (`--max-size`) is not understood.
    #[error(
        "invalid size {0:?}: expected a number of bytes, optionally followed by K, M, G, T, P or E (powers of 1024, also KiB, MiB, ...) or KB, MB, ... (powers of 1000)"
    )]
    BadSize(String),
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
