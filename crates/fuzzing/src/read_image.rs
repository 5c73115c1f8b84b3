//! `read_image`: opens the input as an EROFS image and walks it: `Image::check` (reading
//! all file data within a budget), path lookups, xattrs and reads at odd offsets. Any
//! panic, hang or out-of-memory is a bug in the reader.

use std::sync::OnceLock;

use ishare_erofs::{CheckOptions, Image};

/// Paths of the seed tree (`fuzz/make-seeds.sh`), so mutations of the seeds reach them.
const PATHS: &[&[u8]] = &[
    b"/big.bin",
    b"/text.txt",
    b"/bigdir/entry-150",
    b"/bigdir/entry-15",
    b"/sub/subsub/deep",
    b"/link-long",
    b"/f",
];

/// Also run the check with fingerprint verification (`ISHARE_FUZZ_VERIFY=1`): off by
/// default, as a fingerprinted sparse file claiming gigabytes makes hashing slow.
fn verify() -> bool {
    static VERIFY: OnceLock<bool> = OnceLock::new();
    *VERIFY.get_or_init(|| std::env::var_os("ISHARE_FUZZ_VERIFY").is_some_and(|v| v == "1"))
}

/// The target.
pub fn run(data: &[u8]) {
    let len = data.len() as u64;
    let Ok(img) = Image::from_source("fuzz.img", Box::new(data.to_vec()), vec![]) else {
        return;
    };
    let mut opts = CheckOptions {
        read_data: true,
        verify_fingerprints: false,
        data_budget: Some(16 * len),
    };
    let _ = img.check(&opts);
    if verify() {
        opts.verify_fingerprints = true;
        let _ = img.check(&opts);
    }
    let mut buf = [0u8; 4096];
    for path in PATHS {
        let Ok(ino) = img.lookup_path(path) else {
            continue;
        };
        let _ = img.xattrs(&ino);
        let _ = img.fingerprint(&ino);
        if ino.is_dir() {
            let _ = img.read_dir(&ino);
            continue;
        }
        // Reads at the start, inside the file at unaligned offsets, and at the end.
        for pos in [
            0,
            1,
            4095,
            4097,
            1 << 17,
            ino.size / 2,
            ino.size.saturating_sub(3),
        ] {
            let _ = img.read_at(&ino, pos, &mut buf);
        }
        if ino.size > 0 {
            let _ = img.map(&ino, ino.size - 1);
        }
    }
}
