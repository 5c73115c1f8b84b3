//! Helpers for the builder's oracle tests: external tools, mounts that clean up after
//! themselves, a deterministic source tree generator and a tree comparator.
//! Everything here needs root (mount, mknod, chown, `trusted.` xattrs).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};
use rustix::mount::MountFlags;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests mount images and create device nodes: run them as root"
    );
}

fn require_tool(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps.sh (it installs erofs-utils 1.5 from Debian \
         and builds 1.9.4 into $ISHARE_CACHE)",
        path.display()
    );
    path
}

fn eu194(name: &str) -> PathBuf {
    let cache = std::env::var_os("ISHARE_CACHE").unwrap_or_else(|| "/var/cache/ishare".into());
    require_tool(
        PathBuf::from(cache)
            .join("erofs-utils-1.9.4/bin")
            .join(name),
    )
}

pub fn mkfs_194() -> PathBuf {
    eu194("mkfs.erofs")
}

pub fn fsck_194() -> PathBuf {
    eu194("fsck.erofs")
}

/// A program from PATH (tar, gzip, zstd, xz, ...); missing = a failure, never a skip.
pub fn host_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: run scripts/install-deps.sh (it installs it from Debian)")
        })
}

pub fn fsck_15() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/fsck.erofs"))
}

/// Runs `cmd`; returns an error text with its output if it fails.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------

fn unmount(dir: &Path) {
    use rustix::mount::{UnmountFlags, unmount};
    if unmount(dir, UnmountFlags::empty()).is_err() {
        let _ = unmount(dir, UnmountFlags::DETACH);
    }
}

/// A tmpfs on a temporary directory (ext4 here limits xattr sizes), unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new() -> Tmpfs {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("ishare-builder-tmpfs-")
            .tempdir()
            .expect("mount point");
        let data = CString::new("size=1g,mode=0755").unwrap();
        rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .expect("mount tmpfs");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// A loop mount by the host kernel (`mount -t erofs -o ro,loop`), unmounted on drop.
pub struct LoopMount {
    dir: tempfile::TempDir,
}

impl LoopMount {
    pub fn new(image: &Path) -> Result<LoopMount, String> {
        let dir = tempfile::Builder::new()
            .prefix("ishare-builder-mnt-")
            .tempdir()
            .expect("mount point");
        run(Command::new("mount")
            .args(["-t", "erofs", "-o", "ro,loop"])
            .arg(image)
            .arg(dir.path()))?;
        Ok(LoopMount { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// A bind mount of `src` onto `dst`, undone on drop.
pub struct BindMount(PathBuf);

impl BindMount {
    pub fn new(src: &Path, dst: &Path) -> BindMount {
        rustix::mount::mount_bind(src, dst).expect("bind mount");
        BindMount(dst.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------

/// The build time the tests use; entries whose mtime is exactly this can be compact.
pub const T0: i64 = 1_700_000_000;

/// Deterministic bytes (xorshift) seeded by a name.
pub fn pseudo_random(seed: &[u8], len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for &b in seed {
        x = (x ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Clone, Debug)]
enum What {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    /// Hard link to an earlier path.
    Link(Vec<u8>),
    Chr(u32, u32),
    Blk(u32, u32),
    Fifo,
    Sock,
}

#[derive(Clone, Debug)]
struct Item {
    path: Vec<u8>,
    what: What,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Block size the file sizes are chosen around.
    pub block_size: usize,
    /// Include owners above 65535 (extended inodes).
    pub large_ids: bool,
}

fn items(spec: &Spec) -> Vec<Item> {
    let b = spec.block_size;
    let mut v = Vec::new();
    let mut add = |path: &[u8], what: What| {
        v.push(Item {
            path: path.to_vec(),
            what,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (T0, 0),
            xattrs: Vec::new(),
        })
    };
    add(b"", What::Dir);
    for d in [
        "files", "many", "links", "dev", "deep", "deep/a", "deep/a/b",
    ] {
        add(d.as_bytes(), What::Dir);
    }
    let sizes = [
        ("f_0", 0),
        ("f_1", 1),
        ("f_b-1", b - 1),
        ("f_b", b),
        ("f_b+1", b + 1),
        ("f_2b+3", 2 * b + 3),
        ("f_big", 3 * 1024 * 1024 + 5),
        ("f_tail100", 5 * b + 100),
    ];
    for (name, size) in sizes {
        let p = format!("files/{name}");
        add(p.as_bytes(), What::File(pseudo_random(p.as_bytes(), size)));
    }
    // Two files with the same content (and so the same fingerprint).
    let same = pseudo_random(b"same", 10_000);
    add(b"files/dup1", What::File(same.clone()));
    add(b"deep/a/b/dup2", What::File(same));
    add(b"files/zeros", What::File(vec![0; 3 * b]));
    // A multi-block directory with names of every length class and odd bytes.
    for i in 0..300 {
        let mut name = format!("entry-{i:03}-").into_bytes();
        name.extend(std::iter::repeat_n(b'x', i % 50));
        let mut p = b"many/".to_vec();
        p.extend_from_slice(&name);
        add(&p, What::File(pseudo_random(&p, i % 7)));
    }
    for name in [
        &b"!bang"[..],
        b"-dash",
        b".hidden",
        b"~tilde",
        b"\xff\xfe high bytes",
        b"\x01ctrl",
        &[b'L'; 255],
    ] {
        let mut p = b"many/".to_vec();
        p.extend_from_slice(name);
        add(&p, What::File(b"odd name".to_vec()));
    }
    add(b"links/short", What::Symlink(b"target".to_vec()));
    add(b"links/dangling", What::Symlink(b"/nonexistent/x".to_vec()));
    add(b"links/long", What::Symlink(vec![b'a'; 1000]));
    add(
        b"links/max",
        What::Symlink([b"d/".repeat(2047), b"e".to_vec()].concat()),
    );
    add(b"links/up", What::Symlink(b"../files/f_1".to_vec()));
    add(b"files/hl", What::File(pseudo_random(b"hl", 5000)));
    add(b"links/hl2", What::Link(b"files/hl".to_vec()));
    add(b"many/hl3", What::Link(b"files/hl".to_vec()));
    add(b"dev/null", What::Chr(1, 3));
    add(b"dev/sda1", What::Blk(8, 1));
    add(b"dev/big", What::Chr(300, 70_000));
    add(b"dev/fifo", What::Fifo);
    add(b"dev/fifo-link", What::Link(b"dev/fifo".to_vec()));
    add(b"dev/sock", What::Sock);

    // Modes, owners, times, xattrs.
    let common = (b"user.common".to_vec(), b"shared value".to_vec());
    for it in v.iter_mut() {
        let p = String::from_utf8_lossy(&it.path).into_owned();
        it.mode = match &it.what {
            What::Dir => 0o755,
            What::Symlink(_) => 0o777,
            _ => 0o644,
        };
        match p.as_str() {
            "files/f_1" => {
                it.mode = 0o4755;
                it.uid = 1000;
                it.gid = 100;
                it.mtime = (T0 + 12_345, 678_901_234);
                it.xattrs.push((b"user.one".to_vec(), b"v1".to_vec()));
                it.xattrs.push((b"user.empty".to_vec(), Vec::new()));
            }
            "files/f_b" => {
                it.mode = 0o600;
                it.mtime = (T0 - 1000, 0);
                it.xattrs
                    .push((b"trusted.bin".to_vec(), (0..=255).collect()));
                it.xattrs
                    .push((b"security.sec".to_vec(), b"label".to_vec()));
            }
            "files/f_b+1" => {
                it.mode = 0;
                it.xattrs
                    .push((b"user.big".to_vec(), pseudo_random(b"big", 3000)));
            }
            "files/f_2b+3" if spec.large_ids => {
                it.uid = 70_000;
                it.gid = 4_000_000_000;
            }
            "files/hl" => it.mtime = (T0 + 1, 1),
            "deep" => it.mode = 0o1777,
            "deep/a/b" => it.mtime = (T0 - 5, 999_999_999),
            "" => it.xattrs.push((b"user.root".to_vec(), b"r".to_vec())),
            "links/short" => it.xattrs.push((b"trusted.sym".to_vec(), b"1".to_vec())),
            "dev/null" => {
                it.mode = 0o666;
                it.xattrs.push((b"trusted.dev".to_vec(), b"d".to_vec()));
            }
            "files/f_big" | "files/f_0" | "many" | "deep/a" | "files/dup1" | "files/zeros" => {
                it.xattrs.push(common.clone());
            }
            _ => {}
        }
        if p.starts_with("many/entry-00") {
            it.xattrs
                .push((b"user.ishare.long.tag".to_vec(), p.clone().into_bytes()));
            it.xattrs.push(common.clone());
        }
    }
    v
}

fn apply_owner_mode_xattrs(root: &Path, it: &Item) {
    let p = root.join(OsStr::from_bytes(&it.path));
    if matches!(it.what, What::Link(_)) {
        return;
    }
    lchown(&p, Some(it.uid), Some(it.gid)).expect("lchown");
    if !matches!(it.what, What::Symlink(_)) {
        fs::set_permissions(&p, fs::Permissions::from_mode(it.mode)).expect("chmod");
    }
    for (k, v) in &it.xattrs {
        rustix::fs::lsetxattr(&p, k.as_slice(), v, XattrFlags::empty()).unwrap_or_else(|e| {
            panic!(
                "setxattr {} on {}: {e}",
                String::from_utf8_lossy(k),
                p.display()
            )
        });
    }
}

/// Creates the tree under `root` (which must exist). `reverse` creates entries in the
/// opposite order, which changes the order in which tmpfs lists them.
pub fn generate(root: &Path, spec: &Spec, reverse: bool) {
    let mut items = items(spec);
    if reverse {
        items[1..].reverse();
    }
    // Directories first (parents before children), then everything else, then links.
    let mut dirs: Vec<&Item> = items
        .iter()
        .filter(|i| matches!(i.what, What::Dir))
        .collect();
    dirs.sort_by_key(|i| i.path.iter().filter(|&&c| c == b'/').count());
    for d in &dirs {
        if !d.path.is_empty() {
            fs::create_dir(root.join(OsStr::from_bytes(&d.path))).expect("mkdir");
        }
    }
    for pass in 0..2 {
        for it in &items {
            let p = root.join(OsStr::from_bytes(&it.path));
            let is_link = matches!(it.what, What::Link(_));
            if (pass == 1) != is_link {
                continue;
            }
            let dev = |t, maj, min| {
                rustix::fs::mknodat(
                    CWD,
                    &p,
                    t,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(maj, min),
                )
                .expect("mknod")
            };
            match &it.what {
                What::Dir => {}
                What::File(data) => fs::write(&p, data).expect("write"),
                What::Symlink(t) => symlink(OsStr::from_bytes(t), &p).expect("symlink"),
                What::Link(to) => {
                    fs::hard_link(root.join(OsStr::from_bytes(to)), &p).expect("link")
                }
                What::Chr(a, b) => dev(FileType::CharacterDevice, *a, *b),
                What::Blk(a, b) => dev(FileType::BlockDevice, *a, *b),
                What::Fifo => dev(FileType::Fifo, 0, 0),
                What::Sock => {
                    drop(std::os::unix::net::UnixListener::bind(&p).expect("bind socket"))
                }
            }
        }
    }
    for it in &items {
        apply_owner_mode_xattrs(root, it);
    }
    // Times last, deepest first, since creating entries changes a directory's mtime.
    let mut by_depth: Vec<&Item> = items
        .iter()
        .filter(|i| !matches!(i.what, What::Link(_)))
        .collect();
    by_depth.sort_by_key(|i| {
        std::cmp::Reverse(
            i.path.iter().filter(|&&c| c == b'/').count() + usize::from(!i.path.is_empty()),
        )
    });
    for it in by_depth {
        let p = root.join(OsStr::from_bytes(&it.path));
        let ts = Timespec {
            tv_sec: it.mtime.0,
            tv_nsec: i64::from(it.mtime.1) as _,
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        rustix::fs::utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW).expect("utimensat");
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot and comparison
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub nlink: u64,
    /// Regular files: size and SHA-256.
    pub content: Option<(u64, [u8; 32])>,
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first path (in sorted order) of this entry's hard-link group.
    pub link_group: Vec<u8>,
}

pub type Tree = BTreeMap<Vec<u8>, Entry>;

pub fn list_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 1 << 17];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => panic!("llistxattr {}: {e}", p.display()),
    };
    let names: Vec<Vec<u8>> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut out = Vec::new();
    for name in names {
        let mut val = vec![0u8; 1 << 17];
        let n = rustix::fs::lgetxattr(p, name.as_slice(), &mut val[..])
            .unwrap_or_else(|e| panic!("lgetxattr {}: {e}", p.display()));
        val.truncate(n);
        out.push((name, val));
    }
    out.sort();
    out
}

pub fn sha256_file(p: &Path) -> [u8; 32] {
    let data = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    Sha256::digest(&data).into()
}

/// Every entry under `root` (the root itself as ""), by relative path.
pub fn snapshot(root: &Path) -> Tree {
    let mut raw: Vec<(Vec<u8>, fs::Metadata)> = Vec::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(OsStr::from_bytes(&rel));
        let m = fs::symlink_metadata(&p).expect("lstat");
        if m.is_dir() {
            for e in fs::read_dir(&p).expect("readdir") {
                let name = e.expect("dirent").file_name();
                let mut sub = rel.clone();
                if !sub.is_empty() {
                    sub.push(b'/');
                }
                sub.extend_from_slice(name.as_bytes());
                stack.push(sub);
            }
        }
        raw.push((rel, m));
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut tree = Tree::new();
    for (rel, m) in raw {
        let p = root.join(OsStr::from_bytes(&rel));
        let group = groups
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| rel.clone())
            .clone();
        let ft = m.file_type();
        tree.insert(
            rel,
            Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                nlink: m.nlink(),
                content: ft.is_file().then(|| (m.size(), sha256_file(&p))),
                target: ft.is_symlink().then(|| {
                    fs::read_link(&p)
                        .expect("readlink")
                        .into_os_string()
                        .into_encoded_bytes()
                }),
                rdev: if ft.is_file() || ft.is_dir() || ft.is_symlink() {
                    0
                } else {
                    m.rdev()
                },
                xattrs: list_xattrs(&p),
                link_group: group,
            },
        );
    }
    tree
}

fn show(e: &Entry) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let xattrs: Vec<String> = e
        .xattrs
        .iter()
        .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), hex(v)))
        .collect();
    format!(
        "mode {:o} uid {} gid {} mtime {}.{:09} nlink {} content {:?} target {:?} rdev {:#x} \
         xattrs [{}] link group {:?}",
        e.mode,
        e.uid,
        e.gid,
        e.mtime.0,
        e.mtime.1,
        e.nlink,
        e.content.map(|(n, d)| (n, hex(&d[..8]))),
        e.target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        e.rdev,
        xattrs.join(", "),
        String::from_utf8_lossy(&e.link_group)
    )
}

/// Differences between two snapshots, one line each (empty = equal).
pub fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (k, va) in a {
        match b.get(k) {
            None => out.push(format!(
                "{:?}: only in the source",
                String::from_utf8_lossy(k)
            )),
            Some(vb) if va != vb => out.push(format!(
                "{:?}:\n  source {}\n  image  {}",
                String::from_utf8_lossy(k),
                show(va),
                show(vb)
            )),
            Some(_) => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!(
            "{:?}: only in the image",
            String::from_utf8_lossy(k)
        ));
    }
    out
}
