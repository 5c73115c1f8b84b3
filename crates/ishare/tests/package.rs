//! `scripts/package.sh`, built from the binary under test (no release build; the
//! whole test took 113–128 s of wall time, 33 s of CPU, at load average 12–17 on 2
//! cores): the .deb lists the binary, units, configuration, man pages, completions and
//! the helper links; lintian reports no error; installed with dpkg into a scratch root
//! (`tests/package/scratch_root.sh`, an overlay of this host in private mount and PID
//! namespaces) systemd accepts its units, it runs `--version` and `doctor --json` and
//! serves mounts, and removing it stops the units and leaves no mount and no process
//! behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const ISHARE: &str = env!("CARGO_BIN_EXE_ishare");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The `key: value` lines scratch_root.sh prints.
fn facts(out: &str) -> BTreeMap<&str, &str> {
    out.lines().filter_map(|l| l.split_once(": ")).collect()
}

#[test]
fn package_builds_lints_installs_and_removes_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let deb = output(
        Command::new("bash")
            .arg(root.join("scripts/package.sh"))
            .env("ISHARE_BIN", ISHARE)
            .env("ISHARE_DEB_DIR", out_dir.path()),
    );
    let deb = deb.trim();
    assert!(
        deb.ends_with(&format!("ishare_{VERSION}_amd64.deb")),
        "{deb}"
    );
    let field = |name| output(Command::new("dpkg-deb").args(["-f", deb, name]));
    assert_eq!(field("Version").trim(), VERSION, "the package's version");
    assert!(
        field("Depends").contains("libc6"),
        "Depends from the binary"
    );
    assert!(
        field("Maintainer").starts_with("ishare developers <"),
        "Maintainer: {}",
        field("Maintainer")
    );

    let list = output(Command::new("dpkg-deb").args(["-c", deb]));
    for want in [
        "./usr/bin/ishare",
        "./usr/sbin/mount.fuse.ishare -> ../bin/ishare",
        "./usr/lib/ishare/bin/mkfs.erofs -> ../../../bin/ishare",
        "./lib/systemd/system/ishare.service",
        "./lib/systemd/system/ishare-snapshotter.service",
        "./lib/systemd/system/ishare.service.d/ishare-defaults.conf",
        "./lib/systemd/system/ishare-snapshotter.service.d/ishare-defaults.conf",
        "./etc/default/ishare",
        "./usr/share/man/man1/ishare.1.gz",
        "./usr/share/man/man1/ishare-mkfs.1.gz",
        "./usr/share/man/man8/ishare-mount.8.gz",
        "./usr/share/man/man8/ishare-daemon.8.gz",
        "./usr/share/man/man8/mount.fuse.ishare.8.gz",
        "./usr/share/bash-completion/completions/ishare",
        "./usr/share/zsh/vendor-completions/_ishare",
        "./usr/share/fish/vendor_completions.d/ishare.fish",
        "./usr/share/doc/ishare/copyright",
    ] {
        assert!(list.contains(want), "{want} not in the package:\n{list}");
    }
    // The configuration is a conffile (dpkg keeps the admin's edits).
    let control = tempfile::tempdir().expect("tempdir");
    output(
        Command::new("dpkg-deb")
            .args(["-e", deb])
            .arg(control.path()),
    );
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/default/ishare");

    // lintian exits non-zero on errors (its default --fail-on).
    output(Command::new("lintian").arg(deb));

    let scratch = tempfile::tempdir().expect("tempdir");
    let out = output(
        Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "bash"])
            .arg(root.join("crates/ishare/tests/package/scratch_root.sh"))
            .arg(deb)
            .arg(scratch.path()),
    );
    let f = facts(&out);
    let get = |k: &str| *f.get(k).unwrap_or_else(|| panic!("no {k} in:\n{out}"));
    assert_eq!(get("status"), "install ok installed");
    assert_eq!(get("version"), format!("ishare {VERSION}"));
    assert_eq!(get("units-verify"), "", "systemd-analyze verify complains");
    // mount.fuse.ishare(8) is a .so link to ishare-mount(8), which man follows.
    assert_eq!(
        get("man").trim(),
        "/usr/share/man/man8/ishare-mount.8.gz /usr/share/man/man8/ishare-mount.8.gz \
         /usr/share/man/man1/ishare.1.gz",
        "man -w ishare-mount mount.fuse.ishare ishare"
    );
    assert!(
        get("completion").starts_with("complete ") && get("completion").ends_with(" ishare"),
        "bash completion: {}",
        get("completion")
    );
    let doctor: serde_json::Value = serde_json::from_str(get("doctor")).expect("doctor --json");
    assert!(doctor["checks"].is_array(), "doctor --json: {doctor}");
    assert_eq!(
        get("read"),
        "from the scratch root / from the scratch root",
        "both mounts serve the image"
    );
    assert_eq!(get("before-mounts"), "2", "the mounts were made");
    assert_ne!(get("before-processes"), "0", "daemons ran");
    // Removal: the units stopped through systemd, every mount and process gone.
    assert!(
        get("systemd-calls")
            .contains("deb-systemd-invoke stop ishare-snapshotter.service ishare.service"),
        "{}",
        get("systemd-calls")
    );
    assert_eq!(get("after-mounts"), "0", "a mount outlived the package");
    assert_eq!(
        get("after-processes"),
        "0",
        "a process outlived the package"
    );
    assert_eq!(get("binary-after-remove"), "absent");
    assert_eq!(
        get("config-after-remove"),
        "present",
        "remove keeps conffiles"
    );
    assert_eq!(get("config-after-purge"), "absent", "purge removes them");
}
