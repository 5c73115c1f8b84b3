//! `file_contexts`: reads the input as an SELinux file_contexts file (`ishare mkfs
//! --file-contexts`) and looks up a fixed set of paths with every file type. Refusing
//! the file is fine; a panic, a hang or runaway memory is a bug, and so is a label
//! that changes when the path is spelled with doubled or trailing slashes (lookups
//! clean the path first, as libselinux does).

use ishare_builder::FileContexts;

/// Paths tried: the root, the usual top-level directories, names with regex
/// characters, non-UTF-8 bytes and a newline.
const PATHS: &[&[u8]] = &[
    b"/",
    b"/etc",
    b"/etc/passwd",
    b"/usr/bin/sh",
    b"/usr/lib/x86_64-linux-gnu/libc.so.6",
    b"/var/lib/dpkg/status",
    b"/dev/null",
    b"/home/user/.bashrc",
    b"/run/user/1000",
    b"/a|b/(c)[d]{e}",
    b"/\xff\xfe/\x01",
    b"/tmp/new\nline",
];

/// `S_IFMT` values, and 0 (any type).
const MODES: &[u32] = &[
    0, 0o100000, 0o040000, 0o120000, 0o060000, 0o020000, 0o010000, 0o140000,
];

/// The target.
pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fc = dir.path().join("file_contexts");
    std::fs::write(&fc, data).expect("write the input");
    let Ok(contexts) = FileContexts::open(&fc, None) else {
        return;
    };
    for path in PATHS {
        let mut spelled = b"//".to_vec();
        spelled.extend_from_slice(path);
        spelled.push(b'/');
        for &mode in MODES {
            let label = contexts.lookup(path, mode);
            assert_eq!(
                label,
                contexts.lookup(&spelled, mode),
                "{} and {} differ (mode {mode:o})",
                path.escape_ascii(),
                spelled.escape_ascii()
            );
        }
    }
}
