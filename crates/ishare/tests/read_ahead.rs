//! Reading ahead across files: the first open of a shared file in a daemon has the
//! objects of the few files that follow it in the image's inode order read into the
//! page cache (small files decided ahead, their objects held until opened), so that a
//! walk of a directory finds most of its files cached before it opens them; nothing is
//! read before the first open, nor at opens of files opened before.
//!
//! Needs root (dropping caches), /dev/fuse and util-linux's `fincore`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ishare_testkit::ishare_bin;
use ishare_testkit::pagecache::{drop_caches, resident_bytes as cached};
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::files_under;
use ishare_testkit::tools::run;
use ishare_testkit::tree::write_file;

/// Files in the image's one directory.
const FILES: usize = 40;

/// Size of file `k`: distinct, so that its object is known by its size.
fn size(k: usize) -> usize {
    20_000 + 100 * k
}

fn mount(img: &Path, mp: &Path, store: &Path, log: &Path, extra: &str) {
    run(Command::new(ishare_bin!())
        .args([
            "mount",
            "--dedicated",
            "-o",
            &format!(
                "inode_share,domain_id=read-ahead-test,store={},log={},{extra}",
                store.display(),
                log.display()
            ),
        ])
        .arg(img)
        .arg(mp));
}

fn umount(mp: &Path) {
    run(Command::new(ishare_bin!()).arg("umount").arg(mp));
}

#[test]
fn first_opens_read_the_next_files_ahead_and_later_opens_do_not() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut rng = Rng::new(77);
    let content: Vec<Vec<u8>> = (0..FILES).map(|k| rng.bytes(size(k))).collect();
    for (k, c) in content.iter().enumerate() {
        write_file(&src, &format!("d/f{k:02}"), c);
    }
    let img = dir.path().join("i.erofs");
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet"])
        .arg(&img)
        .arg(&src));
    let store = tempfile::tempdir().unwrap();
    let mp = tempfile::Builder::new()
        .prefix("ishare-mnt-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("log");

    // A first mount makes every object (prepare=mount, the default).
    mount(&img, mp.path(), store.path(), &log, "");
    let deadline = Instant::now() + Duration::from_secs(60);
    let objects: BTreeMap<u64, PathBuf> = loop {
        let found = files_under(store.path(), |name| {
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if found.len() == FILES {
            break found
                .into_iter()
                .map(|p| (fs::metadata(&p).unwrap().size(), p))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} objects after 60 s",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    umount(mp.path());
    let object = |k: usize| &objects[&(size(k) as u64)];

    // A new daemon (no file opened yet), nothing prepared at mount, nothing cached.
    mount(&img, mp.path(), store.path(), &log, "prepare=open");
    drop_caches();
    let cached_now = || -> Vec<usize> { (0..FILES).filter(|&k| cached(object(k)) > 0).collect() };
    assert_eq!(
        cached_now(),
        Vec::<usize>::new(),
        "cached after dropping caches"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cached_now(), Vec::<usize>::new(), "read before any open");

    // The first open reads a few files ahead, not the whole directory.
    assert_eq!(fs::read(mp.path().join("d/f00")).unwrap(), content[0]);
    std::thread::sleep(Duration::from_millis(300));
    let after_first = cached_now();
    assert!(
        after_first.len() > 1 && after_first.len() <= 1 + 8,
        "cached after opening d/f00 alone: {after_first:?}"
    );
    // Small files read ahead are decided ahead: their objects found and held (marked
    // in use, as at an open) until they are opened; the others are not touched.
    let in_use = |k: usize| {
        let f = fs::File::open(object(k)).unwrap();
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    };
    let held: Vec<usize> = (0..FILES).filter(|&k| in_use(k)).collect();
    assert_eq!(
        held, after_first,
        "objects in use after opening d/f00 alone"
    );

    // A walk in name order finds most files read ahead before it opens them, whole.
    let whole = |k: usize| (size(k) as u64).div_ceil(4096) * 4096;
    let mut ahead = Vec::new();
    for (k, want) in content.iter().enumerate().skip(1) {
        let deadline = Instant::now() + Duration::from_millis(200);
        while cached(object(k)) != whole(k) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if cached(object(k)) == whole(k) {
            ahead.push(k);
        }
        let path = mp.path().join(format!("d/f{k:02}"));
        assert_eq!(&fs::read(&path).unwrap(), want, "d/f{k:02}");
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        ahead.len() * 10 >= (FILES - 1) * 8,
        "files read ahead before their open: {ahead:?} of 1..{FILES}\n{text}"
    );

    // Opens of files opened before read nothing ahead.
    drop_caches();
    for (k, want) in content.iter().enumerate() {
        assert_eq!(cached(object(k)), 0, "d/f{k:02} cached before its open");
        let path = mp.path().join(format!("d/f{k:02}"));
        assert_eq!(&fs::read(&path).unwrap(), want, "d/f{k:02}");
    }
    umount(mp.path());
}
