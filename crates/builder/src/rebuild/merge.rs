//! The overlay of the layers' trees, as overlayfs shows layers stacked and as
//! erofs-utils' rebuild mode merges them: layers are read from the top down, and
//! a name seen in an upper layer hides the lower ones' entry of that name, except
//! that two directories merge (the upper one's inode, owner, times and xattrs win)
//! unless the upper one is opaque (`trusted.overlay.opaque=y`) or a whiteout (a 0:0
//! character device) stood in between. The root is the topmost layer's root, with
//! every layer's entries.
//!
//! Whiteouts and opaque marks then stay in the image (and directories holding
//! whiteouts get `trusted.overlay.origin`, as mkfs.erofs does), so the image can
//! itself be an overlayfs layer; `--ovlfs-strip=1` drops them instead.
//!
//! Layers are untrusted: a directory reached twice in one layer (a cycle, or a
//! hard-linked directory) is an error, names are checked, symlink targets are
//! bounded, and the walk keeps its own stack however deep the tree.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use ishare_erofs::format::{S_IFCHR, S_IFMT};
use ishare_erofs::{FileType, Inode};

use super::RebuildOptions;
use super::chunks;
use super::layers::{LayerFile, Layers};
use super::mode::RebuildData;
use super::open::{Layer, bad};
use crate::error::{Error, Result};
use crate::options::BuildOptions;
use crate::tree::{Kind, Node, OVL_ORIGIN, Origin, Tree};

const OVL_OPAQUE: &[u8] = b"trusted.overlay.opaque";
/// Longest symlink target Linux resolves (PATH_MAX less the NUL).
const MAX_LINK: u64 = 4095;

/// One inode of the merged tree before numbering.
struct MNode {
    layer: usize,
    inode: Inode,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Directories: entries by name; `None` for other types.
    entries: Option<BTreeMap<Vec<u8>, usize>>,
    /// No layer below may add entries to this directory.
    opaque: bool,
    target: Vec<u8>,
}

fn is_whiteout(i: &Inode) -> bool {
    i.mode & S_IFMT == S_IFCHR && i.rdev == 0
}

struct Merger<'a> {
    layers: &'a [Layer],
    nodes: Vec<MNode>,
    /// Hard-linked files of a layer: (layer, nid) -> node.
    links: HashMap<(usize, u64), usize>,
}

impl Merger<'_> {
    fn read(&self, layer: usize, nid: u64, path: &[u8]) -> Result<Inode> {
        let l = &self.layers[layer];
        l.image
            .inode(nid)
            .map_err(|e| bad(&l.path, format!("{}: {e}", show(path))))
    }

    fn new_node(&mut self, layer: usize, inode: Inode, path: &[u8]) -> Result<usize> {
        let l = &self.layers[layer];
        let err = |e: ishare_erofs::Error| bad(&l.path, format!("{}: {e}", show(path)));
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut v: Vec<_> = l
                .image
                .xattrs(&inode)
                .map_err(err)?
                .into_iter()
                .map(|x| (x.name, x.value))
                .collect();
            v.sort();
            v.dedup_by(|a, b| a.0 == b.0);
            v
        };
        let is_dir = inode.file_type == FileType::Directory;
        let opaque = is_dir && xattrs.iter().any(|(k, _)| k == OVL_OPAQUE);
        let target = if inode.file_type == FileType::Symlink {
            if inode.size == 0 || inode.size > MAX_LINK {
                return Err(bad(
                    &l.path,
                    format!("{}: a symlink of {} bytes", show(path), inode.size),
                ));
            }
            l.image.read_to_vec(&inode).map_err(err)?
        } else {
            Vec::new()
        };
        self.nodes.push(MNode {
            layer,
            inode,
            xattrs,
            entries: is_dir.then(BTreeMap::new),
            opaque,
            target,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Merges layer `layer` (whose root inode is `root`) under what the layers
    /// above left.
    fn layer(&mut self, layer: usize, root: Inode) -> Result<()> {
        let l = &self.layers[layer];
        let mut seen: HashSet<u64> = HashSet::new();
        // (directory inode in the layer, merged directory node, its path)
        let mut stack: Vec<(Inode, usize, Vec<u8>)> = vec![(root, 0, Vec::new())];
        while let Some((dir, mdir, dpath)) = stack.pop() {
            if !seen.insert(dir.nid) {
                return Err(bad(
                    &l.path,
                    format!(
                        "{}: directory (nid {}) is reached twice (a loop or a hard-linked directory)",
                        show(&dpath),
                        dir.nid
                    ),
                ));
            }
            let entries = l
                .image
                .read_dir(&dir)
                .map_err(|e| bad(&l.path, format!("{}: {e}", show(&dpath))))?;
            for e in entries {
                if e.is_dot_or_dotdot() {
                    continue;
                }
                let mut path = dpath.clone();
                path.push(b'/');
                path.extend_from_slice(&e.name);
                if e.name.is_empty() || e.name.contains(&b'/') || e.name.contains(&0) {
                    return Err(bad(&l.path, format!("{}: invalid entry name", show(&path))));
                }
                let existing = self.nodes[mdir]
                    .entries
                    .as_ref()
                    .and_then(|m| m.get(&e.name).copied());
                match existing {
                    Some(up) => {
                        // Only an upper directory that is not opaque lets this
                        // layer's entry show through, and then only a directory.
                        if self.nodes[up].entries.is_none() || self.nodes[up].opaque {
                            continue;
                        }
                        let inode = self.read(layer, e.nid, &path)?;
                        if is_whiteout(&inode) {
                            // Nothing below this layer shows here either.
                            self.nodes[up].opaque = true;
                            continue;
                        }
                        if inode.file_type != FileType::Directory {
                            continue;
                        }
                        let opaque = self.layers[layer]
                            .image
                            .get_xattr(&inode, OVL_OPAQUE)
                            .map_err(|e| bad(&l.path, format!("{}: {e}", show(&path))))?
                            .is_some();
                        self.nodes[up].opaque |= opaque;
                        stack.push((inode, up, path));
                    }
                    None => {
                        let inode = self.read(layer, e.nid, &path)?;
                        let is_dir = inode.file_type == FileType::Directory;
                        let node = match self.links.get(&(layer, e.nid)) {
                            Some(&n) if !is_dir => n,
                            _ => {
                                let linked = !is_dir && inode.nlink > 1;
                                let n = self.new_node(layer, inode.clone(), &path)?;
                                if linked {
                                    self.links.insert((layer, e.nid), n);
                                }
                                if is_dir {
                                    stack.push((inode, n, path));
                                }
                                n
                            }
                        };
                        self.nodes[mdir]
                            .entries
                            .as_mut()
                            .expect("a directory")
                            .insert(e.name, node);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `/a/b` for messages (`/` for the root).
fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

/// Merges `layers` (lowest first) into a tree.
///
/// `in_place`: an incremental build writing after the base image's blocks, whose
/// files then keep their data where it is when it can be referred to (whole blocks
/// of the image, uncompressed); the others are copied.
pub(crate) fn merge(
    layers: Vec<Layer>,
    ro: &RebuildOptions,
    opts: &BuildOptions,
    in_place: bool,
) -> Result<Tree> {
    let mut m = Merger {
        layers: &layers,
        nodes: Vec::new(),
        links: HashMap::new(),
    };
    for layer in (0..layers.len()).rev() {
        let l = &layers[layer];
        let root = l
            .image
            .root()
            .map_err(|e| bad(&l.path, format!("its root directory: {e}")))?;
        if root.file_type != FileType::Directory {
            return Err(bad(&l.path, "its root is not a directory"));
        }
        if m.nodes.is_empty() {
            m.new_node(layer, root.clone(), b"")?;
        }
        m.layer(layer, root)?;
    }
    number(m.nodes, layers, ro, opts, in_place)
}

/// Numbers the merged nodes breadth-first (entries in name order, so the image does
/// not depend on the layers' own numbering), applying `--ovlfs-strip` and the
/// owner and time options, and records where each file's data is.
fn number(
    mnodes: Vec<MNode>,
    layers: Vec<Layer>,
    ro: &RebuildOptions,
    opts: &BuildOptions,
    in_place: bool,
) -> Result<Tree> {
    let mut nodes: Vec<Node> = Vec::with_capacity(mnodes.len());
    let mut index: Vec<Option<usize>> = vec![None; mnodes.len()];
    let mut files: HashMap<usize, LayerFile> = HashMap::new();
    let mut source: Vec<usize> = Vec::with_capacity(mnodes.len());
    let fp_names: Vec<Option<Vec<u8>>> = layers
        .iter()
        .map(|l| l.image.fingerprint_prefix().map(|p| p.full_name()))
        .collect();

    let make = |m: &MNode, origin: Origin, kind: Kind, path: &[u8]| -> Result<Node> {
        let i = &m.inode;
        let (uid, gid) = opts
            .owner(i.uid, i.gid)
            .ok_or_else(|| Error::Unrepresentable {
                path: PathBuf::from(show(path)),
                what: "the uid or gid overflows 32 bits with --uid-offset/--gid-offset".into(),
            })?;
        let (mtime, mtime_nsec) = opts.mtime(i.mtime, i.mtime_nsec);
        let mut xattrs = if opts.xattr_tolerance < 0 {
            Vec::new()
        } else {
            m.xattrs.clone()
        };
        if ro.ovlfs_strip {
            xattrs.retain(|(k, _)| k != OVL_OPAQUE);
        }
        Ok(Node {
            origin,
            kind,
            mode: i.mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            nlink: 1,
            size: if i.file_type == FileType::Regular {
                i.size
            } else {
                0
            },
            rdev: if matches!(
                i.file_type,
                FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket
            ) {
                i.rdev
            } else {
                0
            },
            xattrs,
            archive_offset: None,
        })
    };

    let root = &mnodes[0];
    nodes.push(make(
        root,
        Origin::Entry {
            parent: 0,
            name: Vec::new(),
        },
        Kind::Dir {
            entries: Vec::new(),
            parent: 0,
        },
        b"",
    )?);
    nodes[0].nlink = 2;
    index[0] = Some(0);
    source.push(0);
    let mut queue = VecDeque::from([0usize]);
    while let Some(dir) = queue.pop_front() {
        let md = source[dir];
        let dpath = crate::tree::relative_of(&nodes, dir);
        let mut entries = Vec::new();
        let mut whiteouts = false;
        for (name, &mi) in mnodes[md].entries.as_ref().expect("a directory") {
            let m = &mnodes[mi];
            if is_whiteout(&m.inode) {
                if ro.ovlfs_strip {
                    continue;
                }
                whiteouts = true;
            }
            if let Some(t) = index[mi] {
                nodes[t].nlink = nodes[t].nlink.saturating_add(1);
                entries.push((name.clone(), t));
                continue;
            }
            let mut path = dpath.clone();
            path.push(b'/');
            path.extend_from_slice(name);
            let kind = match m.inode.file_type {
                FileType::Directory => Kind::Dir {
                    entries: Vec::new(),
                    parent: dir,
                },
                FileType::Regular => Kind::File,
                FileType::Symlink => Kind::Symlink(m.target.clone()),
                _ => Kind::Special,
            };
            let t = nodes.len();
            let mut node = make(
                m,
                Origin::Entry {
                    parent: dir,
                    name: name.clone(),
                },
                kind,
                &path,
            )?;
            if m.entries.is_some() {
                node.nlink = 2;
                nodes[dir].nlink = nodes[dir].nlink.saturating_add(1);
                queue.push_back(t);
            }
            if m.inode.file_type == FileType::Regular && m.inode.size > 0 {
                let layer = &layers[m.layer];
                // Carried over when the layer has a fingerprint of the standard
                // form; a fingerprint xattr is then written under our own name.
                let digest = fp_names[m.layer].as_ref().and_then(|fp| {
                    let v = &m.xattrs.iter().find(|(k, _)| k == fp)?.1;
                    let d = v.strip_prefix(b"sha256:")?;
                    <[u8; 32]>::try_from(d).ok()
                });
                if opts.fingerprint.is_some()
                    && let Some(fp) = &fp_names[m.layer]
                {
                    node.xattrs.retain(|(k, _)| k != fp);
                }
                let chunks = match ro.data {
                    RebuildData::BlobIndex => Some(chunks::map(layer, &m.inode, &path)?),
                    // What cannot be referred to (an inline tail, compressed data, a
                    // damaged map) is copied, and reading it reports any damage.
                    _ if in_place && m.layer == 0 => chunks::map(layer, &m.inode, &path)
                        .ok()
                        .filter(|c| c.blocks.iter().all(|&b| chunks::keepable(layer, b))),
                    _ => None,
                };
                // The data is read to be copied (`data`, and an incremental build's
                // base with `rvsp`) or for a digest the layer lacks; it must be there.
                let read = match ro.data {
                    RebuildData::Full => true,
                    RebuildData::Reserve => ro.incremental && m.layer == 0,
                    RebuildData::BlobIndex => opts.fingerprint.is_some() && digest.is_none(),
                };
                if read && let Some(why) = layer.unreadable() {
                    let also = if ro.data == RebuildData::BlobIndex {
                        "; or build without fingerprints (--no-xattr-inode-digest)"
                    } else {
                        ""
                    };
                    return Err(bad(
                        &layer.path,
                        format!(
                            "{}: its data is needed ({}) but cannot be read: {why}{also}",
                            show(&path),
                            if ro.data == RebuildData::BlobIndex {
                                "for its fingerprint, which the layer lacks"
                            } else {
                                "to copy it"
                            }
                        ),
                    ));
                }
                let keep = match &chunks {
                    None if in_place && m.layer == 0 => chunks::kept_blocks(layer, &m.inode),
                    _ => None,
                };
                files.insert(
                    t,
                    LayerFile {
                        layer: m.layer,
                        inode: m.inode.clone(),
                        digest,
                        chunks,
                        keep,
                    },
                );
            }
            index[mi] = Some(t);
            source.push(mi);
            nodes.push(node);
            entries.push((name.clone(), t));
        }
        let d = &mut nodes[dir];
        if whiteouts && !d.xattrs.iter().any(|(k, _)| k == OVL_ORIGIN) {
            let at = d.xattrs.partition_point(|(k, _)| k.as_slice() < OVL_ORIGIN);
            d.xattrs.insert(at, (OVL_ORIGIN.to_vec(), Vec::new()));
        }
        if let Kind::Dir { entries: e, .. } = &mut d.kind {
            *e = entries;
        }
    }
    Ok(Tree {
        nodes,
        base: PathBuf::new(),
        archive: None,
        layers: Some(Layers {
            images: layers,
            files,
            data: ro.data,
            base: ro.incremental,
        }),
    })
}
