//! Builds EROFS images (uncompressed or compressed) from a directory or a tar archive, with
//! page-cache-share fingerprints (`--xattr-inode-digest` of mkfs.erofs) on by default.
//!
//! The build runs in phases: scan the source into memory (`scan`; for tar input
//! `tarball`, which indexes the archive and leaves each file's data where it is in
//! it), plan xattrs (`xattr`) and directories (`dir`), place every inode and data
//! block (`layout`), copy and hash file data on all workers (`data`), then
//! serialize the metadata and commit the image (`writer`). The layout is fixed before any
//! data is read, so the output depends only on the tree and the options.

#![deny(missing_docs)]

mod compress;
mod data;
mod dir;
mod error;
mod extended;
mod input;
mod layout;
mod options;
mod tree;
mod writer;
mod xattr;

pub use compress::config::{Codec, Compression, Compressor, parse_size};
pub use error::{Error, Result};
pub use extended::ExtendedOptions;
pub use input::tar::TarInput;
pub use options::{
    BuildOptions, DEFAULT_FINGERPRINT_NAME, DEFAULT_XATTR_TOLERANCE, InodeVersion, Progress,
    TimePolicy,
};
pub use writer::{BuildReport, build, build_tar};
