//! `tar_input`: builds an image from the input as a tar archive (`ishare mkfs --tar=f`,
//! with and without `--aufs`). Refusing the archive is fine; a panic, a hang, memory out
//! of proportion to the input (libFuzzer's `-rss_limit_mb`) or an image that the reader
//! finds corrupt or whose fingerprints do not match its content is a bug.

use ishare_builder::{BuildOptions, TarInput, build_tar};
use ishare_erofs::{CheckOptions, Image};

/// The target.
pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tar = dir.path().join("input.tar");
    std::fs::write(&tar, data).expect("write the input");
    for aufs in [false, true] {
        let image = dir.path().join("out.img");
        let opts = BuildOptions {
            workers: 1,
            aufs,
            ..BuildOptions::default()
        };
        if build_tar(&TarInput::Path(tar.clone()), &image, &opts).is_err() {
            continue;
        }
        let img = Image::open(&image)
            .unwrap_or_else(|e| panic!("the reader refuses the image built (aufs {aufs}): {e}"));
        let check = CheckOptions {
            read_data: true,
            verify_fingerprints: true,
            data_budget: None,
        };
        if let Err(e) = img.check(&check) {
            panic!("the image built (aufs {aufs}) fails its check: {e}");
        }
    }
}
