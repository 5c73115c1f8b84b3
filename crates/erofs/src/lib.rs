//! A reader for EROFS images: the on-disk format ([`format`](mod@format)) and an [`Image`] that
//! walks directories, reads inodes, file data and extended attributes with every
//! offset checked, so a corrupt image gives an [`Error`] naming the image, the
//! inode or path and the problem, never a panic.
//!
//! Compressed inodes (LZ4, MicroLZMA, DEFLATE, Zstandard; full and compact indexes,
//! extent records, big pclusters, ztailpacking, fragments, deduplicated pclusters) read
//! like the others through [`Image::read_at`]: each extent is decoded whole, once, and
//! corrupt compressed data is an error naming the inode and the pcluster. Each codec is
//! a cargo feature (`lz4`, `lzma`, `deflate`, `zstd`, all on by default); without one,
//! its data reads as [`ErrorKind::Unsupported`].
//!
//! One walk of the tree ([`Image::walk`]: paths, hard links, cycles) serves the
//! consistency check ([`Image::check`]), statistics and extraction. With cargo
//! feature `extract`, `Image::extract` recreates the tree in a directory.
//!
//! I/O goes through [`ReadAt`], so images can be read from files or memory.

#![deny(missing_docs)]

mod check;
mod data;
mod decompress;
mod dir;
mod error;
#[cfg(feature = "extract")]
mod extract;
pub mod format;
mod image;
mod inode;
mod source;
mod walk;
mod xattr;
mod zdata;
mod zmap;

#[cfg(test)]
mod tests;

pub use check::{CheckOptions, CheckReport};
pub use data::{Extent, ExtentKind};
pub use decompress::{Algorithm, CompressionInfo};
pub use dir::DirEntry;
pub use error::{Error, ErrorKind, Location, Result};
#[cfg(feature = "extract")]
pub use extract::{ExtractError, ExtractOptions};
pub use image::{
    DeviceInfo, Image, LongPrefix, OpenOptions, SuperInfo, erofs_crc32c, superblock_checksum,
};
pub use inode::{DataLayout, FileType, Inode};
pub use source::ReadAt;
pub use walk::{Reached, Walk, WalkDir, WalkEntry, WalkOrder, WalkStep};
pub use xattr::{Xattr, split_xattr_name, xattr_filter_bit};
pub use zmap::Pcluster;
