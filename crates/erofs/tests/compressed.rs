//! Corrupted compressed images must give an error, never a panic, a hang or wrong data.
//!
//! Seed images are built with mkfs.erofs 1.9.4 from a small tree of compressible and
//! incompressible files, one per algorithm and cluster layout, all with fingerprints
//! (`--xattr-inode-digest`), so a check that verifies them catches every wrong byte a
//! decoder could return from damaged input. Then:
//!
//! * targeted damage (zeroed pclusters, absurd map headers and indexes) gives errors
//!   naming the inode and the problem;
//! * random byte flips inside pclusters and inside map headers and indexes (bounded in
//!   time, in a watchdog thread) give either an error or a check whose every fingerprint
//!   still matches, never a panic or a hang.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ishare_erofs::{
    Algorithm, CheckOptions, CheckReport, DataLayout, ErrorKind, ExtentKind, Image, Inode, Result,
};
use ishare_testkit::Rng;
use ishare_testkit::image::{self, Seed, build_seeds, fix_checksum, open};
use ishare_testkit::tools::mkfs_194;
use ishare_testkit::tree::{Scale, TreeBuilder, compressible};
use ishare_testkit::watchdog::{Tally, panic_message, watchdog};

/// The mkfs options of the seeds (all also get `--xattr-inode-digest`).
const SEED_SPECS: &[(&str, &[&str])] = &[
    ("lz4", &["-zlz4"]),
    ("lz4hc-ztail", &["-zlz4hc", "-Eztailpacking"]),
    ("lzma-c16", &["-zlzma", "-C16384"]),
    (
        "deflate-frag",
        &["-zdeflate", "-C16384", "-Efragments,dedupe"],
    ),
    ("zstd-c64", &["-zzstd", "-C65536", "-Eztailpacking"]),
    ("legacy-c16", &["-zlz4hc", "-C16384", "-Elegacy-compress"]),
    ("extents-48bit", &["-zlz4hc", "-E48bit"]),
    // Byte-aligned pclusters: 4-byte records after a start address, the tail
    // fragment in the last record; and 16-byte records (zstd and plain extents of
    // different lengths).
    ("extents-zstd-frag", &["-zzstd", "-E48bit,fragments"]),
    ("extents-zstd-c16", &["-zzstd", "-C16384", "-E48bit"]),
    ("allfrag-b1024", &["-b1024", "-zlz4", "-Eall-fragments"]),
];

/// The seed images, built once per test binary from the small compressible tree.
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut tree = TreeBuilder::new(0);
        compressible(&mut tree, "", 0xC0DE, Scale::Small);
        let mkfs = SEED_SPECS
            .iter()
            .map(|(name, args)| {
                let mut cmd = Command::new(mkfs_194());
                cmd.args(["--quiet", "-T0", "--xattr-inode-digest"])
                    .args(*args);
                (*name, cmd)
            })
            .collect();
        build_seeds(&tree, mkfs)
    })
}

fn seed(name: &str) -> &'static Seed {
    image::seed(seeds(), name)
}

fn opts() -> CheckOptions {
    CheckOptions {
        read_data: true,
        verify_fingerprints: true,
        data_budget: None,
    }
}

fn check(bytes: Vec<u8>) -> Result<CheckReport> {
    open("corrupt.img", bytes)?.check(&opts())
}

/// Every regular file of an image.
fn files(img: &Image) -> Vec<(String, Inode)> {
    let mut out = Vec::new();
    let root = img.root().unwrap();
    for e in img.read_dir(&root).unwrap() {
        if e.is_dot_or_dotdot() {
            continue;
        }
        let ino = img.inode(e.nid).unwrap();
        if ino.file_type == ishare_erofs::FileType::Regular {
            out.push((String::from_utf8(e.name).unwrap(), ino));
        }
    }
    out
}

/// Byte ranges of the pclusters (compressed or not) of every file.
fn pcluster_ranges(img: &Image) -> Vec<(u64, u64)> {
    let mut r = Vec::new();
    for (_, ino) in files(img) {
        let mut pos = 0;
        while pos < ino.size {
            let e = img.map_raw(&ino, pos).unwrap();
            if let ExtentKind::Compressed(p) = e.kind {
                r.push((p.offset, p.offset + u64::from(p.len)));
            }
            pos = e.logical + e.len;
        }
    }
    r.sort_unstable();
    r.dedup();
    r
}

/// Byte ranges of the map headers and indexes of the compressed files: from the end of
/// the inode (with its xattrs) over 8 bytes per block of data, plus header and padding.
fn index_ranges(img: &Image) -> Vec<(u64, u64)> {
    let bs = u64::from(img.superblock().block_size());
    files(img)
        .into_iter()
        .filter(|(_, ino)| ino.layout.is_compressed())
        .map(|(_, ino)| {
            let isize = if ino.extended { 64 } else { 32 };
            let start = ino.location() + isize + u64::from(ino.xattr_isize);
            let len = 16 + 8 * ino.size.div_ceil(bs).min(64);
            (start.next_multiple_of(8), start.next_multiple_of(8) + len)
        })
        .collect()
}

#[test]
fn seeds_check_and_cover_the_layouts() {
    for s in seeds() {
        let r = check(s.bytes.clone()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert!(r.fingerprints_verified >= 9, "{}: {r:?}", s.name);
        let img = open(s.name, s.bytes.clone()).unwrap();
        let layouts: Vec<DataLayout> = files(&img).iter().map(|(_, i)| i.layout).collect();
        // Whole-file fragments have full-layout inodes with no indexes.
        let want = if ["legacy", "extents", "allfrag"]
            .iter()
            .any(|p| s.name.starts_with(p))
        {
            DataLayout::CompressedFull
        } else {
            DataLayout::CompressedCompact
        };
        assert!(layouts.contains(&want), "{}: {layouts:?}", s.name);
    }
    let img = open("x", seed("lzma-c16").bytes.clone()).unwrap();
    let algs = img.superblock().compression.algorithm_list();
    assert_eq!(algs, vec![Algorithm::Lzma]);
    assert!(!pcluster_ranges(&img).is_empty());
}

/// Reading whole files extent by extent (`map` + `read_extent`, the way `ishare
/// extract` does) gives the bytes `read_at` gives in small pieces (which go through
/// the decoded-extent cache and its recycled buffers); so do parts of extents. An
/// extent made up with an absurd pcluster is an error, not a huge allocation.
#[test]
fn read_extent_matches_read_at() {
    for s in seeds() {
        let img = open(s.name, s.bytes.clone()).unwrap();
        let mut compressed = 0;
        for (name, ino) in files(&img) {
            let mut whole = Vec::new();
            let mut pos = 0;
            while pos < ino.size {
                let e = img.map(&ino, pos).unwrap();
                assert_eq!(e.logical, pos, "{}: {name}", s.name);
                compressed += usize::from(matches!(e.kind, ExtentKind::Compressed(_)));
                let mut buf = vec![0xAAu8; e.len as usize];
                img.read_extent(&ino, &e, 0, &mut buf).unwrap();
                // The second half of the extent on its own.
                let half = e.len / 2;
                let mut tail = vec![0x55u8; (e.len - half) as usize];
                img.read_extent(&ino, &e, half, &mut tail).unwrap();
                assert!(tail == buf[half as usize..], "{}: {name} at {pos}", s.name);
                whole.extend_from_slice(&buf);
                pos += e.len;
            }
            let mut pieces = vec![0u8; ino.size as usize];
            for (i, chunk) in pieces.chunks_mut(777).enumerate() {
                let got = img.read_at(&ino, i as u64 * 777, chunk).unwrap();
                assert_eq!(got, chunk.len());
            }
            assert!(
                whole == pieces,
                "{}: {name}: read_extent and read_at differ",
                s.name
            );
        }
        if !s.name.starts_with("allfrag") {
            assert!(compressed > 0, "{}: no compressed extent", s.name);
        }
        // A made-up extent: a 2 GiB pcluster, never read or allocated.
        let (_, ino) = files(&img).into_iter().find(|(_, i)| i.size > 0).unwrap();
        let e = img.map(&ino, 0).unwrap();
        let bogus = ishare_erofs::Extent {
            kind: ExtentKind::Compressed(ishare_erofs::Pcluster {
                offset: 0,
                len: u32::MAX / 2,
                inline: false,
                algorithm: Algorithm::Lz4,
                partial: false,
            }),
            ..e
        };
        let mut buf = vec![0u8; e.len as usize];
        let err = img.read_extent(&ino, &bogus, 0, &mut buf).unwrap_err();
        assert!(err.is_corruption(), "{}: {err}", s.name);
    }
}

/// A pcluster of zeros: no compressed data start.
#[test]
fn zeroed_pcluster() {
    for s in seeds().iter().filter(|s| !s.name.starts_with("allfrag")) {
        let img = open(s.name, s.bytes.clone()).unwrap();
        let Some(&(a, b)) = pcluster_ranges(&img).iter().find(|(a, b)| {
            // A compressed (not plain) pcluster.
            files(&img).iter().any(|(_, ino)| {
                let mut pos = 0;
                while pos < ino.size {
                    let e = img.map_raw(ino, pos).unwrap();
                    if let ExtentKind::Compressed(p) = e.kind
                        && p.offset == *a
                        && p.offset + u64::from(p.len) == *b
                        && p.algorithm != Algorithm::Plain
                        && p.algorithm != Algorithm::Interlaced
                    {
                        return true;
                    }
                    pos = e.logical + e.len;
                }
                false
            })
        }) else {
            panic!("{}: no compressed pcluster", s.name)
        };
        let mut bytes = s.bytes.clone();
        bytes[a as usize..b as usize].fill(0);
        fix_checksum(&mut bytes);
        let e = check(bytes).expect_err("zeroed pcluster");
        let msg = e.to_string();
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt(_)),
            "{}: {msg}",
            s.name
        );
        assert!(
            msg.contains("compressed data start not found") && msg.contains("nid "),
            "{}: {msg}",
            s.name
        );
    }
}

/// A named edit of image bytes.
type Edit<'a> = (&'a str, &'a dyn Fn(&mut Vec<u8>));

/// Absurd map headers: lcluster sizes, inline tail sizes and algorithms.
#[test]
fn absurd_map_headers() {
    for name in ["lz4hc-ztail", "legacy-c16", "lzma-c16"] {
        let s = seed(name);
        let img = open(name, s.bytes.clone()).unwrap();
        let (path, ino) = files(&img)
            .into_iter()
            .find(|(_, i)| i.layout.is_compressed() && i.size > 50_000)
            .expect("a big compressed file");
        let isize = if ino.extended { 64 } else { 32 };
        let h = (ino.location() + isize + u64::from(ino.xattr_isize)).next_multiple_of(8) as usize;
        let edits: [Edit; 4] = [
            ("lcluster bits", &|b| b[h + 7] = 15),
            ("algorithm", &|b| b[h + 6] = 0x0E),
            ("inline size", &|b| {
                b[h + 4] |= 0x08;
                b[h + 2] = 0xFF;
                b[h + 3] = 0xFF;
            }),
            ("big pclusters", &|b| b[h + 4] ^= 0x06),
        ];
        for (what, edit) in edits {
            let mut bytes = s.bytes.clone();
            edit(&mut bytes);
            fix_checksum(&mut bytes);
            match check(bytes) {
                Err(e) => {
                    assert!(
                        e.is_corruption() || matches!(e.kind(), ErrorKind::Unsupported(_)),
                        "{name} {what}: {e}"
                    );
                    assert!(e.to_string().contains("nid "), "{name} {what}: {e}");
                }
                // Some edits change nothing that matters (e.g. a flag the layout
                // ignores); the fingerprints then still match.
                Ok(r) => assert!(r.fingerprints_verified >= 9, "{name} {what} {path}"),
            }
        }
    }
}

/// Huge block counts and addresses in full indexes are refused before any read.
#[test]
fn absurd_full_indexes() {
    let s = seed("legacy-c16");
    let img = open("x", s.bytes.clone()).unwrap();
    let (_, ino) = files(&img)
        .into_iter()
        .find(|(_, i)| i.layout == DataLayout::CompressedFull && i.size > 50_000)
        .expect("a big compressed file");
    let isize = if ino.extended { 64 } else { 32 };
    let first = (ino.location() + isize + u64::from(ino.xattr_isize)).next_multiple_of(8) + 16;
    // lcluster 0 is the first head: its block address far past the image.
    let mut b = s.bytes.clone();
    b[first as usize + 4..first as usize + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let e = check(b).expect_err("address past the image");
    assert!(e.is_corruption(), "{e}");
    // lcluster 1: a CBLKCNT of 2047 blocks (8 MiB of 4 KiB blocks: more than 1 MiB).
    let mut b = s.bytes.clone();
    let at = first as usize + 8;
    b[at..at + 2].copy_from_slice(&2u16.to_le_bytes()); // NONHEAD
    b[at + 4..at + 6].copy_from_slice(&(0x800u16 | 0x7FF).to_le_bytes());
    match check(b) {
        Err(e) => assert!(e.is_corruption(), "{e}"),
        Ok(r) => panic!("CBLKCNT 2047 accepted: {r:?}"),
    }
}

/// A named edit that owns what it needs.
type OwnedEdit = (&'static str, Box<dyn Fn(&mut Vec<u8>)>);

/// Files of an image whose map is extent records: (path, inode, map header offset,
/// record size).
fn extent_files(img: &Image, bytes: &[u8]) -> Vec<(String, Inode, usize, usize)> {
    files(img)
        .into_iter()
        .filter(|(_, i)| i.layout == DataLayout::CompressedFull)
        .filter_map(|(name, ino)| {
            let isize = if ino.extended { 64 } else { 32 };
            let h =
                (ino.location() + isize + u64::from(ino.xattr_isize)).next_multiple_of(8) as usize;
            let advise = u16::from_le_bytes([bytes[h + 4], bytes[h + 5]]);
            // Bit 7 of byte 7: a whole-file fragment, no records.
            (advise & 1 != 0 && bytes[h + 7] & 0x80 == 0)
                .then(|| (name, ino, h, 4usize << ((advise >> 1) & 3)))
        })
        .collect()
}

/// Damaged extent records (48-bit layout): each gives an error naming the inode,
/// never a panic, a hang or a huge read.
#[test]
fn absurd_extent_records() {
    let mut sizes = Vec::new();
    for name in ["extents-48bit", "extents-zstd-frag", "extents-zstd-c16"] {
        let s = seed(name);
        let img = open(name, s.bytes.clone()).unwrap();
        let list = extent_files(&img, &s.bytes);
        // Records: counted in the header, or one per lcluster.
        let records = |&(_, ref i, h, recsz): &(String, Inode, usize, usize)| {
            if recsz >= 16 {
                u64::from(u32::from_le_bytes(s.bytes[h..h + 4].try_into().unwrap()))
            } else {
                i.size >> (12 + u32::from(s.bytes[h + 7] & 15))
            }
        };
        let (path, ino, h, recsz) = list
            .into_iter()
            .filter(|f| records(f) >= 3)
            .max_by_key(|(_, i, ..)| i.size)
            .unwrap_or_else(|| panic!("{name}: no file with several extent records"));
        sizes.push(recsz);
        // The first record (after the start address of 4-byte records).
        let r = (h + 8).next_multiple_of(recsz) + if recsz == 4 { 8 } else { 0 };
        let set32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let plen = u32::from_le_bytes(s.bytes[r..r + 4].try_into().unwrap());
        let mut edits: Vec<OwnedEdit> = vec![
            // An encoded length of 2 MiB - 1: more than a pcluster may hold.
            (
                "huge length",
                Box::new(move |b| set32(b, r, plen | 0x1F_FFFF)),
            ),
            // Format 15: no such algorithm.
            (
                "unknown format",
                Box::new(move |b| set32(b, r, plen | 0xF000_0000)),
            ),
        ];
        if recsz == 4 {
            edits.push((
                "start past the image",
                Box::new(move |b| b[r - 8..r].copy_from_slice(&(1u64 << 44).to_le_bytes())),
            ));
            edits.push(("lcluster bits", Box::new(move |b| b[h + 7] = 0x0F)));
        } else {
            edits.push((
                "start past the image",
                Box::new(move |b| set32(b, r + 4, 0xFFFF_F000)),
            ));
        }
        if recsz >= 16 {
            // The second record starts before the first: out of order.
            edits.push((
                "records out of order",
                Box::new(move |b| {
                    set32(b, r + 12, 60_000);
                    set32(b, r + recsz + 12, 1);
                }),
            ));
            edits.push(("absurd count", Box::new(move |b| set32(b, h, u32::MAX))));
        }
        for (what, edit) in &edits {
            let mut bytes = s.bytes.clone();
            edit(&mut bytes);
            fix_checksum(&mut bytes);
            let e = check(bytes).expect_err(&format!("{name} {path} {what}: accepted"));
            assert!(
                e.is_corruption() || matches!(e.kind(), ErrorKind::Unsupported(_)),
                "{name} {what}: {e}"
            );
            assert!(e.to_string().contains("nid "), "{name} {what}: {e}");
        }
        // The same file, undamaged, reads back through the records.
        let mut buf = vec![0u8; ino.size as usize];
        assert_eq!(img.read_at(&ino, 0, &mut buf).unwrap(), buf.len());
    }
    sizes.sort_unstable();
    assert!(
        sizes.contains(&4) && sizes.contains(&16),
        "record sizes {sizes:?}"
    );
}

const FLIP_TIME: Duration = Duration::from_secs(16);
const HANG_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn random_flips_in_pclusters_and_indexes() {
    let started = Instant::now();
    let seeds = seeds();
    let t = watchdog("a check of a flipped image", HANG_TIMEOUT, move |beat| {
        let mut t = Tally::default();
        let per_seed = FLIP_TIME / seeds.len() as u32;
        for (si, s) in seeds.iter().enumerate() {
            let img = open(s.name, s.bytes.clone()).unwrap();
            let base = img.check(&opts()).unwrap().fingerprints_verified;
            let lists: Vec<Vec<(u64, u64)>> = [pcluster_ranges(&img), index_ranges(&img)]
                .into_iter()
                .map(|l| l.into_iter().filter(|(a, b)| b > a).collect::<Vec<_>>())
                .filter(|l| !l.is_empty())
                .collect();
            let t0 = Instant::now();
            let mut i = 0u64;
            while t0.elapsed() < per_seed && i < 2000 {
                let mut rng = Rng::new(((si as u64) << 32 | i) + 1);
                let ranges = &lists[rng.below(lists.len() as u64) as usize];
                let (a, b) = ranges[rng.below(ranges.len() as u64) as usize];
                let mut bytes = s.bytes.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = (a + rng.below(b - a)) as usize;
                    if at < bytes.len() {
                        bytes[at] ^= 1 + rng.below(255) as u8;
                    }
                }
                fix_checksum(&mut bytes);
                beat(format!("{} flip {i}", s.name));
                match catch_unwind(AssertUnwindSafe(|| check(bytes))) {
                    Ok(Ok(r)) if r.fingerprints_verified == base => t.ok += 1,
                    Ok(Ok(r)) => t.wrong.push(format!("{} flip {i}: {r:?}", s.name)),
                    Ok(Err(e)) if e.is_corruption() => t.corrupt += 1,
                    Ok(Err(e)) if matches!(e.kind(), ErrorKind::Unsupported(_)) => {
                        t.unsupported += 1
                    }
                    Ok(Err(e)) => t.wrong.push(format!("{} flip {i}: odd error {e}", s.name)),
                    Err(p) => {
                        let msg = panic_message(&*p);
                        t.panics.push(format!("{} flip {i}: {msg}", s.name));
                    }
                }
                t.iterations += 1;
                i += 1;
            }
        }
        t
    });
    println!("{t:?} in {:?}", started.elapsed());
    assert!(t.panics.is_empty(), "panics:\n{}", t.panics.join("\n"));
    assert!(
        t.wrong.is_empty(),
        "wrong data or odd errors:\n{}",
        t.wrong.join("\n")
    );
    assert!(t.corrupt > t.iterations / 2, "{t:?}");
}
