//! The mounts a snapshot is used through, as containerd's overlayfs snapshotter shapes
//! them (containerd mounts them; the shim for a container's rootfs):
//!
//! * an active snapshot without parent: a read-write bind of its empty `fs` directory
//!   (containerd's differ applies the base layer into it);
//! * an active snapshot on layers: an overlay, `upperdir` and `workdir` its own,
//!   `lowerdir` the layers' mount points, newest first (the differ applies a layer
//!   straight into the upper directory, whiteouts in overlayfs' format);
//! * a view of one layer: a read-only bind of that layer's mount; of several: a
//!   read-only overlay of them (overlayfs needs two lower layers without an upper);
//!   of none: a read-only bind of its empty `fs` directory.
//!
//! Never an empty list: containerd 2.1.9 indexes `mounts[0]` unchecked.
//!
//! Option length: the kernel takes at most a page of mount options. Mount points are
//! `ROOT/l/ID` (about 35 bytes each with the default root), so about 110 layers fit
//! as absolute paths; beyond that containerd's own mount code (`mount.All` on Linux)
//! rewrites `lowerdir=` relative to the layers' common directory, leaving only the
//! ids. A chain too long even for that is refused with FailedPrecondition naming the
//! count, rather than handing containerd a mount the kernel rejects (containerd#12662).

use std::path::Path;

use crate::error::{Error, Result};

/// One mount, as containerd's `types.Mount` (the target is containerd's to choose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// `bind` or `overlay`.
    pub kind: String,
    /// What to mount.
    pub source: String,
    /// Options.
    pub options: Vec<String>,
}

/// The kernel's limit on mount options: one page.
const PAGE: usize = 4096;

/// What a snapshot with directory `dir` (`fs`, `work` in it) mounts as.
/// `lowers` are the parent layers' mount points, newest first.
pub fn mounts(key: &str, dir: &Path, writable: bool, lowers: &[&Path]) -> Result<Vec<MountSpec>> {
    let fs = dir.join("fs");
    let rw = if writable { "rw" } else { "ro" };
    let bind = |src: &Path| MountSpec {
        kind: "bind".into(),
        source: src.display().to_string(),
        options: vec![rw.into(), "rbind".into()],
    };
    match (writable, lowers) {
        (_, []) => return Ok(vec![bind(&fs)]),
        (false, [one]) => return Ok(vec![bind(one)]),
        _ => {}
    }
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let lowerdir = format!("lowerdir={}", lowerdir.join(":"));
    let mut options = vec!["index=off".to_string()];
    if writable {
        options.push(format!("workdir={}", dir.join("work").display()));
        options.push(format!("upperdir={}", fs.display()));
    }
    // What containerd's compaction leaves when the absolute form is too long: the
    // lowerdir entries relative to their common parent (our `l/`), i.e. the ids.
    let compact: usize = lowers
        .iter()
        .map(|p| p.file_name().map_or(0, |n| n.len()) + 1)
        .sum::<usize>()
        + options.iter().map(|o| o.len() + 1).sum::<usize>()
        + "lowerdir=".len();
    if compact >= PAGE {
        return Err(Error::FailedPrecondition(format!(
            "snapshot {key:?}: {} layers do not fit the kernel's one-page limit of overlay mount options",
            lowers.len()
        )));
    }
    options.push(lowerdir);
    Ok(vec![MountSpec {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn shapes() {
        let dir = Path::new("/r/snapshots/7");
        let (a, b) = (PathBuf::from("/r/l/5"), PathBuf::from("/r/l/3"));
        let m = mounts("k", dir, true, &[]).unwrap();
        assert_eq!(m[0].kind, "bind");
        assert_eq!(m[0].source, "/r/snapshots/7/fs");
        assert_eq!(m[0].options, ["rw", "rbind"]);
        let m = mounts("k", dir, false, &[&a]).unwrap();
        assert_eq!(
            (m[0].kind.as_str(), m[0].source.as_str()),
            ("bind", "/r/l/5")
        );
        assert_eq!(m[0].options, ["ro", "rbind"]);
        let m = mounts("k", dir, true, &[&a, &b]).unwrap();
        assert_eq!(m[0].kind, "overlay");
        assert!(m[0].options.contains(&"lowerdir=/r/l/5:/r/l/3".to_string()));
        assert!(
            m[0].options
                .contains(&"upperdir=/r/snapshots/7/fs".to_string())
        );
        assert!(
            m[0].options
                .contains(&"workdir=/r/snapshots/7/work".to_string())
        );
        let m = mounts("k", dir, false, &[&a, &b]).unwrap();
        assert!(!m[0].options.iter().any(|o| o.starts_with("upperdir")));
    }

    #[test]
    fn too_many_layers_are_refused_by_name() {
        let many: Vec<PathBuf> = (100_000..101_000)
            .map(|i| PathBuf::from(format!("/var/lib/ishare/snapshotter/l/{i}")))
            .collect();
        let refs: Vec<&Path> = many.iter().map(PathBuf::as_path).collect();
        let e = mounts("img", Path::new("/x/snapshots/1"), true, &refs).unwrap_err();
        assert!(
            e.to_string().contains("1000 layers") && e.to_string().contains("\"img\""),
            "{e}"
        );
        // 200 layers: too long as absolute paths, fine once containerd compacts them.
        assert!(mounts("img", Path::new("/x/snapshots/1"), true, &refs[..200]).is_ok());
    }
}
