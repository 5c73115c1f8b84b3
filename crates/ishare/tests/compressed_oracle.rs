//! Oracle tests for compressed images (issue 4, reader side). For each mkfs.erofs 1.9.4
//! compression configuration, an image is built from a generated tree (see
//! `ishare_testkit::tree::TreeSpec`, plus `zdata/`: text, repeated patterns, zeros, random blocks,
//! near-copies for dedupe, sizes around lcluster and pcluster boundaries), and:
//!
//! * the kernel's mount of the image equals the source tree;
//! * `ishare extract` equals the kernel's mount exactly;
//! * reads at random offsets and lengths through `Image::read_at` (and whole-file reads
//!   in odd-sized pieces) equal the same ranges of the source files;
//! * for some configurations, `ishare dump -e --json` lists the same extents (logical
//!   and physical ranges) as `dump.erofs -e`, and `ishare fsck --xattr-inode-digest`
//!   verifies every file's SHA-256 against the fingerprints mkfs.erofs wrote.
//!
//! Needs root and erofs-utils 1.9.4 (`scripts/install-deps.sh`); a missing tool fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_erofs::Image;
use ishare_testkit::image::{random_len, read_checked};
use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{ErofsMount, Tmpfs};
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::{CompareOpts, Kind, Tree, assert_trees_eq, snapshot};
use ishare_testkit::tools::run;
use ishare_testkit::tools::{compress_hints, mkfs_erofs};
use ishare_testkit::tree::{Scale, SourceTree, TreeBuilder, TreeSpec, compressible, foundation};

/// One mkfs.erofs configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    args: &'static [&'static str],
    /// Contents of a `--compress-hints` file (paths are matched as regexes).
    hints: Option<&'static str>,
    /// Compare `ishare dump -e` with `dump.erofs -e` for the files under zdata/.
    dump_extents: bool,
    /// Build with `--xattr-inode-digest` and verify with `ishare fsck --xattr-inode-digest`.
    fingerprints: bool,
    /// Substrings of `dump.erofs -s` output showing the options took effect.
    dump_expect: &'static [&'static str],
    /// What the kernel mount may lose from the source (see extract_oracle.rs).
    exceptions: CompareOpts,
    /// Built by mkfs.erofs 1.5 (Debian bookworm) instead of 1.9.4.
    v15: bool,
}

impl Config {
    const fn new(args: &'static [&'static str]) -> Config {
        Config {
            args,
            hints: None,
            dump_extents: false,
            fingerprints: false,
            dump_expect: &[],
            exceptions: CompareOpts::EXACT,
            v15: false,
        }
    }
    const fn v15(self) -> Config {
        Config { v15: true, ..self }
    }
    /// -E 48bit: compact inodes lose mtime nanoseconds (as in extract_oracle.rs).
    const fn no_mtime_nsec(self) -> Config {
        Config {
            exceptions: CompareOpts {
                ignore_mtime_nsec: true,
                ..CompareOpts::EXACT
            },
            ..self
        }
    }
    const fn hints(self, hints: &'static str) -> Config {
        Config {
            hints: Some(hints),
            ..self
        }
    }
    const fn extents(self) -> Config {
        Config {
            dump_extents: true,
            ..self
        }
    }
    const fn fingerprints(self) -> Config {
        Config {
            fingerprints: true,
            ..self
        }
    }
    const fn dump(self, dump_expect: &'static [&'static str]) -> Config {
        Config {
            dump_expect,
            ..self
        }
    }
}

/// The generated part of the tree: the corners of the format, with less bulk than the
/// extraction oracle's full tree (every configuration here builds its own image).
fn spec() -> TreeSpec {
    TreeSpec {
        seed: 0x4_2026,
        dir_sizes: vec![0, 3, 40],
        all_byte_names: false,
        block_sizes: vec![512, 1024, 2048, 4096],
        big_file_size: 300_000 + 77,
        sparse_files: true,
        long_symlinks: true,
        big_xattrs: true,
        large_ids: true,
        max_name_len: 255,
    }
}

/// An image built from a freshly generated tree.
struct Built {
    src: SourceTree,
    src_tree: Tree,
    _work: tempfile::TempDir,
    image: PathBuf,
}

fn build(cfg: &Config) -> Built {
    ishare_testkit::tools::require_root();
    let mut spec = spec();
    if cfg.v15 {
        // mkfs.erofs 1.5 fails on 255-byte names (see extract_oracle.rs).
        spec.max_name_len = 254;
    }
    let mut tree = foundation(&spec);
    compressible(&mut tree, "zdata", 0xC0FF_EE00, Scale::Large);
    let src = SourceTree::of(&tree);
    let mut src_tree = snapshot(src.path());
    if !cfg.v15 {
        ishare_testkit::snapshot::add_whiteout_origin_xattrs(&mut src_tree);
    }
    let work = tempfile::Builder::new()
        .prefix("ishare-zoracle-")
        .tempdir()
        .unwrap();
    let image = work.path().join("image.erofs");
    let mut cmd = if cfg.v15 {
        Command::new(ishare_testkit::tools::mkfs_15())
    } else {
        let mut c = Command::new(ishare_testkit::tools::mkfs_194());
        c.arg("--quiet");
        c
    };
    cmd.args(cfg.args);
    if let Some(h) = cfg.hints {
        cmd.arg(compress_hints(work.path(), h));
    }
    if cfg.fingerprints {
        cmd.arg("--xattr-inode-digest");
    }
    run(cmd.arg(&image).arg(src.path()));
    if cfg.fingerprints {
        // The fingerprint xattr is visible: expect it in the trees.
        let mnt = ErofsMount::new(&image, &[]);
        src_tree = snapshot(mnt.path());
    }
    Built {
        src,
        src_tree,
        _work: work,
        image,
    }
}

fn ishare(args: &[&str], image: &Path) -> std::process::Output {
    run(Command::new(ishare_bin!()).args(args).arg(image))
}

/// Regular files of `tree` (relative paths).
fn regular_files(tree: &Tree) -> Vec<String> {
    tree.entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(p, _)| String::from_utf8(p.clone()).expect("UTF-8 names in this tree"))
        .collect()
}

/// Random reads through the library equal the source file's bytes.
fn random_reads(b: &Built, seed: u64) {
    let img = Image::open(&b.image).expect("open image");
    let mut rng = Rng::new(seed);
    let mut checked = 0u64;
    for rel in regular_files(&b.src_tree) {
        let src = fs::read(b.src.path().join(&rel)).unwrap();
        let ino = img
            .lookup_path(format!("/{rel}").as_bytes())
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(ino.size, src.len() as u64, "{rel}: size");
        let size = src.len() as u64;
        // A whole-file read in odd-sized pieces (exercises the extent cache).
        if rel.starts_with("zdata/") || rel == "files/big" {
            let piece = [4093usize, 65_537, 1 << 20][rng.below(3) as usize];
            let mut buf = vec![0u8; piece];
            let mut pos = 0u64;
            while pos < size {
                let n = img.read_at(&ino, pos, &mut buf).unwrap_or_else(|e| {
                    panic!("{rel}: read of {piece} at {pos}: {e}");
                });
                assert!(n > 0, "{rel}: no progress at {pos}");
                assert!(
                    buf[..n] == src[pos as usize..pos as usize + n],
                    "{rel}: {n} bytes at {pos} (pieces of {piece}) differ from the source"
                );
                pos += n as u64;
            }
        }
        let rounds = if rel.starts_with("zdata/") { 12 } else { 2 };
        for _ in 0..rounds {
            let pos = rng.below(size + 1);
            let len = random_len(&mut rng, 400_000);
            let buf = read_checked(&img, &ino, pos, len, &rel);
            let n = buf.len();
            assert!(
                buf == src[pos as usize..pos as usize + n],
                "{rel}: {len} bytes at {pos} differ from the source"
            );
            checked += n as u64;
        }
    }
    assert!(checked > 0);
}

/// The numbers of the extent lines of `dump.erofs -e` (logical start, end, length,
/// physical start, end, length).
fn dump_erofs_extents(image: &Path, path: &str) -> Vec<[u64; 6]> {
    let out = run(Command::new(ishare_testkit::tools::dump_194())
        .arg("-e")
        .arg(format!("--path={path}"))
        .arg(image));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let (idx, rest) = l.split_once(':')?;
            idx.trim().parse::<u64>().ok()?;
            let nums: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            nums.get(..6).map(|n| n.try_into().unwrap())
        })
        .collect()
}

/// The extents `ishare dump -e` lists for a compressed file (`None` for the others,
/// whose extents dump.erofs rounds to blocks).
fn ishare_extents(image: &Path, path: &str) -> Option<Vec<[u64; 6]>> {
    let out = ishare(&["dump", "--json", "-e", "--path", path], image);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if !v["inode"]["layout"].as_str()?.starts_with("compressed") {
        return None;
    }
    let list = v["extents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let la = e["logical"].as_u64().unwrap();
            let len = e["length"].as_u64().unwrap();
            let pa = e["physical"].as_u64().unwrap_or(0);
            let plen = e["physical_length"].as_u64().unwrap();
            [la, la + len, len, pa, pa + plen, plen]
        })
        .collect();
    Some(list)
}

fn check_config(cfg: &Config) {
    let b = build(cfg);
    let mnt = ErofsMount::new(&b.image, &[]);
    let kernel = snapshot(mnt.path());
    assert_trees_eq(
        "source",
        &b.src_tree,
        "kernel mount",
        &kernel,
        &cfg.exceptions,
    );
    let out = Tmpfs::new();
    let dir = out.path().join("x");
    run(Command::new(ishare_bin!())
        .arg("extract")
        .arg(&b.image)
        .arg(&dir));
    assert_trees_eq(
        "kernel mount",
        &kernel,
        "ishare extract",
        &snapshot(&dir),
        &CompareOpts::EXACT,
    );
    random_reads(&b, 0x5EED ^ cfg.args.len() as u64);
    if cfg.dump_extents {
        let mut compared = 0;
        for rel in regular_files(&b.src_tree)
            .into_iter()
            .filter(|r| r.starts_with("zdata/"))
        {
            let path = format!("/{rel}");
            if let Some(ours) = ishare_extents(&b.image, &path) {
                assert_eq!(
                    ours,
                    dump_erofs_extents(&b.image, &path),
                    "{path}: ishare dump -e and dump.erofs -e disagree"
                );
                compared += 1;
            }
        }
        assert!(compared > 5, "only {compared} compressed files compared");
    }
    if cfg.fingerprints {
        let out = ishare(&["fsck", "--xattr-inode-digest", "--json"], &b.image);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let files = regular_files(&b.src_tree)
            .into_iter()
            .filter(|r| fs::metadata(b.src.path().join(r)).unwrap().len() > 0)
            .count() as u64;
        let verified = v["fingerprints_verified"].as_u64().unwrap_or(0);
        // Hard links count once.
        assert!(
            verified > 0 && verified <= files && verified + 10 >= files,
            "fsck verified {verified} fingerprints for {files} files: {v}"
        );
    }
    if !cfg.dump_expect.is_empty() {
        let out = run(Command::new(ishare_testkit::tools::dump_194())
            .arg("-s")
            .arg(&b.image));
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in cfg.dump_expect {
            assert!(text.contains(want), "dump.erofs -s lacks {want:?}: {text}");
        }
    }
}

macro_rules! configs {
    ($($name:ident = $cfg:expr;)*) => {
        $(#[test] fn $name() { check_config(&$cfg) })*
    };
}

// Per-file pcluster sizes. (mkfs.erofs 1.9.4 crashes on any hints line naming an
// algorithm index: `erofs_load_compress_hints` reads `params->z_paramsets` before
// mkfs/main.c sets it. So HEAD2 lclusters are tested on a patched image instead, in
// `head2_second_algorithm`.)
const HINTS: &str = "16384 \\.txt$\n65536 zdata/dup-\n";

configs! {
    lz4 = Config::new(&["-zlz4"]).extents();
    lz4hc = Config::new(&["-zlz4hc"]).extents().fingerprints();
    lzma = Config::new(&["-zlzma"]).extents().dump(&["lzma"]);
    deflate = Config::new(&["-zdeflate"]).extents().dump(&["deflate"]);
    zstd = Config::new(&["-zzstd"]).extents().fingerprints().dump(&["zstd"]);
    lz4_c16 = Config::new(&["-zlz4", "-C16384"]).dump(&["big_pcluster"]);
    lzma_c64 = Config::new(&["-zlzma,9", "-C65536"]).extents().fingerprints();
    deflate_c16 = Config::new(&["-zdeflate", "-C16384"]).fingerprints();
    zstd_c64 = Config::new(&["-zzstd,15", "-C65536"]).extents();
    ztailpacking = Config::new(&["-zlz4hc", "-Eztailpacking"]).extents().dump(&["ztailpacking"]);
    fragments = Config::new(&["-zlz4hc", "-Efragments"]).extents().dump(&["fragments"]);
    fragments_zstd_c64 = Config::new(&["-zzstd", "-C65536", "-Efragments"]).extents();
    all_fragments = Config::new(&["-zlz4hc", "-Eall-fragments"]).extents().fingerprints();
    all_fragments_deflate = Config::new(&["-zdeflate", "-C16384", "-Eall-fragments"]);
    dedupe = Config::new(&["-zlz4hc", "-Ededupe"]).extents().dump(&["dedupe"]);
    dedupe_c64 = Config::new(&["-zlzma", "-C65536", "-Ededupe"]).extents().fingerprints();
    // Partially referenced pclusters through libdeflate, which decodes whole streams
    // only (the prefix is cut from a larger buffer) and through zstd.
    dedupe_deflate = Config::new(&["-zdeflate", "-C16384", "-Ededupe"]).extents();
    dedupe_zstd = Config::new(&["-zzstd", "-Ededupe"]).extents();
    legacy = Config::new(&["-zlz4hc", "-Elegacy-compress"]).extents();
    legacy_c16_ztail = Config::new(&["-zzstd", "-C16384", "-Elegacy-compress,ztailpacking"])
        .extents();
    legacy_fragments = Config::new(&["-zlz4", "-C16384", "-Elegacy-compress,fragments,dedupe"])
        .extents();
    hints_lz4hc_lzma = Config::new(&["-zlz4hc:lzma", "-C4096"])
        .hints(HINTS)
        .extents()
        .dump(&["lz4", "lzma"]);
    // -E48bit makes mkfs write extent records (ADVISE_EXTENTS) instead of lcluster
    // indexes, except for inodes with an inline tail.
    e48bit = Config::new(&["-zlz4hc", "-E48bit"])
        .extents()
        .no_mtime_nsec()
        .dump(&["48bit"]);
    e48bit_c64_fragments = Config::new(&["-zzstd", "-C65536", "-E48bit,fragments,dedupe"])
        .extents()
        .no_mtime_nsec();
    everything = Config::new(&["-zlzma", "-C65536", "-Eztailpacking,fragments,dedupe"])
        .extents()
        .fingerprints();
    b1024 = Config::new(&["-b1024", "-zlz4hc", "-C8192", "-Eztailpacking"]).extents();
    b2048 = Config::new(&["-b2048", "-zdeflate", "-C8192", "-Efragments"]).extents();
    // Not with -Eztailpacking: mkfs.erofs 1.9.4 then writes a wrong 988-byte flat file
    // at -b512 (the kernel mount shows the same wrong bytes as ishare).
    b512 = Config::new(&["-b512", "-zlz4hc", "-C4096", "-Efragments,dedupe"]).extents();
    // mkfs.erofs 1.5 (LZ4 only there): compact and full indexes, big pclusters,
    // ztailpacking, fragments.
    v15_lz4hc = Config::new(&["-zlz4hc"]).v15().extents();
    v15_lz4_c16_ztail = Config::new(&["-zlz4", "-C16384", "-Eztailpacking"])
        .v15()
        .extents();
    v15_legacy_fragments = Config::new(&["-zlz4hc", "-Elegacy-compress,fragments"])
        .v15()
        .extents();
    xattr_prefix_in_packed = Config::new(&[
        "-zlz4hc",
        "-Efragments",
        "--xattr-prefix=user.long.prefix.",
    ])
    .dump(&["xattr_prefixes", "fragments"]);
    // Metadata options (issue 13). -m puts every inode (with its inline xattrs, tails
    // and indexes) into the metabox inode, which implies 48bit (so compact inodes lose
    // mtime nanoseconds, as with -E48bit); --zD compresses directories; --MZ moves
    // inodes and directory blocks into a zone after the data.
    metabox_lz4 = Config::new(&["-zlz4", "-m4096"])
        .no_mtime_nsec()
        .extents()
        .dump(&["metabox", "48bit"]);
    metabox_plain_data = Config::new(&["-m4096"])
        .no_mtime_nsec()
        .dump(&["metabox"]);
    metabox_lzma_everything = Config::new(&[
        "-zlz4hc",
        "-m16384:lzma",
        "-C16384",
        "-Eztailpacking,fragments,dedupe",
        "--xattr-prefix=user.long.prefix.",
    ])
    .no_mtime_nsec()
    .extents()
    .fingerprints()
    .dump(&["metabox", "xattr_prefixes", "fragments"]);
    compressed_dirs = Config::new(&["-zlz4hc", "--zD"]).extents().fingerprints();
    metazone = Config::new(&["-zlz4", "--MZ"]).extents();
    metazone_inodes = Config::new(&["--MZ=i"]);
    metadata_all = Config::new(&["-zzstd", "-C16384", "--MZ", "--zD", "-m16384"])
        .no_mtime_nsec()
        .dump(&["metabox", "fragments"]);
}

/// HEAD2 lclusters (a file's second algorithm). mkfs.erofs 1.9.4 cannot write them (see
/// `HINTS`), so: build with `-zlzma:lz4hc` and full indexes (both algorithms listed in
/// the superblock), then turn every lzma file into a "HEAD1 = lz4, HEAD2 = lzma" file by
/// rewriting its map header's algorithm nibbles and its HEAD1 lclusters into HEAD2 ones.
/// The kernel and ishare must both still read the source bytes.
#[test]
fn head2_second_algorithm() {
    use ishare_erofs::{Algorithm, DataLayout, ExtentKind};
    ishare_testkit::tools::require_root();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut tree = TreeBuilder::new(0);
    compressible(&mut tree, "zdata", 0xC0FF_EE00, Scale::Large);
    tree.write(&src, false);
    let image = work.path().join("image.erofs");
    mkfs_erofs(&["-zlzma:lz4hc", "-Elegacy-compress"], &image, &src);
    let mut bytes = fs::read(&image).unwrap();
    let img = Image::open(&image).unwrap();
    let bs = u64::from(img.superblock().block_size());
    let mut patched = Vec::new();
    for e in fs::read_dir(src.join("zdata")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let ino = img
            .lookup_path(format!("/zdata/{name}").as_bytes())
            .unwrap();
        if ino.layout != DataLayout::CompressedFull {
            continue;
        }
        let isize = if ino.extended { 64 } else { 32 };
        let hdr = (ino.location() + isize + u64::from(ino.xattr_isize)).next_multiple_of(8);
        let h = hdr as usize;
        if bytes[h + 7] & 0x80 != 0 || bytes[h + 6] != 0x01 {
            continue; // a whole-file fragment, or not lzma
        }
        bytes[h + 6] = 0x10; // HEAD1: lz4, HEAD2: lzma
        let mut heads = 0;
        for lcn in 0..ino.size.div_ceil(bs) {
            let at = (hdr + 16 + 8 * lcn) as usize;
            if bytes[at] & 3 == 1 {
                bytes[at] |= 3;
                heads += 1;
            }
        }
        if heads > 0 {
            patched.push(name);
        }
    }
    assert!(patched.len() >= 5, "patched only {patched:?}");
    let bits = img.superblock().blkszbits;
    if let Some(crc) = ishare_erofs::superblock_checksum(&bytes, bits) {
        bytes[1028..1032].copy_from_slice(&crc.to_le_bytes());
    }
    let image2 = work.path().join("head2.erofs");
    fs::write(&image2, &bytes).unwrap();

    let img = Image::open(&image2).unwrap();
    let mnt = ErofsMount::new(&image2, &[]);
    for name in &patched {
        let want = fs::read(src.join("zdata").join(name)).unwrap();
        let kernel = fs::read(mnt.path().join("zdata").join(name)).unwrap();
        assert!(kernel == want, "{name}: the kernel reads other bytes");
        let ino = img
            .lookup_path(format!("/zdata/{name}").as_bytes())
            .unwrap();
        let got = img.read_to_vec(&ino).unwrap();
        assert!(got == want, "{name}: ishare reads other bytes");
        let mut algs = Vec::new();
        let mut pos = 0;
        while pos < ino.size {
            let e = img.map_raw(&ino, pos).unwrap();
            if let ExtentKind::Compressed(p) = e.kind {
                algs.push(p.algorithm);
            }
            pos = e.logical + e.len;
        }
        assert!(
            algs.contains(&Algorithm::Lzma)
                && algs
                    .iter()
                    .all(|a| matches!(a, Algorithm::Lzma | Algorithm::Plain)),
            "{name}: {algs:?}"
        );
    }
}
