//! Directories: block-by-block iteration in on-disk order, name lookup by binary
//! search over blocks and then entries, as the kernel does, and the rules a whole
//! listing must follow ([`Image::check_listing`]).
//!
//! Each block is validated as it is read (name bounds, no `/` or NUL), as the kernel's
//! readdir does. What spans the listing — names in strictly increasing order, one "."
//! naming the directory itself, one ".." naming its parent — the kernel never checks:
//! it trusts the order in its lookups and lets the VFS answer "." and "..". Readers
//! that list or walk (the FUSE mount, extraction, the check) do depend on them, so
//! [`Image::walk`] applies [`Image::check_listing`] to every directory it lists.

use std::cmp::Ordering;

use zerocopy::FromBytes;

use crate::error::{ErrorKind, Result};
use crate::format::*;
use crate::image::Image;
use crate::inode::{FileType, Inode};

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name bytes (no NUL, no `/`).
    pub name: Vec<u8>,
    /// Target NID.
    pub nid: u64,
    /// Entry type (`FT_*`).
    pub file_type: u8,
}

impl DirEntry {
    /// True for the "." and ".." entries.
    pub fn is_dot_or_dotdot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }
}

/// The parsed entries of one directory block.
struct DirBlock {
    data: Vec<u8>,
    /// (nid, name start, name end, type) per entry.
    entries: Vec<(u64, usize, usize, u8)>,
}

impl DirBlock {
    fn name(&self, i: usize) -> &[u8] {
        let (_, s, e, _) = self.entries[i];
        &self.data[s..e]
    }
    fn entry(&self, i: usize) -> DirEntry {
        let (nid, _, _, t) = self.entries[i];
        DirEntry {
            name: self.name(i).to_vec(),
            nid,
            file_type: t,
        }
    }
}

impl Image {
    fn check_dir(&self, dir: &Inode) -> Result<()> {
        if dir.file_type != FileType::Directory {
            return Err(self.err(ErrorKind::NotADirectory).at_nid(dir.nid));
        }
        Ok(())
    }

    fn dir_blocks(&self, dir: &Inode) -> u64 {
        dir.size.div_ceil(u64::from(self.sb.block_size()))
    }

    /// Reads and validates directory block `index`.
    fn dir_block(&self, dir: &Inode, index: u64) -> Result<DirBlock> {
        let bs = u64::from(self.sb.block_size());
        let start = index * bs;
        let maxsize = (dir.size - start).min(bs) as usize;
        let mut data = vec![0u8; maxsize];
        self.read_at(dir, start, &mut data)?;
        let bad = |msg: String| {
            self.corrupt(format!("directory block {index}: {msg}"))
                .at_nid(dir.nid)
        };
        if maxsize < size_of::<Dirent>() {
            return Err(bad(format!("only {maxsize} bytes")));
        }
        let de0 = Dirent::read_from_prefix(&data).expect("dirent size").0;
        let nameoff0 = usize::from(de0.nameoff.get());
        if nameoff0 == 0 || nameoff0 >= maxsize || nameoff0 % size_of::<Dirent>() != 0 {
            return Err(bad(format!("invalid first name offset {nameoff0}")));
        }
        let count = nameoff0 / size_of::<Dirent>();
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let off = i * size_of::<Dirent>();
            let de = Dirent::read_from_prefix(&data[off..])
                .expect("dirent size")
                .0;
            let nameoff = usize::from(de.nameoff.get());
            let end = if i + 1 < count {
                let next = Dirent::read_from_prefix(&data[off + size_of::<Dirent>()..])
                    .expect("dirent size")
                    .0;
                usize::from(next.nameoff.get())
            } else {
                // The last name runs to the end of the valid data or the first NUL.
                let tail = data
                    .get(nameoff..)
                    .ok_or_else(|| bad(format!("name offset {nameoff} past the block")))?;
                nameoff + tail.iter().position(|&b| b == 0).unwrap_or(tail.len())
            };
            if end <= nameoff || end - nameoff > NAME_LEN || end > maxsize || nameoff < nameoff0 {
                return Err(bad(format!(
                    "entry {i} has invalid name bounds {nameoff}..{end}"
                )));
            }
            let name = &data[nameoff..end];
            if name.contains(&b'/') || name.contains(&0) {
                return Err(bad(format!(
                    "entry {i} name {:?} contains '/' or NUL",
                    String::from_utf8_lossy(name)
                )));
            }
            entries.push((de.nid.get(), nameoff, end, de.file_type));
        }
        Ok(DirBlock { data, entries })
    }

    /// All entries of a directory, in on-disk order ("." and ".." included).
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.for_each_entry(dir, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` for each entry in on-disk order, one block in memory at a time.
    pub fn for_each_entry(
        &self,
        dir: &Inode,
        mut f: impl FnMut(DirEntry) -> Result<()>,
    ) -> Result<()> {
        self.check_dir(dir)?;
        for b in 0..self.dir_blocks(dir) {
            let blk = self.dir_block(dir, b)?;
            for i in 0..blk.entries.len() {
                f(blk.entry(i))?;
            }
        }
        Ok(())
    }

    /// Checks the rules of a whole listing `entries` of directory `dir` (as
    /// [`read_dir`](Self::read_dir) returns it), which `fsck.erofs` checks too and the
    /// kernel does not:
    ///
    /// * names strictly increasing, across blocks too: lookups (the kernel's and
    ///   ours) are binary searches, so a name out of order is listed by `ls` but not
    ///   found by `stat`, and a duplicate name is reached by one path only;
    /// * exactly one "." (none when the inode says it is omitted), naming `dir`;
    /// * exactly one "..", naming `parent` when it is known (the root's names the
    ///   root). The kernel resolves ".." from its dentry cache, but readdir hands the
    ///   stored NID out, and the FUSE mount reads it for `ls -l`; a second ".." (a
    ///   name that tools skip) would hide a whole subtree from a walk;
    /// * "." and ".." typed as directories (or unknown, as other entries may be).
    pub fn check_listing(
        &self,
        dir: &Inode,
        entries: &[DirEntry],
        parent: Option<u64>,
    ) -> Result<()> {
        let bad = |msg: String| self.corrupt(msg).at_nid(dir.nid);
        let (mut dot, mut dotdot) = (false, false);
        let mut prev: Option<&[u8]> = None;
        for e in entries {
            let shown = String::from_utf8_lossy(&e.name);
            if e.is_dot_or_dotdot() {
                if e.file_type != FT_UNKNOWN && e.file_type != FT_DIR {
                    return Err(bad(format!(
                        "{shown:?} entry has type {}, not a directory",
                        e.file_type
                    )));
                }
                if e.name == b"." {
                    if dir.dot_omitted {
                        return Err(bad(format!(
                            "\".\" entry (nid {}) in a directory whose \".\" is omitted",
                            e.nid
                        )));
                    }
                    if dot {
                        return Err(bad(format!("second \".\" entry (nid {})", e.nid)));
                    }
                    if e.nid != dir.nid {
                        return Err(bad(format!(
                            "\".\" entry refers to nid {}, not the directory itself",
                            e.nid
                        )));
                    }
                    dot = true;
                } else {
                    if dotdot {
                        return Err(bad(format!("second \"..\" entry (nid {})", e.nid)));
                    }
                    if let Some(p) = parent.filter(|&p| p != e.nid) {
                        return Err(bad(format!(
                            "\"..\" entry refers to nid {}, not the parent directory (nid {p})",
                            e.nid
                        )));
                    }
                    dotdot = true;
                }
            }
            if let Some(p) = prev
                && cmp_name(p, &e.name) != Ordering::Less
            {
                return Err(bad(format!(
                    "names out of order: {shown:?} after {:?}",
                    String::from_utf8_lossy(p)
                )));
            }
            prev = Some(&e.name);
        }
        if !dot && !dir.dot_omitted {
            return Err(bad("no \".\" entry".into()));
        }
        if !dotdot {
            return Err(bad("no \"..\" entry".into()));
        }
        Ok(())
    }

    /// Looks up `name` in a directory by binary search.
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        self.check_dir(dir)?;
        let (mut lo, mut hi) = (0u64, self.dir_blocks(dir));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let blk = self.dir_block(dir, mid)?;
            let n = blk.entries.len();
            match cmp_name(name, blk.name(0)) {
                Ordering::Less => hi = mid,
                Ordering::Equal => return Ok(Some(blk.entry(0))),
                Ordering::Greater => match cmp_name(name, blk.name(n - 1)) {
                    Ordering::Greater => lo = mid + 1,
                    Ordering::Equal => return Ok(Some(blk.entry(n - 1))),
                    Ordering::Less => {
                        // Inside this block.
                        let (mut l, mut h) = (1, n - 1);
                        while l < h {
                            let m = l + (h - l) / 2;
                            match cmp_name(name, blk.name(m)) {
                                Ordering::Less => h = m,
                                Ordering::Equal => return Ok(Some(blk.entry(m))),
                                Ordering::Greater => l = m + 1,
                            }
                        }
                        return Ok(None);
                    }
                },
            }
        }
        Ok(None)
    }

    /// Resolves an absolute or root-relative path (symlinks are not followed).
    pub fn lookup_path(&self, path: &[u8]) -> Result<Inode> {
        let mut cur = self.root()?;
        for comp in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            let shown = || String::from_utf8_lossy(path).into_owned();
            if !cur.is_dir() {
                return Err(self.err(ErrorKind::NotADirectory).at_path(shown()));
            }
            let e = self
                .lookup(&cur, comp)?
                .ok_or_else(|| self.err(ErrorKind::NotFound).at_path(shown()))?;
            cur = self.inode(e.nid).map_err(|e| e.at_path(shown()))?;
        }
        Ok(cur)
    }
}

/// EROFS name order: bytewise, then shorter first.
fn cmp_name(a: &[u8], b: &[u8]) -> Ordering {
    a.cmp(b)
}
