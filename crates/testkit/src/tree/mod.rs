//! ONE generator of source trees, with profiles.
//!
//! A profile records what a tree holds in a [`TreeBuilder`] (paths, contents, owners,
//! modes, mtimes, xattrs, hard links, device nodes); [`TreeBuilder::write`] then creates it
//! on disk in one fixed order: directories (parents first), files, symlinks and nodes, hard
//! links, then owners and modes (chown before chmod, which keeps setuid/setgid bits), xattrs
//! (after every entry exists, so a default ACL is inherited by nothing), and mtimes last,
//! deepest first (creating an entry changes its directory's mtime). The same profile and
//! seed always give the same tree.
//!
//! Profiles:
//! * [`TreeSpec::full`] / [`TreeSpec::small`] ([`foundation`]): every name byte, every size
//!   around block sizes, every mode/owner/time combination, xattrs of every kind, ACLs,
//!   devices, hard links, big directories — what the extract/mount oracles compare;
//! * [`BlockTree`] ([`block_tree`]): the builder's tree around one block size (contents
//!   derived from each path, so tests can name files by size: `files/f_b+1`);
//! * [`reader_tree`]: the reader's small tree of the corruption tests;
//! * [`compressible`]: contents that compress well, badly and not at all (text, repeated
//!   patterns, zeros, random blocks, mixes, near-copies), small or large;
//! * [`minbase`]: the Debian bookworm minbase root filesystem the benchmarks use.
//!
//! Everything here needs root (mknod, chown, `trusted.` xattrs).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, Permissions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::rng::Rng;
use crate::snapshot::Kind;
use crate::tools::{cache_dir, require_root};

mod foundation;
mod profiles;

pub use foundation::{SourceTree, TreeSpec, foundation, generate};
pub use profiles::{
    BIGDIR_ENTRIES, BlockTree, READER_FILES, Scale, block_tree, compressible, long_link_target,
    reader_tree,
};

/// The build time the tests use; entries whose mtime is exactly this (0 ns) can be compact
/// inodes.
pub const T0: i64 = 1_700_000_000;

/// Owner, permission bits and mtime of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds.
    pub mtime: (i64, i64),
}

/// Most entries get this (0644, 0:0, [`T0`]), so most inodes can be compact ones.
pub const BASE: Meta = Meta {
    perm: 0o644,
    uid: 0,
    gid: 0,
    mtime: (T0, 0),
};
/// [`BASE`] for directories (0755).
pub const BASE_DIR: Meta = Meta {
    perm: 0o755,
    ..BASE
};

#[derive(Clone, Debug)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    /// Character or block device, fifo or socket, with major and minor.
    Special(Kind, u32, u32),
    /// Another name of an earlier path.
    HardLink(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Item {
    path: Vec<u8>,
    node: Node,
    meta: Meta,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The description of a tree, filled by a profile and written by [`TreeBuilder::write`].
#[derive(Debug)]
pub struct TreeBuilder {
    items: Vec<Item>,
    index: HashMap<Vec<u8>, usize>,
    /// The generator of the profile's random contents.
    pub rng: Rng,
}

impl TreeBuilder {
    /// An empty description (the root directory gets [`BASE_DIR`] unless [`Self::dir`]
    /// is called with `""`); random contents from `Rng::new(seed)`.
    pub fn new(seed: u64) -> TreeBuilder {
        TreeBuilder {
            items: Vec::new(),
            index: HashMap::new(),
            rng: Rng::new(seed),
        }
    }

    fn add(&mut self, rel: &[u8], node: Node, meta: Meta) {
        if rel.is_empty() && !matches!(node, Node::Dir) {
            panic!("the root is a directory");
        }
        if let Some(&i) = self.index.get(rel) {
            assert!(rel.is_empty(), "{} added twice", rel.escape_ascii());
            self.items[i].meta = meta;
            return;
        }
        self.index.insert(rel.to_vec(), self.items.len());
        self.items.push(Item {
            path: rel.to_vec(),
            node,
            meta,
            xattrs: Vec::new(),
        });
    }

    /// A directory (`""`: the root's metadata).
    pub fn dir(&mut self, rel: &[u8], m: Meta) {
        self.add(rel, Node::Dir, m);
    }

    pub fn file(&mut self, rel: &[u8], content: &[u8], m: Meta) {
        self.add(rel, Node::File(content.to_vec()), m);
    }

    /// A file of `len` bytes from [`Self::rng`].
    pub fn random_file(&mut self, rel: &[u8], len: usize, m: Meta) {
        let content = self.rng.bytes(len);
        self.file(rel, &content, m);
    }

    /// A symlink (its permission bits are always 0777).
    pub fn symlink(&mut self, rel: &[u8], target: &[u8], m: Meta) {
        self.add(rel, Node::Symlink(target.to_vec()), m);
    }

    /// A device node, fifo or socket (`kind` CharDev, BlockDev, Fifo or Socket).
    pub fn node(&mut self, rel: &[u8], kind: Kind, major: u32, minor: u32, m: Meta) {
        assert!(
            matches!(
                kind,
                Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket
            ),
            "node of kind {kind:?}"
        );
        self.add(rel, Node::Special(kind, major, minor), m);
    }

    /// `new` as another name of the earlier `existing` (not following a symlink).
    pub fn hardlink(&mut self, existing: &[u8], new: &[u8]) {
        assert!(self.index.contains_key(existing), "link to unknown path");
        self.add(new, Node::HardLink(existing.to_vec()), BASE);
    }

    /// An xattr on an earlier path (or the root, `""`).
    pub fn xattr(&mut self, rel: &[u8], name: &[u8], value: &[u8]) {
        if rel.is_empty() && !self.index.contains_key(rel) {
            self.dir(b"", BASE_DIR);
        }
        let i = *self
            .index
            .get(rel)
            .unwrap_or_else(|| panic!("xattr on unknown path {}", rel.escape_ascii()));
        self.items[i].xattrs.push((name.to_vec(), value.to_vec()));
    }

    /// Creates the tree under `root` (an existing empty directory, which gets the root's
    /// metadata). `reverse` creates the entries in the opposite order, which changes the
    /// order in which tmpfs lists them.
    pub fn write(&self, root: &Path, reverse: bool) {
        require_root();
        let mut items: Vec<&Item> = self.items.iter().collect();
        if !self.index.contains_key(&b""[..]) {
            static ROOT: Item = Item {
                path: Vec::new(),
                node: Node::Dir,
                meta: BASE_DIR,
                xattrs: Vec::new(),
            };
            items.insert(0, &ROOT);
        }
        if reverse {
            items.reverse();
        }
        let path = |rel: &[u8]| -> PathBuf {
            if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(OsStr::from_bytes(rel))
            }
        };
        let depth = |i: &Item| {
            i.path.iter().filter(|&&c| c == b'/').count() + usize::from(!i.path.is_empty())
        };
        let is_dir = |i: &Item| matches!(i.node, Node::Dir);
        let is_link = |i: &Item| matches!(i.node, Node::HardLink(_));
        // Directories, parents first.
        let mut dirs: Vec<&Item> = items.iter().copied().filter(|i| is_dir(i)).collect();
        dirs.sort_by_key(|i| depth(i));
        for d in dirs.iter().filter(|d| !d.path.is_empty()) {
            let p = path(&d.path);
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        }
        // Files, symlinks, nodes; then hard links.
        for it in items.iter().filter(|i| !is_dir(i) && !is_link(i)) {
            let p = path(&it.path);
            match &it.node {
                Node::File(data) => {
                    fs::write(&p, data).unwrap_or_else(|e| panic!("write {p:?}: {e}"))
                }
                Node::Symlink(t) => symlink(OsStr::from_bytes(t), &p)
                    .unwrap_or_else(|e| panic!("symlink {p:?}: {e}")),
                Node::Special(kind, major, minor) => {
                    let ft = match kind {
                        Kind::CharDev => FileType::CharacterDevice,
                        Kind::BlockDev => FileType::BlockDevice,
                        Kind::Fifo => FileType::Fifo,
                        _ => FileType::Socket,
                    };
                    let dev = rustix::fs::makedev(*major, *minor);
                    rustix::fs::mknodat(CWD, &p, ft, Mode::from_raw_mode(0o600), dev)
                        .unwrap_or_else(|e| panic!("mknod {p:?}: {e}"))
                }
                Node::Dir | Node::HardLink(_) => unreachable!(),
            }
        }
        for it in items.iter().filter(|i| is_link(i)) {
            let Node::HardLink(to) = &it.node else {
                unreachable!()
            };
            let (a, b) = (path(to), path(&it.path));
            // std's hard_link does not follow a symlink `a` on Linux (linkat without FOLLOW).
            fs::hard_link(&a, &b).unwrap_or_else(|e| panic!("link {a:?} {b:?}: {e}"));
        }
        let owner_mode = |it: &Item| {
            let p = path(&it.path);
            // chown first: it clears the setuid/setgid bits that chmod then sets.
            lchown(&p, Some(it.meta.uid), Some(it.meta.gid))
                .unwrap_or_else(|e| panic!("lchown {p:?}: {e}"));
            if !matches!(it.node, Node::Symlink(_)) {
                fs::set_permissions(&p, Permissions::from_mode(it.meta.perm))
                    .unwrap_or_else(|e| panic!("chmod {p:?}: {e}"));
            }
        };
        let xattrs = |it: &Item| {
            let p = path(&it.path);
            for (name, value) in &it.xattrs {
                rustix::fs::lsetxattr(&p, name.as_slice(), value, XattrFlags::empty())
                    .unwrap_or_else(|e| {
                        panic!(
                            "setxattr {p:?} {} ({} bytes): {e}",
                            name.escape_ascii(),
                            value.len()
                        )
                    });
            }
        };
        // Non-directories: owner and mode, then xattrs (setting an access ACL then adjusts
        // the mode). Directories: xattrs, then owner and mode.
        for it in items.iter().filter(|i| !is_dir(i) && !is_link(i)) {
            owner_mode(it);
            xattrs(it);
        }
        for it in items.iter().filter(|i| is_link(i)) {
            xattrs(it);
        }
        for it in dirs.iter().rev() {
            xattrs(it);
            owner_mode(it);
        }
        // Times last, deepest first.
        let mut timed: Vec<&Item> = items.iter().copied().filter(|i| !is_link(i)).collect();
        timed.sort_by_key(|i| std::cmp::Reverse(depth(i)));
        for it in timed {
            let p = path(&it.path);
            let t = Timespec {
                tv_sec: it.meta.mtime.0,
                tv_nsec: it.meta.mtime.1 as _,
            };
            let times = Timestamps {
                last_access: t,
                last_modification: t,
            };
            rustix::fs::utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW)
                .unwrap_or_else(|e| panic!("utimensat {p:?}: {e}"));
        }
    }
}

/// Writes `data` to `root/rel`, creating the missing parent directories (for tests that
/// need a few plain files, not a profile).
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("a file has a parent"))
        .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", p.display()));
    fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

// ---------------------------------------------------------------------------------------------
// The minbase root filesystem
// ---------------------------------------------------------------------------------------------

/// The Debian bookworm minbase tree the benchmarks use (`$ISHARE_MINBASE_ROOTFS`, else
/// `$ISHARE_CACHE/bench/rootfs-bookworm-minbase`, bootstrapped once by
/// `scripts/install-deps.sh` through `scripts/rootfs.sh`), or a failure telling how to
/// make it.
pub fn minbase() -> PathBuf {
    let dir = std::env::var_os("ISHARE_MINBASE_ROOTFS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("bench/rootfs-bookworm-minbase"));
    assert!(
        dir.join("etc/debian_version").is_file() && dir.join("var/lib/dpkg/status").is_file(),
        "the Debian bookworm minbase tree {} is missing: run `scripts/install-deps.sh` (as \
         root), which bootstraps it once with debootstrap (or set ISHARE_MINBASE_ROOTFS to \
         such a tree)",
        dir.display()
    );
    dir
}
