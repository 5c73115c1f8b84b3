//! Compressed images built by ishare, checked against the real oracles. For each
//! algorithm and set of options, an image of a tree made to exercise the cluster
//! formats (files around block and pcluster sizes, incompressible and mixed data,
//! a file larger than one 16 MiB segment, long runs of zeros) is
//!
//! 1. loop-mounted by the host kernel (6.18 has all four decompressors): the mount
//!    equals the source, byte for byte, with metadata and xattrs;
//! 2. accepted by fsck.erofs 1.9.4 with `--xattr-inode-digest`;
//! 3. read by our reader at random offsets and lengths, equal to the source;
//! 4. made of what the options ask for (compressed extents, compact or full
//!    indexes, inline tail pclusters, big pclusters), so a builder that silently
//!    stored everything uncompressed would fail.
//!
//! `reproducible` builds the same tree with 1 and 3 workers and compares bytes.
//! Needs root and erofs-utils 1.9.4 (`scripts/install-deps.sh`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use ishare_builder::{BuildOptions, Compression, TimePolicy, build};
use ishare_erofs::{DataLayout, ExtentKind, Image};

/// Text-like bytes (compress 3-4x), deterministic per seed.
fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 12] = [
        b"erofs ",
        b"page ",
        b"cache ",
        b"share ",
        b"fingerprint ",
        b"image ",
        b"layer ",
        b"container\n",
        b"the ",
        b"of ",
        b"0x1f ",
        b"block ",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize]);
        if x.is_multiple_of(11) {
            v.extend_from_slice(&(x as u32).to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

/// Alternating compressible and random runs of `run` bytes.
fn mixed(seed: u64, len: usize, run: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0u64;
    while v.len() < len {
        let n = run.min(len - v.len());
        if i.is_multiple_of(2) {
            v.extend_from_slice(&text(seed + i, n));
        } else {
            v.extend_from_slice(&pseudo_random(&(seed + i).to_le_bytes(), n));
        }
        i += 1;
    }
    v
}

/// The source tree: (path, content).
fn files(bs: usize) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (i, size) in [
        1,
        100,
        bs - 1,
        bs,
        bs + 1,
        2 * bs - 7,
        3000,
        10_000,
        65_536,
        65_537,
        200_000,
        1 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        v.push((format!("text/t{i}_{size}"), text(i as u64, size)));
        v.push((
            format!("random/r{i}_{size}"),
            pseudo_random(&[i as u8], size),
        ));
    }
    for (i, run) in [100usize, 3000, bs, 70_000].into_iter().enumerate() {
        v.push((
            format!("mixed/m{i}_{run}"),
            mixed(i as u64 * 7, 600_000, run),
        ));
    }
    // Ratios past any single pcluster (one extent holds up to 4000 KiB).
    v.push(("zeros/z_9M".into(), vec![0; 9 << 20]));
    // More than one segment: zeros with text islands, ending in a short tail.
    let mut big = vec![0u8; (17 << 20) + 1234];
    for k in 0..20 {
        let at = k * 900_001;
        let t = text(k as u64, 5000);
        big[at..at + t.len()].copy_from_slice(&t);
    }
    let n = big.len();
    big[n - 1234..].copy_from_slice(&text(99, 1234));
    v.push(("big/seg".into(), big));
    // Same content twice (hard links are covered by the uncompressed suites).
    v.push(("dup/a".into(), text(5, 50_000)));
    v.push(("dup/b".into(), text(5, 50_000)));
    v
}

fn write_tree(root: &Path, bs: usize) {
    for (p, data) in files(bs) {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    std::os::unix::fs::symlink("text/t0_1", root.join("link")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("empty/file"), b"").unwrap();
    rustix::fs::lsetxattr(
        root.join("text"),
        "user.note",
        b"compressed neighbours",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

struct Case {
    name: &'static str,
    bs: u32,
    z: &'static str,
    pcluster: u32,
    ztailpacking: bool,
    legacy: bool,
}

fn options(c: &Case) -> BuildOptions {
    let mut z = Compression::parse(c.z, c.bs).unwrap();
    z.pcluster_size = c.pcluster;
    z.ztailpacking = c.ztailpacking;
    z.legacy_indexes = c.legacy;
    BuildOptions {
        block_size: c.bs,
        build_time: T0 as u64,
        time_policy: TimePolicy::Keep,
        uuid: [9; 16],
        workers: 2,
        compression: Some(z),
        ..BuildOptions::default()
    }
}

/// Reads ranges at pseudo-random offsets of every regular file through our reader.
fn random_reads(img: &Image, src_dir: &Path, bs: usize) -> Result<(), String> {
    let mut x = 0x1234_5678_9abc_def1u64;
    for (p, data) in files(bs) {
        let ino = img
            .lookup_path(format!("/{p}").as_bytes())
            .map_err(|e| format!("{p}: {e}"))?;
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % (data.len() as u64 + 1)) as usize;
            let len = ((x >> 32) % 300_000) as usize;
            let mut buf = vec![0u8; len];
            let n = img
                .read_at(&ino, off as u64, &mut buf)
                .map_err(|e| format!("{p} at {off}: {e}"))?;
            let want = &data[off..(off + len).min(data.len())];
            if &buf[..n] != want {
                return Err(format!("{p}: {len} bytes at {off} differ from the source"));
            }
        }
    }
    let _ = src_dir;
    Ok(())
}

/// What the image is made of.
#[derive(Debug, Default)]
struct Shape {
    compressed_inodes: u64,
    compact: u64,
    full: u64,
    compressed_extents: u64,
    plain_extents: u64,
    inline_pclusters: u64,
    big_pclusters: u64,
}

fn shape(img: &Image, bs: u32) -> Result<Shape, String> {
    let mut s = Shape::default();
    for (p, data) in files(bs as usize) {
        let ino = img
            .lookup_path(format!("/{p}").as_bytes())
            .map_err(|e| e.to_string())?;
        match ino.layout {
            DataLayout::CompressedCompact => s.compact += 1,
            DataLayout::CompressedFull => s.full += 1,
            _ => continue,
        }
        s.compressed_inodes += 1;
        let mut pos = 0;
        while pos < data.len() as u64 {
            let e = img
                .map(&ino, pos)
                .map_err(|e| format!("{p} at {pos}: {e}"))?;
            match e.kind {
                ExtentKind::Compressed(pc) => {
                    s.compressed_extents += 1;
                    s.inline_pclusters += u64::from(pc.inline);
                    s.big_pclusters += u64::from(pc.len > bs);
                }
                ExtentKind::Inline { .. } => s.inline_pclusters += 1,
                _ => s.plain_extents += 1,
            }
            pos = e.logical + e.len;
        }
    }
    Ok(s)
}

fn check(c: &Case, tmp: &Path) -> Result<(), String> {
    let src_dir = tmp.join(format!("src-{}", c.bs));
    if !src_dir.exists() {
        fs::create_dir(&src_dir).unwrap();
        write_tree(&src_dir, c.bs as usize);
    }
    let src = snapshot(&src_dir);
    let o = options(c);
    let img_path = tmp.join(format!("{}.img", c.name));
    build(&src_dir, &img_path, &o).map_err(|e| format!("build: {e}"))?;

    // (1) the kernel
    let mnt = LoopMount::new(&img_path)?;
    let got = snapshot(mnt.path());
    drop(mnt);
    let d = diff(&src, &got);
    if !d.is_empty() {
        return Err(format!("kernel mount differs:\n{}", d.join("\n")));
    }
    // (2) fsck.erofs
    run(Command::new(fsck_194())
        .arg("--xattr-inode-digest")
        .arg(&img_path))?;
    // (3) our reader
    let img = Image::open(&img_path).map_err(|e| e.to_string())?;
    random_reads(&img, &src_dir, c.bs as usize)?;
    let r = img
        .check(&ishare_erofs::CheckOptions {
            verify_fingerprints: true,
            ..Default::default()
        })
        .map_err(|e| format!("check: {e}"))?;
    if r.fingerprints_missing != 0 || r.fingerprints_verified != files(c.bs as usize).len() as u64 {
        return Err(format!("fingerprints: {r:?}"));
    }
    // (4) the shape the options ask for
    let s = shape(&img, c.bs)?;
    let mut bad = Vec::new();
    // Every text, mixed, zero and duplicate file over one block.
    if s.compressed_inodes < 14 || s.compressed_extents < 40 {
        bad.push("too few compressed inodes or extents");
    }
    // Random runs in mixed files are stored raw (with bigger pclusters they may
    // ride along inside compressed ones).
    if c.pcluster == c.bs && s.plain_extents == 0 {
        bad.push("no uncompressed extent (random data must be stored raw)");
    }
    if c.legacy && s.compact > 0 {
        bad.push("compact indexes despite legacy-compress");
    }
    if !c.legacy && s.full > 0 {
        bad.push("full indexes without legacy-compress");
    }
    if c.ztailpacking != (s.inline_pclusters > 0) {
        bad.push("inline tail pclusters do not follow ztailpacking");
    }
    if (c.pcluster > c.bs) != (s.big_pclusters > 0) {
        bad.push("big pclusters do not follow -C");
    }
    if !bad.is_empty() {
        return Err(format!("{}: {s:?}", bad.join("; ")));
    }
    let _ = fs::remove_file(&img_path);
    Ok(())
}

fn suite(cases: &[Case]) {
    require_root();
    let tmp = Tmpfs::new();
    let mut failures = Vec::new();
    for c in cases {
        if let Err(e) = check(c, tmp.path()) {
            failures.push(format!("[{}] {e}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

macro_rules! case {
    ($name:expr, $bs:expr, $z:expr, $pc:expr, $tail:expr, $legacy:expr) => {
        Case {
            name: $name,
            bs: $bs,
            z: $z,
            pcluster: $pc,
            ztailpacking: $tail,
            legacy: $legacy,
        }
    };
}

#[test]
fn lz4() {
    suite(&[
        case!("lz4", 4096, "lz4", 4096, false, false),
        case!("lz4-C16k-tail", 4096, "lz4", 16384, true, false),
        case!("lz4-legacy-tail-b1024", 1024, "lz4", 1024, true, true),
    ]);
}

#[test]
fn lz4hc() {
    suite(&[
        case!("lz4hc", 4096, "lz4hc,12", 4096, false, false),
        case!("lz4hc-C64k", 4096, "lz4hc", 65536, false, false),
        case!("lz4hc-b512-C4k-tail", 512, "lz4hc", 4096, true, false),
    ]);
}

#[test]
fn lzma() {
    suite(&[
        case!("lzma-tail", 4096, "lzma", 4096, true, false),
        case!("lzma-C64k-legacy", 4096, "lzma,level=4", 65536, false, true),
    ]);
}

#[test]
fn deflate() {
    suite(&[
        case!("deflate", 4096, "deflate", 4096, false, false),
        case!(
            "deflate-C16k-tail-b2048",
            2048,
            "deflate,9",
            16384,
            true,
            false
        ),
    ]);
}

#[test]
fn zstd() {
    suite(&[
        case!("zstd-tail", 4096, "zstd", 4096, true, false),
        case!("zstd-C64k-legacy", 4096, "zstd,level=9", 65536, false, true),
    ]);
}

/// `--compress-hints`: per-file pcluster sizes and algorithms, and files left
/// uncompressed, as mkfs.erofs reads the file.
#[test]
fn compress_hints() {
    require_root();
    let tmp = Tmpfs::new();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    write_tree(&src, 4096);
    let mut o = options(&case!("hints", 4096, "lz4hc:lzma", 4096, false, false));
    let z = o.compression.as_mut().unwrap();
    z.parse_hints(
        "# per-file settings\n\n16384 1 ^text/\n0 ^mixed/\n65536\tzeros\n",
        "hints",
    )
    .unwrap();
    let img_path = tmp.path().join("hints.img");
    build(&src, &img_path, &o).unwrap();
    let mnt = LoopMount::new(&img_path).unwrap();
    let d = diff(&snapshot(&src), &snapshot(mnt.path()));
    drop(mnt);
    assert!(d.is_empty(), "kernel mount differs:\n{}", d.join("\n"));
    run(Command::new(fsck_194())
        .arg("--xattr-inode-digest")
        .arg(&img_path))
    .unwrap();
    let img = Image::open(&img_path).unwrap();
    random_reads(&img, &src, 4096).unwrap();
    let first = |p: &str| {
        let ino = img.lookup_path(p.as_bytes()).unwrap();
        let e = img.map(&ino, 0).unwrap();
        (ino.layout, e.kind)
    };
    // text/: lzma (index 1) in pclusters of up to 16 KiB.
    match first("/text/t11_1048576") {
        (DataLayout::CompressedCompact, ExtentKind::Compressed(pc)) => {
            assert_eq!(pc.algorithm, ishare_erofs::Algorithm::Lzma);
            assert!(pc.len > 4096 && pc.len <= 16384, "{pc:?}");
        }
        other => panic!("text file: {other:?}"),
    }
    // mixed/: not compressed at all.
    assert!(matches!(
        first("/mixed/m0_100").0,
        DataLayout::FlatPlain | DataLayout::FlatInline
    ));
    // zeros: lz4hc (index 0) with 64 KiB pclusters allowed; dup/: the defaults.
    for p in ["/zeros/z_9M", "/dup/a"] {
        match first(p) {
            (_, ExtentKind::Compressed(pc)) => {
                assert_eq!(pc.algorithm, ishare_erofs::Algorithm::Lz4, "{p}")
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    let mut bad = Compression::parse("lz4", 4096).unwrap();
    let e = bad.parse_hints("4096 1 x\n", "h").unwrap_err().to_string();
    assert!(e.contains("h:1") && e.contains("index 1"), "{e}");
    let e = bad.parse_hints("4096 (\n", "h").unwrap_err().to_string();
    assert!(e.contains("invalid pattern"), "{e}");
}

/// 1 and 3 workers give the same bytes.
#[test]
fn reproducible() {
    require_root();
    let tmp = Tmpfs::new();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    write_tree(&src, 4096);
    for c in [
        case!("r-lz4hc", 4096, "lz4hc", 16384, true, false),
        case!("r-zstd", 4096, "zstd", 4096, false, false),
    ] {
        let mut o = options(&c);
        let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
        o.workers = 1;
        build(&src, &a, &o).unwrap();
        o.workers = 3;
        build(&src, &b, &o).unwrap();
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "{}: images differ",
            c.name
        );
    }
}

/// Bad settings are refused with a message naming them.
#[test]
fn bad_options() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.img");
    let mut o = options(&case!("x", 4096, "lz4", 6000, false, false));
    let e = build(tmp.path(), &img, &o).unwrap_err().to_string();
    assert!(e.contains("pcluster size 6000"), "{e}");
    o.compression.as_mut().unwrap().pcluster_size = 2 << 20;
    assert!(build(tmp.path(), &img, &o).is_err());
    o.compression = Some(Compression::parse("lz4", 4096).unwrap());
    o.compression.as_mut().unwrap().max_extent_bytes = Some(100);
    let e = build(tmp.path(), &img, &o).unwrap_err().to_string();
    assert!(e.contains("--max-extent-bytes"), "{e}");
    assert!(!img.exists());
}
