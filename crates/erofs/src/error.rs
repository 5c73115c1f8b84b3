//! The reader's error type: every error names the image, where in it (NID, path or
//! byte offset) and what is wrong.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Where in the image an error was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The inode, when known.
    pub nid: Option<u64>,
    /// The path inside the image, when known.
    pub path: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.nid) {
            (Some(p), Some(n)) => write!(f, "{p} (nid {n}): "),
            (Some(p), None) => write!(f, "{p}: "),
            (None, Some(n)) => write!(f, "nid {n}: "),
            (None, None) => Ok(()),
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// Opening the image (or an extra device) failed.
    #[error("cannot open: {0}")]
    Open(io::Error),
    /// Reading the image (or an extra device) failed.
    #[error("read of {len} bytes at offset {offset} failed: {error}")]
    Io {
        /// Byte offset of the read.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// The I/O error (not a `source`: the message already shows it).
        error: io::Error,
    },
    /// The image ends before a structure it refers to.
    #[error("truncated image: {len} bytes at offset {offset} lie past its end ({size} bytes)")]
    Truncated {
        /// Byte offset of the structure.
        offset: u64,
        /// Length of the structure.
        len: u64,
        /// Size of the device.
        size: u64,
    },
    /// The image contradicts the on-disk format.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// A valid feature this reader does not handle (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A looked-up name or path does not exist.
    #[error("no such file or directory")]
    NotFound,
    /// A path component is not a directory.
    #[error("not a directory")]
    NotADirectory,
    /// An operation needs another file type.
    #[error("{0}")]
    WrongType(&'static str),
}

/// A reader error: the image name, the location and the kind.
#[derive(Debug, thiserror::Error)]
#[error("{image}: {at}{kind}")]
pub struct Error {
    image: Arc<str>,
    at: Location,
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(image: &Arc<str>, kind: ErrorKind) -> Self {
        Self {
            image: image.clone(),
            at: Location::default(),
            kind,
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where it happened.
    pub fn location(&self) -> &Location {
        &self.at
    }

    /// The image name it refers to.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Attaches a NID unless one is already known.
    pub fn at_nid(mut self, nid: u64) -> Self {
        self.at.nid.get_or_insert(nid);
        self
    }

    /// Attaches a path unless one is already known.
    pub fn at_path(mut self, path: impl Into<String>) -> Self {
        if self.at.path.is_none() {
            self.at.path = Some(path.into());
        }
        self
    }

    /// True for a corrupt or truncated image (as opposed to I/O or unsupported).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Corrupt(_) | ErrorKind::Truncated { .. }
        )
    }
}

/// Result alias of the reader.
pub type Result<T, E = Error> = std::result::Result<T, E>;
