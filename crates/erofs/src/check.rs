//! A full consistency check on the image walk ([`Image::walk`], directory by
//! directory): every reachable inode (times included: nanoseconds below 10^9),
//! directory listing (names in order, "." and ".." naming the directory and its
//! parent: [`Image::check_listing`], applied by the walk), directory entry (its type
//! against the inode's), xattr (names setxattr takes) and data extent, with
//! directory cycles refused and, optionally, fingerprints verified. The aim is that
//! an image it passes is one the mount and extraction do not stumble on. It backs
//! `ishare fsck`, the corruption tests and the fuzz target.

use sha2::{Digest, Sha256};

use crate::data::ExtentKind;
use crate::error::{ErrorKind, Result};
use crate::format::{
    XATTR_INDEX_SECURITY, XATTR_INDEX_TRUSTED, XATTR_INDEX_USER, XATTR_NAME_MAX, xattr_prefix,
};
use crate::image::Image;
use crate::inode::{FileType, Inode};
use crate::walk::{Reached, WalkOrder, WalkStep};

/// What [`Image::check`] does.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Read the bytes of every mapped extent (not only check that they exist).
    pub read_data: bool,
    /// Recompute the SHA-256 of every regular file that has a `sha256:`
    /// fingerprint and report a mismatch as corruption.
    pub verify_fingerprints: bool,
    /// Stop reading data after this many bytes in total (mapping goes on), so a
    /// hostile image cannot make the walk read without end; `None` = no limit.
    pub data_budget: Option<u64>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            read_data: true,
            verify_fingerprints: false,
            data_budget: None,
        }
    }
}

/// Counts from a successful walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Distinct inodes reached, the root included.
    pub inodes: u64,
    /// Directories.
    pub directories: u64,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular file data (logical sizes).
    pub file_bytes: u64,
    /// Fingerprints recomputed and found equal.
    pub fingerprints_verified: u64,
    /// Regular non-empty files without a fingerprint, in an image that has them.
    pub fingerprints_missing: u64,
    /// Fingerprints left unverified because the data budget ran out.
    pub fingerprints_unverified: u64,
}

impl Image {
    /// Walks the whole image; the first problem found is returned as an error that
    /// names the path.
    pub fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let mut budget = opts.data_budget.unwrap_or(u64::MAX);
        let root = self.root().map_err(|e| e.at_path("/"))?;
        if !root.is_dir() {
            return Err(self.corrupt("root inode is not a directory").at_path("/"));
        }
        report.inodes = 1;
        self.check_inode(&root).map_err(|e| e.at_path("/"))?;
        let mut buf = vec![0u8; 1 << 16];
        for step in self.walk(root, WalkOrder::DirectoryByDirectory) {
            let e = match step? {
                WalkStep::Enter(dir) => {
                    report.directories += 1;
                    // Directory data counts against the budget too (after it was
                    // read, so a bad size is reported as such): many directory inodes
                    // can share one large directory's blocks.
                    if opts.data_budget.is_some() {
                        if budget < dir.inode.size {
                            return Err(self
                                .err(ErrorKind::Unsupported(
                                    "check budget exhausted by directory data".into(),
                                ))
                                .at_path(String::from_utf8_lossy(&dir.path)));
                        }
                        budget -= dir.inode.size;
                    }
                    continue;
                }
                WalkStep::Entry(e) => e,
                WalkStep::Leave(_) => continue, // not in this order
            };
            let ino = &e.inode;
            if e.entry_type != 0 && e.entry_type != ino.file_type.dirent_type() {
                return Err(self
                    .corrupt(format!(
                        "directory entry type {} disagrees with the inode's {}",
                        e.entry_type,
                        ino.file_type.name()
                    ))
                    .at_path(e.path_str()));
            }
            if let Some(err) = e.cycle_error() {
                return Err(err);
            }
            if e.reached != Reached::First {
                continue; // another name of a hard-linked file
            }
            report.inodes += 1;
            let child = e.path_str();
            self.check_inode(ino)
                .map_err(|er| er.at_path(child.clone()))?;
            if ino.file_type == FileType::Regular {
                self.check_data(ino, opts, &mut report, &mut budget, &mut buf)
                    .map_err(|er| er.at_path(child))?;
            }
        }
        Ok(report)
    }

    fn check_inode(&self, ino: &Inode) -> Result<()> {
        let xattrs = self.xattrs(ino)?;
        // Names the kernel lists but no system call takes, so extraction (and `cp -a`
        // from a mount) fails on them: setxattr refuses a name longer than
        // XATTR_NAME_MAX (ERANGE) and a bare `user.`, `trusted.` or `security.`
        // (EINVAL). The kernel's EROFS does not check either.
        for x in xattrs.iter().filter(|x| x.is_visible()) {
            let shown = String::from_utf8_lossy(&x.name);
            if x.name.len() > XATTR_NAME_MAX {
                return Err(self
                    .corrupt(format!(
                        "xattr name {shown:?} is {} bytes long, more than {XATTR_NAME_MAX}",
                        x.name.len()
                    ))
                    .at_nid(ino.nid));
            }
            let prefixed = matches!(
                x.base_index,
                XATTR_INDEX_USER | XATTR_INDEX_TRUSTED | XATTR_INDEX_SECURITY
            );
            if prefixed && Some(x.name.as_slice()) == xattr_prefix(x.base_index) {
                return Err(self
                    .corrupt(format!("xattr name {shown:?} has nothing after its prefix"))
                    .at_nid(ino.nid));
            }
        }
        // Every stored name must pass the bloom filter, or the kernel would miss it.
        // Empty entries without a prefix are padding (mkfs.erofs --root-xattr-isize
        // reserves room with zeros): no name looks them up.
        if let Some(filter) = self.xattr_filter(ino)? {
            for x in xattrs
                .iter()
                .filter(|x| !(x.base_index == 0 && x.name.is_empty()))
            {
                let bit = crate::xattr::xattr_filter_bit(&x.name_after_prefix, x.base_index);
                if filter & (1 << bit) != 0 {
                    return Err(self
                        .corrupt(format!(
                            "xattr name filter hides {}",
                            String::from_utf8_lossy(&x.name)
                        ))
                        .at_nid(ino.nid));
                }
            }
        }
        if ino.file_type == FileType::Symlink {
            self.read_link(ino)?;
        }
        Ok(())
    }

    fn check_data(
        &self,
        ino: &Inode,
        opts: &CheckOptions,
        r: &mut CheckReport,
        budget: &mut u64,
        buf: &mut [u8],
    ) -> Result<()> {
        r.files += 1;
        r.file_bytes = r.file_bytes.saturating_add(ino.size);
        let fp = if opts.verify_fingerprints && ino.size > 0 && self.fingerprint_prefix().is_some()
        {
            match self.fingerprint(ino)? {
                Some(v) => {
                    let digest = v
                        .strip_prefix(b"sha256:")
                        .filter(|d| d.len() == 32)
                        .ok_or_else(|| {
                            self.corrupt("fingerprint is not sha256: followed by 32 bytes")
                                .at_nid(ino.nid)
                        })?;
                    Some((digest.to_vec(), Sha256::new()))
                }
                None => {
                    r.fingerprints_missing += 1;
                    None
                }
            }
        } else {
            None
        };
        let mut hasher = fp;
        let mut pos = 0;
        while pos < ino.size {
            let ext = self.map(ino, pos)?;
            if ext.len == 0 || ext.logical > pos {
                return Err(self
                    .corrupt(format!("mapping at {pos} makes no progress"))
                    .at_nid(ino.nid));
            }
            let end = ext.logical + ext.len;
            // Hashing reads holes too; past the budget, give up on this fingerprint
            // rather than read without end.
            if hasher.is_some() && end - pos > *budget {
                hasher = None;
                r.fingerprints_unverified += 1;
            }
            let read = (opts.read_data && end - pos <= *budget) || hasher.is_some();
            match ext.kind {
                ExtentKind::Hole if hasher.is_none() => pos = end,
                ExtentKind::Mapped { device, offset } if !read => {
                    self.device_file(device, offset + (pos - ext.logical), end - pos)?;
                    pos = end;
                }
                // Without reading, a pcluster must at least lie inside the image
                // (fragments are checked when the packed inode is read).
                ExtentKind::Compressed(p) if !read => {
                    if p.inline {
                        self.check_range(p.offset, u64::from(p.len))
                            .map_err(|e| e.at_nid(ino.nid))?;
                    } else {
                        self.device_file(0, p.offset, u64::from(p.len))?;
                    }
                    pos = end;
                }
                ExtentKind::Fragment { .. } if !read => pos = end,
                _ => {
                    while pos < end {
                        let n = ((end - pos) as usize).min(buf.len());
                        let got = self.read_at(ino, pos, &mut buf[..n])?;
                        if got == 0 {
                            return Err(self
                                .err(ErrorKind::Corrupt("short read".into()))
                                .at_nid(ino.nid));
                        }
                        if let Some((_, h)) = hasher.as_mut() {
                            h.update(&buf[..got]);
                        }
                        *budget = budget.saturating_sub(got as u64);
                        pos += got as u64;
                    }
                }
            }
        }
        if let Some((want, h)) = hasher {
            if h.finalize().as_slice() != want.as_slice() {
                return Err(self
                    .corrupt("content does not match its sha256 fingerprint")
                    .at_nid(ino.nid));
            }
            r.fingerprints_verified += 1;
        }
        Ok(())
    }
}
