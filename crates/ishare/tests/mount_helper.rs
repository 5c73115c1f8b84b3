//! `mount -t fuse.ishare` through the real mount(8) and umount(8): mount(8) finds
//! the helper as `/sbin/mount.fuse.ishare` (a link to the ishare binary, installed by
//! this test for its duration when the machine has none, as the package installs it),
//! from a command line and from an fstab line (`mount --fstab FILE`), with the domain
//! id in a root-only file so it appears on no command line. The mount goes through
//! the node daemon (a private one here, named by `ISHARE_SOCKET`, which mount(8)
//! passes on to the helper).
//!
//! Needs root and /dev/fuse.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::{NodeDaemon, is_mounted, mount_point};
use ishare_testkit::rng::Rng;
use ishare_testkit::snapshot::hash_file;
use ishare_testkit::tools::{require_root, run, run_unchecked};
use ishare_testkit::tree::write_file;
use sha2::{Digest, Sha256};

const HELPER: &str = "/sbin/mount.fuse.ishare";

/// The helper link for the test's duration; removed afterwards when this test made it.
struct Helper {
    made: bool,
}

impl Helper {
    fn install() -> Helper {
        let helper = Path::new(HELPER);
        let ours = fs::canonicalize(ishare_bin!()).unwrap();
        match fs::read_link(helper) {
            Ok(target) if fs::canonicalize(&target).is_ok_and(|t| t == ours) => {
                Helper { made: false }
            }
            Ok(_) | Err(_) if helper.symlink_metadata().is_ok() => {
                panic!("{HELPER} exists and is not this build's binary: remove it to run this test")
            }
            _ => {
                std::os::unix::fs::symlink(&ours, helper).unwrap();
                Helper { made: true }
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.made {
            let _ = fs::remove_file(HELPER);
        }
    }
}

/// A 0600 file holding `id`.
fn id_file(dir: &Path, id: &str) -> PathBuf {
    let f = dir.join("domain-id");
    fs::write(&f, id).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    f
}

#[test]
fn mount_8_and_fstab_mount_through_the_helper() {
    require_root();
    let _helper = Helper::install();
    let work = tempfile::tempdir().unwrap();
    let big = Rng::new(3).bytes(4 << 20);
    let want: [u8; 32] = Sha256::digest(&big).into();
    let mut images = Vec::new();
    for i in 0..2 {
        let src = work.path().join(format!("src{i}"));
        write_file(&src, &format!("at{i}/big"), &big);
        let img = work.path().join(format!("{i}.erofs"));
        run(Command::new(ishare_bin!())
            .args(["mkfs", "--quiet"])
            .arg(&img)
            .arg(&src));
        images.push(img);
    }
    let store = tempfile::tempdir().unwrap();
    let id = id_file(work.path(), "helper-domain-Q7");
    let opts = format!(
        "inode_share,domain_id_file={},store={}",
        id.display(),
        store.path().display()
    );
    // Declared first, dropped last: the daemon's end unmounts them, then they go.
    let (m0, m1) = (mount_point("ishare-helper-"), mount_point("ishare-helper-"));
    let node = NodeDaemon::at();

    // A command line.
    let out = run_unchecked(
        Command::new("mount")
            .env("ISHARE_SOCKET", node.socket())
            .args(["-t", "fuse.ishare", "-o", &opts])
            .arg(&images[0])
            .arg(m0.path()),
    );
    assert!(out.status.success(), "mount(8): {out:?}");
    assert!(
        is_mounted(m0.path(), "fuse.ishare"),
        "mount(8) did not mount"
    );

    // An fstab line.
    let fstab = work.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# ishare image\n{} {} fuse.ishare {opts},nofail 0 0\n",
            images[1].display(),
            m1.path().display()
        ),
    )
    .unwrap();
    let out = run_unchecked(
        Command::new("mount")
            .env("ISHARE_SOCKET", node.socket())
            .arg("--fstab")
            .arg(&fstab)
            .arg(m1.path()),
    );
    assert!(out.status.success(), "mount --fstab: {out:?}");
    assert!(
        is_mounted(m1.path(), "fuse.ishare"),
        "mount --fstab did not mount"
    );

    for (i, m) in [&m0, &m1].iter().enumerate() {
        let f = m.path().join(format!("at{i}/big"));
        assert_eq!(hash_file(&f).unwrap().1, want, "{}", f.display());
    }
    // Both mounts are the daemon's, sharing one object; the id is on no command line
    // and in no mount table.
    let list = run(Command::new(ishare_bin!())
        .args(["mounts", "--json", "--socket"])
        .arg(node.socket()));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["mounts"].as_array().unwrap().len(), 2, "{v}");
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !table.contains("helper-domain-Q7"),
        "the domain id is in mountinfo"
    );

    for m in [&m0, &m1] {
        let out = run_unchecked(Command::new("umount").arg(m.path()));
        assert!(out.status.success(), "umount(8): {out:?}");
        assert!(!is_mounted(m.path(), "fuse.ishare"), "still mounted");
    }
    let list = run(Command::new(ishare_bin!())
        .args(["mounts", "--json", "--socket"])
        .arg(node.socket()));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["mounts"].as_array().unwrap().len(), 0, "{v}");
}
