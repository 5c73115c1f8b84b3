//! Byte-level reading and patching of EROFS images in memory, for tests that corrupt or
//! tweak images: little-endian fields at byte offsets, the superblock offset, and the
//! superblock checksum recomputed after an edit; and seed images built once from a
//! generated tree. Offsets out of range panic (a test bug).

use std::fs;
use std::process::Command;

use ishare_erofs::format::{FEATURE_COMPAT_SB_CHKSUM, SUPER_OFFSET};
use ishare_erofs::{Image, Inode, Result, superblock_checksum};

use crate::rng::Rng;

use crate::tools::run;
use crate::tree::TreeBuilder;

/// An image in memory.
#[derive(Debug)]
pub struct Seed {
    /// Short description, used in messages.
    pub name: &'static str,
    /// Image bytes.
    pub bytes: Vec<u8>,
}

/// Writes `tree` into a temporary directory under /tmp (removed again) and builds one seed
/// image per `(name, mkfs command)`; each command gets the image path and the tree's path
/// appended.
pub fn build_seeds(tree: &TreeBuilder, mkfs: Vec<(&'static str, Command)>) -> Vec<Seed> {
    let dir = tempfile::Builder::new()
        .prefix("ishare-seeds-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let src = dir.path().join("tree");
    fs::create_dir(&src).expect("mkdir tree");
    tree.write(&src, false);
    mkfs.into_iter()
        .map(|(name, mut cmd)| {
            let img = dir.path().join(format!("{name}.img"));
            run(cmd.arg(&img).arg(&src));
            Seed {
                name,
                bytes: fs::read(&img).expect("read image"),
            }
        })
        .collect()
}

/// The seed called `name`.
pub fn seed<'a>(seeds: &'a [Seed], name: &str) -> &'a Seed {
    seeds
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no seed {name}"))
}

/// Opens image bytes with the reader (no extra devices).
pub fn open(name: &str, bytes: Vec<u8>) -> Result<Image> {
    Image::from_source(name, Box::new(bytes), vec![])
}

fn at<const N: usize>(b: &[u8], at: u64) -> [u8; N] {
    let at = at as usize;
    b[at..at + N].try_into().expect("in range")
}

pub fn get_u16(b: &[u8], off: u64) -> u16 {
    u16::from_le_bytes(at(b, off))
}
pub fn get_u32(b: &[u8], off: u64) -> u32 {
    u32::from_le_bytes(at(b, off))
}
pub fn get_u64(b: &[u8], off: u64) -> u64 {
    u64::from_le_bytes(at(b, off))
}
pub fn put_u8(b: &mut [u8], off: u64, v: u8) {
    b[off as usize] = v;
}
pub fn put_u16(b: &mut [u8], off: u64, v: u16) {
    put(b, off, &v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], off: u64, v: u32) {
    put(b, off, &v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], off: u64, v: u64) {
    put(b, off, &v.to_le_bytes());
}
/// Overwrites `v.len()` bytes at `off`.
pub fn put(b: &mut [u8], off: u64, v: &[u8]) {
    let off = off as usize;
    b[off..off + v.len()].copy_from_slice(v);
}

/// Byte offset of superblock field `off` (offsets as in `format::SuperBlock`).
pub fn sb(off: u64) -> u64 {
    SUPER_OFFSET + off
}

/// Recomputes and stores the superblock checksum when the image has one (and the block
/// size field is still sane), so edits elsewhere are not rejected for it.
pub fn fix_checksum(b: &mut [u8]) {
    let bits = b[sb(0x0C) as usize];
    if get_u32(b, sb(0x08)) & FEATURE_COMPAT_SB_CHKSUM == 0 || !(9..=16).contains(&bits) {
        return;
    }
    if let Some(crc) = superblock_checksum(b, bits) {
        put_u32(b, sb(4), crc);
    }
}

/// A random read length: below 16, 5000, 70 000 or `max` bytes, each one time in four.
pub fn random_len(rng: &mut Rng, max: u64) -> usize {
    let bound = [16, 5000, 70_000, max][rng.below(4) as usize];
    rng.below(bound) as usize
}

/// `len` bytes at `pos` of `ino` by `Image::read_at`, which must succeed and return
/// exactly what of them lies before the end of the file; `what` names the file in
/// messages.
pub fn read_checked(img: &Image, ino: &Inode, pos: u64, len: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0xA5u8; len];
    let n = img
        .read_at(ino, pos, &mut buf)
        .unwrap_or_else(|e| panic!("{what}: read of {len} at {pos}: {e}"));
    let want = len.min(ino.size.saturating_sub(pos) as usize);
    assert_eq!(n, want, "{what}: read of {len} at {pos} returned {n}");
    buf.truncate(n);
    buf
}

/// Replaces the only occurrence of `from` in the file `image` with `to` (same length),
/// e.g. one fingerprint value by another.
pub fn replace_unique(image: &std::path::Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut data = fs::read(image).unwrap();
    let hits: Vec<usize> = data
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "bytes to replace found {} times", hits.len());
    data[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    fs::write(image, data).unwrap();
}
