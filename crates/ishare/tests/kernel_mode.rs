//! Kernel mode (`mode=auto|fuse|kernel`): verified images mounted by the kernel's own
//! EROFS with `inode_share`.
//!
//! * In Debian sid's Linux 7.2 under QEMU (`CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y`; the
//!   harness of `kernel_share.rs`), with the `ishare` binary copied in and a node daemon on
//!   a private socket: two images holding the same 32 MiB file at different paths get mode
//!   `kernel` and read it into the page cache once; an image whose file claims that file's
//!   fingerprint (same size, other bytes) is refused by `mode=kernel` with an error naming
//!   the file, and `mode=auto` serves it with FUSE, reading its own bytes, while the honest
//!   images keep reading theirs; `mode=kernel` also refuses an image whose fingerprint
//!   is no `sha256:` digest and an image file others may write; `mode=fuse` uses FUSE; a second mount of a verified image
//!   hashes nothing; `ishare umount` and umount(8) both end a kernel mount, the daemon's
//!   list follows and the loop devices go; the domain id is in no /proc/mounts line and no
//!   log.
//! * On the host (Linux 6.18, no `inode_share` of the kernel's own): `mode=kernel` is
//!   refused with an error naming the image and the reason, `mode=auto` is served by FUSE,
//!   `mode=bogus` is refused, `--dedicated` decides as the node daemon (and makes a kernel
//!   mount for `mode=kernel` without `inode_share`), `-f` refuses `mode=kernel`, `ishare
//!   doctor` says there is no kernel mode; `mode=kernel` without `inode_share` (nothing to verify) is a
//!   kernel mount on any kernel: listed as `kernel`, ended by `ishare umount`, `umount(8)`
//!   or an unmount request on the socket, its loop device then gone; `ishare umount`
//!   refuses EROFS mounts ishare did not make (file-backed, or on mount(8)'s loop device).
//!
//! Run the VM test alone (as root, after `scripts/install-deps.sh`; about a minute):
//!
//!     cargo test -p ishare --test kernel_mode -- --nocapture

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{ErofsMount, LoopMount, NodeDaemon, is_mounted};
use ishare_testkit::rng::Rng;
use ishare_testkit::tools::{require_root, run, run_unchecked};
use ishare_testkit::tree::write_file;
use ishare_testkit::vm::Vm;
use sha2::{Digest, Sha256};

/// Size of the file the images share.
const BIG: usize = 32 << 20;
const PATH_A: &str = "usr/lib/libbig.so.1";
const PATH_B: &str = "opt/other/copy-of-libbig";
const PATH_LIAR: &str = "usr/lib/libbig.so.1";
/// The domain id of the VM test: never to be seen in /proc/mounts or a log.
const DOMAIN: &str = "kernel-mode-secret-Qx7";

const KIB_PER_MIB: i64 = 1024;
/// A read that fills the cache with the 32 MiB file adds at least this much...
const FULL_MIN_KIB: i64 = 28 * KIB_PER_MIB;
/// ... and at most this much.
const FULL_MAX_KIB: i64 = 40 * KIB_PER_MIB;
/// A read served from the other image's cached copy adds less than this.
const SHARED_MAX_KIB: i64 = 4 * KIB_PER_MIB;

fn ishare_mkfs(image: &Path, src: &Path) {
    run(Command::new(ishare_bin!())
        .args(["mkfs", "--quiet", "-E", "nosbcrc"])
        .arg(image)
        .arg(src));
}

fn fp_value(content: &[u8]) -> Vec<u8> {
    let mut v = b"sha256:".to_vec();
    v.extend_from_slice(&Sha256::digest(content));
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The script of the VM (see the module documentation); `S`, `O` name the socket and
/// the common options.
const SCRIPT: &str = r#"
mkdir -p /etc/ishare /run /var/cache
printf '%s' "$DOMAIN" > /etc/ishare/domain
chmod 600 /etc/ishare/domain
S=/tmp/ishare.sock
O=inode_share,domain_id_file=/etc/ishare/domain,store=/tmp/store,log=/tmp/ishare.log
im() { ishare mount --socket $S -o "$O${2:+,$2}" "/images/$1" "/mnt/$3"; }
listing() { ishare mounts --socket $S | sed "s/^/RESULT $1 /"; }
mkdir -p /mnt/a /mnt/b /mnt/l /mnt/f
result doctor_mode $(ishare doctor --json --store /tmp/store | sed -n 's/^  "mode": "\(.*\)",$/\1/p')
im a.erofs "" a
im b.erofs "" b
listing after_ab
drop_caches
measure read.a memtool read /mnt/a/PATH_A
measure read.b memtool read /mnt/b/PATH_B
result sha.a $(sha256sum /mnt/a/PATH_A | cut -d' ' -f1)
result sha.b $(sha256sum /mnt/b/PATH_B | cut -d' ' -f1)
if im liar.erofs mode=kernel l 2>/tmp/err; then result liar_kernel mounted; else result liar_kernel_refused $(tr '\n' ' ' < /tmp/err); fi
im liar.erofs "" l
im a.erofs mode=fuse f
mkdir -p /mnt/o /mnt/w
if im odd.erofs mode=kernel o 2>/tmp/err; then result odd_kernel mounted; else result odd_kernel_refused $(tr '\n' ' ' < /tmp/err); fi
cp /images/b.erofs /tmp/writable.erofs
chmod 666 /tmp/writable.erofs
if ishare mount --socket $S -o "$O,mode=kernel" /tmp/writable.erofs /mnt/w 2>/tmp/err; then result writable_kernel mounted; else result writable_kernel_refused $(tr '\n' ' ' < /tmp/err); fi
rm /tmp/writable.erofs
listing with_liar
result sha.liar $(sha256sum /mnt/l/PATH_LIAR | cut -d' ' -f1)
result sha.a_again $(sha256sum /mnt/a/PATH_A | cut -d' ' -f1)
result sha.a_fuse $(sha256sum /mnt/f/PATH_A | cut -d' ' -f1)
result loops_mounted $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)
result domain_in_mounts $(grep -c "$DOMAIN" /proc/mounts || true)
result domain_id_in_mounts $(grep -c domain_id /proc/mounts || true)
grep ' erofs ' /proc/mounts | sed 's/^/RESULT erofs_line /'
ishare umount /mnt/a
umount /mnt/b
listing after_umount
result loops_after_umount $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)
im a.erofs "" a
listing remounted
# The daemon stops (SIGTERM, as `systemctl restart` sends): its kernel mounts stay by
# themselves, its FUSE mounts through the fd holder, and the next daemon (started by
# the next mount) lists the former and serves the latter again.
pid=$(cat $S.lock)
kill $pid
while [ -e /proc/$pid ] && ! grep -q ') Z ' /proc/$pid/stat; do sleep 0.2; done
result sha.a_no_daemon $(sha256sum /mnt/a/PATH_A | cut -d' ' -f1)
im b.erofs "" b
listing restarted
result sha.f_restarted $(sha256sum /mnt/f/PATH_A | cut -d' ' -f1)
result domain_in_log $(grep -c "$DOMAIN" /tmp/ishare.log || true)
sed 's/^/RESULT log /' /tmp/ishare.log
"#;

#[test]
fn kernel_mode_in_the_linux_7_2_vm() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let big = Rng::new(0x6b65_726e_656c).bytes(BIG);
    let liar = Rng::new(0x6c69_6172).bytes(BIG);
    let (src_a, src_b, src_l) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("l"),
    );
    write_file(&src_a, PATH_A, &big);
    write_file(&src_a, "etc/a-only.conf", b"image a\n");
    write_file(&src_b, PATH_B, &big);
    write_file(&src_b, "etc/b-only.conf", b"image b, different\n");
    write_file(&src_l, PATH_LIAR, &liar);
    let img = |n: &str| dir.path().join(n);
    ishare_mkfs(&img("a.erofs"), &src_a);
    ishare_mkfs(&img("b.erofs"), &src_b);
    ishare_mkfs(&img("liar.erofs"), &src_l);
    // The liar's file claims the shared file's fingerprint (same size, other bytes).
    ishare_testkit::image::replace_unique(&img("liar.erofs"), &fp_value(&liar), &fp_value(&big));
    // A fingerprint that is no sha256: digest (the kernel would share by it all the same).
    let src_o = dir.path().join("o");
    let odd = Rng::new(0x6f6464).bytes(50_000);
    write_file(&src_o, "odd", &odd);
    ishare_mkfs(&img("odd.erofs"), &src_o);
    let mut other = fp_value(&odd);
    other[..7].copy_from_slice(b"sha512:");
    ishare_testkit::image::replace_unique(&img("odd.erofs"), &fp_value(&odd), &other);

    let script = SCRIPT
        .replace("$DOMAIN", DOMAIN)
        .replace("PATH_A", PATH_A)
        .replace("PATH_B", PATH_B)
        .replace("PATH_LIAR", PATH_LIAR);
    let out = Vm::new()
        .image("a.erofs", img("a.erofs"))
        .image("b.erofs", img("b.erofs"))
        .image("liar.erofs", img("liar.erofs"))
        .image("odd.erofs", img("odd.erofs"))
        .executable("ishare", ishare_bin!())
        // Hashing 96 MiB under TCG on a busy host; the default 120 s is for lighter runs.
        .timeout(std::time::Duration::from_secs(400))
        .script(&script)
        .run()
        .expect("the VM run");
    let shown = out.results.join("\n");
    eprintln!(
        "VM ({}), boot {:.1?}, total {:.1?}:\n{shown}",
        out.kernel_version, out.boot_time, out.total_time
    );
    let lines = |label: &str| -> Vec<&str> {
        out.results
            .iter()
            .filter_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
            .collect()
    };
    let num = |label: &str| -> i64 {
        out.value(label)
            .unwrap_or_else(|| panic!("no result {label}:\n{shown}"))
            .parse()
            .unwrap_or_else(|_| panic!("result {label} is not a number:\n{shown}"))
    };
    // `ishare mounts`: "MOUNTPOINT\tIMAGE\tMODE\t..." under a "ishare daemon pid" line.
    let mode_of = |label: &str, mountpoint: &str| -> String {
        lines(label)
            .iter()
            .find_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.first() == Some(&mountpoint)).then(|| f.get(2).unwrap_or(&"").to_string())
            })
            .unwrap_or_else(|| panic!("{mountpoint} not listed in {label}:\n{shown}"))
    };

    // `ishare doctor` predicts it.
    assert_eq!(out.value("doctor_mode"), Some("kernel"), "{shown}");

    // Two honest images: kernel mode, one page cache.
    assert_eq!(mode_of("after_ab", "/mnt/a"), "kernel", "{shown}");
    assert_eq!(mode_of("after_ab", "/mnt/b"), "kernel", "{shown}");
    let want = hex(&Sha256::digest(&big));
    assert_eq!(out.value("sha.a"), Some(want.as_str()), "{shown}");
    assert_eq!(out.value("sha.b"), Some(want.as_str()), "{shown}");
    let (ra, rb) = (num("read.a"), num("read.b"));
    assert!(
        (FULL_MIN_KIB..=FULL_MAX_KIB).contains(&ra),
        "the first read added {ra} KiB (want a 32 MiB file's worth)\n{shown}"
    );
    assert!(
        rb < SHARED_MAX_KIB,
        "the second image's copy added {rb} KiB: not shared with the first\n{shown}"
    );
    assert!(
        out.dmesg
            .iter()
            .any(|l| l.contains("EXPERIMENTAL EROFS page cache share support in use")),
        "the kernel did not log inode_share in use"
    );

    // The liar: never given to the kernel; mode=kernel names the file; auto is FUSE.
    let refused = out
        .value("liar_kernel_refused")
        .unwrap_or_else(|| panic!("mode=kernel mounted the liar:\n{shown}"));
    assert!(
        refused.contains("liar.erofs")
            && refused.contains("mode=kernel")
            && refused.contains(&format!(
                "/{PATH_LIAR}: content does not match its sha256 fingerprint"
            )),
        "{refused}"
    );
    let odd = out
        .value("odd_kernel_refused")
        .unwrap_or_else(|| panic!("mode=kernel mounted an unverifiable image:\n{shown}"));
    assert!(
        odd.contains("/odd: its fingerprint is not a sha256: digest"),
        "{odd}"
    );
    let writable = out
        .value("writable_kernel_refused")
        .unwrap_or_else(|| panic!("mode=kernel mounted a world-writable image:\n{shown}"));
    assert!(
        writable.contains("mode 0666: group or others could rewrite it"),
        "{writable}"
    );
    let liar_mode = mode_of("with_liar", "/mnt/l");
    assert!(
        ["passthrough", "daemon"].contains(&liar_mode.as_str()),
        "the liar is served by {liar_mode}, not FUSE\n{shown}"
    );
    assert_eq!(
        out.value("sha.liar"),
        Some(hex(&Sha256::digest(&liar)).as_str()),
        "the liar's file must read its own bytes\n{shown}"
    );
    assert_eq!(out.value("sha.a_again"), Some(want.as_str()), "{shown}");
    // mode=fuse: FUSE although the kernel could.
    let fuse_mode = mode_of("with_liar", "/mnt/f");
    assert!(
        ["passthrough", "daemon"].contains(&fuse_mode.as_str()),
        "{shown}"
    );
    assert_eq!(out.value("sha.a_fuse"), Some(want.as_str()), "{shown}");
    let log = lines("log").join("\n");
    assert!(
        log.contains("mode=auto: FUSE serves it, not the kernel")
            && log.contains("content does not match its sha256 fingerprint"),
        "the fallback is not logged:\n{log}"
    );

    // Loop devices: one per kernel mount, gone with the mounts.
    assert_eq!(num("loops_mounted"), 2, "{shown}");
    assert_eq!(num("loops_after_umount"), 0, "{shown}");
    // `ishare umount` and umount(8): the daemon's list follows.
    let after: Vec<&str> = lines("after_umount");
    assert!(
        !after
            .iter()
            .any(|l| l.starts_with("/mnt/a\t") || l.starts_with("/mnt/b\t")),
        "unmounted kernel mounts still listed:\n{shown}"
    );
    assert!(after.iter().any(|l| l.starts_with("/mnt/l\t")), "{shown}");

    // Mounted again: verified from the record, nothing hashed.
    assert_eq!(mode_of("remounted", "/mnt/a"), "kernel", "{shown}");
    let verified: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("a.erofs: 2 files with fingerprints verified for kernel mode"))
        .collect();
    assert_eq!(verified.len(), 2, "{log}");
    assert!(
        verified[0].contains("(2 hashed, 0 from the record)"),
        "{log}"
    );
    assert!(
        verified[1].contains("(0 hashed, 2 from the record)"),
        "{log}"
    );

    // Kernel mounts outlive the daemon; the next one lists them, FUSE mounts went.
    assert_eq!(out.value("sha.a_no_daemon"), Some(want.as_str()), "{shown}");
    assert_eq!(mode_of("restarted", "/mnt/a"), "kernel", "{shown}");
    assert_eq!(mode_of("restarted", "/mnt/b"), "kernel", "{shown}");
    assert_eq!(mode_of("restarted", "/mnt/f"), "passthrough", "{shown}");
    assert_eq!(mode_of("restarted", "/mnt/l"), "passthrough", "{shown}");
    assert_eq!(out.value("sha.f_restarted"), Some(want.as_str()), "{shown}");
    assert!(
        log.contains("/mnt/f: served again (kept by the fd holder)"),
        "{log}"
    );
    assert!(
        log.contains("kernel mode mount of an earlier daemon, taken back"),
        "{log}"
    );

    // The domain id: not in /proc/mounts (not even derived), not in the log.
    assert_eq!(num("domain_in_mounts"), 0, "{shown}");
    assert_eq!(num("domain_id_in_mounts"), 0, "{shown}");
    assert_eq!(num("domain_in_log"), 0, "{shown}");
    assert_eq!(lines("erofs_line").len(), 2, "{shown}");
}

// ---------------------------------------------------------------------------------------------
// On the host: no inode_share of the kernel's own
// ---------------------------------------------------------------------------------------------

/// An image with one fingerprinted file.
fn small_image(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    write_file(&src, "f", &Rng::new(5).bytes(100_000));
    let img = dir.join("small.erofs");
    ishare_mkfs(&img, &src);
    img
}

/// `ishare mount` through the daemon, with this file's domain id.
fn node_mount(node: &NodeDaemon, image: &Path, dir: &Path, opts: &str) -> Output {
    node.mount(&ishare_bin!(), "host-kernel-mode", image, dir, opts)
}

fn host_has_inode_share() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    fs::read_to_string(format!("/boot/config-{}", release.trim()))
        .is_ok_and(|c| c.lines().any(|l| l == "CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y"))
}

#[test]
fn on_a_kernel_without_inode_share_kernel_mode_is_refused_and_auto_is_fuse() {
    require_root();
    if host_has_inode_share() {
        eprintln!("this host's kernel has inode_share: the VM test covers it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    let store = tempfile::tempdir().unwrap();
    let node = NodeDaemon::start(&ishare_bin!());
    let m = ishare_testkit::mounts::mount_point("ishare-kmode-");
    let base = format!("inode_share,store={}", store.path().display());

    let out = node_mount(&node, &img, m.path(), &format!("{base},mode=kernel"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mode=kernel mounted on this kernel");
    assert!(
        err.contains(&img.display().to_string())
            && err.contains("mode=kernel: not mounted by the kernel")
            && err.contains("inode_share"),
        "{err}"
    );
    assert!(!is_mounted(m.path(), "erofs") && !is_mounted(m.path(), "fuse.ishare"));

    // A mount daemon of its own decides the same way.
    let dedicated = |opts: &str| {
        run_unchecked(
            Command::new(ishare_bin!())
                .env("ISHARE_DOMAIN_ID", "host-kernel-mode")
                .args(["mount", "--dedicated", "-o", opts])
                .arg(&img)
                .arg(m.path()),
        )
    };
    let out = dedicated(&format!("{base},mode=kernel"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mode=kernel mounted with --dedicated"
    );
    assert!(
        err.contains("mode=kernel: not mounted by the kernel") && err.contains("inode_share"),
        "{err}"
    );
    // Without inode_share, a kernel mount (no process stays to serve it).
    let out = dedicated("ro,mode=kernel");
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(m.path(), "erofs"));
    run(Command::new(ishare_bin!()).arg("umount").arg(m.path()));
    assert!(!is_mounted(m.path(), "erofs"));
    // In the foreground there is nothing to run: refused.
    let out = run_unchecked(
        Command::new(ishare_bin!())
            .args(["mount", "-f", "-o", "ro,mode=kernel"])
            .arg(&img)
            .arg(m.path()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not with -f"),
        "{err}"
    );

    // `ishare doctor` says so.
    let doc = run_unchecked(
        Command::new(ishare_bin!())
            .args(["doctor", "--json", "--store"])
            .arg(store.path()),
    );
    let v: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    assert_eq!(v["kernel_mode"]["usable"], false, "{v:#}");
    assert!(
        v["kernel_mode"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("inode_share")),
        "{v:#}"
    );
    assert_ne!(v["mode"], "kernel", "{v:#}");
    assert_eq!(v["mode"], v["fuse_mode"], "{v:#}");

    let out = node_mount(&node, &img, m.path(), &format!("{base},mode=bogus"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mode=bogus: expected auto, fuse or kernel"),
        "{err}"
    );

    let out = node_mount(&node, &img, m.path(), &base);
    assert!(out.status.success(), "{out:?}");
    let list = run(Command::new(ishare_bin!())
        .args(["mounts", "--json", "--socket"])
        .arg(node.socket()));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let mode = v["mounts"][0]["mode"].as_str().unwrap().to_string();
    assert!(["passthrough", "daemon"].contains(&mode.as_str()), "{v}");
    assert!(
        node.log_text()
            .contains("mode=auto: FUSE serves it, not the kernel"),
        "{}",
        node.log_text()
    );
    run(Command::new(ishare_bin!()).arg("umount").arg(m.path()));
}

#[test]
fn ishare_umount_refuses_a_kernel_mount_it_did_not_make() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    // File-backed, and on a loop device of mount(8)'s (not marked as ishare's).
    let file_backed = ErofsMount::new(&img, &[]);
    let looped = LoopMount::new(&img).expect("mount -o loop");
    for m in [file_backed.path(), looped.path()] {
        let out = run_unchecked(Command::new(ishare_bin!()).arg("umount").arg(m));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "ishare umount unmounted a foreign mount"
        );
        assert!(err.contains("not an ishare mount (type erofs)"), "{err}");
        assert!(is_mounted(m, "erofs"));
    }
}

/// The loop device behind the mount at `dir` (from /proc/self/mountinfo), if any.
fn loop_device_of(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = dir.to_str().unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(want))
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(str::to_string))
        .next_back()
        .filter(|s| s.starts_with("/dev/loop"))
}

/// Whether the loop device at `dev` (`/dev/loopN`) reads `image` (other tests may
/// attach the device to their files once ours is gone).
fn loop_reads(dev: &str, image: &Path) -> bool {
    let name = dev.trim_start_matches("/dev/");
    fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .is_ok_and(|f| Path::new(f.trim_end()) == fs::canonicalize(image).unwrap())
}

/// `mode=kernel` without `inode_share` works on any kernel (nothing to verify): the
/// kernel mount, its listing, `ishare umount` and `umount(8)`, the loop device's end.
#[test]
fn a_kernel_mount_is_listed_unmounted_and_frees_its_loop_device() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let content = Rng::new(5).bytes(100_000);
    let img = small_image(dir.path());
    let node = NodeDaemon::start(&ishare_bin!());
    let m = ishare_testkit::mounts::mount_point("ishare-kmode-");
    let list = || -> serde_json::Value {
        let out = run(Command::new(ishare_bin!())
            .args(["mounts", "--json", "--socket"])
            .arg(node.socket()));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for how in ["ishare umount", "umount(8)"] {
        let out = node_mount(&node, &img, m.path(), "ro,mode=kernel");
        assert!(out.status.success(), "{how}: {out:?}\n{}", node.log_text());
        assert!(is_mounted(m.path(), "erofs"), "{how}");
        let dev = loop_device_of(m.path()).expect("a loop device under the mount");
        assert!(loop_reads(&dev, &img), "{dev} does not read the image");
        assert_eq!(fs::read(m.path().join("f")).unwrap(), content, "{how}");
        let v = list();
        assert_eq!(v["mounts"][0]["mode"], "kernel", "{v}");
        assert_eq!(
            v["mounts"][0]["mountpoint"].as_str(),
            m.path().to_str(),
            "{v}"
        );
        if how == "ishare umount" {
            run(Command::new(ishare_bin!()).arg("umount").arg(m.path()));
        } else {
            run(Command::new("umount").arg(m.path()));
        }
        assert!(!is_mounted(m.path(), "erofs"), "{how}");
        // Autoclear: the kernel detaches the device once the mount is gone (its release
        // may lag the unmount a little).
        let start = std::time::Instant::now();
        while loop_reads(&dev, &img) && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!loop_reads(&dev, &img), "{how}: {dev} still attached");
        let v = list();
        assert_eq!(v["mounts"].as_array().unwrap().len(), 0, "{how}: {v}");
    }
    // The daemon unmounts a kernel mount, and a FUSE one, when asked over its socket
    // (as a snapshotter does; not lazily: a descriptor of the mount's root must not
    // keep it busy).
    for (opts, fstype) in [("ro,mode=kernel", "erofs"), ("ro,mode=fuse", "fuse.ishare")] {
        let out = node_mount(&node, &img, m.path(), opts);
        assert!(out.status.success(), "{out:?}");
        assert!(is_mounted(m.path(), fstype), "{opts}");
        let req = ishare_share_request_unmount(&node.socket(), m.path());
        assert!(req.contains("\"ok\":true"), "{opts}: {req}");
        assert!(!is_mounted(m.path(), fstype), "{opts}");
    }
}

/// Sends `{"op":"unmount"}` for `dir` to the daemon at `socket`; its reply line.
fn ishare_share_request_unmount(socket: &Path, dir: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let req = serde_json::json!({"op": "unmount", "mountpoint": dir});
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    line
}

/// Loop devices reading `file`.
fn loops_reading(file: &Path) -> usize {
    let want = fs::canonicalize(file).unwrap();
    fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()
        })
        .filter(|f| Path::new(f.trim_end()) == want)
        .count()
}

/// An image with an extra blob device (mkfs.erofs 1.9.4 `--blobdev`): kernel-mounted
/// with its blob on a loop device of its own when `device=` names it, refused without.
#[test]
fn an_extra_device_goes_to_the_kernel_on_a_loop_device_of_its_own() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("d/f{i}"),
                Rng::new(40 + i).bytes(30_000 + 9_000 * i as usize),
            )
        })
        .collect();
    for (p, c) in &files {
        write_file(&src, p, c);
    }
    let (img, blob) = (dir.path().join("i.erofs"), dir.path().join("blob.bin"));
    run(Command::new(ishare_testkit::tools::mkfs_194())
        .arg(format!("--blobdev={}", blob.display()))
        .arg("--chunksize=4096")
        .arg(&img)
        .arg(&src));
    let node = NodeDaemon::start(&ishare_bin!());
    let m = ishare_testkit::mounts::mount_point("ishare-kmode-");

    let out = node_mount(&node, &img, m.path(), "ro,mode=kernel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted without its device");
    assert!(
        err.contains("device table names 1 extra devices and device= gave 0"),
        "{err}"
    );

    let opts = format!("ro,mode=kernel,device={}", blob.display());
    let out = node_mount(&node, &img, m.path(), &opts);
    assert!(out.status.success(), "{out:?}\n{}", node.log_text());
    assert!(is_mounted(m.path(), "erofs"));
    for (p, c) in &files {
        assert_eq!(&fs::read(m.path().join(p)).unwrap(), c, "{p}");
    }
    assert_eq!(loops_reading(&img), 1);
    assert_eq!(loops_reading(&blob), 1);
    run(Command::new(ishare_bin!()).arg("umount").arg(m.path()));
    let start = std::time::Instant::now();
    while loops_reading(&img) + loops_reading(&blob) > 0
        && start.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        loops_reading(&img) + loops_reading(&blob),
        0,
        "loop devices left"
    );
}
