//! Oracle tests for `ishare extract`: for each mkfs.erofs configuration, an image is built from
//! a generated source tree (see `ishare_testkit::tree::TreeSpec::full`) and
//!
//! * `kernel::<config>`: the Linux kernel's own mount of the image equals the source tree,
//!   up to the documented per-configuration exceptions. This does not involve `ishare` and
//!   validates the generator, the comparator and the exceptions.
//! * `extract::<config>`: `ishare extract` of the image equals the kernel mount exactly, and
//!   the source tree up to the same exceptions.
//! * `fsck_all_configs`: fsck.erofs 1.9.4 accepts every image.
//!
//! Needs root and erofs-utils (`scripts/install-deps.sh`). Run part (a) alone with
//! `cargo test -p ishare --test extract_oracle -- kernel::`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{ErofsMount, Tmpfs};
use ishare_testkit::snapshot::{CompareOpts, assert_trees_eq, snapshot};
use ishare_testkit::tools::run;
use ishare_testkit::tree::{SourceTree, TreeSpec};

/// Which mkfs.erofs builds the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mkfs {
    V15,
    V194,
}

/// One mkfs configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    mkfs: Mkfs,
    /// mkfs arguments; `BLOB` is replaced by the path of the extra blob device, whose presence
    /// makes the image need `device=` / `--device`.
    args: &'static [&'static str],
    /// What the kernel mount (and so extraction) may legitimately lose from the source tree.
    /// Found by experiment: see the comments at each configuration.
    exceptions: CompareOpts,
    /// Extra fsck.erofs 1.9.4 arguments.
    fsck_args: &'static [&'static str],
    /// Substrings of `dump.erofs -s` output (whitespace runs collapsed to one space) showing
    /// that the options took effect (mkfs.erofs 1.5 silently ignores unknown -E options).
    dump_expect: &'static [&'static str],
}

const EXACT: CompareOpts = CompareOpts::EXACT;
const NO_MTIME: CompareOpts = CompareOpts {
    ignore_mtime: true,
    ..EXACT
};
const NO_MTIME_NSEC: CompareOpts = CompareOpts {
    ignore_mtime_nsec: true,
    ..EXACT
};

impl Config {
    const fn v194(args: &'static [&'static str]) -> Config {
        Config {
            mkfs: Mkfs::V194,
            args,
            exceptions: EXACT,
            fsck_args: &[],
            dump_expect: &[],
        }
    }

    const fn v15(args: &'static [&'static str]) -> Config {
        Config {
            mkfs: Mkfs::V15,
            ..Config::v194(args)
        }
    }

    const fn except(self, exceptions: CompareOpts) -> Config {
        Config { exceptions, ..self }
    }

    const fn fsck(self, fsck_args: &'static [&'static str]) -> Config {
        Config { fsck_args, ..self }
    }

    const fn dump(self, dump_expect: &'static [&'static str]) -> Config {
        Config {
            dump_expect,
            ..self
        }
    }

    fn uses_blob(&self) -> bool {
        self.args.iter().any(|a| a.contains("BLOB"))
    }

    /// The source tree for this configuration: the full one, minus what the mkfs version or
    /// options cannot store at all (mkfs fails on it rather than losing it).
    fn spec(&self) -> TreeSpec {
        let mut spec = TreeSpec::full();
        if self.mkfs == Mkfs::V15 {
            // mkfs.erofs 1.5 fails on 255-byte names ("Could not format the device :
            // [Error 2] No such file or directory"); 254 bytes work.
            spec.max_name_len = 254;
        }
        if self.args.contains(&"force-inode-compact") {
            // Compact inodes have 16-bit uid/gid: both versions refuse ("file ... cannot be
            // in compact form").
            spec.large_ids = false;
        }
        spec
    }

    /// What the kernel mount should show for source tree `src`, before `exceptions`.
    fn expected(&self, src: &ishare_testkit::snapshot::Tree) -> ishare_testkit::snapshot::Tree {
        let mut t = src.clone();
        if self.mkfs == Mkfs::V194 {
            ishare_testkit::snapshot::add_whiteout_origin_xattrs(&mut t);
        }
        t
    }
}

/// An image built from a freshly generated source tree.
struct Built {
    /// The source tree; kept mounted while the image is in use.
    _src: SourceTree,
    /// The source tree's snapshot, with what mkfs adds (`Config::expected`).
    src_tree: ishare_testkit::snapshot::Tree,
    /// Holds the image and the blob.
    _work: tempfile::TempDir,
    image: PathBuf,
    devices: Vec<PathBuf>,
}

fn build_image(src: &Path, work: &Path, cfg: &Config) -> (PathBuf, Vec<PathBuf>) {
    let image = work.join("image.erofs");
    let blob = work.join("blob.bin");
    let mkfs = match cfg.mkfs {
        Mkfs::V15 => ishare_testkit::tools::mkfs_15(),
        Mkfs::V194 => ishare_testkit::tools::mkfs_194(),
    };
    let mut cmd = Command::new(mkfs);
    for a in cfg.args {
        cmd.arg(a.replace("BLOB", blob.to_str().unwrap()));
    }
    run(cmd.arg(&image).arg(src));
    let devices = if cfg.uses_blob() { vec![blob] } else { vec![] };
    (image, devices)
}

fn build(cfg: &Config) -> Built {
    ishare_testkit::tools::require_root();
    let src = SourceTree::new(&cfg.spec());
    let src_tree = cfg.expected(&snapshot(src.path()));
    let work = tempfile::Builder::new()
        .prefix("ishare-oracle-")
        .tempdir()
        .unwrap();
    let (image, devices) = build_image(src.path(), work.path(), cfg);
    Built {
        _src: src,
        src_tree,
        _work: work,
        image,
        devices,
    }
}

/// Part (a): the kernel mount equals the source tree up to the configuration's exceptions.
fn kernel_matches_source(cfg: &Config) {
    let b = build(cfg);
    let mnt = ErofsMount::new(&b.image, &b.devices);
    let kernel = snapshot(mnt.path());
    assert_trees_eq(
        "expected from source",
        &b.src_tree,
        "kernel mount",
        &kernel,
        &cfg.exceptions,
    );
}

/// Runs `ishare extract` of `image` into `dir`.
fn ishare_extract(image: &Path, devices: &[PathBuf], dir: &Path, extra: &[&str]) {
    let mut cmd = Command::new(ishare_bin!());
    cmd.arg("extract");
    for d in devices {
        cmd.arg("--device").arg(d);
    }
    run(cmd.args(extra).arg(image).arg(dir));
}

/// Part (b): `ishare extract` equals the kernel mount exactly, and the source tree up to the
/// configuration's exceptions.
fn extract_matches_kernel(cfg: &Config) {
    let b = build(cfg);
    let mnt = ErofsMount::new(&b.image, &b.devices);
    let kernel = snapshot(mnt.path());
    let out = Tmpfs::new();
    // A directory that does not exist yet: extract creates it.
    let dir = out.path().join("out");
    ishare_extract(&b.image, &b.devices, &dir, &[]);
    let extracted = snapshot(&dir);
    assert_trees_eq(
        "kernel mount",
        &kernel,
        "ishare extract",
        &extracted,
        &EXACT,
    );
    assert_trees_eq(
        "expected from source",
        &b.src_tree,
        "ishare extract",
        &extracted,
        &cfg.exceptions,
    );
}

// The configurations. Each becomes `kernel::NAME` and `extract::NAME`. Option names were
// checked against `mkfs.erofs --help` and the man page of each version (1.5 has no -b,
// --xattr-prefix, --xattr-inode-digest, -E xattr-name-filter/48bit/dot-omitted; 1.9.4 still
// accepts -E noinline_data, documented there as -E ^inline_data). 1.5 rejects unknown
// long options and -b, but silently ignores unknown -E options.
//
// What the kernel mount differs in from the source tree, found by running the kernel:: tests
// against the full tree (mkfs.erofs 1.9.4 and 1.5, Linux 6.18):
//
// * Every other configuration: nothing, except that 1.9.4 adds an empty
//   `trusted.overlay.origin` xattr to the directory holding a 0:0 character device (see
//   `ishare_testkit::snapshot::add_whiteout_origin_xattrs`; applied to the expected tree in
//   `Config::expected`, so it is checked, not ignored).
// * -E force-inode-compact (both versions): every mtime becomes the build time, e.g.
//   `"": mtime a=1700000000.000000000 b=1795567217.000000000` with 1.9.4, and
//   `b=1795567221.000694410` with 1.5 (which keeps build-time nanoseconds); all 5600+
//   differences were mtimes. Exception: NO_MTIME. (Also no uid/gid > 65535 in that tree:
//   see `Config::spec`.)
// * -E 48bit and -E dot-omitted: mtime nanoseconds are lost on compact inodes, e.g.
//   `"meta/f01": mtime a=2147483648.000000007 b=2147483648.000000000`; seconds are kept.
//   Exception: NO_MTIME_NSEC.
// * mkfs.erofs 1.5 cannot store 255-byte names at all (see `Config::spec`), but
//   otherwise loses nothing: mtimes with nanoseconds (extended inodes), uids up to 4e9,
//   6000-byte xattrs, ACLs and the long symlinks all survive, also with --chunksize.
macro_rules! configs {
    ($($name:ident = $cfg:expr;)*) => {
        const CONFIGS: &[(&str, Config)] = &[$((stringify!($name), $cfg)),*];

        mod kernel {
            use super::*;
            $(#[test] fn $name() { super::kernel_matches_source(&$cfg) })*
        }

        mod extract {
            use super::*;
            $(#[test] fn $name() { super::extract_matches_kernel(&$cfg) })*
        }
    };
}

configs! {
    default = Config::v194(&[]).dump(&["blocksize: 4096"]);
    noinline_data = Config::v194(&["-E", "noinline_data"]);
    chunk_8192 = Config::v194(&["--chunksize=8192"]).dump(&["chunked_file"]);
    chunk_4096 = Config::v194(&["--chunksize=4096"]).dump(&["chunked_file"]);
    inode_compact = Config::v194(&["-E", "force-inode-compact"]).except(NO_MTIME);
    inode_extended = Config::v194(&["-E", "force-inode-extended"]);
    // Beyond the required list: without -E 48bit, 1.9.4 makes every inode whose mtime differs
    // from the build time extended, i.e. all of ours. With 48bit, compact inodes store mtime
    // seconds relative to the superblock epoch (0 here), so every inode with 16-bit ids is
    // compact, and loses its mtime nanoseconds (compact inodes all get the superblock's
    // fixed_nsec, 0). dot-omitted (implies 48bit) also drops the "." dirents.
    e48bit = Config::v194(&["-E", "48bit"])
        .except(NO_MTIME_NSEC)
        .dump(&["48bit"]);
    dot_omitted = Config::v194(&["-E", "dot-omitted"])
        .except(NO_MTIME_NSEC)
        .dump(&["48bit"]);
    chunk_indexes =
        Config::v194(&["-E", "force-chunk-indexes", "--chunksize=4096"]).dump(&["chunked_file"]);
    blobdev = Config::v194(&["--blobdev=BLOB", "--chunksize=4096"])
        .dump(&["chunked_file", "device_table"]);
    b512 = Config::v194(&["-b", "512"]).dump(&["blocksize: 512"]);
    b1024 = Config::v194(&["-b", "1024"]).dump(&["blocksize: 1024"]);
    b2048 = Config::v194(&["-b", "2048"]).dump(&["blocksize: 2048"]);
    b4096 = Config::v194(&["-b", "4096"]).dump(&["blocksize: 4096"]);
    xattr_prefix = Config::v194(&["--xattr-prefix=user.long.prefix."]).dump(&["xattr_prefixes"]);
    xattr_inode_digest = Config::v194(&["--xattr-inode-digest"])
        .fsck(&["--xattr-inode-digest"])
        .dump(&["ishare_xattrs", "xattr_prefixes"]);
    // 1.9.4 sets xattr_filter by default too.
    xattr_name_filter = Config::v194(&["-E", "xattr-name-filter"]).dump(&["xattr_filter"]);
    v15_default = Config::v15(&[]);
    v15_inode_compact = Config::v15(&["-E", "force-inode-compact"]).except(NO_MTIME);
    v15_chunk_4096 = Config::v15(&["--chunksize=4096"]).dump(&["chunked_file"]);
}

/// fsck.erofs 1.9.4 (with `--extract`, which decodes every file) accepts every image, and
/// dump.erofs shows the features the options should have turned on.
#[test]
fn fsck_all_configs() {
    ishare_testkit::tools::require_root();
    let mut failures = Vec::new();
    for (name, cfg) in CONFIGS {
        let src = SourceTree::new(&cfg.spec());
        let work = tempfile::Builder::new()
            .prefix("ishare-fsck-")
            .tempdir()
            .unwrap();
        let (image, devices) = build_image(src.path(), work.path(), cfg);
        let mut cmd = Command::new(ishare_testkit::tools::fsck_194());
        cmd.arg("--extract");
        for d in &devices {
            cmd.arg(format!("--device={}", d.display()));
        }
        let out = ishare_testkit::tools::run_unchecked(cmd.args(cfg.fsck_args).arg(&image));
        if !out.status.success() {
            failures.push(format!(
                "{name}: {cmd:?} failed ({}):\n{}{}",
                out.status,
                ishare_testkit::tools::tail(&out.stdout),
                ishare_testkit::tools::tail(&out.stderr)
            ));
        }
        let mut cmd = Command::new(ishare_testkit::tools::dump_194());
        for d in &devices {
            cmd.arg(format!("--device={}", d.display()));
        }
        let out = run(cmd.arg("-s").arg(&image));
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in cfg.dump_expect {
            if !text.contains(want) {
                failures.push(format!("{name}: dump.erofs -s lacks {want:?}: {text}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `extract` into an existing empty directory (here a tmpfs root) works and gives that
/// directory the image root's metadata; into a non-empty one it fails without --overwrite and
/// leaves the directory alone; with --overwrite, extracting again over a previous extraction
/// gives the same tree.
#[test]
fn extract_existing_dir_and_overwrite() {
    ishare_testkit::tools::require_root();
    let src = SourceTree::new(&TreeSpec::small());
    let work = tempfile::tempdir().unwrap();
    let (image, devices) = build_image(src.path(), work.path(), &Config::v194(&[]));
    let mnt = ErofsMount::new(&image, &devices);
    let kernel = snapshot(mnt.path());

    let out = Tmpfs::new();
    ishare_extract(&image, &devices, out.path(), &[]);
    assert_trees_eq(
        "kernel mount",
        &kernel,
        "extract into empty dir",
        &snapshot(out.path()),
        &EXACT,
    );

    let busy = Tmpfs::new();
    std::fs::write(busy.path().join("stray"), b"keep me").unwrap();
    let before = snapshot(busy.path());
    let res = ishare_testkit::tools::run_unchecked(
        Command::new(ishare_bin!())
            .arg("extract")
            .arg(&image)
            .arg(busy.path()),
    );
    assert!(
        !res.status.success(),
        "extract into a non-empty directory without --overwrite must fail"
    );
    assert_trees_eq(
        "before",
        &before,
        "after refused extract",
        &snapshot(busy.path()),
        &EXACT,
    );

    ishare_extract(&image, &devices, out.path(), &["--overwrite"]);
    assert_trees_eq(
        "kernel mount",
        &kernel,
        "extract --overwrite over itself",
        &snapshot(out.path()),
        &EXACT,
    );
}

/// Sets the mtime of `p` (not following symlinks).
fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// The harness itself: generation is deterministic (two trees compare equal), and the
/// comparator notices a change of each recorded field.
#[test]
fn harness_detects_changes() {
    use rustix::fs::XattrFlags;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};

    ishare_testkit::tools::require_root();
    let a = SourceTree::new(&TreeSpec::small());
    let b = SourceTree::new(&TreeSpec::small());
    let orig = snapshot(a.path());
    assert_trees_eq("tree 1", &orig, "tree 2", &snapshot(b.path()), &EXACT);
    assert!(
        orig.entries.len() > 50,
        "small tree: {}",
        orig.entries.len()
    );
    assert!(!orig.hardlinks.is_empty());

    // Change tree 2 in one field per path, keeping everything else (e.g. a recreated node's
    // mode, owner and mtime) as it was.
    let p = |rel: &str| b.path().join(rel);
    let md = |rel: &str| fs::symlink_metadata(p(rel)).unwrap();

    // Contents: other length; same length with one byte flipped.
    let m = md("files/text");
    fs::write(p("files/text"), b"hello, erofs!").unwrap();
    set_mtime(&p("files/text"), m.mtime(), m.mtime_nsec());
    let m = md("files/big");
    let mut v = fs::read(p("files/big")).unwrap();
    v[4096] ^= 1;
    fs::write(p("files/big"), v).unwrap();
    set_mtime(&p("files/big"), m.mtime(), m.mtime_nsec());
    // Mode (the setuid bit only), gid.
    fs::set_permissions(p("files/dup-1"), fs::Permissions::from_mode(0o4644)).unwrap();
    lchown(p("files/dup-2"), None, Some(12345)).unwrap();
    // An xattr value; a removed xattr.
    rustix::fs::lsetxattr(p("xattr/small"), "user.a", b"2", XattrFlags::empty()).unwrap();
    rustix::fs::lremovexattr(p("xattr/empty-value"), "user.empty").unwrap();
    // A symlink target (same length).
    let m = md("links/short");
    fs::remove_file(p("links/short")).unwrap();
    symlink("targex", p("links/short")).unwrap();
    set_mtime(&p("links/short"), m.mtime(), m.mtime_nsec());
    // A device number.
    let m = md("dev/null");
    fs::remove_file(p("dev/null")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777),
        rustix::fs::makedev(1, 5),
    )
    .unwrap();
    lchown(p("dev/null"), Some(m.uid()), Some(m.gid())).unwrap();
    fs::set_permissions(p("dev/null"), fs::Permissions::from_mode(m.mode())).unwrap();
    set_mtime(&p("dev/null"), m.mtime(), m.mtime_nsec());
    // A hard link broken into two files of equal contents and metadata.
    let m = md("hard/pair-2");
    fs::remove_file(p("hard/pair-2")).unwrap();
    fs::copy(p("hard/pair-1"), p("hard/pair-2")).unwrap();
    lchown(p("hard/pair-2"), Some(m.uid()), Some(m.gid())).unwrap();
    fs::set_permissions(p("hard/pair-2"), fs::Permissions::from_mode(m.mode())).unwrap();
    rustix::fs::lsetxattr(p("hard/pair-2"), "user.linked", b"yes", XattrFlags::empty()).unwrap();
    set_mtime(&p("hard/pair-2"), m.mtime(), m.mtime_nsec());
    // mtime nanoseconds only.
    let m = md("meta/f00");
    set_mtime(
        &p("meta/f00"),
        m.mtime(),
        (m.mtime_nsec() + 1) % 1_000_000_000,
    );
    // A missing entry and an extra one.
    fs::remove_file(p("links/one")).unwrap();
    fs::write(p("extra"), b"").unwrap();

    let changed = snapshot(b.path());
    let text = ishare_testkit::snapshot::diff(&orig, &changed, &EXACT).join("\n");
    for want in [
        "\"files/text\": content",
        "\"files/big\": content",
        "\"files/dup-1\": mode a=0644 b=4644",
        "\"files/dup-2\": uid:gid",
        "\"xattr/small\": xattr \"user.a\" value a=\"1\" b=\"2\"",
        "\"xattr/empty-value\": xattrs",
        "\"links/short\": symlink target",
        "\"dev/null\": rdev a=Some(\"1:3\") b=Some(\"1:5\")",
        "hard links only in a: \"hard/pair-1\" = \"hard/pair-2\"",
        "\"meta/f00\": mtime",
        "\"links/one\": only in a",
        "\"extra\": only in b",
    ] {
        assert!(text.contains(want), "diff lacks {want:?}:\n{text}");
    }
    // Nothing else: the changed paths, plus the mtimes of the directories whose entries
    // were removed or created.
    for line in text.lines() {
        let ok = [
            "\"files/",
            "\"xattr/",
            "\"links/",
            "\"dev/",
            "hard links",
            "\"meta/f00",
            "\"extra",
        ]
        .iter()
        .any(|p| line.starts_with(p))
            || line.contains(": mtime");
        assert!(ok, "unexpected difference {line:?} in:\n{text}");
    }

    // Ignoring nanoseconds hides the meta/f00 change only; ignoring mtimes hides all mtime
    // differences and nothing else.
    let nsec = CompareOpts {
        ignore_mtime_nsec: true,
        ..EXACT
    };
    let text_nsec = ishare_testkit::snapshot::diff(&orig, &changed, &nsec).join("\n");
    assert!(!text_nsec.contains("\"meta/f00\""), "{text_nsec}");
    assert!(text_nsec.contains("\"files/text\": content"), "{text_nsec}");
    let text_nomtime = ishare_testkit::snapshot::diff(&orig, &changed, &NO_MTIME).join("\n");
    assert!(!text_nomtime.contains("mtime"), "{text_nomtime}");
    assert_eq!(
        text_nomtime.lines().count(),
        text.lines().filter(|l| !l.contains(": mtime")).count(),
        "{text_nomtime}"
    );
}

/// An image whose root lists a second ".." entry where the directory `zz` was (its
/// name patched to ".."): `extract` used to skip it like any "..", leaving out the
/// whole subtree and exiting 0 (issue 15, item 7). It must fail and say why, as
/// `fsck` must; the image before the patch extracts with `zz/f`.
#[test]
fn extract_refuses_a_second_dotdot() {
    ishare_testkit::tools::require_root();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("zz")).unwrap();
    std::fs::write(src.join("a"), b"a file\n").unwrap();
    std::fs::write(src.join("zz/f"), b"below zz\n").unwrap();
    let image = work.path().join("image.erofs");
    run(Command::new(ishare_testkit::tools::mkfs_194())
        .args(["-T0", "--quiet"])
        .arg(&image)
        .arg(&src));
    let out = Tmpfs::new();
    ishare_extract(&image, &[], &out.path().join("good"), &[]);
    assert_eq!(
        std::fs::read(out.path().join("good/zz/f")).unwrap(),
        b"below zz\n"
    );

    // The root's names ".", "..", "a", "zz" are stored back to back.
    let mut bytes = std::fs::read(&image).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"...azz")
        .expect("the root's names");
    assert_eq!(
        bytes.windows(6).filter(|w| w == b"...azz").count(),
        1,
        "one match"
    );
    bytes[at + 4..at + 6].copy_from_slice(b"..");
    ishare_testkit::image::fix_checksum(&mut bytes);
    let bad = work.path().join("bad.erofs");
    std::fs::write(&bad, &bytes).unwrap();

    for (what, args) in [
        (
            "extract",
            vec!["extract".into(), bad.clone(), out.path().join("bad")],
        ),
        ("fsck", vec!["fsck".into(), bad.clone()]),
    ] {
        let res = ishare_testkit::tools::run_unchecked(Command::new(ishare_bin!()).args(&args));
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success(),
            "{what} of an image with a second \"..\" succeeded; stderr: {stderr}"
        );
        assert!(
            stderr.contains("second \"..\" entry"),
            "{what}: the error does not say what is wrong: {stderr}"
        );
    }
}
