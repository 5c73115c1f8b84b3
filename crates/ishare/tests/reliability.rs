//! Reliability under faults and load, through the node daemon (`ishare daemon`):
//!
//! * an image whose disk fails (every read EIO, then every third read EIO, then
//!   healthy again; the "disk" is `testkit::faultfs`, as this kernel has no
//!   device-mapper): files answer EIO or their right bytes, never other bytes; the daemon
//!   lives on and serves every byte again once the disk is healthy;
//! * a store on a full file system: every byte is still served right, unshared;
//! * 16 readers across 8 mounts for a bounded time, while `ishare store gc` runs in a
//!   loop and a ninth mount point is mounted and unmounted over and over (through the
//!   daemon, and with daemon-per-mount `--dedicated` mounts): no wrong byte, no failed
//!   read, every fresh mount stays.
//!
//! Needs root and /dev/fuse. The tests run one at a time (they drop caches).
//! `ISHARE_LOAD_SECS` sets how long the load runs (default 15).

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ishare_testkit::faultfs::{Fault, FaultMount};
use ishare_testkit::mounts::{MountPoints, NodeDaemon, is_mounted};
use ishare_testkit::rng::Rng;
use ishare_testkit::tools::{require_root, run, run_unchecked};
use ishare_testkit::tree::write_file;
use ishare_testkit::{ishare_bin, pagecache};

const DOMAIN: &str = "reliability-domain-K2";

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ishare mkfs --quiet EXTRA IMAGE SRC`.
fn mkfs(src: &Path, image: &Path, extra: &[&str]) {
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet"])
        .args(extra)
        .arg(image)
        .arg(src));
}

/// `ishare mount [--socket S | --dedicated] -o OPTS IMAGE DIR`, the domain in the
/// environment.
fn mount(socket: Option<&Path>, image: &Path, dir: &Path, opts: &str) -> Output {
    let mut cmd = Command::new(ishare_bin!());
    cmd.env("ISHARE_DOMAIN_ID", DOMAIN).arg("mount");
    match socket {
        Some(s) => cmd.arg("--socket").arg(s),
        None => cmd.arg("--dedicated"),
    };
    run_unchecked(cmd.args(["-o", opts]).arg(image).arg(dir))
}

fn umount(dir: &Path) -> Output {
    run_unchecked(Command::new(ishare_bin!()).arg("umount").arg(dir))
}

/// The bytes of `path`, or the error's errno.
fn read_all(path: &Path) -> Result<Vec<u8>, i32> {
    let mut f = fs::File::open(path).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    Ok(v)
}

/// Files of the fault test: name and content.
fn fault_tree(src: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![("big".to_string(), Rng::new(21).bytes(3 << 20))];
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {} of a compressible file\n", i % 997).into_bytes())
        .collect();
    files.push(("text".into(), text));
    for i in 0..40 {
        files.push((
            format!("small/{i}"),
            Rng::new(100 + i).bytes(9000 + i as usize * 37),
        ));
    }
    for (name, data) in &files {
        write_file(src, name, data);
    }
    files
}

/// Reads every file of `mnt`: how many were right and how many failed with EIO. Any
/// other error, or wrong bytes, fails the test.
fn read_round(mnt: &Path, files: &[(String, Vec<u8>)], what: &str) -> (usize, usize) {
    let (mut ok, mut eio) = (0, 0);
    for (name, want) in files {
        match read_all(&mnt.join(name)) {
            Ok(got) => {
                assert!(
                    got == *want,
                    "{what}: {name}: wrong bytes ({} read)",
                    got.len()
                );
                ok += 1;
            }
            Err(5) => eio += 1,
            Err(e) => panic!("{what}: {name}: errno {e}, not EIO"),
        }
    }
    (ok, eio)
}

#[test]
fn a_failing_image_disk_gives_eio_never_wrong_bytes() {
    require_root();
    let _g = serial();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = fault_tree(&src);
    let disk_dir = work.path().join("disk");
    fs::create_dir(&disk_dir).unwrap();
    mkfs(&src, &disk_dir.join("plain.erofs"), &[]);
    mkfs(&src, &disk_dir.join("lz4hc.erofs"), &["-zlz4hc", "-C65536"]);
    let disk = FaultMount::new(&disk_dir);
    let store = tempfile::tempdir().unwrap();
    let node = NodeDaemon::start(&ishare_bin!());
    let pid = node.pid().unwrap();
    let points = MountPoints::new("ishare-rel-", 3);
    let cases = [
        ("plain.erofs", "ro".to_string()),
        ("lz4hc.erofs", "ro".to_string()),
        (
            "plain.erofs",
            format!("inode_share,store={}", store.path().display()),
        ),
    ];
    for (i, (img, opts)) in cases.iter().enumerate() {
        let out = mount(
            Some(&node.socket()),
            &disk.path().join(img),
            points.path(i),
            opts,
        );
        assert!(out.status.success(), "mount {img} -o {opts}: {out:?}");
    }

    for (i, (img, opts)) in cases.iter().enumerate() {
        let what = format!("{img} -o {opts}");
        let (ok, _) = read_round(points.path(i), &files, &format!("healthy disk, {what}"));
        assert_eq!(ok, files.len(), "healthy disk, {what}");

        disk.set(Fault::Eio);
        pagecache::drop_caches();
        let failed_before = disk.failed_reads();
        let (_, eio) = read_round(points.path(i), &files, &format!("dead disk, {what}"));
        // Shared files come from the store, which is healthy: only unshared mounts must
        // see the fault.
        if !opts.contains("inode_share") {
            assert!(eio > 0, "dead disk, {what}: no read failed");
            assert!(
                disk.failed_reads() > failed_before,
                "the fault was not reached"
            );
        }
        // Metadata the daemon has cached stays readable; nothing hangs.
        let _ = fs::read_dir(points.path(i).join("small")).map(|d| d.count());

        disk.set(Fault::Flaky);
        for round in 0..3 {
            pagecache::drop_caches();
            read_round(
                points.path(i),
                &files,
                &format!("flaky disk round {round}, {what}"),
            );
        }

        disk.set(Fault::None);
        pagecache::drop_caches();
        let (ok, _) = read_round(points.path(i), &files, &format!("healed disk, {what}"));
        assert_eq!(
            ok,
            files.len(),
            "healed disk, {what}: every file reads again"
        );
        assert!(NodeDaemon::alive(pid), "the daemon died ({what})");
    }
    let log = node.log_text();
    assert!(
        log.contains("plain.erofs") && log.contains("lz4hc.erofs"),
        "the log names the failing images:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_full_store_still_serves_every_byte() {
    require_root();
    let _g = serial();
    let work = tempfile::tempdir().unwrap();
    let common = Rng::new(5).bytes(8 << 20);
    let mut images = Vec::new();
    for i in 0..2 {
        let src = work.path().join(format!("src{i}"));
        write_file(&src, &format!("at{i}/common"), &common);
        write_file(&src, "own", format!("image {i}").as_bytes());
        let img = work.path().join(format!("{i}.erofs"));
        mkfs(&src, &img, &[]);
        images.push(img);
    }
    // A 1 MiB file system for the store: an 8 MiB object cannot fit.
    let parent = tempfile::tempdir().unwrap();
    let store = parent.path().join("store");
    fs::create_dir(&store).unwrap();
    run(Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m,mode=0700",
            "ishare-full-store",
        ])
        .arg(&store));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _store_mount = Unmount(store.clone());
    // Fill what is left but a few KiB, as other users of the disk would.
    let _ = fs::write(store.join("filler"), vec![0u8; 1000 << 10]);

    let node = NodeDaemon::start(&ishare_bin!());
    let points = MountPoints::new("ishare-rel-", 2);
    let opts = format!("inode_share,store={}", store.display());
    for (i, img) in images.iter().enumerate() {
        let out = mount(Some(&node.socket()), img, points.path(i), &opts);
        assert!(out.status.success(), "mount {i}: {out:?}");
    }
    for round in 0..2 {
        for i in 0..2 {
            let got = read_all(&points.path(i).join(format!("at{i}/common")))
                .unwrap_or_else(|e| panic!("round {round}, mount {i}: errno {e}"));
            assert!(got == common, "round {round}, mount {i}: wrong bytes");
            let own = read_all(&points.path(i).join("own")).unwrap();
            assert_eq!(own, format!("image {i}").as_bytes());
        }
        pagecache::drop_caches();
    }
    let gc = run_unchecked(
        Command::new(ishare_bin!())
            .args(["store", "gc", "--store"])
            .arg(&store),
    );
    assert!(gc.status.success(), "gc of a full store: {gc:?}");
    let log = node.log_text();
    // The store was really used and really full: the daemon met ENOSPC and said so.
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Images of the load test: each holds the common file at its own path and a file
/// of its own.
fn load_family(dir: &Path, n: usize, common: &[u8]) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let src = dir.join(format!("src{i}"));
            write_file(&src, &format!("d{i}/common"), common);
            write_file(&src, "own", &Rng::new(50 + i as u64).bytes(200_000));
            let img = dir.join(format!("{i}.erofs"));
            mkfs(&src, &img, &[]);
            fs::remove_dir_all(&src).unwrap();
            img
        })
        .collect()
}

#[test]
fn readers_gc_and_remount_churn_for_a_bounded_time() {
    require_root();
    let _g = serial();
    let secs: u64 = std::env::var("ISHARE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let work = tempfile::tempdir().unwrap();
    let common = Arc::new(Rng::new(9).bytes(16 << 20));
    let images = load_family(work.path(), 9, &common);
    let store = tempfile::tempdir().unwrap();
    let opts = format!("inode_share,store={}", store.path().display());
    let node = NodeDaemon::start(&ishare_bin!());
    let pid = node.pid().unwrap();
    let points = MountPoints::new("ishare-rel-", 10);
    for (i, img) in images.iter().take(8).enumerate() {
        let out = mount(Some(&node.socket()), img, points.path(i), &opts);
        assert!(out.status.success(), "mount {i}: {out:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let stop = Arc::new(AtomicBool::new(false));

    // 16 readers: random ranges of the common file, checked.
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for t in 0..16usize {
        let file = points.path(t % 8).join(format!("d{}/common", t % 8));
        let (common, reads) = (common.clone(), reads.clone());
        readers.push(std::thread::spawn(move || -> Result<(), String> {
            let mut rng = Rng::new(t as u64 + 1);
            while Instant::now() < deadline {
                let f = fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                for _ in 0..16 {
                    let x = rng.next_u64();
                    let len = (x % (1 << 20)) as usize + 1;
                    let off = (x >> 20) as usize % (common.len() - len);
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, off as u64)
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                    if buf[..] != common[off..off + len] {
                        return Err(format!("{}: wrong bytes at {off}+{len}", file.display()));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
    }

    // `ishare store gc` in a loop.
    let gc_runs = Arc::new(AtomicU64::new(0));
    let gc = {
        let (store, stop, gc_runs) = (store.path().to_path_buf(), stop.clone(), gc_runs.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::SeqCst) {
                let out = run_unchecked(
                    Command::new(ishare_bin!())
                        .args(["store", "gc", "--store"])
                        .arg(&store),
                );
                if !out.status.success() {
                    return Err(format!("store gc: {out:?}"));
                }
                gc_runs.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        })
    };

    // Remount churn on two more mount points: through the daemon, and dedicated.
    let (p8, p9) = (points.path(8).to_path_buf(), points.path(9).to_path_buf());
    let image = images[8].clone();
    let socket = node.socket();
    let mut cycles = 0u32;
    while Instant::now() < deadline {
        for (socket, dir) in [(Some(socket.as_path()), &p8), (None, &p9)] {
            let how = if socket.is_some() {
                "daemon"
            } else {
                "dedicated"
            };
            let out = mount(socket, &image, dir, &opts);
            assert!(
                out.status.success(),
                "churn {cycles} ({how}): mount: {out:?}"
            );
            // A fresh mount must stay: an old session's unmount never takes it away.
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                is_mounted(dir, "fuse.ishare"),
                "churn {cycles} ({how}): the new mount vanished"
            );
            let got = read_all(&dir.join("d8/common"))
                .unwrap_or_else(|e| panic!("churn {cycles} ({how}): errno {e}"));
            assert!(got[..] == common[..], "churn {cycles} ({how}): wrong bytes");
            let out = umount(dir);
            assert!(
                out.status.success(),
                "churn {cycles} ({how}): umount: {out:?}"
            );
            assert!(
                !is_mounted(dir, "fuse.ishare"),
                "churn {cycles} ({how}): still mounted after umount"
            );
        }
        cycles += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for (t, r) in readers.into_iter().enumerate() {
        r.join()
            .expect("reader thread")
            .unwrap_or_else(|e| panic!("reader {t}: {e}"));
    }
    gc.join().expect("gc thread").unwrap();
    let (reads, gc_runs) = (
        reads.load(Ordering::Relaxed),
        gc_runs.load(Ordering::Relaxed),
    );
    eprintln!(
        "{secs} s: {reads} checked reads by 16 readers, {gc_runs} gc runs, {cycles} remount cycles"
    );
    assert!(reads > 0 && gc_runs > 0 && cycles > 0);
    assert!(NodeDaemon::alive(pid), "the daemon died");
    let list = run(Command::new(ishare_bin!())
        .args(["mounts", "--json", "--socket"])
        .arg(&socket));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["mounts"].as_array().unwrap().len(), 8, "{v}");
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
}
