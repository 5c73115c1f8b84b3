//! Oracle tests of the image builder. For every block size and each set of options,
//! an image is built from a generated tree on a tmpfs, and
//!
//! 1. the host kernel's loop mount of it equals the source (contents, mode, owner,
//!    mtime with nanoseconds, symlink targets, xattrs with values, hard-link groups,
//!    device numbers),
//! 2. fsck.erofs 1.9.4 (with `--xattr-inode-digest` when there are fingerprints)
//!    accepts it, and bookworm's fsck.erofs 1.5 too when the image has no long xattr
//!    prefixes and 4 KiB blocks (1.5 refuses INCOMPAT_XATTR_PREFIXES, "unidentified
//!    incompatible feature 40", and other block sizes, "blksize 512 isn't supported
//!    on this platform"),
//! 3. our reader's full check with fingerprint verification passes,
//! 4. fingerprints equal those `mkfs.erofs --xattr-inode-digest` 1.9.4 writes.
//!
//! `reproducible` checks that thread count and directory listing order do not change
//! a single byte, and `errors` the failure paths. Needs root and erofs-utils
//! (`scripts/install-deps.sh`).

use std::path::Path;
use std::process::Command;

use ishare_builder::{BuildOptions, InodeVersion, TimePolicy, build};
use ishare_erofs::{CheckOptions, DataLayout, Image};
use ishare_testkit::mounts::{BindMount, LoopMount, Tmpfs};
use ishare_testkit::snapshot::{CompareOpts, Tree, snapshot};
use ishare_testkit::tools::{fsck_15, fsck_194, mkfs_194, require_root, try_run as run};
use ishare_testkit::tree::{BlockTree, T0, block_tree};
use sha2::{Digest, Sha256};

/// Differences of two snapshots, every field and link count compared.
fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    ishare_testkit::diff(a, b, &CompareOpts::ALL)
}

struct Config {
    name: &'static str,
    apply: fn(&mut BuildOptions, u32),
}

const CONFIGS: &[Config] = &[
    Config {
        name: "default",
        apply: |_, _| {},
    },
    Config {
        name: "noinline_data",
        apply: |o, _| o.inline_data = false,
    },
    Config {
        name: "force-inode-compact",
        apply: |o, _| {
            o.inode_version = InodeVersion::Compact;
            o.force_uid = Some(0);
            o.force_gid = Some(0);
        },
    },
    Config {
        name: "force-inode-extended",
        apply: |o, _| o.inode_version = InodeVersion::Extended,
    },
    Config {
        name: "chunksize-blockmap",
        apply: |o, bs| o.chunk_size = Some(u64::from(bs) * 4),
    },
    Config {
        name: "force-chunk-indexes",
        apply: |o, bs| {
            o.chunk_size = Some(u64::from(bs));
            o.chunk_indexes = true;
        },
    },
    Config {
        name: "xattr-name-filter+prefix+visible-fingerprint",
        apply: |o, _| {
            o.xattr_name_filter = true;
            o.xattr_prefixes = vec![b"user.ishare.long.".to_vec()];
            o.fingerprint = Some(b"trusted.ishare.fp".to_vec());
        },
    },
    Config {
        name: "nosbcrc+all-shared",
        apply: |o, _| {
            o.sb_checksum = false;
            o.xattr_tolerance = 0;
        },
    },
    Config {
        name: "no-xattrs",
        apply: |o, _| o.xattr_tolerance = -1,
    },
    Config {
        name: "no-fingerprints",
        apply: |o, _| o.fingerprint = None,
    },
];

fn base_options(bs: u32) -> BuildOptions {
    BuildOptions {
        block_size: bs,
        build_time: T0 as u64,
        time_policy: TimePolicy::Keep,
        uuid: [7; 16],
        label: b"ishare-test".to_vec(),
        workers: 2,
        ..BuildOptions::default()
    }
}

/// What the kernel should show for `src` built with `o`.
fn expected(src: &Tree, o: &BuildOptions) -> Tree {
    let mut t = src.clone();
    for e in t.values_mut() {
        if o.xattr_tolerance < 0 {
            e.xattrs.clear();
        }
        if let Some(u) = o.force_uid {
            e.uid = u;
        }
        if let Some(g) = o.force_gid {
            e.gid = g;
        }
        if o.inode_version == InodeVersion::Compact {
            e.mtime = (o.build_time as i64, 0);
        }
    }
    t
}

/// Removes a visible fingerprint xattr from the mount's snapshot after checking it.
fn strip_visible_fingerprint(t: &mut Tree, name: &[u8]) -> Result<(), String> {
    for (path, e) in t.iter_mut() {
        let fp = e.xattrs.iter().position(|(k, _)| k == name);
        let want = e
            .content
            .filter(|c| c.0 > 0)
            .map(|(_, d)| [b"sha256:".as_slice(), &d].concat());
        let got = fp.map(|i| e.xattrs.remove(i).1);
        if got != want {
            return Err(format!(
                "{}: visible fingerprint {got:?}, expected {want:?}",
                String::from_utf8_lossy(path)
            ));
        }
    }
    Ok(())
}

fn check_image(img: &Path, src: &Tree, o: &BuildOptions) -> Result<(), String> {
    // (1) the kernel's view equals the source
    let mnt = LoopMount::new(img)?;
    let mut got = snapshot(mnt.path());
    drop(mnt);
    if let Some(name) = &o.fingerprint
        && [&b"user."[..], b"trusted.", b"security."]
            .iter()
            .any(|p| name.starts_with(p))
    {
        strip_visible_fingerprint(&mut got, name)?;
    }
    let d = diff(&expected(src, o), &got);
    if !d.is_empty() {
        return Err(format!(
            "kernel mount differs from the source:\n{}",
            d.join("\n")
        ));
    }
    // (2) fsck.erofs
    let mut fsck = Command::new(fsck_194());
    if o.fingerprint.is_some() {
        fsck.arg("--xattr-inode-digest");
    }
    run(fsck.arg(img))?;
    // fsck.erofs 1.5 supports only the page size as block size.
    if o.fingerprint.is_none() && o.xattr_prefixes.is_empty() && o.block_size == 4096 {
        run(Command::new(fsck_15()).arg(img))?;
    }
    // (3) our reader
    let image = Image::open(img).map_err(|e| e.to_string())?;
    let opts = CheckOptions {
        verify_fingerprints: true,
        ..Default::default()
    };
    let r = image
        .check(&opts)
        .map_err(|e| format!("Image::check: {e}"))?;
    let nonempty = src
        .iter()
        .filter(|(k, e)| e.content.is_some_and(|c| c.0 > 0) && src.link_group(k) == k.as_slice())
        .count() as u64;
    let want_fp = if o.fingerprint.is_some() { nonempty } else { 0 };
    if r.fingerprints_verified != want_fp || r.fingerprints_missing != 0 {
        return Err(format!(
            "{} fingerprints verified, {} missing; expected {want_fp} and 0",
            r.fingerprints_verified, r.fingerprints_missing
        ));
    }
    check_layout(&image, o).map_err(|e| format!("layout: {e}"))?;
    Ok(())
}

/// Spot checks of the choices a careful mkfs makes.
fn check_layout(img: &Image, o: &BuildOptions) -> Result<(), String> {
    let ino = |p: &str| {
        img.lookup_path(p.as_bytes())
            .map_err(|e| format!("{p}: {e}"))
    };
    let f1 = ino("/files/f_1")?;
    let fb = ino("/files/f_b")?;
    let big = ino("/files/f_big")?;
    let want_f1 = if o.inline_data {
        DataLayout::FlatInline
    } else {
        DataLayout::FlatPlain
    };
    let chunked = o.chunk_size.is_some();
    if !chunked && f1.layout != want_f1 {
        return Err(format!("f_1 is {:?}, expected {want_f1:?}", f1.layout));
    }
    if !chunked && fb.layout != DataLayout::FlatPlain {
        return Err(format!("f_b is {:?}, expected FlatPlain", fb.layout));
    }
    if chunked && big.layout != DataLayout::ChunkBased {
        return Err(format!("f_big is {:?}, expected ChunkBased", big.layout));
    }
    // A directory's tail is inlined when it fits.
    let links = ino("/links")?;
    if links.layout != DataLayout::FlatInline {
        return Err(format!("/links is {:?}, expected FlatInline", links.layout));
    }
    let short = ino("/links/short")?;
    if short.layout != DataLayout::FlatInline {
        return Err(format!("fast symlink is {:?}", short.layout));
    }
    // Compact where it fits (mtime == build time, small owner), extended otherwise.
    let compact_ok = ino("/files/f_0")?;
    let needs_ext = ino("/files/f_1")?; // mtime differs from the build time
    match o.inode_version {
        InodeVersion::Auto => {
            if compact_ok.extended || !needs_ext.extended {
                return Err("compact/extended choice is wrong".into());
            }
        }
        InodeVersion::Compact => {
            if needs_ext.extended {
                return Err("force-inode-compact left an extended inode".into());
            }
        }
        InodeVersion::Extended => {
            if !compact_ok.extended {
                return Err("force-inode-extended left a compact inode".into());
            }
        }
    }
    // Shared xattrs for xattrs carried by more than `tolerance` inodes.
    if o.xattr_tolerance >= 0 {
        let xs = img.xattrs(&compact_ok).map_err(|e| e.to_string())?;
        let common = xs.iter().find(|x| x.name == b"user.common");
        if common.is_none_or(|x| !x.shared) {
            return Err(format!("user.common is not shared: {xs:?}"));
        }
        let one = img.xattrs(&f1).map_err(|e| e.to_string())?;
        let v1 = one.iter().find(|x| x.name == b"user.one");
        if v1.is_none_or(|x| x.shared != (o.xattr_tolerance == 0)) {
            return Err(format!("user.one is shared wrongly: {one:?}"));
        }
    }
    if !o.xattr_prefixes.is_empty() {
        let e = ino("/many/entry-000-")?;
        let xs = img.xattrs(&e).map_err(|e| e.to_string())?;
        let tag = xs.iter().find(|x| x.name == b"user.ishare.long.tag");
        if tag.is_none_or(|x| x.long_prefix.is_none()) {
            return Err(format!("--xattr-prefix not used: {xs:?}"));
        }
    }
    let sb = img.superblock();
    if o.xattr_name_filter != sb.has_compat(ishare_erofs::format::FEATURE_COMPAT_XATTR_FILTER) {
        return Err("xattr filter feature bit".into());
    }
    if sb.raw.volume_name[..o.label.len()] != o.label[..] || sb.raw.uuid != o.uuid {
        return Err("label or uuid".into());
    }
    Ok(())
}

/// (4) Our fingerprints equal mkfs.erofs 1.9.4's for every regular file.
fn compare_fingerprints(
    ours: &Path,
    src_dir: &Path,
    src: &Tree,
    bs: u32,
    tmp: &Path,
) -> Result<(), String> {
    let theirs = tmp.join(format!("mkfs-erofs-{bs}.img"));
    run(Command::new(mkfs_194())
        .args(["--quiet", "--xattr-inode-digest", "-T0", "-Uclear"])
        .arg(format!("-b{bs}"))
        .arg(&theirs)
        .arg(src_dir))?;
    let a = Image::open(ours).map_err(|e| e.to_string())?;
    let b = Image::open(&theirs).map_err(|e| e.to_string())?;
    let mut compared = 0;
    for (path, e) in src {
        let Some((size, digest)) = e.content else {
            continue;
        };
        let p = [b"/".as_slice(), path].concat();
        let fa = a
            .lookup_path(&p)
            .and_then(|i| a.fingerprint(&i))
            .map_err(|e| e.to_string())?;
        let fb = b
            .lookup_path(&p)
            .and_then(|i| b.fingerprint(&i))
            .map_err(|e| e.to_string())?;
        let want = (size > 0).then(|| [b"sha256:".as_slice(), &digest].concat());
        if fa != fb || fa != want {
            return Err(format!(
                "{}: ours {fa:?}, mkfs.erofs {fb:?}, expected {want:?}",
                String::from_utf8_lossy(path)
            ));
        }
        compared += 1;
    }
    assert!(compared > 300, "compared only {compared} files");
    Ok(())
}

fn block_size_suite(bs: u32) {
    require_root();
    let tmp = Tmpfs::new();
    let src_dir = tmp.subdir("src");
    let spec = BlockTree {
        block_size: bs as usize,
        large_ids: true,
    };
    block_tree(&spec).write(&src_dir, false);
    let src = snapshot(&src_dir);
    let mut failures = Vec::new();
    for c in CONFIGS {
        let mut o = base_options(bs);
        (c.apply)(&mut o, bs);
        let img = tmp.path().join(format!("{}-{bs}.img", c.name));
        let res = build(&src_dir, &img, &o)
            .map_err(|e| format!("build: {e}"))
            .and_then(|_| check_image(&img, &src, &o))
            .and_then(|_| match c.name {
                "default" => compare_fingerprints(&img, &src_dir, &src, bs, tmp.path()),
                _ => Ok(()),
            });
        if let Err(e) = res {
            failures.push(format!("[{} bs={bs}] {e}", c.name));
        }
        let _ = std::fs::remove_file(&img);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn block_size_512() {
    block_size_suite(512);
}

#[test]
fn block_size_1024() {
    block_size_suite(1024);
}

#[test]
fn block_size_2048() {
    block_size_suite(2048);
}

#[test]
fn block_size_4096() {
    block_size_suite(4096);
}

/// (5) Same tree created in opposite orders, built with 1 and 4 workers: same bytes.
#[test]
fn reproducible() {
    require_root();
    let tmp = Tmpfs::new();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, reverse) in [(&a, false), (&b, true)] {
        std::fs::create_dir(dir).unwrap();
        block_tree(&BlockTree {
            block_size: 4096,
            large_ids: true,
        })
        .write(dir, reverse);
    }
    // The listing orders really differ, or the test proves nothing.
    let list = |d: &Path| -> Vec<_> {
        std::fs::read_dir(d.join("many"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert_ne!(
        list(&a),
        list(&b),
        "tmpfs lists both trees in the same order"
    );
    for bs in [512, 4096] {
        for fixed in [false, true] {
            let mut o1 = base_options(bs);
            o1.xattr_name_filter = true;
            if fixed {
                o1.time_policy = TimePolicy::Fixed;
            }
            let o4 = BuildOptions {
                workers: 4,
                ..o1.clone()
            };
            o1.workers = 1;
            let (ia, ib) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
            build(&a, &ia, &o1).unwrap();
            build(&b, &ib, &o4).unwrap();
            let (da, db) = (std::fs::read(&ia).unwrap(), std::fs::read(&ib).unwrap());
            assert!(da == db, "bs {bs}, fixed time {fixed}: images differ");
            let digest = Sha256::digest(&da);
            eprintln!(
                "bs {bs} fixed {fixed}: {} bytes, sha256 {digest:x}",
                da.len()
            );
        }
    }
}

/// Failures name the path or option and leave no image (and no temporary file).
#[test]
fn errors() {
    require_root();
    let tmp = Tmpfs::new();
    let src = tmp.subdir("src");
    std::fs::write(src.join("ok"), b"fine").unwrap();
    let out = tmp.subdir("out");
    let img = out.join("x.img");
    let msg = |o: &BuildOptions, src: &Path| build(src, &img, o).unwrap_err().to_string();
    let entries = || std::fs::read_dir(&out).unwrap().count();

    for bs in [256, 1000, 8192] {
        let m = msg(&base_options(bs), &src);
        assert!(m.contains("block size"), "{m}");
    }
    let m = msg(&base_options(4096), &tmp.path().join("missing"));
    assert!(m.contains("missing"), "{m}");
    let m = msg(
        &BuildOptions {
            label: b"0123456789abcdef".to_vec(),
            ..base_options(4096)
        },
        &src,
    );
    assert!(m.contains("label"), "{m}");

    // An owner that does not fit a compact inode, with force-inode-compact.
    let big = src.join("bigowner");
    std::fs::write(&big, b"x").unwrap();
    std::os::unix::fs::lchown(&big, Some(100_000), None).unwrap();
    let m = msg(
        &BuildOptions {
            inode_version: InodeVersion::Compact,
            ..base_options(4096)
        },
        &src,
    );
    assert!(m.contains("bigowner") && m.contains("compact"), "{m}");
    std::fs::remove_file(&big).unwrap();

    // A previous image stays untouched by failed builds.
    std::fs::write(&img, b"old image").unwrap();

    // A file that cannot be opened for reading (a write-only sysfs attribute).
    let wo = src.join("write-only");
    std::fs::write(&wo, b"").unwrap();
    {
        let _bind = BindMount::new(Path::new("/sys/bus/pci/rescan"), &wo);
        let m = msg(&base_options(4096), &src);
        assert!(m.contains("write-only") && m.contains("open"), "{m}");
    }
    // A file shorter than it claims (sysfs files say 4096 bytes).
    let short = src.join("short");
    std::fs::write(&short, b"").unwrap();
    {
        let _bind = BindMount::new(
            Path::new("/sys/kernel/mm/transparent_hugepage/enabled"),
            &short,
        );
        let m = msg(&base_options(4096), &src);
        assert!(m.contains("short") && m.contains("changed"), "{m}");
    }
    assert_eq!(std::fs::read(&img).unwrap(), b"old image");
    assert_eq!(entries(), 1, "a temporary file was left behind");
}
