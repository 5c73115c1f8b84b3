//! `ishare mkfs` with mkfs.erofs 1.9.4's metadata options (issue 13): `-m#[:X]` (inodes in
//! the metabox inode, compressed or not), `--MZ[=<0|[id]>]` (a metadata zone after the
//! data) and `--zD` (compressed directories), against `mkfs.erofs` 1.9.4 with the same options on the same tree. For each
//! configuration:
//!
//! - the host kernel mounts our image and shows exactly the source tree (plus the
//!   fingerprint xattrs, on by default);
//! - `fsck.erofs --xattr-inode-digest` 1.9.4 accepts it (see `Config::fsck_digest` for the
//!   one case where 1.9.4 fails on its own image too), and `ishare fsck
//!   --xattr-inode-digest` verifies every fingerprint; `ishare extract` equals the mount;
//! - `dump.erofs -s` shows the feature bits and fields the options ask for;
//! - the image is at most 1.01 times the size of mkfs.erofs's.
//!
//! Then: byte-identical images for any `--workers`, and the option errors. Needs root and
//! erofs-utils 1.9.4 (scripts/install-deps.sh).

use std::path::Path;
use std::process::Command;

use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{ErofsMount, Tmpfs};
use ishare_testkit::snapshot::{CompareOpts, Tree, assert_trees_eq, snapshot};
use ishare_testkit::tools::{dump_194, fsck_194, mkfs_194, require_root, run, try_run};
use ishare_testkit::tree::{Scale, SourceTree, TreeSpec, compressible, foundation};

const UUID: &str = "6f2c5a4e-8d1b-4c3a-9e7f-0123456789ab";

/// One set of options, given to both mkfs programs.
struct Config {
    args: &'static [&'static str],
    /// Substrings of `dump.erofs -s` (whitespace runs collapsed) our image must show.
    dump: &'static [&'static str],
    /// `fsck.erofs --xattr-inode-digest` 1.9.4 can check the image. It cannot when files
    /// with inline tails live in the metabox: 1.9.4 reads such tails from the wrong place
    /// while hashing and reports "digest MISMATCH" on mkfs.erofs 1.9.4's own image too
    /// (asserted below); the kernel, `fsck.erofs --extract` and `ishare fsck` read them
    /// right.
    fsck_digest: bool,
}

const CONFIGS: &[Config] = &[
    Config {
        args: &["-m4096"],
        dump: &["48bit metabox", "metabox nid"],
        fsck_digest: false,
    },
    Config {
        args: &["-zlz4", "-m4096"],
        dump: &["lz4_0padding", "48bit metabox"],
        fsck_digest: false,
    },
    Config {
        args: &[
            "-zlz4hc",
            "-C16384",
            "-m16384:lzma",
            "-Eztailpacking,fragments",
            "--xattr-prefix=user.long.prefix.",
        ],
        dump: &["compr_cfgs", "fragments", "xattr_prefixes", "48bit metabox"],
        fsck_digest: true,
    },
    Config {
        args: &["-zzstd", "-C16384", "-m8192:0", "--MZ"],
        dump: &["48bit metabox"],
        fsck_digest: false,
    },
    Config {
        args: &["--MZ"],
        dump: &["root nid: 128"],
        fsck_digest: true,
    },
    Config {
        args: &["--MZ=i", "-b1024"],
        dump: &["root nid: 32", "blocksize: 1024"],
        fsck_digest: true,
    },
    Config {
        args: &["-zlz4", "--MZ=id", "-Eztailpacking"],
        dump: &["ztailpacking"],
        fsck_digest: true,
    },
    // `--zD` alone: mkfs.erofs 1.9.4 turns compression of directories on for `--zD`
    // and `--zD=0`, off for `--zD=1` (its help says the opposite); ishare follows the
    // help, so only the bare form means the same to both.
    Config {
        args: &["-zlz4", "--zD"],
        dump: &["fragments"],
        fsck_digest: true,
    },
    Config {
        args: &[
            "-zlzma",
            "-C16384",
            "-Eztailpacking,fragments,dedupe",
            "--zD",
        ],
        dump: &["fragments", "compr_cfgs"],
        fsck_digest: true,
    },
    Config {
        args: &["-zlz4hc", "--zD", "-m4096", "--MZ"],
        dump: &["fragments", "48bit metabox"],
        fsck_digest: false,
    },
];

/// The source tree: one of each kind of entry, and compressible files.
fn source() -> (SourceTree, Tree) {
    let mut tree = foundation(&TreeSpec::small());
    compressible(&mut tree, "zdata", 0x3E7A_B0C5, Scale::Small);
    let src = SourceTree::of(&tree);
    let mut expected = snapshot(src.path());
    ishare_testkit::snapshot::add_whiteout_origin_xattrs(&mut expected);
    (src, expected)
}

/// A snapshot without the fingerprint xattrs (checked by the fsck runs instead).
fn without_fingerprints(mut t: Tree) -> Tree {
    for e in t.entries.values_mut() {
        e.xattrs
            .retain(|(name, _)| !name.ends_with(b"erofs.fingerprint.v1"));
    }
    t
}

fn dump_s_raw(image: &Path) -> String {
    let out = run(Command::new(dump_194()).arg("-s").arg(image));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dump_s(image: &Path) -> String {
    dump_s_raw(image)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn ishare_mkfs(args: &[&str], image: &Path, src: &Path) {
    run(Command::new(ishare_bin!())
        .arg("mkfs")
        .arg("--quiet")
        .args(["-T0", "--mkfs-time", "-U", UUID])
        .args(args)
        .arg(image)
        .arg(src));
}

fn erofs_utils_mkfs(args: &[&str], image: &Path, src: &Path) {
    run(Command::new(mkfs_194())
        .args([
            "--quiet",
            "--xattr-inode-digest",
            "-T0",
            "--mkfs-time",
            "-U",
            UUID,
        ])
        .args(args)
        .arg(image)
        .arg(src));
}

#[test]
fn metadata_options_against_mkfs_erofs() {
    require_root();
    let (src, expected) = source();
    let work = tempfile::tempdir().unwrap();
    let mut figures = Vec::new();
    for cfg in CONFIGS {
        let what = cfg.args.join(" ");
        let ours = work.path().join("ours.erofs");
        let theirs = work.path().join("theirs.erofs");
        ishare_mkfs(cfg.args, &ours, src.path());
        erofs_utils_mkfs(cfg.args, &theirs, src.path());

        let mnt = ErofsMount::new(&ours, &[]);
        let kernel = snapshot(mnt.path());
        assert_trees_eq(
            "source",
            &expected,
            &format!("kernel mount ({what})"),
            &without_fingerprints(kernel.clone()),
            &CompareOpts::EXACT,
        );
        let out = Tmpfs::new();
        let dir = out.path().join("x");
        run(Command::new(ishare_bin!())
            .arg("extract")
            .arg(&ours)
            .arg(&dir));
        assert_trees_eq(
            "kernel mount",
            &kernel,
            &format!("ishare extract ({what})"),
            &snapshot(&dir),
            &CompareOpts::EXACT,
        );
        drop(mnt);

        // fsck.erofs 1.9.4 decodes every file; with digests it also hashes them.
        run(Command::new(fsck_194()).arg("--extract").arg(&ours));
        let digest = |image: &Path| {
            try_run(
                Command::new(fsck_194())
                    .arg("--xattr-inode-digest")
                    .arg(image),
            )
        };
        // Where 1.9.4 cannot check its own image (see `Config::fsck_digest`), ours may
        // fail the same way, and only that way; everywhere else it must pass.
        match (digest(&theirs), digest(&ours)) {
            (Ok(_), Ok(_)) => assert!(cfg.fsck_digest, "{what}: fsck_digest is stale"),
            (Ok(_), Err(e)) => panic!("{what}: fsck.erofs --xattr-inode-digest: {e}"),
            (Err(e), r) => {
                assert!(!cfg.fsck_digest, "{what}: mkfs.erofs's image: {e}");
                assert!(e.contains("digest MISMATCH"), "{what}: {e}");
                if let Err(e) = r {
                    let other = e
                        .lines()
                        .filter(|l| l.starts_with("<E>"))
                        .filter(|l| !l.contains("digest MISMATCH") && !l.contains("Found some"))
                        .collect::<Vec<_>>();
                    assert!(other.is_empty(), "{what}: {e}");
                }
            }
        }
        let out = run(Command::new(ishare_bin!())
            .args(["fsck", "--xattr-inode-digest", "--json"])
            .arg(&ours));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let verified = v["fingerprints_verified"].as_u64().unwrap_or(0);
        assert!(
            verified > 20 && v["fingerprints_missing"].as_u64() == Some(0),
            "{what}: ishare fsck: {v}"
        );

        let shown = dump_s(&ours);
        for want in cfg.dump {
            assert!(
                shown.contains(want),
                "{what}: dump.erofs -s lacks {want:?}: {shown}"
            );
        }
        // The same layout choices as mkfs.erofs: a metabox, or a zone after the data.
        let theirs_shown = dump_s(&theirs);
        for key in ["metabox", "48bit"] {
            assert_eq!(
                shown.contains(key),
                theirs_shown.contains(key),
                "{what}: {key:?} differs from mkfs.erofs: {shown} / {theirs_shown}"
            );
        }

        let (a, b) = (
            std::fs::metadata(&ours).unwrap().len(),
            std::fs::metadata(&theirs).unwrap().len(),
        );
        figures.push(format!("{what}: {a} vs {b} ({:.4})", a as f64 / b as f64));
        assert!(
            a as f64 <= b as f64 * 1.01,
            "{what}: {a} bytes, mkfs.erofs {b} (more than 1.01 times)"
        );
    }
    println!(
        "sizes (ishare vs mkfs.erofs 1.9.4):\n{}",
        figures.join("\n")
    );
}

/// The metadata zone really follows the data, and a metabox image's inodes really
/// are in the metabox (NIDs with bit 63), as our reader sees them.
#[test]
fn placement_is_what_was_asked() {
    require_root();
    let (src, _) = source();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("mz.erofs");
    ishare_mkfs(&["--MZ"], &img, src.path());
    let i = ishare_erofs::Image::open(&img).unwrap();
    let sb = i.superblock();
    assert!(sb.meta_blkaddr > 0, "the zone starts after the data");
    let root = i.root().unwrap();
    // Every file's data lies before the zone; directory blocks after it.
    for e in i.read_dir(&root).unwrap() {
        let ino = i.inode(e.nid).unwrap();
        if let Some(b) = ino.start_block() {
            if ino.is_dir() {
                assert!(b > sb.meta_blkaddr, "{e:?}: directory block in the zone");
            } else {
                assert!(b <= sb.meta_blkaddr, "{e:?}: file data before the zone");
            }
        }
        assert!(ino.location() >= sb.meta_blkaddr * 4096);
    }
    let img = work.path().join("m.erofs");
    ishare_mkfs(&["-zlz4", "-m4096"], &img, src.path());
    let i = ishare_erofs::Image::open(&img).unwrap();
    let sb = i.superblock();
    assert_ne!(sb.root_nid >> 63, 0);
    let mb = i.inode(sb.metabox_nid.unwrap()).unwrap();
    assert!(mb.layout.is_compressed(), "the metabox is compressed");
    for e in i.read_dir(&i.root().unwrap()).unwrap() {
        assert_ne!(e.nid >> 63, 0, "{e:?} lives in the metabox");
    }
    // Inode numbers as the kernel shows them (`ishare mount` reports these).
    {
        use std::os::unix::fs::MetadataExt;
        let mnt = ErofsMount::new(&img, &[]);
        for e in i.read_dir(&i.root().unwrap()).unwrap() {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let p = if e.is_dot_or_dotdot() {
                mnt.path().to_path_buf()
            } else {
                mnt.path().join(&name)
            };
            let ino = std::fs::symlink_metadata(&p).unwrap().ino();
            assert_eq!(i.ino_of(e.nid), ino, "{name}: inode number");
            assert_eq!(i.nid_of(ino), e.nid, "{name}: back to the NID");
        }
    }
    // `ishare dump -s` names the metabox inode as dump.erofs does.
    let ours = run(Command::new(ishare_bin!()).args(["dump", "-s"]).arg(&img));
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Filesystem metabox nid:"))
            .map(|l| l.split_whitespace().last().unwrap().to_owned())
    };
    let nid = line(&String::from_utf8_lossy(&ours.stdout));
    assert_eq!(nid, Some(sb.metabox_nid.unwrap().to_string()));
    assert_eq!(nid, line(&dump_s_raw(&img)), "ishare dump and dump.erofs");
    let img = work.path().join("zd.erofs");
    ishare_mkfs(&["-zlz4", "--zD"], &img, src.path());
    let i = ishare_erofs::Image::open(&img).unwrap();
    let root = i.root().unwrap();
    assert!(
        root.layout.is_compressed(),
        "the root directory is compressed"
    );
    assert_eq!(
        root.compressed_blocks(),
        Some(0),
        "its data is in the packed inode"
    );
    let img = work.path().join("zd0.erofs");
    ishare_mkfs(&["-zlz4", "--zD=0"], &img, src.path());
    let i = ishare_erofs::Image::open(&img).unwrap();
    assert!(!i.root().unwrap().layout.is_compressed(), "--zD=0 is off");
}

/// The same image whatever the number of workers.
#[test]
fn reproducible_for_any_workers() {
    require_root();
    let (src, _) = source();
    let work = tempfile::tempdir().unwrap();
    for args in [
        &["-zlz4hc", "-m4096", "-Efragments,ztailpacking", "--zD"][..],
        &["-m4096", "--MZ"][..],
    ] {
        let mut images = Vec::new();
        for w in ["1", "2", "5"] {
            let img = work.path().join(format!("w{w}.erofs"));
            let mut a = args.to_vec();
            let workers = format!("--workers={w}");
            a.push(&workers);
            ishare_mkfs(&a, &img, src.path());
            images.push(std::fs::read(&img).unwrap());
        }
        assert!(
            images.windows(2).all(|w| w[0] == w[1]),
            "{args:?}: images differ between worker counts"
        );
    }
}

/// Bad values of -m, --MZ and --zD: a clear error naming the option, no image.
#[test]
fn option_errors() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("bad.erofs");
    for (args, want) in [
        (&["--tar=i", "-m4096"][..], "--tar=i"),
        (&["-m0"][..], "-m 0"),
        (&["-mx"][..], "-m x"),
        (&["-m1000"][..], "multiple of the block size"),
        (&["-zlz4", "-m8192"][..], "exceeds the largest pcluster"),
        (&["-zlz4", "-m4096:2"][..], "no algorithm 2"),
        (&["-m4096:bogus"][..], "bogus"),
        (&["--MZ=x"][..], "--MZ=x"),
        (&["--MZ=d"][..], "with the inodes"),
        (&["--zD"][..], "need compression (-z)"),
        (&["-zlz4", "--zD=2"][..], "--zD=2"),
    ] {
        // A tar for --tar=i: an empty archive (zero blocks).
        let tar = work.path().join("empty.tar");
        std::fs::write(&tar, vec![0u8; 10240]).unwrap();
        let source = if args.contains(&"--tar=i") {
            tar.as_path()
        } else {
            work.path()
        };
        let out = Command::new(ishare_bin!())
            .arg("mkfs")
            .args(args)
            .arg(&img)
            .arg(source)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!img.exists(), "{args:?} left an image");
    }
}

/// `ishare mount` serves a metabox image with compressed directories exactly as the
/// kernel mounts it, inode numbers included (the kernel's `erofs_nid_to_ino64`), with
/// and without page cache sharing.
#[test]
fn ishare_mount_serves_metabox_images() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    require_root();
    let (src, _) = source();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("m.erofs");
    ishare_mkfs(
        &["-zlz4hc", "-m4096", "--zD", "-Eztailpacking"],
        &img,
        src.path(),
    );
    let kmnt = ErofsMount::new(&img, &[]);
    let kernel = snapshot(kmnt.path());
    let store = tempfile::tempdir().unwrap();
    for opts in [
        "ro".to_string(),
        format!(
            "inode_share,domain_id=metabox-test,store={}",
            store.path().display()
        ),
    ] {
        let m = ishare_testkit::mounts::ishare_mount(&ishare_bin!(), &img, &opts);
        assert_trees_eq(
            "kernel mount",
            &kernel,
            &format!("ishare mount -o {opts}"),
            &snapshot(m.path()),
            &CompareOpts::ALL,
        );
        for rel in kernel.entries.keys() {
            let rel = std::ffi::OsStr::from_bytes(rel);
            let ino = |root: &Path| std::fs::symlink_metadata(root.join(rel)).unwrap().ino();
            assert_eq!(
                ino(m.path()),
                ino(kmnt.path()),
                "{rel:?}: inode number through ishare mount -o {opts}\n{}",
                m.log_text()
            );
        }
    }
}
