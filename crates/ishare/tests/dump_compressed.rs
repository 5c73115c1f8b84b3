//! `ishare dump` on compressed images from mkfs.erofs 1.9.4: `-s` shows the algorithms
//! and their configuration records, `-S` the compression ratio as `dump.erofs -S`
//! computes it, and `-e` lists a file's extents (text and JSON).

use std::fs;
use std::path::Path;
use std::process::Command;

use ishare_testkit::ishare_bin;
use ishare_testkit::tools::mkfs_erofs;
use serde_json::Value;

fn ishare(args: &[&str], image: &Path) -> std::process::Output {
    ishare_testkit::tools::run(Command::new(ishare_bin!()).args(args).arg(image))
}

fn json(args: &[&str], image: &Path) -> Value {
    serde_json::from_slice(&ishare(args, image).stdout).expect("valid JSON")
}

#[test]
fn dump_compressed_superblock_statistics_and_extents() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = ishare_testkit::Rng::new(0x1234_5678_9ABC_DEF0);
    let mut next = move || rng.next_u64();
    let words: [&[u8]; 6] = [b"erofs ", b"page ", b"cache ", b"share ", b"of ", b"data\n"];
    let mut text = Vec::new();
    while text.len() < 200_000 {
        text.extend_from_slice(words[(next() % 6) as usize]);
    }
    let noise: Vec<u8> = (0..50_000).map(|_| next() as u8).collect();
    fs::write(src.join("text"), &text).unwrap();
    fs::write(src.join("noise"), &noise).unwrap();
    fs::write(src.join("small"), b"hi\n").unwrap();
    let image = dir.path().join("img.erofs");
    mkfs_erofs(&["-zlz4hc:zstd", "-C16384"], &image, &src);

    let sb = &json(&["dump", "-s", "--json"], &image)["superblock"];
    assert_eq!(
        sb["compression"]["algorithms"],
        serde_json::json!(["lz4", "zstd"])
    );
    assert_eq!(sb["compression"]["lz4_max_pclusterblks"], 4);
    assert!(
        sb["compression"]["zstd_windowlog"].as_u64().is_some(),
        "{sb}"
    );
    let text_sb = String::from_utf8(ishare(&["dump", "-s"], &image).stdout).unwrap();
    assert!(text_sb.contains("Compression algorithms:"), "{text_sb}");

    // The ratio as dump.erofs computes it: compressed blocks (or the size) over sizes.
    let st = &json(&["dump", "-S", "--json"], &image)["statistics"];
    assert_eq!(st["compressed_files"], 1, "{st}");
    assert_eq!(st["uncompressed_files"], 2, "{st}");
    let out = ishare_testkit::tools::run(
        Command::new(ishare_testkit::tools::dump_194())
            .arg("-S")
            .arg(&image),
    );
    let theirs = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> String {
        theirs
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("dump.erofs -S lacks {name}:\n{theirs}"))
            .split_whitespace()
            .rev()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .unwrap()
            .trim_end_matches('%')
            .to_string()
    };
    assert_eq!(
        st["stored_file_bytes"].as_u64().unwrap().to_string(),
        field("total file size:")
    );
    assert_eq!(
        format!("{:.2}", st["compression_ratio_percent"].as_f64().unwrap()),
        field("compress rate")
    );

    // Extents: they tile the file, and the compressed file's are pclusters.
    let v = json(&["dump", "--json", "-e", "--path", "/text"], &image);
    assert_eq!(v["inode"]["layout"], "compressed_compact");
    let ext = v["extents"].as_array().unwrap();
    let mut pos = 0;
    for e in ext {
        assert_eq!(e["logical"].as_u64().unwrap(), pos, "{e}");
        pos += e["length"].as_u64().unwrap();
    }
    assert_eq!(pos, text.len() as u64);
    assert!(ext.iter().any(|e| e["algorithm"] == "lz4"), "{ext:?}");
    let out = String::from_utf8(ishare(&["dump", "-e", "--path", "/text"], &image).stdout).unwrap();
    assert!(
        out.contains(&format!("/text: {} extents found", ext.len())),
        "{out}"
    );
    let out = Command::new(ishare_bin!())
        .args(["dump", "-e"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-e needs --nid or --path"));
}
