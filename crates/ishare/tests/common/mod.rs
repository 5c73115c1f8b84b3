//! Shared helpers for the oracle integration tests:
//!
//! * lookup of the external erofs-utils tools (1.5 from Debian, 1.9.4 from the cache that
//!   `scripts/install-deps.sh` fills),
//! * tmpfs and EROFS mounts that unmount themselves on drop,
//! * a deterministic generator of a test source tree exercising the corners of the format,
//! * a snapshot of a tree (lstat, contents, xattrs, hard links) and a comparator.
//!
//! Everything here needs root (mount, mknod, chown, `trusted.` xattrs).

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::{self, File, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};
use rustix::mount::MountFlags;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Environment: root check, tools, running commands
// ---------------------------------------------------------------------------------------------

/// Panics unless the effective uid is 0.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the oracle tests need root (they mount tmpfs and EROFS, mknod device nodes, chown, and set \
         trusted.* xattrs): run them as root"
    );
}

/// The cache directory `scripts/install-deps.sh` installs erofs-utils 1.9.4 into.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ISHARE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ishare"))
}

/// Returns `path` if it is an executable file, and fails the test otherwise: CI installs every
/// tool, so a missing one is an error, never a reason to skip.
fn require_tool(path: PathBuf) -> PathBuf {
    let ok = fs::metadata(&path)
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false);
    assert!(
        ok,
        "required tool {} is missing: run `scripts/install-deps.sh` (as root) to install it",
        path.display()
    );
    path
}

fn eu194(name: &str) -> PathBuf {
    require_tool(cache_dir().join("erofs-utils-1.9.4/bin").join(name))
}

/// mkfs.erofs 1.5 (Debian bookworm's `erofs-utils` package).
pub fn mkfs_15() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/mkfs.erofs"))
}

/// fsck.erofs 1.5 (Debian bookworm's `erofs-utils` package).
pub fn fsck_15() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/fsck.erofs"))
}

/// mkfs.erofs 1.9.4 (built by `scripts/install-deps.sh`).
pub fn mkfs_194() -> PathBuf {
    eu194("mkfs.erofs")
}

/// fsck.erofs 1.9.4 (built by `scripts/install-deps.sh`).
pub fn fsck_194() -> PathBuf {
    eu194("fsck.erofs")
}

/// dump.erofs 1.9.4 (built by `scripts/install-deps.sh`).
pub fn dump_194() -> PathBuf {
    eu194("dump.erofs")
}

/// The `ishare` binary built by cargo for this test run.
pub fn ishare_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ishare"))
}

/// The last few KiB of a command's output, for error messages (mkfs.erofs 1.5 prints a
/// progress line per file).
pub fn tail(out: &[u8]) -> String {
    const MAX: usize = 4000;
    let s = String::from_utf8_lossy(&out[out.len().saturating_sub(MAX)..]).replace('\r', "\n");
    if out.len() > MAX {
        format!("[...]{s}")
    } else {
        s
    }
}

/// Runs `cmd`, panicking with its output if it cannot be started or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    out
}

/// Runs `cmd` and returns its output whatever its exit status.
pub fn run_unchecked(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

fn mount_point(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create mount point")
}

/// Unmounts `dir`, falling back to a lazy unmount if it is busy. Never panics (used in Drop).
fn unmount(dir: &Path) {
    use rustix::mount::{UnmountFlags, unmount};
    if unmount(dir, UnmountFlags::empty()).is_err() {
        let _ = unmount(dir, UnmountFlags::DETACH);
    }
}

/// mount(2), panicking with a readable message on failure.
fn mount(source: &Path, target: &Path, fstype: &str, flags: MountFlags, data: &str) {
    let cdata = CString::new(data).expect("mount options without NUL");
    rustix::mount::mount(source, target, fstype, flags, cdata.as_c_str()).unwrap_or_else(|e| {
        panic!(
            "mount -t {fstype} -o {data} {} {}: {e} (see dmesg)",
            source.display(),
            target.display()
        )
    });
}

/// A fresh tmpfs mounted on a temporary directory, unmounted on drop. tmpfs holds `user.`,
/// `trusted.` and `security.` xattrs up to 64 KiB, POSIX ACLs, device nodes and sockets.
#[derive(Debug)]
pub struct Tmpfs {
    // Dropped (removed) after `Drop::drop` unmounted it.
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new() -> Tmpfs {
        require_root();
        let dir = mount_point("ishare-tmpfs-");
        mount(
            Path::new("tmpfs"),
            dir.path(),
            "tmpfs",
            MountFlags::empty(),
            "size=2g,mode=0755",
        );
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

/// A read-only kernel mount of an EROFS image, unmounted on drop. mount(2) is called directly
/// with the image file as source, which gives EROFS's file-backed mode: mount(8) would set up
/// a loop device instead, and in that mode `device=` needs block devices, not files.
#[derive(Debug)]
pub struct ErofsMount {
    dir: tempfile::TempDir,
}

impl ErofsMount {
    /// `devices` are the extra blob devices, in order (`-o device=PATH` each).
    pub fn new(image: &Path, devices: &[PathBuf]) -> ErofsMount {
        require_root();
        let dir = mount_point("ishare-erofs-");
        let opts: Vec<String> = devices
            .iter()
            .map(|d| format!("device={}", d.to_str().expect("device path is UTF-8")))
            .collect();
        mount(
            image,
            dir.path(),
            "erofs",
            MountFlags::RDONLY,
            &opts.join(","),
        );
        ErofsMount { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ErofsMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

// ---------------------------------------------------------------------------------------------
// Tree generator
// ---------------------------------------------------------------------------------------------

/// What the generated tree contains. [`TreeSpec::full`] is the one the oracle tests use;
/// [`TreeSpec::small`] builds in a few milliseconds for tests of CLI behaviour.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    /// Seed of the pseudo-random file contents.
    pub seed: u64,
    /// Directories under `dirs/` with this many entries each.
    pub dir_sizes: Vec<usize>,
    /// Make `names/`: names using every byte value except `/` and NUL, and 255-byte names.
    pub all_byte_names: bool,
    /// Block sizes B for which files of B-1, B and B+1 bytes are made (plus 0 and 1 once).
    pub block_sizes: Vec<u64>,
    /// Size of `files/big` (0: no such file).
    pub big_file_size: u64,
    /// Make the mostly-zero and all-zero files under `sparse/`.
    pub sparse_files: bool,
    /// Make symlinks with targets of up to 4095 bytes (else only short ones).
    pub long_symlinks: bool,
    /// Make xattrs of several KiB and the file with 40 xattrs.
    pub big_xattrs: bool,
    /// Use uids/gids above 65535 (they force extended inodes).
    pub large_ids: bool,
    /// Length of the longest names (255 = NAME_MAX; mkfs.erofs 1.5 fails on 255-byte names).
    pub max_name_len: usize,
}

impl TreeSpec {
    /// Everything the oracle tests cover (a few thousand entries, about 8 MiB of data).
    pub fn full() -> TreeSpec {
        TreeSpec {
            seed: 0x1534_2024,
            dir_sizes: vec![0, 1, 200, 5000],
            all_byte_names: true,
            block_sizes: vec![512, 1024, 2048, 4096],
            big_file_size: 5 * 1024 * 1024 + 123,
            sparse_files: true,
            long_symlinks: true,
            big_xattrs: true,
            large_ids: true,
            max_name_len: 255,
        }
    }

    /// A small tree still holding one of each kind of entry.
    pub fn small() -> TreeSpec {
        TreeSpec {
            seed: 7,
            dir_sizes: vec![0, 3],
            all_byte_names: false,
            block_sizes: vec![4096],
            big_file_size: 100_000,
            sparse_files: false,
            long_symlinks: false,
            big_xattrs: false,
            large_ids: true,
            max_name_len: 255,
        }
    }
}

/// Owner, permission bits and mtime given to one generated entry.
#[derive(Clone, Copy, Debug)]
struct Meta {
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

/// Most entries get this, so most inodes can be compact ones in the default configuration.
const BASE: Meta = Meta {
    perm: 0o644,
    uid: 0,
    gid: 0,
    mtime: (1_700_000_000, 0),
};
const BASE_DIR: Meta = Meta {
    perm: 0o755,
    ..BASE
};

const PERMS: &[u32] = &[
    0o644, 0o000, 0o777, 0o4755, 0o2755, 0o1777, 0o7777, 0o6711, 0o400, 0o1644, 0o2070,
];
const IDS: &[u32] = &[0, 1000, 65534, 1, 65535];
const LARGE_IDS: &[u32] = &[100_000, 4_000_000_000];
/// mtimes (seconds, nanoseconds): all in [0, 2^32), including after 2038. Those at or after
/// 1700000000 with 0 ns fit compact inodes when mkfs's epoch is 1700000000.
const TIMES: &[(i64, i64)] = &[
    (1_700_000_000, 0),
    (1_700_000_100, 0),
    (2_000_000_000, 0),
    (0, 0),
    (1, 1),
    (1_000_000_000, 123_456_789),
    (1_700_000_000, 999_999_999),
    (1_700_000_001, 500),
    (2_147_483_647, 0),
    (2_147_483_648, 7),
    (4_102_444_800, 42),
    (4_294_967_295, 999_999_999),
];

/// A deterministic pseudo-random generator (splitmix64).
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// The binary form of a POSIX ACL xattr value (`system.posix_acl_*`): a version-2 header and
/// (tag, perm, id) entries, sorted by tag then id.
fn posix_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}
const ACL_UNDEFINED: u32 = u32::MAX;

struct Gen<'a> {
    root: &'a Path,
    spec: &'a TreeSpec,
    rng: Rng,
    /// Directories and their metadata, applied after everything else is created (creating
    /// an entry changes its directory's mtime).
    dirs: Vec<(Vec<u8>, Meta)>,
    /// Counter for [`Gen::varied`].
    n: usize,
}

impl Gen<'_> {
    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// A different combination of mode, owner and mtime at each call.
    fn varied(&mut self) -> Meta {
        let i = self.n;
        self.n += 1;
        let ids: Vec<u32> = if self.spec.large_ids {
            IDS.iter().chain(LARGE_IDS).copied().collect()
        } else {
            IDS.to_vec()
        };
        Meta {
            perm: PERMS[i % PERMS.len()],
            uid: ids[(i / 2) % ids.len()],
            gid: ids[(i / 3 + 1) % ids.len()],
            mtime: TIMES[(i / 5 + i) % TIMES.len()],
        }
    }

    fn apply(&self, rel: &[u8], m: Meta, is_symlink: bool) {
        let p = self.path(rel);
        // chown first: it clears the setuid/setgid bits that chmod then sets.
        lchown(&p, Some(m.uid), Some(m.gid)).unwrap_or_else(|e| panic!("lchown {p:?}: {e}"));
        if !is_symlink {
            fs::set_permissions(&p, Permissions::from_mode(m.perm))
                .unwrap_or_else(|e| panic!("chmod {p:?}: {e}"));
        }
        let t = Timespec {
            tv_sec: m.mtime.0,
            tv_nsec: m.mtime.1,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| panic!("utimensat {p:?}: {e}"));
    }

    fn dir(&mut self, rel: &[u8], m: Meta) {
        let p = self.path(rel);
        if !rel.is_empty() {
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        }
        self.dirs.push((rel.to_vec(), m));
    }

    fn file(&mut self, rel: &[u8], content: &[u8], m: Meta) {
        let p = self.path(rel);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        self.apply(rel, m, false);
    }

    fn random_file(&mut self, rel: &[u8], len: usize, m: Meta) {
        let content = self.rng.bytes(len);
        self.file(rel, &content, m);
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8], m: Meta) {
        let p = self.path(rel);
        symlink(OsStr::from_bytes(target), &p).unwrap_or_else(|e| panic!("symlink {p:?}: {e}"));
        self.apply(rel, m, true);
    }

    fn node(&mut self, rel: &[u8], ft: FileType, major: u32, minor: u32, m: Meta) {
        let p = self.path(rel);
        let dev = rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(CWD, &p, ft, Mode::from_raw_mode(m.perm), dev)
            .unwrap_or_else(|e| panic!("mknod {p:?}: {e}"));
        self.apply(rel, m, false);
    }

    fn hardlink(&mut self, existing: &[u8], new: &[u8]) {
        let (a, b) = (self.path(existing), self.path(new));
        // std's hard_link does not follow a symlink `a` on Linux (linkat without FOLLOW).
        fs::hard_link(&a, &b).unwrap_or_else(|e| panic!("link {a:?} {b:?}: {e}"));
    }

    fn xattr(&mut self, rel: &[u8], name: &[u8], value: &[u8]) {
        let p = self.path(rel);
        rustix::fs::lsetxattr(&p, name, value, XattrFlags::empty()).unwrap_or_else(|e| {
            panic!(
                "setxattr {p:?} {} ({} bytes): {e}",
                name.escape_ascii(),
                value.len()
            )
        });
    }

    fn build(&mut self) {
        self.dir(b"", BASE_DIR);
        self.xattr(b"", b"user.root", b"root dir xattr");
        self.files();
        self.sparse();
        self.symlinks();
        self.hardlinks();
        self.devices();
        self.xattrs();
        self.metas();
        self.names();
        self.dirs();
        self.deep();
        self.acls();
        // Directory metadata last (children before parents, though for root the order
        // does not matter).
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, m) in dirs.iter().rev() {
            self.apply(rel, *m, false);
        }
    }

    fn files(&mut self) {
        self.dir(b"files", BASE_DIR);
        let mut sizes = BTreeSet::from([0u64, 1]);
        for &b in &self.spec.block_sizes {
            sizes.extend([b - 1, b, b + 1]);
        }
        // A few multi-block sizes with and without a tail.
        sizes.extend([3 * 4096 + 17, 8192, 65_537]);
        for s in sizes {
            let name = format!("files/size-{s}");
            let m = self.varied();
            self.random_file(name.as_bytes(), s as usize, m);
        }
        if self.spec.big_file_size > 0 {
            self.random_file(b"files/big", self.spec.big_file_size as usize, BASE);
        }
        // Identical contents in two files (chunk deduplication in chunked modes).
        let dup = self.rng.bytes(20_000);
        self.file(b"files/dup-1", &dup, BASE);
        self.file(b"files/dup-2", &dup, BASE);
        self.file(b"files/text", b"hello, erofs\n", BASE);
    }

    fn sparse(&mut self) {
        if !self.spec.sparse_files {
            return;
        }
        self.dir(b"sparse", BASE_DIR);
        // All zeros, several blocks of every block size, and not block aligned.
        self.file(b"sparse/zeros-16k", &[0u8; 16384], BASE);
        self.file(b"sparse/zeros-odd", &vec![0u8; 3 * 4096 + 100], BASE);
        // Mostly zeros: a few data blocks in a 1 MiB + 7 file (holes in chunked layouts).
        let mut v = vec![0u8; 1024 * 1024 + 7];
        for off in [0usize, 8192, 300_000, 512 * 1024, 1024 * 1024 - 1000] {
            let d = self.rng.bytes(1000);
            v[off..off + 1000].copy_from_slice(&d);
        }
        let n = v.len();
        v[n - 1] = 0xAA;
        self.file(b"sparse/mostly-zeros", &v, BASE);
        // Data, then zeros to the end (a trailing hole).
        let mut v = vec![0u8; 64 * 1024];
        let d = self.rng.bytes(4096);
        v[..4096].copy_from_slice(&d);
        self.file(b"sparse/trailing-zeros", &v, BASE);
    }

    fn symlinks(&mut self) {
        self.dir(b"links", BASE_DIR);
        self.symlink(b"links/short", b"target", BASE);
        self.symlink(b"links/to-file", b"../files/text", BASE);
        self.symlink(b"links/to-dir", b"../files", BASE);
        self.symlink(b"links/absolute", b"/etc/passwd", BASE);
        self.symlink(b"links/dangling", b"does/not/exist", BASE);
        self.symlink(b"links/one", b"x", BASE);
        self.symlink(b"links/bytes", b"\x01\xff\xfe odd \x7f bytes", BASE);
        let m = self.varied();
        self.symlink(b"links/varied", b"target", m);
        let mut lens = vec![100usize, 600];
        if self.spec.long_symlinks {
            lens.extend([
                511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 4000, 4095,
            ]);
        }
        for len in lens {
            // Components of at most 200 bytes so the target could even be a real path.
            let target: Vec<u8> = (0..len)
                .map(|i| {
                    if i % 201 == 200 {
                        b'/'
                    } else {
                        b'a' + (i % 26) as u8
                    }
                })
                .collect();
            self.symlink(format!("links/long-{len}").as_bytes(), &target, BASE);
        }
    }

    fn hardlinks(&mut self) {
        self.dir(b"hard", BASE_DIR);
        self.dir(b"hard/sub", BASE_DIR);
        // A group of three names in three directories.
        let m = Meta {
            perm: 0o640,
            uid: 1000,
            gid: 1000,
            mtime: (1_234_567_890, 5),
        };
        self.random_file(b"hard/three-a", 5000, m);
        self.hardlink(b"hard/three-a", b"hard/sub/three-b");
        self.hardlink(b"hard/three-a", b"files/three-c");
        // A pair in one directory, with an xattr.
        self.random_file(b"hard/pair-1", 100, BASE);
        self.xattr(b"hard/pair-1", b"user.linked", b"yes");
        self.hardlink(b"hard/pair-1", b"hard/pair-2");
        // An empty file, a symlink and a fifo with two names each.
        self.file(b"hard/empty-1", b"", BASE);
        self.hardlink(b"hard/empty-1", b"hard/empty-2");
        self.symlink(b"hard/sym-1", b"files/text", BASE);
        self.hardlink(b"hard/sym-1", b"hard/sym-2");
        self.node(b"hard/fifo-1", FileType::Fifo, 0, 0, BASE);
        self.hardlink(b"hard/fifo-1", b"hard/sub/fifo-2");
    }

    fn devices(&mut self) {
        self.dir(b"dev", BASE_DIR);
        let nodes: &[(&[u8], FileType, u32, u32)] = &[
            (b"dev/null", FileType::CharacterDevice, 1, 3),
            (b"dev/c-4095-255", FileType::CharacterDevice, 4095, 255),
            (b"dev/c-1-256", FileType::CharacterDevice, 1, 256),
            (b"dev/b-8-1", FileType::BlockDevice, 8, 1),
            (b"dev/b-259-1048575", FileType::BlockDevice, 259, 1_048_575),
            (
                b"dev/b-4095-1048575",
                FileType::BlockDevice,
                4095,
                1_048_575,
            ),
            (b"dev/fifo", FileType::Fifo, 0, 0),
            (b"dev/socket", FileType::Socket, 0, 0),
        ];
        for &(rel, ft, major, minor) in nodes {
            let m = self.varied();
            self.node(rel, ft, major, minor, m);
        }
        self.node(b"dev/fifo-plain", FileType::Fifo, 0, 0, BASE);
        self.node(b"dev/socket-plain", FileType::Socket, 0, 0, BASE);
        // A 0:0 character device is an overlayfs whiteout, which mkfs.erofs 1.9 treats
        // specially (see `add_whiteout_origin_xattrs`): keep it in a directory of its own.
        self.dir(b"whiteout", BASE_DIR);
        let m = self.varied();
        self.node(b"whiteout/c-0-0", FileType::CharacterDevice, 0, 0, m);
        self.file(b"whiteout/file", b"beside a whiteout", BASE);
    }

    fn xattrs(&mut self) {
        self.dir(b"xattr", BASE_DIR);
        self.file(b"xattr/empty-value", b"data", BASE);
        self.xattr(b"xattr/empty-value", b"user.empty", b"");
        self.file(b"xattr/small", b"data", BASE);
        self.xattr(b"xattr/small", b"user.a", b"1");
        self.xattr(b"xattr/small", b"trusted.b", b"hello");
        self.xattr(b"xattr/small", b"security.c", b"world\0with nul");
        // xattrs on a directory, a symlink and special files (user.* is only allowed on
        // regular files and directories).
        self.dir(b"xattr/dir", BASE_DIR);
        self.xattr(b"xattr/dir", b"user.dir", b"on a directory");
        self.xattr(b"xattr/dir", b"trusted.dir", b"");
        self.symlink(b"xattr/symlink", b"small", BASE);
        self.xattr(b"xattr/symlink", b"trusted.sym", b"on a symlink");
        self.xattr(b"xattr/symlink", b"security.sym", b"s");
        self.node(b"xattr/chardev", FileType::CharacterDevice, 5, 1, BASE);
        self.xattr(b"xattr/chardev", b"security.dev", b"on a device");
        self.node(b"xattr/fifo", FileType::Fifo, 0, 0, BASE);
        self.xattr(b"xattr/fifo", b"trusted.fifo", b"on a fifo");
        self.node(b"xattr/socket", FileType::Socket, 0, 0, BASE);
        self.xattr(b"xattr/socket", b"trusted.sock", b"on a socket");
        // Names that `--xattr-prefix=user.long.prefix.` turns into long-prefix entries,
        // including one equal to the prefix (empty suffix), plus a near miss.
        self.file(b"xattr/long-prefix", b"data", BASE);
        for (name, value) in [
            (&b"user.long.prefix.one"[..], &b"1"[..]),
            (b"user.long.prefix.two", b"22"),
            (b"user.long.prefix.", b"exactly the prefix"),
            (b"user.long.prefi", b"near miss"),
        ] {
            self.xattr(b"xattr/long-prefix", name, value);
        }
        self.dir(b"xattr/long-prefix-dir", BASE_DIR);
        self.xattr(b"xattr/long-prefix-dir", b"user.long.prefix.dir", b"d");
        // The same xattrs on many files: mkfs stores them once, as shared xattrs.
        self.dir(b"xattr/shared", BASE_DIR);
        let shared_value = self.rng.bytes(100);
        for i in 0..24 {
            let rel = format!("xattr/shared/f{i:02}");
            self.file(rel.as_bytes(), format!("{i}").as_bytes(), BASE);
            self.xattr(rel.as_bytes(), b"user.shared", b"same value everywhere");
            self.xattr(rel.as_bytes(), b"trusted.shared", &shared_value);
            if i % 2 == 0 {
                self.xattr(rel.as_bytes(), b"user.long.prefix.shared", b"v");
            }
            if i % 3 == 0 {
                self.xattr(rel.as_bytes(), b"user.own", format!("{i}").as_bytes());
            }
        }
        if !self.spec.big_xattrs {
            return;
        }
        // Values of several KiB (larger than 512..4096-byte blocks), in each namespace.
        self.file(b"xattr/big", b"data", BASE);
        for (name, len) in [
            (&b"user.big"[..], 6000usize),
            (b"trusted.big", 4097),
            (b"security.big", 3000),
        ] {
            let v = self.rng.bytes(len);
            self.xattr(b"xattr/big", name, &v);
        }
        // The same big value on several files (a big shared xattr).
        let big_shared = self.rng.bytes(5000);
        for i in 0..4 {
            let rel = format!("xattr/big-shared-{i}");
            self.file(rel.as_bytes(), b"", BASE);
            self.xattr(rel.as_bytes(), b"user.bigshared", &big_shared);
        }
        // Forty xattrs on one file, of varied name and value lengths, incl. a 255-byte name.
        self.file(b"xattr/many", b"many xattrs", BASE);
        for i in 0..40usize {
            let ns: &str = ["user.", "trusted.", "security."][i % 3];
            let name = format!("{ns}x{i:02}-{}", "n".repeat(i * 3));
            let v = self.rng.bytes(i * 37 % 300);
            self.xattr(b"xattr/many", name.as_bytes(), &v);
        }
        let longest = format!("user.{}", "L".repeat(255 - 5));
        self.xattr(b"xattr/many", longest.as_bytes(), b"longest name");
        // Many xattrs on a directory too (its inline xattr area precedes its dirents).
        self.dir(b"xattr/many-dir", BASE_DIR);
        for i in 0..20usize {
            let v = self.rng.bytes(i * 50);
            self.xattr(b"xattr/many-dir", format!("user.d{i}").as_bytes(), &v);
        }
        self.file(b"xattr/many-dir/inside", b"x", BASE);
    }

    /// Every mode/owner/mtime combination we care about, on files and directories.
    fn metas(&mut self) {
        self.dir(b"meta", BASE_DIR);
        for i in 0..40 {
            let m = self.varied();
            self.file(format!("meta/f{i:02}").as_bytes(), b"m", m);
        }
        for i in 0..12 {
            let m = self.varied();
            let rel = format!("meta/d{i:02}");
            self.dir(rel.as_bytes(), m);
            self.file(format!("{rel}/x").as_bytes(), b"", BASE);
        }
    }

    fn names(&mut self) {
        if !self.spec.all_byte_names {
            return;
        }
        self.dir(b"names", BASE_DIR);
        let all: Vec<u8> = (1..=255u8).filter(|&b| b != b'/').collect(); // 254 bytes
        // Each byte value as a one-byte name ("." becomes "...").
        for &b in &all {
            let name: Vec<u8> = if b == b'.' { b"...".to_vec() } else { vec![b] };
            let mut rel = b"names/".to_vec();
            rel.extend_from_slice(&name);
            self.file(&rel, &name, BASE);
        }
        // All byte values in one name, ascending and descending (254 bytes each).
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(&all);
        self.file(&rel, b"asc", BASE);
        let mut rel = b"names/".to_vec();
        rel.extend(all.iter().rev());
        self.file(&rel, b"desc", BASE);
        // Longest names (255 bytes normally): ASCII, multi-byte UTF-8, and a directory.
        let max = self.spec.max_name_len;
        let long = "n".repeat(max);
        self.file(format!("names/{long}").as_bytes(), b"long", BASE);
        let utf8 = format!("{}{}", "é".repeat(max / 2), "x".repeat(max % 2));
        assert_eq!(utf8.len(), max);
        self.file(format!("names/{utf8}").as_bytes(), b"utf8", BASE);
        let d = "d".repeat(max);
        self.dir(format!("names/{d}").as_bytes(), BASE_DIR);
        self.file(format!("names/{d}/{long}").as_bytes(), b"nested", BASE);
    }

    fn dirs(&mut self) {
        self.dir(b"dirs", BASE_DIR);
        let sizes = self.spec.dir_sizes.clone();
        for n in sizes {
            let d = format!("dirs/n{n}");
            self.dir(d.as_bytes(), BASE_DIR);
            for i in 0..n {
                // Names of varied length, so entries straddle directory block boundaries
                // at different offsets.
                let name = format!("{d}/e{i:05}{}", "_".repeat(i * 7 % 120));
                match i % 50 {
                    7 => self.symlink(name.as_bytes(), b"../n0", BASE),
                    13 => {
                        self.dir(name.as_bytes(), BASE_DIR);
                    }
                    21 => {
                        let m = self.varied();
                        self.file(name.as_bytes(), b"varied", m);
                    }
                    _ => self.file(name.as_bytes(), b"", BASE),
                }
            }
        }
    }

    fn deep(&mut self) {
        let mut rel = b"deep".to_vec();
        self.dir(&rel, BASE_DIR);
        for i in 0..16 {
            rel.extend_from_slice(format!("/level{i}").as_bytes());
            self.dir(&rel, BASE_DIR);
        }
        rel.extend_from_slice(b"/bottom");
        self.file(&rel, b"bottom", BASE);
    }

    fn acls(&mut self) {
        // USER_OBJ 1, USER 2, GROUP_OBJ 4, GROUP 8, MASK 0x10, OTHER 0x20.
        self.dir(b"acl", BASE_DIR);
        self.file(b"acl/file", b"acl", BASE);
        let access = posix_acl(&[
            (1, 6, ACL_UNDEFINED),
            (2, 4, 1000),
            (4, 5, ACL_UNDEFINED),
            (8, 6, 2000),
            (0x10, 7, ACL_UNDEFINED),
            (0x20, 4, ACL_UNDEFINED),
        ]);
        self.xattr(b"acl/file", b"system.posix_acl_access", &access);
        // A default ACL, set after the directory's contents so they do not inherit it.
        self.dir(b"acl/dir", BASE_DIR);
        self.file(b"acl/dir/inside", b"", BASE);
        let default = posix_acl(&[
            (1, 7, ACL_UNDEFINED),
            (2, 5, 1001),
            (4, 5, ACL_UNDEFINED),
            (0x10, 5, ACL_UNDEFINED),
            (0x20, 0, ACL_UNDEFINED),
        ]);
        self.xattr(b"acl/dir", b"system.posix_acl_default", &default);
        self.xattr(b"acl/dir", b"system.posix_acl_access", &access);
    }
}

/// Fills the (empty) directory `root` with the tree described by `spec`. `root` itself gets
/// the tree's root metadata (mode 0755, 0:0, a fixed mtime, one xattr).
pub fn generate(root: &Path, spec: &TreeSpec) {
    require_root();
    let mut g = Gen {
        root,
        spec,
        rng: Rng(spec.seed),
        dirs: Vec::new(),
        n: 0,
    };
    g.build();
}

/// A tmpfs holding a freshly generated tree; unmounted on drop.
#[derive(Debug)]
pub struct SourceTree {
    pub fs: Tmpfs,
}

impl SourceTree {
    pub fn new(spec: &TreeSpec) -> SourceTree {
        let fs = Tmpfs::new();
        generate(fs.path(), spec);
        SourceTree { fs }
    }

    pub fn path(&self) -> &Path {
        self.fs.path()
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot and comparison
// ---------------------------------------------------------------------------------------------

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

/// What a snapshot records for one path (directory sizes, nlink and atimes are ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// Size and SHA-256 of the contents, for regular files.
    pub content: Option<(u64, [u8; 32])>,
    /// Target bytes, for symlinks.
    pub target: Option<Vec<u8>>,
    /// Device number, for character and block devices.
    pub rdev: Option<u64>,
    /// All xattrs (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A snapshot of a directory tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// Keyed by path relative to the root ("" is the root itself), as raw bytes.
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Sets of non-directory paths sharing one inode (only those with nlink > 1).
    pub hardlinks: BTreeSet<Vec<Vec<u8>>>,
}

fn xattrs_of(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
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

fn hash_file(p: &Path) -> io::Result<(u64, [u8; 32])> {
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
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            panic!("snapshot: unknown file type of {p:?}: {:o}", md.mode())
        };
        let entry = Entry {
            kind,
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
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

/// Fields a comparison may ignore, for mkfs options that lose information. Keep this set
/// minimal: everything else is always compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompareOpts {
    /// Ignore mtimes (seconds and nanoseconds) of every entry.
    pub ignore_mtime: bool,
    /// Ignore only the nanoseconds of mtimes.
    pub ignore_mtime_nsec: bool,
}

impl CompareOpts {
    /// Compare every field.
    pub const EXACT: CompareOpts = CompareOpts {
        ignore_mtime: false,
        ignore_mtime_nsec: false,
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

/// Human-readable differences between `a` and `b` (empty if equal under `opts`).
pub fn diff(a: &Tree, b: &Tree, opts: &CompareOpts) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = a.entries.keys().chain(b.entries.keys()).collect();
    for k in keys {
        let p = Show(k);
        let (ea, eb) = match (a.entries.get(k), b.entries.get(k)) {
            (Some(ea), Some(eb)) => (ea, eb),
            (Some(e), None) => {
                out.push(format!("{p}: only in a ({:?})", e.kind));
                continue;
            }
            (None, Some(e)) => {
                out.push(format!("{p}: only in b ({:?})", e.kind));
                continue;
            }
            (None, None) => unreachable!(),
        };
        if ea.kind != eb.kind {
            out.push(format!("{p}: type a={:?} b={:?}", ea.kind, eb.kind));
            continue;
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
        let sec_differs = ea.mtime != eb.mtime;
        let nsec_differs = ea.mtime_nsec != eb.mtime_nsec;
        if !opts.ignore_mtime && (sec_differs || (nsec_differs && !opts.ignore_mtime_nsec)) {
            out.push(format!(
                "{p}: mtime a={}.{:09} b={}.{:09}",
                ea.mtime, ea.mtime_nsec, eb.mtime, eb.mtime_nsec
            ));
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
            let names_a: BTreeSet<_> = ea.xattrs.iter().map(|x| &x.0).collect();
            let names_b: BTreeSet<_> = eb.xattrs.iter().map(|x| &x.0).collect();
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
