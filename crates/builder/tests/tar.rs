//! Tar input (`build_tar`, `ishare mkfs --tar=f`).
//!
//! 1. A layer tarball made by GNU tar (`--format=gnu` and `--format=pax`, with
//!    xattrs) from the generated tree, uncompressed, gzip, zstd and xz, through a
//!    file, a FIFO and standard input, gives an image byte-identical to the image of
//!    the directory GNU tar extracts from it, with the same options and any
//!    worker count. (The extraction, not the original tree, is the reference:
//!    `--format=gnu` keeps whole seconds only and tar skips sockets.)
//! 2. The host kernel's mount of our image of that tarball equals its mount of
//!    `mkfs.erofs --tar=f` 1.9.4's image, and so does a hand-made archive of edge
//!    cases (no root entry, implicit parents, entries replacing earlier ones, hard
//!    links, PAX and GNU long names, binary PAX xattrs, global headers).
//! 3. `--aufs` whiteouts, checked through the kernel mount and through overlayfs.
//! 4. Hostile, corrupt and truncated archives fail with a message naming the entry
//!    and the byte offset, and leave no image.
//!
//! Needs root, GNU tar, gzip, zstd, xz and erofs-utils 1.9.4
//! (`scripts/install-deps.sh`).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ishare_builder::{BuildOptions, TarInput, TimePolicy, build, build_tar};
use ishare_erofs::Image;
use ishare_testkit::mounts::{LoopMount, Tmpfs};
use ishare_testkit::rng::pseudo_random;
use ishare_testkit::snapshot::{CompareOpts, Tree, snapshot};
use ishare_testkit::tools::{fsck_194, host_tool, mkfs_194, require_root, try_run as run};
use ishare_testkit::tree::{BlockTree, T0, block_tree};

/// Differences of two snapshots, every field and link count compared.
fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    ishare_testkit::diff(a, b, &CompareOpts::ALL)
}

fn options(bs: u32, time: TimePolicy, workers: usize) -> BuildOptions {
    BuildOptions {
        block_size: bs,
        build_time: T0 as u64,
        time_policy: time,
        uuid: [9; 16],
        label: b"tar-test".to_vec(),
        workers,
        ..BuildOptions::default()
    }
}

/// The options of most tests: 4 KiB blocks, times kept, 2 workers.
fn opts() -> BuildOptions {
    options(4096, TimePolicy::Keep, 2)
}

fn gnu_tar() -> Command {
    Command::new(host_tool("tar"))
}

/// Writes the 4 KiB block-size tree into `dir/src` and returns that path.
fn source(dir: &Path, large_ids: bool) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    block_tree(&BlockTree {
        block_size: 4096,
        large_ids,
    })
    .write(&src, false);
    src
}

/// `tar ARGS -C SRC -cf TARBALL .`
fn archive(args: &[&str], src: &Path, tarball: &Path) {
    run(gnu_tar()
        .args(args)
        .arg("-C")
        .arg(src)
        .arg("-cf")
        .arg(tarball)
        .arg("."))
    .unwrap();
}

/// Compresses `src` with `tool args` into `dst`.
fn compress(tool: &str, args: &[&str], src: &Path, dst: &Path) {
    let out = std::fs::File::create(dst).unwrap();
    run(Command::new(host_tool(tool))
        .args(args)
        .arg(src)
        .stdout(out))
    .unwrap();
}

/// The archive `tar` compressed every way: (label, path).
fn variants(tar: &Path) -> Vec<(&'static str, PathBuf)> {
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", tar.display()));
    compress("gzip", &["-c", "-6"], tar, &with("gz"));
    compress("zstd", &["-q", "-c", "-3"], tar, &with("zst"));
    compress("xz", &["-c", "-1", "-T1"], tar, &with("xz"));
    vec![
        ("uncompressed", tar.to_path_buf()),
        ("gzip", with("gz")),
        ("zstd", with("zst")),
        ("xz", with("xz")),
    ]
}

/// Adds paths longer than ustar can hold even with its prefix field.
fn add_long_paths(src: &Path) {
    let d = src.join("deep/a/b").join("d".repeat(120));
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("f".repeat(150)), pseudo_random(b"long path", 7000)).unwrap();
    std::os::unix::fs::symlink("t".repeat(3000), d.join("s".repeat(200))).unwrap();
    // Directory times last (creating entries changed them).
    for p in [d.clone(), src.join("deep/a/b")] {
        let t = std::fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(T0 as u64 + 77));
        std::fs::File::open(&p).unwrap().set_times(t).unwrap();
    }
}

/// The extraction holds what makes the comparison meaningful.
fn check_extraction(ext: &Tree, format: &str) {
    let get = |p: &str| {
        ext.get(p.as_bytes())
            .unwrap_or_else(|| panic!("[{format}] {p} is missing from the extraction"))
    };
    let bin = get("files/f_b")
        .xattrs
        .iter()
        .find(|(k, _)| k == b"trusted.bin")
        .map(|(_, v)| v.clone());
    assert_eq!(
        bin,
        Some((0..=255).collect::<Vec<u8>>()),
        "[{format}] binary xattr"
    );
    assert_eq!(get("links/max").target.as_ref().map(Vec::len), Some(4095));
    assert_eq!(ext.link_group(b"links/hl2"), b"files/hl");
    assert!(get("dev/big").rdev.is_some_and(|r| r != 0));
    assert_eq!(get("files/f_2b+3").uid, 70_000);
    let long = format!("many/{}", "L".repeat(255));
    get(&long);
    assert!(
        ext.keys().any(|k| k.len() > 256),
        "[{format}] no path over 256 bytes"
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (1) and the first half of (2).
#[test]
fn tarball_equals_extracted_directory() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path(), true);
    add_long_paths(&src);
    let mut failures = Vec::new();
    for format in ["gnu", "pax"] {
        let tarball = tmp.path().join(format!("layer-{format}.tar"));
        let fmt = format!("--format={format}");
        let args = [&fmt, "--xattrs", "--xattrs-include=*", "--numeric-owner"];
        archive(&args, &src, &tarball);
        let ext = tmp.path().join(format!("ext-{format}"));
        std::fs::create_dir(&ext).unwrap();
        run(gnu_tar()
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&ext))
        .unwrap();
        check_extraction(&snapshot(&ext), format);
        let variants = variants(&tarball);
        // The second configuration copies data with copy_file_range from the
        // archive's ranges (nothing to hash) and has no inline tails.
        for (bs, time, plain) in [
            (4096, TimePolicy::Keep, false),
            (512, TimePolicy::Fixed, true),
        ] {
            let opts = |workers| BuildOptions {
                fingerprint: options(bs, time, 1).fingerprint.filter(|_| !plain),
                inline_data: !plain,
                ..options(bs, time, workers)
            };
            let dir_img = tmp.path().join("dir.img");
            build(&ext, &dir_img, &opts(4)).unwrap();
            let want = read(&dir_img);
            for (label, path) in &variants {
                let img = tmp.path().join("tar.img");
                let res = build_tar(&TarInput::Path(path.clone()), &img, &opts(1));
                let tag = format!("[{format} {label} bs={bs} {time:?} plain={plain}]");
                match res {
                    Err(e) => failures.push(format!("{tag} build: {e}")),
                    Ok(_) if read(&img) != want => failures.push(format!(
                        "{tag} the image differs from the extracted directory's"
                    )),
                    Ok(_) => {}
                }
                let _ = std::fs::remove_file(&img);
            }
        }
        if format == "pax"
            && let Err(e) = same_as_mkfs_erofs(&tarball, tmp.path(), &[])
        {
            failures.push(format!("[{format}] against mkfs.erofs --tar=f: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Our image of `tarball` and mkfs.erofs 1.9.4's, through the kernel: the same
/// tree, the same fingerprints; mkfs.erofs also accepts ours with fsck.
fn same_as_mkfs_erofs(tarball: &Path, tmp: &Path, extra: &[&str]) -> Result<(), String> {
    let ours = tmp.join("ours.img");
    let theirs = tmp.join("theirs.img");
    let mut o = opts();
    o.aufs = extra.contains(&"--aufs");
    build_tar(&TarInput::Path(tarball.to_path_buf()), &ours, &o).map_err(|e| e.to_string())?;
    run(Command::new(mkfs_194())
        .args(["--quiet", "--tar=f", "--xattr-inode-digest", "--mkfs-time"])
        .arg(format!("-T{T0}"))
        .args(["-Uclear"])
        .args(extra)
        .arg(&theirs)
        .arg(tarball))?;
    run(Command::new(fsck_194())
        .arg("--xattr-inode-digest")
        .arg(&ours))?;
    let snap = |img: &Path| -> Result<Tree, String> {
        let m = LoopMount::new(img)?;
        Ok(snapshot(m.path()))
    };
    let (a, mut b) = (snap(&ours)?, snap(&theirs)?);
    // mkfs.erofs 1.9.4 stores an xattr twice in one inode when a directory's entry
    // comes twice in the archive with the same xattr; we store it once.
    for e in b.values_mut() {
        e.xattrs.dedup();
    }
    let d = diff(&b, &a);
    if !d.is_empty() {
        return Err(format!(
            "mounts differ (\"source\" = mkfs.erofs, \"image\" = ours):\n{}",
            d.join("\n")
        ));
    }
    let (ia, ib) = (
        Image::open(&ours).map_err(|e| e.to_string())?,
        Image::open(&theirs).map_err(|e| e.to_string())?,
    );
    let mut compared = 0;
    for (path, e) in &a {
        if e.content.is_none_or(|c| c.0 == 0) {
            continue;
        }
        let p = [b"/".as_slice(), path].concat();
        let fa = ia.lookup_path(&p).and_then(|i| ia.fingerprint(&i));
        let fb = ib.lookup_path(&p).and_then(|i| ib.fingerprint(&i));
        let (fa, fb) = (
            fa.map_err(|e| e.to_string())?,
            fb.map_err(|e| e.to_string())?,
        );
        if fa.is_none() || fa != fb {
            return Err(format!(
                "{}: fingerprint {fa:?}, mkfs.erofs {fb:?}",
                String::from_utf8_lossy(path)
            ));
        }
        compared += 1;
    }
    if compared == 0 {
        return Err("no fingerprints compared".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hand-made archives
// ---------------------------------------------------------------------------------------

/// Writes tar archives byte by byte, so tests control every field.
#[derive(Default)]
struct TarW(Vec<u8>);

#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    mtime: u64,
}

const META: Meta = Meta {
    mode: 0o644,
    uid: 0,
    mtime: T0 as u64,
};

impl TarW {
    #[allow(clippy::too_many_arguments)]
    fn header(&mut self, name: &[u8], flag: u8, m: Meta, size: u64, link: &[u8], dev: (u32, u32)) {
        let mut h = [0u8; 512];
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}", w = len - 1);
            h[at..at + len - 1].copy_from_slice(s.as_bytes());
        };
        h[..name.len()].copy_from_slice(name);
        octal(&mut h, 100, 8, u64::from(m.mode));
        octal(&mut h, 108, 8, u64::from(m.uid));
        octal(&mut h, 116, 8, u64::from(m.uid));
        octal(&mut h, 124, 12, size);
        octal(&mut h, 136, 12, m.mtime);
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h, 329, 8, u64::from(dev.0));
        octal(&mut h, 337, 8, u64::from(dev.1));
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn data(&mut self, d: &[u8]) {
        self.0.extend_from_slice(d);
        let n = self.0.len().next_multiple_of(512);
        self.0.resize(n, 0);
    }

    fn file(&mut self, name: &[u8], m: Meta, content: &[u8]) {
        self.header(name, b'0', m, content.len() as u64, b"", (0, 0));
        self.data(content);
    }

    fn dir(&mut self, name: &[u8], m: Meta) {
        self.header(name, b'5', m, 0, b"", (0, 0));
    }

    fn link(&mut self, name: &[u8], flag: u8, target: &[u8]) {
        self.header(
            name,
            flag,
            Meta {
                mode: 0o777,
                ..META
            },
            0,
            target,
            (0, 0),
        );
    }

    /// A PAX header (`x` local, `g` global) with these records.
    fn pax(&mut self, flag: u8, records: &[(&[u8], &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = [b" ", *k, b"=", *v, b"\n"].concat();
            let mut len = rest.len() + 1;
            while rest.len() + len.to_string().len() != len {
                len = rest.len() + len.to_string().len();
            }
            body.extend_from_slice(len.to_string().as_bytes());
            body.extend_from_slice(&rest);
        }
        self.header(b"PaxHeaders/x", flag, META, body.len() as u64, b"", (0, 0));
        self.data(&body);
    }

    /// A GNU long name (`L`) or long link name (`K`).
    fn gnu_long(&mut self, flag: u8, name: &[u8]) {
        let body = [name, b"\0"].concat();
        self.header(b"././@LongLink", flag, META, body.len() as u64, b"", (0, 0));
        self.data(&body);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

/// (2) Edge cases, as mkfs.erofs --tar=f builds them.
#[test]
fn edge_cases_match_mkfs_erofs() {
    require_root();
    let tmp = Tmpfs::new();
    let at = |s: u64| Meta {
        mtime: T0 as u64 + s,
        ..META
    };
    let mut w = TarW::default();
    w.pax(
        b'g',
        &[
            (b"comment", b"made by the test"),
            (b"SCHILY.xattr.trusted.global", b"g"),
        ],
    );
    // No root entry: the root is 0777, owned by root, with the build time; a and
    // a/b are created from it.
    w.file(b"a/b/f", at(1), b"one");
    w.dir(
        b"./a/",
        Meta {
            mode: 0o750,
            uid: 5,
            mtime: T0 as u64 + 5,
        },
    );
    // a/c is created from a as it is now.
    w.file(b"a/c/g", at(2), b"g");
    // Later entries replace earlier ones.
    w.file(b"x", at(3), b"first");
    w.file(b"x", at(4), b"second");
    w.dir(b"d/", at(5));
    w.file(b"d/sub/h", at(6), b"h");
    w.file(b"d", at(7), b"now a file");
    w.dir(
        b"e/",
        Meta {
            mode: 0o700,
            ..at(8)
        },
    );
    w.file(b"e/k", at(9), b"k");
    w.dir(
        b"e",
        Meta {
            mode: 0o711,
            ..at(10)
        },
    );
    w.file(b"h1", at(11), b"linked");
    w.link(b"h2", b'1', b"h1");
    w.link(b"./h3", b'1', b"/h1");
    w.file(b"h1", at(12), b"replaced");
    w.file(b"y", at(13), b"y");
    w.link(b"y", b'2', b"a/b/f");
    w.file(b"./z/../zz", at(14), b"zz");
    w.file(b"//dbl//slash", at(15), b"s");
    w.header(
        b"dev/null",
        b'3',
        Meta {
            mode: 0o666,
            ..META
        },
        0,
        b"",
        (1, 3),
    );
    w.header(b"dev/sda", b'4', META, 0, b"", (8, 1));
    w.header(b"dev/fifo", b'6', META, 0, b"", (0, 0));
    // PAX: long path, fractional mtime, binary xattr with a newline, owner.
    let long = [b"p/".as_slice(), &[b'q'; 200], b"/", &[b'r'; 250]].concat();
    w.pax(
        b'x',
        &[
            (b"path", &long),
            (b"mtime", b"1700000005.123456789"),
            (b"SCHILY.xattr.user.bin", b"a\nb=c\x00\xff"),
            (b"SCHILY.xattr.trusted.t", b""),
            (b"uid", b"70000"),
            (b"gid", b"4000000000"),
        ],
    );
    w.file(b"ignored-name", at(16), b"pax");
    // GNU long name and long link name.
    let gl = [b"gnu/".as_slice(), &[b'n'; 150]].concat();
    let target = vec![b't'; 300];
    w.gnu_long(b'L', &gl);
    w.gnu_long(b'K', &target);
    w.link(b"ignored", b'2', b"ignored");
    let tarball = tmp.path().join("edge.tar");
    std::fs::write(&tarball, w.finish()).unwrap();

    // Spot checks of our image.
    let img = tmp.path().join("edge.img");
    build_tar(&TarInput::Path(tarball.clone()), &img, &opts()).unwrap();
    let mnt = LoopMount::new(&img).unwrap();
    let t = snapshot(mnt.path());
    drop(mnt);
    let e = |p: &str| {
        t.get(p.as_bytes())
            .unwrap_or_else(|| panic!("{p} missing: {:?}", t.keys().collect::<Vec<_>>()))
    };
    assert_eq!((e("").mode(), e("").mtime), (0o40777, (T0, 0)));
    assert_eq!((e("a").mode(), e("a").uid), (0o40750, 5));
    assert_eq!((e("a/b").mode(), e("a/b").mtime), (0o40777, (T0, 0)));
    assert_eq!(
        (e("a/c").mode(), e("a/c").uid, e("a/c").mtime),
        (0o40755, 5, (T0 + 5, 0))
    );
    assert_eq!(e("x").content.unwrap().0, 6);
    assert_eq!(e("d").mode() & 0o170000, 0o100000);
    assert!(!t.contains_key(&b"d/sub/h"[..]));
    assert_eq!(e("e").mode(), 0o40711);
    assert!(t.contains_key(&b"e/k"[..]));
    assert_eq!(t.link_group(b"h2"), b"h2");
    assert_eq!(t.link_group(b"h3"), b"h2");
    assert_eq!(e("h2").nlink, 2);
    assert_eq!(e("h2").content.unwrap().0, 6); // "linked"
    assert_eq!(e("h1").content.unwrap().0, 8); // "replaced"
    assert_eq!(e("y").target.as_deref(), Some(&b"a/b/f"[..]));
    assert!(e("z").mode() & 0o040000 != 0, "z/.. makes z");
    e("zz");
    e("dbl/slash");
    let p = e(std::str::from_utf8(&long).unwrap());
    assert_eq!(
        (p.uid, p.gid, p.mtime),
        (70_000, 4_000_000_000, (T0 + 5, 123_456_789))
    );
    assert!(
        p.xattrs
            .contains(&(b"user.bin".to_vec(), b"a\nb=c\x00\xff".to_vec()))
    );
    assert!(
        p.xattrs
            .contains(&(b"trusted.global".to_vec(), b"g".to_vec()))
    );
    let g = e(std::str::from_utf8(&gl).unwrap());
    assert_eq!(g.target.as_deref(), Some(target.as_slice()));
    assert_eq!(e("dev/sda").rdev, Some(rustix::fs::makedev(8, 1)));

    same_as_mkfs_erofs(&tarball, tmp.path(), &[]).unwrap();
}

/// (3) `--aufs`.
#[test]
fn aufs_whiteouts() {
    require_root();
    let tmp = Tmpfs::new();
    let layer = tmp.path().join("layer");
    for d in ["w", "o", "o/sub"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::write(layer.join("w/keep"), b"keep").unwrap();
    std::fs::write(layer.join("w/.wh.gone"), b"").unwrap();
    std::fs::write(layer.join(".wh.top"), b"").unwrap();
    std::fs::write(layer.join("o/.wh..wh..opq"), b"").unwrap();
    std::fs::write(layer.join("o/new"), b"new").unwrap();
    let tarball = tmp.path().join("layer.tar");
    archive(&["--format=pax"], &layer, &tarball);

    // Without --aufs the names stay as they are.
    let img = tmp.path().join("plain.img");
    build_tar(&TarInput::Path(tarball.clone()), &img, &opts()).unwrap();
    {
        let m = LoopMount::new(&img).unwrap();
        assert!(m.path().join("w/.wh.gone").is_file());
    }

    let img = tmp.path().join("aufs.img");
    let o = BuildOptions {
        aufs: true,
        ..opts()
    };
    build_tar(&TarInput::Path(tarball.clone()), &img, &o).unwrap();
    let m = LoopMount::new(&img).unwrap();
    let t = snapshot(m.path());
    assert!(
        !t.keys().any(|k| k.windows(4).any(|w| w == b".wh.")),
        "whiteout names left: {:?}",
        t.keys().collect::<Vec<_>>()
    );
    for p in ["w/gone", "top"] {
        let md = std::fs::symlink_metadata(m.path().join(p)).unwrap();
        assert!(md.file_type().is_char_device(), "{p}");
        assert_eq!((md.rdev(), md.mode()), (0, 0o20000), "{p}");
    }
    let x = |p: &str| t[p.as_bytes()].xattrs.clone();
    let origin = (b"trusted.overlay.origin".to_vec(), Vec::new());
    assert!(x("w").contains(&origin), "{:?}", x("w"));
    assert!(x("").contains(&origin), "{:?}", x(""));
    assert!(x("o").contains(&(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())));
    assert!(x("o/sub").is_empty());

    // What overlayfs makes of it, over a lower layer.
    let base = tmp.path().join("base");
    for d in ["w", "o/old-dir"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    for f in ["w/gone", "w/stay", "o/old", "top"] {
        std::fs::write(base.join(f), f).unwrap();
    }
    let ovl = tmp.subdir("ovl");
    let opts = format!("lowerdir={}:{}", m.path().display(), base.display());
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&ovl))
    .unwrap();
    let exists = |p: &str| std::fs::symlink_metadata(ovl.join(p)).is_ok();
    let seen = [
        ("w/gone", exists("w/gone")),
        ("top", exists("top")),
        ("o/old", exists("o/old")),
        ("o/old-dir", exists("o/old-dir")),
        ("w/stay", exists("w/stay")),
        ("w/keep", exists("w/keep")),
        ("o/new", exists("o/new")),
    ];
    let _ = Command::new("umount").arg(&ovl).status();
    assert_eq!(
        seen,
        [
            ("w/gone", false),
            ("top", false),
            ("o/old", false),
            ("o/old-dir", false),
            ("w/stay", true),
            ("w/keep", true),
            ("o/new", true),
        ]
    );
    drop(m);
    same_as_mkfs_erofs(&tarball, tmp.path(), &["--aufs"]).unwrap();
}

// ---------------------------------------------------------------------------------------
// Pipes and standard input
// ---------------------------------------------------------------------------------------

const STDIN_IMAGE_ENV: &str = "ISHARE_TAR_TEST_STDIN_IMAGE";

/// Not a test on its own: `fifo_and_stdin` runs this test binary again with
/// `STDIN_IMAGE_ENV` set and an archive on standard input.
#[test]
fn stdin_child() {
    let Some(img) = std::env::var_os(STDIN_IMAGE_ENV) else {
        return;
    };
    let o = opts();
    if let Err(e) = build_tar(&TarInput::Stdin, Path::new(&img), &o) {
        eprintln!("ERROR: {e}");
        std::process::exit(3);
    }
}

/// Runs `stdin_child` with `data` written to its standard input through a pipe.
fn via_stdin(img: &Path, data: Vec<u8>) -> Result<(), String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["stdin_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(STDIN_IMAGE_ENV, img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // The child may fail early and close the pipe.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && !text.contains("ERROR") {
        Ok(())
    } else {
        Err(text)
    }
}

#[test]
fn fifo_and_stdin() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path(), false);
    let tarball = tmp.path().join("layer.tar");
    archive(
        &["--format=pax", "--xattrs", "--xattrs-include=*"],
        &src,
        &tarball,
    );
    let o = opts();
    let reference = tmp.path().join("ref.img");
    build_tar(&TarInput::Path(tarball.clone()), &reference, &o).unwrap();
    let want = read(&reference);

    for (label, path) in variants(&tarball) {
        // Standard input, a pipe.
        let img = tmp.path().join(format!("stdin-{label}.img"));
        via_stdin(&img, read(&path)).unwrap_or_else(|e| panic!("[stdin {label}] {e}"));
        assert!(read(&img) == want, "[stdin {label}] the image differs");
        // A FIFO given by path.
        let fifo = tmp.path().join(format!("fifo-{label}"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (f2, data) = (fifo.clone(), read(&path));
        let writer = std::thread::spawn(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(f2)
                .unwrap()
                .write_all(&data)
                .unwrap();
        });
        let img = tmp.path().join(format!("fifo-{label}.img"));
        build_tar(&TarInput::Path(fifo), &img, &o).unwrap();
        writer.join().unwrap();
        assert!(read(&img) == want, "[fifo {label}] the image differs");
    }

    // A truncated stream on standard input: an error naming it, no image.
    let gz = read(&PathBuf::from(format!("{}.gz", tarball.display())));
    let img = tmp.path().join("stdin-bad.img");
    let e = via_stdin(&img, gz[..gz.len() / 2].to_vec()).unwrap_err();
    assert!(e.contains("<stdin>") && e.contains("entry \""), "{e}");
    assert!(!img.exists());
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// (4) Every failure names the entry (or the place after the last good one) and the
/// byte offset, and leaves a previous image untouched and no temporary file.
#[test]
fn hostile_and_truncated_archives() {
    require_root();
    let tmp = Tmpfs::new();
    let out = tmp.subdir("out");
    let img = out.join("x.img");
    std::fs::write(&img, b"old image").unwrap();

    let one = |name: &[u8]| {
        let mut w = TarW::default();
        w.file(name, META, b"data");
        w.finish()
    };
    let mut two = TarW::default();
    two.file(b"ok", META, &[1; 100]);
    let second = two.0.len();
    two.file(b"big", META, &[2; 5000]);
    let two = two.finish();
    let with_pax_path = |p: &[u8]| {
        let mut w = TarW::default();
        w.pax(b'x', &[(b"path", p)]);
        w.file(b"short", META, b"x");
        w.finish()
    };
    let mut bad_sum = two.clone();
    bad_sum[second + 10] ^= 1;
    let mut through_file = TarW::default();
    through_file.file(b"f", META, b"f");
    through_file.file(b"f/x", META, b"x");
    let mut hardlink = TarW::default();
    hardlink.link(b"h", b'1', b"nope");
    let mut sparse = TarW::default();
    sparse.header(b"sp", b'S', META, 0, b"", (0, 0));
    let mut long_target = TarW::default();
    long_target.gnu_long(b'K', &[b'a'; 5000]);
    long_target.link(b"sym", b'2', b"x");
    let mut pax_only = TarW::default();
    pax_only.pax(b'x', &[(b"path", b"lonely")]);

    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "dotdot",
            one(b"../x"),
            vec!["\"../x\"", "escapes", "byte 0"],
        ),
        (
            "abs-dotdot",
            one(b"/abs/../../x"),
            vec!["\"/abs/../../x\"", "escapes"],
        ),
        (
            "nul",
            with_pax_path(b"a\0b"),
            vec!["\"a\\0b\"", "NUL", "byte 1024"],
        ),
        (
            "name-256",
            with_pax_path(&[b"d/".as_slice(), &[b'n'; 256]].concat()),
            vec!["256 bytes", "at most 255"],
        ),
        (
            "truncated-data",
            two[..second + 512 + 1000].to_vec(),
            vec!["entry \"big\"", "byte 1024", "1000 of 5000", "truncated"],
        ),
        (
            "truncated-header",
            two[..second + 100].to_vec(),
            vec!["after entry \"ok\"", "inside a header", "truncated"],
        ),
        (
            "no-end-marker",
            two[..two.len() - 1024].to_vec(),
            vec!["after entry \"big\"", "end-of-archive", "truncated"],
        ),
        (
            "bad-checksum",
            bad_sum,
            vec!["at byte 1024", "after entry \"ok\"", "checksum"],
        ),
        (
            "through-file",
            through_file.finish(),
            vec!["entry \"f/x\"", "\"f\" is a regular file"],
        ),
        (
            "hardlink",
            hardlink.finish(),
            vec!["entry \"h\"", "\"nope\""],
        ),
        ("sparse", sparse.finish(), vec!["entry \"sp\"", "sparse"]),
        (
            "long-target",
            long_target.finish(),
            vec!["entry \"sym\"", "5000 bytes", "1 to 4095"],
        ),
        (
            "pax-without-entry",
            pax_only.finish(),
            vec!["at byte 0", "not followed by the entry"],
        ),
        ("empty", Vec::new(), vec!["is empty"]),
        ("not-tar", vec![b'x'; 4096], vec!["not a tar archive"]),
        (
            "bzip2",
            b"BZh91AY&SY junk".to_vec(),
            vec!["bzip2", "not supported"],
        ),
    ];
    let mut failures = Vec::new();
    let o = opts();
    let mut check = |label: &str, path: &Path, want: &[&str]| match build_tar(
        &TarInput::Path(path.to_path_buf()),
        &img,
        &o,
    ) {
        Ok(_) => failures.push(format!("[{label}] built an image")),
        Err(e) => {
            let m = e.to_string();
            eprintln!("[{label}] {m}");
            if !want.iter().all(|w| m.contains(w)) || !m.contains(&*path.to_string_lossy()) {
                failures.push(format!("[{label}] {m:?} lacks one of {want:?} or the path"));
            }
        }
    };
    for (label, bytes, want) in &cases {
        let p = tmp.path().join(format!("{label}.tar"));
        std::fs::write(&p, bytes).unwrap();
        check(label, &p, want);
    }

    // Truncated and corrupt compressed streams of a real layer.
    let src = source(tmp.path(), false);
    let tarball = tmp.path().join("layer.tar");
    archive(&["--format=gnu"], &src, &tarball);
    for (label, path) in variants(&tarball).into_iter().skip(1) {
        let data = read(&path);
        let cut = tmp.path().join(format!("cut.{label}"));
        std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
        check(
            &format!("{label} cut in half"),
            &cut,
            &["entry \"", "decompressed stream"],
        );
        // Only the compressed stream's end is missing, not the archive's.
        std::fs::write(&cut, &data[..data.len() - 4]).unwrap();
        check(
            &format!("{label} without its last 4 bytes"),
            &cut,
            &[
                "after the end of the archive",
                "corrupt or truncated compressed data",
            ],
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(read(&img), b"old image");
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "files left behind: {left:?}");
}

/// Set to `TARBALL:IMAGE` in the child that `deep_path_memory_is_linear` starts.
const DEEP_ENV: &str = "ISHARE_TAR_TEST_DEEP";

/// A PAX archive of one file, `c/` × `depth` + `leaf`, holding `leaf-data`.
fn deep_archive(depth: usize) -> Vec<u8> {
    let path = [b"c/".repeat(depth), b"leaf".to_vec()].concat();
    let mut w = TarW::default();
    w.pax(b'x', &[(b"path", &path)]);
    w.file(b"short", META, b"leaf-data");
    w.finish()
}

/// Not a test on its own: `deep_path_memory_is_linear` runs this test binary again
/// with `DEEP_ENV` set; it builds the image and prints its own peak RSS, which then
/// measures the build alone, not the other tests running in the parent.
#[test]
fn deep_child() {
    let Some(arg) = std::env::var(DEEP_ENV).ok() else {
        return;
    };
    let (tarball, img) = arg.split_once(':').unwrap();
    if let Err(e) = build_tar(&TarInput::Path(tarball.into()), Path::new(img), &opts()) {
        eprintln!("ERROR: {e}");
        std::process::exit(3);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    println!("PEAK_KB {}", hwm.split_whitespace().nth(1).unwrap());
}

/// Builds the image of `deep_archive(depth)` in a child process; its peak RSS in KiB.
fn deep_build(dir: &Path, depth: usize) -> u64 {
    let tarball = dir.join(format!("deep{depth}.tar"));
    let img = dir.join(format!("deep{depth}.img"));
    std::fs::write(&tarball, deep_archive(depth)).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["deep_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(DEEP_ENV, format!("{}:{}", tarball.display(), img.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "depth {depth}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The test harness may print its own words on the same line.
    let kb = text
        .split_once("PEAK_KB ")
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no PEAK_KB in {text:?}"))
        .parse()
        .unwrap();

    // The image holds the leaf at full depth, read back through our reader.
    let image = Image::open(&img).unwrap();
    let path = [b"c/".repeat(depth), b"leaf".to_vec()].concat();
    let leaf = image.lookup_path(&path).unwrap();
    assert_eq!(image.read_to_vec(&leaf).unwrap(), b"leaf-data");
    let mid = image.lookup_path(&b"c/".repeat(depth / 2)).unwrap();
    assert!(mid.is_dir());
    kb
}

/// One PAX entry 20,000 directories deep (a 51 KB archive) once took 800 MB: each
/// implied parent kept its whole path. The memory must grow linearly with the depth.
#[test]
fn deep_path_memory_is_linear() {
    let tmp = tempfile::tempdir().unwrap();
    let at_20k = deep_build(tmp.path(), 20_000);
    eprintln!("depth 20000: peak RSS {at_20k} KiB");
    assert!(at_20k < 200 << 10, "depth 20000 took {at_20k} KiB");
    let at_40k = deep_build(tmp.path(), 40_000);
    eprintln!("depth 40000: peak RSS {at_40k} KiB");
    assert!(
        at_40k < 3 * at_20k,
        "twice the depth took {at_40k} KiB against {at_20k} KiB"
    );
}

/// mkfs.erofs 1.9.4 refuses (ENOTDIR) every entry that names the root and is not a
/// directory: a regular file `/`, `./`, `.` or PAX path `///` (which the trailing
/// slash convention would otherwise read as directories), symlinks, hard links and
/// devices. A directory entry naming the root sets the root's metadata.
#[test]
fn entries_naming_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("root.img");
    let o = opts();
    let count = std::cell::Cell::new(0);
    let build = |bytes: Vec<u8>| {
        count.set(count.get() + 1);
        let p = tmp.path().join(format!("case{}.tar", count.get()));
        std::fs::write(&p, bytes).unwrap();
        build_tar(&TarInput::Path(p.clone()), &img, &o).map_err(|e| (p, e.to_string()))
    };
    let one = |f: &dyn Fn(&mut TarW)| {
        let mut w = TarW::default();
        w.file(b"a", META, b"a");
        f(&mut w);
        w.finish()
    };
    let m0 = Meta { mode: 0, ..META };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("file /", one(&|w| w.file(b"/", m0, b"x")), "\"/\""),
        ("file ./", one(&|w| w.file(b"./", m0, b"x")), "\"./\""),
        ("file .", one(&|w| w.file(b".", m0, b"x")), "\".\""),
        (
            "pax file ///",
            one(&|w| {
                w.pax(b'x', &[(b"path", b"///")]);
                w.file(b"x", m0, b"x");
            }),
            "\"///\"",
        ),
        ("symlink ./", one(&|w| w.link(b"./", b'2', b"a")), "\"./\""),
        ("hard link .", one(&|w| w.link(b".", b'1', b"a")), "\".\""),
        (
            "fifo /",
            one(&|w| w.header(b"/", b'6', m0, 0, b"", (0, 0))),
            "\"/\"",
        ),
    ];
    let mut failures = Vec::new();
    for (label, bytes, entry) in cases {
        match build(bytes) {
            Ok(_) => failures.push(format!("[{label}] built an image")),
            Err((p, m)) => {
                eprintln!("[{label}] {m}");
                let want = [&*p.to_string_lossy(), &format!("entry {entry}"), "root"];
                if !want.iter().all(|w| m.contains(w)) {
                    failures.push(format!("[{label}] {m:?} lacks one of {want:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A directory entry naming the root is its metadata.
    for name in [&b"./"[..], b"/", b"."] {
        let mut w = TarW::default();
        w.dir(
            name,
            Meta {
                mode: 0o700,
                ..META
            },
        );
        w.file(b"f", META, b"f");
        build(w.finish()).unwrap();
        let root = Image::open(&img).unwrap().root().unwrap();
        assert_eq!(
            root.mode & 0o7777,
            0o700,
            "{:?}",
            String::from_utf8_lossy(name)
        );
        assert!(root.is_dir());
    }
}
