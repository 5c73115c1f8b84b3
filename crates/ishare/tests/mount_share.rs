//! `ishare mount`: FUSE mounts of EROFS images sharing page cache across images.
//!
//! * page cache growth (`Cached:` after `drop_caches`) when the same 64 MiB file is read
//!   through two mounts of two images (different paths), for read(2), mmap and sendfile,
//!   with kernel passthrough and with daemon reads; not shared across domains, nor
//!   without `inode_share`;
//! * the kernel's rules and our safety: same fingerprint with another size is not
//!   shared; a lying fingerprint with `verify=on` never makes an image read another's
//!   bytes (with `verify=off` it does, as in the kernel);
//! * every path's lstat, xattrs, readdir order, symlink targets and contents through
//!   `ishare mount` equal a kernel mount of the same image (flat and chunk-based);
//! * beyond the kernel: an LZ4HC image shares with an uncompressed one;
//! * unmounting one mount while another reads the shared file; kill -9 of the daemon in
//!   the middle of preparing a shared object, then a new mount reads every byte right;
//!   16 readers across 8 mounts racing the first preparation: right bytes, no hang;
//! * the domain id appears in no store path, /proc/mounts line or daemon command line;
//! * `domain_id_file=`: shares as `domain_id=` with the file's content; refused unless a
//!   root-owned regular file of mode 0600/0400 (no symlink); its id appears in no
//!   /proc/mounts line, command line (also through `mount.fuse.ishare`) or log;
//!   `domain_id=` on a command line draws a warning (stderr and log);
//! * `allow_other` mounts are `nosuid,nodev` in /proc/mounts unless `suid`/`dev` are given;
//! * remounting one mount point at once, over and over (with a reader busy on the old
//!   mount just before): `ishare umount` returns only once the old daemon is gone, and the
//!   new mount stays mounted and serving (an old daemon never unmounts a newer mount);
//! * unsupported ioctls (TCGETS from every `open()` of Python) fail with ENOTTY and leave
//!   the `log=` file small, in whole lines.
//!
//! Needs root, /dev/fuse, a C compiler (for testkit's `vm/memtool.c`) and mkfs.erofs 1.9.4
//! (`scripts/install-deps.sh`). The tests of this file run one at a time (they measure the
//! whole machine's page cache).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ishare_testkit::mounts::{self, ErofsMount, FuseMount, NodeDaemon};
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::{
    CompareOpts, assert_trees_eq, files_under, hash_file, hash_with_pause, snapshot,
};
use ishare_testkit::tools::{mkfs_erofs, run};
use ishare_testkit::tree::write_file;
use ishare_testkit::tree::{SourceTree, TreeSpec};
use ishare_testkit::{ishare_bin, pagecache};
use sha2::{Digest, Sha256};

const MIB: i64 = 1024;
/// Size of the shared file in the page cache tests.
const BIG: usize = 64 << 20;

/// Serializes the tests of this file.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

/// `ishare mount -o OPTS IMAGE DIR` (detached); logs to a file next to the mount point.
fn ishare_mount(image: &Path, opts: &str) -> FuseMount {
    mounts::ishare_mount(&ishare_bin!(), image, opts)
}

/// `ishare mount -f` as a child process, once its mount is visible.
fn ishare_mount_foreground(image: &Path, opts: &str) -> FuseMount {
    mounts::ishare_mount_foreground(&ishare_bin!(), &[], image, opts)
}

fn is_mounted(dir: &Path) -> bool {
    mounts::is_mounted(dir, "fuse.ishare")
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

fn ishare_mkfs(image: &Path, src: &Path, extra: &[&str]) {
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet"])
        .args(extra)
        .arg(image)
        .arg(src));
}

fn sha256_file(p: &Path) -> [u8; 32] {
    hash_file(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .1
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Two images holding the same big file (and a small "warm-up" file) at different paths.
struct Pair {
    _dir: tempfile::TempDir,
    img1: PathBuf,
    img2: PathBuf,
    big_sum: [u8; 32],
}

const BIG1: &str = "a/big";
const BIG2: &str = "b/c/big-copy";

fn pair(extra_mkfs: &[&str]) -> Pair {
    let mkfs = |img: &Path, src: &Path| ishare_mkfs(img, src, extra_mkfs);
    pair_with(&mkfs, &mkfs)
}

/// [`pair`] with the images built by `mkfs1` and `mkfs2` (image, source).
fn pair_with(mkfs1: &dyn Fn(&Path, &Path), mkfs2: &dyn Fn(&Path, &Path)) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let big = Rng::new(1).bytes(BIG);
    let warm = Rng::new(2).bytes(300_000);
    let (s1, s2) = (dir.path().join("s1"), dir.path().join("s2"));
    write_file(&s1, BIG1, &big);
    write_file(&s1, "warm", &warm);
    write_file(&s1, "only-in-1", b"one");
    write_file(&s2, BIG2, &big);
    write_file(&s2, "x/warm", &warm);
    write_file(&s2, "only-in-2", b"two");
    let (img1, img2) = (dir.path().join("1.erofs"), dir.path().join("2.erofs"));
    mkfs1(&img1, &s1);
    mkfs2(&img2, &s2);
    fs::remove_dir_all(&s1).unwrap();
    fs::remove_dir_all(&s2).unwrap();
    Pair {
        _dir: dir,
        img1,
        img2,
        big_sum: sha256(&big),
    }
}

// ---------------------------------------------------------------------------------------------
// Page cache measurement
// ---------------------------------------------------------------------------------------------

/// Reads `file` through `how` (read, mmap, sendfile) with memtool; returns the growth of
/// the page cache in KiB (see [`pagecache`]).
fn grow(how: &str, file: &Path) -> i64 {
    pagecache::grow(how, file, BIG as u64)
}

/// Page cache growth of reading the big file through mount 1, then through mount 2.
/// Both mounts first read their warm-up file, so code paths and metadata are in memory.
fn measure(m1: &FuseMount, m2: &FuseMount, how: &str) -> (i64, i64) {
    sha256_file(&m1.path().join("warm"));
    sha256_file(&m2.path().join("x/warm"));
    pagecache::drop_caches();
    let g1 = grow(how, &m1.path().join(BIG1));
    let g2 = grow(how, &m2.path().join(BIG2));
    (g1, g2)
}

fn is_full(kib: i64) -> bool {
    kib > 48 * MIB
}

fn is_shared(kib: i64) -> bool {
    kib < 16 * MIB
}

/// Runs `scenario` (which mounts and measures) up to three times until its growth pattern
/// matches: other processes on the machine can add page cache meanwhile.
fn assert_growth(name: &str, second_shared: bool, mut scenario: impl FnMut() -> (i64, i64)) {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (g1, g2) = scenario();
        seen.push(format!("first +{} MiB, second +{} MiB", g1 / MIB, g2 / MIB));
        let ok = is_full(g1)
            && if second_shared {
                is_shared(g2)
            } else {
                is_full(g2)
            };
        if ok {
            eprintln!("{name}: {}", seen.last().unwrap());
            return;
        }
    }
    panic!(
        "{name}: expected the second read to add {} page cache; measured (64 MiB file): {}",
        if second_shared {
            "no"
        } else {
            "a full copy of"
        },
        seen.join("; ")
    );
}

/// With `prepare=open`: the page cache a read adds is what these tests measure, and a
/// preparation ahead would have made (and cached) the objects before the reads.
fn share_opts(store: &Path, domain: &str, extra: &str) -> String {
    format!(
        "inode_share,domain_id={domain},store={},prepare=open{extra}",
        store.display()
    )
}

fn check_big(m: &FuseMount, rel: &str, want: &[u8; 32]) {
    assert_eq!(
        &sha256_file(&m.path().join(rel)),
        want,
        "wrong bytes in {rel} through {}\n{}",
        m.path().display(),
        m.log_text()
    );
}

/// Mounts the pair with `opts1`/`opts2` (fresh store each time) and measures `how`.
fn scenario(p: &Pair, how: &str, opts: &dyn Fn(&Path) -> (String, String)) -> (i64, i64) {
    let store = tempfile::tempdir().unwrap();
    let (o1, o2) = opts(store.path());
    let m1 = ishare_mount(&p.img1, &o1);
    let m2 = ishare_mount(&p.img2, &o2);
    let g = measure(&m1, &m2, how);
    check_big(&m1, BIG1, &p.big_sum);
    check_big(&m2, BIG2, &p.big_sum);
    g
}

/// Reading the big file `how` in mounts of `p`'s images in one domain shares the second
/// read's page cache (see [`assert_growth`]).
fn shares(p: &Pair, name: &str, how: &str) {
    assert_growth(name, true, || scenario(p, how, &same_domain("")));
}

fn same_domain(extra: &'static str) -> impl Fn(&Path) -> (String, String) {
    move |s| (share_opts(s, "d1", extra), share_opts(s, "d1", extra))
}

#[test]
fn read_shares_page_cache_within_a_domain() {
    let _g = serial();
    shares(&pair(&[]), "read(2), passthrough", "read");
}

#[test]
fn mmap_shares_page_cache_within_a_domain() {
    let _g = serial();
    shares(&pair(&[]), "mmap, passthrough", "mmap");
}

#[test]
fn sendfile_shares_page_cache_within_a_domain() {
    let _g = serial();
    let p = pair(&[]);
    shares(&p, "sendfile, passthrough", "sendfile");
    shares(&p, "splice, passthrough", "splice");
}

#[test]
fn chunk_based_images_share() {
    let _g = serial();
    shares(
        &pair(&["--chunksize", "65536"]),
        "read(2), chunk-based images",
        "read",
    );
}

#[test]
fn chunk_based_and_flat_images_share() {
    let _g = serial();
    let p = pair_with(
        &|img, src| ishare_mkfs(img, src, &["--chunksize", "65536"]),
        &|img, src| ishare_mkfs(img, src, &[]),
    );
    shares(&p, "read(2), chunk-based and flat images", "read");
}

/// Beyond the kernel (which never shares a compressed file with a plain copy): objects
/// hold decoded content, so an LZ4HC image and an uncompressed one share.
#[test]
fn compressed_and_uncompressed_images_share() {
    let _g = serial();
    let p = pair_with(
        &|img, src| {
            mkfs_erofs(&["-zlz4hc", "--xattr-inode-digest"], img, src);
        },
        &|img, src| ishare_mkfs(img, src, &[]),
    );
    shares(&p, "read(2), LZ4HC and uncompressed images", "read");
}

#[test]
fn daemon_reads_share_without_passthrough() {
    let _g = serial();
    let p = pair(&[]);
    assert_growth("read(2), passthrough=off", true, || {
        scenario(&p, "read", &same_domain(",passthrough=off"))
    });
    // Without passthrough, mmap and splice fill each mount's own FUSE page cache (the
    // file is direct_io for read(2) only): measured and shown, not shared.
    for how in ["mmap", "sendfile"] {
        let (g1, g2) = scenario(&p, how, &same_domain(",passthrough=off"));
        eprintln!(
            "{how}, passthrough=off (not shared by design): first +{} MiB, second +{} MiB",
            g1 / MIB,
            g2 / MIB
        );
    }
}

#[test]
fn different_domains_do_not_share() {
    let _g = serial();
    let p = pair(&[]);
    assert_growth("read(2), domains d1 and d2", false, || {
        scenario(&p, "read", &|s| {
            (share_opts(s, "d1", ""), share_opts(s, "d2", ""))
        })
    });
}

#[test]
fn without_inode_share_nothing_is_shared() {
    let _g = serial();
    let p = pair(&[]);
    assert_growth("read(2), no inode_share", false, || {
        scenario(&p, "read", &|_| ("ro".into(), "ro".into()))
    });
}

// ---------------------------------------------------------------------------------------------
// Sharing rules and verification
// ---------------------------------------------------------------------------------------------

fn fp_value(content: &[u8]) -> Vec<u8> {
    let mut v = b"sha256:".to_vec();
    v.extend_from_slice(&sha256(content));
    v
}

/// An honest image `hi` with `honest` (1 MiB from `seed`) at "f", and one `li` with
/// `liar` (`liar_len` bytes from `seed + 1`) at "g" whose fingerprint claims `honest`'s
/// content (see [`liar_images`]), and an empty store.
struct Liars {
    _dir: tempfile::TempDir,
    honest: Vec<u8>,
    liar: Vec<u8>,
    hi: PathBuf,
    li: PathBuf,
    store: tempfile::TempDir,
}

fn liars(seed: u64, liar_len: usize) -> Liars {
    let dir = tempfile::tempdir().unwrap();
    let honest = Rng::new(seed).bytes(1 << 20);
    let liar = Rng::new(seed + 1).bytes(liar_len);
    let (hi, li) = liar_images(dir.path(), &honest, &liar);
    Liars {
        _dir: dir,
        honest,
        liar,
        hi,
        li,
        store: tempfile::tempdir().unwrap(),
    }
}

fn liar_images(dir: &Path, honest: &[u8], liar: &[u8]) -> (PathBuf, PathBuf) {
    let (s1, s2) = (dir.join("h"), dir.join("l"));
    write_file(&s1, "f", honest);
    write_file(&s2, "g", liar);
    let (i1, i2) = (dir.join("honest.erofs"), dir.join("liar.erofs"));
    ishare_mkfs(&i1, &s1, &["-E", "nosbcrc"]);
    ishare_mkfs(&i2, &s2, &["-E", "nosbcrc"]);
    ishare_testkit::image::replace_unique(&i2, &fp_value(liar), &fp_value(honest));
    (i1, i2)
}

#[test]
fn lying_fingerprints_never_serve_another_images_bytes_with_verify() {
    let _g = serial();
    let Liars {
        honest,
        liar,
        hi,
        li,
        store,
        _dir: _keep,
    } = liars(10, 1 << 20);
    let opts = share_opts(store.path(), "d", "");

    // The liar first: its object is refused, so it serves its own bytes.
    let ml = ishare_mount(&li, &opts);
    ml.assert_reads("g", &liar);
    let mh = ishare_mount(&hi, &opts);
    mh.assert_reads("f", &honest);
    // A new liar mount once the honest object exists: still its own bytes.
    let ml2 = ishare_mount(&li, &opts);
    ml2.assert_reads("g", &liar);
    for m in [&ml, &ml2] {
        let log = m.log_text();
        assert!(
            log.contains(&format!(
                "{}: /g: content does not match its sha256 fingerprint",
                li.display()
            )),
            "no warning naming the image and path in {}:\n{log}",
            m.log_path().display()
        );
    }
    // The honest one is shared (its object exists and is verified).
    let objects = store_files(store.path());
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(fs::read(&objects[0]).unwrap(), honest);

    // verify=off trusts fingerprints as the kernel does: the liar reads the honest bytes.
    let trusting = ishare_mount(&li, &share_opts(store.path(), "d", ",verify=off"));
    trusting.assert_reads("g", &honest);
}

/// A liar and the honest file in one image, the liar opened first: its copy serves
/// it while being checked, but never the honest file, which waits for the check and
/// then gets its own object; closing and reopening the liar keeps its own bytes.
#[test]
fn a_liar_in_the_same_image_never_serves_the_honest_file() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let honest = Rng::new(12).bytes(8 << 20);
    let liar = Rng::new(13).bytes(8 << 20);
    let src = dir.path().join("s");
    write_file(&src, "f", &honest);
    write_file(&src, "g", &liar);
    let img = dir.path().join("i.erofs");
    ishare_mkfs(&img, &src, &["-E", "nosbcrc"]);
    ishare_testkit::image::replace_unique(&img, &fp_value(&liar), &fp_value(&honest));
    for extra in ["", ",passthrough=off"] {
        let store = tempfile::tempdir().unwrap();
        // In the foreground: dropping it waits for the daemon, and so for publishing.
        let m = ishare_mount_foreground(&img, &share_opts(store.path(), "d", extra));
        let g = fs::File::open(m.path().join("g")).unwrap();
        assert_eq!(fs::read(m.path().join("f")).unwrap(), honest, "{extra}");
        assert_eq!(fs::read(m.path().join("g")).unwrap(), liar, "{extra}");
        drop(g);
        assert_eq!(fs::read(m.path().join("g")).unwrap(), liar, "{extra}");
        assert_eq!(fs::read(m.path().join("f")).unwrap(), honest, "{extra}");
        drop(m);
        let objects = store_files(store.path());
        assert_eq!(objects.len(), 1, "{objects:?}");
        assert_eq!(fs::read(&objects[0]).unwrap(), honest);
    }
}

#[test]
fn same_fingerprint_with_another_size_is_not_shared() {
    let _g = serial();
    let Liars {
        honest,
        liar: longer,
        hi,
        li,
        store,
        _dir: _keep,
    } = liars(20, (1 << 20) + 4096);
    // verify=off: only the size rule can keep them apart.
    let opts = share_opts(store.path(), "d", ",verify=off");
    let mh = ishare_mount(&hi, &opts);
    mh.assert_reads("f", &honest);
    let ml = ishare_mount(&li, &opts);
    ml.assert_reads("g", &longer);
    let log = ml.log_text();
    assert!(
        log.contains("/g: same fingerprint as a shared file of another size"),
        "no size warning:\n{log}"
    );
}

/// As the kernel: an image without `COMPAT_ISHARE_XATTRS` mounts with `inode_share`,
/// unshared, and says so; nothing goes into the store.
#[test]
fn an_image_without_fingerprints_mounts_unshared_with_a_notice() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = Rng::new(30).bytes(300 << 10);
    write_file(&src, "f", &data);
    let image = dir.path().join("plain.erofs");
    ishare_mkfs(&image, &src, &["--no-xattr-inode-digest"]);
    let store = tempfile::tempdir().unwrap();
    // In the foreground, so that the notice, logged while mounting, lands in the log.
    let m = ishare_mount_foreground(&image, &share_opts(store.path(), "d", ""));
    m.assert_reads("f", &data);
    let log = m.log_text();
    assert!(
        log.contains("ishare xattrs not found; turning off inode_share"),
        "no notice:\n{log}"
    );
    assert!(
        log.contains("unshared (the image has no fingerprints)"),
        "{log}"
    );
    drop(m);
    assert!(store_files(store.path()).is_empty());
}

/// Regular files under `dir`, recursively, excluding the passthrough probe, lock files
/// and the domains' records (`records/`: verification records and seals).
fn store_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, |name| {
        name != "passthrough-probe" && !name.ends_with(".lock")
    })
    .into_iter()
    .filter(|p| !p.components().any(|c| c.as_os_str() == "records"))
    .collect()
}

#[test]
fn the_domain_id_stays_secret() {
    let _g = serial();
    let (_dir, img) = one_file_image(&Rng::new(30).bytes(100_000));
    let store = tempfile::tempdir().unwrap();
    let secret = "Sup3rSecretDomain";
    let m = ishare_mount(&img, &share_opts(store.path(), secret, ""));
    fs::read(m.path().join("f")).unwrap();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(secret), "/proc/mounts shows the domain id");
    let line = mounts
        .lines()
        .find(|l| l.contains(m.path().to_str().unwrap()))
        .expect("mount line");
    assert!(
        line.contains("fuse.ishare") && line.contains(" ro,"),
        "{line}"
    );
    for f in store_files(store.path()) {
        assert!(!f.to_string_lossy().contains(secret), "{f:?}");
    }
    assert!(
        !m.log_text().contains(secret),
        "the log shows the domain id"
    );
    for p in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = fs::read(p.path().join("cmdline"))
            && cmd
                .windows(b"--daemon-child".len())
                .any(|w| w == b"--daemon-child")
        {
            assert!(
                !cmd.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a daemon's command line shows the domain id"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata equals a kernel mount
// ---------------------------------------------------------------------------------------------

/// Everything lstat shows, per path, plus each directory's entry order.
fn stat_tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let md = fs::symlink_metadata(&p).unwrap();
        let mut line = format!(
            "ino={} mode={:o} nlink={} uid={} gid={} size={} blocks={} rdev={} mtime={}.{} ctime={}.{} atime={}.{}",
            md.ino(),
            md.mode(),
            md.nlink(),
            md.uid(),
            md.gid(),
            md.size(),
            md.blocks(),
            md.rdev(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec(),
            md.atime(),
            md.atime_nsec()
        );
        if md.is_dir() {
            let names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            line.push_str(&format!(" entries={names:?}"));
            for n in names {
                stack.push(rel.join(n));
            }
        }
        out.insert(rel.as_os_str().as_bytes().to_vec(), line);
    }
    out
}

fn statfs_line(p: &Path) -> String {
    let s = rustix::fs::statfs(p).unwrap();
    format!(
        "bsize={} blocks={} bfree={} bavail={} files={} ffree={} namelen={}",
        s.f_bsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_namelen
    )
}

fn assert_same_as_kernel(image: &Path, opts: &str) {
    let kernel = ErofsMount::new(image, &[]);
    let ours = ishare_mount(image, opts);
    assert_trees_eq(
        "kernel mount",
        &snapshot(kernel.path()),
        "ishare mount",
        &snapshot(ours.path()),
        &CompareOpts::EXACT,
    );
    let (a, b) = (stat_tree(kernel.path()), stat_tree(ours.path()));
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .take(20)
        .map(|(k, v)| {
            format!(
                "{}:\n  kernel {v}\n  ishare {}",
                String::from_utf8_lossy(k),
                b.get(k).map_or("(missing)", |s| s.as_str())
            )
        })
        .collect();
    assert!(
        diffs.is_empty() && a.len() == b.len(),
        "lstat differs ({} vs {} paths):\n{}\n{}",
        a.len(),
        b.len(),
        diffs.join("\n"),
        ours.log_text()
    );
    // statfs: everything but the type (FUSE) and the fsid.
    assert_eq!(statfs_line(kernel.path()), statfs_line(ours.path()));
}

/// Linked as `mount.fuse.ishare`, the binary takes mount(8)'s helper arguments
/// (`SOURCE TARGET -n -o rw,OPTIONS`, as `mount -t fuse.ishare` passes them; `rw` is
/// dropped, the mount is read-only as a kernel EROFS mount is): the mount shares like
/// `ishare mount`; `-f` (fake) does nothing; bad arguments exit 32.
#[test]
fn works_as_a_mount_helper() {
    let _g = serial();
    let p = pair(&[]);
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("mount.fuse.ishare");
    std::os::unix::fs::symlink(ishare_bin!(), &helper).unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "d", "");
    // The helper mounts through the node daemon (started by it, stopped at the end).
    let node = NodeDaemon::at();
    let fake = Command::new(&helper)
        .arg(&p.img1)
        .arg(dir.path())
        .args(["-f", "-o", &opts])
        .status()
        .unwrap();
    assert!(
        fake.success() && !is_mounted(dir.path()),
        "-f mounted or failed"
    );
    let bad = Command::new(&helper).arg(&p.img1).status().unwrap();
    assert_eq!(bad.code(), Some(32));
    run(Command::new(&helper)
        .env("ISHARE_SOCKET", node.socket())
        .arg(&p.img1)
        .arg(dir.path())
        .args(["-n", "-o", &format!("rw,{opts}")]));
    assert!(is_mounted(dir.path()), "the helper did not mount");
    let m = FuseMount::adopt(dir);
    check_big(&m, BIG1, &p.big_sum);
    drop(m);
    // The detached daemon publishes the object in the background.
    let start = Instant::now();
    while store_files(store.path()).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing shared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metadata_equals_a_kernel_mount() {
    let _g = serial();
    let src = SourceTree::new(&TreeSpec::small());
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let shared = share_opts(store.path(), "d", "");
    let flat = dir.path().join("flat.erofs");
    ishare_mkfs(&flat, src.path(), &[]);
    assert_same_as_kernel(&flat, "ro");
    assert_same_as_kernel(&flat, &shared);
    let chunked = dir.path().join("chunked.erofs");
    ishare_mkfs(&chunked, src.path(), &["--chunksize", "8192"]);
    assert_same_as_kernel(&chunked, &shared);
    // mkfs.erofs 1.9.4: LZ4HC-compressed (read through the reader's decompression).
    let lz4 = dir.path().join("lz4.erofs");
    run(Command::new(ishare_testkit::tools::mkfs_194())
        .args(["--quiet", "-zlz4hc", "--xattr-inode-digest"])
        .arg(&lz4)
        .arg(src.path()));
    assert_same_as_kernel(&lz4, "ro");
    assert_same_as_kernel(&lz4, &shared);
    // mkfs.erofs 1.9.4 with its own fingerprints, chunk indexes.
    let eu = dir.path().join("eu.erofs");
    run(Command::new(ishare_testkit::tools::mkfs_194())
        .args([
            "--quiet",
            "--xattr-inode-digest",
            "--chunksize=4096",
            "-Eforce-chunk-indexes",
        ])
        .arg(&eu)
        .arg(src.path()));
    assert_same_as_kernel(&eu, &shared);
}

// ---------------------------------------------------------------------------------------------
// Lifetime
// ---------------------------------------------------------------------------------------------

#[test]
fn unmounting_one_mount_while_another_reads_the_shared_file() {
    let _g = serial();
    let p = pair(&[]);
    let store = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "d", "");
    let m1 = ishare_mount(&p.img1, &opts);
    let m2 = ishare_mount(&p.img2, &opts);
    check_big(&m1, BIG1, &p.big_sum);
    let sum = hash_with_pause(&m2.path().join(BIG2), || {
        run(Command::new(ishare_bin!()).arg("umount").arg(m1.path()));
        assert!(!is_mounted(m1.path()));
        pagecache::drop_caches();
    });
    assert_eq!(sum, p.big_sum);
    check_big(&m2, BIG2, &p.big_sum);
}

/// Three times more shared files than the daemon may open (a hard limit of 128
/// descriptors): every file is still shared and reads right, as a mount keeps an
/// object open only while one of its files is open.
#[test]
fn more_shared_files_than_the_open_file_limit() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s");
    let files: Vec<(String, Vec<u8>)> = (0..400)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 7),
                Rng::new(1000 + i as u64).bytes(100 + i * 37),
            )
        })
        .collect();
    for (rel, data) in &files {
        write_file(&src, rel, data);
    }
    let img = dir.path().join("i.erofs");
    ishare_mkfs(&img, &src, &[]);
    let store = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "d", "");
    let m = mounts::ishare_mount_foreground(
        &ishare_bin!(),
        &["prlimit", "--nofile=128:128", "--"],
        &img,
        &opts,
    );
    // Some files held open at once, the others opened and closed one by one.
    let held: Vec<fs::File> = files[..20]
        .iter()
        .map(|(rel, _)| fs::File::open(m.path().join(rel)).unwrap())
        .collect();
    for (rel, data) in &files {
        assert_eq!(&fs::read(m.path().join(rel)).unwrap(), data, "{rel}");
    }
    drop(held);
    // Read again: the objects are opened anew, not prepared again.
    for (rel, data) in files.iter().step_by(13) {
        assert_eq!(&fs::read(m.path().join(rel)).unwrap(), data, "{rel}");
    }
    let log = m.log_text();
    drop(m);
    assert!(!log.contains("unshared"), "files went unshared:\n{log}");
    let objects = store_files(store.path());
    assert_eq!(objects.len(), files.len(), "one object per distinct file");
}

#[test]
fn kill_during_materialization_then_remount_reads_every_byte() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let big = Rng::new(40).bytes(256 << 20);
    let src = dir.path().join("s");
    write_file(&src, "big", &big);
    let img = dir.path().join("i.erofs");
    ishare_mkfs(&img, &src, &[]);
    drop(big);
    let want = sha256_file(&src.join("big"));
    let store = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "d", "");
    for delay_ms in [30u64, 150] {
        pagecache::drop_caches();
        let m = ishare_mount_foreground(&img, &opts);
        let path = m.path().join("big");
        let reader = std::thread::spawn(move || fs::read(path).map(|d| d.len()));
        std::thread::sleep(Duration::from_millis(delay_ms));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(m.pid() as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        // The reader gets an error (or, if preparation was fast, the whole file).
        let _ = reader.join().unwrap();
        drop(m);
        // Whatever the store holds under final names is complete and right.
        let objects = store_files(store.path());
        eprintln!(
            "kill -9 {delay_ms} ms into the first open: {} objects in the store",
            objects.len()
        );
        for f in objects {
            assert_eq!(sha256_file(&f), want, "damaged object {}", f.display());
        }
    }
    let m = ishare_mount_foreground(&img, &opts);
    assert_eq!(sha256_file(&m.path().join("big")), want);
    // The daemon publishes the object in the background and waits for it on exit.
    drop(m);
    let objects = store_files(store.path());
    assert_eq!(objects.len(), 1, "{objects:?}");
    // No temporary files stay behind (O_TMPFILE) or they are named .tmp.*.
    assert!(
        objects
            .iter()
            .all(|o| !o.file_name().unwrap().as_bytes().starts_with(b".tmp.")),
        "{objects:?}"
    );
}

/// 16 readers across 8 mounts (two images, one domain) for a bounded time: opens,
/// random preads and whole reads of the shared file, all racing the first preparation
/// of its object; every byte must be right and nothing may hang.
#[test]
fn concurrent_readers_across_mounts() {
    use std::os::unix::fs::FileExt;
    let _g = serial();
    let p = pair(&[]);
    let big = std::sync::Arc::new(Rng::new(1).bytes(BIG));
    let store = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "d1", "");
    let mounts: Vec<FuseMount> = (0..8)
        .map(|i| ishare_mount(if i % 2 == 0 { &p.img1 } else { &p.img2 }, &opts))
        .collect();
    let files: Vec<PathBuf> = mounts
        .iter()
        .enumerate()
        .map(|(i, m)| m.path().join(if i % 2 == 0 { BIG1 } else { BIG2 }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(6);
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..16usize {
        let (file, big, tx) = (files[t % 8].clone(), big.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(t as u64 + 1);
            let mut ops = 0u64;
            let res = (|| -> Result<u64, String> {
                while Instant::now() < deadline {
                    let f = fs::File::open(&file).map_err(|e| e.to_string())?;
                    for _ in 0..32 {
                        let x = rng.next_u64();
                        let len = (x % (1 << 20)) as usize + 1;
                        let off = (x >> 20) as usize % (BIG - len);
                        let mut buf = vec![0u8; len];
                        f.read_exact_at(&mut buf, off as u64)
                            .map_err(|e| format!("{}: {e}", file.display()))?;
                        if buf[..] != big[off..off + len] {
                            return Err(format!("{}: wrong bytes at {off}+{len}", file.display()));
                        }
                        ops += 1;
                    }
                }
                Ok(ops)
            })();
            let _ = tx.send(res);
        });
    }
    drop(tx);
    let mut total = 0;
    for _ in 0..16 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => panic!("reader failed: {e}"),
            Err(_) => panic!("a reader hung (no answer 60 s after the deadline)"),
        }
    }
    eprintln!("16 readers, 8 mounts: {total} verified preads");
    for (i, m) in mounts.iter().enumerate() {
        check_big(m, if i % 2 == 0 { BIG1 } else { BIG2 }, &p.big_sum);
    }
}

// ---------------------------------------------------------------------------------------------
// Remounts and the log
// ---------------------------------------------------------------------------------------------

/// The pid of the detached daemon serving `mountpoint` (`ishare mount --daemon-child …
/// MOUNTPOINT`), found in /proc, other than `old` (a daemon still exiting).
fn daemon_pid(mountpoint: &Path, old: Option<u32>) -> u32 {
    let want = mountpoint.as_os_str().as_bytes();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&&b"--daemon-child"[..])
            && args.contains(&want)
            && alive(pid)
            && Some(pid) != old
        {
            found.push(pid);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "daemons of {}: {found:?}",
        mountpoint.display()
    );
    found[0]
}

/// Waits until process `pid` is gone (at most 20 s, else the test fails).
#[track_caller]
fn wait_gone(pid: u32) {
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon {pid} hangs"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether process `pid` still runs (a zombie has exited).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Mount, `ishare umount`, mount again at once on the same directory, 24 times (every
/// other time with a reader busy on the old mount until just before the unmount): the
/// old daemon must be gone when `ishare umount` returns, and the new mount must still be
/// mounted and read right after the old daemon is gone (an exiting daemon used to
/// unmount whatever was mounted on its path by then).
#[test]
fn remounting_the_same_path_keeps_the_new_mount() {
    let _g = serial();
    let data = Rng::new(7).bytes(3 << 20);
    let (_dir, img) = image_of(&[("f", &data), ("d/small", b"small")]);
    let store = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "d", "");
    let mp = mounts::mount_point("ishare-remount-");
    let log = mp.path().with_extension("log");
    let mount = |old: Option<u32>| mount_logged(&img, mp.path(), &opts, &log, old);
    const ROUNDS: usize = 24;
    let (mut outlived, mut vanished) = (0, 0);
    let mut pid = mount(None);
    for round in 0..ROUNDS {
        if round % 2 == 1 {
            let f = mp.path().join("f");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = fs::read(&f);
                    }
                })
            };
            std::thread::sleep(Duration::from_millis(30));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        }
        run(Command::new(ishare_bin!()).arg("umount").arg(mp.path()));
        if alive(pid) {
            outlived += 1;
        }
        let old = pid;
        pid = mount(Some(old));
        wait_gone(old);
        // Give a late unmount by the old daemon's exit time to show.
        std::thread::sleep(Duration::from_millis(20));
        if !is_mounted(mp.path()) || fs::read(mp.path().join("f")).ok().as_ref() != Some(&data) {
            vanished += 1;
            if !is_mounted(mp.path()) {
                pid = mount(None);
            }
        }
    }
    run(Command::new(ishare_bin!()).arg("umount").arg(mp.path()));
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    eprintln!(
        "{ROUNDS} remounts: the old daemon outlived `ishare umount` {outlived} times, \
         the new mount vanished {vanished} times"
    );
    assert_eq!(
        (outlived, vanished),
        (0, 0),
        "(outlived umount, vanished) of {ROUNDS}; log:\n{text}"
    );
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
        .unwrap();
}

/// The exact sequence behind a vanishing remount, made deterministic by stopping the
/// old daemon (SIGSTOP) so that its exit surely comes after the new mount:
///
/// 1. `ishare umount M` while the old daemon is stopped must not return before the old
///    daemon is gone; its exit, after the new mount on M, must leave the new mount alone;
/// 2. a daemon whose mount was detached (busy, `umount -l`) and that is told to stop
///    (SIGTERM) after a new mount was made on M must not unmount the new one.
#[test]
fn an_old_daemon_never_unmounts_a_newer_mount() {
    use rustix::process::Signal;
    let _g = serial();
    let (_dir, img) = one_file_image(b"content");
    let mp = mounts::mount_point("ishare-remount-");
    let log = mp.path().with_extension("log");
    let mount = |old: Option<u32>| mount_logged(&img, mp.path(), "ro", &log, old);

    // 1. `ishare umount` with the old daemon stopped.
    let old = mount(None);
    signal(old, Signal::STOP);
    let mut umount = Command::new(ishare_bin!())
        .arg("umount")
        .arg(mp.path())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while is_mounted(mp.path()) {
        assert!(start.elapsed() < Duration::from_secs(20), "not unmounted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let new = mount(Some(old));
    std::thread::sleep(Duration::from_millis(100));
    let returned_early = umount.try_wait().unwrap().is_some();
    signal(old, Signal::CONT);
    let status = umount.wait().unwrap();
    let outlived = alive(old);
    wait_gone(old);
    std::thread::sleep(Duration::from_millis(50));
    let kept = is_mounted(mp.path())
        && fs::read(mp.path().join("f")).ok().as_deref() == Some(&b"content"[..]);
    if !kept && !is_mounted(mp.path()) {
        mount(None);
    }

    // 2. SIGTERM to a detached, busy daemon after a new mount on its path.
    let current = daemon_pid(mp.path(), None);
    let held = fs::File::open(mp.path().join("f")).unwrap();
    run(Command::new(ishare_bin!())
        .args(["umount", "-l"])
        .arg(mp.path()));
    let newer = mount(Some(current));
    signal(current, Signal::TERM);
    std::thread::sleep(Duration::from_millis(200));
    let kept_after_term = is_mounted(mp.path());
    drop(held);
    wait_gone(current);
    std::thread::sleep(Duration::from_millis(50));
    let kept_after_exit = is_mounted(mp.path());
    if kept_after_exit {
        run(Command::new(ishare_bin!()).arg("umount").arg(mp.path()));
    }
    wait_gone(newer);
    let _ = new;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    let waited = status.success() && !returned_early && !outlived;
    eprintln!(
        "umount waited for the old daemon: {waited}; the new mount survived the old \
         daemon's exit: {kept}; survived SIGTERM to a detached daemon: {kept_after_term}, \
         and its exit: {kept_after_exit}"
    );
    assert!(
        waited && kept && kept_after_term && kept_after_exit,
        "(umount waited {waited} ({status}), kept {kept}, kept after SIGTERM \
         {kept_after_term}, after exit {kept_after_exit}); log:\n{text}"
    );
}

/// Python's `open()` asks every file whether it is a terminal (TCGETS): thousands of
/// those must fail with ENOTTY, as on a kernel EROFS mount, and leave the daemon's log
/// small and in whole lines.
#[test]
fn unsupported_ioctls_fail_quietly() {
    let _g = serial();
    let (_dir, img) = one_file_image(b"hello");
    let store = tempfile::tempdir().unwrap();
    for opts in ["ro".to_string(), share_opts(store.path(), "d", "")] {
        let m = ishare_mount(&img, &opts);
        let f = m.path().join("f");
        let file = fs::File::open(&f).unwrap();
        for _ in 0..500 {
            assert_eq!(
                rustix::termios::tcgetattr(&file).err(),
                Some(rustix::io::Errno::NOTTY),
                "tcgetattr on a file of {opts}"
            );
        }
        let py = "import sys\nfor _ in range(3000):\n    open(sys.argv[1]).close()\n";
        let status = Command::new("python3")
            .args(["-c", py])
            .arg(&f)
            .status()
            .unwrap();
        assert!(status.success(), "python3 failed");
        let log = m.log_text();
        drop(m);
        assert!(
            !log.contains("Not Implemented"),
            "{opts}: ioctls logged:\n{log}"
        );
        assert!(log.len() < 16 << 10, "{opts}: {} bytes of log", log.len());
        for line in log.lines() {
            let (stamp, rest) = line.split_once(' ').unwrap_or_default();
            assert!(
                stamp.split_once('.').is_some_and(|(s, ms)| {
                    s.bytes().all(|b| b.is_ascii_digit()) && ms.len() == 3
                }) && rest.starts_with("ishare["),
                "{opts}: a partial log line: {line:?}\n{log}"
            );
        }
        assert!(log.is_empty() || log.ends_with('\n'));
    }
}

/// A scratch directory (removed on drop) holding `i.erofs`, an image of `files`
/// (path, content).
fn image_of(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s");
    for (path, content) in files {
        write_file(&src, path, content);
    }
    let img = dir.path().join("i.erofs");
    ishare_mkfs(&img, &src, &[]);
    (dir, img)
}

/// The same with one file `f`.
fn one_file_image(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    image_of(&[("f", content)])
}

/// `ishare mount -o OPTS,log=LOG IMAGE MP`, and the pid of its daemon (not `old`'s).
fn mount_logged(img: &Path, mp: &Path, opts: &str, log: &Path, old: Option<u32>) -> u32 {
    run(Command::new(ishare_bin!())
        .args([
            "mount",
            "--dedicated",
            "-o",
            &format!("{opts},log={}", log.display()),
        ])
        .arg(img)
        .arg(mp));
    daemon_pid(mp, old)
}

// ---------------------------------------------------------------------------------------------
// Security options: domain_id_file=, the command line warning, allow_other defaults
// ---------------------------------------------------------------------------------------------

/// A root-owned file of mode 0600 holding `id` and a newline, in a scratch directory.
fn id_file(id: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("domain-id");
    fs::write(&f, format!("{id}\n")).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    (dir, f)
}

/// How many objects the store holds once two mounts of `img` (options `o1`, `o2`) have
/// read `f`: waits for `want`, then a little longer, so a count above it shows too.
fn objects_after_two_mounts(
    img: &Path,
    o1: impl Fn(&Path) -> String,
    o2: impl Fn(&Path) -> String,
    want: usize,
) -> usize {
    let store = tempfile::tempdir().unwrap();
    let m1 = ishare_mount(img, &o1(store.path()));
    let m2 = ishare_mount(img, &o2(store.path()));
    fs::read(m1.path().join("f")).unwrap();
    fs::read(m2.path().join("f")).unwrap();
    let start = Instant::now();
    while store_files(store.path()).len() < want && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    drop((m1, m2));
    store_files(store.path()).len()
}

#[test]
fn domain_id_file_shares_like_domain_id() {
    let _g = serial();
    let (_dir, img) = one_file_image(&Rng::new(40).bytes(300_000));
    let (_a, fa) = id_file("domain-a");
    let (_a2, fa2) = id_file("domain-a");
    let (_b, fb) = id_file("domain-b");
    let opts = |store: &Path, f: &Path| {
        format!(
            "inode_share,domain_id_file={},store={}",
            f.display(),
            store.display()
        )
    };
    let n = objects_after_two_mounts(&img, |s| opts(s, &fa), |s| opts(s, &fa2), 1);
    assert_eq!(
        n, 1,
        "two files holding the same id do not share one object"
    );
    // The file's id is the same domain as domain_id= with that content.
    let n = objects_after_two_mounts(&img, |s| opts(s, &fa), |s| share_opts(s, "domain-a", ""), 1);
    assert_eq!(
        n, 1,
        "domain_id_file= and domain_id= of one id are two domains"
    );
    let n = objects_after_two_mounts(&img, |s| opts(s, &fa), |s| opts(s, &fb), 2);
    assert_eq!(n, 2, "two different ids share");
}

/// `ishare mount -o OPTS IMAGE DIR` must fail, saying something that contains `why`.
fn mount_refused(img: &Path, opts: &str, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ishare_bin!())
        .args(["mount", "--dedicated", "-o", opts])
        .arg(img)
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if is_mounted(dir.path()) {
        drop(FuseMount::adopt(dir));
        panic!("{opts}: mounted");
    }
    assert!(!out.status.success(), "{opts}: succeeded");
    assert!(err.contains(why), "{opts}: {err:?} does not say {why:?}");
    assert!(!err.contains("s3cr3t-id"), "{opts}: the error shows the id");
}

#[test]
fn an_unsafe_domain_id_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let (_dir, img) = one_file_image(b"hello");
    let store = tempfile::tempdir().unwrap();
    let (d, f) = id_file("s3cr3t-id");
    let opts = |f: &Path| {
        format!(
            "inode_share,domain_id_file={},store={}",
            f.display(),
            store.path().display()
        )
    };
    for mode in [0o640, 0o604, 0o620, 0o602] {
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
        mount_refused(&img, &opts(&f), "group or others");
    }
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
    mount_refused(&img, &opts(&f), "not owned by root");
    std::os::unix::fs::chown(&f, Some(0), None).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    mount_refused(&img, &opts(&link), "symbolic link");
    mount_refused(&img, &opts(d.path()), "not a regular file");
    mount_refused(
        &img,
        &format!("{},domain_id=x", opts(&f)),
        "exclude each other",
    );
    // The same file, safe, mounts.
    drop(ishare_mount(&img, &opts(&f)));
}

#[test]
fn a_domain_id_from_a_file_appears_nowhere() {
    let _g = serial();
    let (_dir, img) = one_file_image(&Rng::new(41).bytes(100_000));
    let store = tempfile::tempdir().unwrap();
    let secret = "FileHeldSecretDomain";
    let (_d, f) = id_file(secret);
    let opts = format!(
        "inode_share,domain_id_file={},store={}",
        f.display(),
        store.path().display()
    );
    // Through mount(8)'s helper too: its command line holds only the path.
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("mount.fuse.ishare");
    std::os::unix::fs::symlink(ishare_bin!(), &helper).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().with_extension("log");
    // The helper mounts through a node daemon it starts (logging to log=).
    let node = NodeDaemon::at();
    let out = Command::new(&helper)
        .env("ISHARE_SOCKET", node.socket())
        .arg(&img)
        .arg(dir.path())
        .args(["-o", &format!("{opts},log={}", log.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
    let helper_mount = FuseMount::adopt(dir);
    let m = ishare_mount(&img, &opts);
    for mp in [helper_mount.path(), m.path()] {
        fs::read(mp.join("f")).unwrap();
    }
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(secret), "/proc/mounts shows the domain id");
    assert!(
        !mounts.contains("domain_id"),
        "/proc/mounts shows domain_id"
    );
    let mut daemons = 0;
    for p in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = fs::read(p.path().join("cmdline")) {
            assert!(
                !cmd.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a command line shows the domain id: {}",
                String::from_utf8_lossy(&cmd)
            );
            // A mount's own daemon, and the node daemon.
            for marker in [&b"--daemon-child"[..], b"daemon\0--launched"] {
                daemons += cmd.windows(marker.len()).any(|w| w == marker) as usize;
            }
        }
    }
    assert!(daemons >= 2, "no daemons found");
    for text in [m.log_text(), fs::read_to_string(&log).unwrap_or_default()] {
        assert!(!text.contains(secret), "the log shows the domain id");
    }
    for f in store_files(store.path()) {
        assert!(!f.to_string_lossy().contains(secret), "{f:?}");
    }
}

#[test]
fn domain_id_on_a_command_line_draws_a_warning() {
    let _g = serial();
    let (_dir, img) = one_file_image(b"hello");
    let store = tempfile::tempdir().unwrap();
    let opts = share_opts(store.path(), "WarnedDomain", "");
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("mount.fuse.ishare");
    std::os::unix::fs::symlink(ishare_bin!(), &helper).unwrap();
    let check = |stderr: &[u8], log: &str, who: &str| {
        let err = String::from_utf8_lossy(stderr);
        for text in [&*err, log] {
            assert!(
                text.contains("warning") && text.contains("domain_id_file="),
                "{who}: no warning pointing at domain_id_file= in {text:?}"
            );
            assert!(text.contains("ISHARE_DOMAIN_ID"), "{who}: {text:?}");
            assert!(
                !text.contains("WarnedDomain"),
                "{who}: the warning shows the id"
            );
        }
    };
    for use_helper in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().with_extension("log");
        let all = format!("{opts},log={}", log.display());
        // The helper mounts through a node daemon it starts (logging to log=).
        let node = NodeDaemon::at();
        let out = if use_helper {
            Command::new(&helper)
                .env("ISHARE_SOCKET", node.socket())
                .arg(&img)
                .arg(dir.path())
                .args(["-o", &all])
                .output()
        } else {
            Command::new(ishare_bin!())
                .args(["mount", "--dedicated", "-o", &all])
                .arg(&img)
                .arg(dir.path())
                .output()
        }
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        let m = FuseMount::adopt(dir);
        fs::read(m.path().join("f")).unwrap();
        let who = if use_helper { "helper" } else { "ishare mount" };
        check(&out.stderr, &fs::read_to_string(&log).unwrap(), who);
        drop(m);
        drop(node);
    }
    // Neither the environment nor a file warns.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ishare_bin!())
        .env("ISHARE_DOMAIN_ID", "d")
        .args([
            "mount",
            "--dedicated",
            "-o",
            &format!("inode_share,store={}", store.path().display()),
        ])
        .arg(&img)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    drop(FuseMount::adopt(dir));
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// The options column of `mp`'s line in /proc/mounts.
fn proc_mounts_options(mp: &Path) -> Vec<String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == mp.to_str())
        .expect("mount line");
    line.split(' ')
        .nth(3)
        .unwrap()
        .split(',')
        .map(String::from)
        .collect()
}

#[test]
fn allow_other_is_nosuid_nodev_unless_asked() {
    let _g = serial();
    let (_dir, img) = one_file_image(b"hello");
    for (opts, nosuid, nodev) in [
        ("ro", false, false),
        ("allow_other", true, true),
        ("allow_other,suid", false, true),
        ("allow_other,dev", true, false),
        ("dev,allow_other,suid", false, false),
        ("nosuid", true, false),
    ] {
        let m = ishare_mount(&img, opts);
        let shown = proc_mounts_options(m.path());
        drop(m);
        let has = |o: &str| shown.iter().any(|s| s == o);
        assert_eq!(
            (has("nosuid"), has("nodev")),
            (nosuid, nodev),
            "-o {opts}: /proc/mounts shows {shown:?}"
        );
        assert!(has("ro"), "-o {opts}: {shown:?}");
    }
}
