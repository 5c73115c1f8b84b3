//! Extended attributes: the inline area, shared xattrs, short and long name
//! prefixes, the name bloom filter, and the page-cache-share fingerprint.

use zerocopy::FromBytes;

use crate::error::{ErrorKind, Result};
use crate::format::*;
use crate::image::{Image, META_IN_METABOX};
use crate::inode::Inode;

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Short prefix index of the full name (after resolving a long prefix).
    pub base_index: u8,
    /// Long prefix number, if the entry used one.
    pub long_prefix: Option<u8>,
    /// Full name: short prefix, infix and suffix.
    pub name: Vec<u8>,
    /// The name without its short prefix (what the bloom filter hashes).
    pub name_after_prefix: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Stored in the shared xattr area.
    pub shared: bool,
}

impl Xattr {
    /// True when Linux shows this xattr to userspace (listxattr/getxattr).
    pub fn is_visible(&self) -> bool {
        matches!(
            self.base_index,
            XATTR_INDEX_USER
                | XATTR_INDEX_POSIX_ACL_ACCESS
                | XATTR_INDEX_POSIX_ACL_DEFAULT
                | XATTR_INDEX_TRUSTED
                | XATTR_INDEX_SECURITY
        )
    }
}

/// Bloom filter bit of an xattr name (without short prefix) under `base_index`.
pub fn xattr_filter_bit(name_after_prefix: &[u8], base_index: u8) -> u32 {
    let h = xxhash_rust::xxh32::xxh32(
        name_after_prefix,
        XATTR_FILTER_SEED.wrapping_add(u32::from(base_index)),
    );
    h & (XATTR_FILTER_BITS - 1)
}

/// Splits a full xattr name into the short prefix index and the rest, preferring
/// the longest matching prefix (the ACL names are whole-name prefixes).
pub fn split_xattr_name(name: &[u8]) -> (u8, &[u8]) {
    for idx in [
        XATTR_INDEX_POSIX_ACL_ACCESS,
        XATTR_INDEX_POSIX_ACL_DEFAULT,
        XATTR_INDEX_USER,
        XATTR_INDEX_TRUSTED,
        XATTR_INDEX_SECURITY,
    ] {
        let p = xattr_prefix(idx).expect("known index");
        if let Some(rest) = name.strip_prefix(p) {
            let whole = matches!(
                idx,
                XATTR_INDEX_POSIX_ACL_ACCESS | XATTR_INDEX_POSIX_ACL_DEFAULT
            );
            if !whole || rest.is_empty() {
                return (idx, rest);
            }
        }
    }
    (XATTR_INDEX_NONE, name)
}

impl Image {
    /// Every xattr of an inode, inline ones first, then shared ones, in on-disk order.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        self.read_xattrs(inode).map_err(|e| e.at_nid(inode.nid))
    }

    /// The value of xattr `name` (full name), using the bloom filter as the kernel does.
    pub fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Option<Vec<u8>>> {
        if inode.xattr_isize == 0 {
            return Ok(None);
        }
        let (index, rest) = split_xattr_name(name);
        if self.filter_active() {
            let mut hdr = [0u8; size_of::<XattrIbodyHeader>()];
            self.read_meta(&mut hdr, inode.loc + u64::from(inode.inode_isize))
                .map_err(|e| e.at_nid(inode.nid))?;
            let filter = u32::from_le_bytes(hdr[..4].try_into().expect("4 bytes"));
            if filter & (1 << xattr_filter_bit(rest, index)) != 0 {
                return Ok(None);
            }
        }
        Ok(self
            .xattrs(inode)?
            .into_iter()
            .find(|x| x.name == name)
            .map(|x| x.value))
    }

    /// The page-cache-share fingerprint value of an inode, if the image names a
    /// fingerprint xattr and the inode has it.
    pub fn fingerprint(&self, inode: &Inode) -> Result<Option<Vec<u8>>> {
        match self.fingerprint_prefix() {
            Some(p) => self.get_xattr(inode, &p.full_name()),
            None => Ok(None),
        }
    }

    /// The stored bloom filter of an inode, when the image uses filters.
    pub fn xattr_filter(&self, inode: &Inode) -> Result<Option<u32>> {
        if !self.filter_active() || inode.xattr_isize == 0 {
            return Ok(None);
        }
        let mut hdr = [0u8; 4];
        self.read_meta(&mut hdr, inode.loc + u64::from(inode.inode_isize))
            .map_err(|e| e.at_nid(inode.nid))?;
        Ok(Some(u32::from_le_bytes(hdr)))
    }

    fn filter_active(&self) -> bool {
        self.sb.has_compat(FEATURE_COMPAT_XATTR_FILTER) && self.sb.raw.xattr_filter_reserved == 0
    }

    fn read_xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let isize = inode.xattr_isize as usize;
        if isize == 0 {
            return Ok(Vec::new());
        }
        let hsize = size_of::<XattrIbodyHeader>();
        if isize == hsize {
            return Err(self.err(ErrorKind::Unsupported(format!(
                "xattr area of exactly {hsize} bytes"
            ))));
        }
        let area = self.read_meta_vec(inode.loc + u64::from(inode.inode_isize), isize)?;
        let hdr = XattrIbodyHeader::read_from_prefix(&area)
            .expect("header size")
            .0;
        let shared = usize::from(hdr.h_shared_count);
        let mut pos = hsize + 4 * shared;
        if pos > isize {
            return Err(self.corrupt(format!(
                "{shared} shared xattr ids do not fit the {isize}-byte xattr area"
            )));
        }
        let mut out = Vec::new();
        while pos < isize {
            let (x, len) = self
                .parse_entry(&area[pos..], false)
                .map_err(|e| e.at_nid(inode.nid))?;
            out.push(x);
            pos += len;
        }
        for i in 0..shared {
            let off = hsize + 4 * i;
            let id = u32::from_le_bytes(area[off..off + 4].try_into().expect("4 bytes"));
            out.push(self.shared_xattr(id)?);
        }
        Ok(out)
    }

    /// Reads shared xattr `id` (at `xattr_blkaddr * blksz + 4 * id`).
    fn shared_xattr(&self, id: u32) -> Result<Xattr> {
        // With SHARED_EA_IN_METABOX the same address is taken in the metabox data.
        let mbox = if self.sb.has_compat(FEATURE_COMPAT_SHARED_EA_IN_METABOX) {
            META_IN_METABOX
        } else {
            0
        };
        let pos = self
            .sb
            .xattr_blkaddr
            .checked_mul(u64::from(self.sb.block_size()))
            .and_then(|b| b.checked_add(u64::from(id) * 4))
            .filter(|p| p & META_IN_METABOX == 0)
            .ok_or_else(|| self.corrupt(format!("shared xattr {id} address overflows")))?
            | mbox;
        let mut head = [0u8; size_of::<XattrEntry>()];
        self.read_meta(&mut head, pos)?;
        let e = XattrEntry::read_from_bytes(&head).expect("entry size");
        let len =
            size_of::<XattrEntry>() + usize::from(e.e_name_len) + usize::from(e.e_value_size.get());
        let buf = self.read_meta_vec(pos, len)?;
        Ok(self.parse_entry(&buf, true)?.0)
    }

    /// Parses one entry at the start of `buf`; returns it and its padded size.
    fn parse_entry(&self, buf: &[u8], shared: bool) -> Result<(Xattr, usize)> {
        let e = XattrEntry::read_from_prefix(buf)
            .map_err(|_| {
                self.corrupt(format!(
                    "xattr entry header runs past the xattr area ({} bytes left)",
                    buf.len()
                ))
            })?
            .0;
        let (nlen, vlen) = (usize::from(e.e_name_len), usize::from(e.e_value_size.get()));
        let hs = size_of::<XattrEntry>();
        let padded = xattr_entry_size(e.e_name_len, e.e_value_size.get()) as usize;
        if hs + nlen + vlen > buf.len() || (!shared && padded > buf.len()) {
            return Err(self.corrupt(format!(
                "xattr entry (name {nlen} bytes, value {vlen} bytes) runs past the xattr area ({} bytes left)",
                buf.len()
            )));
        }
        let suffix = &buf[hs..hs + nlen];
        let value = buf[hs + nlen..hs + nlen + vlen].to_vec();
        let idx = e.e_name_index;
        let (base_index, long_prefix, infix): (u8, Option<u8>, &[u8]) =
            if idx & XATTR_LONG_PREFIX != 0 {
                let n = idx & XATTR_LONG_PREFIX_MASK;
                let p = self.prefixes.get(usize::from(n)).ok_or_else(|| {
                    self.corrupt(format!(
                        "xattr uses long prefix {n}, but the image has {}",
                        self.prefixes.len()
                    ))
                })?;
                (p.base_index, Some(n), &p.infix)
            } else {
                (idx, None, &[])
            };
        let prefix = xattr_prefix(base_index)
            .ok_or_else(|| self.corrupt(format!("xattr has unknown name index {base_index}")))?;
        let mut rest = infix.to_vec();
        rest.extend_from_slice(suffix);
        let mut name = prefix.to_vec();
        name.extend_from_slice(&rest);
        let x = Xattr {
            base_index,
            long_prefix,
            name,
            name_after_prefix: rest,
            value,
            shared,
        };
        Ok((x, padded))
    }
}
