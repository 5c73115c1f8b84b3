//! `/proc/self/mountinfo`, read in one place: which filesystem is mounted where, with
//! its mount id and device number (for `ishare umount`, which unmounts only ishare's own
//! mounts and finds the daemon serving one by them, and for `ishare doctor`, which names
//! the store's filesystem).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One mount: which, where, and its filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The mount id (unique among the current mounts; may be reused after an unmount).
    pub(crate) mount_id: u64,
    /// The filesystem's device number (major, minor): for FUSE, the connection's.
    pub(crate) dev: (u32, u32),
    /// The mount point, unescaped (bytes: paths need not be UTF-8).
    pub(crate) mount_point: Vec<u8>,
    /// The filesystem type (`fuse.ishare`, `ext4`, ...).
    pub(crate) fstype: String,
}

/// The mounts of a mountinfo text, in its order (later mounts cover earlier ones).
/// Lines without the `-` separator are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mp), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let mount_id = fields.first().and_then(|f| f.parse().ok()).unwrap_or(0);
        let dev = fields
            .get(2)
            .and_then(|f| f.split_once(':'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((0, 0));
        out.push(MountEntry {
            mount_id,
            dev,
            mount_point: unescape(mp),
            fstype: fstype.to_string(),
        });
    }
    out
}

/// This process's mounts.
pub(crate) fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string(MOUNTINFO)?))
}

/// The mount at exactly `path` (the last one mounted there, which covers the others).
pub(crate) fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let want = path.as_os_str().as_bytes();
    Ok(mounts()?.into_iter().rfind(|m| m.mount_point == want))
}

/// The type of the filesystem holding `path` (canonical): the mount with the longest
/// mount point containing it (the last one of equal length, as later mounts cover
/// earlier ones).
pub(crate) fn filesystem_of(path: &Path) -> Option<String> {
    let p = path.as_os_str().as_bytes();
    let mut best: Option<(usize, String)> = None;
    for m in mounts().ok()? {
        let mp = &m.mount_point;
        let inside = mp == b"/"
            || p == mp.as_slice()
            || (p.starts_with(mp) && p.get(mp.len()) == Some(&b'/'));
        if inside && best.as_ref().is_none_or(|(len, _)| mp.len() >= *len) {
            best = Some((mp.len(), m.fstype));
        }
    }
    best.map(|(_, t)| t)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_longest_prefix() {
        assert_eq!(unescape("/a\\040b"), b"/a b");
        let m = parse(
            "22 1 0:21 / / rw - ext4 /dev/root rw\n\
             36 22 0:30 / /mnt/a\\040b rw,nosuid shared:1 - fuse.ishare img ro\n\
             bad line\n",
        );
        assert_eq!(
            m[1],
            MountEntry {
                mount_id: 36,
                dev: (0, 30),
                mount_point: b"/mnt/a b".to_vec(),
                fstype: "fuse.ishare".into()
            }
        );
        assert_eq!(m.len(), 2);
        // The root is always some filesystem.
        assert!(filesystem_of(Path::new("/")).is_some());
    }
}
