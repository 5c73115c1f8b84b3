//! `ishare report`: what a set of images would share, checked against figures this
//! file computes on its own from the source trees it wrote (distinct contents by
//! SHA-256 and size, sizes in whole 4 KiB blocks, hard links once):
//!
//! * images from `ishare mkfs` (plain, chunk-based, LZMA) and from erofs-utils 1.9.4's
//!   `mkfs.erofs --xattr-inode-digest` (LZ4HC) with known overlap: per-image files,
//!   bytes and shared bytes, the set's page cache with and without sharing, the largest
//!   shared contents;
//! * the same on a Debian minbase tree and a variant of it, as `scripts/demo.sh` builds;
//! * an image without fingerprints is listed and hashed (what it would share if rebuilt),
//!   `--verify` hashes every file; a fingerprint held at two sizes is listed, and with
//!   `--verify` the lying file too;
//! * multi-device images with `--device`; a file too large to hash (a 2 GiB hole) is
//!   listed as not hashed, not hashed for ever;
//! * corrupt and hostile images: an error naming the image (and the path), no panic;
//! * `--json` has the contract's fields; `--svg` is well-formed XML whose bars carry the
//!   reported figures;
//! * the prediction holds: two images mounted with `ishare mount -o inode_share` and read
//!   in full grow the page cache within 10% of what the report predicts.
//!
//! Needs root (mounts, drop_caches), /dev/fuse, a C compiler (testkit's memtool is not
//! used, but its page cache meter is), mkfs.erofs 1.9.4 and the minbase tree
//! (`scripts/install-deps.sh`). The tests of this file run one at a time: one of them
//! measures the page cache of this process's memory cgroup.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use ishare_testkit::image::fix_checksum;
use ishare_testkit::mounts::{self, FuseMount};
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::hash_file;
use ishare_testkit::tools::{mkfs_erofs, require_root, run, run_unchecked};
use ishare_testkit::tree::{minbase, write_file};
use ishare_testkit::{ishare_bin, pagecache};
use serde_json::Value;

const BLOCK: u64 = 4096;

/// Serializes the tests of this file (see the module comment).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Expected figures, from the source trees
// ---------------------------------------------------------------------------------------------

/// The regular files of a tree, once per inode: (path, size, SHA-256).
fn tree_files(root: &Path) -> Vec<(String, u64, [u8; 32])> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
                let (size, sum) = hash_file(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((format!("/{rel}"), size, sum));
            }
        }
    }
    out
}

fn pages(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// What the report must say about images of `trees`; `fingerprinted[i]` says whether
/// image i has fingerprints (else its files share with nothing).
#[derive(Debug)]
struct Expected {
    files: Vec<u64>,
    bytes: Vec<u64>,
    shared_bytes: Vec<u64>,
    unshared: u64,
    shared: u64,
    /// Sizes of the contents more than one image shares, largest first.
    multi_sizes: Vec<u64>,
}

fn expect(trees: &[Vec<(String, u64, [u8; 32])>], fingerprinted: &[bool]) -> Expected {
    // (digest, size) -> the images holding it with fingerprints.
    let mut holders: HashMap<([u8; 32], u64), HashSet<usize>> = HashMap::new();
    for (i, t) in trees.iter().enumerate() {
        for (_, size, sum) in t {
            if *size > 0 && fingerprinted[i] {
                holders.entry((*sum, *size)).or_default().insert(i);
            }
        }
    }
    let mut e = Expected {
        files: trees.iter().map(|t| t.len() as u64).collect(),
        bytes: trees.iter().map(|t| t.iter().map(|f| f.1).sum()).collect(),
        shared_bytes: vec![0; trees.len()],
        unshared: trees.iter().flatten().map(|f| pages(f.1)).sum(),
        shared: holders.keys().map(|(_, size)| pages(*size)).sum(),
        multi_sizes: holders
            .iter()
            .filter(|(_, h)| h.len() > 1)
            .map(|((_, size), _)| *size)
            .collect(),
    };
    e.multi_sizes.sort_by(|a, b| b.cmp(a));
    for (i, t) in trees.iter().enumerate() {
        for (_, size, sum) in t {
            let others = holders
                .get(&(*sum, *size))
                .is_some_and(|h| h.iter().any(|&j| j != i));
            if fingerprinted[i] && others {
                e.shared_bytes[i] += size;
            }
            if !fingerprinted[i] {
                e.shared += pages(*size);
            }
        }
    }
    e
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not an unsigned number"))
}

/// Compares `report --json` output with the expected figures.
fn assert_figures(r: &Value, e: &Expected) {
    let images = r["images"].as_array().expect("images list");
    assert_eq!(images.len(), e.files.len());
    for (i, img) in images.iter().enumerate() {
        let name = img["path"].as_str().unwrap();
        assert_eq!(u(&img["files"]), e.files[i], "{name}: files");
        assert_eq!(u(&img["bytes"]), e.bytes[i], "{name}: bytes");
        assert_eq!(
            u(&img["shared_bytes"]),
            e.shared_bytes[i],
            "{name}: shared_bytes"
        );
    }
    let set = &r["set"];
    assert_eq!(u(&set["bytes"]), e.bytes.iter().sum::<u64>());
    assert_eq!(u(&set["page_cache_unshared"]), e.unshared, "unshared");
    assert_eq!(u(&set["page_cache_shared"]), e.shared, "shared");
    assert_eq!(u(&set["saving_bytes"]), e.unshared - e.shared);
    let pct = set["saving_percent"].as_f64().unwrap();
    let want = (e.unshared - e.shared) as f64 * 100.0 / e.unshared as f64;
    assert!(
        (pct - want).abs() < 0.01,
        "saving_percent {pct}, want {want}"
    );
    let top: Vec<u64> = r["top_shared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| u(&c["size"]))
        .collect();
    let n = top.len();
    assert_eq!(
        top,
        e.multi_sizes[..n.min(e.multi_sizes.len())],
        "top_shared"
    );
}

// ---------------------------------------------------------------------------------------------
// Trees and images
// ---------------------------------------------------------------------------------------------

/// Three trees with known overlap: contents common to all three, to two, inside one
/// tree twice, own ones, an empty file, a hard link and a symlink; compressible text
/// and random bytes, sizes off block boundaries.
fn write_trees(dir: &Path) -> [PathBuf; 3] {
    let big = Rng::new(1).text((2 << 20) + 77);
    let random = Rng::new(2).bytes((1 << 20) + 5);
    let conf = Rng::new(3).text(300);
    let half = Rng::new(4).text(70_000);
    let dup = Rng::new(5).text(10_000);
    let [s1, s2, s3] = ["s1", "s2", "s3"].map(|n| dir.join(n));
    write_file(&s1, "usr/lib/big.so", &big);
    write_file(&s1, "usr/lib/rand.bin", &random);
    write_file(&s1, "etc/a.conf", &conf);
    write_file(&s1, "usr/share/half", &half);
    write_file(&s1, "dup/a", &dup);
    write_file(&s1, "dup/b", &dup);
    write_file(&s1, "own1", &Rng::new(11).text(50_001));
    write_file(&s1, "empty", b"");
    fs::hard_link(s1.join("usr/lib/big.so"), s1.join("usr/lib/big-link.so")).unwrap();
    std::os::unix::fs::symlink("big.so", s1.join("usr/lib/big-symlink.so")).unwrap();
    write_file(&s2, "opt/x/big-copy.so", &big);
    write_file(&s2, "rand.bin", &random);
    write_file(&s2, "etc/a.conf", &conf);
    write_file(&s2, "own2", &Rng::new(12).text(123_456));
    write_file(&s3, "big.so", &big);
    write_file(&s3, "conf", &conf);
    write_file(&s3, "half-copy", &half);
    write_file(&s3, "own3", &Rng::new(13).bytes(9_999));
    [s1, s2, s3]
}

fn ishare_mkfs(image: &Path, src: &Path, extra: &[&str]) {
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet"])
        .args(extra)
        .arg(image)
        .arg(src));
}

/// `ishare report ARGS`, unchecked.
fn report_out(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(ishare_bin!());
    c.arg("report");
    for a in args {
        c.arg(a);
    }
    run_unchecked(&mut c)
}

/// `ishare report --json ARGS`, which must succeed; (its JSON, its stderr).
fn report_json(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (Value, String) {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--json"];
    all.extend_from_slice(args);
    let out = report_out(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ishare report failed: {stderr}");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v, stderr)
}

/// The offset of `needle` in `hay` (once).
fn find(hay: &[u8], needle: &[u8]) -> usize {
    let at: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "expected the bytes once in the image");
    at[0]
}

fn fingerprint_of(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    [b"sha256:".as_slice(), &sha2::Sha256::digest(data)].concat()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Four images from two mkfs programs, plain, chunk-based and compressed.
#[test]
fn figures_equal_what_the_source_trees_hold() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let [s1, s2, s3] = write_trees(dir.path());
    let imgs: Vec<PathBuf> = (1..=4)
        .map(|i| dir.path().join(format!("{i}.erofs")))
        .collect();
    ishare_mkfs(&imgs[0], &s1, &[]);
    mkfs_erofs(&["-zlz4hc", "--xattr-inode-digest"], &imgs[1], &s2);
    ishare_mkfs(&imgs[2], &s3, &["--chunksize=8192"]);
    ishare_mkfs(&imgs[3], &s1, &["-z", "lzma"]);
    let trees = [&s1, &s2, &s3, &s1].map(|s| tree_files(s));
    let e = expect(&trees, &[true; 4]);
    assert!(e.multi_sizes.len() >= 5 && e.shared < e.unshared, "{e:?}");
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = imgs.iter().map(|p| p as _).collect();
    let (r, stderr) = report_json(&args);
    assert_figures(&r, &e);
    assert!(
        !stderr.contains("hashing"),
        "no file needed hashing: {stderr}"
    );
    assert_eq!(u(&r["hashed"]["files"]), 0);
    assert!(
        r["images_without_fingerprints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(r["size_conflicts"].as_array().unwrap().is_empty());
    // One path per image for the largest shared content, each the big file's.
    let big = &r["top_shared"][0];
    assert_eq!(u(&big["images"]), 4);
    let paths: Vec<&str> = big["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/usr/lib/big-link.so",
            "/opt/x/big-copy.so",
            "/big.so",
            "/usr/lib/big-link.so"
        ]
    );
    // --top limits the list; the text output shows the same figures.
    let (r2, _) = report_json(&[&"--top", &"2", &imgs[0], &imgs[1]]);
    assert_eq!(r2["top_shared"].as_array().unwrap().len(), 2);
    let text = report_out(&[&imgs[0], &imgs[1]]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("with inode_share") && text.contains("/opt/x/big-copy.so"),
        "{text}"
    );
}

/// An image without fingerprints is listed and hashed; `--verify` hashes everything.
#[test]
fn images_without_fingerprints_are_listed_and_hashed() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let [s1, s2, _] = write_trees(dir.path());
    let (i1, i2) = (dir.path().join("1.erofs"), dir.path().join("2.erofs"));
    ishare_mkfs(&i1, &s1, &[]);
    ishare_mkfs(&i2, &s2, &["--no-xattr-inode-digest", "-z", "lz4"]);
    let trees = [tree_files(&s1), tree_files(&s2)];
    let (r, stderr) = report_json(&[&i1, &i2]);
    assert_figures(&r, &expect(&trees, &[true, false]));
    assert_eq!(
        r["images_without_fingerprints"],
        serde_json::json!([i2.display().to_string()])
    );
    let nonempty = |t: &Vec<(String, u64, [u8; 32])>| t.iter().filter(|f| f.1 > 0).count() as u64;
    assert_eq!(u(&r["hashed"]["files"]), nonempty(&trees[1]));
    assert!(
        stderr.contains(&format!(
            "{}: hashing {} files",
            i2.display(),
            nonempty(&trees[1])
        )),
        "{stderr}"
    );
    // What they would share with fingerprints: the trees' figures with both fingerprinted.
    let all = expect(&trees, &[true, true]);
    assert_eq!(
        u(&r["set"]["page_cache_shared_if_fingerprinted"]),
        all.shared
    );
    for i in 0..2 {
        assert_eq!(
            u(&r["images"][i]["shared_bytes_if_fingerprinted"]),
            all.shared_bytes[i]
        );
    }

    // --verify: every non-empty file hashed, all fingerprints right, same figures.
    let (v, stderr) = report_json(&[&"--verify", &i1, &i2]);
    assert_eq!(
        u(&v["hashed"]["files"]),
        nonempty(&trees[0]) + nonempty(&trees[1])
    );
    assert!(stderr.contains("to verify their fingerprints"), "{stderr}");
    assert!(v["fingerprint_mismatches"].as_array().unwrap().is_empty());
    assert_eq!(v["set"], r["set"]);
}

/// A fingerprint held at two sizes is listed (and with `--verify`, the lying file).
#[test]
fn same_fingerprint_different_size_is_listed() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Rng::new(21).text(5000), Rng::new(22).text(7000));
    let (s1, s2) = (dir.path().join("s1"), dir.path().join("s2"));
    write_file(&s1, "lib/a", &a);
    write_file(&s2, "lib/b", &b);
    let (i1, i2) = (dir.path().join("1.erofs"), dir.path().join("2.erofs"));
    ishare_mkfs(&i1, &s1, &[]);
    ishare_mkfs(&i2, &s2, &[]);
    // Image 2 claims b's content is a's.
    let mut bytes = fs::read(&i2).unwrap();
    let at = find(&bytes, &fingerprint_of(&b));
    bytes[at..at + 39].copy_from_slice(&fingerprint_of(&a));
    fs::write(&i2, &bytes).unwrap();

    let (r, _) = report_json(&[&i1, &i2]);
    let conflicts = r["size_conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{r:#}");
    let files: Vec<(String, String, u64)> = conflicts[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["image"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
                u(&f["size"]),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            (i1.display().to_string(), "/lib/a".to_string(), 5000),
            (i2.display().to_string(), "/lib/b".to_string(), 7000)
        ]
    );
    // Not shared: the kernel needs equal sizes.
    assert_eq!(u(&r["images"][0]["shared_bytes"]), 0);
    assert_eq!(u(&r["set"]["saving_bytes"]), 0);

    let (v, _) = report_json(&[&"--verify", &i1, &i2]);
    assert_eq!(
        v["fingerprint_mismatches"],
        serde_json::json!([{"image": i2.display().to_string(), "path": "/lib/b"}])
    );
}

/// Corrupt and hostile images: a clear error naming the image (and the file), no panic.
#[test]
fn corrupt_images_are_errors_naming_image_and_path() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    let data = Rng::new(31).text(20_000);
    write_file(&s, "dir/victim", &data);
    write_file(&s, "other", b"other");
    let good = dir.path().join("good.erofs");
    ishare_mkfs(&good, &s, &[]);
    let orig = fs::read(&good).unwrap();

    let fail = |name: &str, bytes: &[u8], want: &[&str]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        let out = report_out(&[&good, &p]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: report succeeded");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(err.contains(&p.display().to_string()), "{name}: {err}");
        for w in want {
            assert!(err.contains(w), "{name}: no {w:?} in {err}");
        }
    };
    // The fingerprint's xattr entry claims a value running past the xattr area.
    let mut b = orig.clone();
    let at = find(&b, &fingerprint_of(&data)) - 4 + 2; // e_value_size of its entry
    b[at..at + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    fix_checksum(&mut b);
    fail("bad-xattr.erofs", &b, &["/dir/victim", "xattr"]);
    // A file's inode with an i_format of unknown bits.
    let at = ishare_erofs::Image::open(&good)
        .unwrap()
        .lookup_path(b"/other")
        .unwrap()
        .location() as usize;
    let mut b = orig.clone();
    b[at..at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    fix_checksum(&mut b); // the inode may lie in the checksummed first block
    fail("bad-inode.erofs", &b, &["/other", "i_format"]);
    // Truncated past the superblock, not EROFS, missing.
    fail("truncated.erofs", &orig[..2048], &[]);
    fail("garbage.erofs", &vec![0x5a; 8192], &[]);
    let missing = dir.path().join("missing.erofs");
    let out = report_out(&[&missing]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&missing.display().to_string()));
}

/// A file of a hostile (or hugely sparse) size in an image without fingerprints is
/// listed as not hashed, at once, instead of hashing for ever.
#[test]
fn huge_files_are_not_hashed() {
    let _g = serial();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let s = dir.path().join("s");
    write_file(&s, "small", b"hi");
    let huge = fs::File::create(s.join("huge")).unwrap();
    huge.set_len(2 << 30).unwrap(); // a hole, stored as null chunk indexes
    drop(huge);
    let img = dir.path().join("sparse.erofs");
    mkfs_erofs(&["--chunksize=1048576"], &img, &s);
    assert!(fs::metadata(&img).unwrap().len() < 1 << 20);
    let started = std::time::Instant::now();
    let (r, _) = report_json(&[&img]);
    assert!(
        started.elapsed().as_secs() < 30,
        "report took {:?}",
        started.elapsed()
    );
    assert_eq!(
        r["not_hashed"],
        serde_json::json!([{"image": img.display().to_string(), "path": "/huge", "size": 2u64 << 30}])
    );
    assert_eq!(u(&r["hashed"]["files"]), 1);
}

/// `--json` carries the contract's fields; `--svg` is well-formed SVG whose bars carry
/// the reported figures.
#[test]
fn json_contract_and_svg_bars() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let [s1, s2, _] = write_trees(dir.path());
    // A name XML must escape.
    let (i1, i2) = (dir.path().join("a&<b>.erofs"), dir.path().join("2.erofs"));
    ishare_mkfs(&i1, &s1, &[]);
    mkfs_erofs(&["--xattr-inode-digest"], &i2, &s2);
    let svg = dir.path().join("report.svg");
    let (r, _) = report_json(&[&"--svg", &svg, &i1, &i2]);
    for img in r["images"].as_array().unwrap() {
        for k in ["path", "files", "bytes", "shared_bytes"] {
            assert!(img.get(k).is_some(), "images[] has no {k}: {img}");
        }
    }
    for k in [
        "bytes",
        "page_cache_unshared",
        "page_cache_shared",
        "saving_bytes",
        "saving_percent",
    ] {
        assert!(r["set"].get(k).is_some(), "set has no {k}");
    }

    let text = fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("bad XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let bytes_of =
        |n: roxmltree::Node| -> u64 { n.attribute("data-bytes").unwrap().parse().unwrap() };
    let groups: Vec<_> = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("image"))
        .collect();
    assert_eq!(groups.len(), 2);
    for (g, img) in groups.iter().zip(r["images"].as_array().unwrap()) {
        assert_eq!(g.attribute("data-path"), img["path"].as_str());
        let part = |class: &str| -> u64 {
            g.descendants()
                .filter(|n| n.attribute("class") == Some(class))
                .map(bytes_of)
                .sum()
        };
        assert_eq!(part("shared"), u(&img["shared_bytes"]));
        assert_eq!(part("shared") + part("own"), u(&img["bytes"]));
    }
    let total = |class: &str| -> u64 {
        let n: Vec<_> = root
            .descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .collect();
        assert_eq!(n.len(), 1, "one {class} bar");
        bytes_of(n[0])
    };
    assert_eq!(total("total-unshared"), u(&r["set"]["page_cache_unshared"]));
    assert_eq!(total("total-shared"), u(&r["set"]["page_cache_shared"]));
}

/// A multi-device image (data in a blob) reports as the same tree in one file; with
/// `--verify` its data is read from the `--device` given.
#[test]
fn multi_device_images_take_their_devices() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let [s1, s2, _] = write_trees(dir.path());
    let (i1, i2, blob) = (
        dir.path().join("1.erofs"),
        dir.path().join("2.erofs"),
        dir.path().join("2.blob"),
    );
    ishare_mkfs(&i1, &s1, &[]);
    let blobdev = format!("--blobdev={}", blob.display());
    mkfs_erofs(
        &["--xattr-inode-digest", "--chunksize=4096", &blobdev],
        &i2,
        &s2,
    );
    let trees = [tree_files(&s1), tree_files(&s2)];
    let e = expect(&trees, &[true, true]);
    let (r, _) = report_json(&[&"--verify", &i1, &i2, &"--device", &blob]);
    assert_figures(&r, &e);
    assert!(r["fingerprint_mismatches"].as_array().unwrap().is_empty());
    assert!(u(&r["hashed"]["files"]) > 0);
    // One device too many: refused, naming the count.
    let out = report_out(&[&i1, &i2, &"--device", &blob, &"--device", &blob]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kind of trees `scripts/demo.sh` builds: Debian minbase and a variant of it with
/// one package's files removed and other files added and changed.
#[test]
fn minbase_and_a_variant() {
    let _g = serial();
    let base = minbase();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let variant = dir.path().join("variant");
    run(Command::new("cp").arg("-a").arg(&base).arg(&variant));
    let list = fs::read_to_string(base.join("var/lib/dpkg/info/perl-base.list")).unwrap();
    for f in list.lines() {
        let p = variant.join(f.trim_start_matches('/'));
        if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&p).unwrap();
        }
    }
    write_file(&variant, "etc/hostname", b"variant\n");
    write_file(&variant, "opt/app/lib.so", &Rng::new(41).bytes(3 << 20));
    write_file(&variant, "opt/app/README", &Rng::new(42).text(5000));
    let (i1, i2) = (
        dir.path().join("minbase.erofs"),
        dir.path().join("variant.erofs"),
    );
    ishare_mkfs(&i1, &base, &[]);
    ishare_mkfs(&i2, &variant, &["-z", "lz4hc"]);
    let trees = [tree_files(&base), tree_files(&variant)];
    let e = expect(&trees, &[true, true]);
    let (r, _) = report_json(&[&i1, &i2]);
    assert_figures(&r, &e);
    assert!(u(&r["set"]["saving_bytes"]) > 100 << 20, "{}", r["set"]);
}

/// The prediction holds: two images mounted with `ishare mount -o inode_share` and read
/// in full grow the page cache within 10% of the report's `page_cache_shared`.
#[test]
fn prediction_holds_for_inode_share_mounts() {
    let _g = serial();
    require_root();
    // Put this process in its memory cgroup first, so the mount daemons it starts are
    // charged there too.
    pagecache::cached_kib();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let common = Rng::new(51).bytes(24 << 20);
    let (s1, s2) = (dir.path().join("s1"), dir.path().join("s2"));
    write_file(&s1, "lib/common.so", &common);
    write_file(&s2, "other/path/common.so", &common);
    write_file(&s1, "own.bin", &Rng::new(52).bytes(8 << 20));
    write_file(&s2, "own.bin", &Rng::new(53).bytes(12 << 20));
    for i in 0..200 {
        let small = Rng::new(100 + i).text(1000 + 37 * i as usize);
        write_file(&s1, &format!("etc/f{i}"), &small);
        write_file(&s2, &format!("etc/f{i}"), &small);
    }
    let (i1, i2) = (dir.path().join("1.erofs"), dir.path().join("2.erofs"));
    ishare_mkfs(&i1, &s1, &[]);
    ishare_mkfs(&i2, &s2, &["-z", "lz4"]);
    let (r, _) = report_json(&[&i1, &i2]);
    let predicted = u(&r["set"]["page_cache_shared"]) as f64 / 1024.0;

    let domain = dir.path().join("domain");
    fs::write(&domain, "report-test-domain").unwrap();
    fs::set_permissions(&domain, fs::Permissions::from_mode(0o600)).unwrap();
    let mut seen = Vec::new();
    for attempt in 0..3 {
        let store = dir.path().join(format!("store{attempt}"));
        // prepare=open: objects made at first opens. Made ahead (the default), an
        // object read before its publication ends has its pages dropped then (made
        // ahead, nobody was meant to have read it yet), which this measurement, taken
        // right after the reads, would miss.
        let opts = format!(
            "inode_share,domain_id_file={},store={},prepare=open",
            domain.display(),
            store.display()
        );
        let m1: FuseMount = mounts::ishare_mount(&ishare_bin!(), &i1, &opts);
        let m2: FuseMount = mounts::ishare_mount(&ishare_bin!(), &i2, &opts);
        let files = |m: &FuseMount, s: &Path| -> Vec<PathBuf> {
            tree_files(s)
                .into_iter()
                .map(|(p, _, _)| m.path().join(p.trim_start_matches('/')))
                .collect()
        };
        let all: Vec<PathBuf> = [files(&m1, &s1), files(&m2, &s2)].concat();
        for p in &all {
            fs::metadata(p).unwrap(); // metadata in memory before measuring
        }
        pagecache::drop_caches();
        let before = pagecache::cached_kib();
        for p in &all {
            hash_file(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        }
        let grown = (pagecache::cached_kib() - before) as f64;
        m1.unmount();
        m2.unmount();
        seen.push(format!("{grown:.0} KiB"));
        if (grown - predicted).abs() <= predicted * 0.10 {
            eprintln!("predicted {predicted:.0} KiB, measured {grown:.0} KiB");
            return;
        }
    }
    panic!(
        "page cache grew by {} reading both mounts in full; report predicted {predicted:.0} KiB",
        seen.join(", ")
    );
}
