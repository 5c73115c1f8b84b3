//! The smaller profiles: the builder's block-size tree, the reader's small tree of the
//! corruption tests, and compressible contents.

use super::{BASE, BASE_DIR, Meta, T0, TreeBuilder};
use crate::rng::{Rng, pseudo_random};
use crate::snapshot::Kind;

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
