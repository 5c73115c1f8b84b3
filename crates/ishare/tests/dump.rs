//! `ishare dump` on an image from mkfs.erofs 1.9.4: the superblock names every feature
//! and the fingerprint xattr, an inode shows its fingerprint as `sha256:<hex>` equal to
//! the file's SHA-256, `--ls` lists the directory, `--cat` prints the contents, `-S`
//! counts what is there, and bad requests fail with a message.

use std::fs;
use std::path::Path;
use std::process::Command;

use ishare_testkit::tools::mkfs_erofs;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn ishare(args: &[&str], image: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ishare"))
        .args(args)
        .arg(image)
        .output()
        .expect("run ishare")
}

fn json(args: &[&str], image: &Path) -> Value {
    let out = ishare(args, image);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn dump_shows_superblock_inode_listing_contents_and_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("lib")).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(src.join("lib/libx.so"), &data).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("lib/libx.so", src.join("link")).unwrap();
    let image = dir.path().join("img.erofs");
    mkfs_erofs(&["--xattr-inode-digest", "-Enosbcrc"], &image, &src);

    let sb = &json(&["dump", "-s", "--json"], &image)["superblock"];
    assert_eq!(sb["magic"], "0xe0f5e1e2");
    assert_eq!(sb["block_size"], 4096);
    assert_eq!(sb["fingerprint_xattr"], "erofs.fingerprint.v1");
    let features: Vec<&str> = sb["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for f in ["ishare_xattrs", "xattr_prefixes", "plain_xattr_pfx"] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    assert!(!features.contains(&"sb_csum"), "-Enosbcrc: {features:?}");

    let ino = &json(&["dump", "--json", "--path", "/lib/libx.so"], &image)["inode"];
    assert_eq!(ino["size"], 10_000);
    assert_eq!(ino["type"], "regular file");
    let want = format!("sha256:{}", hex(&Sha256::digest(&data)));
    let xattrs = ino["xattrs"].as_array().unwrap();
    assert!(
        xattrs
            .iter()
            .any(|x| x["name"] == "erofs.fingerprint.v1" && x["value"] == want.as_str()),
        "fingerprint {want} not shown in {xattrs:?}"
    );
    let text =
        String::from_utf8(ishare(&["dump", "--path", "/lib/libx.so"], &image).stdout).unwrap();
    assert!(text.contains(&want), "text dump lacks {want}:\n{text}");

    let link = &json(&["dump", "--json", "--path", "/link"], &image)["inode"];
    assert_eq!(link["target"], "lib/libx.so");

    let root = json(&["dump", "--json", "--path", "/", "--ls"], &image);
    let names: Vec<&str> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [".", "..", "empty", "lib", "link"]);

    let cat = ishare(&["dump", "--path", "/lib/libx.so", "--cat"], &image);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, data);

    let stats = &json(&["dump", "-S", "--json"], &image)["statistics"];
    assert_eq!(stats["by_type"]["regular file"], 2);
    assert_eq!(stats["by_type"]["directory"], 1);
    assert_eq!(stats["by_type"]["symlink"], 1);
    assert_eq!(stats["regular_file_bytes"], 10_000);
    assert_eq!(
        stats["files_with_fingerprint"], 1,
        "empty files get no fingerprint"
    );

    for (args, needle) in [
        (&["dump", "--path", "/nope"][..], "no such file"),
        (
            &["dump", "--path", "/lib", "--cat"][..],
            "not a regular file",
        ),
        (&["dump", "--path", "/empty", "--ls"][..], "not a directory"),
        (&["dump", "--ls"][..], "--ls and --cat need"),
    ] {
        let out = ishare(args, &image);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let out = ishare(&["dump"], &dir.path().join("missing.erofs"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.erofs: cannot open"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
