//! `ishare snapshotter` with real containerd 2.1.9 and runc (everything private: the
//! containerd root, state and sockets, the snapshotter, the node daemon, the store).
//!
//! Two OCI images built offline with umoci hold the same 64 MiB file at different
//! paths in different layers, plus a file unique to each; both are imported into the
//! `ishare` snapshotter and into containerd's built-in `overlayfs` and `erofs` (with
//! fingerprints; the baselines).
//! * one container per image and snapshotter reads its copy: checksums right; with
//!   `ishare` the second container's memory cgroup is charged at most 5% of the page
//!   cache the first was charged, with `overlayfs` and `erofs` both are charged in full;
//! * overlay semantics: a lower file deleted by a later layer (a whiteout) is gone, an
//!   opaque directory hides the lower entries, and a container writes, deletes a
//!   lower-layer file and lists directories as on any overlay; a layer member named
//!   `../escaped` lands inside the image, nowhere else;
//! * the snapshotter restarts while both containers run: they keep reading right bytes,
//!   `ctr snapshots ls` is unchanged;
//! * a second snapshotter, `ishare-erofs`, unpacked by containerd's EROFS differ
//!   (mkfs.erofs with fingerprints): Commit takes the differ's images as they are; they
//!   share (second container at most 5%) and overlay the same way;
//! * removing the containers and images removes every layer (image, mount, record) and
//!   `ishare store gc` then empties the store.
//!
//! Needs root, /dev/fuse, and what scripts/install-deps.sh installs (containerd 2.1.9
//! unpacked, runc, umoci, busybox-static).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ishare_testkit::containerd::{
    Containerd, OciLayout, SnapshotterProc, container_page_cache, evict_under, install_busybox,
    unmount_under,
};
use ishare_testkit::mounts::NodeDaemon;
use ishare_testkit::tools::{require_root, run};
use ishare_testkit::{ishare_bin, pagecache};
use sha2::{Digest, Sha256};

const BIG: usize = 64 << 20;
const DOMAIN: &str = "containerd-test-domain-7Qx";

/// Unmounts what is left under the test directory before it is removed.
struct UnmountGuard(PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        unmount_under(&self.0);
    }
}

/// Dropped in order: containers and containerd, the snapshotter, the node daemon (its
/// layer mounts), leftovers, the directory.
struct Env {
    ctrd: Containerd,
    snap: SnapshotterProc,
    /// A second snapshotter (own root, same node daemon, store and domain) that
    /// containerd unpacks into with its EROFS differ: Commit takes the differ's image.
    _snap_erofs: SnapshotterProc,
    daemon: NodeDaemon,
    _guard: UnmountGuard,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("ishare-ctrd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let daemon = NodeDaemon::start(&ishare_bin!());
        let snap = SnapshotterProc::start(
            &ishare_bin!(),
            &d.join("snap"),
            &d.join("snap.sock"),
            &daemon.socket(),
            &d.join("store"),
            DOMAIN,
        );
        let snap_erofs = SnapshotterProc::start(
            &ishare_bin!(),
            &d.join("snap-erofs"),
            &d.join("snap-erofs.sock"),
            &daemon.socket(),
            &d.join("store"),
            DOMAIN,
        );
        let ctrd = Containerd::start_with(
            &d.join("ctrd"),
            &[
                ("ishare", &d.join("snap.sock"), "walking"),
                ("ishare-erofs", &d.join("snap-erofs.sock"), "erofs"),
            ],
        );
        Env {
            ctrd,
            snap,
            _snap_erofs: snap_erofs,
            daemon,
            _guard: UnmountGuard(d.to_path_buf()),
            dir,
        }
    }

    fn snapshots(&self) -> String {
        self.ctrd
            .ctr_ok(&["snapshots", "--snapshotter", "ishare", "ls"])
    }

    /// `ctr snapshots ls` once containerd has reconnected to a restarted snapshotter:
    /// its proxy client redials with a backoff capped at 3 s, and calls meanwhile fail
    /// with "connection refused" (only those are retried).
    fn snapshots_after_restart(&self) -> String {
        let start = Instant::now();
        loop {
            let out = ishare_testkit::tools::run_unchecked(self.ctrd.ctr().args([
                "snapshots",
                "--snapshotter",
                "ishare",
                "ls",
            ]));
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                err.contains("connection refused") && start.elapsed() < Duration::from_secs(15),
                "ctr snapshots ls after the restart: {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn snap_root(&self) -> PathBuf {
        self.dir.path().join("snap")
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Images `a` and `b` in one layout, archived for `ctr images import`; the big file's
/// content.
fn build_images(dir: &Path) -> (PathBuf, Vec<u8>) {
    let big = ishare_testkit::Rng::new(0x5eed_c0de).bytes(BIG);
    let oci = OciLayout::init(&dir.join("oci"));
    let base = |r: &Path| install_busybox(r);
    let a_big = |r: &Path| {
        write(r, "data/a/big", &big);
        write(r, "data/a/gone", b"lower\n");
        write(r, "opq/old", b"hidden\n");
    };
    let a_top = |r: &Path| {
        write(r, "uniq", b"image a\n");
        fs::remove_file(r.join("data/a/gone")).unwrap();
    };
    oci.image("a", &[&base, &a_big, &a_top]);
    // An opaque directory, as docker writes one: `.wh..wh..opq` (umoci writes a
    // whiteout per entry instead).
    let stage = dir.join("opaque-layer");
    write(&stage, "opq/.wh..wh..opq", b"");
    write(&stage, "opq/new", b"new\n");
    let tar = dir.join("opaque.tar");
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .arg("-cf")
        .arg(&tar)
        .arg("opq"));
    // And a member that would escape the layer's root (`../escaped`, kept by -P):
    // containerd's differ must land it inside the snapshot.
    write(&stage, "escaped", b"escaped\n");
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(stage.join("opq"))
        .args(["-P", "-rf"])
        .arg(&tar)
        .arg("../escaped"));
    fs::remove_file(stage.join("escaped")).unwrap();
    oci.add_tar_layer("a", &tar);
    let b_big = |r: &Path| {
        write(r, "srv/b/copy", &big);
        write(r, "srv/b/pad", b"pad\n");
    };
    let b_top = |r: &Path| write(r, "uniq", b"image b\n");
    oci.image("b", &[&base, &b_big, &b_top]);
    let archive = dir.join("images.tar");
    oci.archive(&archive);
    (archive, big)
}

/// Reads the big file once through its layer mount (on the host) and waits until the
/// node daemon has published it as a store object: the first open of a file copies it
/// into the store in the daemon (charged to the daemon's cgroup, not a container's),
/// so the containers are measured against a published, cold object.
fn publish_big(env: &Env, want: &str) {
    let mounts = env.snap_root().join("l");
    let mut read = 0;
    for e in fs::read_dir(&mounts).unwrap().flatten() {
        let p = e.path().join("data/a/big");
        if p.exists() {
            assert_eq!(sha256_hex(&fs::read(&p).unwrap()), want, "{}", p.display());
            read += 1;
        }
    }
    assert_eq!(read, 1, "one layer mount holds data/a/big");
    let store = env.dir.path().join("store");
    let start = Instant::now();
    while !find_object(&store) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no 64 MiB object appeared in {}",
            store.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a published (named, not temporary) object of BIG bytes is in the store.
fn find_object(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let m = e.metadata().unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if m.is_dir() {
            find_object(&e.path())
        } else {
            m.len() == BIG as u64 && !name.contains(".tmp") && !name.ends_with(".lock")
        }
    })
}

/// Page cache charged to containers `first` and `second`, started one after the other
/// (each reading its copy of the big file into `/sum`), checksums checked.
fn measure(env: &Env, snapshotter: &str, first: &str, second: &str, want: &str) -> (u64, u64) {
    evict_under(env.dir.path());
    let mut charged = Vec::new();
    for (id, image, file) in [
        (first, "localhost/img:a", "/data/a/big"),
        (second, "localhost/img:b", "/srv/b/copy"),
    ] {
        env.ctrd.run_detached(
            snapshotter,
            image,
            id,
            &format!("sha256sum {file} > /sum; sleep 100000"),
        );
        let sum = env.ctrd.wait_file(id, "/sum");
        assert_eq!(
            sum.split_whitespace().next(),
            Some(want),
            "{snapshotter}: container {id} read wrong bytes from {file}"
        );
        charged.push(container_page_cache(id));
    }
    (charged[0], charged[1])
}

#[test]
fn containers_share_page_cache_keep_overlay_semantics_and_survive_restarts() {
    require_root();
    // Moves this process into a memory cgroup of its own first, so the daemons it
    // starts are charged there.
    pagecache::cached_kib();
    let env = Env::start();
    let (archive, big) = build_images(env.dir.path());
    let want = sha256_hex(&big);
    let archive = archive.to_str().unwrap();
    for sn in ["ishare", "overlayfs", "erofs", "ishare-erofs"] {
        env.ctrd.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            sn,
            "--base-name",
            "localhost/img",
            archive,
        ]);
    }
    // Each image's layers are committed snapshots: 4 + 3 layers.
    let listed = env.snapshots();
    assert_eq!(listed.matches("Committed").count(), 7, "{listed}");

    // Page cache: ishare next to overlayfs. The test's own cgroup holds the node
    // daemon (and containerd, the snapshotter): what it is charged meanwhile is the
    // daemon's side of serving the containers, printed too.
    publish_big(&env, &want);
    let daemon_before = pagecache::cached_kib();
    let (ia, ib) = measure(&env, "ishare", "ia", "ib", &want);
    let daemon = (pagecache::cached_kib() - daemon_before).max(0) as f64 / 1024.0;
    let (oa, ob) = measure(&env, "overlayfs", "oa", "ob", &want);
    let (ea, eb) = measure(&env, "erofs", "ea", "eb", &want);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "page cache charged (MiB), first / second container reading the same 64 MiB file:\n\
         ishare     {:8.1} / {:8.1}   (node daemon and test meanwhile: {daemon:.1})\n\
         overlayfs  {:8.1} / {:8.1}\n\
         erofs      {:8.1} / {:8.1}",
        mib(ia),
        mib(ib),
        mib(oa),
        mib(ob),
        mib(ea),
        mib(eb)
    );
    let full = (BIG as u64) * 9 / 10;
    assert!(
        ia >= full,
        "ishare: the first reader was charged only {ia} bytes"
    );
    assert!(
        ib * 20 <= ia,
        "ishare: the second container was charged {ib} bytes, more than 5% of the first's {ia}"
    );
    assert!(
        oa >= full && ob >= full && ea >= full && eb >= full,
        "baselines: overlayfs ({oa}, {ob}) and erofs ({ea}, {eb}) charge both containers in full"
    );

    // The EROFS differ's fast path: layers converted by containerd (mkfs.erofs with
    // --xattr-inode-digest) are taken as they are and shared the same way.
    let (fa, fb) = measure(&env, "ishare-erofs", "fa", "fb", &want);
    eprintln!(
        "ishare-erofs (the EROFS differ's layers) {:8.1} / {:8.1}",
        mib(fa),
        mib(fb)
    );
    assert!(
        fa >= full,
        "ishare-erofs: the first reader was charged only {fa} bytes"
    );
    assert!(
        fb * 20 <= fa,
        "ishare-erofs: the second was charged {fb} bytes, more than 5% of {fa}"
    );
    let log = env._snap_erofs.log_text();
    assert!(
        log.contains("taken from containerd's EROFS differ")
            && !log.contains("building the layer image"),
        "ishare-erofs built layers itself:\n{log}"
    );

    // Overlay semantics: whiteouts and opaque directories of the layers, and a
    // container's own writes and deletions; the same on the differ's layers (whiteouts
    // converted by mkfs.erofs --aufs).
    for sn in ["ishare", "ishare-erofs"] {
        let out = env.ctrd.ctr_ok(&[
            "run",
            "--rm",
            "--snapshotter",
            sn,
            "localhost/img:a",
            "sem",
            "sh",
            "-c",
            "test -e /data/a/gone && echo gone-visible; ls /opq; cat /uniq; \
         echo written > /data/a/w; rm /data/a/big; echo listing; ls /data/a; cat /data/a/w; \
         cat /escaped",
        ]);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["new", "image a", "listing", "w", "written", "escaped"],
            "overlay semantics in a container on {sn} layers"
        );
    }
    // Only at the root of a snapshot tree (overlayfs keeps layers as directories
    // `snapshots/ID/fs`), nowhere else.
    let mut escaped = find_named(env.dir.path(), "escaped");
    escaped.retain(|p| p.parent().and_then(Path::file_name) != Some("fs".as_ref()));
    assert!(
        escaped.is_empty(),
        "a layer member escaped its snapshot: {escaped:?}"
    );

    // Restart the snapshotter while ia and ib run: nothing they use moves.
    let before = env.snapshots();
    let mut env = env;
    env.snap.restart();
    assert_eq!(
        env.snapshots_after_restart(),
        before,
        "ctr snapshots ls changed across a restart"
    );
    for (id, file) in [("ia", "/data/a/big"), ("ib", "/srv/b/copy")] {
        let out = env.ctrd.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            &format!("again-{id}"),
            id,
            "sha256sum",
            file,
        ]);
        assert_eq!(
            out.split_whitespace().next(),
            Some(want.as_str()),
            "{id} after restart"
        );
    }

    // Remove containers and images: every ishare layer goes.
    env.ctrd.remove_containers();
    env.ctrd.ctr_ok(&[
        "images",
        "rm",
        "--sync",
        "localhost/img:a",
        "localhost/img:b",
    ]);
    let start = Instant::now();
    let left = |sn: &str| {
        env.ctrd
            .ctr_ok(&["snapshots", "--snapshotter", sn, "ls"])
            .lines()
            .skip(1)
            .any(|l| !l.trim().is_empty())
    };
    while left("ishare") || left("ishare-erofs") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "snapshots left after removing the images:\n{}\n{}",
            env.snapshots(),
            env.snap.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for sub in [
        "snap/layers",
        "snap/l",
        "snap/snapshots",
        "snap-erofs/layers",
        "snap-erofs/l",
    ] {
        let left: Vec<_> = fs::read_dir(env.dir.path().join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{sub}/ still holds {left:?}");
    }
    let mounts = ishare_share::list_mounts(&env.daemon.socket()).unwrap();
    assert!(
        mounts.as_ref().is_some_and(|(_, m)| m.is_empty()),
        "the node daemon still serves {mounts:?}"
    );
    // No layer holds the objects any more: `ishare store gc` collects them all.
    let store = env.dir.path().join("store");
    assert!(
        find_object(&store),
        "the shared object is in the store before gc"
    );
    run(std::process::Command::new(ishare_bin!())
        .args(["store", "gc", "--store"])
        .arg(&store));
    let left = objects(&store);
    assert!(left.is_empty(), "objects left after gc: {left:?}");
}

/// Entries named `name` under `dir`, on its filesystem (mounts below are skipped: the
/// layer mounts and containers' root filesystems hold the file legitimately).
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(dir).unwrap().dev();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if e.file_name() == name {
                out.push(e.path());
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// The files of the store outside its records.
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_name() == "records" {
            continue;
        }
        if p.is_dir() {
            out.extend(objects(&p));
        } else {
            out.push(p);
        }
    }
    out
}
