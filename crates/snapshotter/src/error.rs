//! The snapshotter's errors. Each says which snapshot (or file) it is about, and maps to
//! the gRPC code containerd's own snapshotters use for it (containerd turns the code
//! back into its `errdefs` errors: `ErrNotFound`, `ErrAlreadyExists`, ...).

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No snapshot (or parent) of that key.
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    /// The parent named in a Prepare or View does not exist.
    #[error("snapshot {key:?}: parent {parent:?} not found")]
    ParentNotFound {
        /// The snapshot being created.
        key: String,
        /// Its missing parent.
        parent: String,
    },
    /// A snapshot of that key or name exists already.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// The snapshot is not in a state that allows the call (committing a view,
    /// removing a parent, mounting a committed snapshot, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request itself is wrong (an unknown update field, a bad filter, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A file operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The metadata store (redb) failed.
    #[error("snapshot metadata {path}: {msg}")]
    Metadata {
        /// The database file.
        path: PathBuf,
        /// redb's message.
        msg: String,
    },
    /// Building a layer's EROFS image failed.
    #[error("snapshot {key:?}: building its layer image failed: {source}")]
    Build {
        /// The snapshot being committed.
        key: String,
        /// The builder's error.
        source: ishare_builder::Error,
    },
    /// A layer image containerd's EROFS differ wrote is not one we can serve.
    #[error("snapshot {key:?}: the EROFS differ's layer image {path} is unusable: {source}")]
    BadLayer {
        /// The snapshot being committed.
        key: String,
        /// The image.
        path: PathBuf,
        /// The reader's error.
        source: Box<ishare_erofs::Error>,
    },
    /// The node daemon refused or failed a mount or unmount.
    #[error("{what}: {source}")]
    Daemon {
        /// What was asked (names the layer).
        what: String,
        /// The daemon client's error.
        source: ishare_share::Error,
    },
    /// The configuration is unusable (no domain id, a bad root, ...).
    #[error("{0}")]
    Config(String),
    /// Serving gRPC failed.
    #[error("serving {path}: {msg}")]
    Serve {
        /// The socket.
        path: PathBuf,
        /// tonic's message.
        msg: String,
    },
}

/// The snapshotter's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The gRPC code containerd expects for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::NotFound(_) | Error::ParentNotFound { .. } => tonic::Code::NotFound,
            Error::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::InvalidArgument(_) | Error::BadLayer { .. } => tonic::Code::InvalidArgument,
            Error::Build { source, .. } if is_no_space(source) => tonic::Code::ResourceExhausted,
            Error::Io { source, .. } if source.raw_os_error() == Some(28) => {
                tonic::Code::ResourceExhausted
            }
            _ => tonic::Code::Internal,
        }
    }
}

fn is_no_space(e: &ishare_builder::Error) -> bool {
    // ENOSPC/EDQUOT anywhere in the builder's chain: a full disk, not a bad layer.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(28 | 122))
        {
            return true;
        }
        cur = err.source();
    }
    e.to_string().contains("No space left")
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        tonic::Status::new(e.code(), e.to_string())
    }
}
