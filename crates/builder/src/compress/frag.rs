//! The packed inode (`-E fragments`, `-E all-fragments`): one file whose data is the
//! long xattr prefix table followed by the tail fragments of compressed files, and
//! that is then compressed like any file (mkfs.erofs's `packed_file`).
//!
//! After all files are compressed, the merge walks them in node order (so the
//! result does not depend on the workers):
//!
//! - a pcluster whose encoded bytes (and size, kind and algorithm) equal an earlier
//!   one's is not written again, its extent points at the earlier blocks (what
//!   mkfs.erofs's multithreaded compressor does when fragments are on);
//! - a fragment that is the end of an earlier one (found by a hash of its last 64
//!   bytes, then compared) points into it; shorter ones must equal an earlier one;
//!   otherwise it is appended.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::config::Compression;
use super::extent::{At, Frag, ZFile};
use super::spill::Spill;
use crate::error::{Error, Result};
use crate::tree::Source;
use crate::tree::Tree;

/// Fragments shorter than this are found by their whole content.
const TAIL_HASH_LEN: u64 = 64;
/// Compare and copy buffer.
const CHUNK: u64 = 1 << 20;

/// The packed inode's data, in a temporary file next to the image.
pub(crate) struct Packed {
    pub file: tempfile::NamedTempFile,
    pub len: u64,
    /// Fragments of 64 bytes and more: (hash of their last 64 bytes) → (end, length).
    by_tail: HashMap<u64, Vec<(u64, u64)>>,
    /// Shorter fragments by content.
    small: HashMap<Vec<u8>, u64>,
}

impl Packed {
    /// An empty packed inode (for `--zD` without `-E fragments`).
    pub(crate) fn empty(dir: &Path) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(".ishare-packed.")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, "create a temporary file in", e))?;
        Ok(Self {
            file,
            len: 0,
            by_tail: HashMap::new(),
            small: HashMap::new(),
        })
    }

    /// Reserves `len` bytes at the end (zeros until [`Packed::put`] fills them);
    /// returns their offset.
    pub(crate) fn reserve(&mut self, len: u64) -> Result<u64> {
        let at = self.len;
        self.len += len;
        self.file
            .as_file()
            .set_len(self.len)
            .map_err(|e| Error::io(self.file.path(), "resize", e))?;
        Ok(at)
    }

    /// Writes `data` at `off`, inside what was reserved.
    pub(crate) fn put(&self, data: &[u8], off: u64) -> Result<()> {
        debug_assert!(off + data.len() as u64 <= self.len);
        self.file
            .as_file()
            .write_all_at(data, off)
            .map_err(|e| Error::io(self.file.path(), "write", e))
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .as_file()
            .write_all_at(data, self.len)
            .map_err(|e| Error::io(self.file.path(), "write", e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .as_file()
            .read_exact_at(buf, off)
            .map_err(|e| Error::io(self.file.path(), "read", e))
    }
}

/// Reads a fragment's bytes wherever they are before the merge.
struct FragData<'a> {
    spill: &'a Spill,
    at: Option<u64>,
    source: Option<Source<'a>>,
    size: u64,
}

impl<'a> FragData<'a> {
    fn new(tree: &'a Tree, node: usize, f: &Frag, spill: &'a Spill) -> Result<Self> {
        let source = match f.spill {
            Some(_) => None,
            None => Some(Source::open(tree, node)?),
        };
        Ok(Self {
            spill,
            at: f.spill,
            source,
            size: tree.nodes[node].size,
        })
    }

    /// `buf.len()` bytes from byte `pos` of the fragment (which starts at `lstart`).
    fn read(&self, buf: &mut [u8], pos: u64, lstart: u64) -> Result<()> {
        match (&self.source, self.at) {
            (Some(s), _) => s.read_exact_at(buf, lstart + pos, self.size),
            (None, Some(at)) => self.spill.read(buf, at + pos),
            (None, None) => unreachable!("a fragment is in the spill file or its source"),
        }
    }
}

/// Places every fragment in the packed inode and shares identical pclusters; returns
/// the packed inode's data (`None` when it is empty). `prefix_table` goes first when
/// fragments are on (mkfs.erofs keeps the table in the packed inode then).
pub(crate) fn merge(
    tree: &Tree,
    zfiles: &mut [Option<ZFile>],
    cfg: &Compression,
    spill: &Spill,
    prefix_table: &[u8],
    dir: &Path,
) -> Result<Option<Packed>> {
    if !cfg.fragments {
        return Ok(None);
    }
    let file = tempfile::Builder::new()
        .prefix(".ishare-packed.")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "create a temporary file in", e))?;
    let mut pk = Packed {
        file,
        len: 0,
        by_tail: HashMap::new(),
        small: HashMap::new(),
    };
    pk.write(prefix_table)?;
    let share_pclusters = !cfg.dedupe;
    // (hash, bytes, compressed, algorithm) → (node, first byte in it, spill offset)
    type Key = (u64, u32, bool, usize);
    let mut seen: HashMap<Key, Vec<(usize, u64, u64)>> = HashMap::new();
    let mut a = Vec::new();
    let mut b = Vec::new();
    // Where each node's fragment ends in the packed inode, once placed.
    let mut frag_end: Vec<Option<u64>> = vec![None; zfiles.len()];
    for (node, slot) in zfiles.iter_mut().enumerate() {
        let Some(z) = slot.as_mut() else { continue };
        if share_pclusters && z.inline.is_none() {
            let mut own = 0u64;
            for e in z.extents.iter_mut() {
                let At::Own { spill: at, hash } = e.at else {
                    continue;
                };
                let key = (
                    hash,
                    e.plen,
                    e.compressed,
                    if e.compressed { z.algorithm } else { 0 },
                );
                let n = u64::from(e.plen);
                let cands = seen.entry(key).or_default();
                let mut hit = None;
                for &(other, blk, sp) in cands.iter() {
                    a.resize(n as usize, 0);
                    b.resize(n as usize, 0);
                    spill.read(&mut a, at)?;
                    spill.read(&mut b, sp)?;
                    if a == b {
                        hit = Some((other, blk));
                        break;
                    }
                }
                match hit {
                    Some((other, blk)) => {
                        e.at = At::Shared {
                            node: other,
                            pos: blk,
                        };
                        z.dedupe = true;
                    }
                    None => {
                        cands.push((node, own, at));
                        own += u64::from(e.plen);
                    }
                }
            }
        }
        if let Some(f) = z.frag.as_mut() {
            // Its end may have been matched with an earlier fragment's before
            // compressing.
            let matched = f
                .suffix_of
                .and_then(|o| frag_end.get(o).copied().flatten())
                .and_then(|end| end.checked_sub(f.len));
            f.offset = match matched {
                Some(off) => off,
                None => {
                    // `-E fragdedupe`: which fragments may share earlier bytes.
                    let size = tree.nodes[node].size;
                    let share = cfg.fragdedupe.keep(f.len, size) > 0;
                    place(&mut pk, tree, node, f, spill, share)?
                }
            };
            frag_end[node] = Some(f.offset + f.len);
        }
    }
    if pk.len == 0 {
        return Ok(None);
    }
    Ok(Some(pk))
}

/// Where fragment `f` of `node` goes in the packed inode: inside an equal earlier
/// one, or appended.
fn place(
    pk: &mut Packed,
    tree: &Tree,
    node: usize,
    f: &Frag,
    spill: &Spill,
    share: bool,
) -> Result<u64> {
    let d = FragData::new(tree, node, f, spill)?;
    let len = f.len;
    let tl = len.min(TAIL_HASH_LEN);
    let mut last = vec![0u8; tl as usize];
    d.read(&mut last, len - tl, f.lstart)?;
    let h = xxhash_rust::xxh3::xxh3_64(&last);
    if share && len < TAIL_HASH_LEN {
        if let Some(&off) = pk.small.get(&last) {
            return Ok(off);
        }
    } else if share && let Some(cands) = pk.by_tail.get(&h) {
        for &(end, clen) in cands {
            if clen >= len && same(pk, &d, f, end - len)? {
                return Ok(end - len);
            }
        }
    }
    let off = pk.len;
    let mut buf = vec![0u8; len.min(CHUNK) as usize];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(CHUNK) as usize;
        d.read(&mut buf[..n], pos, f.lstart)?;
        pk.write(&buf[..n])?;
        pos += n as u64;
    }
    if len < TAIL_HASH_LEN {
        pk.small.insert(last, off);
    } else {
        pk.by_tail.entry(h).or_default().push((off + len, len));
    }
    Ok(off)
}

/// Whether the packed data at `at` equals fragment `f`.
fn same(pk: &Packed, d: &FragData<'_>, f: &Frag, at: u64) -> Result<bool> {
    let mut x = vec![0u8; f.len.min(CHUNK) as usize];
    let mut y = x.clone();
    let mut pos = 0;
    while pos < f.len {
        let n = (f.len - pos).min(CHUNK) as usize;
        d.read(&mut x[..n], pos, f.lstart)?;
        pk.read(&mut y[..n], at + pos)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

impl Packed {
    /// The tree node standing for the packed inode (as mkfs.erofs writes it: a
    /// regular file, mode 0644, owned by root, one link, the build time), whose data
    /// is read from the temporary file.
    pub(crate) fn node(&self, build_time: u64) -> crate::tree::Node {
        crate::tree::Node {
            origin: crate::tree::Origin::File(self.path().to_path_buf()),
            kind: crate::tree::Kind::File,
            mode: ishare_erofs::format::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            mtime: i64::try_from(build_time).unwrap_or(i64::MAX),
            mtime_nsec: 0,
            nlink: 1,
            size: self.len,
            rdev: 0,
            xattrs: Vec::new(),
            archive_offset: None,
        }
    }
}
