//! `--file-contexts` (SELinux labels from a file_contexts file) against erofs-utils
//! 1.9.4's `mkfs.erofs` built with libselinux (scripts/install-deps.sh): the same
//! source and file_contexts through both, and the host kernel must show the same
//! `security.selinux` on every entry (and the same everything else), for the rules
//! libselinux applies: exact paths beating regexes, the last matching regex winning,
//! file type qualifiers, `<<none>>`, the `^...$` anchoring of a top-level `|`, stems,
//! the `.local` and `.subs` companions, `--mount-point`. The expected labels of some
//! entries are also spelled out, so that two tools agreeing on nothing would fail.
//! Tar input keeps its own labels (mkfs.erofs only labels directory input). Malformed
//! files are refused with an error naming the file and line. Needs root and
//! erofs-utils 1.9.4.

use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_testkit::mounts::{LoopMount, Tmpfs};
use ishare_testkit::snapshot::{CompareOpts, Kind, Tree, snapshot};
use ishare_testkit::tools::{fsck_194, host_tool, mkfs_194, require_root, try_run};
use ishare_testkit::tree::{BASE, BASE_DIR, Meta, TreeBuilder};

const LABEL: &[u8] = b"security.selinux";

/// The source: every file type, names the rules single out, hard links, a file with
/// its own label (which `--file-contexts` replaces) and a user xattr (kept).
fn source(dir: &Path) -> PathBuf {
    let mut t = TreeBuilder::new(13);
    let x = Meta {
        perm: 0o755,
        ..BASE
    };
    for d in [
        "etc",
        "etc/init.d",
        "usr",
        "usr/bin",
        "usr/lib",
        "dev",
        "run",
        "srv",
        "srv/www",
        "srv/www/cgi",
        "tmp",
        "home",
        "home/user",
        "opt",
        "web",
    ] {
        t.dir(d.as_bytes(), BASE_DIR);
    }
    for f in [
        "etc/passwd",
        "etc/password-old",
        "etc/shadow",
        "etc/hosts",
        "etc/ld.so.cache",
        "usr/lib/libc.so.6",
        "usr/lib/ld-linux-x86-64.so.2",
        "usr/lib/other",
        "srv/www/index.html",
        "srv/www/local.html",
        "tmp/x",
        "home/user/.bashrc",
        "home/user/notes",
        "opt/b",
        "opt/d",
        "usr/x",
        "web/page",
        "toplevel",
    ] {
        t.random_file(f.as_bytes(), 100 + f.len() * 37, BASE);
    }
    t.random_file(b"etc/init.d/rc", 300, x);
    t.random_file(b"usr/bin/sh", 5000, x);
    // Hard links whose names the rules label differently: the inode gets the label
    // of the name met first, in a breadth-first walk in name order (as mkfs.erofs).
    t.hardlink(b"usr/bin/sh", b"usr/bin/dash");
    t.hardlink(b"etc/init.d/rc", b"run/rc");
    t.symlink(b"usr/bin/bash", b"sh", BASE);
    t.symlink(b"srv/www/link", b"index.html", BASE);
    t.symlink(b"etc/localtime", b"/usr/share/zoneinfo/UTC", BASE);
    t.node(b"dev/null", Kind::CharDev, 1, 3, BASE);
    t.node(b"dev/sda", Kind::BlockDev, 8, 0, BASE);
    t.node(b"dev/initctl", Kind::Fifo, 0, 0, BASE);
    t.node(b"run/sock", Kind::Socket, 0, 0, BASE);
    t.xattr(b"etc/passwd", LABEL, b"system_u:object_r:from_source_t:s0");
    t.xattr(b"etc/passwd", b"user.keep", b"kept");
    t.xattr(b"tmp/x", LABEL, b"system_u:object_r:from_source_t:s0");
    t.xattr(b"etc/hosts", b"user.keep", b"kept");
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    t.write(&src, false);
    src
}

/// Rules for every case, in an order that makes the precedence rules matter.
const CONTEXTS: &str = r"# test policy
/.*                            system_u:object_r:default_t:s0
/                  -d          system_u:object_r:root_t:s0
/etc/passwd                    system_u:object_r:passwd_t:s0
/etc(/.*)?                     system_u:object_r:etc_t:s0
/etc/pass.*        --          system_u:object_r:pass_regex_t:s0
/etc/shadow                    <<none>>
/etc/ld\.so\.cache             system_u:object_r:ld_cache_t:s0
/etc/init\.d/.*    --          system_u:object_r:initrc_exec_t:s0
/usr/bin(/.*)?                 system_u:object_r:bin_t:s0
/usr/bin/.*        -l          system_u:object_r:bin_link_t:s0
/usr/bin/dash                  system_u:object_r:dash_t:s0
/usr/lib/ld-[^/]*\.so(\.[^/]*)*  system_u:object_r:ld_so_t:s0
/usr/lib/lib.*\.so.*  --       system_u:object_r:lib_t:s0
/dev/.*            -c          system_u:object_r:chr_t:s0
/dev/.*            -b          system_u:object_r:blk_t:s0
/dev/.*            -p          system_u:object_r:fifo_t:s0
/run/.*            -s          system_u:object_r:sock_t:s0
/srv/www(/.*)?                 system_u:object_r:www_t:s0
/srv/www/.*        -l          <<none>>
/srv/www/cgi       -d          system_u:object_r:cgi_t:s0
/tmp/.*                        <<none>>
/home/[^/]+/\..*               system_u:object_r:dot_t:s0
/usr/x|/opt/b                  system_u:object_r:alt_t:s0
/x.*|/opt/d                    system_u:object_r:alt2_t:s0
/toplevel          -d          system_u:object_r:wrong_type_t:s0
";

/// `file_contexts.local`: appended, so it overrides the main file's regexes.
const LOCAL: &str = "/srv/www/local\\.html  system_u:object_r:local_t:s0\n";
/// `file_contexts.subs`: `/web` is labelled as `/srv/www`.
const SUBS: &str = "/web /srv/www\n";

/// With `--mount-point=/system/`: the paths looked up are `/system/...`.
const CONTEXTS_MP: &str = r"/.*                 system_u:object_r:default_t:s0
/system             system_u:object_r:system_root_t:s0
/system/etc(/.*)?   system_u:object_r:system_etc_t:s0
/etc(/.*)?          system_u:object_r:not_under_mp_t:s0
/system/usr/bin/.*  --  system_u:object_r:system_bin_t:s0
";

fn write_contexts(dir: &Path) -> (PathBuf, PathBuf) {
    let fc = dir.join("file_contexts");
    std::fs::write(&fc, CONTEXTS).unwrap();
    std::fs::write(dir.join("file_contexts.local"), LOCAL).unwrap();
    std::fs::write(dir.join("file_contexts.subs"), SUBS).unwrap();
    let mp = dir.join("mp_contexts");
    std::fs::write(&mp, CONTEXTS_MP).unwrap();
    (fc, mp)
}

fn ishare() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ishare"))
}

/// `ishare mkfs ARGS` (`ours`) or `mkfs.erofs ARGS`.
fn build(ours: bool, args: &[&str]) {
    let mut c = if ours {
        let mut c = Command::new(ishare());
        c.arg("mkfs");
        c
    } else {
        Command::new(mkfs_194())
    };
    try_run(
        c.args(["--quiet", "-T", "1700000000", "--xattr-inode-digest"])
            .args(args),
    )
    .unwrap_or_else(|e| panic!("mkfs {args:?}: {e}"));
}

fn mounted(image: &Path) -> Tree {
    let m = LoopMount::new(image).unwrap_or_else(|e| panic!("mounting {}: {e}", image.display()));
    snapshot(m.path())
}

fn label<'a>(t: &'a Tree, path: &str) -> Option<&'a str> {
    let e = t
        .get(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} not in the image"));
    e.xattrs
        .iter()
        .find(|(k, _)| k == LABEL)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

/// Builds `src` with both tools and `args`, checks what the kernel shows is the same,
/// the images pass both fscks and ours is at most 1.01x theirs; returns the tree.
fn both(tmp: &Path, name: &str, args: &[&str], src: &Path) -> Tree {
    let ours = tmp.join(format!("{name}-ours.erofs"));
    let theirs = tmp.join(format!("{name}-theirs.erofs"));
    for (is_ours, image) in [(true, &ours), (false, &theirs)] {
        let mut a = args.to_vec();
        a.push(image.to_str().unwrap());
        a.push(src.to_str().unwrap());
        build(is_ours, &a);
    }
    let t = mounted(&ours);
    ishare_testkit::assert_trees_eq(
        &format!("ishare ({name})"),
        &t,
        &format!("mkfs.erofs 1.9.4 ({name})"),
        &mounted(&theirs),
        &CompareOpts::ALL,
    );
    try_run(
        Command::new(fsck_194())
            .arg("--xattr-inode-digest")
            .arg(&ours),
    )
    .unwrap();
    try_run(Command::new(ishare()).arg("fsck").arg(&ours)).unwrap();
    let (a, b) = (
        std::fs::metadata(&ours).unwrap().len(),
        std::fs::metadata(&theirs).unwrap().len(),
    );
    assert!(
        a as f64 <= b as f64 * 1.01,
        "{name}: {a} bytes, mkfs.erofs {b}"
    );
    t
}

#[test]
fn file_contexts_labels_as_mkfs_erofs() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let (fc, mp) = write_contexts(tmp.path());
    let fc_arg = format!("--file-contexts={}", fc.display());
    let t = both(tmp.path(), "plain", &[&fc_arg], &src);
    let sys = |s: &str| format!("system_u:object_r:{s}:s0");
    for (path, want) in [
        ("", Some("root_t")),
        ("etc", Some("etc_t")),
        // Exact, listed before the regexes that match it too: it wins.
        ("etc/passwd", Some("passwd_t")),
        ("etc/password-old", Some("pass_regex_t")),
        ("etc/shadow", None),
        ("etc/hosts", Some("etc_t")),
        ("etc/ld.so.cache", Some("ld_cache_t")),
        ("etc/localtime", Some("etc_t")),
        ("etc/init.d", Some("etc_t")),
        // A hard link with run/rc, which is met first (one level up).
        ("etc/init.d/rc", Some("default_t")),
        ("run/rc", Some("default_t")),
        ("usr", Some("default_t")),
        // A hard link with usr/bin/dash, which comes first by name.
        ("usr/bin/sh", Some("dash_t")),
        ("usr/bin/dash", Some("dash_t")),
        ("usr/bin/bash", Some("bin_link_t")),
        ("usr/lib/ld-linux-x86-64.so.2", Some("ld_so_t")),
        ("usr/lib/libc.so.6", Some("lib_t")),
        ("usr/lib/other", Some("default_t")),
        ("dev/null", Some("chr_t")),
        ("dev/sda", Some("blk_t")),
        ("dev/initctl", Some("fifo_t")),
        ("run/sock", Some("sock_t")),
        ("srv/www", Some("www_t")),
        ("srv/www/cgi", Some("cgi_t")),
        ("srv/www/index.html", Some("www_t")),
        ("srv/www/link", None),
        ("srv/www/local.html", Some("local_t")),
        ("web/page", Some("www_t")),
        ("web", Some("www_t")),
        ("tmp", Some("default_t")),
        // The source's own label is dropped too.
        ("tmp/x", None),
        ("home/user/.bashrc", Some("dot_t")),
        ("home/user/notes", Some("default_t")),
        // Stem /usr: the top-level `|/opt/b` is never tried on /opt.
        ("usr/x", Some("alt_t")),
        ("opt/b", Some("default_t")),
        // No stem: `^/x.*|/opt/d$` matches /opt/d.
        ("opt/d", Some("alt2_t")),
        ("toplevel", Some("default_t")),
    ] {
        assert_eq!(
            label(&t, path).map(str::to_owned),
            want.map(sys),
            "label of /{path}"
        );
    }
    // Other xattrs are kept.
    let keep = &t[&b"etc/passwd"[..]].xattrs;
    assert!(keep.iter().any(|(k, v)| k == b"user.keep" && v == b"kept"));

    // Under a mount point (its trailing '/' dropped), uncompressed and compressed.
    let mp_arg = format!("--file-contexts={}", mp.display());
    for (name, extra) in [
        ("mp", &[][..]),
        ("mp-lz4", &["-zlz4hc", "-Eztailpacking"][..]),
    ] {
        let mut args = vec![mp_arg.as_str(), "--mount-point=/system/"];
        args.extend(extra);
        let t = both(tmp.path(), name, &args, &src);
        for (path, want) in [
            ("", Some("system_root_t")),
            ("etc", Some("system_etc_t")),
            ("etc/passwd", Some("system_etc_t")),
            ("usr/bin/sh", Some("system_bin_t")),
            ("usr/bin/bash", Some("default_t")),
            ("opt/b", Some("default_t")),
        ] {
            assert_eq!(
                label(&t, path).map(str::to_owned),
                want.map(sys),
                "{name}: label of /{path}"
            );
        }
    }

    // `-x -1` (no xattrs from the source) drops the labels too, as in mkfs.erofs.
    let t = both(tmp.path(), "no-xattrs", &[&fc_arg, "-x", "-1"], &src);
    assert!(t.values().all(|e| e.xattrs.is_empty()), "xattrs with -x -1");
}

/// mkfs.erofs only labels directory input: a tar keeps the labels it carries, and
/// the file_contexts is still read (and a bad one refused).
#[test]
fn file_contexts_tar_keeps_its_labels() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let (fc, _) = write_contexts(tmp.path());
    let tarball = tmp.path().join("src.tar");
    try_run(
        Command::new(host_tool("tar"))
            .args([
                "--format=pax",
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
            ])
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    )
    .unwrap();
    let fc_arg = format!("--file-contexts={}", fc.display());
    let t = both(tmp.path(), "tar", &["--tar=f", &fc_arg], &tarball);
    assert_eq!(
        label(&t, "etc/passwd"),
        Some("system_u:object_r:from_source_t:s0")
    );
    assert_eq!(label(&t, "etc/hosts"), None);
    let bad = tmp.path().join("bad_contexts");
    std::fs::write(&bad, "/a -x system_u:object_r:a_t:s0\n").unwrap();
    let out = Command::new(ishare())
        .args(["mkfs", "--tar=f"])
        .arg(format!("--file-contexts={}", bad.display()))
        .arg(tmp.path().join("bad.erofs"))
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1:", bad.display())), "{err}");
}

/// Malformed files: an error naming the file and line, exit status 1 under the
/// mkfs.erofs name, no image left behind; mkfs.erofs refuses the same files.
#[test]
fn file_contexts_errors() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("mkfs.erofs");
    std::os::unix::fs::symlink(ishare(), &link).unwrap();
    let fc = tmp.path().join("bad_contexts");
    let image = tmp.path().join("out.erofs");
    for (text, line, what, oracle_refuses) in [
        ("/ok  u:r:a:s0\n/lonely\n", 2, "missing fields", true),
        ("# c\n/a  -x  u:r:a:s0\n", 2, "invalid file type", true),
        ("/a  ---  u:r:a:s0\n", 1, "invalid file type", true),
        (
            "/a  u:r:a:s0  # a comment is a field\n",
            1,
            "invalid file type",
            true,
        ),
        ("/caf\u{e9}  u:r:a:s0\n", 1, "non-ASCII", true),
        // libselinux compiles regexes at the first lookup reaching them: mkfs.erofs
        // then prints "failed to lookup selabel ... Success" for each file, labels
        // nothing and succeeds. Refused up front here.
        (
            "/.*  u:r:a:s0\n/a(  u:r:a:s0\n",
            2,
            "invalid or unsupported regex",
            false,
        ),
        // PCRE2 has back-references, the regex crate does not: refused here only.
        (
            "/(a)\\1  u:r:a:s0\n",
            1,
            "invalid or unsupported regex",
            false,
        ),
    ] {
        std::fs::write(&fc, text).unwrap();
        let fc_arg = format!("--file-contexts={}", fc.display());
        for tool in [&ishare(), &link] {
            let mut c = Command::new(tool);
            if tool == &ishare() {
                c.arg("mkfs");
            }
            let out = c.arg(&fc_arg).arg(&image).arg(&src).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{text:?}: {err}");
            assert!(
                err.contains(&format!("{}:{line}: ", fc.display())) && err.contains(what),
                "{text:?}: {err}"
            );
            assert!(!image.exists(), "{text:?}: an image was left");
        }
        let out = Command::new(mkfs_194())
            .arg(&fc_arg)
            .arg(&image)
            .arg(&src)
            .output()
            .unwrap();
        assert_eq!(
            !out.status.success(),
            oracle_refuses,
            "{text:?}: mkfs.erofs {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&image);
    }
    // A missing file is named.
    let missing = tmp.path().join("no_such_contexts");
    let out = Command::new(ishare())
        .arg("mkfs")
        .arg(format!("--file-contexts={}", missing.display()))
        .arg(&image)
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&missing.display().to_string()),
        "{err}"
    );
}

/// A real-world policy on a real tree: the file contexts of Debian's reference policy
/// (5,600 specs, with its `file_contexts.subs_dist`; scripts/install-deps.sh unpacks
/// them) on the Debian bookworm minbase tree. Every entry shows the same label (and
/// everything else) in both images.
#[test]
fn file_contexts_reference_policy_on_minbase() {
    require_root();
    let fc = ishare_testkit::tools::cache_dir().join("selinux-refpolicy/file_contexts");
    assert!(
        fc.is_file() && fc.with_extension("subs_dist").is_file(),
        "{} is missing: run scripts/install-deps.sh (as root)",
        fc.display()
    );
    let tree = ishare_testkit::tree::minbase();
    let tmp = Tmpfs::new();
    let fc_arg = format!("--file-contexts={}", fc.display());
    let t = both(tmp.path(), "refpolicy", &[&fc_arg], &tree);
    let labelled = t
        .values()
        .filter(|e| e.xattrs.iter().any(|(k, _)| k == LABEL))
        .count();
    assert!(
        labelled + 10 >= t.len() && t.len() > 5000,
        "{labelled} of {} entries labelled",
        t.len()
    );
    let sys = |s: &str| Some(format!("system_u:object_r:{s}:s0"));
    for (path, want) in [
        ("", sys("root_t")),
        ("etc/passwd", sys("etc_t")),
        ("usr/bin/bash", sys("shell_exec_t")),
        ("var/lib/dpkg/status", sys("dpkg_var_lib_t")),
        // Through file_contexts.subs_dist: /etc/init.d is /etc/rc.d/init.d.
        ("etc/init.d/hwclock.sh", sys("initrc_exec_t")),
    ] {
        assert_eq!(label(&t, path).map(str::to_owned), want, "label of /{path}");
    }
}
