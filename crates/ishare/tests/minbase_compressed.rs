//! Compressed images of a real root filesystem (issue 4): a Debian bookworm minbase tree
//! (about 6,700 entries, 160 MiB of file data: ELF binaries and libraries, a 50 MiB apt
//! package list, small text files, device nodes, hard links, non-root groups) is
//! compressed by mkfs.erofs 1.9.4 in each configuration below, and for each image:
//!
//! * `ishare extract` equals the source tree exactly: contents, file types, modes,
//!   uid/gid, mtimes (with nanoseconds: `-T0 --mkfs-time` keeps each file's own),
//!   xattrs, symlink targets, hard links, device numbers;
//! * `ishare fsck --xattr-inode-digest` verifies the SHA-256 fingerprint that
//!   mkfs.erofs wrote for every non-empty regular file, and none is missing;
//! * reads at random offsets and lengths through `Image::read_at` of the largest files
//!   and of some shared libraries equal the same ranges of the source files;
//! * the image is made of what the options ask for (`dump.erofs -s` features, index
//!   format, pcluster sizes), so a silently ignored option cannot pass for coverage.
//!
//! The tree is `$ISHARE_CACHE/bench/rootfs-bookworm-minbase` (the benchmarks' tree,
//! bootstrapped once by `scripts/install-deps.sh`), or `$ISHARE_MINBASE_ROOTFS`. A
//! missing tree fails the test. The images are built two at a time (each mkfs.erofs
//! also runs two workers); every configuration is checked even when one fails.
//!
//! Needs root (tmpfs mounts, chown, device nodes, `trusted.` xattrs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use Expect::*;
use ishare_erofs::{DataLayout, ExtentKind, Image};
use ishare_testkit::image::{random_len, read_checked};
use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::Tmpfs;
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::{CompareOpts, Kind, Tree, assert_trees_eq, snapshot};
use ishare_testkit::tools::compress_hints;
use ishare_testkit::tools::run;

/// A fingerprint xattr name in the `trusted.` namespace: unlike the default
/// `erofs.fingerprint.v1` (no namespace, so neither the kernel nor `ishare extract`
/// shows it), `ishare extract` recreates it, and the extracted tree must hold
/// `sha256:<digest of the source file>` on every non-empty regular file.
const VISIBLE_DIGEST: &str = "trusted.ishare.fp";

/// What an image must be made of (checked before its contents).
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A substring of `dump.erofs -s` (features, algorithms), whitespace collapsed.
    /// (An image compressed with LZ4 alone in 4 KiB pclusters has no compression
    /// configurations: `dump.erofs` shows `lz4_max_distance`, not `compr_algs`.)
    Dump(&'static str),
    /// Every compressed inode among the checked files has full (legacy) indexes.
    FullIndexes,
    /// Every compressed inode among the checked files has compact indexes.
    CompactIndexes,
    /// The largest pcluster of this file (path in the image) has exactly this size.
    MaxPcluster(&'static str, u32),
    /// The same for apt's package list (its name holds the mirror's).
    AptListMaxPcluster(u32),
}

/// One mkfs.erofs 1.9.4 configuration: each builds its own image.
#[derive(Clone, Copy, Debug)]
struct Config {
    name: &'static str,
    args: &'static [&'static str],
    /// Contents of a `--compress-hints` file.
    hints: Option<&'static str>,
    /// `--xattr-inode-digest=trusted.ishare.fp` instead of the default name.
    visible_digest: bool,
    expect: &'static [Expect],
}

/// Per-file pcluster sizes with two algorithms listed. mkfs.erofs 1.9.4 segfaults on
/// any hints line naming an algorithm index (`erofs_load_compress_hints` reads
/// `z_paramsets` before mkfs/main.c sets it; checked: `16384 \.so 1` and `16384 \.so 0`
/// both crash), so these lines name none: every file is compressed with the first
/// algorithm (LZ4HC), the second (zstd) is only declared in the superblock's
/// compression configurations. Hint paths are matched relative to the root.
const HINTS: &str = "16384 \\.so\n65536 ^var/lib/apt/lists/\n";

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

const PERL: &str = "/usr/bin/perl";

impl Config {
    /// A configuration with no hints and the default fingerprint name.
    const fn new(
        name: &'static str,
        args: &'static [&'static str],
        expect: &'static [Expect],
    ) -> Config {
        Config {
            name,
            args,
            hints: None,
            visible_digest: false,
            expect,
        }
    }

    /// The same with the fingerprint xattr under [`VISIBLE_DIGEST`].
    const fn visible_digest(self) -> Config {
        Config {
            visible_digest: true,
            ..self
        }
    }

    /// The same with this `--compress-hints` file.
    const fn hints(self, hints: &'static str) -> Config {
        Config {
            hints: Some(hints),
            ..self
        }
    }
}

/// The slowest first, so the two build threads finish together.
#[rustfmt::skip]
const CONFIGS: &[Config] = &[
    Config::new("lzma -C65536", &["-zlzma", "-C65536"],
        &[Dump("compr_algs: lzma"), Dump("big_pcluster"), CompactIndexes, MaxPcluster(PERL, 65536)]),
    Config::new("zstd -C16384 fragments", &["-zzstd", "-C16384", "-Efragments"],
        &[Dump("compr_algs: zstd"), Dump("fragments"), Dump("big_pcluster"), MaxPcluster(PERL, 16384)]),
    Config::new("deflate ztailpacking", &["-zdeflate", "-Eztailpacking"],
        &[Dump("compr_algs: deflate"), Dump("ztailpacking"), MaxPcluster(PERL, 4096)]).visible_digest(),
    Config::new("lz4hc:zstd hints", &["-zlz4hc:zstd"],
        &[Dump("compr_algs: lz4, zstd"), Dump("big_pcluster"), MaxPcluster(LIBC, 16384),
          AptListMaxPcluster(65536), MaxPcluster(PERL, 4096)]).hints(HINTS),
    Config::new("lz4hc -C65536", &["-zlz4hc", "-C65536"],
        &[Dump("compr_algs: lz4"), Dump("big_pcluster"), MaxPcluster(PERL, 65536)]),
    Config::new("lz4hc all-fragments", &["-zlz4hc", "-Eall-fragments"],
        &[Dump("lz4_max_distance"), Dump("packed nid"), Dump("fragments")]).visible_digest(),
    Config::new("lz4hc dedupe", &["-zlz4hc", "-Ededupe"],
        &[Dump("lz4_max_distance"), Dump("dedupe")]),
    Config::new("lz4", &["-zlz4"],
        &[Dump("lz4_max_distance"), CompactIndexes, MaxPcluster(PERL, 4096)]),
    Config::new("lz4 legacy-compress", &["-zlz4", "-Elegacy-compress"],
        &[Dump("lz4_max_distance"), FullIndexes]),
];

/// What is known of the source once, shared by every configuration.
struct Source {
    dir: PathBuf,
    tree: Tree,
    /// The same with the visible fingerprint xattr on every non-empty regular file.
    tree_with_digests: Tree,
    /// Regular files counted once per inode, and those of them that are not empty.
    regular_inodes: u64,
    nonempty_inodes: u64,
    /// Files read at random offsets (paths in the image).
    read_paths: Vec<String>,
    /// apt's list of the main component's packages (the largest file).
    apt_list: String,
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    if n == 0 { 0 } else { rng.below(n) }
}

fn load_source() -> Source {
    let dir = ishare_testkit::tree::minbase();
    let tree = snapshot(&dir);
    let files: Vec<(&Vec<u8>, u64)> = tree
        .entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(p, e)| (p, e.content.unwrap().0))
        .collect();
    // Hard links: all but the first path of each group are the same inode.
    let extra: BTreeSet<&Vec<u8>> = tree
        .hardlinks
        .iter()
        .flat_map(|g| g.iter().skip(1))
        .collect();
    let regular_inodes = files.iter().filter(|(p, _)| !extra.contains(p)).count() as u64;
    let nonempty_inodes = files
        .iter()
        .filter(|(p, len)| !extra.contains(p) && *len > 0)
        .count() as u64;
    let apt_list = files
        .iter()
        .filter(|(p, len)| {
            p.starts_with(b"var/lib/apt/lists/") && p.ends_with(b"_Packages") && *len > 16 << 20
        })
        .max_by_key(|(_, len)| *len)
        .map(|(p, _)| format!("/{}", String::from_utf8_lossy(p)));
    let Some(apt_list) = apt_list.filter(|_| regular_inodes > 4000) else {
        panic!(
            "{} does not look like a minbase tree ({regular_inodes} regular files, no apt \
             package list over 16 MiB): remove it and run `scripts/install-deps.sh`",
            dir.display()
        )
    };

    let mut tree_with_digests = tree.clone();
    for e in tree_with_digests.entries.values_mut() {
        if let (Kind::File, Some((len, digest))) = (e.kind, e.content)
            && len > 0
        {
            let mut value = b"sha256:".to_vec();
            value.extend_from_slice(&digest);
            e.xattrs.push((VISIBLE_DIGEST.as_bytes().to_vec(), value));
            e.xattrs.sort();
        }
    }

    // The six largest files (the apt list, perl, libraries), libc and every 12th
    // shared library of 64 KiB or more (files of the hints' 16 KiB pclusters).
    let name = |p: &Vec<u8>| format!("/{}", String::from_utf8(p.clone()).unwrap());
    let mut by_size = files.clone();
    by_size.sort_by_key(|(p, len)| (std::cmp::Reverse(*len), *p));
    let mut read_paths: Vec<String> = by_size.iter().take(6).map(|(p, _)| name(p)).collect();
    read_paths.push(LIBC.to_string());
    let libs = files
        .iter()
        .filter(|(p, len)| *len >= 65536 && p.windows(3).any(|w| w == b".so"))
        .map(|(p, _)| name(p));
    read_paths.extend(libs.step_by(12));
    read_paths.sort();
    read_paths.dedup();
    assert!(read_paths.len() >= 10, "{read_paths:?}");

    Source {
        dir,
        tree,
        tree_with_digests,
        regular_inodes,
        nonempty_inodes,
        read_paths,
        apt_list,
    }
}

fn ishare() -> Command {
    Command::new(ishare_bin!())
}

/// The largest encoded pcluster of a file (0 if it has none).
fn max_pcluster(img: &Image, path: &str) -> u32 {
    let ino = img
        .lookup_path(path.as_bytes())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut max = 0;
    let mut pos = 0;
    while pos < ino.size {
        let e = img
            .map_raw(&ino, pos)
            .unwrap_or_else(|e| panic!("{path}: map at {pos}: {e}"));
        if let ExtentKind::Compressed(p) = e.kind {
            max = max.max(p.len);
        }
        pos = e.logical + e.len;
    }
    max
}

/// The options took effect.
fn check_structure(cfg: &Config, src: &Source, image: &Path, img: &Image) {
    let out = run(Command::new(ishare_testkit::tools::dump_194())
        .arg("-s")
        .arg(image));
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in cfg.expect {
        match *want {
            Expect::Dump(s) => assert!(text.contains(s), "dump.erofs -s lacks {s:?}: {text}"),
            Expect::FullIndexes | Expect::CompactIndexes => {
                let layout = if matches!(want, Expect::FullIndexes) {
                    DataLayout::CompressedFull
                } else {
                    DataLayout::CompressedCompact
                };
                let mut compressed = 0;
                for path in &src.read_paths {
                    let ino = img.lookup_path(path.as_bytes()).unwrap();
                    if matches!(
                        ino.layout,
                        DataLayout::CompressedFull | DataLayout::CompressedCompact
                    ) {
                        assert_eq!(ino.layout, layout, "{path}");
                        compressed += 1;
                    }
                }
                assert!(compressed >= 5, "only {compressed} compressed files");
            }
            Expect::MaxPcluster(path, size) => {
                assert_eq!(max_pcluster(img, path), size, "{path}: largest pcluster");
            }
            Expect::AptListMaxPcluster(size) => {
                let path = &src.apt_list;
                assert_eq!(max_pcluster(img, path), size, "{path}: largest pcluster");
            }
        }
    }
}

/// Reads at random offsets and lengths (some ending past the end of the file) through
/// the library equal the source's bytes.
fn random_reads(src: &Source, img: &Image, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut checked = 0;
    for path in &src.read_paths {
        let file = File::open(src.dir.join(&path[1..])).unwrap();
        let size = file.metadata().unwrap().len();
        let ino = img
            .lookup_path(path.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(ino.size, size, "{path}: size");
        let rounds = if size > 4 << 20 { 48 } else { 16 };
        for i in 0..rounds {
            let len = random_len(&mut rng, 1 << 20);
            // Every 8th read ends at or past the end of the file.
            let pos = if i % 8 == 7 {
                size - below(&mut rng, size.min(len as u64) + 1)
            } else {
                below(&mut rng, size + 1)
            };
            let got = read_checked(img, &ino, pos, len, path);
            let n = got.len();
            let mut want = vec![0u8; n];
            file.read_exact_at(&mut want, pos).unwrap();
            if got[..n] != want[..] {
                let first = (0..n).find(|&k| got[k] != want[k]).unwrap();
                panic!(
                    "{path}: read of {len} at {pos}: byte {} differs from the source",
                    pos + first as u64
                );
            }
            checked += n as u64;
        }
    }
    checked
}

fn check_config(cfg: &Config, src: &Source) {
    let t0 = Instant::now();
    // Image and extracted tree in one tmpfs, gone when the configuration is done.
    let fs = Tmpfs::new();
    let image = fs.path().join("image.erofs");
    let mut mkfs = Command::new(ishare_testkit::tools::mkfs_194());
    mkfs.args(["--quiet", "-T0", "--mkfs-time"]);
    if cfg.visible_digest {
        mkfs.arg(format!("--xattr-inode-digest={VISIBLE_DIGEST}"));
    } else {
        mkfs.arg("--xattr-inode-digest");
    }
    mkfs.args(cfg.args);
    if let Some(h) = cfg.hints {
        mkfs.arg(compress_hints(fs.path(), h));
    }
    run(mkfs.arg(&image).arg(&src.dir));
    let t_mkfs = t0.elapsed();
    let img = Image::open(&image).expect("open image");
    check_structure(cfg, src, &image, &img);

    let dir = fs.path().join("x");
    run(ishare().arg("extract").arg(&image).arg(&dir));
    let want = if cfg.visible_digest {
        &src.tree_with_digests
    } else {
        &src.tree
    };
    assert_trees_eq(
        "source",
        want,
        "ishare extract",
        &snapshot(&dir),
        &CompareOpts::EXACT,
    );
    fs::remove_dir_all(&dir).unwrap();

    let out = run(ishare()
        .args(["fsck", "--xattr-inode-digest", "--json"])
        .arg(&image));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"].as_u64(), Some(src.regular_inodes), "fsck: {v}");
    assert_eq!(
        v["fingerprints_verified"].as_u64(),
        Some(src.nonempty_inodes),
        "fsck: {v}"
    );
    assert_eq!(v["fingerprints_missing"].as_u64(), Some(0), "fsck: {v}");

    let seed = cfg.name.bytes().fold(0x6D69_6E62u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let read = random_reads(src, &img, seed);
    eprintln!(
        "{}: image {:.1} MiB, mkfs.erofs {:.1} s, all checks {:.1} s, {:.1} MiB read at random",
        cfg.name,
        fs::metadata(&image).unwrap().len() as f64 / (1 << 20) as f64,
        t_mkfs.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        read as f64 / (1 << 20) as f64
    );
}

#[test]
fn minbase_compressed_images() {
    ishare_testkit::tools::require_root();
    let t0 = Instant::now();
    let src = load_source();
    eprintln!(
        "source {}: {} entries, {} regular files ({} inodes), snapshot in {:.1} s",
        src.dir.display(),
        src.tree.entries.len(),
        src.tree
            .entries
            .values()
            .filter(|e| e.kind == Kind::File)
            .count(),
        src.regular_inodes,
        t0.elapsed().as_secs_f64()
    );
    // Configurations can be named in ISHARE_MINBASE_CONFIGS (comma-separated
    // substrings) to run fewer while debugging.
    let only: Option<Vec<String>> = std::env::var("ISHARE_MINBASE_CONFIGS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_string).collect());
    let configs: Vec<&Config> = CONFIGS
        .iter()
        .filter(|c| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|s| c.name.contains(s)))
        })
        .collect();
    assert!(!configs.is_empty(), "no configuration selected");

    let next = AtomicUsize::new(0);
    let failed: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(cfg) = configs.get(i) else { break };
                    let r = std::panic::catch_unwind(|| check_config(cfg, &src));
                    if let Err(e) = r {
                        let msg = ishare_testkit::watchdog::panic_message(&*e);
                        let line = format!("{} ({}): {msg}", cfg.name, cfg.args.join(" "));
                        failed.lock().unwrap().insert(i, line);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} configurations failed:\n{}",
        failed.len(),
        configs.len(),
        failed.into_values().collect::<Vec<_>>().join("\n\n")
    );
    eprintln!(
        "{} configurations in {:.1} s",
        configs.len(),
        t0.elapsed().as_secs_f64()
    );
}
