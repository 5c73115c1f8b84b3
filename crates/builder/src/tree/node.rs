//! The nodes of the tree: one per inode, with what every input records about it.

use std::path::PathBuf;

/// Marks an overlayfs directory as copied up (set on directories holding whiteouts).
pub(crate) const OVL_ORIGIN: &[u8] = b"trusted.overlay.origin";

/// One inode of the tree.
#[derive(Debug)]
pub(crate) struct Node {
    /// Source path, for reading data and for error messages.
    pub path: PathBuf,
    pub kind: Kind,
    /// Mode with the file type bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Links inside the tree (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Size of regular files (directories and symlinks get theirs later).
    pub size: u64,
    /// Device number of device nodes, in Linux `new_encode_dev` form.
    pub rdev: u32,
    /// Extended attributes (full name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Regular files from a tar archive: where their data starts in it
    /// ([`Tree::archive`]); `None` = read `path`.
    pub archive_offset: Option<u64>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// Entries sorted by name, without "." and ".."; `parent` is the node of "..".
    Dir {
        entries: Vec<(Vec<u8>, usize)>,
        parent: usize,
    },
    File,
    Symlink(Vec<u8>),
    /// Character or block device, fifo, socket.
    Special,
}

/// The scanned tree; node 0 is the root, nodes are in breadth-first order.
#[derive(Debug)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    /// The (uncompressed) tar archive that holds the data of nodes with an
    /// `archive_offset`.
    pub archive: Option<Archive>,
}

/// An uncompressed tar archive, the data source of a tree built from tar input.
#[derive(Debug)]
pub(crate) struct Archive {
    pub file: std::fs::File,
    /// For messages: the archive as the user named it.
    pub name: PathBuf,
}
