//! The archive's own inode model while it is parsed: a later entry may replace an
//! earlier one, directories map names to inodes and remember AUFS whiteouts, and
//! regular files point at their data in the archive. The parser turns it into the
//! build's [`Tree`](crate::tree::Tree) at the end.

use std::collections::BTreeMap;

pub(super) const S_IFMT: u16 = 0o170000;
pub(super) const S_IFDIR: u16 = 0o040000;
pub(super) const S_IFREG: u16 = 0o100000;
pub(super) const S_IFLNK: u16 = 0o120000;
pub(super) const S_IFCHR: u16 = 0o020000;
pub(super) const S_IFBLK: u16 = 0o060000;
pub(super) const S_IFIFO: u16 = 0o010000;

#[derive(Debug)]
pub(super) enum IKind {
    Dir {
        children: BTreeMap<Vec<u8>, usize>,
        /// `.wh..wh..opq` seen (`--aufs`).
        opaque: bool,
        /// Holds a whiteout made from `.wh.NAME` (`--aufs`).
        whiteouts: bool,
    },
    File {
        offset: u64,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// Device, fifo (`rdev` in `new_encode_dev` form).
    Special {
        rdev: u32,
    },
}

#[derive(Debug)]
pub(super) struct Inode {
    pub(super) kind: IKind,
    /// Mode with the file type bits.
    pub(super) mode: u16,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: i64,
    pub(super) nsec: u32,
    pub(super) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The image layer that last wrote this inode (OCI input; 0 for a plain tar),
    /// so that an opaque directory hides only what lower layers put in it.
    pub(super) layer: u32,
    // No path: an inode is reached through its parents' `children`, and a path
    // kept per inode would make N nested directories cost O(N²) bytes.
}

impl Inode {
    pub(super) fn children(&self) -> Option<&BTreeMap<Vec<u8>, usize>> {
        match &self.kind {
            IKind::Dir { children, .. } => Some(children),
            _ => None,
        }
    }
}

/// What an entry's header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    File,
    HardLink,
    Symlink,
    Chr,
    Blk,
    Dir,
    Fifo,
}

pub(super) fn type_name(k: &IKind, mode: u16) -> &'static str {
    match k {
        IKind::Dir { .. } => "a directory",
        IKind::File { .. } => "a regular file",
        IKind::Symlink(_) => "a symlink",
        IKind::Special { .. } => match mode & S_IFMT {
            S_IFCHR => "a character device",
            S_IFBLK => "a block device",
            _ => "a fifo",
        },
    }
}
