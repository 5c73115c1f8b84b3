//! `serve_image`: mounts the input as an EROFS image through ishare's FUSE filesystem
//! (in this process, sharing on with `verify=on`, a store of its own) and walks the
//! mount with ordinary system calls: `lstat`, `readdir`, `readlink`, `listxattr`,
//! reads. Requires root and `/dev/fuse`; elsewhere it does nothing.
//!
//! A bug is: a panic in a FUSE request's handling (the mount contains it as EIO, so
//! the target watches the panic hook), a hang, or a file whose bytes through the mount
//! differ from what the reader reads from the image directly.

use std::collections::VecDeque;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ishare_erofs::{FileType, Image};
use ishare_share::{DomainId, MountOptions, Passthrough, mount};

/// Entries visited per input, so a huge directory cannot make one run slow.
const MAX_ENTRIES: usize = 300;
/// Bytes compared per file.
const MAX_READ: usize = 1 << 16;

/// Set by the panic hook: a FUSE worker panicked (and answered EIO).
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Chains a hook that records every panic, ahead of the one installed (libFuzzer's
/// aborts, which is what the fuzzer wants; the test harness's prints).
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// The target.
pub fn run(data: &[u8]) {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return;
    }
    // The reader must accept the image first: a mount of one it refuses fails, which
    // is no finding.
    let Ok(reference) = Image::from_source("fuzz.img", Box::new(data.to_vec()), vec![]) else {
        return;
    };
    let Ok(root) = reference.root() else {
        return;
    };
    if !root.is_dir() {
        return;
    }
    watch_panics();
    PANICKED.store(false, Ordering::SeqCst);

    let dir = tempfile::tempdir().expect("temporary directory");
    let image = dir.path().join("fuzz.img");
    fs::write(&image, data).expect("write the image");
    let mnt = dir.path().join("mnt");
    let store = dir.path().join("store");
    fs::create_dir(&mnt).expect("create the mount point");
    let opts = MountOptions {
        inode_share: true,
        domain_id: Some(DomainId::new(b"fuzz".to_vec())),
        store,
        verify: true,
        passthrough: Passthrough::Auto,
        threads: 2,
        ..MountOptions::default()
    };
    let Ok(mounted) = mount(&image, &mnt, &opts) else {
        return;
    };
    let stopper = mounted.stopper();
    let session = std::thread::spawn(move || mounted.run());
    walk(&reference, &mnt);
    stopper.stop();
    let _ = session.join().expect("the session thread");
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "a FUSE request panicked on this image (answered EIO)"
    );
}

/// Walks the mount breadth first, comparing regular files' bytes with the reader's.
fn walk(img: &Image, mnt: &Path) {
    let mut queue = VecDeque::from([(PathBuf::new(), b"/".to_vec())]);
    let mut seen = 0;
    while let Some((rel, ipath)) = queue.pop_front() {
        let Ok(entries) = fs::read_dir(mnt.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return;
            }
            let name = entry.file_name();
            let path = mnt.join(&rel).join(&name);
            let child_rel = rel.join(&name);
            let mut child_ipath = ipath.clone();
            if child_ipath.last() != Some(&b'/') {
                child_ipath.push(b'/');
            }
            child_ipath.extend_from_slice(name.as_bytes());
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let _ = rustix::fs::listxattr(&path, &mut [0u8; 4096]);
            if meta.is_dir() {
                queue.push_back((child_rel, child_ipath));
            } else if meta.file_type().is_symlink() {
                let _ = fs::read_link(&path);
            } else if meta.is_file() {
                compare_file(img, &path, &child_ipath);
            }
        }
    }
}

/// Panics when both the mount and the reader read the file's start and disagree.
fn compare_file(img: &Image, path: &Path, ipath: &[u8]) {
    let Ok(ino) = img.lookup_path(ipath) else {
        return;
    };
    if ino.file_type != FileType::Regular {
        return;
    }
    let mut want = vec![0u8; MAX_READ.min(usize::try_from(ino.size).unwrap_or(MAX_READ))];
    let Ok(n) = read_full(|buf, pos| img.read_at(&ino, pos, buf).ok(), &mut want) else {
        return;
    };
    want.truncate(n);
    let Ok(file) = fs::File::open(path) else {
        return;
    };
    let mut got = Vec::with_capacity(want.len());
    if file.take(MAX_READ as u64).read_to_end(&mut got).is_err() {
        return;
    }
    got.truncate(want.len());
    assert!(
        got == want,
        "{}: the mount serves other bytes than the image holds",
        path.display()
    );
}

/// Fills `buf` from `read(buf, pos)`; `Err` when a read fails.
fn read_full(read: impl Fn(&mut [u8], u64) -> Option<usize>, buf: &mut [u8]) -> Result<usize, ()> {
    let mut done = 0;
    while done < buf.len() {
        match read(&mut buf[done..], done as u64) {
            Some(0) => break,
            Some(n) => done += n,
            None => return Err(()),
        }
    }
    Ok(done)
}
