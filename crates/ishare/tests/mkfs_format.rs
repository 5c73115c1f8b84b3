//! `ishare mkfs` layout options against erofs-utils 1.9.4's `mkfs.erofs`:
//!
//! - `--chunksize` (chunk deduplication, chunks of zeros and sparse ranges as holes,
//!   merged chunk maps), `-Ededupe` without compression, `-E^dedupe`;
//! - `--blobdev=X` with `--chunksize` (the chunks on an extra device, mounted with
//!   `device=`);
//! - `-E48bit`, `-Edot-omitted` and their `--zfeature-bits`;
//! - `-Efragdedupe=...`;
//! - the chunk blob and the 48-bit layout with `-m` and `--MZ`;
//! - compression in the 48-bit layout (extent records; byte-aligned pclusters with
//!   zstd), with fragments, dedupe and ztailpacking.
//!
//! For each: the host kernel mounts the image and shows the source tree (and exactly
//! what it shows of mkfs.erofs's image); `fsck.erofs --xattr-inode-digest` 1.9.4
//! (without the digests for `-m`, see `fsck_ok`) and `ishare fsck --xattr-inode-digest`
//! accept it; `dump.erofs -s` shows the feature
//! bits; the image (and blob device) is at most 1.01x mkfs.erofs's; `--workers 1`
//! and `--workers 4` write the same bytes. Needs root and erofs-utils 1.9.4
//! (scripts/install-deps.sh).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_testkit::mounts::ErofsMount;
use ishare_testkit::snapshot::{CompareOpts, Tree, snapshot};
use ishare_testkit::tools::{dump_194, fsck_194, mkfs_194, require_root, run, try_run};
use ishare_testkit::tree::{BlockTree, T0, block_tree};

const UUID: &str = "6ba7b811-9dad-11d1-80b4-00c04fd430c8";
const KIB: usize = 1024;

/// Random bytes from a fixed seed (xorshift), so every run builds the same tree.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The 4 KiB block-size tree plus `chunks/`: a file and its copy, a file repeating
/// one 4 KiB chunk, 64 KiB of written zeros, data around 16 KiB of zeros, a fully
/// sparse file and one with data around a hole; returns the source directory.
fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    block_tree(&BlockTree {
        block_size: 4096,
        large_ids: true,
    })
    .write(&src, false);
    let c = src.join("chunks");
    std::fs::create_dir(&c).unwrap();
    let a = noise(1, 100_000);
    std::fs::write(c.join("a"), &a).unwrap();
    std::fs::write(c.join("a.copy"), &a).unwrap();
    std::fs::write(c.join("repeat"), noise(2, 4 * KIB).repeat(8)).unwrap();
    std::fs::write(c.join("zeros"), vec![0u8; 64 * KIB]).unwrap();
    let mut mix = noise(3, 8 * KIB);
    mix.extend(vec![0u8; 16 * KIB]);
    mix.extend(noise(4, 5000));
    std::fs::write(c.join("mix"), &mix).unwrap();
    File::create(c.join("sparse"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut f = File::create(c.join("holey")).unwrap();
    f.write_all(&noise(5, 5000)).unwrap();
    f.seek(SeekFrom::Start(200_000)).unwrap();
    f.write_all(&noise(6, 100)).unwrap();
    drop(f);
    // Fixed times (adding entries changed the directories').
    let t = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(T0 as u64 + 3, 250_000_000));
    for p in [
        "a", "a.copy", "repeat", "zeros", "mix", "sparse", "holey", "", "..",
    ] {
        File::open(c.join(p)).unwrap().set_times(t).unwrap();
    }
    src
}

/// Builds `image` of `src` with ishare (`workers` threads) and the options `args`.
fn ours(args: &[&str], image: &Path, src: &Path, workers: u32) {
    run(Command::new(env!("CARGO_BIN_EXE_ishare"))
        .arg("mkfs")
        .arg("--quiet")
        .arg(format!("--workers={workers}"))
        .args(args)
        .arg(image)
        .arg(src));
}

fn theirs(args: &[&str], image: &Path, src: &Path) {
    run(Command::new(mkfs_194())
        .arg("--quiet")
        .args(args)
        .arg(image)
        .arg(src));
}

/// Options both tools get: fixed build time (files keep theirs), UUID, digests.
fn common(extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("-T{T0}"),
        "--mkfs-time".into(),
        "-U".into(),
        UUID.into(),
        "--xattr-inode-digest".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn mounted(image: &Path, devices: &[PathBuf]) -> Tree {
    let m = ErofsMount::new(image, devices);
    snapshot(m.path())
}

/// `dump.erofs -s`'s compatible and incompatible feature lists.
fn features(image: &Path) -> String {
    let out = run(Command::new(dump_194()).arg("-s").arg(image));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("features:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `digest_194`: `fsck.erofs` 1.9.4 checks the digests too. It cannot for metabox
/// images (`-m`): it reports mismatches on mkfs.erofs's own, so there it checks the
/// structure and `ishare fsck` the digests.
fn fsck_ok(image: &Path, devices: &[PathBuf], digest_194: bool) {
    let mut c = Command::new(fsck_194());
    if digest_194 {
        c.arg("--xattr-inode-digest");
    }
    for d in devices {
        c.arg(format!("--device={}", d.display()));
    }
    try_run(c.arg(image)).unwrap_or_else(|e| panic!("fsck.erofs {}: {e}", image.display()));
    let mut c = Command::new(env!("CARGO_BIN_EXE_ishare"));
    c.arg("fsck").arg("--xattr-inode-digest");
    for d in devices {
        c.arg("--device").arg(d);
    }
    try_run(c.arg(image)).unwrap_or_else(|e| panic!("ishare fsck {}: {e}", image.display()));
}

fn assert_same(what: &str, a: &str, ta: &Tree, b: &str, tb: &Tree, opts: &CompareOpts) {
    ishare_testkit::assert_trees_eq(
        &format!("{a} ({what})"),
        ta,
        &format!("{b} ({what})"),
        tb,
        opts,
    );
}

fn assert_size(what: &str, ours: u64, theirs: u64) {
    assert!(
        ours * 100 <= theirs * 101,
        "{what}: ishare {ours} bytes, mkfs.erofs {theirs} (more than 1.01x)"
    );
}

/// What one option set is checked for.
struct Case<'a> {
    args: &'a [&'a str],
    /// Words `dump.erofs -s` must show.
    features: &'a [&'a str],
    /// Compact inodes (48-bit layout) keep mtimes without nanoseconds.
    nsec_lost: bool,
    /// Put the chunks on a blob device (`--blobdev`).
    blobdev: bool,
}

/// Builds `case` with both tools and checks everything; returns ishare's image size
/// (image plus blob).
fn check(dir: &Path, src: &Path, source_tree: &Tree, name: &str, case: &Case<'_>) -> u64 {
    let args = common(case.args);
    let build = |who: &str, workers: Option<u32>| -> (PathBuf, Vec<PathBuf>) {
        let tag = format!(
            "{name}.{who}{}",
            workers.map_or(String::new(), |w| w.to_string())
        );
        let image = dir.join(format!("{tag}.img"));
        let mut a = args.clone();
        let mut devices = Vec::new();
        if case.blobdev {
            let blob = dir.join(format!("{tag}.blob"));
            a.push(format!("--blobdev={}", blob.display()));
            devices.push(blob);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match workers {
            Some(w) => ours(&a, &image, src, w),
            None => theirs(&a, &image, src),
        }
        (image, devices)
    };
    let (img1, dev1) = build("ours", Some(1));
    let (img4, dev4) = build("ours", Some(4));
    let (imgt, devt) = build("theirs", None);
    assert!(
        std::fs::read(&img1).unwrap() == std::fs::read(&img4).unwrap(),
        "{name}: the image differs between --workers 1 and 4"
    );
    for (a, b) in dev1.iter().zip(&dev4) {
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "{name}: the blob device differs between --workers 1 and 4"
        );
    }
    let f = features(&img1);
    for want in case.features {
        assert!(
            f.contains(want),
            "{name}: dump.erofs -s shows no {want}: {f}"
        );
    }
    eprintln!(
        "{name}: ishare {} bytes (+ blob {:?}), mkfs.erofs {} (+ blob {:?})",
        len(&img1),
        dev1.iter().map(|d| len(d)).collect::<Vec<_>>(),
        len(&imgt),
        devt.iter().map(|d| len(d)).collect::<Vec<_>>(),
    );
    assert_size(&format!("{name} image"), len(&img1), len(&imgt));
    for (o, t) in dev1.iter().zip(&devt) {
        assert_size(&format!("{name} blob device"), len(o), len(t));
    }
    fsck_ok(&img1, &dev1, !case.args.iter().any(|a| a.starts_with("-m")));
    let ours_tree = mounted(&img1, &dev1);
    let theirs_tree = mounted(&imgt, &devt);
    let opts = CompareOpts {
        ignore_mtime_nsec: case.nsec_lost,
        ..CompareOpts::ALL
    };
    assert_same(
        name,
        "ishare",
        &ours_tree,
        "mkfs.erofs 1.9.4",
        &theirs_tree,
        &opts,
    );
    assert_same(name, "ishare", &ours_tree, "source", source_tree, &opts);
    len(&img1) + dev1.iter().map(|d| len(d)).sum::<u64>()
}

/// Mounted trees show fingerprints as xattrs; the source has none.
fn source_tree(src: &Path, image_dir: &Path) -> Tree {
    // The kernel's view of a plain image of the source with digests: the same
    // tree with the fingerprint xattrs, checked against the source itself first.
    let image = image_dir.join("plain.img");
    let args = common(&[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ours(&a, &image, src, 1);
    let plain = mounted(&image, &[]);
    let mut bare = plain.clone();
    for e in bare.entries.values_mut() {
        e.xattrs
            .retain(|(n, _)| !n.windows(11).any(|w| w == b"fingerprint"));
    }
    assert_same(
        "plain",
        "ishare",
        &bare,
        "source",
        &snapshot(src),
        &CompareOpts::ALL,
    );
    plain
}

#[test]
fn chunks_are_deduplicated_and_zeros_are_holes() {
    require_root();
    // File-backed mounts (device=) need a file system with read_folio: not tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let want = source_tree(&src, dir.path());
    let chunked = &["chunked_file"][..];
    let mut sizes = Vec::new();
    for (name, args) in [
        ("chunk4k", &["--chunksize=4096"][..]),
        (
            "chunk16k-indexes",
            &["--chunksize=16384", "-Eforce-chunk-indexes"],
        ),
        ("dedupe-no-z", &["-Ededupe"]),
        ("chunk4k-nodedupe", &["--chunksize=4096", "-E^dedupe"]),
        // (Not `--dsunit`: mkfs.erofs 1.9.4 fails on this tree with it, "failed to
        // append the remaining ... chunk data", when the blob ends in alignment.)
    ] {
        let case = Case {
            args,
            features: chunked,
            nsec_lost: false,
            blobdev: false,
        };
        sizes.push(check(dir.path(), &src, &want, name, &case));
    }
    // Deduplication saves at least the copy of `a`, the repeats, and the zeros
    // (64 KiB + 16 KiB) over the same build without it.
    let saved = sizes[3] - sizes[0];
    let least = (100_000 / 4096 * 4096) + 7 * 4096 + 80 * 1024;
    assert!(
        saved >= least as u64,
        "dedupe saved {saved} bytes, expected {least}"
    );
    // Sparse ranges are holes even without deduplication: the 1 MiB sparse file and
    // the hole of `holey` take no blocks, so the image is smaller than its data.
    let data: u64 = snapshot(&src)
        .entries
        .values()
        .filter_map(|e| e.content.map(|(n, _)| n))
        .sum();
    assert!(
        sizes[3] < data,
        "no holes: image {} for {data} bytes of data",
        sizes[3]
    );
}

#[test]
fn blob_device_holds_the_chunks() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let want = source_tree(&src, dir.path());
    for (name, args) in [
        ("blob4k", &["--chunksize=4096"][..]),
        ("blob64k", &["--chunksize=65536", "-E^dedupe"]),
    ] {
        let case = Case {
            args,
            features: &["chunked_file", "device_table"],
            nsec_lost: false,
            blobdev: true,
        };
        check(dir.path(), &src, &want, name, &case);
        // The image itself holds metadata only.
        let image = dir.path().join(format!("{name}.ours1.img"));
        let blob = dir.path().join(format!("{name}.ours1.blob"));
        assert!(
            len(&image) * 4 < len(&blob),
            "{name}: image {} bytes, blob {}",
            len(&image),
            len(&blob)
        );
    }
}

/// The chunk blob and the 48-bit layout with the metadata placement options (`-m`,
/// `--MZ`): the blob goes before the metabox, a blob device maps after it.
#[test]
fn chunks_with_metabox_and_metadata_zone() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let want = source_tree(&src, dir.path());
    for (name, args, blobdev, features) in [
        (
            "metabox-chunk4k",
            &["-m4096", "--chunksize=4096"][..],
            false,
            &["chunked_file", "metabox"][..],
        ),
        (
            "metabox-blobdev",
            &["-m4096", "--chunksize=4096"],
            true,
            &["chunked_file", "metabox", "device_table"],
        ),
        (
            "zone-chunk4k",
            &["--MZ", "--chunksize=4096"],
            false,
            &["chunked_file"],
        ),
        ("zone-48bit", &["--MZ", "-E48bit"], false, &["48bit"]),
    ] {
        let case = Case {
            args,
            features,
            // mkfs.erofs makes metabox and 48-bit inodes compact, without nanoseconds.
            nsec_lost: true,
            blobdev,
        };
        check(dir.path(), &src, &want, name, &case);
    }
}

#[test]
fn wide_layout_and_dot_omitted() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let want = source_tree(&src, dir.path());
    let mut sizes = Vec::new();
    for (name, args) in [
        ("48bit", &["-E48bit"][..]),
        ("48bit-bits", &["--zfeature-bits=64", "-Enoinline_data"]),
        ("48bit-extended", &["-E48bit,force-inode-extended"]),
        ("dot-omitted", &["-Edot-omitted"]),
        ("dot-omitted-bits", &["--zfeature-bits=128"]),
        ("48bit-chunks", &["-E48bit", "--chunksize=4096"]),
    ] {
        let case = Case {
            args,
            features: &["48bit"],
            nsec_lost: !name.ends_with("extended"),
            blobdev: false,
        };
        sizes.push(check(dir.path(), &src, &want, name, &case));
    }
    // The fully sparse 1 MiB file takes no blocks in the 48-bit layout.
    let plain = len(&dir.path().join("plain.img"));
    assert!(
        sizes[0] + (1 << 20) <= plain,
        "48bit {} plain {plain}",
        sizes[0]
    );
    // Without ".", the root directory is one entry (12 bytes and a name byte) shorter.
    let root_size = |name: &str| {
        let m = ErofsMount::new(&dir.path().join(format!("{name}.ours1.img")), &[]);
        std::fs::metadata(m.path()).unwrap().len()
    };
    assert_eq!(root_size("48bit") - root_size("dot-omitted"), 13);
}

/// Compressed files in the 48-bit layout: extent records instead of lcluster indexes
/// (not for inline tails), and with zstd byte-aligned pclusters of a whole pcluster
/// of input each; the same in metabox images (which have the 48-bit feature), also
/// with `-E48bit`.
#[test]
fn compressed_wide_layout() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let want = source_tree(&src, dir.path());
    for (name, args, features) in [
        ("48bit-lz4hc", &["-zlz4hc", "-E48bit"][..], &["48bit"][..]),
        (
            "dot-omitted-lz4hc-fragments",
            &["-zlz4hc", "-Edot-omitted,fragments"],
            &["48bit", "fragments"],
        ),
        (
            "48bit-lz4hc-dedupe",
            &["-zlz4hc", "-E48bit,dedupe"],
            &["48bit"],
        ),
        (
            "48bit-lz4hc-ztailpacking",
            &["-zlz4hc", "-E48bit,ztailpacking"],
            &["48bit", "ztailpacking"],
        ),
        (
            "48bit-lzma-c16-fragments-dedupe",
            &["-zlzma", "-C16384", "-E48bit,fragments,dedupe"],
            &["48bit", "fragments"],
        ),
        ("48bit-zstd", &["-zzstd", "-E48bit"], &["48bit"]),
        (
            "dot-omitted-zstd-c16-fragments",
            &["-zzstd", "-C16384", "-Edot-omitted,fragments"],
            &["48bit", "fragments"],
        ),
        (
            "48bit-libdeflate-fragments",
            &["-zlibdeflate", "-E48bit,fragments"],
            &["48bit", "fragments"],
        ),
        // Dedupe keeps zstd's pclusters block-aligned here (mkfs.erofs's are not).
        (
            "48bit-zstd-dedupe",
            &["-zzstd", "-E48bit,dedupe"],
            &["48bit"],
        ),
        // Metabox images have the 48-bit feature: their files get extent records
        // (and zstd byte-aligned pclusters) without -E48bit too.
        ("metabox-zstd", &["-m4096", "-zzstd"], &["48bit", "metabox"]),
        (
            "metabox-zstd-c16-fragments",
            &["-m4096", "-zzstd", "-C16384", "-Efragments"],
            &["48bit", "metabox", "fragments"],
        ),
        (
            "metabox-lz4hc-fragments",
            &["-m4096", "-zlz4hc", "-Efragments"],
            &["48bit", "metabox", "fragments"],
        ),
        // With the 48-bit layout's compact inodes and epoch too.
        (
            "metabox-48bit",
            &["-m4096", "-E48bit"],
            &["48bit", "metabox"],
        ),
        (
            "metabox-48bit-lz4hc",
            &["-m4096", "-zlz4hc", "-E48bit"],
            &["48bit", "metabox"],
        ),
        (
            "metabox-dot-omitted-zstd-fragments",
            &["-m4096", "-zzstd", "-C16384", "-Edot-omitted,fragments"],
            &["48bit", "metabox", "fragments"],
        ),
    ] {
        let case = Case {
            args,
            features,
            nsec_lost: true,
            blobdev: false,
        };
        check(dir.path(), &src, &want, name, &case);
    }
}

#[test]
fn fragment_deduplication_modes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    // Files ending the same way (the whole of `a` as their tail) and whole copies.
    let f = src.join("frags");
    std::fs::create_dir(&f).unwrap();
    let tail = noise(7, 3000);
    for i in 0..12u8 {
        let mut d = noise(u64::from(i) + 10, 4096 * usize::from(i % 3));
        d.extend(&tail);
        std::fs::write(f.join(format!("t{i}")), &d).unwrap();
    }
    let t = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(T0 as u64 + 9, 0));
    for p in [f.clone(), src.clone()] {
        File::open(&p).unwrap().set_times(t).unwrap();
    }
    for i in 0..12 {
        File::open(f.join(format!("t{i}")))
            .unwrap()
            .set_times(t)
            .unwrap();
    }
    let want = source_tree(&src, dir.path());
    let mut sizes = Vec::new();
    for (name, args) in [
        (
            "fragdedupe-full",
            &["-zlz4hc", "-Efragments,fragdedupe=full"][..],
        ),
        (
            "fragdedupe-inode",
            &["-zlz4hc", "-Efragments,fragdedupe=inode"],
        ),
        ("fragdedupe-off", &["-zlz4hc", "-Efragments,^fragdedupe"]),
        // Bits 2 (fragments) and 5 (fragdedupe).
        ("fragdedupe-bits", &["-zlz4hc", "--zfeature-bits=36"]),
        // Byte-aligned pclusters (48-bit layout): the data before a matched end is
        // cut a pcluster of input at a time.
        ("fragdedupe-zstd-48bit", &["-zzstd", "-E48bit,fragments"]),
        (
            "fragdedupe-zstd-c16-48bit",
            &["-zzstd", "-C16384", "-E48bit,fragments"],
        ),
    ] {
        let case = Case {
            args,
            features: &["fragments"],
            // Compact inodes in the 48-bit layout.
            nsec_lost: name.ends_with("48bit"),
            blobdev: false,
        };
        sizes.push(check(dir.path(), &src, &want, name, &case));
    }
    // Without fragment deduplication each of the 12 tails is stored.
    assert!(
        sizes[2] > sizes[0],
        "^fragdedupe {} vs fragdedupe {}",
        sizes[2],
        sizes[0]
    );
}

#[test]
fn refused_combinations() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    let tarball = dir.path().join("t.tar");
    run(Command::new(ishare_testkit::tools::host_tool("tar"))
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tarball)
        .arg("."));
    // The device table holds the tar of an index, or the blob, not both.
    let out = Command::new(env!("CARGO_BIN_EXE_ishare"))
        .args(["mkfs", "--tar=i", "--chunksize=4096", "--blobdev=b"])
        .arg(dir.path().join("x.img"))
        .arg(&tarball)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--blobdev cannot"),
        "{err}"
    );
    // A block map lists files stored whole in image blocks, not chunk-based ones.
    let map = format!("--tar=i,{}", dir.path().join("map").display());
    for extra in ["--chunksize=4096", "-Ededupe"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ishare"))
            .args(["mkfs", &map, extra])
            .arg(dir.path().join("x.img"))
            .arg(&tarball)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("block map"),
            "{extra}: {err}"
        );
    }
    for (args, want) in [
        (&["--blobdev=b"][..], "--chunksize"),
        (
            &["--blobdev=b", "--chunksize=4096", "-Eforce-inode-blockmap"],
            "block map",
        ),
        (&["-E48bit=1"], "48bit=1"),
        (&["-Edot-omitted=1"], "dot-omitted=1"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ishare"))
            .arg("mkfs")
            .args(args)
            .arg(dir.path().join("x.img"))
            .arg(&src)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Rebuild mode (an EROFS image as SOURCE): the layers' files keep their own
    // chunking, no blob is made of them.
    let layer = dir.path().join("layer.img");
    run(Command::new(env!("CARGO_BIN_EXE_ishare"))
        .args(["mkfs", "--quiet", "-Enoinline_data"])
        .arg(&layer)
        .arg(&src));
    for args in [
        &["--chunksize=4096"][..],
        &["--chunksize=4096", "--blobdev=b"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ishare"))
            .arg("mkfs")
            .args(args)
            .arg(dir.path().join("merged.img"))
            .arg(&layer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("do not apply to rebuild mode"),
            "{args:?}: {err}"
        );
        assert!(!dir.path().join("merged.img").exists());
    }
}
