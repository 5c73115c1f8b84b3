//! The `ishare` binary called as `mkfs.erofs` (a symlink, argv[0]) against erofs-utils
//! 1.9.4's `mkfs.erofs`, on the command lines containerd's EROFS differ runs:
//!
//! - `--tar=f --aufs --quiet -Enoinline_data --sort=none [--xattr-inode-digest] -U UUID
//!   IMAGE` with the tar on standard input,
//! - `--quiet -Enoinline_data -b4096 IMAGE DIR`,
//! - `--tar=i --aufs --quiet -b4096 -U UUID IMAGE` with the tar appended to the index
//!   afterwards, mounted as one file (and the index alone with the tar as `device=`).
//!
//! Each image is mounted by the host kernel (`mount -t erofs -o loop`) and must show
//! exactly the tree erofs-utils' image shows (every field, link counts, xattrs); images
//! with digests pass `fsck.erofs --xattr-inode-digest` and `ishare fsck`. Then the
//! simpler options (`--uid-offset`, `--ignore-mtime`, `--hard-dereference`, `--offset`,
//! `--fsalignblks`, `--dsunit`, `--tar=headerball`, `--ungzip=X`, ...) and what is
//! refused. Needs root, GNU tar, gzip and erofs-utils 1.9.4 (scripts/install-deps.sh).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ishare_testkit::mounts::{ErofsMount, LoopMount, Tmpfs};
use ishare_testkit::snapshot::{CompareOpts, Tree, snapshot};
use ishare_testkit::tools::{fsck_194, host_tool, mkfs_194, require_root, try_run};
use ishare_testkit::tree::{BlockTree, T0, block_tree};

const UUID: &str = "6ba7b811-9dad-11d1-80b4-00c04fd430c8";

/// A directory holding a link named `mkfs.erofs` to the ishare binary.
struct Symlink {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn symlink() -> Symlink {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mkfs.erofs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ishare"), &path).unwrap();
    Symlink { _dir: dir, path }
}

/// Runs `tool ARGS` with `stdin` (a file) as standard input; panics with its output
/// on failure.
fn mkfs(tool: &Path, args: &[&str], stdin: Option<&Path>) -> Output {
    let mut c = Command::new(tool);
    c.args(args);
    if let Some(p) = stdin {
        c.stdin(File::open(p).unwrap());
    }
    try_run(&mut c).unwrap_or_else(|e| panic!("{} {args:?}: {e}", tool.display()))
}

/// Runs `tool ARGS` with the file `input` written into a pipe on its standard input,
/// as containerd feeds it (a regular file on standard input is read in place).
fn mkfs_piped(tool: &Path, args: &[&str], input: &Path) {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = std::fs::read(input).unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{args:?} (piped): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `tool ARGS` expecting failure; returns its standard error.
fn mkfs_fails(tool: &Path, args: &[&str], stdin: Option<&Path>) -> String {
    let mut c = Command::new(tool);
    c.args(args);
    if let Some(p) = stdin {
        c.stdin(File::open(p).unwrap());
    }
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail with status 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The 4 KiB block-size tree (every kind of entry, hard links, xattrs, owners above
/// 65535) plus AUFS whiteouts and an opaque-directory marker, in `dir/src`.
fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    block_tree(&BlockTree {
        block_size: 4096,
        large_ids: true,
    })
    .write(&src, false);
    std::fs::create_dir(src.join("aufs")).unwrap();
    std::fs::write(src.join("aufs/keep"), b"keep").unwrap();
    std::fs::write(src.join("aufs/.wh.gone"), b"").unwrap();
    std::fs::write(src.join("aufs/.wh..wh..opq"), b"").unwrap();
    // Fixed times (not "now", which mkfs.erofs stores without nanoseconds when it is
    // the build time's second), the root's last since adding entries changed it.
    let t = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(T0 as u64 + 3, 250_000_000));
    for p in [
        "aufs/keep",
        "aufs/.wh.gone",
        "aufs/.wh..wh..opq",
        "aufs",
        "",
    ] {
        File::open(src.join(p)).unwrap().set_times(t).unwrap();
    }
    src
}

/// A PAX tar of `src` with xattrs and numeric owners, as a layer tar is.
fn tar_of(src: &Path, tarball: &Path) {
    try_run(
        Command::new(host_tool("tar"))
            .args([
                "--format=pax",
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
            ])
            .arg("-C")
            .arg(src)
            .arg("-cf")
            .arg(tarball)
            .arg("."),
    )
    .unwrap();
}

/// What the kernel shows of `image` (mounted with `mount -t erofs -o loop`).
fn mounted(image: &Path) -> Tree {
    let m = LoopMount::new(image).unwrap_or_else(|e| panic!("mounting {}: {e}", image.display()));
    snapshot(m.path())
}

fn assert_same(what: &str, ours: &Tree, theirs: &Tree) {
    ishare_testkit::assert_trees_eq(
        &format!("ishare ({what})"),
        ours,
        &format!("mkfs.erofs 1.9.4 ({what})"),
        theirs,
        &CompareOpts::ALL,
    );
}

fn uuid_of(image: &Path, offset: u64) -> [u8; 16] {
    let bytes = std::fs::read(image).unwrap();
    let at = (offset + 1024 + 48) as usize;
    bytes[at..at + 16].try_into().unwrap()
}

const UUID_BYTES: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

fn fsck_ok(image: &Path, devices: &[&Path]) {
    let mut c = Command::new(fsck_194());
    c.arg("--xattr-inode-digest");
    for d in devices {
        c.arg(format!("--device={}", d.display()));
    }
    try_run(c.arg(image)).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_ishare"));
    c.arg("fsck");
    for d in devices {
        c.arg("--device").arg(d);
    }
    try_run(c.arg(image)).unwrap();
}

/// containerd's tar conversion (`ConvertTarErofs`): tar on standard input, no SOURCE.
#[test]
fn containerd_tar_full_mode() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let tarball = tmp.path().join("layer.tar");
    tar_of(&src, &tarball);
    let link = symlink();
    for digest in [false, true] {
        let mut args = vec![
            "--tar=f",
            "--aufs",
            "--quiet",
            "-Enoinline_data",
            "--sort=none",
        ];
        if digest {
            args.push("--xattr-inode-digest");
        }
        args.extend(["-U", UUID]);
        let ours = tmp.path().join(format!("ours-{digest}.erofs"));
        let theirs = tmp.path().join(format!("theirs-{digest}.erofs"));
        let run = |tool: &Path, image: &Path| {
            let mut a = args.clone();
            a.push(image.to_str().unwrap());
            let out = mkfs(tool, &a, Some(&tarball));
            assert!(out.stdout.is_empty(), "--quiet printed");
        };
        run(&link.path, &ours);
        run(&mkfs_194(), &theirs);
        let t = mounted(&ours);
        assert_same(&format!("tar, digests {digest}"), &t, &mounted(&theirs));
        // Through a pipe, as containerd runs it (a file on standard input is read
        // in place, a pipe is copied first): the same tree. (Not the same bytes: the
        // build time is "now".)
        let piped = tmp.path().join("piped.erofs");
        let mut a = args.clone();
        a.push(piped.to_str().unwrap());
        mkfs_piped(&link.path, &a, &tarball);
        assert_same("tar through a pipe", &mounted(&piped), &t);
        assert_eq!(uuid_of(&ours, 0), UUID_BYTES);
        // The whiteouts were converted.
        let gone = &t[&b"aufs/gone"[..]];
        assert_eq!((gone.mode() & 0o170000, gone.rdev), (0o020000, Some(0)));
        assert!(!t.contains_key(&b"aufs/.wh..wh..opq"[..]));
        // The kernel does not list the digest xattr: read it with our reader, in
        // both images.
        let fp = |image: &Path| {
            let img = ishare_erofs::Image::open(image).unwrap();
            let ino = img.lookup_path(b"files/f_big").unwrap();
            img.get_xattr(&ino, b"erofs.fingerprint.v1").unwrap()
        };
        assert_eq!(fp(&ours).is_some(), digest, "digests only when asked");
        assert_eq!(fp(&ours), fp(&theirs));
        if digest {
            fsck_ok(&ours, &[]);
        }
    }
}

/// containerd's directory conversion (`ConvertErofs` with the default `-b4096`).
#[test]
fn containerd_directory_mode() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let link = symlink();
    let ours = tmp.path().join("ours.erofs");
    let theirs = tmp.path().join("theirs.erofs");
    for (tool, image) in [(&link.path, &ours), (&mkfs_194(), &theirs)] {
        let args = [
            "--quiet",
            "-Enoinline_data",
            "-b4096",
            image.to_str().unwrap(),
            src.to_str().unwrap(),
        ];
        mkfs(tool, &args, None);
    }
    let t = mounted(&ours);
    assert_same("directory", &t, &mounted(&theirs));
    // The source as it is, whiteout files included (no --aufs for directories).
    assert!(t.contains_key(&b"aufs/.wh.gone"[..]));
}

/// containerd's tar index mode (`GenerateTarIndexAndAppendTar`): the index, then the
/// original tar appended, mounted as one file; and the index with the tar as a device.
#[test]
fn containerd_tar_index_mode() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let tarball = tmp.path().join("layer.tar");
    tar_of(&src, &tarball);
    let link = symlink();
    let append = |index: &Path, out: &Path| {
        let mut bytes = std::fs::read(index).unwrap();
        bytes.extend(std::fs::read(&tarball).unwrap());
        std::fs::write(out, bytes).unwrap();
    };
    let mut trees = Vec::new();
    for (name, tool) in [("ours", &link.path), ("theirs", &mkfs_194())] {
        let index = tmp.path().join(format!("{name}.idx"));
        let args = [
            "--tar=i",
            "--aufs",
            "--quiet",
            "-b4096",
            "--xattr-inode-digest",
            "-U",
            UUID,
            index.to_str().unwrap(),
        ];
        mkfs(tool, &args, Some(&tarball));
        if name == "ours" {
            // Through a pipe (nothing kept, digests taken while parsing).
            let piped = tmp.path().join("piped.idx");
            let mut a = args.to_vec();
            a.pop();
            a.push(piped.to_str().unwrap());
            mkfs_piped(tool, &a, &tarball);
            let layer = tmp.path().join("piped.erofs");
            append(&piped, &layer);
            trees.push(("piped", mounted(&layer), piped, layer));
        }
        let layer = tmp.path().join(format!("{name}.erofs"));
        append(&index, &layer);
        trees.push((name, mounted(&layer), index, layer));
    }
    // In order: the piped run (made first, inside ours), ours, theirs.
    let theirs = trees.pop().unwrap().1;
    let (_, ours, ours_idx, ours_layer) = &trees[1];
    let (_, piped, piped_idx, _) = &trees[0];
    assert_same("tar index + tar", ours, &theirs);
    assert_same("tar index through a pipe, + tar", piped, &theirs);
    fsck_ok(piped_idx, &[&tarball]);
    // The index holds metadata only: far smaller than the tar.
    let idx_len = std::fs::metadata(ours_idx).unwrap().len();
    let tar_len = std::fs::metadata(&tarball).unwrap().len();
    assert!(idx_len * 10 < tar_len, "index {idx_len} of tar {tar_len}");
    assert_eq!(uuid_of(ours_layer, 0), UUID_BYTES);
    // The index alone, with the tar as its device (file-backed mounts need files
    // on a file system with read_folio, which tmpfs is not).
    let disk = tempfile::tempdir().unwrap();
    let (idx, dev) = (disk.path().join("i.idx"), disk.path().join("l.tar"));
    std::fs::copy(ours_idx, &idx).unwrap();
    std::fs::copy(&tarball, &dev).unwrap();
    let m = ErofsMount::new(&idx, &[dev]);
    assert_same("tar index, device=", &snapshot(m.path()), &theirs);
    drop(m);
    fsck_ok(ours_idx, &[&tarball]);
    // The tar named as SOURCE gives the same image.
    let named = tmp.path().join("named.idx");
    mkfs(
        &link.path,
        &[
            "--tar=i",
            "--aufs",
            "--quiet",
            "-T0",
            "-Uclear",
            named.to_str().unwrap(),
            tarball.to_str().unwrap(),
        ],
        None,
    );
    let layer = tmp.path().join("named.erofs");
    append(&named, &layer);
    let t = mounted(&layer);
    ishare_testkit::assert_trees_eq(
        "named tar",
        &t,
        "stdin",
        ours,
        &CompareOpts {
            ignore_mtime: true,
            ..CompareOpts::ALL
        },
    );
}

/// A compressed tar cannot be indexed in place unless the decompressed tar is kept
/// (`--ungzip=X`), and then X is the tar and the index refers to it.
#[test]
fn tar_index_of_a_compressed_tar() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let tarball = tmp.path().join("layer.tar");
    tar_of(&src, &tarball);
    let gz = tmp.path().join("layer.tar.gz");
    try_run(
        Command::new(host_tool("gzip"))
            .args(["-c", "-1"])
            .arg(&tarball)
            .stdout(File::create(&gz).unwrap()),
    )
    .unwrap();
    let link = symlink();
    let index = tmp.path().join("gz.idx");
    let e = mkfs_fails(
        &link.path,
        &["--tar=i", "--quiet", index.to_str().unwrap()],
        Some(&gz),
    );
    assert!(e.contains("compressed") && e.contains("--ungzip"), "{e}");
    assert!(!index.exists(), "a failed build left an image");
    let kept = tmp.path().join("kept.tar");
    let ungzip = format!("--ungzip={}", kept.display());
    mkfs(
        &link.path,
        &["--tar=i", "--quiet", &ungzip, index.to_str().unwrap()],
        Some(&gz),
    );
    assert!(
        std::fs::read(&kept).unwrap() == std::fs::read(&tarball).unwrap(),
        "--ungzip=X did not keep the decompressed tar"
    );
    let disk = tempfile::tempdir().unwrap();
    let (idx, dev) = (disk.path().join("i.idx"), disk.path().join("l.tar"));
    std::fs::copy(&index, &idx).unwrap();
    std::fs::copy(&kept, &dev).unwrap();
    let m = ErofsMount::new(&idx, &[dev]);
    let full = tmp.path().join("full.erofs");
    mkfs(
        &link.path,
        &["--tar=f", "--quiet", full.to_str().unwrap()],
        Some(&tarball),
    );
    let t = snapshot(m.path());
    ishare_testkit::assert_trees_eq(
        "index of gz",
        &t,
        "full",
        &mounted(&full),
        &CompareOpts {
            ignore_mtime: true,
            ..CompareOpts::ALL
        },
    );
}

/// `--tar=headerball`: a stream of headers without file data; files read as zeros.
#[test]
fn headerball() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let tarball = tmp.path().join("layer.tar");
    tar_of(&src, &tarball);
    let hb = tmp.path().join("layer.hb");
    std::fs::write(&hb, strip_file_data(&std::fs::read(&tarball).unwrap())).unwrap();
    let link = symlink();
    let ours = tmp.path().join("ours.erofs");
    let theirs = tmp.path().join("theirs.erofs");
    for (tool, image) in [(&link.path, &ours), (&mkfs_194(), &theirs)] {
        let args = [
            "--tar=headerball",
            "--quiet",
            "-T0",
            image.to_str().unwrap(),
        ];
        mkfs(tool, &args, Some(&hb));
    }
    let t = mounted(&ours);
    assert_same("headerball", &t, &mounted(&theirs));
    let big = std::fs::read(LoopMount::new(&ours).unwrap().path().join("files/f_big")).unwrap();
    assert_eq!(big.len(), 3 * 1024 * 1024 + 5);
    assert!(big.iter().all(|&b| b == 0));
}

/// A tar's headers with the data of regular file entries left out (extension
/// headers keep theirs).
fn strip_file_data(tar: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        out.extend_from_slice(h);
        if h.iter().all(|&b| b == 0) {
            at += 512;
            continue;
        }
        let padded = 512 * tar_blocks(h);
        if matches!(h[156], b'x' | b'g' | b'L' | b'K') {
            out.extend_from_slice(&tar[at + 512..at + 512 + padded]);
        }
        at += 512 + padded;
    }
    out
}

/// `-V` and `--help` as tools read them; usage errors as mkfs.erofs reports them.
#[test]
fn version_help_and_usage_errors() {
    let link = symlink();
    let ours = mkfs(&link.path, &["-V"], None);
    let theirs = mkfs(&mkfs_194(), &["-V"], None);
    let first = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .map(str::to_owned)
    };
    assert_eq!(first(&ours), first(&theirs));
    assert_eq!(
        first(&mkfs(&link.path, &["--version"], None)),
        first(&theirs)
    );
    // containerd's SupportGenerateFromTar looks for this.
    let help = mkfs(&link.path, &["--help"], None);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--tar="));
    // `ishare mkfs` keeps its own name and additions.
    let ishare = Command::new(env!("CARGO_BIN_EXE_ishare"))
        .args(["mkfs", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ishare.stdout);
    assert!(text.contains("Usage: ishare mkfs") && text.contains("--no-xattr-inode-digest"));
    let e = mkfs_fails(&link.path, &["--bogus", "i", "s"], None);
    assert!(
        e.contains("unrecognized option '--bogus'") && e.contains("--help"),
        "{e}"
    );
    let e = mkfs_fails(&link.path, &["img"], None);
    assert!(e.contains("missing argument: SOURCE"), "{e}");
}

/// A SOURCE that is not an EROFS image (rebuild mode), `--s3`, and options not
/// implemented yet are refused, naming what.
#[test]
fn refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let link = symlink();
    let a = tmp.path().join("a.erofs");
    std::fs::write(&a, b"not really").unwrap();
    let out = tmp.path().join("out.erofs");
    let (o, a) = (out.to_str().unwrap(), a.to_str().unwrap());
    for (args, want) in [
        (vec![o, a, a], "not a usable EROFS image"),
        (vec![o, a], "not a usable EROFS image"),
        (vec!["--s3=host", o, a], "not supported"),
        (vec!["--blobdev=x", o, a], "do not apply to rebuild mode"),
        (
            vec!["--incremental=data", o, a],
            "adds to an existing image",
        ),
        (vec!["--tar=f", o, a, a], "one SOURCE"),
    ] {
        let e = mkfs_fails(&link.path, &args, None);
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!out.exists());
    }
}

/// `--uid-offset`, `--gid-offset`, `--ignore-mtime`, `--hard-dereference` on a
/// directory, against mkfs.erofs with the same options.
#[test]
fn owner_time_and_link_options() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let link = symlink();
    for opts in [
        &["--uid-offset=1000", "--gid-offset=0x10"][..],
        &["--force-uid=5", "--uid-offset=7"],
        &["--ignore-mtime", "-T", "1700000000", "--mkfs-time"],
        &["--ignore-mtime", "--preserve-mtime"],
        &["--hard-dereference"],
    ] {
        let ours = tmp.path().join("ours.erofs");
        let theirs = tmp.path().join("theirs.erofs");
        for (tool, image) in [(&link.path, &ours), (&mkfs_194(), &theirs)] {
            let mut args = vec!["--quiet"];
            args.extend_from_slice(opts);
            args.extend([image.to_str().unwrap(), src.to_str().unwrap()]);
            mkfs(tool, &args, None);
        }
        let t = mounted(&ours);
        assert_same(&opts.join(" "), &t, &mounted(&theirs));
        let f = &t[&b"files/f_1"[..]];
        let s = std::fs::symlink_metadata(src.join("files/f_1")).unwrap();
        match opts[0] {
            "--uid-offset=1000" => assert_eq!((f.uid, f.gid), (s.uid() + 1000, s.gid() + 16)),
            "--force-uid=5" => assert_eq!(f.uid, 12),
            "--hard-dereference" => {
                assert_eq!(t.link_group(b"links/hl2"), b"links/hl2");
            }
            _ => {}
        }
    }
    // An offset that overflows a uid is an error naming the file.
    let out = tmp.path().join("bad.erofs");
    let e = mkfs_fails(
        &link.path,
        &[
            "--uid-offset=4294967295",
            out.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
        None,
    );
    assert!(e.contains("uid") && e.contains("overflows"), "{e}");
}

/// `--offset`, `--fsalignblks` and `--dsunit` place the same tree differently.
#[test]
fn placement_options() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let link = symlink();
    let plain = tmp.path().join("plain.erofs");
    let s = src.to_str().unwrap();
    mkfs(
        &link.path,
        &["--quiet", "-T0", plain.to_str().unwrap(), s],
        None,
    );
    let want = mounted(&plain);
    let plain_len = std::fs::metadata(&plain).unwrap().len();

    // --offset: zeros, then the image.
    let off = tmp.path().join("off.erofs");
    mkfs(
        &link.path,
        &["--quiet", "-T0", "--offset=8192", off.to_str().unwrap(), s],
        None,
    );
    let bytes = std::fs::read(&off).unwrap();
    assert_eq!(bytes.len() as u64, plain_len + 8192);
    assert!(bytes[..8192].iter().all(|&b| b == 0));
    let tail = tmp.path().join("tail.erofs");
    std::fs::write(&tail, &bytes[8192..]).unwrap();
    assert_same("--offset", &mounted(&tail), &want);

    // --fsalignblks: the size is a multiple of 64 blocks (48 rounds up to 64).
    let al = tmp.path().join("al.erofs");
    mkfs(
        &link.path,
        &[
            "--quiet",
            "-T0",
            "--fsalignblks=48",
            al.to_str().unwrap(),
            s,
        ],
        None,
    );
    let len = std::fs::metadata(&al).unwrap().len();
    assert_eq!(len % (64 * 4096), 0, "{len}");
    assert!(len >= plain_len);
    assert_same("--fsalignblks", &mounted(&al), &want);
    let theirs = tmp.path().join("al-theirs.erofs");
    mkfs(
        &mkfs_194(),
        &[
            "--quiet",
            "-T0",
            "--fsalignblks=48",
            theirs.to_str().unwrap(),
            s,
        ],
        None,
    );
    assert_eq!(std::fs::metadata(&theirs).unwrap().len() % (64 * 4096), 0);

    // --dsunit: every file's data starts on a multiple of 16 blocks.
    let ds = tmp.path().join("ds.erofs");
    mkfs(
        &link.path,
        &["--quiet", "-T0", "--dsunit=16", ds.to_str().unwrap(), s],
        None,
    );
    assert_same("--dsunit", &mounted(&ds), &want);
    let img = ishare_erofs::Image::open(&ds).unwrap();
    let mut checked = 0;
    for f in [
        "files/f_big",
        "files/f_b",
        "files/f_tail100",
        "files/f_2b+3",
    ] {
        let ino = img.lookup_path(f.as_bytes()).unwrap();
        if let Some(b) = ino.start_block() {
            assert_eq!(b % 16, 0, "{f} starts at block {b}");
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

/// `--root-xattr-isize`: the root inode reserves the room; readers see the same
/// xattrs as without it, and mkfs.erofs's image shows the same tree.
#[test]
fn root_xattr_isize() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let link = symlink();
    let s = src.to_str().unwrap();
    for size in ["256", "1000", "5"] {
        let ours = tmp.path().join("ours.erofs");
        let theirs = tmp.path().join("theirs.erofs");
        let opt = format!("--root-xattr-isize={size}");
        for (tool, image) in [(&link.path, &ours), (&mkfs_194(), &theirs)] {
            mkfs(
                tool,
                &["--quiet", "-T0", &opt, image.to_str().unwrap(), s],
                None,
            );
        }
        assert_same(&opt, &mounted(&ours), &mounted(&theirs));
        let img = ishare_erofs::Image::open(&ours).unwrap();
        let root = img.lookup_path(b"").unwrap();
        let want: u32 = size.parse().unwrap();
        assert!(
            root.xattr_isize >= want,
            "{opt}: root has {}",
            root.xattr_isize
        );
        assert_eq!(
            img.get_xattr(&root, b"user.root").unwrap().as_deref(),
            Some(&b"r"[..])
        );
        try_run(Command::new(fsck_194()).arg(&ours)).unwrap();
        try_run(
            Command::new(env!("CARGO_BIN_EXE_ishare"))
                .arg("fsck")
                .arg(&ours),
        )
        .unwrap();
    }
    let out = tmp.path().join("big.erofs");
    let e = mkfs_fails(
        &link.path,
        &["--root-xattr-isize=70000", out.to_str().unwrap(), s],
        None,
    );
    assert!(e.contains("root-xattr-isize"), "{e}");
}

/// Hostile or broken tars in index mode: a clear error naming the archive, and no
/// image left behind, whether the tar is a file, on standard input or piped.
#[test]
fn tar_index_of_a_broken_tar() {
    require_root();
    let tmp = Tmpfs::new();
    let src = source(tmp.path());
    let tarball = tmp.path().join("layer.tar");
    tar_of(&src, &tarball);
    let bytes = std::fs::read(&tarball).unwrap();
    let link = symlink();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("garbage", vec![0x5a; 8192], "not a tar archive"),
        (
            "bad checksum",
            {
                let mut b = bytes.clone();
                // The second header's checksum field (after the first entry).
                let second = 512 * (1 + tar_blocks(&b[..512]));
                b[second + 148] ^= 1;
                b
            },
            "checksum",
        ),
    ];
    for (what, data, want) in cases {
        let bad = tmp.path().join(format!("{what}.tar"));
        std::fs::write(&bad, &data).unwrap();
        let index = tmp.path().join("bad.idx");
        let i = index.to_str().unwrap();
        let e = mkfs_fails(&link.path, &["--tar=i", "--quiet", i], Some(&bad));
        assert!(e.contains("<stdin>") && e.contains(want), "{what}: {e}");
        let e = mkfs_fails(
            &link.path,
            &["--tar=i", "--quiet", i, bad.to_str().unwrap()],
            None,
        );
        assert!(
            e.contains(bad.to_str().unwrap()) && e.contains(want),
            "{what}: {e}"
        );
        assert!(!index.exists(), "{what}: a failed build left an image");
    }
}

/// Data blocks of the tar entry whose header is `h`.
fn tar_blocks(h: &[u8]) -> usize {
    let field = std::str::from_utf8(&h[124..136]).unwrap();
    let size = usize::from_str_radix(field.trim_matches(|c| c == '\0' || c == ' '), 8).unwrap();
    size.div_ceil(512)
}

/// `--zfeature-bits` turns compression features on and off as mkfs.erofs does:
/// bit 1 is ztailpacking, bit 4 dedupe; `dump.erofs -s` shows what the image uses.
#[test]
fn zfeature_bits() {
    require_root();
    let tmp = Tmpfs::new();
    // A small tree with file ends that ztailpacking inlines.
    let src = tmp.path().join("small");
    std::fs::create_dir(&src).unwrap();
    for (i, len) in [5000usize, 70_000, 123].into_iter().enumerate() {
        let text: Vec<u8> = (0..len)
            .map(|k| b"ishare mkfs "[k % 12] + (k / 997) as u8 % 3)
            .collect();
        std::fs::write(src.join(format!("f{i}")), text).unwrap();
    }
    let link = symlink();
    let s = src.to_str().unwrap();
    let features = |image: &Path| {
        let out = try_run(
            Command::new(ishare_testkit::tools::dump_194())
                .arg("-s")
                .arg(image),
        )
        .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = tmp.path().join("plain.erofs");
    mkfs(
        &link.path,
        &["--quiet", "-T0", "-zlz4hc", plain.to_str().unwrap(), s],
        None,
    );
    assert!(!features(&plain).contains("ztailpacking"));
    for (bits, want) in [("2", "ztailpacking"), ("0x12", "ztailpacking")] {
        let ours = tmp.path().join("ours.erofs");
        let theirs = tmp.path().join("theirs.erofs");
        let opt = format!("--zfeature-bits={bits}");
        for (tool, image) in [(&link.path, &ours), (&mkfs_194(), &theirs)] {
            mkfs(
                tool,
                &[
                    "--quiet",
                    "-T0",
                    "-zlz4hc",
                    &opt,
                    image.to_str().unwrap(),
                    s,
                ],
                None,
            );
        }
        assert!(features(&ours).contains(want), "{opt}: {}", features(&ours));
        assert!(features(&theirs).contains(want));
        assert_same(&opt, &mounted(&ours), &mounted(&theirs));
    }
}
