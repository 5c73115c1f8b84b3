//! Corrupted images must give an error, never a panic, a hang or a huge allocation.
//!
//! Seed images are built with mkfs.erofs 1.9.4 and 1.5 from a small generated tree
//! (see `ishare_testkit::tree::reader_tree`), then:
//!
//! * truncated at every 64 bytes of metadata (and every ~1000 bytes of data),
//! * corrupted in targeted ways (superblock, inodes and their times, directories and
//!   their listings (".", "..", name order), xattrs, chunk maps),
//!   each checked for the nature of the error and a message naming the problem,
//! * mutated at random (1–8 bytes of metadata, deterministic PRNG, superblock checksum
//!   fixed up) for a bounded time, in a watchdog thread that catches panics and hangs.
//!
//! A counting global allocator checks that no single allocation made while checking a
//! corrupted image exceeds [`alloc_bound`].

// The counting allocator below needs `unsafe impl GlobalAlloc` (and calls into the
// system allocator); `unsafe` is denied workspace-wide, and allowed here only because
// this is a test binary.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use ishare_erofs::ReadAt;
use ishare_erofs::format::*;
use ishare_erofs::{
    CheckOptions, CheckReport, DataLayout, Error, ErrorKind, ExtentKind, Image, Inode, Result,
};
use ishare_testkit::Rng;
use ishare_testkit::image::{
    Seed, build_seeds, fix_checksum, get_u16, get_u32, get_u64, open, put, put_u8, put_u16,
    put_u32, put_u64, sb,
};
use ishare_testkit::tools::{mkfs_15, mkfs_194};
use ishare_testkit::tree::{long_link_target, reader_tree};
use ishare_testkit::watchdog::{Tally, panic_message, watchdog};

// ---------------------------------------------------------------------------------------------
// Seed images
// ---------------------------------------------------------------------------------------------

/// The mkfs invocations of the seeds: (name, mkfs 1.9.4?, arguments).
const SEED_SPECS: &[(&str, bool, &[&str])] = &[
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
    // Metadata in the metabox inode, stored plain (no -z), so tests can patch the
    // inodes in it; and compressed.
    ("metabox-4k", true, &["-m4096", "--xattr-prefix=user.pfx."]),
    (
        "metabox-lz4",
        true,
        &["-zlz4hc", "-m4096", "-Eztailpacking"],
    ),
];

/// The seed images, built once per test binary from the reader's small tree.
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mkfs = SEED_SPECS
            .iter()
            .map(|(name, new, args)| {
                let mut cmd = Command::new(if *new { mkfs_194() } else { mkfs_15() });
                cmd.args(["-T0", "-U", "6f2c5a4e-8d1b-4c3a-9e7f-0123456789ab"]);
                if *new {
                    cmd.arg("--quiet");
                }
                cmd.args(*args);
                (*name, cmd)
            })
            .collect();
        build_seeds(&reader_tree(), mkfs)
    })
}

/// The seed called `name`.
fn seed(name: &str) -> &'static Seed {
    ishare_testkit::image::seed(seeds(), name)
}

// ---------------------------------------------------------------------------------------------
// Opening and checking
// ---------------------------------------------------------------------------------------------

/// Options of every check in these tests: read all data, within a budget of 16 times
/// the image size (so huge claimed sizes cannot make a check read for long).
fn check_opts(image_len: usize) -> CheckOptions {
    CheckOptions {
        read_data: true,
        verify_fingerprints: false,
        data_budget: Some(16 * image_len as u64 + (1 << 20)),
    }
}

/// Opens and checks image bytes.
fn open_and_check(bytes: Vec<u8>) -> Result<CheckReport> {
    let opts = check_opts(bytes.len());
    open("corrupt.img", bytes)?.check(&opts)
}

/// A [`ReadAt`] over bytes that records every read (offset, length).
#[derive(Debug)]
struct Recorder {
    data: Vec<u8>,
    reads: Mutex<Vec<(u64, u64)>>,
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

/// The image needs an owned source: this forwards to a shared recorder.
#[derive(Debug)]
struct Shared(Arc<Recorder>);

impl ReadAt for Shared {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.0.size()
    }
}

/// Every read (offset, length) a check of `bytes` does, with its options.
fn recorded_reads(bytes: &[u8], opts: &CheckOptions) -> Vec<(u64, u64)> {
    let rec = Arc::new(Recorder {
        data: bytes.to_vec(),
        reads: Mutex::new(Vec::new()),
    });
    let img = Image::from_source("recorded.img", Box::new(Shared(rec.clone())), vec![])
        .expect("seed opens");
    img.check(opts).expect("seed checks");
    drop(img);
    rec.reads.lock().expect("lock").clone()
}

// ---------------------------------------------------------------------------------------------
// Allocation tracking
// ---------------------------------------------------------------------------------------------

mod alloc_track {
    use super::Cell;
    use std::alloc::{GlobalAlloc, Layout, System};

    /// `System`, recording per thread the largest single allocation (or reallocation
    /// target) since the last [`measure`].
    pub struct Counting;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        // `try_with`: never panic inside the allocator, even during thread teardown.
        let _ = LARGEST.try_with(|m| {
            if size > m.get() {
                m.set(size);
            }
        });
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged;
    // the only addition is bookkeeping in a const-initialised, drop-free thread local,
    // which neither allocates nor unwinds.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded unchanged (the caller upholds `alloc`'s contract).
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` and returns its result with the largest single allocation it made on
    /// this thread.
    pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|m| m.set(0));
        let r = f();
        (r, LARGEST.with(|m| m.get()))
    }
}

#[global_allocator]
static ALLOC: alloc_track::Counting = alloc_track::Counting;

/// Largest single allocation allowed while opening and checking an image of `len`
/// bytes. What the reader legitimately allocates at once: the check's 64 KiB read
/// buffer; one directory block (the block size, at most 64 KiB) and its parsed entry
/// table (32 bytes per 12-byte dirent); the superblock's block for the checksum (at
/// most 64 KiB); an inode's inline xattr area (at most 12 + 4 × 65534 bytes ≈ 256 KiB,
/// and never more than the image, checked before allocating); one xattr entry (at most
/// 4 + 255 + 65535 bytes); a chunk map window (at most 512 × 8 bytes); a symlink target
/// (< 4 KiB); the entry list of one directory and the set of visited NIDs, which grow
/// with the number of dirents and inodes the image really holds (a few bytes of
/// bookkeeping per byte of metadata at worst). So: 1 MiB for the fixed buffers plus 4×
/// the image size for what grows with it. Nothing may scale with a size field alone.
fn alloc_bound(len: usize) -> usize {
    4 * len + (1 << 20)
}

/// Opens and checks `bytes` (plus a couple of path lookups), asserting the allocation
/// bound; returns the check's result.
fn check_bounded(bytes: Vec<u8>) -> Result<CheckReport> {
    check_measured(bytes).0
}

/// [`check_bounded`], also returning the largest single allocation it made.
fn check_measured(bytes: Vec<u8>) -> (Result<CheckReport>, usize) {
    let len = bytes.len();
    let copy = bytes.clone();
    let (r, largest) = alloc_track::measure(move || {
        let r = open_and_check(bytes);
        if let Ok(img) = open("corrupt.img", copy) {
            let _ = img.lookup_path(b"/bigdir/entry-150");
            let _ = img.lookup_path(b"/sub/subsub/deep");
        }
        r
    });
    assert!(
        largest <= alloc_bound(len),
        "an allocation of {largest} bytes while checking a {len}-byte image exceeds the bound \
         of {} bytes",
        alloc_bound(len)
    );
    (r, largest)
}

/// The allocation tracking sees allocations made inside `measure`, on this thread only.
#[test]
fn allocation_tracking_works() {
    let (v, largest) = alloc_track::measure(|| vec![1u8; 3 << 20]);
    assert!(largest >= 3 << 20, "{largest}");
    drop(v);
    let (_, largest) = alloc_track::measure(|| {
        std::thread::spawn(|| vec![0u8; 5 << 20].len())
            .join()
            .expect("thread")
    });
    assert!(largest < 1 << 20, "{largest}");
}

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

/// The nature of an expected error.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Nature {
    /// `ErrorKind::Corrupt`.
    Corrupt,
    /// `ErrorKind::Truncated`.
    Truncated,
    /// `ErrorKind::Unsupported` (valid format the reader, like Linux, refuses).
    Unsupported,
}

fn nature(e: &Error) -> Option<Nature> {
    match e.kind() {
        ErrorKind::Corrupt(_) => Some(Nature::Corrupt),
        ErrorKind::Truncated { .. } => Some(Nature::Truncated),
        ErrorKind::Unsupported(_) => Some(Nature::Unsupported),
        _ => None,
    }
}

/// Opens and checks `bytes` as they are (see [`expect_err`]) and
/// asserts an error of nature `want` whose message contains every one of `needles`.
#[track_caller]
fn expect_err_raw(what: &str, bytes: Vec<u8>, want: Nature, needles: &[&str]) -> Error {
    let e = match check_bounded(bytes) {
        Ok(r) => panic!("{what}: the check passed ({r:?}), expected a {want:?} error"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(
        nature(&e),
        Some(want),
        "{what}: expected a {want:?} error, got {msg:?}"
    );
    assert_eq!(
        e.is_corruption(),
        want != Nature::Unsupported,
        "{what}: is_corruption() is wrong for {msg:?}"
    );
    assert!(
        msg.starts_with("corrupt.img: "),
        "{what}: the message does not name the image: {msg:?}"
    );
    for n in needles {
        assert!(
            msg.contains(n),
            "{what}: the message {msg:?} does not mention {n:?}"
        );
    }
    e
}

/// Like [`expect_err_raw`] after fixing the superblock checksum (edits in the first
/// block would otherwise only give a checksum mismatch).
#[track_caller]
fn expect_err(what: &str, bytes: Vec<u8>, want: Nature, needles: &[&str]) -> Error {
    expect_err_raw(what, fixed(bytes), want, needles)
}

/// The seed's bytes with `bits` set in the little-endian u32 at `at`.
fn with_bits(seed: &Seed, at: u64, bits: u32) -> Vec<u8> {
    let mut b = seed.bytes.clone();
    let v = get_u32(&b, at);
    put_u32(&mut b, at, v | bits);
    b
}

/// `bytes` with the superblock checksum recomputed.
fn fixed(mut bytes: Vec<u8>) -> Vec<u8> {
    fix_checksum(&mut bytes);
    bytes
}

/// Asserts that an error names the path `path` (and so, with the NID, the inode).
#[track_caller]
fn assert_at(e: &Error, path: &str) {
    assert_eq!(
        e.location().path.as_deref(),
        Some(path),
        "error {e} is not located at {path}"
    );
    assert!(
        e.to_string().contains(path),
        "message {e} does not show {path}"
    );
}

// ---------------------------------------------------------------------------------------------
// Locating structures
// ---------------------------------------------------------------------------------------------

/// A seed opened for locating structures, and a copy of its bytes to edit.
struct Target {
    img: Image,
    bytes: Vec<u8>,
}

impl Target {
    fn new(seed_name: &str) -> Target {
        let s = seed(seed_name);
        Target {
            img: open(s.name, s.bytes.clone()).expect("seed opens"),
            bytes: s.bytes.clone(),
        }
    }

    fn bs(&self) -> u64 {
        u64::from(self.img.superblock().block_size())
    }

    /// The seed patched by `patch` (checksum fixed) must fail the check as corrupt,
    /// with every needle in the message, located at `path`.
    #[track_caller]
    fn corrupt_at(
        &self,
        what: &str,
        path: &str,
        needles: &[&str],
        patch: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut b = self.bytes.clone();
        patch(&mut b);
        let e = expect_err(what, b, Nature::Corrupt, needles);
        assert_at(&e, path);
    }

    fn ino(&self, path: &str) -> Inode {
        self.img.lookup_path(path.as_bytes()).expect("path in seed")
    }

    /// Byte offset of the inode at `path`.
    fn loc(&self, path: &str) -> u64 {
        self.ino(path).location()
    }

    /// Size of the on-disk inode at `path` (32 or 64).
    fn isize(&self, path: &str) -> u64 {
        if self.ino(path).extended { 64 } else { 32 }
    }

    /// Byte offset of the inline xattr area of `path`.
    fn xattr_area(&self, path: &str) -> u64 {
        let ino = self.ino(path);
        assert!(ino.xattr_isize > 0, "{path} has xattrs in the seed");
        ino.location() + self.isize(path)
    }

    /// Byte offset of the first inline xattr entry of `path` (after the shared ids).
    fn first_inline_xattr(&self, path: &str) -> u64 {
        let area = self.xattr_area(path);
        area + 12 + 4 * u64::from(self.bytes[area as usize + 4])
    }

    /// Byte offset of the chunk map / chunk index array of the chunk-based `path`.
    fn chunk_table(&self, path: &str) -> u64 {
        let ino = self.ino(path);
        assert_eq!(ino.layout, DataLayout::ChunkBased, "{path} is chunk-based");
        let unit = if ino.chunk_format() & CHUNK_FORMAT_INDEXES != 0 {
            8
        } else {
            4
        };
        (ino.location() + self.isize(path) + u64::from(ino.xattr_isize)).next_multiple_of(unit)
    }

    /// Byte offset of where logical byte `pos` of `path` is stored.
    fn data_at(&self, path: &str, pos: u64) -> u64 {
        let ino = self.ino(path);
        let ext = self.img.map(&ino, pos).expect("map");
        match ext.kind {
            ExtentKind::Mapped { offset, .. } | ExtentKind::Inline { offset } => {
                offset + pos - ext.logical
            }
            ExtentKind::Hole => panic!("{path} has a hole at {pos}"),
            ExtentKind::Compressed(_) | ExtentKind::Fragment { .. } => {
                panic!("{path} is compressed at {pos}")
            }
        }
    }

    /// The raw dirents of directory `path`, in on-disk order.
    fn dirents(&self, path: &str) -> Vec<RawDirent> {
        let dir = self.ino(path);
        let bs = self.bs();
        let mut out = Vec::new();
        for b in 0..dir.size.div_ceil(bs) {
            let start = self.data_at(path, b * bs);
            let len = (dir.size - b * bs).min(bs);
            let nameoff0 = u64::from(get_u16(&self.bytes, start + 8));
            let count = nameoff0 / 12;
            for i in 0..count {
                let at = start + 12 * i;
                let nameoff = u64::from(get_u16(&self.bytes, at + 8));
                let end = if i + 1 < count {
                    u64::from(get_u16(&self.bytes, at + 12 + 8))
                } else {
                    let tail = &self.bytes[(start + nameoff) as usize..(start + len) as usize];
                    nameoff + tail.iter().position(|&c| c == 0).unwrap_or(tail.len()) as u64
                };
                out.push(RawDirent {
                    block_start: start,
                    at,
                    name_at: start + nameoff,
                    name: self.bytes[(start + nameoff) as usize..(start + end) as usize].to_vec(),
                    nid: get_u64(&self.bytes, at),
                });
            }
        }
        assert!(!out.is_empty());
        out
    }

    /// The raw dirent called `name` in directory `dir`.
    fn dirent(&self, dir: &str, name: &str) -> RawDirent {
        self.dirents(dir)
            .into_iter()
            .find(|d| d.name == name.as_bytes())
            .unwrap_or_else(|| panic!("no {name} in {dir}"))
    }
}

/// A directory entry as stored.
#[derive(Debug, Clone)]
struct RawDirent {
    /// Byte offset of its directory block.
    block_start: u64,
    /// Byte offset of the 12-byte dirent.
    at: u64,
    /// Byte offset of its name.
    name_at: u64,
    name: Vec<u8>,
    nid: u64,
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

/// The seeds are valid and have the structures the other tests corrupt.
#[test]
fn seeds_are_valid() {
    for s in seeds() {
        let r = check_bounded(s.bytes.clone()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        // 8 files + 300 entries + bigdir, 2 links, sub, subsub, deep, fifo (the hard
        // link is one more name of big.bin) + root.
        assert_eq!(r.inodes, 8 + 300 + 1 + 2 + 4 + 1, "{}", s.name);
        assert_eq!(r.directories, 4, "{}", s.name);
        let t = Target::new(s.name);
        assert!(
            t.ino("/bigdir").size > t.bs(),
            "{}: bigdir spans blocks",
            s.name
        );
        assert_eq!(
            t.img.read_link(&t.ino("/link-long")).expect("link"),
            long_link_target().as_bytes()
        );
        let small = t.ino("/small.txt");
        let xs = t.img.xattrs(&small).expect("xattrs");
        assert!(xs.iter().any(|x| x.shared), "{}: shared xattr", s.name);
        assert!(xs.iter().any(|x| !x.shared), "{}: inline xattr", s.name);
    }
    let t = Target::new("xattrs-4k");
    let sbi = t.img.superblock();
    assert!(sbi.has_compat(FEATURE_COMPAT_ISHARE_XATTRS));
    assert!(sbi.has_compat(FEATURE_COMPAT_XATTR_FILTER));
    assert!(t.img.fingerprint_prefix().is_some());
    let mid = t.img.xattrs(&t.ino("/mid.bin")).expect("xattrs");
    assert!(
        mid.iter()
            .any(|x| x.name == b"user.pfx.alpha" && x.long_prefix.is_some())
    );
    for name in ["chunkmap-4k", "chunkidx-512-extended"] {
        let t = Target::new(name);
        assert_eq!(t.ino("/big.bin").layout, DataLayout::ChunkBased, "{name}");
    }
    let t = Target::new("chunkidx-512-extended");
    assert_ne!(t.ino("/big.bin").chunk_format() & CHUNK_FORMAT_INDEXES, 0);
    assert!(t.ino("/exact8k").extended);
    assert_eq!(t.bs(), 512);
    let t = Target::new("xattrs-512-extended");
    assert_eq!(t.ino("/exact8k").layout, DataLayout::FlatPlain);
    assert!(t.ino("/exact8k").extended);
}

// ---------------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------------

/// Truncating an image anywhere before the last byte a check reads gives a
/// `Truncated` error; anywhere after it changes nothing.
#[test]
fn truncation_everywhere() {
    let started = Instant::now();
    let mut checks = 0;
    for s in seeds() {
        let opts = check_opts(s.bytes.len());
        let reads = recorded_reads(&s.bytes, &opts);
        let last = reads.iter().map(|(o, l)| o + l).max().expect("reads");
        // Metadata: what a check reads without reading file data.
        let meta_opts = CheckOptions {
            read_data: false,
            ..opts.clone()
        };
        let meta_end = recorded_reads(&s.bytes, &meta_opts)
            .iter()
            .map(|(o, l)| o + l)
            .max()
            .expect("reads");
        let full = open_and_check(s.bytes.clone()).expect("seed checks");
        let mut cut = 0u64;
        while cut <= s.bytes.len() as u64 {
            let r = check_bounded(s.bytes[..cut as usize].to_vec());
            checks += 1;
            match r {
                Err(e) if cut < last => {
                    let ErrorKind::Truncated { offset, len, size } = *e.kind() else {
                        panic!("{}: cut at {cut}: not a truncation error: {e}", s.name);
                    };
                    assert_eq!(size, cut, "{}: {e}", s.name);
                    assert!(offset + len > cut, "{}: cut at {cut}: {e}", s.name);
                    assert!(e.to_string().contains("truncated image"), "{e}");
                }
                Ok(r) if cut >= last => assert_eq!(r, full),
                r => panic!(
                    "{}: cut at {cut} (last byte read at {last}): unexpected {r:?}",
                    s.name
                ),
            }
            // Every 64 bytes through the metadata, then sparser through file data.
            cut += if cut < meta_end { 64 } else { 997 };
        }
    }
    println!("{checks} truncated checks in {:?}", started.elapsed());
}

/// Truncation inside each kind of structure, located with the library.
#[test]
fn truncation_at_structures() {
    let t4 = Target::new("xattrs-4k");
    let tc = Target::new("chunkidx-512-extended");
    let big_area = t4.xattr_area("/big.bin");
    assert!(
        t4.bytes[big_area as usize + 4] > 0,
        "big.bin has a shared xattr"
    );
    let shared_id = get_u32(&t4.bytes, big_area + 12);
    let cases: Vec<(&str, &Target, u64)> = vec![
        ("inside the superblock", &t4, SUPER_OFFSET + 50),
        ("before the superblock", &t4, 1000),
        ("inside the first block", &t4, 2000),
        ("inside the root inode", &t4, t4.loc("/") + 20),
        ("inside an extended inode", &tc, tc.loc("/exact8k") + 40),
        ("inside the root's inline dirents", &t4, t4.data_at("/", 20)),
        (
            "inside bigdir's second block",
            &t4,
            t4.data_at("/bigdir", 4096 + 100),
        ),
        ("inside an inline xattr area", &t4, big_area + 14),
        (
            "inside the shared xattr area",
            &t4,
            t4.img.superblock().xattr_blkaddr * 4096 + 4 * u64::from(shared_id) + 2,
        ),
        (
            "inside a chunk index array",
            &tc,
            tc.chunk_table("/big.bin") + 12,
        ),
        ("inside file data", &t4, t4.data_at("/big.bin", 30000)),
        (
            "inside an inline tail",
            &t4,
            t4.data_at("/mid.bin", 4096 + 10),
        ),
        (
            "inside a symlink target",
            &tc,
            tc.data_at("/link-long", 1000),
        ),
    ];
    for (what, t, cut) in cases {
        let e = expect_err_raw(
            what,
            t.bytes[..cut as usize].to_vec(),
            Nature::Truncated,
            &["truncated image", "lie past its end"],
        );
        let ErrorKind::Truncated { offset, len, .. } = *e.kind() else {
            unreachable!()
        };
        // The first read that fails is one that crosses the cut (the walk order
        // decides which structure that is).
        assert!(offset + len > cut, "{what}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Superblock
// ---------------------------------------------------------------------------------------------

#[test]
fn superblock_bad_magic() {
    let mut b = seed("xattrs-4k").bytes.clone();
    put_u32(&mut b, sb(0), 0xDEAD_BEEF);
    expect_err("bad magic", b, Nature::Corrupt, &["bad magic 0xdeadbeef"]);
    // Not an EROFS image at all.
    expect_err_raw(
        "zeros",
        vec![0; 8192],
        Nature::Corrupt,
        &["bad magic", "not an EROFS image"],
    );
    expect_err_raw("empty", Vec::new(), Nature::Truncated, &["truncated image"]);
}

#[test]
fn superblock_bad_checksum() {
    for name in ["xattrs-4k", "xattrs-512-extended"] {
        let orig = &seed(name).bytes;
        let bs = 1usize << orig[sb(0x0C) as usize];
        // The stored value, a field of the superblock, and the last byte the
        // checksum covers (the end of the first block, or the 512-byte block after
        // the superblock offset for 512-byte blocks).
        let last = if bs > 1024 { bs - 1 } else { 1024 + bs - 1 };
        for at in [sb(4), sb(0x40), last as u64] {
            let mut b = orig.clone();
            b[at as usize] ^= 0x5A;
            expect_err_raw(
                &format!("{name}: byte {at} changed"),
                b,
                Nature::Corrupt,
                &["superblock checksum mismatch"],
            );
        }
    }
}

#[test]
fn superblock_unknown_incompat_bit() {
    for bit in [0x200u32, 0x8000_0000] {
        expect_err(
            "unknown incompat bit",
            with_bits(seed("xattrs-4k"), sb(0x50), bit),
            Nature::Unsupported,
            &["unknown incompatible feature bits", &format!("{bit:#x}")],
        );
    }
    // Unknown compatible bits are ignored.
    let mut b = seed("xattrs-4k").bytes.clone();
    let v = get_u32(&b, sb(0x08));
    put_u32(&mut b, sb(0x08), v | 0x4000_0000);
    check_bounded(fixed(b)).expect("unknown compat bits are ignored");
}

#[test]
fn superblock_bad_fields() {
    let orig = &seed("xattrs-4k").bytes;
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = orig.clone();
        f(&mut b);
        b
    };
    for bits in [0u8, 8, 17, 255] {
        expect_err(
            "blkszbits",
            edit(&|b| put_u8(b, sb(0x0C), bits)),
            Nature::Corrupt,
            &[&format!("block size 2^{bits}")],
        );
    }
    expect_err(
        "sb_extslots",
        edit(&|b| put_u8(b, sb(0x0D), 255)),
        Nature::Corrupt,
        &["superblock size", "sb_extslots 255"],
    );
    expect_err(
        "dirblkbits",
        edit(&|b| put_u8(b, sb(0x5A), 1)),
        Nature::Unsupported,
        &["dirblkbits 1"],
    );
    // The long prefix table past the end, and a prefix of length 0 (= 65536).
    expect_err(
        "xattr_prefix_start",
        edit(&|b| put_u32(b, sb(0x5C), 0x4000_0000)),
        Nature::Truncated,
        &["truncated image"],
    );
    let pfx = u64::from(get_u32(orig, sb(0x5C))) * 4;
    expect_err(
        "prefix length 0",
        edit(&|b| put_u16(b, pfx, 0)),
        Nature::Corrupt,
        &["long xattr prefix 0 has invalid length 65536"],
    );
}

#[test]
fn superblock_ishare_prefix_id_out_of_range() {
    let orig = &seed("xattrs-4k").bytes;
    let count = orig[sb(0x5B) as usize];
    assert_eq!(count, 2, "user.pfx. and the fingerprint prefix");
    for id in [count, 0x7F, 0xFF] {
        let mut b = orig.clone();
        put_u8(&mut b, sb(0x69), id);
        expect_err(
            "ishare_xattr_prefix_id",
            b,
            Nature::Corrupt,
            &[
                &format!("invalid ishare xattr prefix id {id}"),
                "2 long prefixes",
            ],
        );
    }
    // COMPAT_ISHARE_XATTRS on an image without any long prefix.
    expect_err(
        "ishare without prefixes",
        with_bits(seed("mkfs15-4k"), sb(0x08), FEATURE_COMPAT_ISHARE_XATTRS),
        Nature::Corrupt,
        &["invalid ishare xattr prefix id 0", "0 long prefixes"],
    );
}

#[test]
fn superblock_root_nid() {
    let t = Target::new("xattrs-4k");
    let mut b = t.bytes.clone();
    put_u16(&mut b, sb(0x0E), 0xFFFF);
    let e = expect_err(
        "root nid past the end",
        b,
        Nature::Truncated,
        &["truncated image", "nid 65535"],
    );
    assert_at(&e, "/");
    // The root is not a directory.
    t.corrupt_at(
        "root is a file",
        "/",
        &["root inode is not a directory"],
        |b| {
            put_u16(b, sb(0x0E), t.ino("/small.txt").nid as u16);
        },
    );
    // 48-bit root NID far past the end (and overflowing the byte offset).
    for nid in [1u64 << 40, 1 << 60] {
        let mut b = t.bytes.clone();
        let v = get_u32(&b, sb(0x50));
        put_u32(&mut b, sb(0x50), v | FEATURE_INCOMPAT_48BIT);
        put_u64(&mut b, sb(0x70), nid);
        let e = check_bounded(fixed(b)).expect_err("huge root nid");
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains(&format!("nid {nid}")), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------------------------------

#[test]
fn dirent_nid_past_the_end() {
    let t = Target::new("xattrs-4k");
    let d = t.dirent("/", "small.txt");
    let mut b = t.bytes.clone();
    put_u64(&mut b, d.at, 1 << 40);
    let e = expect_err(
        "dirent nid",
        b.clone(),
        Nature::Truncated,
        &["truncated image"],
    );
    assert_at(&e, "/small.txt");
    assert_eq!(e.location().nid, Some(1 << 40));
    let img = open("corrupt.img", fixed(b)).expect("opens");
    let e = img.lookup_path(b"/small.txt").expect_err("lookup");
    assert!(e.is_corruption(), "{e}");
    // A NID whose byte offset overflows.
    let mut b = t.bytes.clone();
    put_u64(&mut b, d.at, 1 << 59);
    expect_err("dirent nid overflow", b, Nature::Corrupt, &["out of range"]);
    // The metabox bit without a metabox.
    let mut b = t.bytes.clone();
    put_u64(&mut b, d.at, (1 << 63) | d.nid);
    expect_err(
        "metabox nid",
        b,
        Nature::Corrupt,
        &["metabox", "no metabox inode"],
    );
}

#[test]
fn directory_cycles() {
    let t = Target::new("xattrs-4k");
    let root = t.ino("/").nid;
    let sub = t.ino("/sub").nid;
    // A subdirectory's entry pointing back at the root, at its own directory (its
    // parent's entry target), and a second name of another directory.
    let cases = [
        ("/sub", "subsub", root, "/sub/subsub"),
        ("/sub/subsub", "deep", sub, "/sub/subsub/deep"),
        ("/sub", "subsub", sub, "/sub/subsub"),
        // (The root's "small.txt" now names /sub, which is reached first that way;
        // the error is at the second name.)
        ("/", "small.txt", sub, "/sub"),
    ];
    for (dir, name, target, path) in cases {
        let d = t.dirent(dir, name);
        let mut b = t.bytes.clone();
        put_u64(&mut b, d.at, target);
        put_u8(&mut b, d.at + 10, FT_DIR);
        let e = expect_err(
            &format!("{path} -> nid {target}"),
            b.clone(),
            Nature::Corrupt,
            &["directory reached twice"],
        );
        assert_at(&e, path);
        // Lookups through the loop terminate.
        let img = open("corrupt.img", fixed(b)).expect("opens");
        let _ = img.lookup_path(b"/sub/subsub/subsub/subsub/deep");
    }
}

#[test]
fn dirent_name_offsets() {
    let t = Target::new("xattrs-4k");
    let all = t.dirents("/bigdir");
    let first_block = all[0].block_start;
    let blk: Vec<&RawDirent> = all
        .iter()
        .filter(|d| d.block_start == first_block)
        .collect();
    let nameoff = |d: &RawDirent| d.name_at - d.block_start;
    let e5 = blk[5];
    let e4 = blk[4];
    let n = blk.len();
    type Case<'a> = (&'a str, u64, u16, &'a str);
    let cases: Vec<Case> = vec![
        // Decreasing: entry 5's name starts before entry 4's.
        (
            "decreasing",
            e5.at + 8,
            (nameoff(e4) - 1) as u16,
            "entry 4 has invalid name bounds",
        ),
        // Overlapping / empty: entry 5's name starts where entry 4's does.
        (
            "equal",
            e5.at + 8,
            nameoff(e4) as u16,
            "entry 4 has invalid name bounds",
        ),
        // A name inside the dirent array.
        ("into the dirents", e5.at + 8, 12, "invalid name bounds"),
        // The last entry's name past the block (the previous name then ends there).
        (
            "past the block",
            blk[n - 1].at + 8,
            5000,
            "invalid name bounds",
        ),
        // nameoff0 not a multiple of 12, zero, and past the block.
        (
            "nameoff0 + 1",
            blk[0].at + 8,
            (nameoff(blk[0]) + 1) as u16,
            "invalid first name offset",
        ),
        (
            "nameoff0 = 0",
            blk[0].at + 8,
            0,
            "invalid first name offset 0",
        ),
        (
            "nameoff0 = 6000",
            blk[0].at + 8,
            6000,
            "invalid first name offset 6000",
        ),
    ];
    for (what, at, v, needle) in cases {
        t.corrupt_at(what, "/bigdir", &["directory block 0", needle], |b| {
            put_u16(b, at, v);
        });
    }
    // A name too long (entry 5 ends 300 bytes after it starts).
    let mut b = t.bytes.clone();
    put_u16(&mut b, blk[6].at + 8, (nameoff(e5) + 300) as u16);
    expect_err(
        "name too long",
        b,
        Nature::Corrupt,
        &["invalid name bounds"],
    );
}

#[test]
fn dirent_bad_names() {
    let t = Target::new("xattrs-4k");
    let d = t.dirent("/", "small.txt");
    t.corrupt_at("slash", "/", &["small/txt", "contains '/'"], |b| {
        put_u8(b, d.name_at + 5, b'/');
    });
    // A NUL inside a name that is not the last of its block.
    let d = t.dirent("/", "b511");
    let mut b = t.bytes.clone();
    put_u8(&mut b, d.name_at + 1, 0);
    expect_err("NUL", b, Nature::Corrupt, &["NUL"]);
    // A directory block of fewer bytes than one dirent.
    let mut b = t.bytes.clone();
    let sub = t.loc("/sub/subsub");
    put_u32(&mut b, sub + 8, 11);
    let e = expect_err("tiny dir", b, Nature::Corrupt, &["only 11 bytes"]);
    assert_at(&e, "/sub/subsub");
}

/// A dirent whose type disagrees with the inode's.
#[test]
fn dirent_type_mismatch() {
    let t = Target::new("xattrs-4k");
    let d = t.dirent("/", "small.txt");
    t.corrupt_at(
        "file type",
        "/small.txt",
        &["entry type 7 disagrees", "regular file"],
        |b| {
            put_u8(b, d.at + 10, FT_SYMLINK);
        },
    );
}

// ---------------------------------------------------------------------------------------------
// What the walk does not enter: ".", "..", name order, timestamps
// ---------------------------------------------------------------------------------------------
//
// A check that only follows names passes images the mount and extraction then fail on
// (issue 15, item 7): every case below passed `check` before its rule existed.

/// `/sub`'s ".." entry pointing past the end of the image (the FUSE mount answered
/// EIO to `ls` of `/sub`) or at a subdirectory instead of the parent.
#[test]
fn dotdot_not_the_parent() {
    let t = Target::new("xattrs-4k");
    let root = t.ino("/").nid;
    let subsub = t.ino("/sub/subsub").nid;
    assert_eq!(t.dirent("/sub", "..").nid, root, "the seed's /sub/..");
    for (what, dir, target, parent) in [
        ("past the end", "/sub", 1 << 40, root),
        ("a subdirectory", "/sub", subsub, root),
        (
            "the directory itself",
            "/sub/subsub",
            subsub,
            t.ino("/sub").nid,
        ),
    ] {
        t.corrupt_at(
            what,
            dir,
            &[
                &format!("\"..\" entry refers to nid {target}"),
                &format!("not the parent directory (nid {parent})"),
            ],
            |b| {
                put_u64(b, t.dirent(dir, "..").at, target);
            },
        );
    }
    // The root's ".." refers to the root.
    t.corrupt_at("root ..", "/", &["\"..\" entry"], |b| {
        put_u64(b, t.dirent("/", "..").at, t.ino("/sub").nid);
    });
}

/// A second ".." entry: `/sub`'s own name in the root renamed to "..", so the walk
/// skipped it and extraction silently left out the whole subtree.
#[test]
fn dotdot_twice() {
    let t = Target::new("xattrs-4k");
    let all = t.dirents("/");
    let sub = t.dirent("/", "sub");
    let last = all.last().expect("entries");
    assert_eq!(
        last.name, b"sub",
        "sub is the root's last name (ends at a NUL)"
    );
    t.corrupt_at(
        "second ..",
        "/",
        &["second \"..\" entry", &format!("nid {}", sub.nid)],
        |b| {
            put(b, sub.name_at, b"..\0");
        },
    );
}

/// "." must refer to the directory itself, appear once, and not at all when the
/// inode says it is omitted; "." and ".." must be there and be directory entries.
#[test]
fn dot_entries() {
    let t = Target::new("xattrs-4k");
    let root = t.ino("/").nid;
    let sub = t.ino("/sub");
    // "." of /sub refers to the root.
    t.corrupt_at(
        ". elsewhere",
        "/sub",
        &[
            &format!("\".\" entry refers to nid {root}"),
            "not the directory itself",
        ],
        |b| {
            put_u64(b, t.dirent("/sub", ".").at, root);
        },
    );
    // ".." renamed ".a" (still in order): no ".." at all.
    t.corrupt_at("no ..", "/sub", &["no \"..\" entry"], |b| {
        put_u8(b, t.dirent("/sub", "..").name_at + 1, b'a');
    });
    // "." renamed "!" (which sorts first): no "." at all.
    t.corrupt_at("no .", "/sub", &["no \".\" entry"], |b| {
        put_u8(b, t.dirent("/sub", ".").name_at, b'!');
    });
    // The DOT_OMITTED bit on /sub, which still stores its ".".
    let mut b = t.bytes.clone();
    let fmt = get_u16(&b, sub.location());
    put_u16(&mut b, sub.location(), fmt | (1 << I_DOT_OMITTED_BIT));
    let e = expect_err("omitted .", b, Nature::Corrupt, &["\".\" entry", "omitted"]);
    assert_at(&e, "/sub");
    // ".." typed as a regular file.
    t.corrupt_at("..type", "/sub", &["\"..\" entry has type 1"], |b| {
        put_u8(b, t.dirent("/sub", "..").at + 10, FT_REG_FILE);
    });
}

/// Names out of order, within a block and across blocks: the kernel's lookup (a
/// binary search) would not find some of them although `ls` lists them.
#[test]
fn dirent_names_out_of_order() {
    let t = Target::new("xattrs-4k");
    let all = t.dirents("/bigdir");
    // "entry-004" → "entry-002": a duplicate of the name two before it.
    let d = t.dirent("/bigdir", "entry-004");
    let mut b = t.bytes.clone();
    put_u8(&mut b, d.name_at + 8, b'2');
    let e = expect_err(
        "duplicate",
        b.clone(),
        Nature::Corrupt,
        &["\"entry-002\" after \"entry-003\"", "out of order"],
    );
    assert_at(&e, "/bigdir");
    // The kernel's (and our) lookup misses a name so placed: "entry-003" → "entry-009".
    let d = t.dirent("/bigdir", "entry-003");
    let mut b = t.bytes.clone();
    put_u8(&mut b, d.name_at + 8, b'9');
    let img = open("corrupt.img", fixed(b.clone())).expect("opens");
    let names: Vec<Vec<u8>> = img
        .read_dir(&img.lookup_path(b"/bigdir").expect("bigdir"))
        .expect("listing")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.iter().any(|n| n == b"entry-009"));
    expect_err("misplaced", b, Nature::Corrupt, &["out of order"]);
    // The first name of the second block made smaller than the first block's last.
    let second = all
        .iter()
        .position(|d| d.block_start != all[0].block_start)
        .expect("bigdir spans blocks");
    let first_of_2 = &all[second];
    t.corrupt_at(
        "across blocks",
        "/bigdir",
        &["\"entry-000\" after", "out of order"],
        |b| {
            put(b, first_of_2.name_at, b"entry-000");
        },
    );
}

/// Nanoseconds of 10^9 or more in an extended inode (utimensat refuses them, so
/// extraction failed with EINVAL) and in the superblock (every compact inode's).
#[test]
fn mtime_nsec_out_of_range() {
    let t = Target::new("xattrs-512-extended");
    for path in ["/small.txt", "/sub", "/"] {
        let ino = t.ino(path);
        assert!(ino.extended, "{path} is extended in the seed");
        for nsec in [1_000_000_000, u32::MAX] {
            t.corrupt_at(path, path, &[&format!("mtime nanoseconds {nsec}")], |b| {
                put_u32(b, ino.location() + 0x28, nsec);
            });
        }
    }
    // 999 999 999 is fine.
    let mut b = t.bytes.clone();
    put_u32(&mut b, t.loc("/small.txt") + 0x28, 999_999_999);
    check_bounded(fixed(b)).expect("the largest valid nanoseconds");
    // The superblock's fixed_nsec.
    let t = Target::new("xattrs-4k");
    let mut b = t.bytes.clone();
    put_u32(&mut b, sb(0x20), 1_000_000_000);
    let e = open("corrupt.img", fixed(b)).expect_err("fixed_nsec");
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("fixed_nsec 1000000000"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Extended attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn xattr_entries_past_the_area() {
    for name in ["xattrs-4k", "xattrs-512-extended", "mkfs15-4k"] {
        let t = Target::new(name);
        let e0 = t.first_inline_xattr("/small.txt");
        t.corrupt_at(
            "value size",
            "/small.txt",
            &["value 65535 bytes", "runs past the xattr area"],
            |b| {
                put_u16(b, e0 + 2, 0xFFFF);
            },
        );
        let mut b = t.bytes.clone();
        put_u8(&mut b, e0, 255);
        expect_err(
            "name length",
            b,
            Nature::Corrupt,
            &["name 255 bytes", "runs past the xattr area"],
        );
        // The area itself larger than the metadata around it (i_xattr_icount = max).
        let mut b = t.bytes.clone();
        put_u16(&mut b, t.loc("/small.txt") + 2, 0xFFFF);
        let e = check_bounded(fixed(b)).expect_err("xattr_icount 0xffff");
        assert!(e.is_corruption(), "{name}: {e}");
    }
}

#[test]
fn xattr_shared_count_and_ids() {
    let t = Target::new("xattrs-4k");
    let area = t.xattr_area("/small.txt");
    t.corrupt_at(
        "h_shared_count",
        "/small.txt",
        &["255 shared xattr ids do not fit the 76-byte xattr area"],
        |b| {
            put_u8(b, area + 4, 255);
        },
    );
    for id in [0x0100_0000u32, u32::MAX] {
        let mut b = t.bytes.clone();
        put_u32(&mut b, area + 12, id);
        let e = expect_err("shared id", b, Nature::Truncated, &["truncated image"]);
        assert_at(&e, "/small.txt");
    }
    // A shared id pointing at the middle of the area: garbage entry, but bounded.
    let mut b = t.bytes.clone();
    put_u32(&mut b, area + 12, get_u32(&t.bytes, area + 12) + 1);
    let _ = check_bounded(fixed(b));
}

#[test]
fn xattr_bad_name_index_and_filter() {
    let t = Target::new("xattrs-4k");
    let e0 = t.first_inline_xattr("/small.txt");
    let mut b = t.bytes.clone();
    put_u8(&mut b, e0 + 1, 0x80 | 5);
    expect_err(
        "long prefix past the table",
        b,
        Nature::Corrupt,
        &["long prefix 5, but the image has 2"],
    );
    let mut b = t.bytes.clone();
    put_u8(&mut b, e0 + 1, 9);
    expect_err("name index", b, Nature::Corrupt, &["unknown name index 9"]);
    // A filter bit set for a name the inode has: the kernel would not find it.
    let area = t.xattr_area("/small.txt");
    let mut b = t.bytes.clone();
    put_u32(&mut b, area, u32::MAX);
    expect_err("filter", b, Nature::Corrupt, &["xattr name filter hides"]);
}

/// Byte offset of the inline xattr entry of `path` whose name ends in `suffix`.
fn inline_xattr_named(t: &Target, path: &str, suffix: &[u8]) -> u64 {
    let ino = t.ino(path);
    let end = ino.location() + t.isize(path) + u64::from(ino.xattr_isize);
    let mut at = t.first_inline_xattr(path);
    while at + 4 <= end {
        let len = u64::from(t.bytes[at as usize]);
        let vlen = u64::from(get_u16(&t.bytes, at + 2));
        if &t.bytes[(at + 4) as usize..(at + 4 + len) as usize] == suffix {
            return at;
        }
        at += (4 + len + vlen).next_multiple_of(4);
    }
    panic!("no inline xattr ending in {suffix:?} on {path}");
}

/// Xattr names no system call takes (extraction failed on them, with EINVAL and
/// ERANGE): nothing after `user.`, and a full name longer than XATTR_NAME_MAX (255).
/// The entries are re-cut so that they keep their size (the name's bytes move to
/// the value, or the value's to the name). A seed of mkfs.erofs 1.5, without the name
/// filter that could catch such a name by chance.
#[test]
fn xattr_names_no_syscall_takes() {
    let t = Target::new("mkfs15-4k");
    // /small.txt's "user.inline-0" = "v0" → "user." = "inline-0v0"; /b511's
    // "user.pfx.beta" with its 300-byte value → a 252-byte suffix: 257 bytes in all.
    let cases = [
        (
            "empty suffix",
            "/small.txt",
            &b"inline-0"[..],
            "xattr name \"user.\" has nothing after its prefix",
            0,
            10,
        ),
        (
            "long name",
            "/b511",
            b"pfx.beta",
            "is 257 bytes long, more than 255",
            252,
            56,
        ),
    ];
    for (what, path, name, needle, name_len, value_len) in cases {
        let x = inline_xattr_named(&t, path, name);
        t.corrupt_at(what, path, &[needle], |b| {
            put_u8(b, x, name_len);
            put_u16(b, x + 2, value_len);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk-based files
// ---------------------------------------------------------------------------------------------

#[test]
fn chunk_entries_past_the_device() {
    // Block map entry (4 bytes) and chunk index (8 bytes: startblk_lo at +4).
    for (name, field) in [("chunkmap-4k", 0u64), ("chunkidx-512-extended", 4)] {
        let t = Target::new(name);
        let table = t.chunk_table("/big.bin");
        for (i, blk) in [(0u64, 0x00FF_FFFEu32), (1, 0xFFFF_FFFE)] {
            let unit = if field == 0 { 4 } else { 8 };
            let mut b = t.bytes.clone();
            put_u32(&mut b, table + i * unit + field, blk);
            let e = expect_err(
                &format!("{name}: chunk {i} at block {blk:#x}"),
                b,
                Nature::Truncated,
                &["truncated image"],
            );
            assert_at(&e, "/big.bin");
        }
    }
    // The chunk index array itself running past the end: a chunk-based file that
    // claims 2^62 bytes has 2^50 chunks of 4 KiB.
    let t = Target::new("chunkidx-512-extended");
    let mut b = t.bytes.clone();
    put_u64(&mut b, t.loc("/big.bin") + 8, 1 << 62);
    let e = expect_err("chunk array", b, Nature::Truncated, &["truncated image"]);
    assert_at(&e, "/big.bin");
    // Unknown chunk format bits.
    let mut b = t.bytes.clone();
    let loc = t.loc("/big.bin");
    put_u16(&mut b, loc + 16, get_u16(&t.bytes, loc + 16) | 0x80);
    expect_err(
        "chunk format",
        b,
        Nature::Unsupported,
        &["chunk format 0xa"],
    );
}

// ---------------------------------------------------------------------------------------------
// Inodes
// ---------------------------------------------------------------------------------------------

#[test]
fn absurd_sizes() {
    let big = 1u64 << 62;
    // Flat plain file (extended inode), flat inline file, chunk-based file, and
    // directories, claiming 2^62 bytes: an error after at most one image's worth of
    // reading, never a hang or a big allocation.
    let cases = [
        ("xattrs-512-extended", "/exact8k", DataLayout::FlatPlain),
        ("xattrs-512-extended", "/big.bin", DataLayout::FlatInline),
        ("chunkidx-512-extended", "/exact8k", DataLayout::ChunkBased),
        ("xattrs-512-extended", "/bigdir", DataLayout::FlatInline),
        ("chunkidx-512-extended", "/sub", DataLayout::FlatInline),
    ];
    for (name, path, layout) in cases {
        let t = Target::new(name);
        assert_eq!(t.ino(path).layout, layout, "{name}:{path}");
        let mut b = t.bytes.clone();
        put_u64(&mut b, t.loc(path) + 8, big);
        let started = Instant::now();
        let e = check_bounded(fixed(b)).expect_err("absurd size");
        assert!(e.is_corruption(), "{name}:{path}: {e}");
        assert_at(&e, path);
        assert!(started.elapsed() < Duration::from_secs(10), "{name}:{path}");
    }
    // Compact inodes: 4 GiB - 1.
    for (name, path) in [
        ("xattrs-4k", "/exact8k"),
        ("chunkmap-4k", "/big.bin"),
        ("mkfs15-4k", "/bigdir"),
    ] {
        let t = Target::new(name);
        let mut b = t.bytes.clone();
        put_u32(&mut b, t.loc(path) + 8, u32::MAX);
        let e = check_bounded(fixed(b)).expect_err("absurd size");
        assert!(e.is_corruption(), "{name}:{path}: {e}");
        assert_at(&e, path);
    }
    // i_size with bit 63 set.
    let t = Target::new("xattrs-512-extended");
    t.corrupt_at("negative", "/small.txt", &["negative i_size"], |b| {
        put_u64(b, t.loc("/small.txt") + 8, 1 << 63);
    });
    // A symlink of 2^62 bytes.
    let mut b = t.bytes.clone();
    put_u64(&mut b, t.loc("/link-short") + 8, big);
    expect_err(
        "symlink size",
        b,
        Nature::Corrupt,
        &["invalid symlink size 4611686018427387904"],
    );
    // An inline tail that would cross its metadata block.
    let t = Target::new("xattrs-4k");
    let mut b = t.bytes.clone();
    put_u32(&mut b, t.loc("/small.txt") + 8, 4000);
    expect_err(
        "inline crossing",
        b,
        Nature::Corrupt,
        &["inline data crosses a block boundary"],
    );
}

/// A 2^62-byte fully sparse file is valid, and checking it is quick.
#[test]
fn huge_sparse_file_is_fine() {
    let t = Target::new("xattrs-512-extended");
    let loc = t.loc("/exact8k");
    let mut b = t.bytes.clone();
    put_u64(&mut b, loc + 8, 1 << 62);
    put_u16(&mut b, loc + 6, 0xFFFF);
    put_u32(&mut b, loc + 16, u32::MAX);
    let started = Instant::now();
    let r = check_bounded(fixed(b.clone())).expect("a sparse file is valid");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.file_bytes, seeds_file_bytes() - 8192 + (1 << 62));
    let img = open("corrupt.img", fixed(b)).expect("opens");
    let ino = img.lookup_path(b"/exact8k").expect("lookup");
    let mut buf = [1u8; 100];
    assert_eq!(img.read_at(&ino, 1 << 61, &mut buf).expect("read"), 100);
    assert_eq!(buf, [0; 100]);
}

fn seeds_file_bytes() -> u64 {
    open_and_check(seed("xattrs-512-extended").bytes.clone())
        .expect("seed")
        .file_bytes
}

#[test]
fn bad_inode_format_and_mode() {
    for name in ["xattrs-4k", "xattrs-512-extended"] {
        let t = Target::new(name);
        let loc = t.loc("/small.txt");
        let fmt = get_u16(&t.bytes, loc);
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = t.bytes.clone();
            f(&mut b);
            b
        };
        for bit in [5u16, 8, 15] {
            let e = expect_err(
                "i_format bit",
                edit(&|b| put_u16(b, loc, fmt | (1 << bit))),
                Nature::Unsupported,
                &["has unknown bits"],
            );
            assert_at(&e, "/small.txt");
        }
        for layout in 5u16..=7 {
            let f = (fmt & !(I_DATALAYOUT_MASK << I_DATALAYOUT_BIT)) | (layout << I_DATALAYOUT_BIT);
            expect_err(
                "data layout",
                edit(&|b| put_u16(b, loc, f)),
                Nature::Unsupported,
                &[&format!("data layout {layout}")],
            );
        }
        // A compressed inode in an image without compression (as Linux 7.0+ says:
        // "invalid in a plain filesystem").
        for layout in [INODE_COMPRESSED_FULL, INODE_COMPRESSED_COMPACT] {
            let f = (fmt & !(I_DATALAYOUT_MASK << I_DATALAYOUT_BIT)) | (layout << I_DATALAYOUT_BIT);
            let e = expect_err(
                "compressed",
                edit(&|b| put_u16(b, loc, f)),
                Nature::Corrupt,
                &["compressed inode in an image without compression"],
            );
            assert_at(&e, "/small.txt");
        }
        for mode in [0o000644u16, 0o170644, 0o030644] {
            let e = expect_err(
                "i_mode",
                edit(&|b| put_u16(b, loc + 4, mode)),
                Nature::Corrupt,
                &[&format!("bogus i_mode {mode:#o}")],
            );
            assert_at(&e, "/small.txt");
        }
        // The root directory's own inode.
        let root = t.loc("/");
        expect_err(
            "root i_mode",
            edit(&|b| put_u16(b, root + 4, 0)),
            Nature::Corrupt,
            &["bogus i_mode 0o0"],
        );
        // A regular file with a directory's mode: the dirent type disagrees.
        expect_err(
            "file as dir",
            edit(&|b| put_u16(b, loc + 4, S_IFDIR | 0o755)),
            Nature::Corrupt,
            &["disagrees"],
        );
    }
}

#[test]
fn symlink_target_with_nul() {
    let t = Target::new("xattrs-4k");
    let at = t.data_at("/link-short", 2);
    t.corrupt_at("NUL in target", "/link-short", &["symlink target"], |b| {
        put_u8(b, at, 0);
    });
}

/// Reading a chunk-based file at the top of the 48-bit address space, past the first
/// block of a chunk: the byte offset must not overflow. Found by reading the code:
/// `Image::read_at` adds the position inside an extent to the extent's byte offset
/// unchecked, and for chunks nothing bounds that sum (flat extents are bounded by
/// `map`). The image is hand-made: 64 KiB blocks, a 48-bit chunk index pointing at
/// block 2^48 − 2 (2^64 − 2^17 bytes), 256 KiB chunks.
#[test]
fn chunk_offset_at_top_of_address_space() {
    let b = handmade_chunk_image((1 << 48) - 2);
    let img = open("corrupt.img", b.clone()).expect("opens");
    let ino = img.lookup_path(b"/f").expect("lookup");
    assert_eq!(ino.layout, DataLayout::ChunkBased);
    for pos in [0u64, 1 << 16, 1 << 17, (1 << 18) - 1] {
        let mut buf = [0u8; 16];
        let r = catch_unwind(AssertUnwindSafe(|| img.read_at(&ino, pos, &mut buf)));
        let r = r.unwrap_or_else(|_| panic!("read_at({pos}) panicked"));
        let e = r.expect_err("reading past the device");
        assert!(e.is_corruption(), "{e}");
    }
    check_bounded(fixed(b)).expect_err("check");
    // The same image with the chunks at block 1 (inside the image) reads.
    let b = handmade_chunk_image(1);
    let img = open("corrupt.img", b).expect("opens");
    let ino = img.lookup_path(b"/f").expect("lookup");
    let mut buf = [1u8; 16];
    assert_eq!(img.read_at(&ino, 100, &mut buf).expect("read"), 16);
}

/// A minimal image with 64 KiB blocks: root directory (compact, inline dirents
/// ".", "..", "f") and `/f`, an extended chunk-based inode of 1 MiB with 48-bit chunk
/// indexes and 256 KiB chunks, all pointing at block `blk`.
fn handmade_chunk_image(blk: u64) -> Vec<u8> {
    let bs = 1usize << 16;
    let mut b = vec![0u8; 2 * bs];
    put_u32(&mut b, sb(0), SUPER_MAGIC_V1);
    put_u8(&mut b, sb(0x0C), 16);
    put_u16(&mut b, sb(0x0E), 64); // root nid: byte 2048
    put_u64(&mut b, sb(0x10), 2);
    put_u32(&mut b, sb(0x24), 2);
    put_u32(
        &mut b,
        sb(0x50),
        FEATURE_INCOMPAT_CHUNKED_FILE | FEATURE_INCOMPAT_48BIT,
    );
    // Root: compact, flat inline, dirents right after the inode.
    let root = 2048u64;
    let names: [(&[u8], u64, u8); 3] = [
        (b".", 64, FT_DIR),
        (b"..", 64, FT_DIR),
        (b"f", 80, FT_REG_FILE),
    ];
    let mut dir = Vec::new();
    let mut nameoff = 12 * names.len();
    for (name, nid, ft) in names {
        dir.extend_from_slice(&nid.to_le_bytes());
        dir.extend_from_slice(&(nameoff as u16).to_le_bytes());
        dir.extend_from_slice(&[ft, 0]);
        nameoff += name.len();
    }
    for (name, _, _) in names {
        dir.extend_from_slice(name);
    }
    put_u16(&mut b, root, INODE_FLAT_INLINE << I_DATALAYOUT_BIT);
    put_u16(&mut b, root + 4, S_IFDIR | 0o755);
    put_u16(&mut b, root + 6, 2);
    put_u32(&mut b, root + 8, dir.len() as u32);
    b[root as usize + 32..root as usize + 32 + dir.len()].copy_from_slice(&dir);
    // /f: extended, chunk-based.
    let f = 80 * 32u64;
    put_u16(
        &mut b,
        f,
        INODE_LAYOUT_EXTENDED | (INODE_CHUNK_BASED << I_DATALAYOUT_BIT),
    );
    put_u16(&mut b, f + 4, S_IFREG | 0o644);
    put_u64(&mut b, f + 8, 1 << 20);
    put_u32(
        &mut b,
        f + 16,
        u32::from(CHUNK_FORMAT_48BIT | CHUNK_FORMAT_INDEXES | 2),
    );
    put_u32(&mut b, f + 44, 1);
    for i in 0..4u64 {
        let at = f + 64 + 8 * i;
        put_u16(&mut b, at, (blk >> 32) as u16);
        put_u32(&mut b, at + 4, blk as u32);
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Fingerprint verification
// ---------------------------------------------------------------------------------------------

/// With `verify_fingerprints`, a fingerprinted file that claims to be a 2^50-byte hole
/// must not make the check hash for hours: the data budget has to bound it too.
#[test]
fn fingerprint_of_huge_sparse_file_is_bounded() {
    let t = Target::new("xattrs-512-extended");
    assert!(
        t.img
            .fingerprint(&t.ino("/exact8k"))
            .expect("fingerprint")
            .is_some()
    );
    let loc = t.loc("/exact8k");
    let mut b = t.bytes.clone();
    put_u64(&mut b, loc + 8, 1 << 50);
    put_u16(&mut b, loc + 6, 0xFFFF);
    put_u32(&mut b, loc + 16, u32::MAX);
    let opts = CheckOptions {
        verify_fingerprints: true,
        ..check_opts(b.len())
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = open("corrupt.img", fixed(b)).and_then(|img| img.check(&opts));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        // Either outcome is acceptable (an error for the budget, or a mismatch), as
        // long as it comes quickly.
        Ok(r) => println!("verify of a 2^50-byte hole: {r:?}"),
        Err(_) => panic!(
            "check with verify_fingerprints of a fingerprinted 2^50-byte sparse file did not \
             finish within 10 s (the data budget does not bound hashing)"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Random mutation
// ---------------------------------------------------------------------------------------------

/// Total time of the mutation test.
const MUTATION_TIME: Duration = Duration::from_secs(20);
/// Iteration cap per seed.
const MUTATION_MAX_ITERS: u64 = 3000;
/// An iteration taking longer than this is a hang.
const HANG_TIMEOUT: Duration = Duration::from_secs(5);

/// Byte ranges (start, end) a check reads when it does not read file data: the
/// metadata, where mutations are interesting.
fn metadata_ranges(bytes: &[u8]) -> Vec<(u64, u64)> {
    let opts = CheckOptions {
        read_data: false,
        ..check_opts(bytes.len())
    };
    let mut r: Vec<(u64, u64)> = recorded_reads(bytes, &opts)
        .into_iter()
        .map(|(o, l)| (o, o + l))
        .collect();
    r.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in r {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// Applies mutation `seed` to a copy of `bytes`: 1–8 bytes, mostly inside the
/// metadata ranges, sometimes anywhere in the first 64 KiB; then fixes the checksum.
fn mutate(bytes: &[u8], ranges: &[(u64, u64)], seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut b = bytes.to_vec();
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let count = 1 + rng.below(8);
    for _ in 0..count {
        let at = if rng.below(10) == 0 {
            rng.below(b.len().min(64 << 10) as u64)
        } else {
            let mut k = rng.below(total);
            let mut at = 0;
            for (s, e) in ranges {
                if k < e - s {
                    at = s + k;
                    break;
                }
                k -= e - s;
            }
            at
        };
        let v = &mut b[at as usize];
        *v = match rng.below(6) {
            0 => *v ^ (1 << rng.below(8)),
            1 => 0,
            2 => 0xFF,
            3 => v.wrapping_add(1),
            4 => v.wrapping_sub(1),
            _ => rng.next_u64() as u8,
        };
    }
    fix_checksum(&mut b);
    b
}

#[test]
fn random_mutations() {
    let started = Instant::now();
    let seeds = seeds();
    let what = "a mutated check (reproduce with `mutate`: seed image, mutation seed)";
    let tally = watchdog(what, HANG_TIMEOUT, move |beat| {
        let mut tally = Tally::default();
        let per_seed = MUTATION_TIME / seeds.len() as u32;
        for (si, s) in seeds.iter().enumerate() {
            let ranges = metadata_ranges(&s.bytes);
            let t0 = Instant::now();
            let mut i = 0;
            while i < MUTATION_MAX_ITERS && t0.elapsed() < per_seed {
                let mseed = (si as u64) << 32 | i;
                beat(format!("({}, {mseed:#x})", s.name));
                let b = mutate(&s.bytes, &ranges, mseed);
                let r = catch_unwind(AssertUnwindSafe(|| check_measured(b.clone())));
                if let Ok((_, largest)) = &r {
                    tally.largest_alloc = tally.largest_alloc.max((*largest, b.len()));
                }
                match r.map(|(r, _)| r) {
                    Ok(Ok(_)) => tally.ok += 1,
                    Ok(Err(e)) => match nature(&e) {
                        Some(Nature::Corrupt | Nature::Truncated) => tally.corrupt += 1,
                        Some(Nature::Unsupported) => tally.unsupported += 1,
                        None => tally.other += 1,
                    },
                    Err(p) => {
                        let msg = panic_message(&*p);
                        let path = format!("/tmp/ishare-corrupt-{}-{mseed:#x}.img", s.name);
                        let _ = std::fs::write(&path, &b);
                        tally.panics.push(format!(
                            "seed image {} mutation {mseed:#x} (saved as {path}): {msg}",
                            s.name
                        ));
                    }
                }
                tally.iterations += 1;
                i += 1;
            }
        }
        tally
    });
    println!("{tally:?} in {:?}", started.elapsed());
    assert!(
        tally.panics.is_empty(),
        "{} mutated images made the reader panic:\n{}",
        tally.panics.len(),
        tally.panics.join("\n")
    );
    assert!(tally.corrupt > 0 && tally.ok > 0, "{tally:?}");
}

// ---------------------------------------------------------------------------------------------
// Metabox (metadata in the metabox inode's data)
// ---------------------------------------------------------------------------------------------

impl Target {
    /// The metabox inode of a metabox seed.
    fn metabox(&self) -> Inode {
        let nid = self.img.superblock().metabox_nid.expect("metabox seed");
        self.img.inode(nid).expect("metabox inode")
    }

    /// Where byte `loc` of the (plain) metabox inode's data lies in the image; `loc` may
    /// carry the metabox bit, as [`Inode::location`] returns it.
    fn in_metabox(&self, loc: u64) -> u64 {
        assert_ne!(loc >> 63, 0, "not a metabox location");
        let ext = self
            .img
            .map(&self.metabox(), loc & !(1 << 63))
            .expect("map");
        match ext.kind {
            ExtentKind::Mapped { offset, .. } | ExtentKind::Inline { offset } => {
                offset + (loc & !(1 << 63)) - ext.logical
            }
            k => panic!("metabox stored as {k:?}"),
        }
    }
}

#[test]
fn metabox_seeds_are_metabox_images() {
    for name in ["metabox-4k", "metabox-lz4"] {
        let t = Target::new(name);
        let sbi = t.img.superblock();
        assert!(sbi.has_incompat(FEATURE_INCOMPAT_METABOX), "{name}");
        assert_ne!(sbi.root_nid >> 63, 0, "{name}: root in the metabox");
        assert_ne!(t.ino("/small.txt").nid >> 63, 0, "{name}");
        assert_ne!(t.ino("/small.txt").location() >> 63, 0, "{name}");
    }
    let t = Target::new("metabox-lz4");
    assert!(t.metabox().layout.is_compressed(), "metabox compressed");
    let t = Target::new("metabox-4k");
    assert!(!t.metabox().layout.is_compressed());
    // The long prefix table lives in the metabox too (no plain-prefix flag).
    assert!(
        !t.img
            .superblock()
            .has_compat(FEATURE_COMPAT_PLAIN_XATTR_PFX)
    );
    assert_eq!(t.img.long_prefixes()[0].full_name(), b"user.pfx.");
}

#[test]
fn metabox_superblock_fields() {
    let t = Target::new("metabox-4k");
    let nid = t.img.superblock().metabox_nid.expect("metabox");
    // The metabox NID with the metabox bit (the kernel's self-loop check).
    let mut b = t.bytes.clone();
    put_u64(&mut b, sb(0x80), nid | 1 << 63);
    expect_err(
        "metabox nid in the metabox",
        b,
        Nature::Corrupt,
        &["metabox NID refers to the metabox itself"],
    );
    // The metabox inode past the end of the image.
    let mut b = t.bytes.clone();
    put_u64(&mut b, sb(0x80), 1 << 40);
    let e = expect_err(
        "metabox nid past the end",
        b,
        Nature::Truncated,
        &["truncated image", "(metabox inode)"],
    );
    assert_eq!(e.location().nid, Some(1 << 40));
    // No room in the superblock for metabox_nid.
    let mut b = t.bytes.clone();
    put_u8(&mut b, sb(0x0D), 0);
    expect_err(
        "sb_extslots 0",
        b,
        Nature::Corrupt,
        &["without room for metabox_nid"],
    );
    // The metabox feature cleared: the NIDs with bit 63 have no home.
    let mut b = t.bytes.clone();
    let v = get_u32(&b, sb(0x50));
    put_u32(&mut b, sb(0x50), v & !FEATURE_INCOMPAT_METABOX);
    put_u8(&mut b, sb(0x5B), 0); // the prefix table would be read elsewhere
    expect_err(
        "metabox feature cleared",
        b,
        Nature::Corrupt,
        &["no metabox inode"],
    );
    // A packed inode inside the metabox.
    let mut b = t.bytes.clone();
    let v = get_u32(&b, sb(0x50));
    put_u32(&mut b, sb(0x50), v | FEATURE_INCOMPAT_FRAGMENTS);
    put_u64(&mut b, sb(0x60), 1 << 63 | 2);
    expect_err(
        "packed inode in the metabox",
        b,
        Nature::Corrupt,
        &["packed inode NID points into the metabox"],
    );
}

#[test]
fn metabox_too_small_for_its_inodes() {
    let t = Target::new("metabox-4k");
    let mb = t.metabox();
    let size_at = mb.location() + 8; // i_size of a compact or extended inode
    let root = t.ino("/").location() & !(1 << 63);
    // The root inode lies past the end of the metabox data.
    let e = expect_err(
        "metabox i_size",
        {
            let mut b = t.bytes.clone();
            if mb.extended {
                put_u64(&mut b, size_at, root);
            } else {
                put_u32(&mut b, size_at, root as u32);
            }
            b
        },
        Nature::Corrupt,
        &["runs past the metabox inode"],
    );
    assert_eq!(e.location().nid, Some(t.img.superblock().root_nid));
    // A dirent NID far past the metabox data.
    let d = t.dirent_in_metabox("/", "small.txt");
    let mut b = t.bytes.clone();
    put_u64(&mut b, d, 1 << 63 | 1 << 40);
    let e = expect_err(
        "dirent nid past the metabox",
        b,
        Nature::Corrupt,
        &["runs past the metabox inode"],
    );
    assert_at(&e, "/small.txt");
    // A NID whose slot offset overflows into the metabox bit.
    let mut b = t.bytes.clone();
    put_u64(&mut b, d, u64::MAX);
    expect_err("dirent nid overflow", b, Nature::Corrupt, &["out of range"]);
}

#[test]
fn metabox_inode_fields() {
    let t = Target::new("metabox-4k");
    // A bad mode on an inode inside the metabox is found and located like any other.
    let small = t.in_metabox(t.loc("/small.txt"));
    t.corrupt_at(
        "mode in the metabox",
        "/small.txt",
        &["bogus i_mode"],
        |b| {
            let m = get_u16(b, small + 4);
            put_u16(b, small + 4, m & 0o7777);
        },
    );
    // An inline xattr entry running past its area, inside the metabox.
    let area = t.in_metabox(t.xattr_area("/small.txt"));
    let first = area + 12 + 4 * u64::from(t.bytes[area as usize + 4]);
    t.corrupt_at("xattr in the metabox", "/small.txt", &["xattr"], |b| {
        put_u16(b, first + 2, 0xFFFF)
    });
}

/// `--zD` (compressed directories, their data grouped in the packed inode): garbage
/// in the packed inode's pclusters is a corruption error, never a panic. (Not a seed:
/// the packed inode's metadata lies in the image's last block, which breaks the
/// truncation test's "last byte read" rule through the metadata cache.)
#[test]
fn compressed_directory_data() {
    let mut cmd = Command::new(mkfs_194());
    cmd.args(["-T0", "--quiet", "-zlz4hc", "--zD"]);
    let seeds = build_seeds(&reader_tree(), vec![("zdirs", cmd)]);
    let s = &seeds[0];
    let img = open(s.name, s.bytes.clone()).expect("opens");
    let dir = img.lookup_path(b"/bigdir").expect("bigdir");
    assert!(dir.layout.is_compressed(), "--zD directory");
    check_bounded(s.bytes.clone()).expect("the image checks");
    let packed = img
        .inode(img.superblock().packed_nid.expect("packed inode"))
        .expect("packed inode");
    let mut garbled = 0;
    let mut pos = 0;
    let mut b = s.bytes.clone();
    while pos < packed.size {
        let ext = img.map(&packed, pos).expect("map");
        if let ExtentKind::Compressed(p) = ext.kind
            && !p.inline
        {
            for i in 0..u64::from(p.len) {
                put_u8(&mut b, p.offset + i, (i * 37 % 251) as u8);
            }
            garbled += 1;
        }
        pos = ext.logical + ext.len;
    }
    assert!(garbled > 0, "the packed inode has pclusters");
    let e = check_bounded(b).expect_err("garbage directory data");
    assert!(e.is_corruption(), "{e}");
}

impl Target {
    /// Image offset of the dirent `name` of `dir`, a directory whose blocks are
    /// inline in the plain metabox (or mapped).
    fn dirent_in_metabox(&self, dir: &str, name: &str) -> u64 {
        let all = self.img.read_dir(&self.ino(dir)).expect("read_dir");
        let idx = all
            .iter()
            .position(|d| d.name == name.as_bytes())
            .expect("entry");
        // The root is small: one block, the inline tail after the inode.
        let ino = self.ino(dir);
        assert!(ino.size <= self.bs(), "{dir} fits one block");
        let start = self.data_at_any(dir, 0);
        start + 12 * idx as u64
    }

    /// Like `data_at`, following metabox locations.
    fn data_at_any(&self, path: &str, pos: u64) -> u64 {
        let at = self.data_at(path, pos);
        if at >> 63 != 0 {
            self.in_metabox(at)
        } else {
            at
        }
    }
}
