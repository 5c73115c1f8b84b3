//! `verify=on` verifies once, and a tampered object is never served:
//!
//! * a second mount of the same image hashes nothing (the domain's record says its
//!   files were verified, the objects' seals say they are as published); once the image
//!   file changes (a `touch`, or a byte rewritten) its files are hashed again;
//! * a byte flipped in a published object (same size, mtime restored) is noticed by
//!   the next mount that uses the object: it reads the right bytes, warns about the
//!   damaged object, and the object is rebuilt.
//!
//! What was hashed is read from the line each mount logs when it ends ("N files hashed
//! for verification, M verified by the record"). Also: `prepare=mount` (the default)
//! verifies and copies every file in the background before anything opens it.
//!
//! Needs root and /dev/fuse.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_testkit::ishare_bin;
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::files_under;
use ishare_testkit::tools::run;
use ishare_testkit::tree::write_file;

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

/// Mounts `img` (detached, verify=on by default) with `prepare=open` (what is hashed
/// is then what the reads below ask for), checks that every file reads as `files`
/// says, unmounts with `ishare umount` (which waits for the daemon), and returns the
/// daemon's log.
fn mount_read_unmount(img: &Path, store: &Path, files: &[(&str, &[u8])]) -> String {
    mount_read_unmount_with(img, store, files, "prepare=open", |_, _| {})
}

/// As [`mount_read_unmount`], with the extra mount options `extra`, calling
/// `before_reads(mount point, log file)` first.
fn mount_read_unmount_with(
    img: &Path,
    store: &Path,
    files: &[(&str, &[u8])],
    extra: &str,
    before_reads: impl FnOnce(&Path, &Path),
) -> String {
    let mp = tempfile::Builder::new()
        .prefix("ishare-mnt-")
        .tempdir()
        .unwrap();
    let log = mp.path().with_extension("log");
    run(Command::new(ishare_bin!())
        .args([
            "mount",
            "--dedicated",
            "-o",
            &format!(
                "inode_share,domain_id=verify-record-test,store={},log={},{extra}",
                store.display(),
                log.display()
            ),
        ])
        .arg(img)
        .arg(mp.path()));
    before_reads(mp.path(), &log);
    let mut wrong = Vec::new();
    for (rel, want) in files {
        let got = fs::read(mp.path().join(rel));
        if got.as_deref().ok() != Some(*want) {
            wrong.push(*rel);
        }
    }
    run(Command::new(ishare_bin!()).arg("umount").arg(mp.path()));
    // The daemon logs its summary as it ends; `ishare umount` waits for a daemon it
    // finds registered, so this is at once but for a slow machine's race.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut text = fs::read_to_string(&log).unwrap_or_default();
    while !text.contains("files hashed for verification") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        text = fs::read_to_string(&log).unwrap_or_default();
    }
    let _ = fs::remove_file(&log);
    assert!(wrong.is_empty(), "wrong bytes in {wrong:?}\n{text}");
    text
}

/// (files hashed, files verified by the record) as the mount's last summary says.
fn hashed(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("files hashed for verification"))
        .unwrap_or_else(|| panic!("no verification summary in the log:\n{log}"));
    let num_before = |what: &str| -> u64 {
        let head = &line[..line.find(what).expect("in the line")];
        head.trim_end()
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {what:?}: {line}"))
    };
    (
        num_before("files hashed"),
        num_before("verified by the record"),
    )
}

/// The published objects (64 hex digits) under `store`.
fn objects(store: &Path) -> Vec<PathBuf> {
    files_under(store, |name| {
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn skip() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}

#[test]
fn a_second_mount_hashes_nothing_until_the_image_changes() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(11);
    let contents: Vec<Vec<u8>> = [5_000, 70_000, 300_000, 1_000_000]
        .iter()
        .map(|&n| rng.bytes(n))
        .collect();
    let names = ["a", "d/b", "d/e/c", "big"];
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&contents)
        .map(|(n, c)| (*n, c.as_slice()))
        .collect();
    let img = image(dir.path(), "i", &files);
    let n = files.len() as u64;

    // First mount: every file is copied into a new object, whose copy is hashed.
    let log = mount_read_unmount(&img, store.path(), &files);
    assert_eq!(hashed(&log), (n, 0), "{log}");
    assert_eq!(objects(store.path()).len(), files.len());

    // Second mount of the same image: the record and the seals say it all.
    let log = mount_read_unmount(&img, store.path(), &files);
    assert_eq!(hashed(&log), (0, n), "{log}");
    let log = mount_read_unmount(&img, store.path(), &files);
    assert_eq!(hashed(&log), (0, n), "{log}");

    // The image file touched: its ctime moved, nothing of the record applies.
    run(Command::new("touch").arg(&img));
    let log = mount_read_unmount(&img, store.path(), &files);
    assert_eq!(hashed(&log), (n, 0), "{log}");
    // ... and recorded again.
    let log = mount_read_unmount(&img, store.path(), &files);
    assert_eq!(hashed(&log), (0, n), "{log}");

    // One byte of the image rewritten with the same value, times restored: the ctime
    // still tells.
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&img)
        .unwrap();
    let (atime, mtime) = {
        let md = f.metadata().unwrap();
        (md.accessed().unwrap(), md.modified().unwrap())
    };
    let mut b = [0u8; 1];
    let at = f.metadata().unwrap().size() - 1;
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&b, at).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(atime).set_modified(mtime))
        .unwrap();
    drop(f);
    let log = mount_read_unmount(&img, store.path(), &files);
    assert_eq!(hashed(&log), (n, 0), "{log}");

    // The same content in another image file (another inode) is hashed too.
    let copy = dir.path().join("copy.erofs");
    fs::copy(&img, &copy).unwrap();
    let log = mount_read_unmount(&copy, store.path(), &files);
    assert_eq!(hashed(&log), (n, 0), "{log}");
}

#[test]
fn a_tampered_object_is_detected_and_never_served() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let shared = Rng::new(12).bytes(200_000);
    let img_a = image(dir.path(), "a", &[("x", &shared)]);
    let img_b = image(
        dir.path(),
        "b",
        &[("other/place/x", &shared), ("y", b"why")],
    );

    mount_read_unmount(&img_a, store.path(), &[("x", &shared)]);
    let objs = objects(store.path());
    assert_eq!(objs.len(), 1, "{objs:?}");
    let obj = &objs[0];

    // One byte flipped in place, same size, mtime (and atime) set back.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(obj)
        .unwrap();
    let md = f.metadata().unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100_000).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], 100_000).unwrap();
    f.set_times(
        fs::FileTimes::new()
            .set_accessed(md.accessed().unwrap())
            .set_modified(md.modified().unwrap()),
    )
    .unwrap();
    drop(f);
    let tampered = fs::read(obj).unwrap();
    assert_ne!(tampered, shared);
    assert_eq!(
        fs::metadata(obj).unwrap().modified().unwrap(),
        md.modified().unwrap()
    );

    // Image B holds the same file elsewhere: it reads its right bytes, and says why.
    let files_b: [(&str, &[u8]); 2] = [("other/place/x", &shared), ("y", b"why")];
    let log = mount_read_unmount(&img_b, store.path(), &files_b);
    let warning = log
        .lines()
        .find(|l| l.contains("shared object") && l.contains("damaged or tampered with"))
        .unwrap_or_else(|| panic!("no warning about the damaged object:\n{log}"));
    assert!(
        warning.contains(&obj.display().to_string()) && warning.contains("other/place/x"),
        "the warning names neither the object nor the file: {warning}"
    );
    // The object was rebuilt (under its name) from B's verified content.
    assert_eq!(objects(store.path()).len(), 2, "x's and y's");
    assert_eq!(fs::read(obj).unwrap(), shared);

    // Both images read right from now on, hashing nothing again.
    let log = mount_read_unmount(&img_a, store.path(), &[("x", &shared)]);
    assert_eq!(hashed(&log), (0, 1), "{log}");
    let log = mount_read_unmount(&img_b, store.path(), &files_b);
    assert_eq!(hashed(&log), (0, 2), "{log}");
}

/// Waits (up to 60 s) until `done(log text)` holds.
fn wait_for(log: &Path, done: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if done(&text) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "waited 60 s:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn prepare_mount_verifies_and_copies_every_file_before_any_open() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(12);
    let owned = [
        ("a", 3_000),
        ("d/b", 90_000),
        ("d/e/big", 2_000_000),
        ("one", 1),
    ]
    .map(|(name, len)| (name, rng.bytes(len)));
    let files: Vec<(&str, &[u8])> = owned.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    let img = image(dir.path(), "i", &files);
    let n = files.len();

    // The default: every object is published before anything is read.
    let copied = format!("{n} copied into new objects");
    let log = mount_read_unmount_with(&img, store.path(), &files, "", |_, log| {
        wait_for(log, |t| {
            t.contains(&copied) && objects(store.path()).len() == n
        })
    });
    // Each copy hashed once, ahead; the opens found their files in the record.
    assert_eq!(hashed(&log), (n as u64, n as u64), "{log}");

    // A second mount prepares again: the record and the store have it all.
    let ready = format!("0 copied into new objects, 0 verified, {n} ready already");
    let log = mount_read_unmount_with(&img, store.path(), &files, "prepare=mount", |_, log| {
        wait_for(log, |t| t.contains("prepared ahead"))
    });
    assert!(log.contains(&ready), "{log}");
    assert_eq!(hashed(&log), (0, n as u64), "{log}");
}
