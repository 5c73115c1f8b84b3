//! The nodes of the tree: one per inode, with what every input records about it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Marks an overlayfs directory as copied up (set on directories holding whiteouts).
pub(crate) const OVL_ORIGIN: &[u8] = b"trusted.overlay.origin";

/// One inode of the tree.
#[derive(Debug)]
pub(crate) struct Node {
    /// Where it is named: its path is rebuilt from this on demand
    /// ([`Tree::path`]), so a node costs its own name, not its whole path, and a
    /// chain of N nested directories takes memory linear in N.
    pub origin: Origin,
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
    /// ([`Tree::archive`]); `None` = read the file at [`Tree::path`].
    pub archive_offset: Option<u64>,
}

/// How a node is found, for reading its file and naming it in messages.
#[derive(Debug)]
pub(crate) enum Origin {
    /// The entry `name` of directory node `parent`: for a hard-linked inode, its
    /// first name in breadth-first order; the root is `{ parent: 0, name: "" }`.
    /// Parents come before their entries (breadth-first numbering), so following
    /// `parent` always ends at the root.
    Entry { parent: usize, name: Vec<u8> },
    /// A file outside the tree (the packed inode's temporary file).
    File(PathBuf),
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
    /// What entry paths are relative to: the source directory, or empty for a tar
    /// archive (whose entries are named by their path in it, the root ".").
    pub base: PathBuf,
    /// The (uncompressed) tar archive that holds the data of nodes with an
    /// `archive_offset`.
    pub archive: Option<Archive>,
    /// Rebuild mode: the layer images that hold regular files' data.
    pub layers: Option<crate::rebuild::layers::Layers>,
}

/// An uncompressed tar archive, the data source of a tree built from tar input.
#[derive(Debug)]
pub(crate) struct Archive {
    /// `None` when the bytes were not kept: a tar index (`--tar=i`) read from a
    /// stream needs none of them after parsing (digests are taken on the way).
    pub file: Option<std::fs::File>,
    /// For messages: the archive as the user named it.
    pub name: PathBuf,
    /// Bytes in the (uncompressed) archive.
    pub len: u64,
    /// SHA-256 of the data at these offsets, taken while the stream was parsed.
    pub digests: std::collections::HashMap<u64, [u8; 32]>,
}

impl Tree {
    /// The path of node `node`: the source file it is read from (directory input,
    /// the packed inode) or its entry in the archive (tar input), for messages.
    /// Rebuilt by walking up the parents, O(depth); called to open a file or to
    /// report an error, never kept.
    pub(crate) fn path(&self, node: usize) -> PathBuf {
        path_of(&self.nodes, &self.base, node)
    }

    /// The path of `node` relative to the root, without a leading `/` (empty for
    /// the root), as compress hints match it.
    pub(crate) fn relative(&self, node: usize) -> Vec<u8> {
        relative_of(&self.nodes, node)
    }
}

/// [`Tree::relative`] over nodes still being built.
pub(crate) fn relative_of(nodes: &[Node], node: usize) -> Vec<u8> {
    let mut names: Vec<&[u8]> = Vec::new();
    let mut cur = node;
    while cur != 0 {
        match &nodes[cur].origin {
            Origin::Entry { parent, name } => {
                debug_assert!(*parent < cur, "parents come first");
                names.push(name);
                cur = *parent;
            }
            Origin::File(_) => break,
        }
    }
    names.reverse();
    names.join(&b'/')
}

/// [`Tree::path`] over nodes still being built (the input's own messages).
pub(crate) fn path_of(nodes: &[Node], base: &Path, node: usize) -> PathBuf {
    if let Origin::File(p) = &nodes[node].origin {
        return p.clone();
    }
    let rel = relative_of(nodes, node);
    match (base.as_os_str().is_empty(), rel.is_empty()) {
        (true, true) => PathBuf::from("."),
        (_, true) => base.to_path_buf(),
        (_, false) => base.join(OsStr::from_bytes(&rel)),
    }
}
