//! Directory input: a directory holding an overlayfs whiteout (a 0:0 character device)
//! gets an empty `trusted.overlay.origin`, as mkfs.erofs 1.9.4 gives it; others do not.

use std::process::Command;

use ishare_builder::{BuildOptions, build};
use ishare_erofs::Image;

#[test]
fn whiteout_directories_are_marked_as_mkfs_erofs_does() {
    ishare_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["wh", "plain", "other-dev"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(src.join(d).join("f"), b"x").unwrap();
    }
    let mknod = |p: &str, dev| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join(p).as_path(),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            dev,
        )
        .unwrap()
    };
    mknod("wh/gone", rustix::fs::makedev(0, 0));
    mknod("other-dev/null", rustix::fs::makedev(1, 3));

    let ours = dir.path().join("ours.erofs");
    build(&src, &ours, &BuildOptions::default()).unwrap();
    let theirs = dir.path().join("theirs.erofs");
    ishare_testkit::tools::try_run(
        Command::new(ishare_testkit::tools::mkfs_194())
            .arg("--quiet")
            .arg(&theirs)
            .arg(&src),
    )
    .unwrap();

    for image in [&ours, &theirs] {
        let img = Image::open(image).unwrap();
        for (d, marked) in [
            ("/wh", true),
            ("/plain", false),
            ("/other-dev", false),
            ("/", false),
        ] {
            let ino = img.lookup_path(d.as_bytes()).unwrap();
            let origin = img.get_xattr(&ino, b"trusted.overlay.origin").unwrap();
            assert_eq!(
                origin.as_deref(),
                marked.then_some(&b""[..]),
                "{}: {d}",
                image.display()
            );
        }
    }
}
