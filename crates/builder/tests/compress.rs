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

use std::fs;
use std::path::Path;
use std::process::Command;

use ishare_builder::{BuildOptions, Compression, TimePolicy, build};
use ishare_erofs::{DataLayout, Extent, ExtentKind, Image, Inode};
use ishare_testkit::mounts::{LoopMount, Tmpfs};
use ishare_testkit::rng::{Rng, pseudo_random};
use ishare_testkit::snapshot::{CompareOpts, Tree, snapshot};
use ishare_testkit::tools::{fsck_194, mkfs_194, require_root, try_run as run};
use ishare_testkit::tree::T0;

/// Differences of two snapshots, every field and link count compared.
fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    ishare_testkit::diff(a, b, &CompareOpts::ALL)
}

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
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        let x = rng.next_u64();
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
    build_options(c.bs, z)
}

/// The options of every case: build time T0 with each file's own mtime, a fixed
/// UUID, two workers.
fn build_options(block_size: u32, z: Compression) -> BuildOptions {
    BuildOptions {
        block_size,
        build_time: T0 as u64,
        time_policy: TimePolicy::Keep,
        uuid: [9; 16],
        workers: 2,
        compression: Some(z),
        ..BuildOptions::default()
    }
}

/// Reads ranges at pseudo-random offsets of every regular file through our reader.
/// (1) The host kernel's mount of the image equals `src`; (2) fsck.erofs 1.9.4
/// accepts it, fingerprints included.
fn kernel_and_fsck(src: &Tree, img_path: &Path) -> Result<(), String> {
    let mnt = LoopMount::new(img_path)?;
    let got = snapshot(mnt.path());
    drop(mnt);
    let d = diff(src, &got);
    if !d.is_empty() {
        return Err(format!("kernel mount differs:\n{}", d.join("\n")));
    }
    run(Command::new(fsck_194())
        .arg("--xattr-inode-digest")
        .arg(img_path))?;
    Ok(())
}

/// Our reader's check of the whole image, fingerprints verified.
fn verify(img: &Image) -> Result<ishare_erofs::CheckReport, String> {
    img.check(&ishare_erofs::CheckOptions {
        verify_fingerprints: true,
        ..Default::default()
    })
    .map_err(|e| format!("check: {e}"))
}

fn random_reads(img: &Image, src_dir: &Path, bs: usize) -> Result<(), String> {
    let _ = src_dir;
    reads_of(img, &files(bs))
}

fn reads_of(img: &Image, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    for (p, data) in files {
        let ino = img
            .lookup_path(format!("/{p}").as_bytes())
            .map_err(|e| format!("{p}: {e}"))?;
        for _ in 0..8 {
            let x = rng.next_u64();
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

/// The inode at `/p` and its extents covering its `len` bytes, through our reader.
fn extents_of(img: &Image, p: &str, len: u64) -> Result<(Inode, Vec<Extent>), String> {
    let ino = img
        .lookup_path(format!("/{p}").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < len {
        let e = img
            .map(&ino, pos)
            .map_err(|e| format!("{p} at {pos}: {e}"))?;
        pos = e.logical + e.len;
        extents.push(e);
    }
    Ok((ino, extents))
}

fn shape(img: &Image, bs: u32) -> Result<Shape, String> {
    let mut s = Shape::default();
    for (p, data) in files(bs as usize) {
        let (ino, extents) = extents_of(img, &p, data.len() as u64)?;
        match ino.layout {
            DataLayout::CompressedCompact => s.compact += 1,
            DataLayout::CompressedFull => s.full += 1,
            _ => continue,
        }
        s.compressed_inodes += 1;
        for e in extents {
            match e.kind {
                ExtentKind::Compressed(pc) => {
                    s.compressed_extents += 1;
                    s.inline_pclusters += u64::from(pc.inline);
                    s.big_pclusters += u64::from(pc.len > bs);
                }
                ExtentKind::Inline { .. } => s.inline_pclusters += 1,
                _ => s.plain_extents += 1,
            }
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

    kernel_and_fsck(&src, &img_path)?;
    // (3) our reader
    let img = Image::open(&img_path).map_err(|e| e.to_string())?;
    random_reads(&img, &src_dir, c.bs as usize)?;
    let r = verify(&img)?;
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

/// Every compression case: (test, name, block size, -z, pcluster size, ztailpacking,
/// legacy-compress).
#[rustfmt::skip]
const CASES: &[(&str, &str, u32, &str, u32, bool, bool)] = &[
    ("lz4", "lz4", 4096, "lz4", 4096, false, false),
    ("lz4", "lz4-C16k-tail", 4096, "lz4", 16384, true, false),
    ("lz4", "lz4-legacy-tail-b1024", 1024, "lz4", 1024, true, true),
    ("lz4hc", "lz4hc", 4096, "lz4hc,12", 4096, false, false),
    ("lz4hc", "lz4hc-C64k", 4096, "lz4hc", 65536, false, false),
    ("lz4hc", "lz4hc-b512-C4k-tail", 512, "lz4hc", 4096, true, false),
    ("lzma", "lzma-tail", 4096, "lzma", 4096, true, false),
    ("lzma", "lzma-C64k-legacy", 4096, "lzma,level=4", 65536, false, true),
    ("deflate", "deflate", 4096, "deflate", 4096, false, false),
    ("deflate", "deflate-C16k-tail-b2048", 2048, "deflate,9", 16384, true, false),
    ("zstd", "zstd-tail", 4096, "zstd", 4096, true, false),
    ("zstd", "zstd-C64k-legacy", 4096, "zstd,level=9", 65536, false, true),
];

/// Runs the cases of `test` in [`CASES`].
fn suite_of(test: &str) {
    let cases: Vec<Case> = CASES
        .iter()
        .filter(|c| c.0 == test)
        .map(|&(_, name, bs, z, pcluster, ztailpacking, legacy)| Case {
            name,
            bs,
            z,
            pcluster,
            ztailpacking,
            legacy,
        })
        .collect();
    assert!(!cases.is_empty(), "no cases for {test}");
    suite(&cases);
}

#[test]
fn lz4() {
    suite_of("lz4");
}

#[test]
fn lz4hc() {
    suite_of("lz4hc");
}

#[test]
fn lzma() {
    suite_of("lzma");
}

#[test]
fn deflate() {
    suite_of("deflate");
}

#[test]
fn zstd() {
    suite_of("zstd");
}

/// `--compress-hints`: per-file pcluster sizes and algorithms, and files left
/// uncompressed, as mkfs.erofs reads the file.
#[test]
fn compress_hints() {
    require_root();
    let tmp = Tmpfs::new();
    let src = tmp.subdir("src");
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

// ---------------------------------------------------------------------------------------
// Fragments and dedupe
// ---------------------------------------------------------------------------------------

/// A tree where content repeats: many small files (with duplicates), files sharing
/// their last bytes (shorter and longer than a pcluster), identical whole files, and
/// the same blocks inside different files at aligned and unaligned offsets; plus the
/// tree of the other tests without its two files of long zero runs (mkfs.erofs
/// needs minutes for those with `-E dedupe`; the other suites cover them).
fn dup_files(bs: usize) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = files(bs)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("zeros/") && !p.starts_with("big/"))
        .collect();
    for i in 0..400usize {
        // 150 distinct small files, most of them present two or three times.
        let j = i % 150;
        let size = 1 + (j * 37) % 3000;
        let data = if j % 5 == 4 {
            pseudo_random(&(j as u32).to_le_bytes(), size)
        } else {
            text(1000 + j as u64, size)
        };
        v.push((format!("small/d{}/s{i}", i % 7), data));
    }
    let short_tail = text(77, 3000);
    let long_tail = text(78, 60_000);
    for i in 0..6u64 {
        let mut a = text(2000 + i, 20_000 + 7000 * i as usize);
        a.extend_from_slice(&short_tail);
        v.push((format!("tails/short{i}"), a));
        let mut b = mixed(3000 + i, 15_000 + 5000 * i as usize, 2500);
        b.extend_from_slice(&long_tail);
        v.push((format!("tails/long{i}"), b));
    }
    for i in 0..4 {
        v.push((format!("copies/text{i}"), text(31, 300_000)));
        v.push((format!("copies/mixed{i}"), mixed(5, 100_000, 3000)));
        v.push((format!("copies/small{i}"), text(32, 700)));
    }
    let base = text(55, 256 << 10);
    let cat = |parts: &[&[u8]]| parts.concat();
    v.push(("blocks/b0".into(), base.clone()));
    v.push((
        "blocks/b1".into(),
        cat(&[&pseudo_random(b"b1", 1000), &base]),
    ));
    v.push((
        "blocks/b2".into(),
        cat(&[
            &pseudo_random(b"b2", 2 * bs),
            &base[..128 << 10],
            &pseudo_random(b"b2x", 5000),
        ]),
    ));
    v.push((
        "blocks/b3".into(),
        cat(&[&base[64 << 10..], &text(56, 40_000)]),
    ));
    v
}

fn write_dup_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    for (p, data) in dup_files(4096) {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    std::os::unix::fs::symlink("copies/small0", root.join("link")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
}

struct DCase {
    name: &'static str,
    z: &'static str,
    pcluster: u32,
    /// `-E` options as mkfs.erofs spells them.
    e: &'static str,
}

fn doptions(c: &DCase) -> BuildOptions {
    let mut z = Compression::parse(c.z, 4096).unwrap();
    z.pcluster_size = c.pcluster;
    for o in c.e.split(',') {
        match o {
            "ztailpacking" => z.ztailpacking = true,
            "fragments" => z.fragments = true,
            "all-fragments" => (z.fragments, z.all_fragments) = (true, true),
            "dedupe" => z.dedupe = true,
            "" => {}
            _ => panic!("unknown -E {o}"),
        }
    }
    build_options(4096, z)
}

/// What fragments and dedupe made of the image.
#[derive(Debug, Default)]
struct DShape {
    /// Files whose whole content is one fragment.
    whole_fragments: u64,
    /// Files with pclusters and a tail fragment.
    tail_fragments: u64,
    /// Distinct fragment offsets (fragments stored once are shared by several files).
    fragment_offsets: u64,
    fragments: u64,
    /// Compressed or plain pcluster extents, and how many distinct pclusters.
    pcluster_extents: u64,
    distinct_pclusters: u64,
    partial: u64,
    nonempty_files: u64,
}

fn dshape(img: &Image, files: &[(String, Vec<u8>)]) -> Result<DShape, String> {
    let mut s = DShape::default();
    let mut frag_offsets = std::collections::HashSet::new();
    let mut pclusters = std::collections::HashSet::new();
    for (p, data) in files {
        if data.is_empty() {
            continue;
        }
        s.nonempty_files += 1;
        for e in extents_of(img, p, data.len() as u64)?.1 {
            match e.kind {
                ExtentKind::Fragment { offset } => {
                    s.fragments += 1;
                    if e.logical == 0 {
                        s.whole_fragments += 1;
                    } else {
                        s.tail_fragments += 1;
                    }
                    // Where the file's last byte is in the packed inode.
                    frag_offsets.insert(offset + e.len);
                }
                ExtentKind::Compressed(pc) if !pc.inline => {
                    s.pcluster_extents += 1;
                    pclusters.insert(pc.offset);
                    s.partial += u64::from(pc.partial);
                }
                _ => {}
            }
        }
    }
    s.fragment_offsets = frag_offsets.len() as u64;
    s.distinct_pclusters = pclusters.len() as u64;
    Ok(s)
}

/// mkfs.erofs 1.9.4 with the same options on the same tree: its image size and shape.
fn mkfs_erofs(c: &DCase, src: &Path, img: &Path) -> Result<(u64, DShape), String> {
    let mut cmd = Command::new(mkfs_194());
    cmd.args(["--quiet", "--xattr-inode-digest", "-Uclear"])
        .arg(format!("-T{T0}"))
        .arg("--mkfs-time")
        .arg(format!("-z{}", c.z))
        .arg(format!("-C{}", c.pcluster));
    if !c.e.is_empty() {
        cmd.arg(format!("-E{}", c.e));
    }
    run(cmd.arg(img).arg(src))?;
    let n = fs::metadata(img).map_err(|e| e.to_string())?.len();
    let shape = dshape(
        &Image::open(img).map_err(|e| e.to_string())?,
        &dup_files(4096),
    )?;
    let _ = fs::remove_file(img);
    Ok((n, shape))
}

fn dcheck(c: &DCase, tmp: &Path) -> Result<String, String> {
    let src_dir = tmp.join("dsrc");
    let files = dup_files(4096);
    if !src_dir.exists() {
        write_dup_tree(&src_dir);
    }
    let src = snapshot(&src_dir);
    let o = doptions(c);
    let img_path = tmp.join(format!("{}.img", c.name));
    build(&src_dir, &img_path, &o).map_err(|e| format!("build: {e}"))?;
    let size = fs::metadata(&img_path).unwrap().len();

    // (fsck.erofs warns that the packed inode has no digest, as for its own.)
    kernel_and_fsck(&src, &img_path)?;
    // (3) our reader
    let img = Image::open(&img_path).map_err(|e| e.to_string())?;
    reads_of(&img, &files)?;
    let r = verify(&img)?;
    let nonempty = files.iter().filter(|(_, d)| !d.is_empty()).count() as u64;
    if r.fingerprints_missing != 0 || r.fingerprints_verified != nonempty {
        return Err(format!("fingerprints: {r:?}"));
    }
    // (4) the features are used
    let s = dshape(&img, &files)?;
    let sb = img.superblock();
    let frags = c.e.contains("fragments");
    let dedupe = c.e.contains("dedupe");
    let mut bad = Vec::new();
    if frags {
        if sb.packed_nid.is_none()
            || !sb.has_incompat(ishare_erofs::format::FEATURE_INCOMPAT_FRAGMENTS)
        {
            bad.push("no packed inode or FRAGMENTS bit".to_string());
        }
        // The long prefix table (fingerprint name) lives in the packed inode.
        if sb.has_compat(ishare_erofs::format::FEATURE_COMPAT_PLAIN_XATTR_PFX) {
            bad.push("plain prefix table despite fragments".into());
        }
        if s.fragment_offsets >= s.fragments {
            bad.push("no fragment is stored once for several files".into());
        }
        if c.e.contains("all-fragments") {
            // Every file is in the packed inode, whole, or (where its end matched an
            // earlier fragment, as mkfs.erofs does) from a pcluster boundary on.
            if s.fragments != s.nonempty_files || s.whole_fragments + 20 < s.nonempty_files {
                bad.push("all-fragments left files outside the packed inode".into());
            }
        } else if s.whole_fragments < 150 || s.tail_fragments < 10 {
            bad.push("too few whole-file or tail fragments".into());
        }
    } else if sb.packed_nid.is_some() || s.fragments > 0 {
        bad.push("fragments without -E fragments".into());
    }
    if !c.e.contains("all-fragments") && (frags || dedupe) {
        // Identical pclusters are written once (with fragments, exact copies; with
        // dedupe, also at other offsets).
        if s.distinct_pclusters >= s.pcluster_extents {
            bad.push("no pcluster is shared".into());
        }
    }
    // mkfs.erofs's image for the same options, for the record and to compare with.
    let (theirs, ts) = mkfs_erofs(c, &src_dir, &tmp.join("theirs.img"))?;
    if dedupe {
        if !sb.has_incompat(ishare_erofs::format::FEATURE_INCOMPAT_DEDUPE) {
            bad.push("no DEDUPE bit".into());
        }
        if s.partial == 0 && ts.partial > 0 {
            bad.push("no partially referenced pcluster, where mkfs.erofs has some".into());
        }
    } else if s.partial > 0 {
        bad.push("partial references without dedupe".into());
    }
    // (5) smaller than without the option
    let plain = DCase {
        name: "plain",
        z: c.z,
        pcluster: c.pcluster,
        e: if c.e.contains("ztailpacking") {
            "ztailpacking"
        } else {
            ""
        },
    };
    let plain_path = tmp.join("plain.img");
    build(&src_dir, &plain_path, &doptions(&plain)).map_err(|e| format!("build: {e}"))?;
    let plain_size = fs::metadata(&plain_path).unwrap().len();
    let _ = fs::remove_file(&plain_path);
    if size >= plain_size {
        bad.push(format!(
            "{size} bytes, not smaller than {plain_size} without the options"
        ));
    }
    if !bad.is_empty() {
        return Err(format!("{}: {s:?}", bad.join("; ")));
    }
    let _ = fs::remove_file(&img_path);
    Ok(format!(
        "{:<28} ishare {size:>9} B, mkfs.erofs 1.9.4 {theirs:>9} B ({:.4}x), without the \
         options {plain_size:>9} B\n  ours:   {s:?}\n  theirs: {ts:?}",
        c.name,
        size as f64 / theirs as f64
    ))
}

fn dsuite(cases: &[DCase]) {
    require_root();
    let tmp = Tmpfs::new();
    let mut failures = Vec::new();
    for c in cases {
        match dcheck(c, tmp.path()) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => failures.push(format!("[{}] {e}", c.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

macro_rules! dcase {
    ($name:expr, $z:expr, $pc:expr, $e:expr) => {
        DCase {
            name: $name,
            z: $z,
            pcluster: $pc,
            e: $e,
        }
    };
}

#[test]
fn fragments() {
    dsuite(&[
        dcase!("frag-lz4hc", "lz4hc", 4096, "fragments"),
        dcase!(
            "frag-lz4hc-C64k-tail",
            "lz4hc",
            65536,
            "fragments,ztailpacking"
        ),
        dcase!("frag-zstd-C16k", "zstd", 16384, "fragments"),
        dcase!("frag-lzma-tail", "lzma", 4096, "fragments,ztailpacking"),
    ]);
}

#[test]
fn all_fragments() {
    dsuite(&[
        dcase!("allfrag-lz4hc", "lz4hc", 4096, "all-fragments"),
        dcase!("allfrag-deflate-C16k", "deflate", 16384, "all-fragments"),
    ]);
}

#[test]
fn dedupe() {
    dsuite(&[
        dcase!("dedupe-lz4hc", "lz4hc", 4096, "dedupe"),
        dcase!(
            "dedupe-lz4hc-C64k-tail",
            "lz4hc",
            65536,
            "dedupe,ztailpacking"
        ),
        dcase!("dedupe-lzma-C16k", "lzma", 16384, "dedupe"),
    ]);
}

#[test]
fn fragments_dedupe() {
    dsuite(&[
        dcase!(
            "frag-dedupe-lz4hc-tail",
            "lz4hc",
            4096,
            "fragments,dedupe,ztailpacking"
        ),
        dcase!(
            "frag-dedupe-zstd-C16k-tail",
            "zstd",
            16384,
            "fragments,dedupe,ztailpacking"
        ),
    ]);
}

/// 1 and 3 workers give the same bytes (on the tree with repeated content).
#[test]
fn reproducible() {
    require_root();
    let tmp = Tmpfs::new();
    let src = tmp.path().join("src");
    write_dup_tree(&src);
    let mut cases = Vec::new();
    for c in [
        case!("r-lz4hc", 4096, "lz4hc", 16384, true, false),
        case!("r-zstd", 4096, "zstd", 4096, false, false),
    ] {
        cases.push((c.name, options(&c)));
    }
    for c in [
        dcase!("r-frag", "lz4hc", 16384, "fragments,ztailpacking"),
        dcase!("r-allfrag", "lz4", 4096, "all-fragments"),
        dcase!("r-dedupe", "lz4hc", 4096, "dedupe"),
        dcase!("r-frag-dedupe", "zstd", 4096, "fragments,dedupe"),
    ] {
        cases.push((c.name, doptions(&c)));
    }
    for (name, mut o) in cases {
        let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
        o.workers = 1;
        build(&src, &a, &o).unwrap();
        o.workers = 3;
        build(&src, &b, &o).unwrap();
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "{name}: images differ"
        );
    }
}

/// Files ending like an earlier file's fragment (`ta.*`, `za.*`), each with less than
/// a pcluster's worth of encoding before the match (mostly random data). The part
/// before the match is compressed together with the matched bytes into a pcluster
/// sized to it; for some of these files that encoding fills the pcluster exactly and
/// takes the whole rest of the file, which then has no fragment at all (as with
/// mkfs.erofs). Two families (a text end and a zero end) so that every algorithm
/// meets that case.
fn matched_end_files() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    // (name, end, lengths before the end around the one that encodes in 4 KiB)
    for (name, end, around) in [
        ("t", text(90, 200), 3930..4080),
        ("z", vec![0; 2000], 4000..4150),
    ] {
        // Random data followed by `t` bytes of text: the encoded length goes by small
        // steps. Each `t` has its own end (files are matched in groups by their end,
        // each file against every earlier one of its group).
        for t in (0..200).step_by(5) {
            let end = [&end[..], &(t as u64).to_le_bytes()].concat();
            let a = [pseudo_random(name.as_bytes(), 500), end.clone()].concat();
            v.push((format!("{name}a.{t}"), a));
            for r in (3800..4150)
                .step_by(5)
                .filter(|r| around.contains(&(r + t)))
            {
                let head = pseudo_random(&(r as u64).to_le_bytes(), r);
                v.push((
                    format!("{name}b{r}.{t}"),
                    [head, text(r as u64, t), end.clone()].concat(),
                ));
            }
        }
    }
    v
}

/// `-E fragments` on [`matched_end_files`] with every algorithm: the files read back
/// equal (kernel, fsck.erofs, our reader), and some file ends in a full pcluster
/// holding its matched end, without a fragment. (Such a file used to get an empty
/// fragment, whose index entry replaced the head of its last pcluster: that
/// pcluster's data was read from the packed inode instead.)
#[test]
fn fragments_matched_end_fills_pcluster() {
    require_root();
    let tmp = Tmpfs::new();
    let src_dir = tmp.path().join("src");
    fs::create_dir(&src_dir).unwrap();
    let files = matched_end_files();
    for (p, data) in &files {
        fs::write(src_dir.join(p), data).unwrap();
    }
    let src = snapshot(&src_dir);
    let mut failures = Vec::new();
    for z in ["lz4", "lz4hc", "lzma", "deflate", "zstd"] {
        let o = doptions(&dcase!("matched-end", z, 4096, "fragments"));
        let img_path = tmp.path().join(format!("{z}.img"));
        let r = (|| {
            build(&src_dir, &img_path, &o).map_err(|e| format!("build: {e}"))?;
            kernel_and_fsck(&src, &img_path)?;
            let img = Image::open(&img_path).map_err(|e| e.to_string())?;
            reads_of(&img, &files)?;
            verify(&img)?;
            // Compressed files without a fragment: all of them end matched.
            let mut no_fragment = 0;
            for (p, data) in &files {
                let (ino, extents) = extents_of(&img, p, data.len() as u64)?;
                let compressed = matches!(
                    ino.layout,
                    DataLayout::CompressedCompact | DataLayout::CompressedFull
                );
                let frag = extents
                    .iter()
                    .any(|e| matches!(e.kind, ExtentKind::Fragment { .. }));
                no_fragment += u32::from(compressed && !frag);
            }
            if no_fragment == 0 {
                return Err("no file ends in a full pcluster without a fragment".into());
            }
            eprintln!("{z}: {no_fragment} files without a fragment");
            Ok::<(), String>(())
        })();
        if let Err(e) = r {
            failures.push(format!("[{z}] {e}"));
        }
        let _ = fs::remove_file(&img_path);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
