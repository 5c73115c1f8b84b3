//! Builds EROFS images (uncompressed or compressed) from a directory or a tar archive, with
//! page-cache-share fingerprints (`--xattr-inode-digest` of mkfs.erofs) on by default.
//!
//! The build is a pipeline, one folder or file per stage:
//!
//! - `input`: the source into the in-memory `tree` (`input::dir` scans a directory;
//!   `input::tar` indexes an archive and leaves each file's data where it is in it;
//!   `rebuild` merges EROFS layer images into their overlay, whose files stay in,
//!   or are read from, the layers);
//! - `selabel` gives directory entries their `--file-contexts` SELinux label;
//! - `xattr` plans xattrs, `dir` directory blocks;
//! - `chunk` cuts uncompressed files into deduplicated chunks (`--chunksize`);
//! - `compress` compresses regular files (settings and the `-z`/hints grammar in
//!   `compress::config`; `-E` in `extended`);
//! - `layout` places every inode and data block;
//! - `data` copies and hashes file data on all workers;
//! - `writer` runs the stages, serializes the metadata and commits the image.
//!
//! The layout is fixed before any data is read, so the output depends only on the
//! tree and the options. Modules only import downwards: no two import each other,
//! directly or around a loop.

#![deny(missing_docs)]

mod blockmap;
mod chunk;
mod compress;
mod data;
mod dir;
mod error;
mod extended;
mod input;
mod layout;
mod metabox;
mod options;
mod output;
mod rebuild;
mod selabel;
mod serialize;
mod tree;
mod wide;
mod writer;
mod xattr;
mod zdir;

pub use compress::config::{Codec, Compression, Compressor, FragDedupe, parse_size};
pub use error::{Error, Result};
pub use extended::ExtendedOptions;
pub use input::oci::{OciLayer, OciSource};
pub use input::tar::TarInput;
pub use metabox::{MetaZone, Metabox, MetaboxAlgorithm};
pub use options::{
    BuildOptions, DEFAULT_FINGERPRINT_NAME, DEFAULT_XATTR_TOLERANCE, InodeVersion,
    MAX_INLINE_XATTR_SIZE, Progress, TarData, TimePolicy,
};
pub use rebuild::{RebuildData, RebuildOptions, build_rebuild};
pub use selabel::FileContexts;
pub use writer::{BuildReport, build, build_oci, build_tar};
