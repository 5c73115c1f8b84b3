//! ONE snapshot of a directory tree and its comparison, for every oracle test: a source
//! tree, a kernel mount, a FUSE mount and an extraction are snapshotted alike and compared.
//!
//! Contract: [`snapshot`] walks without following symlinks and records, for every path
//! (the root as ""): the type, permission bits with setuid/setgid/sticky, owner, mtime with
//! nanoseconds, link count, size and SHA-256 of regular files, symlink targets, device
//! numbers, every xattr, and the hard-link groups. Directory sizes and atimes are never recorded. [`diff`] compares all
//! of it except what [`CompareOpts`] names; the link count of every entry (directories
//! included) only with [`CompareOpts::nlink`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::ops::{Deref, DerefMut};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits of this type.
    pub fn format_bits(self) -> u32 {
        match self {
            Kind::File => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink => 0o120000,
            Kind::CharDev => 0o020000,
            Kind::BlockDev => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }
}

/// What a snapshot records for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// Link count (compared only with [`CompareOpts::nlink`]).
    pub nlink: u64,
    /// Size and SHA-256 of the contents, for regular files.
    pub content: Option<(u64, [u8; 32])>,
    /// Target bytes, for symlinks.
    pub target: Option<Vec<u8>>,
    /// Device number, for character and block devices.
    pub rdev: Option<u64>,
    /// All xattrs (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The whole `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.format_bits() | self.perm
    }
}

/// A snapshot of a directory tree. Dereferences to its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// Keyed by path relative to the root ("" is the root itself), as raw bytes.
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Sets of non-directory paths sharing one inode (only those with nlink > 1), each
    /// sorted.
    pub hardlinks: BTreeSet<Vec<Vec<u8>>>,
}

impl Tree {
    /// The first path (in byte order) of `path`'s hard-link group; `path` itself if it has
    /// no other name in the tree.
    pub fn link_group<'a>(&'a self, path: &'a [u8]) -> &'a [u8] {
        self.hardlinks
            .iter()
            .find(|g| g.iter().any(|p| p == path))
            .map_or(path, |g| &g[0])
    }
}

impl Deref for Tree {
    type Target = BTreeMap<Vec<u8>, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl<'a> IntoIterator for &'a Tree {
    type Item = (&'a Vec<u8>, &'a Entry);
    type IntoIter = std::collections::btree_map::Iter<'a, Vec<u8>, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl DerefMut for Tree {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

/// Every xattr of `p` (not following a symlink), sorted by name.
pub fn xattrs_of(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let size = rustix::fs::llistxattr_query(p)?;
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(p, &mut list[..])?;
    list.truncate(n);
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let size = rustix::fs::lgetxattr_query(p, name)?;
        let mut value = vec![0u8; size];
        let n = rustix::fs::lgetxattr(p, name, &mut value[..])?;
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Size and SHA-256 of a file's contents.
pub fn hash_file(p: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finalize().into()))
}

/// The kind of a `st_mode`.
/// The files (not directories) under `dir` for which `keep(name)` holds, sorted; a
/// directory that disappears meanwhile (removed by the code under test) is skipped.
pub fn files_under(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if gone(&e) => continue,
            Err(e) => panic!("readdir {}: {e}", d.display()),
        };
        for e in rd {
            let e = match e {
                Ok(e) => e,
                Err(e) if gone(&e) => continue,
                Err(e) => panic!("readdir {}: {e}", d.display()),
            };
            let is_dir = e.file_type().expect("file type").is_dir();
            if is_dir {
                stack.push(e.path());
            } else if keep(&e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// SHA-256 of a file read in 1 MiB pieces, calling `midway` once when half of it is read
/// (for tests that change something under a reader); fails if it never got half way.
pub fn hash_with_pause(path: &Path, midway: impl FnOnce()) -> [u8; 32] {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = f.metadata().expect("fstat").len() as usize;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut midway) = (0, Some(midway));
    loop {
        let k = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        total += k;
        if total >= len / 2
            && let Some(m) = midway.take()
        {
            m();
        }
    }
    assert!(midway.is_none(), "never got half way");
    h.finalize().into()
}

fn kind_of(mode: u32) -> Option<Kind> {
    use Kind::*;
    [File, Dir, Symlink, CharDev, BlockDev, Fifo, Socket]
        .into_iter()
        .find(|k| k.format_bits() == mode & 0o170000)
}

/// Walks `root` without following symlinks and records every entry (see [`Entry`]).
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let ctx = |what: &str, e: io::Error| -> ! { panic!("snapshot: {what} {p:?}: {e}") };
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| ctx("lstat", e));
        let kind = kind_of(md.mode())
            .unwrap_or_else(|| panic!("snapshot: unknown file type of {p:?}: {:o}", md.mode()));
        let entry = Entry {
            kind,
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            nlink: md.nlink(),
            content: (kind == Kind::File).then(|| hash_file(&p).unwrap_or_else(|e| ctx("read", e))),
            target: (kind == Kind::Symlink).then(|| {
                fs::read_link(&p)
                    .unwrap_or_else(|e| ctx("readlink", e))
                    .into_os_string()
                    .into_encoded_bytes()
            }),
            rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev()),
            xattrs: xattrs_of(&p).unwrap_or_else(|e| ctx("xattrs of", e)),
        };
        if kind == Kind::Dir {
            for de in fs::read_dir(&p).unwrap_or_else(|e| ctx("readdir", e)) {
                let de = de.unwrap_or_else(|e| ctx("readdir", e));
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(de.file_name().as_bytes());
                stack.push(child);
            }
        } else if md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        tree.entries.insert(rel, entry);
    }
    for mut group in inodes.into_values() {
        group.sort();
        tree.hardlinks.insert(group);
    }
    tree
}

/// mkfs.erofs 1.9 (not 1.5) gives every directory directly holding an overlayfs whiteout (a
/// 0:0 character device) an empty `trusted.overlay.origin` xattr. This adds it to an expected
/// tree. (If the source directory already has that xattr, 1.9.4 stores it a second time, so
/// the generator never sets it.)
pub fn add_whiteout_origin_xattrs(tree: &mut Tree) {
    const NAME: &[u8] = b"trusted.overlay.origin";
    let parents: BTreeSet<Vec<u8>> = tree
        .entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::CharDev && e.rdev == Some(0))
        .map(|(p, _)| match p.iter().rposition(|&b| b == b'/') {
            Some(i) => p[..i].to_vec(),
            None => Vec::new(),
        })
        .collect();
    for p in parents {
        let e = tree.entries.get_mut(&p).expect("parent directory in tree");
        if !e.xattrs.iter().any(|(n, _)| n == NAME) {
            e.xattrs.push((NAME.to_vec(), Vec::new()));
            e.xattrs.sort();
        }
    }
}

/// What a comparison leaves out or adds, for mkfs options that lose information and for
/// the tests that also check link counts. Keep the ignored set minimal: everything else is
/// always compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompareOpts {
    /// Ignore mtimes (seconds and nanoseconds) of every entry.
    pub ignore_mtime: bool,
    /// Ignore only the nanoseconds of mtimes.
    pub ignore_mtime_nsec: bool,
    /// Also compare every entry's link count, directories' included (hard-link groups are
    /// always compared).
    pub nlink: bool,
}

impl CompareOpts {
    /// Compare every field but the link counts (the hard-link groups are compared).
    pub const EXACT: CompareOpts = CompareOpts {
        ignore_mtime: false,
        ignore_mtime_nsec: false,
        nlink: false,
    };
    /// Compare every field, link counts included.
    pub const ALL: CompareOpts = CompareOpts {
        nlink: true,
        ..CompareOpts::EXACT
    };
}

/// Printable form of a path or byte string.
struct Show<'a>(&'a [u8]);

impl fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 120;
        if self.0.len() > MAX {
            write!(
                f,
                "\"{}\"...({} bytes)",
                self.0[..MAX].escape_ascii(),
                self.0.len()
            )
        } else {
            write!(f, "\"{}\"", self.0.escape_ascii())
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn show_content(c: &Option<(u64, [u8; 32])>) -> String {
    match c {
        Some((len, h)) => format!("{len} bytes sha256 {}", &hex(h)[..16]),
        None => "-".into(),
    }
}

fn show_xattrs(x: &[(Vec<u8>, Vec<u8>)]) -> String {
    let items: Vec<String> = x
        .iter()
        .map(|(n, v)| format!("{}={} bytes", Show(n), v.len()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// At most this many difference lines are reported (plus a count of the rest).
const MAX_DIFF_LINES: usize = 50;

/// The differences of one path present in both trees.
fn diff_entry(p: &Show, ea: &Entry, eb: &Entry, opts: &CompareOpts, out: &mut Vec<String>) {
    if ea.kind != eb.kind {
        out.push(format!("{p}: type a={:?} b={:?}", ea.kind, eb.kind));
        return;
    }
    if ea.perm != eb.perm {
        out.push(format!("{p}: mode a={:04o} b={:04o}", ea.perm, eb.perm));
    }
    if (ea.uid, ea.gid) != (eb.uid, eb.gid) {
        out.push(format!(
            "{p}: uid:gid a={}:{} b={}:{}",
            ea.uid, ea.gid, eb.uid, eb.gid
        ));
    }
    let sec_differs = ea.mtime.0 != eb.mtime.0;
    let nsec_differs = ea.mtime.1 != eb.mtime.1;
    if !opts.ignore_mtime && (sec_differs || (nsec_differs && !opts.ignore_mtime_nsec)) {
        out.push(format!(
            "{p}: mtime a={}.{:09} b={}.{:09}",
            ea.mtime.0, ea.mtime.1, eb.mtime.0, eb.mtime.1
        ));
    }
    if opts.nlink && ea.nlink != eb.nlink {
        out.push(format!("{p}: nlink a={} b={}", ea.nlink, eb.nlink));
    }
    if ea.content != eb.content {
        out.push(format!(
            "{p}: content a={} b={}",
            show_content(&ea.content),
            show_content(&eb.content)
        ));
    }
    if ea.target != eb.target {
        let t = |t: &Option<Vec<u8>>| t.as_deref().map(|t| Show(t).to_string());
        out.push(format!(
            "{p}: symlink target a={:?} b={:?}",
            t(&ea.target),
            t(&eb.target)
        ));
    }
    if ea.rdev != eb.rdev {
        let d = |r: Option<u64>| {
            r.map(|r| {
                let r = r as rustix::fs::Dev;
                format!("{}:{}", rustix::fs::major(r), rustix::fs::minor(r))
            })
        };
        out.push(format!("{p}: rdev a={:?} b={:?}", d(ea.rdev), d(eb.rdev)));
    }
    if ea.xattrs != eb.xattrs {
        let names_a: Vec<_> = ea.xattrs.iter().map(|x| &x.0).collect();
        let names_b: Vec<_> = eb.xattrs.iter().map(|x| &x.0).collect();
        if names_a != names_b {
            out.push(format!(
                "{p}: xattrs a={} b={}",
                show_xattrs(&ea.xattrs),
                show_xattrs(&eb.xattrs)
            ));
        } else {
            for ((n, va), (_, vb)) in ea.xattrs.iter().zip(&eb.xattrs) {
                if va != vb {
                    out.push(format!(
                        "{p}: xattr {} value a={} b={}",
                        Show(n),
                        Show(va),
                        Show(vb)
                    ));
                }
            }
        }
    }
}

/// Human-readable differences between `a` and `b` (empty if equal under `opts`).
pub fn diff(a: &Tree, b: &Tree, opts: &CompareOpts) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = a.entries.keys().chain(b.entries.keys()).collect();
    for k in keys {
        let p = Show(k);
        match (a.entries.get(k), b.entries.get(k)) {
            (Some(ea), Some(eb)) => diff_entry(&p, ea, eb, opts, &mut out),
            (Some(e), None) => out.push(format!("{p}: only in a ({:?})", e.kind)),
            (None, Some(e)) => out.push(format!("{p}: only in b ({:?})", e.kind)),
            (None, None) => unreachable!(),
        }
    }
    let show_group = |g: &Vec<Vec<u8>>| {
        g.iter()
            .map(|p| Show(p).to_string())
            .collect::<Vec<_>>()
            .join(" = ")
    };
    for g in a.hardlinks.difference(&b.hardlinks) {
        out.push(format!("hard links only in a: {}", show_group(g)));
    }
    for g in b.hardlinks.difference(&a.hardlinks) {
        out.push(format!("hard links only in b: {}", show_group(g)));
    }
    if out.len() > MAX_DIFF_LINES {
        let rest = out.len() - MAX_DIFF_LINES;
        out.truncate(MAX_DIFF_LINES);
        out.push(format!("... and {rest} more differences"));
    }
    out
}

/// Panics with the differences if `a` and `b` differ under `opts`.
pub fn assert_trees_eq(name_a: &str, a: &Tree, name_b: &str, b: &Tree, opts: &CompareOpts) {
    let d = diff(a, b, opts);
    assert!(
        d.is_empty(),
        "trees differ (a = {name_a}, b = {name_b}, {opts:?}):\n  {}",
        d.join("\n  ")
    );
}
