//! The node daemon restarts without dropping its mounts: the fd holder keeps every
//! FUSE connection while no daemon runs, the next daemon serves them again and has the
//! kernel send again the requests the earlier one read and did not answer.
//!
//! * `restart_under_load`: 16 reader threads across 8 mounts (4 with FUSE passthrough,
//!   4 with `passthrough=off`, where the daemon reads shared files by file handle)
//!   checksum files in a loop (read(2) after dropping the file's cached pages, mmap
//!   through memtool, and a file kept open across every restart) while the daemon is
//!   stopped with SIGTERM and started again 3 times, then killed with SIGKILL and
//!   started again 3 times: no wrong byte, no failed read (Linux 6.9+ resends the
//!   requests in flight); then `ishare mounts --json` lists the same mounts, `ishare
//!   umount` works, and the fd holder exits with the last mount.
//! * `the_holder_drops_mounts_unmounted_while_no_daemon_runs`: after a SIGKILL of the
//!   daemon (which then says nothing), mounts unmounted meanwhile are dropped by the
//!   holder, which exits with the last (it watches the connections again once no
//!   serving daemon is connected).
//!
//! Prints the longest single read (the pause a reader sees) and the holder's RSS/PSS.
//! Needs root and /dev/fuse.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{MountPoints, NodeDaemon, is_mounted};
use ishare_testkit::pagecache::memtool;
use ishare_testkit::rng::Rng;
use ishare_testkit::tools::{require_root, run, run_unchecked};
use ishare_testkit::tree::write_file;
use sha2::{Digest, Sha256};

const MOUNTS: usize = 8;
const READERS: usize = 16;
const RESTARTS: usize = 3;
const DOMAIN: &str = "restart-test-domain-Kd3";
/// Files of every image: (path, content seed, size); the first is the same in every
/// image (shared), the second each image's own.
const COMMON: usize = 4 << 20;
const OWN: usize = 2 << 20;
const CHUNK: usize = 1 << 20;

/// One file a reader checks: its path and what reading it must give.
#[derive(Clone)]
struct Want {
    path: PathBuf,
    sha: [u8; 32],
    /// memtool's mmap sum (one byte per page).
    mmap_sum: u64,
    len: usize,
}

fn want(path: PathBuf, content: &[u8]) -> Want {
    let page = 4096;
    let mut sum: u64 = 0;
    for i in (0..content.len()).step_by(page) {
        sum = sum.wrapping_mul(31).wrapping_add(u64::from(content[i]));
    }
    Want {
        path,
        sha: Sha256::digest(content).into(),
        mmap_sum: sum,
        len: content.len(),
    }
}

/// What the readers saw.
#[derive(Default)]
struct Seen {
    reads: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    /// Longest single read(2) of a chunk (or pread of the kept-open file), in µs.
    max_read_us: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Seen {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.max_read_us
            .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        r
    }
}

/// Reads `w` with read(2) in chunks after dropping its cached pages (so the reads reach
/// the daemon); checks the bytes.
fn check_read(w: &Want, seen: &Seen) {
    let mut f = match File::open(&w.path) {
        Ok(f) => f,
        Err(e) => return seen.fail(format!("open {}: {e}", w.path.display())),
    };
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match seen.timed(|| f.read(&mut buf)) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                total += n;
            }
            Err(e) => return seen.fail(format!("read {}: {e}", w.path.display())),
        }
    }
    seen.reads.fetch_add(1, Ordering::Relaxed);
    if total != w.len || <[u8; 32]>::from(h.finalize()) != w.sha {
        seen.wrong.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads `w` through mmap (memtool touches a byte per page); checks the sum.
fn check_mmap(w: &Want, seen: &Seen) {
    let out = match Command::new(memtool()).arg("mmap").arg(&w.path).output() {
        Ok(o) => o,
        Err(e) => return seen.fail(format!("memtool: {e}")),
    };
    if !out.status.success() {
        return seen.fail(format!(
            "mmap {}: {}",
            w.path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    seen.reads.fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(&out.stdout);
    let expect = format!(" {} sum {:016x}", w.len, w.mmap_sum);
    if !text.contains(&expect) {
        seen.wrong.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the file `kept` (opened before the first restart) again with pread.
fn check_kept(kept: &File, w: &Want, seen: &Seen) {
    let _ = rustix::fs::fadvise(kept, 0, None, rustix::fs::Advice::DontNeed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < w.len {
        match seen.timed(|| kept.read_at(&mut buf, at as u64)) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                at += n;
            }
            Err(e) => return seen.fail(format!("pread kept {}: {e}", w.path.display())),
        }
    }
    seen.reads.fetch_add(1, Ordering::Relaxed);
    if at != w.len || <[u8; 32]>::from(h.finalize()) != w.sha {
        seen.wrong.fetch_add(1, Ordering::Relaxed);
    }
}

/// `ishare daemon --socket S --log L` in the foreground, once it listens.
fn start_daemon(node: &NodeDaemon) -> Child {
    let child = Command::new(ishare_bin!())
        .arg("daemon")
        .arg("--socket")
        .arg(node.socket())
        .arg("--log")
        .arg(node.log_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ishare daemon");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(node.socket()).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon does not listen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// `ishare mounts --json`: (image, mount point) of every mount.
fn listed(node: &NodeDaemon) -> Vec<(String, String)> {
    let out = run(Command::new(ishare_bin!())
        .args(["mounts", "--json", "--socket"])
        .arg(node.socket()));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m: Vec<(String, String)> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["image"].as_str().unwrap().to_string(),
                m["mountpoint"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    m.sort();
    m
}

/// Waits up to 10 s for `node`'s fd holder to exit; fails with `why` if it does not.
fn wait_no_holder(node: &NodeDaemon, why: &str) {
    let t = Instant::now();
    while !node.holders().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "{why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (RSS, PSS) of `pid` in KiB.
fn rss_pss(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// `ishare mount` through the daemon, with this file's domain id.
fn node_mount(node: &NodeDaemon, image: &Path, dir: &Path, opts: &str) -> Output {
    node.mount(&ishare_bin!(), DOMAIN, image, dir, opts)
}

#[test]
fn restart_under_load() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    // Mount points before the daemon: the daemon goes first at the end.
    let points = MountPoints::new("ishare-restart-", MOUNTS);
    let node = NodeDaemon::at();

    let common = Rng::new(21).bytes(COMMON);
    let mut wants: Vec<Vec<Want>> = Vec::new();
    let mut images = Vec::new();
    for i in 0..MOUNTS {
        let own = Rng::new(100 + i as u64).bytes(OWN);
        let src = dir.path().join(format!("src{i}"));
        write_file(&src, "common", &common);
        write_file(&src, &format!("own/{i}"), &own);
        let img = dir.path().join(format!("{i}.erofs"));
        run(Command::new(ishare_bin!())
            .args(["mkfs", "--quiet"])
            .arg(&img)
            .arg(&src));
        fs::remove_dir_all(&src).unwrap();
        let m = points.path(i);
        wants.push(vec![
            want(m.join("common"), &common),
            want(m.join(format!("own/{i}")), &own),
        ]);
        images.push(img);
    }

    let mut daemon = start_daemon(&node);
    for (i, img) in images.iter().enumerate() {
        // Half the mounts read shared files in the daemon, by file handle.
        let opts = if i < MOUNTS / 2 {
            format!("inode_share,store={}", store.path().display())
        } else {
            format!(
                "inode_share,store={},passthrough=off",
                store.path().display()
            )
        };
        let out = node_mount(&node, img, points.path(i), &opts);
        assert!(out.status.success(), "mount {i}: {out:?}");
    }
    let before = listed(&node);
    assert_eq!(before.len(), MOUNTS, "{before:?}");
    let holder = node.holders();
    assert_eq!(holder.len(), 1, "one fd holder: {holder:?}");
    let (rss, pss) = rss_pss(holder[0]);

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let files = wants[r % MOUNTS].clone();
        // Opened before any restart and read after each.
        let kept = File::open(&files[r % 2].path).unwrap();
        let (seen, stop) = (seen.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let w = &files[n % files.len()];
                match n % 3 {
                    0 => check_read(w, &seen),
                    1 => check_mmap(w, &seen),
                    _ => check_kept(&kept, &files[r % 2], &seen),
                }
                n += 1;
            }
        }));
    }

    let load = Duration::from_millis(1500);
    std::thread::sleep(load);
    let mut pids = vec![daemon.id()];
    let mut downtime = Vec::new();
    for round in 0..2 * RESTARTS {
        let graceful = round < RESTARTS;
        let t = Instant::now();
        if graceful {
            node.signal(rustix::process::Signal::TERM);
        } else {
            daemon.kill().unwrap();
        }
        let status = daemon.wait().unwrap();
        if graceful {
            assert!(status.success(), "SIGTERM: the daemon exited {status}");
        }
        daemon = start_daemon(&node);
        downtime.push(t.elapsed());
        pids.push(daemon.id());
        std::thread::sleep(load);
        let now = listed(&node);
        assert_eq!(
            now,
            before,
            "after restart {round} ({})",
            if graceful { "SIGTERM" } else { "SIGKILL" }
        );
    }
    stop.store(true, Ordering::Relaxed);
    let t = Instant::now();
    for r in readers {
        while !r.is_finished() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "a reader hangs after the restarts\n{}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r.join().unwrap();
    }

    let reads = seen.reads.load(Ordering::Relaxed);
    let wrong = seen.wrong.load(Ordering::Relaxed);
    let failed = seen.failed.load(Ordering::Relaxed);
    let max_read = Duration::from_micros(seen.max_read_us.load(Ordering::Relaxed));
    eprintln!(
        "restart under load: {reads} file reads, {wrong} wrong, {failed} failed; longest \
         single read {max_read:?}; daemon down (signal to listening) {downtime:?}; fd \
         holder RSS {rss} KiB, PSS {pss} KiB; daemons {pids:?}"
    );
    let log = node.log_text();
    assert_eq!(wrong, 0, "wrong bytes in {wrong} of {reads} reads");
    assert_eq!(
        failed,
        0,
        "failed reads: {:?}\n{log}",
        seen.errors.lock().unwrap()
    );
    assert!(reads > 100, "the readers hardly read: {reads}");
    assert_eq!(
        log.matches("served again (kept by the fd holder)").count(),
        MOUNTS * 2 * RESTARTS,
        "{log}"
    );
    assert!(!log.contains("cannot send pending requests again"), "{log}");
    assert_eq!(node.holders(), holder, "the same fd holder throughout");

    // Unmounting after the restarts works; the holder goes with the last mount.
    for i in 0..MOUNTS {
        let out = run_unchecked(
            Command::new(ishare_bin!())
                .arg("umount")
                .arg(points.path(i)),
        );
        assert!(out.status.success(), "umount {i}: {out:?}");
        assert!(!is_mounted(points.path(i), "fuse.ishare"), "mount {i} left");
    }
    wait_no_holder(&node, "the fd holder outlives the last mount");
    assert!(
        !ishare_share::holder_socket(&node.socket()).exists(),
        "holder socket left"
    );
    drop(node);
    let _ = daemon.wait();
}

/// While a daemon serves, the fd holder leaves watching the connections to it; once
/// the daemon is gone (killed: it says nothing), the holder watches them again: a
/// mount unmounted meanwhile is dropped, and the holder exits with the last.
#[test]
fn the_holder_drops_mounts_unmounted_while_no_daemon_runs() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let points = MountPoints::new("ishare-restart-", 2);
    let node = NodeDaemon::at();
    let src = dir.path().join("src");
    write_file(&src, "a", &Rng::new(5).bytes(100_000));
    let img = dir.path().join("a.erofs");
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet"])
        .arg(&img)
        .arg(&src));
    let mut daemon = start_daemon(&node);
    for i in 0..2 {
        let opts = format!("inode_share,store={}", store.path().display());
        let out = node_mount(&node, &img, points.path(i), &opts);
        assert!(out.status.success(), "mount {i}: {out:?}");
        // A first open: a registration, so the daemon has said it serves.
        fs::read(points.path(i).join("a")).unwrap();
    }
    let holder = node.holders();
    assert_eq!(holder.len(), 1, "one fd holder: {holder:?}");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // umount(2) itself: umount(8) asks the filesystem's statfs first, which waits for
    // a daemon like every request.
    for i in 0..2 {
        rustix::mount::unmount(points.path(i), rustix::mount::UnmountFlags::empty())
            .unwrap_or_else(|e| panic!("umount {i}: {e}"));
    }
    wait_no_holder(
        &node,
        "the fd holder kept the mounts unmounted while no daemon ran",
    );
}
