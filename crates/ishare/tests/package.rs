//! `scripts/package.sh`: the .deb lists the binary, units, man pages and completions,
//! lintian reports no error, and the binary unpacked from it runs (`--version`,
//! `doctor --json`). Building the package takes a release build, so CI does not run it:
//! `cargo test -p ishare --test package -- --ignored` does (ISHARE_BIN=path reuses a
//! built binary).

use std::path::Path;
use std::process::Command;

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

#[test]
#[ignore = "builds a release package (minutes): run with --ignored"]
fn package_builds_lints_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let deb = output(Command::new("bash").arg(root.join("scripts/package.sh")));
    let deb = deb.trim();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.ends_with(&format!("ishare_{version}_amd64.deb")),
        "{deb}"
    );

    let list = output(Command::new("dpkg-deb").args(["-c", deb]));
    for want in [
        "./usr/bin/ishare",
        "./usr/sbin/mount.fuse.ishare -> ../bin/ishare",
        "./usr/lib/ishare/bin/mkfs.erofs -> ../../../bin/ishare",
        "./lib/systemd/system/ishare.service",
        "./lib/systemd/system/ishare-snapshotter.service",
        "./usr/share/man/man1/ishare.1.gz",
        "./usr/share/man/man1/ishare-mkfs.1.gz",
        "./usr/share/man/man8/ishare-mount.8.gz",
        "./usr/share/bash-completion/completions/ishare",
        "./usr/share/zsh/vendor-completions/_ishare",
        "./usr/share/fish/vendor_completions.d/ishare.fish",
    ] {
        assert!(list.contains(want), "{want} not in the package:\n{list}");
    }
    let depends = output(Command::new("dpkg-deb").args(["-f", deb, "Depends"]));
    assert!(depends.contains("libc6"), "Depends: {depends}");

    // lintian exits non-zero on errors (its default --fail-on).
    output(Command::new("lintian").arg(deb));

    // The unpacked binary (a scratch root) runs.
    let scratch = tempfile::tempdir().expect("tempdir");
    output(
        Command::new("dpkg-deb")
            .args(["-x", deb])
            .arg(scratch.path()),
    );
    let bin = scratch.path().join("usr/bin/ishare");
    let v = output(Command::new(&bin).arg("--version"));
    assert_eq!(v.trim(), format!("ishare {version}"));
    let doctor = output(Command::new(&bin).args(["doctor", "--json"]));
    let _: serde_json::Value = serde_json::from_str(&doctor).expect("doctor --json is JSON");
}
