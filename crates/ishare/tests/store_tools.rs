//! `ishare store stat`, `ishare store gc` and `ishare doctor` against live
//! `ishare mount`s:
//!
//! * stat counts the objects of several mounts per domain (tags only, never the ids),
//!   verified and unverified, which are in use, by how many mounts, and the bytes
//!   sharing saves;
//! * gc removes what no live mount holds and skips what one does; a mount reading
//!   while gc runs reads the right bytes, and after its unmount gc removes its objects;
//!   removing the whole store under a live mount changes nothing it reads, and a new
//!   mount prepares the object again;
//! * `gc --max-size` removes the least recently used unused objects first and stops
//!   once the store fits;
//! * `doctor --json` parses, finds FUSE usable here, and predicts the mode a mount
//!   then logs; a store that cannot be used makes it exit 1.
//!
//! Needs root and /dev/fuse (CI has both).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{self, FuseMount};
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::{files_under, hash_with_pause};
use ishare_testkit::tools::{run, run_unchecked};
use ishare_testkit::tree::write_file;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// `ishare mount -f` as a child process: the daemon is our child, so an unmount can wait
/// until it has exited and released its hold on the store (gc right after must see that);
/// one that does not exit fails the test.
fn mount(image: &Path, opts: &str) -> FuseMount {
    mounts::ishare_mount_foreground(&ishare_bin!(), &[], image, opts).require_exit()
}

/// An image built by `ishare mkfs` (fingerprints on) from `files`.
fn image(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    for (rel, data) in files {
        write_file(&src, rel, data);
    }
    let img = dir.join(format!("{name}.erofs"));
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet"])
        .arg(&img)
        .arg(&src));
    fs::remove_dir_all(&src).unwrap();
    img
}

/// A test's scratch directory (sources, images) and store, once root is checked.
struct Scratch {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

fn scratch() -> Scratch {
    ishare_testkit::tools::require_root();
    Scratch {
        dir: tempfile::tempdir().unwrap(),
        store: tempfile::tempdir().unwrap(),
    }
}

impl Scratch {
    /// An image `name` holding 32 MiB from `Rng::new(seed)` at `rel`, mounted and read
    /// once: its object is prepared and published.
    fn big_mount(&self, seed: u64, name: &str, rel: &str) -> (Vec<u8>, FuseMount) {
        let big = Rng::new(seed).bytes(32 * MIB);
        let img = image(self.dir.path(), name, &[(rel, &big)]);
        let m = self.mount(&img);
        m.assert_reads(rel, &big);
        stat_when(self.store.path(), 1);
        (big, m)
    }

    /// A foreground mount of `img` sharing in domain "d" of the store.
    fn mount(&self, img: &Path) -> FuseMount {
        mount(img, &share_opts(self.store.path(), "d", ""))
    }
}

/// With `prepare=open`: the objects these tests count are those of the files read.
fn share_opts(store: &Path, domain: &str, extra: &str) -> String {
    format!(
        "inode_share,domain_id={domain},store={},prepare=open{extra}",
        store.display()
    )
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// `ishare ARGS --json`, which must succeed; its output parsed.
fn json(args: &[&str]) -> Value {
    let out = run(Command::new(ishare_bin!()).args(args).arg("--json"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ishare {args:?} --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stat(store: &Path) -> Value {
    json(&["store", "stat", "--store", store.to_str().unwrap()])
}

fn gc(store: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["store", "gc", "--store", store.to_str().unwrap()];
    args.extend_from_slice(extra);
    json(&args)
}

/// `ishare store gc EXTRA`, which must report `(removed, in use)` objects.
fn gc_expect(store: &Path, extra: &[&str], want: (u64, u64)) -> Value {
    let r = gc(store, extra);
    assert_eq!(
        (n(&r, "removed_objects"), n(&r, "in_use_objects")),
        want,
        "{r:#}"
    );
    r
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v:#}"))
}

/// Mounts publish objects in the background: waits until stat shows `objects`.
fn stat_when(store: &Path, objects: u64) -> Value {
    let start = Instant::now();
    loop {
        let v = stat(store);
        if n(&v, "objects") == objects || start.elapsed() > Duration::from_secs(20) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Object files under the store (final names only: 64 hex, maybe with `.u`).
fn object_files(store: &Path) -> Vec<PathBuf> {
    files_under(store, |name| {
        name.trim_end_matches(".u").len() == 64 && !name.ends_with(".lock")
    })
}

#[test]
fn stat_counts_the_objects_of_several_mounts() {
    let s = scratch();
    let (dir, store) = (&s.dir, &s.store);
    let mut rng = Rng::new(1);
    let shared = rng.bytes(4 * MIB);
    let only1 = rng.bytes(100_000);
    let only2 = rng.bytes(200_000);
    let img1 = image(dir.path(), "1", &[("shared", &shared), ("only1", &only1)]);
    let img2 = image(
        dir.path(),
        "2",
        &[("d/shared-copy", &shared), ("only2", &only2)],
    );
    let (d1, d2) = ("Secret-Domain-One", "Secret-Domain-Two");
    let m1 = mount(&img1, &share_opts(store.path(), d1, ""));
    let m2 = mount(&img2, &share_opts(store.path(), d1, ""));
    // Another domain, unverified: its own object of the same content.
    let m3 = mount(&img1, &share_opts(store.path(), d2, ",verify=off"));
    m1.assert_reads("shared", &shared);
    m1.assert_reads("only1", &only1);
    m2.assert_reads("d/shared-copy", &shared);
    m2.assert_reads("only2", &only2);
    m3.assert_reads("shared", &shared);

    let v = stat_when(store.path(), 4);
    let text = v.to_string();
    for secret in [d1, d2] {
        assert!(!text.contains(secret), "stat shows a domain id: {v:#}");
    }
    assert_eq!(n(&v, "objects"), 4, "{v:#}");
    assert_eq!((n(&v, "verified"), n(&v, "unverified")), (3, 1), "{v:#}");
    let bytes = (2 * shared.len() + only1.len() + only2.len()) as u64;
    assert_eq!(n(&v, "bytes"), bytes, "{v:#}");
    assert_eq!(n(&v, "in_use_objects"), 4, "{v:#}");
    assert_eq!(n(&v, "mounts"), 3, "{v:#}");
    // Only the shared file of domain 1 is held by two mounts.
    assert_eq!(n(&v, "bytes_saved"), shared.len() as u64, "{v:#}");
    assert_eq!(n(&v, "tmp_files"), 0, "{v:#}");
    let domains = v["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2, "{v:#}");
    let mut per: Vec<(u64, u64, u64, u64)> = domains
        .iter()
        .map(|d| {
            let tag = d["tag"].as_str().unwrap();
            assert!(
                tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit()),
                "{tag}"
            );
            (
                n(d, "objects"),
                n(d, "unverified"),
                n(d, "mounts"),
                n(d, "bytes_saved"),
            )
        })
        .collect();
    per.sort();
    assert_eq!(per, [(1, 1, 1, 0), (3, 0, 2, shared.len() as u64)], "{v:#}");

    // Human-readable output names the same figures.
    let out = run(Command::new(ishare_bin!())
        .args(["store", "stat", "--store"])
        .arg(store.path()));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("4 objects (3 verified, 1 unverified)") && human.contains("by 3 mounts"),
        "{human}"
    );

    // Once a mount is gone, its objects are no longer in use.
    m3.unmount();
    let v = stat(store.path());
    assert_eq!((n(&v, "in_use_objects"), n(&v, "mounts")), (3, 2), "{v:#}");
    drop((m1, m2));
    let v = stat(store.path());
    assert_eq!(
        (
            n(&v, "objects"),
            n(&v, "in_use_objects"),
            n(&v, "bytes_saved")
        ),
        (4, 0, 0),
        "{v:#}"
    );
}

#[test]
fn gc_removes_unused_objects_and_skips_held_ones() {
    let s = scratch();
    let (dir, store) = (&s.dir, &s.store);
    let mut rng = Rng::new(2);
    let a = rng.bytes(MIB);
    let b = rng.bytes(2 * MIB);
    let img_a = image(dir.path(), "a", &[("a", &a)]);
    let img_b = image(dir.path(), "b", &[("b", &b)]);
    let ma = s.mount(&img_a);
    let mb = s.mount(&img_b);
    ma.assert_reads("a", &a);
    mb.assert_reads("b", &b);
    stat_when(store.path(), 2);

    // Both in use: nothing goes, not even in a dry run.
    gc_expect(store.path(), &["--dry-run"], (0, 2));
    gc_expect(store.path(), &[], (0, 2));
    assert_eq!(object_files(store.path()).len(), 2);

    mb.unmount();
    // A dry run tells, and removes nothing.
    gc_expect(store.path(), &["--dry-run"], (1, 1));
    assert_eq!(object_files(store.path()).len(), 2);
    let r = gc_expect(store.path(), &[], (1, 1));
    assert!(n(&r, "removed_bytes") >= b.len() as u64, "{r:#}");
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r:#}");
    let left = object_files(store.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        fs::read(&left[0]).unwrap(),
        a,
        "gc removed the object in use"
    );
    // The mount still reads, after its pages are gone too.
    drop_caches();
    ma.assert_reads("a", &a);

    // A new mount of b prepares its object again.
    let mb = s.mount(&img_b);
    mb.assert_reads("b", &b);
    stat_when(store.path(), 2);
    drop(mb);
    ma.unmount();
    let r = gc_expect(store.path(), &[], (2, 0));
    assert_eq!(n(&r, "size_after"), 0, "{r:#}");
    // Lock, probe files and directories went too: only the empty layout directory is left.
    let v1: Vec<_> = fs::read_dir(store.path().join("v1")).unwrap().collect();
    assert!(v1.is_empty(), "{v1:?}");
    let v = stat(store.path());
    assert_eq!((n(&v, "objects"), n(&v, "lock_files")), (0, 0), "{v:#}");
}

fn drop_caches() {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

#[test]
fn gc_while_a_mount_reads_then_after_its_unmount() {
    let s = scratch();
    let store = &s.store;
    // The first open prepares the object; it is published in the background.
    let (big, m) = s.big_mount(3, "i", "big");
    drop_caches();
    let sum = hash_with_pause(&m.path().join("big"), || {
        gc_expect(store.path(), &[], (0, 1));
        let r = gc(store.path(), &["--max-size", "0"]);
        assert_eq!(n(&r, "removed_objects"), 0, "{r:#}");
        drop_caches();
    });
    assert_eq!(sum, sha256(&big));
    m.assert_reads("big", &big);
    assert_eq!(object_files(store.path()).len(), 1);
    m.unmount();
    gc_expect(store.path(), &[], (1, 0));
    assert!(object_files(store.path()).is_empty());
}

/// Removing the store (every object, every directory) under a live mount: the mount
/// keeps reading its objects, which live on while open, also from disk once their
/// pages are dropped; a new mount prepares the object again.
#[test]
fn removing_the_store_under_a_live_mount_changes_nothing_it_reads() {
    let s = scratch();
    let store = &s.store;
    let (big, m1) = s.big_mount(4, "1", "big");
    let img2 = image(s.dir.path(), "2", &[("x/big2", &big)]);
    let sum = hash_with_pause(&m1.path().join("big"), || {
        fs::remove_dir_all(store.path().join("v1")).unwrap();
        drop_caches();
    });
    assert_eq!(sum, sha256(&big));
    // New opens through the same mount use the same (removed) object.
    m1.assert_reads("big", &big);
    // Another mount finds no object and prepares one.
    let m2 = s.mount(&img2);
    m2.assert_reads("x/big2", &big);
    let v = stat_when(store.path(), 1);
    assert_eq!((n(&v, "objects"), n(&v, "in_use_objects")), (1, 1), "{v:#}");
    m1.assert_reads("big", &big);
}

/// Sets an object's atime and mtime `age` before now.
fn age(path: &Path, age: Duration) {
    let t = SystemTime::now() - age;
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
}

#[test]
fn gc_max_size_removes_least_recently_used_first() {
    let s = scratch();
    let (dir, store) = (&s.dir, &s.store);
    let mut rng = Rng::new(5);
    let files: Vec<Vec<u8>> = (0..4).map(|_| rng.bytes(MIB)).collect();
    let names = ["f0", "f1", "f2", "f3"];
    let entries: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&files)
        .map(|(n, d)| (*n, d.as_slice()))
        .collect();
    let img = image(dir.path(), "all", &entries);
    let img0 = image(dir.path(), "zero", &[("only-f0", &files[0])]);
    let m = s.mount(&img);
    for (n, d) in names.iter().zip(&files) {
        m.assert_reads(n, d);
    }
    stat_when(store.path(), 4);
    m.unmount();
    // Which object holds which file: by content. Then f0 is made the least recently
    // used, f3 the most.
    let objects = object_files(store.path());
    assert_eq!(objects.len(), 4);
    let mut by_file: Vec<PathBuf> = Vec::new();
    for d in &files {
        let o = objects
            .iter()
            .find(|o| fs::read(o).unwrap() == *d)
            .expect("an object per file")
            .clone();
        by_file.push(o);
    }
    let age_all = || {
        for (i, o) in by_file.iter().enumerate() {
            age(o, Duration::from_secs(3600 * (10 - i as u64)));
        }
    };
    age_all();
    let du: u64 = by_file
        .iter()
        .map(|o| fs::metadata(o).unwrap().blocks() * 512)
        .sum();
    assert_eq!(du, 4 * MIB as u64, "objects take more than their size here");

    // f0, the oldest, is in use: skipped; f1 and f2 go; then 2 MiB fit in 2600 KiB.
    let m0 = s.mount(&img0);
    m0.assert_reads("only-f0", &files[0]);
    // (Reading it made it the most recently used: make it the oldest again.)
    age_all();
    let r = gc(store.path(), &["--max-size", "2600K"]);
    assert_eq!(n(&r, "removed_objects"), 2, "{r:#}");
    assert_eq!(n(&r, "in_use_objects"), 1, "{r:#}");
    assert_eq!(n(&r, "kept_objects"), 1, "{r:#}");
    assert_eq!(n(&r, "size_after"), 2 * MIB as u64, "{r:#}");
    let exists: Vec<bool> = by_file.iter().map(|o| o.exists()).collect();
    assert_eq!(exists, [true, false, false, true], "{r:#}");

    // A size it already fits: nothing goes.
    let r = gc(store.path(), &["--max-size", "2M"]);
    assert_eq!(
        (n(&r, "removed_objects"), n(&r, "kept_objects")),
        (0, 1),
        "{r:#}"
    );
    // Bad sizes are refused.
    let out = run_unchecked(
        Command::new(ishare_bin!())
            .args(["store", "gc", "--max-size", "2X", "--store"])
            .arg(store.path()),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid size"));
    assert!(by_file[3].exists());
    drop(m0);
}

#[test]
fn doctor_reports_fuse_and_predicts_the_mount_mode() {
    ishare_testkit::tools::require_root();
    let store_parent = tempfile::tempdir().unwrap();
    let store = store_parent.path().join("store");
    let v = json(&["doctor", "--store", store.to_str().unwrap()]);
    assert_eq!(v["ready"], true, "{v:#}");
    assert_eq!(v["fuse"]["device"], true, "{v:#}");
    assert_eq!(v["fuse"]["openable"], true, "{v:#}");
    assert_eq!(v["fuse"]["mounted"], true, "{v:#}");
    assert_eq!(v["store"]["exists"], false, "{v:#}");
    assert_eq!(v["store"]["writable"], true, "{v:#}");
    assert!(
        v["kernel"]["release"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let checks = v["checks"].as_array().unwrap();
    for name in [
        "kernel",
        "erofs",
        "fuse_device",
        "fuse_mount",
        "passthrough",
        "store",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v:#}"));
        assert!(
            ["ok", "warn", "no"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
    }
    // Probing left nothing behind: no store, no test mount.
    assert!(!store.exists(), "doctor created the store");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains("ishare-doctor"),
        "a test mount stayed:\n{info}"
    );

    // The mode it predicts is the one a mount logs.
    let mode = v["mode"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = Rng::new(6).bytes(100_000);
    let img = image(dir.path(), "i", &[("f", &data)]);
    let m = mount(&img, &share_opts(&store, "d", ""));
    m.assert_reads("f", &data);
    let log = m.log_text();
    let logged = if log.contains("kernel FUSE passthrough to store objects") {
        "passthrough"
    } else if log.contains("daemon reads from store objects") {
        "direct_io"
    } else {
        panic!("no mode in the mount's log:\n{log}")
    };
    assert_eq!(mode, logged, "doctor: {v:#}\nmount log:\n{log}");
    // As root with CAP_SYS_ADMIN on Linux 6.9+ (CI), that is passthrough.
    if v["passthrough"]["cap_sys_admin"] == true && v["passthrough"]["offered"] == true {
        assert_eq!(mode, "passthrough", "{v:#}");
    }
    drop(m);

    // Human-readable lines, exit 0.
    let out = run(Command::new(ishare_bin!())
        .args(["doctor", "--store"])
        .arg(&store));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("fuse_device")),
        "{text}"
    );

    // A store that cannot be used (a file where the directory should be): exit 1.
    let file = store_parent.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let out = run_unchecked(
        Command::new(ishare_bin!())
            .args(["doctor", "--json", "--store"])
            .arg(&file),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ready"], false, "{v:#}");
    assert_eq!(v["mode"], "unavailable", "{v:#}");
}

// ---------------------------------------------------------------------------------------------
// The store path (issue 15, item 3): a store others can change is refused
// ---------------------------------------------------------------------------------------------

/// uid and gid of `nobody`, the unprivileged user the attacks run as.
const NOBODY: u32 = 65534;

/// A scratch directory owned by `nobody` (mode 0755): what an unprivileged user controls.
fn nobody_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(d.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}

/// `ishare mount -o OPTS IMAGE` (detached) on a fresh mount point: `Ok` (unmounted
/// again) or `Err(stderr)`.
fn try_mount(img: &Path, opts: &str) -> Result<(), String> {
    let mp = tempfile::tempdir().unwrap();
    let out = run_unchecked(
        Command::new(ishare_bin!())
            .args(["mount", "--dedicated", "-o", opts])
            .arg(img)
            .arg(mp.path()),
    );
    if out.status.success() {
        fs::read(mp.path().join("f")).unwrap();
        run(Command::new(ishare_bin!()).arg("umount").arg(mp.path()));
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_store_under_a_directory_others_control_is_refused() {
    let s = scratch();
    let img = image(s.dir.path(), "i", &[("f", &Rng::new(1).bytes(100_000))]);
    let evil = nobody_dir();
    // Missing under nobody's directory: refused, the offender named, nothing created.
    let store = evil.path().join("store");
    let err = try_mount(&img, &share_opts(&store, "d", "")).expect_err("mounted");
    assert!(
        err.contains(&evil.path().display().to_string()) && err.contains("uid 65534"),
        "{err}"
    );
    assert!(!store.exists());
    // A store nobody laid out, with the passthrough probe a symlink to a file root
    // would create: refused, nothing created there.
    let (safe, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    try_mount(&img, &share_opts(safe.path(), "d", "")).unwrap();
    let tag = fs::read_dir(safe.path().join("v1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let ddir = store.join("v1").join(&tag);
    fs::create_dir_all(&ddir).unwrap();
    let victim = outside.path().join("victim");
    std::os::unix::fs::symlink(&victim, ddir.join("passthrough-probe")).unwrap();
    run(Command::new("chown")
        .args(["-R", "-h", "65534:65534"])
        .arg(&store));
    let err = try_mount(&img, &share_opts(&store, "d", "")).expect_err("mounted");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(!victim.exists(), "root followed nobody's symlink");
    // Even in a safe store a symlink there (however it came) is never followed.
    let probe = safe.path().join("v1").join(&tag).join("passthrough-probe");
    fs::remove_file(&probe).unwrap();
    std::os::unix::fs::symlink(&victim, &probe).unwrap();
    let _ = try_mount(&img, &share_opts(safe.path(), "d", ""));
    assert!(!victim.exists(), "the probe followed a symlink");
    // The read-only tools warn.
    let out = run(Command::new(ishare_bin!())
        .args(["store", "stat", "--store"])
        .arg(&store));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("unsafe store path"), "{e}");
}

#[test]
fn a_missing_store_is_created_private_only_under_a_safe_parent() {
    let s = scratch();
    let img = image(s.dir.path(), "i", &[("f", &Rng::new(2).bytes(100_000))]);
    let safe = tempfile::tempdir().unwrap();
    fs::set_permissions(
        safe.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let store = safe.path().join("nonexistent/a/b");
    try_mount(&img, &share_opts(&store, "d", "")).unwrap();
    for p in [
        safe.path().join("nonexistent"),
        safe.path().join("nonexistent/a"),
        store,
    ] {
        assert_eq!(mode(&p), 0o700, "{p:?}");
    }
    let evil = nobody_dir();
    let store = evil.path().join("nonexistent/a/b");
    let err = try_mount(&img, &share_opts(&store, "d", "")).expect_err("mounted");
    assert!(err.contains(&evil.path().display().to_string()), "{err}");
    assert!(!evil.path().join("nonexistent").exists());
}

#[test]
fn objects_are_not_readable_by_others() {
    let s = scratch();
    let data = Rng::new(3).bytes(100_000);
    let img = image(s.dir.path(), "i", &[("f", &data)]);
    // A store root others may read (as an older version or an admin left it) is
    // tightened.
    fs::set_permissions(
        s.store.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let m = s.mount(&img);
    m.assert_reads("f", &data);
    stat_when(s.store.path(), 1);
    drop(m);
    assert_eq!(mode(s.store.path()), 0o700);
    let objects = object_files(s.store.path());
    assert_eq!(objects.len(), 1);
    for o in &objects {
        assert_eq!(mode(o) & 0o077, 0, "{o:?} readable by others");
        let mut d = o.parent().unwrap();
        while d != s.store.path() {
            assert_eq!(mode(d) & 0o077, 0, "{d:?} open to others");
            d = d.parent().unwrap();
        }
        // And actually, as nobody.
        let out = run_unchecked(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
                .arg(o),
        );
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "nobody read {o:?}"
        );
    }
}
