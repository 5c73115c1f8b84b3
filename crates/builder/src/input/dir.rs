//! The directory input: scanning a source directory into the [`Tree`].
//!
//! Directories are listed and their entries stat'ed in parallel, but every list is
//! sorted by name bytes before anything depends on it, and inodes are numbered by a
//! breadth-first walk of the sorted tree, so the result does not depend on the
//! thread count or on the order in which the source file system lists entries.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ishare_erofs::format::{NAME_LEN, S_IFCHR, S_IFMT, encode_dev};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::options::BuildOptions;
use crate::tree::{Kind, Node, OVL_ORIGIN, Origin, Tree, path_of};

/// An entry as listed, before hard links are merged and inodes numbered.
struct Raw {
    name: Vec<u8>,
    path: PathBuf,
    meta: Metadata,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    target: Option<Vec<u8>>,
    children: Vec<Raw>,
}

struct Ctx<'a> {
    opts: &'a BuildOptions,
}

impl Ctx<'_> {
    fn read_entry(&self, name: Vec<u8>, path: PathBuf, rel: &[u8]) -> Result<Raw> {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, "stat", e))?;
        // `-x -1` drops labels too: mkfs.erofs looks them up with the source's xattrs.
        let xattrs = if self.opts.xattr_tolerance < 0 {
            Vec::new()
        } else {
            let mut x = read_xattrs(&path)?;
            if let Some(fc) = &self.opts.file_contexts {
                fc.relabel(&mut x, rel, meta.mode());
            }
            x
        };
        let ft = meta.file_type();
        let target = if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| Error::io(&path, "read the link", e))?;
            Some(t.into_os_string().into_vec())
        } else {
            None
        };
        let children = if ft.is_dir() {
            self.scan_dir(&path, rel)?
        } else {
            Vec::new()
        };
        Ok(Raw {
            name,
            path,
            meta,
            xattrs,
            target,
            children,
        })
    }

    /// Lists `dir` (relative path `rel`), sorted by name, recursively.
    fn scan_dir(&self, dir: &Path, rel: &[u8]) -> Result<Vec<Raw>> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(dir, "list", e))?;
            let name = ent.file_name().into_vec();
            if name.len() > NAME_LEN {
                return Err(Error::NameTooLong {
                    len: name.len(),
                    path: dir.join(OsStr::from_bytes(&name)),
                });
            }
            names.push(name);
        }
        names.sort_unstable();
        names
            .into_par_iter()
            .filter_map(|name| {
                let mut sub = rel.to_vec();
                if !sub.is_empty() {
                    sub.push(b'/');
                }
                sub.extend_from_slice(&name);
                if self.opts.excluded(&sub) {
                    return None;
                }
                let path = dir.join(OsStr::from_bytes(&name));
                Some(self.read_entry(name, path, &sub))
            })
            .collect()
    }

    /// The node of `raw`, an entry of directory node `parent`.
    fn node(&self, raw: &Raw, kind: Kind, parent: usize) -> Result<Node> {
        let m = &raw.meta;
        let mode = u16::try_from(m.mode()).map_err(|_| Error::Unrepresentable {
            path: raw.path.clone(),
            what: format!("mode {:#o} does not fit 16 bits", m.mode()),
        })?;
        let (mtime, mtime_nsec) = self.opts.mtime(m.mtime(), m.mtime_nsec() as u32);
        let rdev = if matches!(kind, Kind::Special) {
            let (major, minor) = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
            if major > 0xfff || minor > 0xf_ffff {
                return Err(Error::Unrepresentable {
                    path: raw.path.clone(),
                    what: format!("device number {major}:{minor} does not fit 32 bits"),
                });
            }
            encode_dev(major, minor)
        } else {
            0
        };
        let (uid, gid) =
            self.opts
                .owner(m.uid(), m.gid())
                .ok_or_else(|| Error::Unrepresentable {
                    path: raw.path.clone(),
                    what: "the uid or gid overflows 32 bits with --uid-offset/--gid-offset".into(),
                })?;
        Ok(Node {
            origin: Origin::Entry {
                parent,
                name: raw.name.clone(),
            },
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            nlink: 1,
            size: if m.file_type().is_file() { m.size() } else { 0 },
            rdev,
            xattrs: raw.xattrs.clone(),
            archive_offset: None,
        })
    }
}

/// Scans `source` into a tree.
pub(crate) fn scan(source: &Path, opts: &BuildOptions) -> Result<Tree> {
    let ctx = Ctx { opts };
    // A symlink given as the source stands for the directory it points to.
    let source = match std::fs::symlink_metadata(source) {
        Ok(m) if m.is_symlink() => {
            std::fs::canonicalize(source).map_err(|e| Error::io(source, "resolve", e))?
        }
        _ => source.to_path_buf(),
    };
    let root = ctx.read_entry(Vec::new(), source.clone(), b"")?;
    if !root.meta.is_dir() {
        return Err(Error::Unrepresentable {
            path: source,
            what: "the source is not a directory".into(),
        });
    }
    let mut nodes = vec![ctx.node(
        &root,
        Kind::Dir {
            entries: Vec::new(),
            parent: 0,
        },
        0,
    )?];
    nodes[0].nlink = 2;
    // Hard links: the first name in walk order gets the inode.
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut queue = VecDeque::from([(0usize, root.children)]);
    while let Some((dir, children)) = queue.pop_front() {
        let mut entries = Vec::with_capacity(children.len());
        for mut raw in children {
            let ft = raw.meta.file_type();
            let key = (raw.meta.dev(), raw.meta.ino());
            // `--hard-dereference`: every name is an inode of its own.
            if !ft.is_dir()
                && raw.meta.nlink() > 1
                && !opts.hard_dereference
                && let Some(&idx) = links.get(&key)
            {
                let n = &mut nodes[idx];
                n.nlink = n
                    .nlink
                    .checked_add(1)
                    .ok_or_else(|| Error::Unrepresentable {
                        path: raw.path.clone(),
                        what: "too many hard links".into(),
                    })?;
                entries.push((raw.name, idx));
                continue;
            }
            let kind = if ft.is_dir() {
                Kind::Dir {
                    entries: Vec::new(),
                    parent: dir,
                }
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                Kind::Symlink(raw.target.take().unwrap_or_default())
            } else {
                Kind::Special
            };
            let idx = nodes.len();
            let mut node = ctx.node(&raw, kind, dir)?;
            if ft.is_dir() {
                node.nlink = 2;
                nodes[dir].nlink =
                    nodes[dir]
                        .nlink
                        .checked_add(1)
                        .ok_or_else(|| Error::Unrepresentable {
                            path: path_of(&nodes, &source, dir),
                            what: "too many subdirectories".into(),
                        })?;
                queue.push_back((idx, std::mem::take(&mut raw.children)));
            } else if raw.meta.nlink() > 1 {
                links.insert(key, idx);
            }
            nodes.push(node);
            entries.push((raw.name, idx));
        }
        // As mkfs.erofs: a directory holding an overlayfs whiteout (a 0:0 character
        // device) is marked copied-up, so overlayfs does not expose the whiteouts when
        // it iterates the directory directly.
        let whiteout = entries.iter().any(|&(_, i)| {
            let n: &Node = &nodes[i];
            matches!(n.kind, Kind::Special) && n.mode & S_IFMT == S_IFCHR && n.rdev == 0
        });
        let d = &mut nodes[dir];
        if whiteout && !d.xattrs.iter().any(|(k, _)| k == OVL_ORIGIN) {
            let at = d.xattrs.partition_point(|(k, _)| k.as_slice() < OVL_ORIGIN);
            d.xattrs.insert(at, (OVL_ORIGIN.to_vec(), Vec::new()));
        }
        if let Kind::Dir { entries: e, .. } = &mut d.kind {
            *e = entries;
        }
    }
    Ok(Tree {
        nodes,
        base: source,
        archive: None,
        layers: None,
    })
}

/// Reads every xattr of `path` (not following symlinks), sorted by name. Xattrs that
/// vanish between listing and reading are skipped, as mkfs.erofs does.
fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use rustix::io::Errno;
    let err = |op, e: Errno| Error::io(path, op, std::io::Error::from(e));
    // rustix reports at most the buffer's length, so sizes cannot be queried with
    // an empty buffer: grow on ERANGE instead (Linux caps lists and values at 64 KiB).
    let list = match grow(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(l) => l,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(err("list the xattrs of", e)),
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match grow(|buf| rustix::fs::lgetxattr(path, name, buf)) {
            Ok(value) => out.push((name.to_vec(), value)),
            Err(Errno::NODATA) => {}
            Err(e) => return Err(err("read an xattr of", e)),
        }
    }
    out.sort();
    Ok(out)
}

/// Calls `f` with a buffer that doubles while `f` fails with ERANGE.
fn grow(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    const MAX: usize = 1 << 17;
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < MAX => {
                let n = buf.len() * 2;
                buf.resize(n, 0);
            }
            Err(e) => return Err(e),
        }
    }
}
