//! Helpers of the corruption tests: the external mkfs.erofs tools, a small generated
//! source tree, seed images built from it, a deterministic PRNG, a recording
//! [`ReadAt`], and byte-level editing of images (with the superblock checksum fixed up).

// Not every test binary that might include this module uses all of it.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ishare_erofs::format::{FEATURE_COMPAT_SB_CHKSUM, SUPER_OFFSET};
use ishare_erofs::{CheckOptions, CheckReport, Image, ReadAt, Result, superblock_checksum};

// ---------------------------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------------------------

/// The cache directory `scripts/install-deps.sh` installs erofs-utils 1.9.4 into.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ISHARE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ishare"))
}

/// `path` if it is an executable file; fails the test otherwise (never skips).
fn require_tool(path: PathBuf) -> PathBuf {
    let ok = fs::metadata(&path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    assert!(
        ok,
        "required tool {} is missing: run `scripts/install-deps.sh` (as root) to install it",
        path.display()
    );
    path
}

/// mkfs.erofs 1.9.4, built by `scripts/install-deps.sh`.
pub fn mkfs_194() -> PathBuf {
    require_tool(cache_dir().join("erofs-utils-1.9.4/bin/mkfs.erofs"))
}

/// mkfs.erofs 1.5 (Debian bookworm's `erofs-utils`).
pub fn mkfs_15() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/mkfs.erofs"))
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (see `scripts/install-deps.sh`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setfattr(path: &Path, name: &str, value: &str) {
    let tool = require_tool(PathBuf::from("/usr/bin/setfattr"));
    run(Command::new(tool)
        .arg("-n")
        .arg(name)
        .arg("-v")
        .arg(value)
        .arg(path));
}

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG
// ---------------------------------------------------------------------------------------------

/// xorshift64*: tiny, deterministic, good enough for test data and mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero (xorshift would stay at zero), and decorrelate close seeds.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The source tree
// ---------------------------------------------------------------------------------------------

/// Number of entries of `/bigdir` (several directory blocks at 4 KiB, many at 512 B).
pub const BIGDIR_ENTRIES: usize = 300;

/// Files of the tree with their sizes: inline tails, exact blocks, multi-block files.
pub const FILES: &[(&str, usize)] = &[
    ("empty", 0),
    ("small.txt", 5),
    ("b511", 511),
    ("b513", 513),
    ("b4095", 4095),
    ("exact8k", 8192),
    ("mid.bin", 5000),
    ("big.bin", 70000),
];

/// A long symlink target: not inline at 512-byte blocks.
pub fn long_link_target() -> String {
    let mut t = String::new();
    while t.len() < 1500 {
        t.push_str("a-rather-long-directory-name/");
    }
    t.push_str("end");
    t
}

/// Writes the test tree into `root` (which must exist and be empty):
///
/// ```text
/// empty small.txt b511 b513 b4095 exact8k mid.bin big.bin   files of various sizes
/// bigdir/entry-000 .. entry-299                             a multi-block directory
/// link-short -> small.txt, link-long -> (1.5 KB)            short and long symlinks
/// sub/subsub/deep, sub/hardlink (= big.bin), sub/fifo       nesting, a hard link, a fifo
/// ```
///
/// xattrs: `user.shared` with one value on six inodes (shared xattr), `user.inline-N`
/// unique ones (inline), `user.pfx.*` names (long prefix with `--xattr-prefix=user.pfx.`),
/// a `trusted.` one on a directory and a 300-byte value.
pub fn make_tree(root: &Path) {
    let mut rng = Rng::new(0x1234_5678);
    for (name, len) in FILES {
        fs::write(root.join(name), rng.bytes(*len)).expect("write file");
    }
    let bigdir = root.join("bigdir");
    fs::create_dir(&bigdir).expect("mkdir bigdir");
    for i in 0..BIGDIR_ENTRIES {
        fs::write(bigdir.join(format!("entry-{i:03}")), format!("{i}")).expect("write entry");
    }
    symlink("small.txt", root.join("link-short")).expect("symlink");
    symlink(long_link_target(), root.join("link-long")).expect("symlink");
    fs::create_dir_all(root.join("sub/subsub")).expect("mkdir sub/subsub");
    fs::write(root.join("sub/subsub/deep"), b"deep file\n").expect("write deep");
    fs::hard_link(root.join("big.bin"), root.join("sub/hardlink")).expect("hard link");
    run(Command::new("mkfifo").arg(root.join("sub/fifo")));

    for f in [
        "small.txt",
        "b513",
        "mid.bin",
        "big.bin",
        "exact8k",
        "sub/subsub/deep",
    ] {
        setfattr(&root.join(f), "user.shared", "one-value-on-several-inodes");
    }
    for (i, f) in ["small.txt", "b4095", "bigdir/entry-007", "sub"]
        .iter()
        .enumerate()
    {
        setfattr(&root.join(f), &format!("user.inline-{i}"), &format!("v{i}"));
    }
    setfattr(&root.join("mid.bin"), "user.pfx.alpha", "long-prefixed");
    setfattr(&root.join("b511"), "user.pfx.beta", &"v".repeat(300));
    setfattr(&root.join("sub"), "trusted.dir", "on-a-directory");
}

// ---------------------------------------------------------------------------------------------
// Seed images
// ---------------------------------------------------------------------------------------------

/// A seed image in memory.
#[derive(Debug)]
pub struct Seed {
    /// Short description, used in messages.
    pub name: &'static str,
    /// Image bytes.
    pub bytes: Vec<u8>,
}

/// The mkfs invocations of the seeds: (name, mkfs 1.9.4?, arguments).
pub const SEED_SPECS: &[(&str, bool, &[&str])] = &[
    (
        "xattrs-4k",
        true,
        &[
            "--xattr-prefix=user.pfx.",
            "--xattr-inode-digest",
            "-Exattr-name-filter",
        ],
    ),
    (
        "xattrs-512-extended",
        true,
        &[
            "-b512",
            "--xattr-prefix=user.pfx.",
            "--xattr-inode-digest",
            "-Exattr-name-filter,force-inode-extended",
        ],
    ),
    ("chunkmap-4k", true, &["--chunksize=4096"]),
    (
        "chunkidx-512-extended",
        true,
        &[
            "-b512",
            "--chunksize=4096",
            "-Eforce-chunk-indexes,force-inode-extended",
        ],
    ),
    ("mkfs15-4k", false, &[]),
];

/// Builds (once per test binary) the seed images from [`make_tree`], in a temporary
/// directory under /tmp that is removed again.
pub fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ishare-corrupt-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).expect("mkdir tree");
        make_tree(&tree);
        SEED_SPECS
            .iter()
            .map(|(name, new, args)| {
                let img = dir.path().join(format!("{name}.img"));
                let mut cmd = Command::new(if *new { mkfs_194() } else { mkfs_15() });
                cmd.args(["-T0", "-U", "6f2c5a4e-8d1b-4c3a-9e7f-0123456789ab"]);
                if *new {
                    cmd.arg("--quiet");
                }
                run(cmd.args(*args).arg(&img).arg(&tree));
                Seed {
                    name,
                    bytes: fs::read(&img).expect("read image"),
                }
            })
            .collect()
    })
}

/// The seed called `name`.
pub fn seed(name: &str) -> &'static Seed {
    seeds()
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no seed {name}"))
}

// ---------------------------------------------------------------------------------------------
// Opening and checking
// ---------------------------------------------------------------------------------------------

/// Opens image bytes.
pub fn open(name: &str, bytes: Vec<u8>) -> Result<Image> {
    Image::from_source(name, Box::new(bytes), vec![])
}

/// Options of every check in these tests: read all data, within a budget of 16 times
/// the image size (so huge claimed sizes cannot make a check read for long).
pub fn check_opts(image_len: usize) -> CheckOptions {
    CheckOptions {
        read_data: true,
        verify_fingerprints: false,
        data_budget: Some(16 * image_len as u64 + (1 << 20)),
    }
}

/// Opens and checks image bytes.
pub fn open_and_check(bytes: Vec<u8>) -> Result<CheckReport> {
    let opts = check_opts(bytes.len());
    open("corrupt.img", bytes)?.check(&opts)
}

/// A [`ReadAt`] over bytes that records every read (offset, length).
#[derive(Debug)]
pub struct Recorder {
    pub data: Vec<u8>,
    pub reads: Mutex<Vec<(u64, u64)>>,
}

impl ReadAt for Recorder {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads
            .lock()
            .expect("lock")
            .push((offset, buf.len() as u64));
        self.data.read_exact_at(buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.data.size()
    }
}

/// Every read (offset, length) a check of `bytes` does, with its options.
pub fn recorded_reads(bytes: &[u8], opts: &CheckOptions) -> Vec<(u64, u64)> {
    let rec = std::sync::Arc::new(Recorder {
        data: bytes.to_vec(),
        reads: Mutex::new(Vec::new()),
    });
    // The image needs an owned source: forward to the shared recorder.
    #[derive(Debug)]
    struct Shared(std::sync::Arc<Recorder>);
    impl ReadAt for Shared {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.0.read_exact_at(buf, offset)
        }
        fn size(&self) -> std::io::Result<u64> {
            self.0.size()
        }
    }
    let img = Image::from_source("recorded.img", Box::new(Shared(rec.clone())), vec![])
        .expect("seed opens");
    img.check(opts).expect("seed checks");
    drop(img);
    rec.reads.lock().expect("lock").clone()
}

// ---------------------------------------------------------------------------------------------
// Editing
// ---------------------------------------------------------------------------------------------

pub fn get_u16(b: &[u8], at: u64) -> u16 {
    let at = at as usize;
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
pub fn get_u32(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub fn get_u64(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
pub fn put_u8(b: &mut [u8], at: u64, v: u8) {
    b[at as usize] = v;
}
pub fn put_u16(b: &mut [u8], at: u64, v: u16) {
    let at = at as usize;
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], at: u64, v: u32) {
    let at = at as usize;
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], at: u64, v: u64) {
    let at = at as usize;
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Byte offset of superblock field `off` (offsets as in `format::SuperBlock`).
pub fn sb(off: u64) -> u64 {
    SUPER_OFFSET + off
}

/// Recomputes and stores the superblock checksum when the image has one (and the
/// block size field is still sane), so edits elsewhere are not rejected for it.
pub fn fix_checksum(b: &mut [u8]) {
    let bits = b[sb(0x0C) as usize];
    if get_u32(b, sb(0x08)) & FEATURE_COMPAT_SB_CHKSUM == 0 || !(9..=16).contains(&bits) {
        return;
    }
    if let Some(crc) = superblock_checksum(b, bits) {
        put_u32(b, sb(4), crc);
    }
}
