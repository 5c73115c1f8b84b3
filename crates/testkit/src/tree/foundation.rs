//! The foundation profile: every name byte, every size around block sizes, every
//! mode/owner/time combination, xattrs of every kind, ACLs, devices, hard links, big
//! directories — the tree the extract, mount and compression oracles compare.

use std::collections::BTreeSet;
use std::path::Path;

use super::{BASE, BASE_DIR, Meta, TreeBuilder};
use crate::mounts::Tmpfs;
use crate::snapshot::Kind;

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
/// itself gets the tree's root metadata (mode 0755, 0:0, [`super::T0`], one xattr).
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

#[cfg(test)]
mod tests {
    use super::posix_acl;

    /// The text form gives the binary form the kernel stores: version 2, then (tag, perm,
    /// id) entries in order, `u32::MAX` for the entries without an id.
    #[test]
    fn posix_acl_from_text() {
        let mut want = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 5, u32::MAX),
            (8, 6, 2000),
            (0x10, 7, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            want.extend_from_slice(&tag.to_le_bytes());
            want.extend_from_slice(&perm.to_le_bytes());
            want.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            posix_acl("u::rw-,u:1000:r--,g::r-x,g:2000:rw-,m::rwx,o::---"),
            want
        );
    }
}
