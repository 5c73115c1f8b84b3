//! `build_tree`: the input describes a tree (files, directories, symlinks, fifos, hard
//! links, modes, `user.` xattrs) and build options (block size, compressor, inline
//! data, tail packing, fragments, dedupe, chunks). The tree is written to a temporary
//! directory and built with `ishare mkfs`'s builder; the build must succeed, and the
//! reader must find exactly that tree in the image: names, types, modes, contents, link
//! targets, xattrs, hard links sharing an inode, fingerprints matching contents.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use ishare_builder::{BuildOptions, Compression, build};
use ishare_erofs::{CheckOptions, FileType, Image};

/// At most this many entries are written, so one input stays quick.
const MAX_ENTRIES: usize = 200;
/// Deeper directories are left out.
const MAX_DEPTH: usize = 12;
/// A file's content is its chunk repeated, up to this size.
const MAX_FILE: usize = 1 << 20;

/// What the fuzzer's bytes decode to.
#[derive(Arbitrary, Debug)]
struct Input {
    block_size_log: u8,
    codec: u8,
    inline_data: bool,
    ztailpacking: bool,
    fragments: bool,
    dedupe: bool,
    chunked: bool,
    root: Vec<Entry>,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: Vec<u8>,
    mode: u16,
    xattr: Option<(u8, Vec<u8>)>,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File {
        chunk: Vec<u8>,
        repeat: u8,
    },
    Dir(Vec<Entry>),
    Symlink(Vec<u8>),
    Fifo,
    /// A hard link to the n-th regular file written so far (none yet: left out).
    HardLink(u8),
}

/// What the image must hold at a path.
#[derive(Debug)]
enum Expected {
    File(Vec<u8>),
    Dir(BTreeSet<Vec<u8>>),
    Symlink(Vec<u8>),
    Fifo,
    /// Same inode as the file at that path.
    LinkTo(Vec<u8>),
}

#[derive(Debug)]
struct Node {
    what: Expected,
    /// Permission bits, for files and directories.
    perm: Option<u32>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Writes the tree and records what was written, by path relative to the root.
struct Writer {
    nodes: BTreeMap<Vec<u8>, Node>,
    files: Vec<Vec<u8>>,
    count: usize,
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("tree");
    fs::create_dir(&root).expect("create the tree's root");
    let mut w = Writer {
        nodes: BTreeMap::new(),
        files: Vec::new(),
        count: 0,
    };
    let children = w.write_dir(&root, b"", &input.root, 0);
    w.nodes.insert(
        Vec::new(),
        Node {
            what: Expected::Dir(children),
            perm: None,
            xattrs: BTreeMap::new(),
        },
    );

    let block_size = 512u32 << (input.block_size_log % 4);
    let codec = ["", "lz4", "lz4hc", "lzma", "deflate", "zstd"][usize::from(input.codec % 6)];
    let compression = (!codec.is_empty()).then(|| {
        let mut c = Compression::parse(codec, block_size).expect("a known compressor");
        c.ztailpacking = input.ztailpacking;
        c.fragments = input.fragments;
        c.dedupe = input.dedupe;
        c
    });
    let opts = BuildOptions {
        block_size,
        workers: 1,
        inline_data: input.inline_data,
        chunk_size: (compression.is_none() && input.chunked).then_some(u64::from(block_size) * 2),
        compression,
        ..BuildOptions::default()
    };
    let image = dir.path().join("out.img");
    if let Err(e) = build(&root, &image, &opts) {
        panic!("building a valid tree failed: {e}\noptions: {opts:?}");
    }
    let img = Image::open(&image).unwrap_or_else(|e| panic!("the reader refuses the image: {e}"));
    let check = CheckOptions {
        read_data: true,
        verify_fingerprints: true,
        data_budget: None,
    };
    if let Err(e) = img.check(&check) {
        panic!("the image fails its check: {e}");
    }
    for (path, node) in &w.nodes {
        compare(&img, path, node, &w.nodes);
    }
}

impl Writer {
    /// Writes `entries` into `dir` (relative path `rel`); returns the names written.
    fn write_dir(
        &mut self,
        dir: &Path,
        rel: &[u8],
        entries: &[Entry],
        depth: usize,
    ) -> BTreeSet<Vec<u8>> {
        let mut names = BTreeSet::new();
        let mut seen = HashSet::new();
        for e in entries {
            if self.count >= MAX_ENTRIES {
                break;
            }
            let name = sanitize_name(&e.name);
            if !seen.insert(name.clone()) {
                continue;
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&name);
            let (what, perm) = match &e.kind {
                Kind::File { chunk, repeat } => {
                    let times = usize::from(*repeat % 64) + 1;
                    let mut content = chunk.repeat(times);
                    content.truncate(MAX_FILE);
                    fs::write(&path, &content).expect("write a file");
                    self.files.push(child_rel.clone());
                    (
                        Expected::File(content),
                        Some(u32::from(e.mode) & 0o7777 | 0o400),
                    )
                }
                Kind::Dir(sub) => {
                    if depth >= MAX_DEPTH {
                        continue;
                    }
                    fs::create_dir(&path).expect("create a directory");
                    let kids = self.write_dir(&path, &child_rel, sub, depth + 1);
                    (
                        Expected::Dir(kids),
                        Some(u32::from(e.mode) & 0o7777 | 0o700),
                    )
                }
                Kind::Symlink(target) => {
                    let target = sanitize_target(target);
                    symlink(std::ffi::OsStr::from_bytes(&target), &path).expect("create a symlink");
                    (Expected::Symlink(target), None)
                }
                Kind::Fifo => {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &path,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o644),
                        0,
                    )
                    .expect("create a fifo");
                    (Expected::Fifo, None)
                }
                Kind::HardLink(n) => {
                    if self.files.is_empty() {
                        continue;
                    }
                    let target = self.files[usize::from(*n) % self.files.len()].clone();
                    let root = dir
                        .ancestors()
                        .nth(rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).count())
                        .expect("the tree's root");
                    fs::hard_link(root.join(std::ffi::OsStr::from_bytes(&target)), &path)
                        .expect("create a hard link");
                    (Expected::LinkTo(target), None)
                }
            };
            let mut xattrs = BTreeMap::new();
            if let (Some((sel, value)), Some(_)) = (&e.xattr, perm)
                && !matches!(what, Expected::LinkTo(_))
            {
                let name = format!("user.x{}", sel % 8).into_bytes();
                let mut value = value.clone();
                value.truncate(256);
                set_xattr(&path, &name, &value);
                xattrs.insert(name, value);
            }
            if let Some(p) = perm {
                // Directories last: their own permissions never block the writes below.
                fs::set_permissions(&path, fs::Permissions::from_mode(p)).expect("chmod");
            }
            self.count += 1;
            names.insert(name);
            self.nodes.insert(child_rel, Node { what, perm, xattrs });
        }
        names
    }
}

/// A valid, non-special file name from any bytes.
fn sanitize_name(raw: &[u8]) -> Vec<u8> {
    let mut name: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'/' && b != 0)
        .collect();
    name.truncate(200);
    if name.is_empty() || name == b"." || name == b".." {
        name.insert(0, b'n');
    }
    name
}

/// A valid symlink target from any bytes.
fn sanitize_target(raw: &[u8]) -> Vec<u8> {
    let mut t: Vec<u8> = raw.iter().copied().filter(|&b| b != 0).collect();
    t.truncate(4000);
    if t.is_empty() {
        t.push(b't');
    }
    t
}

fn set_xattr(path: &Path, name: &[u8], value: &[u8]) {
    let name = std::ffi::CString::new(name).expect("an xattr name without NUL");
    rustix::fs::setxattr(
        path,
        name.as_c_str(),
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap_or_else(|e| panic!("setxattr on {}: {e}", path.display()));
}

/// Panics unless the image holds `node` at `path`.
fn compare(img: &Image, path: &[u8], node: &Node, all: &BTreeMap<Vec<u8>, Node>) {
    let shown = String::from_utf8_lossy(path);
    let full = [b"/", path].concat();
    let ino = img
        .lookup_path(&full)
        .unwrap_or_else(|e| panic!("/{shown}: not found in the image: {e}"));
    if let Some(p) = node.perm {
        assert_eq!(
            u32::from(ino.mode) & 0o7777,
            p,
            "/{shown}: permission bits differ"
        );
    }
    match &node.what {
        Expected::File(content) => {
            assert_eq!(ino.file_type, FileType::Regular, "/{shown}: not a file");
            let got = img
                .read_to_vec(&ino)
                .unwrap_or_else(|e| panic!("/{shown}: cannot read: {e}"));
            assert!(got == *content, "/{shown}: content differs");
        }
        Expected::Dir(names) => {
            assert_eq!(
                ino.file_type,
                FileType::Directory,
                "/{shown}: not a directory"
            );
            let got: BTreeSet<Vec<u8>> = img
                .read_dir(&ino)
                .unwrap_or_else(|e| panic!("/{shown}: cannot list: {e}"))
                .into_iter()
                .filter(|d| !d.is_dot_or_dotdot())
                .map(|d| d.name)
                .collect();
            assert_eq!(&got, names, "/{shown}: entries differ");
        }
        Expected::Symlink(target) => {
            assert_eq!(ino.file_type, FileType::Symlink, "/{shown}: not a symlink");
            let got = img
                .read_link(&ino)
                .unwrap_or_else(|e| panic!("/{shown}: cannot read the link: {e}"));
            assert_eq!(&got, target, "/{shown}: link target differs");
        }
        Expected::Fifo => assert_eq!(ino.file_type, FileType::Fifo, "/{shown}: not a fifo"),
        Expected::LinkTo(target) => {
            let other = img
                .lookup_path(&[b"/", target.as_slice()].concat())
                .expect("the link's target");
            assert_eq!(ino.nid, other.nid, "/{shown}: hard link has its own inode");
            assert!(all.contains_key(target));
        }
    }
    if !matches!(node.what, Expected::LinkTo(_)) && node.perm.is_some() {
        let got: BTreeMap<Vec<u8>, Vec<u8>> = img
            .xattrs(&ino)
            .unwrap_or_else(|e| panic!("/{shown}: cannot read xattrs: {e}"))
            .into_iter()
            .filter(|x| x.name.starts_with(b"user."))
            .map(|x| (x.name, x.value))
            .collect();
        assert_eq!(got, node.xattrs, "/{shown}: xattrs differ");
    }
}
