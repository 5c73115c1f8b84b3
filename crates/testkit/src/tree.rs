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

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, Permissions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::mounts::Tmpfs;
use crate::rng::{Rng, pseudo_random};
use crate::snapshot::Kind;
use crate::tools::{cache_dir, require_root};

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
// The foundation profile: every name, every size
// ---------------------------------------------------------------------------------------------

/// What the foundation tree contains. [`TreeSpec::full`] is the one the oracle tests use;
/// [`TreeSpec::small`] builds in a few milliseconds for tests of CLI behaviour.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    /// Seed of the pseudo-random file contents.
    pub seed: u64,
    /// Directories under `dirs/` with this many entries each.
    pub dir_sizes: Vec<usize>,
    /// Make `names/`: names using every byte value except `/` and NUL, and 255-byte names.
    pub all_byte_names: bool,
    /// Block sizes B for which files of B-1, B and B+1 bytes are made (plus 0 and 1 once).
    pub block_sizes: Vec<u64>,
    /// Size of `files/big` (0: no such file).
    pub big_file_size: u64,
    /// Make the mostly-zero and all-zero files under `sparse/`.
    pub sparse_files: bool,
    /// Make symlinks with targets of up to 4095 bytes (else only short ones).
    pub long_symlinks: bool,
    /// Make xattrs of several KiB and the file with 40 xattrs.
    pub big_xattrs: bool,
    /// Use uids/gids above 65535 (they force extended inodes).
    pub large_ids: bool,
    /// Length of the longest names (255 = NAME_MAX; mkfs.erofs 1.5 fails on 255-byte names).
    pub max_name_len: usize,
}

impl TreeSpec {
    /// Everything the oracle tests cover (a few thousand entries, about 8 MiB of data).
    pub fn full() -> TreeSpec {
        TreeSpec {
            seed: 0x1534_2024,
            dir_sizes: vec![0, 1, 200, 5000],
            all_byte_names: true,
            block_sizes: vec![512, 1024, 2048, 4096],
            big_file_size: 5 * 1024 * 1024 + 123,
            sparse_files: true,
            long_symlinks: true,
            big_xattrs: true,
            large_ids: true,
            max_name_len: 255,
        }
    }

    /// A small tree still holding one of each kind of entry.
    pub fn small() -> TreeSpec {
        TreeSpec {
            seed: 7,
            dir_sizes: vec![0, 3],
            all_byte_names: false,
            block_sizes: vec![4096],
            big_file_size: 100_000,
            sparse_files: false,
            long_symlinks: false,
            big_xattrs: false,
            large_ids: true,
            max_name_len: 255,
        }
    }
}

const PERMS: &[u32] = &[
    0o644, 0o000, 0o777, 0o4755, 0o2755, 0o1777, 0o7777, 0o6711, 0o400, 0o1644, 0o2070,
];
const IDS: &[u32] = &[0, 1000, 65534, 1, 65535];
const LARGE_IDS: &[u32] = &[100_000, 4_000_000_000];
/// mtimes (seconds, nanoseconds): all in [0, 2^32), including after 2038. Those at or after
/// 1700000000 with 0 ns fit compact inodes when mkfs's epoch is 1700000000.
const TIMES: &[(i64, i64)] = &[
    (1_700_000_000, 0),
    (1_700_000_100, 0),
    (2_000_000_000, 0),
    (0, 0),
    (1, 1),
    (1_000_000_000, 123_456_789),
    (1_700_000_000, 999_999_999),
    (1_700_000_001, 500),
    (2_147_483_647, 0),
    (2_147_483_648, 7),
    (4_102_444_800, 42),
    (4_294_967_295, 999_999_999),
];

/// The binary form of a POSIX ACL xattr value (`system.posix_acl_*`) of an ACL in
/// setfacl's short text form (`u::rw-,u:1000:r--,g::r-x,m::rwx,o::r--`): a version-2 header
/// and (tag, perm, id) entries, in the given order (which must be by tag, then id).
fn posix_acl(text: &str) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for entry in text.split(',') {
        let mut f = entry.split(':');
        let (tag, id, perm) = (f.next(), f.next(), f.next().expect("tag:id:perm"));
        let tag: u16 = match (tag, id) {
            (Some("u"), Some("")) => 1,
            (Some("u"), _) => 2,
            (Some("g"), Some("")) => 4,
            (Some("g"), _) => 8,
            (Some("m"), _) => 0x10,
            (Some("o"), _) => 0x20,
            _ => panic!("ACL entry {entry}"),
        };
        let id = id
            .filter(|i| !i.is_empty())
            .map_or(u32::MAX, |i| i.parse().expect("id"));
        let perm = perm
            .bytes()
            .zip([4u16, 2, 1])
            .filter(|(c, _)| *c != b'-')
            .map(|(_, bit)| bit)
            .sum::<u16>();
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The foundation profile described by `spec`.
pub fn foundation(spec: &TreeSpec) -> TreeBuilder {
    let mut g = Foundation {
        t: TreeBuilder::new(spec.seed),
        spec,
        n: 0,
    };
    g.build();
    g.t
}

struct Foundation<'a> {
    t: TreeBuilder,
    spec: &'a TreeSpec,
    /// Counter for [`Foundation::varied`].
    n: usize,
}

impl Foundation<'_> {
    /// A different combination of mode, owner and mtime at each call.
    fn varied(&mut self) -> Meta {
        let i = self.n;
        self.n += 1;
        let ids: Vec<u32> = if self.spec.large_ids {
            IDS.iter().chain(LARGE_IDS).copied().collect()
        } else {
            IDS.to_vec()
        };
        Meta {
            perm: PERMS[i % PERMS.len()],
            uid: ids[(i / 2) % ids.len()],
            gid: ids[(i / 3 + 1) % ids.len()],
            mtime: TIMES[(i / 5 + i) % TIMES.len()],
        }
    }

    fn build(&mut self) {
        self.t.dir(b"", BASE_DIR);
        self.t.xattr(b"", b"user.root", b"root dir xattr");
        self.files();
        self.sparse();
        self.symlinks();
        self.hardlinks();
        self.devices();
        self.xattrs();
        self.metas();
        self.names();
        self.dirs();
        self.deep();
        self.acls();
    }

    fn files(&mut self) {
        let t = &mut self.t;
        t.dir(b"files", BASE_DIR);
        let mut sizes = BTreeSet::from([0u64, 1]);
        for &b in &self.spec.block_sizes {
            sizes.extend([b - 1, b, b + 1]);
        }
        // A few multi-block sizes with and without a tail.
        sizes.extend([3 * 4096 + 17, 8192, 65_537]);
        for s in sizes {
            let name = format!("files/size-{s}");
            let m = self.varied();
            self.t.random_file(name.as_bytes(), s as usize, m);
        }
        let t = &mut self.t;
        if self.spec.big_file_size > 0 {
            t.random_file(b"files/big", self.spec.big_file_size as usize, BASE);
        }
        // Identical contents in two files (chunk deduplication in chunked modes).
        let dup = t.rng.bytes(20_000);
        t.file(b"files/dup-1", &dup, BASE);
        t.file(b"files/dup-2", &dup, BASE);
        t.file(b"files/text", b"hello, erofs\n", BASE);
    }

    fn sparse(&mut self) {
        if !self.spec.sparse_files {
            return;
        }
        let t = &mut self.t;
        t.dir(b"sparse", BASE_DIR);
        // All zeros, several blocks of every block size, and not block aligned.
        t.file(b"sparse/zeros-16k", &[0u8; 16384], BASE);
        t.file(b"sparse/zeros-odd", &vec![0u8; 3 * 4096 + 100], BASE);
        // Mostly zeros: a few data blocks in a 1 MiB + 7 file (holes in chunked layouts).
        let mut v = vec![0u8; 1024 * 1024 + 7];
        for off in [0usize, 8192, 300_000, 512 * 1024, 1024 * 1024 - 1000] {
            let d = t.rng.bytes(1000);
            v[off..off + 1000].copy_from_slice(&d);
        }
        let n = v.len();
        v[n - 1] = 0xAA;
        t.file(b"sparse/mostly-zeros", &v, BASE);
        // Data, then zeros to the end (a trailing hole).
        let mut v = vec![0u8; 64 * 1024];
        let d = t.rng.bytes(4096);
        v[..4096].copy_from_slice(&d);
        t.file(b"sparse/trailing-zeros", &v, BASE);
    }

    fn symlinks(&mut self) {
        let t = &mut self.t;
        t.dir(b"links", BASE_DIR);
        t.symlink(b"links/short", b"target", BASE);
        t.symlink(b"links/to-file", b"../files/text", BASE);
        t.symlink(b"links/to-dir", b"../files", BASE);
        t.symlink(b"links/absolute", b"/etc/passwd", BASE);
        t.symlink(b"links/dangling", b"does/not/exist", BASE);
        t.symlink(b"links/one", b"x", BASE);
        t.symlink(b"links/bytes", b"\x01\xff\xfe odd \x7f bytes", BASE);
        let m = self.varied();
        self.t.symlink(b"links/varied", b"target", m);
        let mut lens = vec![100usize, 600];
        if self.spec.long_symlinks {
            lens.extend([
                511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 4000, 4095,
            ]);
        }
        for len in lens {
            // Components of at most 200 bytes so the target could even be a real path.
            let target: Vec<u8> = (0..len)
                .map(|i| {
                    if i % 201 == 200 {
                        b'/'
                    } else {
                        b'a' + (i % 26) as u8
                    }
                })
                .collect();
            self.t
                .symlink(format!("links/long-{len}").as_bytes(), &target, BASE);
        }
    }

    fn hardlinks(&mut self) {
        let t = &mut self.t;
        t.dir(b"hard", BASE_DIR);
        t.dir(b"hard/sub", BASE_DIR);
        // A group of three names in three directories.
        let m = Meta {
            perm: 0o640,
            uid: 1000,
            gid: 1000,
            mtime: (1_234_567_890, 5),
        };
        t.random_file(b"hard/three-a", 5000, m);
        t.hardlink(b"hard/three-a", b"hard/sub/three-b");
        t.hardlink(b"hard/three-a", b"files/three-c");
        // A pair in one directory, with an xattr.
        t.random_file(b"hard/pair-1", 100, BASE);
        t.xattr(b"hard/pair-1", b"user.linked", b"yes");
        t.hardlink(b"hard/pair-1", b"hard/pair-2");
        // An empty file, a symlink and a fifo with two names each.
        t.file(b"hard/empty-1", b"", BASE);
        t.hardlink(b"hard/empty-1", b"hard/empty-2");
        t.symlink(b"hard/sym-1", b"files/text", BASE);
        t.hardlink(b"hard/sym-1", b"hard/sym-2");
        t.node(b"hard/fifo-1", Kind::Fifo, 0, 0, BASE);
        t.hardlink(b"hard/fifo-1", b"hard/sub/fifo-2");
    }

    fn devices(&mut self) {
        self.t.dir(b"dev", BASE_DIR);
        let nodes: &[(&[u8], Kind, u32, u32)] = &[
            (b"dev/null", Kind::CharDev, 1, 3),
            (b"dev/c-4095-255", Kind::CharDev, 4095, 255),
            (b"dev/c-1-256", Kind::CharDev, 1, 256),
            (b"dev/b-8-1", Kind::BlockDev, 8, 1),
            (b"dev/b-259-1048575", Kind::BlockDev, 259, 1_048_575),
            (b"dev/b-4095-1048575", Kind::BlockDev, 4095, 1_048_575),
            (b"dev/fifo", Kind::Fifo, 0, 0),
            (b"dev/socket", Kind::Socket, 0, 0),
        ];
        for &(rel, kind, major, minor) in nodes {
            let m = self.varied();
            self.t.node(rel, kind, major, minor, m);
        }
        let t = &mut self.t;
        t.node(b"dev/fifo-plain", Kind::Fifo, 0, 0, BASE);
        t.node(b"dev/socket-plain", Kind::Socket, 0, 0, BASE);
        // A 0:0 character device is an overlayfs whiteout, which mkfs.erofs 1.9 treats
        // specially (see `snapshot::add_whiteout_origin_xattrs`): keep it in a directory of
        // its own.
        t.dir(b"whiteout", BASE_DIR);
        let m = self.varied();
        let t = &mut self.t;
        t.node(b"whiteout/c-0-0", Kind::CharDev, 0, 0, m);
        t.file(b"whiteout/file", b"beside a whiteout", BASE);
    }

    fn xattrs(&mut self) {
        let t = &mut self.t;
        t.dir(b"xattr", BASE_DIR);
        t.file(b"xattr/empty-value", b"data", BASE);
        t.xattr(b"xattr/empty-value", b"user.empty", b"");
        t.file(b"xattr/small", b"data", BASE);
        t.xattr(b"xattr/small", b"user.a", b"1");
        t.xattr(b"xattr/small", b"trusted.b", b"hello");
        t.xattr(b"xattr/small", b"security.c", b"world\0with nul");
        // xattrs on a directory, a symlink and special files (user.* is only allowed on
        // regular files and directories).
        t.dir(b"xattr/dir", BASE_DIR);
        t.xattr(b"xattr/dir", b"user.dir", b"on a directory");
        t.xattr(b"xattr/dir", b"trusted.dir", b"");
        t.symlink(b"xattr/symlink", b"small", BASE);
        t.xattr(b"xattr/symlink", b"trusted.sym", b"on a symlink");
        t.xattr(b"xattr/symlink", b"security.sym", b"s");
        t.node(b"xattr/chardev", Kind::CharDev, 5, 1, BASE);
        t.xattr(b"xattr/chardev", b"security.dev", b"on a device");
        t.node(b"xattr/fifo", Kind::Fifo, 0, 0, BASE);
        t.xattr(b"xattr/fifo", b"trusted.fifo", b"on a fifo");
        t.node(b"xattr/socket", Kind::Socket, 0, 0, BASE);
        t.xattr(b"xattr/socket", b"trusted.sock", b"on a socket");
        // Names that `--xattr-prefix=user.long.prefix.` turns into long-prefix entries,
        // including one equal to the prefix (empty suffix), plus a near miss.
        t.file(b"xattr/long-prefix", b"data", BASE);
        for (name, value) in [
            (&b"user.long.prefix.one"[..], &b"1"[..]),
            (b"user.long.prefix.two", b"22"),
            (b"user.long.prefix.", b"exactly the prefix"),
            (b"user.long.prefi", b"near miss"),
        ] {
            t.xattr(b"xattr/long-prefix", name, value);
        }
        t.dir(b"xattr/long-prefix-dir", BASE_DIR);
        t.xattr(b"xattr/long-prefix-dir", b"user.long.prefix.dir", b"d");
        // The same xattrs on many files: mkfs stores them once, as shared xattrs.
        t.dir(b"xattr/shared", BASE_DIR);
        let shared_value = t.rng.bytes(100);
        for i in 0..24 {
            let rel = format!("xattr/shared/f{i:02}");
            t.file(rel.as_bytes(), format!("{i}").as_bytes(), BASE);
            t.xattr(rel.as_bytes(), b"user.shared", b"same value everywhere");
            t.xattr(rel.as_bytes(), b"trusted.shared", &shared_value);
            if i % 2 == 0 {
                t.xattr(rel.as_bytes(), b"user.long.prefix.shared", b"v");
            }
            if i % 3 == 0 {
                t.xattr(rel.as_bytes(), b"user.own", format!("{i}").as_bytes());
            }
        }
        if !self.spec.big_xattrs {
            return;
        }
        // Values of several KiB (larger than 512..4096-byte blocks), in each namespace.
        t.file(b"xattr/big", b"data", BASE);
        for (name, len) in [
            (&b"user.big"[..], 6000usize),
            (b"trusted.big", 4097),
            (b"security.big", 3000),
        ] {
            let v = t.rng.bytes(len);
            t.xattr(b"xattr/big", name, &v);
        }
        // The same big value on several files (a big shared xattr).
        let big_shared = t.rng.bytes(5000);
        for i in 0..4 {
            let rel = format!("xattr/big-shared-{i}");
            t.file(rel.as_bytes(), b"", BASE);
            t.xattr(rel.as_bytes(), b"user.bigshared", &big_shared);
        }
        // Forty xattrs on one file, of varied name and value lengths, incl. a 255-byte name.
        t.file(b"xattr/many", b"many xattrs", BASE);
        for i in 0..40usize {
            let ns: &str = ["user.", "trusted.", "security."][i % 3];
            let name = format!("{ns}x{i:02}-{}", "n".repeat(i * 3));
            let v = t.rng.bytes(i * 37 % 300);
            t.xattr(b"xattr/many", name.as_bytes(), &v);
        }
        let longest = format!("user.{}", "L".repeat(255 - 5));
        t.xattr(b"xattr/many", longest.as_bytes(), b"longest name");
        // Many xattrs on a directory too (its inline xattr area precedes its dirents).
        t.dir(b"xattr/many-dir", BASE_DIR);
        for i in 0..20usize {
            let v = t.rng.bytes(i * 50);
            t.xattr(b"xattr/many-dir", format!("user.d{i}").as_bytes(), &v);
        }
        t.file(b"xattr/many-dir/inside", b"x", BASE);
    }

    /// Every mode/owner/mtime combination we care about, on files and directories.
    fn metas(&mut self) {
        self.t.dir(b"meta", BASE_DIR);
        for i in 0..40 {
            let m = self.varied();
            self.t.file(format!("meta/f{i:02}").as_bytes(), b"m", m);
        }
        for i in 0..12 {
            let m = self.varied();
            let rel = format!("meta/d{i:02}");
            self.t.dir(rel.as_bytes(), m);
            self.t.file(format!("{rel}/x").as_bytes(), b"", BASE);
        }
    }

    fn names(&mut self) {
        if !self.spec.all_byte_names {
            return;
        }
        let t = &mut self.t;
        t.dir(b"names", BASE_DIR);
        let all: Vec<u8> = (1..=255u8).filter(|&b| b != b'/').collect(); // 254 bytes
        // Each byte value as a one-byte name ("." becomes "...").
        for &b in &all {
            let name: Vec<u8> = if b == b'.' { b"...".to_vec() } else { vec![b] };
            let mut rel = b"names/".to_vec();
            rel.extend_from_slice(&name);
            t.file(&rel, &name, BASE);
        }
        // All byte values in one name, ascending and descending (254 bytes each).
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(&all);
        t.file(&rel, b"asc", BASE);
        let mut rel = b"names/".to_vec();
        rel.extend(all.iter().rev());
        t.file(&rel, b"desc", BASE);
        // Longest names (255 bytes normally): ASCII, multi-byte UTF-8, and a directory.
        let max = self.spec.max_name_len;
        let long = "n".repeat(max);
        t.file(format!("names/{long}").as_bytes(), b"long", BASE);
        let utf8 = format!("{}{}", "é".repeat(max / 2), "x".repeat(max % 2));
        assert_eq!(utf8.len(), max);
        t.file(format!("names/{utf8}").as_bytes(), b"utf8", BASE);
        let d = "d".repeat(max);
        t.dir(format!("names/{d}").as_bytes(), BASE_DIR);
        t.file(format!("names/{d}/{long}").as_bytes(), b"nested", BASE);
    }

    fn dirs(&mut self) {
        self.t.dir(b"dirs", BASE_DIR);
        let sizes = self.spec.dir_sizes.clone();
        for n in sizes {
            let d = format!("dirs/n{n}");
            self.t.dir(d.as_bytes(), BASE_DIR);
            for i in 0..n {
                // Names of varied length, so entries straddle directory block boundaries
                // at different offsets.
                let name = format!("{d}/e{i:05}{}", "_".repeat(i * 7 % 120));
                match i % 50 {
                    7 => self.t.symlink(name.as_bytes(), b"../n0", BASE),
                    13 => self.t.dir(name.as_bytes(), BASE_DIR),
                    21 => {
                        let m = self.varied();
                        self.t.file(name.as_bytes(), b"varied", m);
                    }
                    _ => self.t.file(name.as_bytes(), b"", BASE),
                }
            }
        }
    }

    fn deep(&mut self) {
        let mut rel = b"deep".to_vec();
        self.t.dir(&rel, BASE_DIR);
        for i in 0..16 {
            rel.extend_from_slice(format!("/level{i}").as_bytes());
            self.t.dir(&rel, BASE_DIR);
        }
        rel.extend_from_slice(b"/bottom");
        self.t.file(&rel, b"bottom", BASE);
    }

    fn acls(&mut self) {
        let t = &mut self.t;
        t.dir(b"acl", BASE_DIR);
        t.file(b"acl/file", b"acl", BASE);
        let access = posix_acl("u::rw-,u:1000:r--,g::r-x,g:2000:rw-,m::rwx,o::r--");
        t.xattr(b"acl/file", b"system.posix_acl_access", &access);
        // A default ACL (set after every entry exists, so nothing inherits it).
        t.dir(b"acl/dir", BASE_DIR);
        t.file(b"acl/dir/inside", b"", BASE);
        let default = posix_acl("u::rwx,u:1001:r-x,g::r-x,m::r-x,o::---");
        t.xattr(b"acl/dir", b"system.posix_acl_default", &default);
        t.xattr(b"acl/dir", b"system.posix_acl_access", &access);
    }
}

/// Fills the (empty) directory `root` with the foundation tree described by `spec`. `root`
/// itself gets the tree's root metadata (mode 0755, 0:0, [`T0`], one xattr).
pub fn generate(root: &Path, spec: &TreeSpec) {
    foundation(spec).write(root, false);
}

/// A tmpfs holding a freshly generated foundation tree; unmounted on drop.
#[derive(Debug)]
pub struct SourceTree {
    pub fs: Tmpfs,
}

impl SourceTree {
    /// The foundation tree of `spec`.
    pub fn new(spec: &TreeSpec) -> SourceTree {
        SourceTree::of(&foundation(spec))
    }

    /// Any described tree.
    pub fn of(tree: &TreeBuilder) -> SourceTree {
        let fs = Tmpfs::new();
        tree.write(fs.path(), false);
        SourceTree { fs }
    }

    pub fn path(&self) -> &Path {
        self.fs.path()
    }
}

// ---------------------------------------------------------------------------------------------
// The block-size profile (the builder's tree)
// ---------------------------------------------------------------------------------------------

/// The builder's tree around one block size: `files/f_0`, `f_1`, `f_b-1`, `f_b`, `f_b+1`,
/// `f_2b+3`, `f_big` (3 MiB + 5), `f_tail100`, duplicates, zeros; a 300-entry `many/` with
/// odd names; symlinks up to 4095 bytes; hard links (`files/hl`, `links/hl2`, `many/hl3`,
/// `dev/fifo` + `dev/fifo-link`); devices; xattrs in every namespace, shared ones included.
/// File contents derive from their paths ([`pseudo_random`]).
#[derive(Clone, Copy, Debug)]
pub struct BlockTree {
    /// Block size the file sizes are chosen around.
    pub block_size: usize,
    /// Include owners above 65535 (extended inodes).
    pub large_ids: bool,
}

/// The block-size profile described by `spec`.
pub fn block_tree(spec: &BlockTree) -> TreeBuilder {
    let b = spec.block_size;
    let mut t = TreeBuilder::new(0);
    t.dir(b"", BASE_DIR);
    t.xattr(b"", b"user.root", b"r");
    for d in [
        "files", "many", "links", "dev", "deep", "deep/a", "deep/a/b",
    ] {
        let m = match d {
            "deep" => Meta {
                perm: 0o1777,
                ..BASE_DIR
            },
            "deep/a/b" => Meta {
                mtime: (T0 - 5, 999_999_999),
                ..BASE_DIR
            },
            _ => BASE_DIR,
        };
        t.dir(d.as_bytes(), m);
    }
    let common = (&b"user.common"[..], &b"shared value"[..]);
    let sizes = [
        ("f_0", 0),
        ("f_1", 1),
        ("f_b-1", b - 1),
        ("f_b", b),
        ("f_b+1", b + 1),
        ("f_2b+3", 2 * b + 3),
        ("f_big", 3 * 1024 * 1024 + 5),
        ("f_tail100", 5 * b + 100),
    ];
    for (name, size) in sizes {
        let p = format!("files/{name}");
        let m = match name {
            "f_1" => Meta {
                perm: 0o4755,
                uid: 1000,
                gid: 100,
                mtime: (T0 + 12_345, 678_901_234),
            },
            "f_b" => Meta {
                perm: 0o600,
                mtime: (T0 - 1000, 0),
                ..BASE
            },
            "f_b+1" => Meta { perm: 0, ..BASE },
            "f_2b+3" if spec.large_ids => Meta {
                uid: 70_000,
                gid: 4_000_000_000,
                ..BASE
            },
            _ => BASE,
        };
        t.file(p.as_bytes(), &pseudo_random(p.as_bytes(), size), m);
        match name {
            "f_1" => {
                t.xattr(p.as_bytes(), b"user.one", b"v1");
                t.xattr(p.as_bytes(), b"user.empty", b"");
            }
            "f_b" => {
                t.xattr(
                    p.as_bytes(),
                    b"trusted.bin",
                    &(0..=255).collect::<Vec<u8>>(),
                );
                t.xattr(p.as_bytes(), b"security.sec", b"label");
            }
            "f_b+1" => t.xattr(p.as_bytes(), b"user.big", &pseudo_random(b"big", 3000)),
            "f_big" | "f_0" => t.xattr(p.as_bytes(), common.0, common.1),
            _ => {}
        }
    }
    // Two files with the same content (and so the same fingerprint).
    let same = pseudo_random(b"same", 10_000);
    t.file(b"files/dup1", &same, BASE);
    t.xattr(b"files/dup1", common.0, common.1);
    t.file(b"deep/a/b/dup2", &same, BASE);
    t.file(b"files/zeros", &vec![0; 3 * b], BASE);
    t.xattr(b"files/zeros", common.0, common.1);
    t.xattr(b"many", common.0, common.1);
    t.xattr(b"deep/a", common.0, common.1);
    // A multi-block directory with names of every length class and odd bytes.
    for i in 0..300 {
        let mut p = format!("many/entry-{i:03}-").into_bytes();
        p.extend(std::iter::repeat_n(b'x', i % 50));
        t.file(&p, &pseudo_random(&p, i % 7), BASE);
        if p.starts_with(b"many/entry-00") {
            t.xattr(&p, b"user.ishare.long.tag", &p.clone());
            t.xattr(&p, common.0, common.1);
        }
    }
    for name in [
        &b"!bang"[..],
        b"-dash",
        b".hidden",
        b"~tilde",
        b"\xff\xfe high bytes",
        b"\x01ctrl",
        &[b'L'; 255],
    ] {
        let p = [&b"many/"[..], name].concat();
        t.file(&p, b"odd name", BASE);
    }
    let sym = Meta {
        perm: 0o777,
        ..BASE
    };
    t.symlink(b"links/short", b"target", sym);
    t.xattr(b"links/short", b"trusted.sym", b"1");
    t.symlink(b"links/dangling", b"/nonexistent/x", sym);
    t.symlink(b"links/long", &[b'a'; 1000], sym);
    t.symlink(
        b"links/max",
        &[b"d/".repeat(2047), b"e".to_vec()].concat(),
        sym,
    );
    t.symlink(b"links/up", b"../files/f_1", sym);
    let hl = Meta {
        mtime: (T0 + 1, 1),
        ..BASE
    };
    t.file(b"files/hl", &pseudo_random(b"hl", 5000), hl);
    t.hardlink(b"files/hl", b"links/hl2");
    t.hardlink(b"files/hl", b"many/hl3");
    t.node(
        b"dev/null",
        Kind::CharDev,
        1,
        3,
        Meta {
            perm: 0o666,
            ..BASE
        },
    );
    t.xattr(b"dev/null", b"trusted.dev", b"d");
    t.node(b"dev/sda1", Kind::BlockDev, 8, 1, BASE);
    t.node(b"dev/big", Kind::CharDev, 300, 70_000, BASE);
    t.node(b"dev/fifo", Kind::Fifo, 0, 0, BASE);
    t.hardlink(b"dev/fifo", b"dev/fifo-link");
    t.node(b"dev/sock", Kind::Socket, 0, 0, BASE);
    t
}

// ---------------------------------------------------------------------------------------------
// The reader's small tree
// ---------------------------------------------------------------------------------------------

/// Number of entries of `bigdir/` in [`reader_tree`] (several directory blocks at 4 KiB,
/// many at 512 B).
pub const BIGDIR_ENTRIES: usize = 300;

/// Files of [`reader_tree`] with their sizes: inline tails, exact blocks, multi-block files.
pub const READER_FILES: &[(&str, usize)] = &[
    ("empty", 0),
    ("small.txt", 5),
    ("b511", 511),
    ("b513", 513),
    ("b4095", 4095),
    ("exact8k", 8192),
    ("mid.bin", 5000),
    ("big.bin", 70000),
];

/// The long symlink target of [`reader_tree`]: not inline at 512-byte blocks.
pub fn long_link_target() -> String {
    let mut t = String::new();
    while t.len() < 1500 {
        t.push_str("a-rather-long-directory-name/");
    }
    t.push_str("end");
    t
}

/// The reader's small tree (the corruption tests' seeds):
///
/// ```text
/// empty small.txt b511 b513 b4095 exact8k mid.bin big.bin   files of various sizes
/// bigdir/entry-000 .. entry-299                             a multi-block directory
/// link-short -> small.txt, link-long -> (1.5 KB)            short and long symlinks
/// sub/subsub/deep, sub/hardlink (= big.bin), sub/fifo       nesting, a hard link, a fifo
/// ```
///
/// xattrs: `user.shared` with one value on six inodes (shared xattr), `user.inline-N`
/// unique ones (inline), `user.pfx.*` names (long prefix with `--xattr-prefix=user.pfx.`),
/// a `trusted.` one on a directory and a 300-byte value.
pub fn reader_tree() -> TreeBuilder {
    let mut t = TreeBuilder::new(0x1234_5678);
    for (name, len) in READER_FILES {
        t.random_file(name.as_bytes(), *len, BASE);
    }
    t.dir(b"bigdir", BASE_DIR);
    for i in 0..BIGDIR_ENTRIES {
        t.file(
            format!("bigdir/entry-{i:03}").as_bytes(),
            format!("{i}").as_bytes(),
            BASE,
        );
    }
    t.symlink(b"link-short", b"small.txt", BASE);
    t.symlink(b"link-long", long_link_target().as_bytes(), BASE);
    t.dir(b"sub", BASE_DIR);
    t.dir(b"sub/subsub", BASE_DIR);
    t.file(b"sub/subsub/deep", b"deep file\n", BASE);
    t.hardlink(b"big.bin", b"sub/hardlink");
    t.node(b"sub/fifo", Kind::Fifo, 0, 0, BASE);
    for f in [
        "small.txt",
        "b513",
        "mid.bin",
        "big.bin",
        "exact8k",
        "sub/subsub/deep",
    ] {
        t.xattr(f.as_bytes(), b"user.shared", b"one-value-on-several-inodes");
    }
    for (i, f) in ["small.txt", "b4095", "bigdir/entry-007", "sub"]
        .iter()
        .enumerate()
    {
        t.xattr(
            f.as_bytes(),
            format!("user.inline-{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        );
    }
    t.xattr(b"mid.bin", b"user.pfx.alpha", b"long-prefixed");
    t.xattr(b"b511", b"user.pfx.beta", "v".repeat(300).as_bytes());
    t.xattr(b"sub", b"trusted.dir", b"on-a-directory");
    t
}

// ---------------------------------------------------------------------------------------------
// Compressible contents
// ---------------------------------------------------------------------------------------------

/// How much [`compressible`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// About 0.6 MB in 9 files: quick to corrupt and check pcluster by pcluster.
    Small,
    /// About 6.5 MB in 27 files, with text files of every size around 4 KiB multiples.
    Large,
}

/// Adds the directory `dir` (BASE metadata; `""`: the root) of files that compress well, badly and not at
/// all, from `Rng::new(seed)`: `text`, `pattern` (a repeated pattern), `zeros`, `random`,
/// `mixed` (text, random bytes and zeros), near-copies (the same data at other offsets and
/// lengths, for dedupe); [`Scale::Large`] adds random 4 KiB blocks between text (`blocks`),
/// text files `t-SIZE.txt` and a 1.5 MiB `big-text.txt`.
pub fn compressible(t: &mut TreeBuilder, dir: &str, seed: u64, scale: Scale) {
    let mut rng = Rng::new(seed);
    if !dir.is_empty() {
        t.dir(dir.as_bytes(), BASE_DIR);
    }
    let mut w = |name: &str, data: &[u8]| {
        let rel = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        t.file(rel.as_bytes(), data, BASE)
    };
    let pattern =
        |unit: &[u8], len: usize| -> Vec<u8> { unit.iter().copied().cycle().take(len).collect() };
    if scale == Scale::Small {
        w("text", &rng.text(90_000));
        w("pattern", &pattern(b"abcdefgh", 160_000));
        w("zeros", &vec![0u8; 200_000]);
        w("random", &rng.bytes(20_000));
        let mut mixed = rng.text(30_000);
        mixed.extend(rng.bytes(9000));
        mixed.extend(rng.text(20_000));
        w("mixed", &mixed);
        w("small", &rng.text(100));
        w("tail", &rng.text(4096 * 3 + 700));
        let base = rng.text(40_000);
        w("copy-1", &base);
        w("copy-2", &base[1000..]);
        return;
    }
    w("text-300k.txt", &rng.text(300_000));
    w(
        "pattern",
        &pattern(b"0123456789abcdef-pattern\n", (1 << 20) + 3),
    );
    w("zeros", &vec![0u8; (1 << 20) + 17]);
    let mut mixed = rng.text(50_000);
    mixed.extend(rng.bytes(30_000));
    mixed.extend(vec![0u8; 70_000]);
    mixed.extend(rng.text(12_345));
    mixed.extend(rng.bytes(4096));
    mixed.extend(rng.text(8192));
    w("mixed", &mixed);
    w("random", &rng.bytes(300_001));
    // Random 4 KiB blocks between text: plain (uncompressed) pclusters among compressed
    // ones.
    let mut blocks = Vec::new();
    for i in 0..40 {
        if i % 3 == 0 {
            blocks.extend(rng.bytes(4096));
        } else {
            blocks.extend(rng.text(4096 + i));
        }
    }
    w("blocks", &blocks);
    for s in [
        1usize, 100, 511, 4095, 4096, 4097, 8191, 8192, 12289, 16384, 65535, 65536, 65537, 131_073,
    ] {
        w(&format!("t-{s}.txt"), &rng.text(s));
    }
    // Near-copies: identical data at different offsets and lengths (dedupe).
    let base = rng.text(200_000);
    w("dup-a", &base);
    let mut b = base.clone();
    b.extend(rng.text(5000));
    w("dup-b", &b);
    let mut c = rng.text(1000);
    c.extend(&base[..150_000]);
    w("dup-c", &c);
    w("dup-d", &base[4096..100_000]);
    w("big-text.txt", &rng.text(1536 * 1024 + 1));
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
