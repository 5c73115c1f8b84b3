//! Errors of an image build. Each names the source path or the option at fault.

use std::path::PathBuf;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a source or output path failed.
    // The cause is part of the message, not a `source()`, so that error chains
    // (anyhow's `{:#}`) do not print it twice.
    #[error("{}: cannot {op}: {error}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done ("read", "list xattrs of", ...).
        op: &'static str,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file name longer than EROFS allows.
    #[error("{}: name is {len} bytes long, EROFS allows at most 255", path.display())]
    NameTooLong {
        /// The entry's source path.
        path: PathBuf,
        /// Length of the name in bytes.
        len: usize,
    },
    /// A block size other than 512, 1024, 2048 or 4096.
    #[error("unsupported block size {0}: use a power of two from 512 to 4096")]
    BlockSize(u64),
    /// An option value that cannot be used.
    #[error("{0}")]
    InvalidOption(String),
    /// Something in the source tree that the image cannot represent.
    #[error("{}: {what}", path.display())]
    Unrepresentable {
        /// The entry's source path.
        path: PathBuf,
        /// What does not fit.
        what: String,
    },
    /// A source file changed between scanning and copying.
    #[error("{}: changed while the image was being built ({what})", path.display())]
    Changed {
        /// The file's source path.
        path: PathBuf,
        /// What changed.
        what: String,
    },
    /// A tar archive that is corrupt or truncated, or holds an entry that cannot be
    /// in an image (a path escaping the root, a name too long, ...).
    #[error("{}: {what}", archive.display())]
    Tar {
        /// The archive as given (or `<stdin>`).
        archive: PathBuf,
        /// What is wrong, with the entry's path and the byte offset of its header.
        what: String,
    },
    /// A layer image of rebuild mode that is corrupt or cannot be used.
    #[error("layer {}: {what}", layer.display())]
    Layer {
        /// The layer image as given.
        layer: PathBuf,
        /// What is wrong, with the path in the layer where it applies.
        what: String,
    },
    /// An OCI image layout that cannot be read: missing or corrupt files, no image
    /// for the platform, a layer that is not a tar.
    #[error("{}: {what}", path.display())]
    Oci {
        /// The layout, or the file in it at fault.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A `--file-contexts` file that cannot be used: malformed, or a regex the
    /// `regex` crate does not support.
    #[error("{}{}: {what}", path.display(), line.map(|n| format!(":{n}")).unwrap_or_default())]
    FileContexts {
        /// The file (or its `.local`/`.homedirs` companion) at fault.
        path: PathBuf,
        /// The line, counted from 1, when one is at fault.
        line: Option<usize>,
        /// What is wrong.
        what: String,
    },
    /// The image would exceed a limit of the on-disk format.
    #[error("image too large: {0}")]
    TooLarge(String),
}

impl Error {
    /// Wraps an I/O error with the path and the operation.
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            error,
        }
    }
}

/// Result of builder operations.
pub type Result<T> = std::result::Result<T, Error>;
