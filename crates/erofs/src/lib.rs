//! A reader for EROFS images: the on-disk format ([`format`]) and an [`Image`] that
//! walks directories, reads inodes, file data and extended attributes with every
//! offset checked, so a corrupt image gives an [`Error`] naming the image, the
//! inode or path and the problem, never a panic.
//!
//! I/O goes through [`ReadAt`], so images can be read from files or memory.

#![deny(missing_docs)]

mod check;
mod data;
mod dir;
mod error;
pub mod format;
mod image;
mod inode;
mod source;
mod xattr;

#[cfg(test)]
mod tests;

pub use check::{CheckOptions, CheckReport};
pub use data::{Extent, ExtentKind};
pub use dir::DirEntry;
pub use error::{Error, ErrorKind, Location, Result};
pub use image::{
    DeviceInfo, Image, LongPrefix, OpenOptions, SuperInfo, erofs_crc32c, superblock_checksum,
};
pub use inode::{DataLayout, FileType, Inode};
pub use source::ReadAt;
pub use xattr::{Xattr, split_xattr_name, xattr_filter_bit};
