//! Extended attributes: the long name prefix table, the choice of shared xattrs,
//! each inode's inline xattr area and its name bloom filter.

use std::collections::HashMap;

use ishare_erofs::format::{
    XATTR_FILTER_DEFAULT, XATTR_LONG_PREFIX, XattrEntry, XattrIbodyHeader, xattr_entry_size,
    xattr_prefix,
};
use ishare_erofs::{split_xattr_name, xattr_filter_bit};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use crate::error::{Error, Result};
use crate::options::BuildOptions;
use crate::tree::{Kind, Tree};

/// Most long prefixes an `e_name_index` can address (7 bits).
const MAX_LONG_PREFIXES: usize = 128;
/// Most shared xattr ids an inode header can count.
const MAX_SHARED_PER_INODE: usize = u8::MAX as usize;
/// Value size of a fingerprint: `sha256:` and 32 raw digest bytes.
pub(crate) const FINGERPRINT_LEN: usize = 7 + 32;
/// Largest inline xattr area `i_xattr_icount` can describe.
const MAX_XATTR_ISIZE: usize = size_of::<XattrIbodyHeader>() + 4 * (u16::MAX as usize - 1);

/// The long prefix table (`--xattr-prefix` entries, then the fingerprint name).
#[derive(Debug)]
pub(crate) struct Prefixes {
    /// (short prefix index, infix), in table order.
    pub table: Vec<(u8, Vec<u8>)>,
    /// Table index of the fingerprint xattr name.
    pub fingerprint: Option<u8>,
}

impl Prefixes {
    pub(crate) fn new(opts: &BuildOptions) -> Result<Self> {
        let mut table: Vec<(u8, Vec<u8>)> = Vec::new();
        let split = |p: &[u8]| {
            let (base, infix) = split_xattr_name(p);
            (base, infix.to_vec())
        };
        for p in &opts.xattr_prefixes {
            let e = split(p);
            if !table.contains(&e) {
                table.push(e);
            }
        }
        let fingerprint = match &opts.fingerprint {
            None => None,
            Some(name) => {
                let e = split(name);
                let id = match table.iter().position(|t| *t == e) {
                    Some(i) => i,
                    None => {
                        table.push(e);
                        table.len() - 1
                    }
                };
                Some(id as u8)
            }
        };
        if table.len() > MAX_LONG_PREFIXES {
            return Err(Error::InvalidOption(format!(
                "{} long xattr prefixes given, at most {MAX_LONG_PREFIXES} fit",
                table.len()
            )));
        }
        Ok(Self { table, fingerprint })
    }

    /// The full name of the fingerprint xattr.
    fn fingerprint_name(&self) -> Option<Vec<u8>> {
        self.fingerprint.map(|id| {
            let (base, infix) = &self.table[usize::from(id)];
            let mut n = xattr_prefix(*base).unwrap_or_default().to_vec();
            n.extend_from_slice(infix);
            n
        })
    }

    /// Encodes a full name: (`e_name_index`, offset of the stored suffix in `name`,
    /// short prefix index, length of the short prefix).
    fn encode(&self, name: &[u8]) -> (u8, usize, u8, usize) {
        let (base, rest) = split_xattr_name(name);
        let plen = name.len() - rest.len();
        for (i, (b, infix)) in self.table.iter().enumerate() {
            if *b == base && rest.starts_with(infix) {
                return (XATTR_LONG_PREFIX | i as u8, plen + infix.len(), base, plen);
            }
        }
        (base, plen, base, plen)
    }

    /// The plain on-disk table: `{u16 len; u8 base_index; infix}` records padded to 4.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (base, infix) in &self.table {
            let len = 1 + infix.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.push(*base);
            out.extend_from_slice(infix);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }
}

/// One stored xattr entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name_index: u8,
    pub suffix: Vec<u8>,
    /// `None` for the fingerprint, whose value is known only after hashing.
    pub value: Option<Vec<u8>>,
}

impl Entry {
    fn value_len(&self) -> usize {
        self.value.as_ref().map_or(FINGERPRINT_LEN, Vec::len)
    }

    fn size(&self) -> usize {
        xattr_entry_size(self.suffix.len() as u8, self.value_len() as u16) as usize
    }

    /// Appends the padded entry; `fingerprint` fills a `None` value.
    pub(crate) fn write(&self, out: &mut Vec<u8>, fingerprint: &[u8]) {
        let value = self.value.as_deref().unwrap_or(fingerprint);
        let start = out.len();
        let e = XattrEntry {
            e_name_len: self.suffix.len() as u8,
            e_name_index: self.name_index,
            e_value_size: U16::new(value.len() as u16),
        };
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(&self.suffix);
        out.extend_from_slice(value);
        out.resize(start + self.size(), 0);
    }
}

/// An inode's inline xattr area, before serialization.
#[derive(Debug, Default)]
pub(crate) struct Body {
    pub shared: Vec<u32>,
    pub inline: Vec<Entry>,
    /// `h_name_filter` (0 when filters are off).
    pub filter: u32,
    /// The area's size in bytes (0 = no xattrs).
    pub size: u32,
}

impl Body {
    /// `i_xattr_icount`.
    pub(crate) fn icount(&self) -> u16 {
        if self.size == 0 {
            0
        } else {
            ((self.size as usize - size_of::<XattrIbodyHeader>()) / 4 + 1) as u16
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>, fingerprint: &[u8]) {
        if self.size == 0 {
            return;
        }
        let start = out.len();
        let h = XattrIbodyHeader {
            h_name_filter: U32::new(self.filter),
            h_shared_count: self.shared.len() as u8,
            h_reserved2: [0; 7],
        };
        out.extend_from_slice(h.as_bytes());
        for id in &self.shared {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for e in &self.inline {
            e.write(out, fingerprint);
        }
        // Reserved room (`--root-xattr-isize`) is zeros.
        debug_assert!(out.len() - start <= self.size as usize);
        out.resize(start + self.size as usize, 0);
    }
}

/// Every inode's xattr area plus the shared xattr area.
#[derive(Debug)]
pub(crate) struct Plan {
    pub bodies: Vec<Body>,
    /// Serialized shared entries, placed at byte `shared_start` of the image.
    pub shared_area: Vec<u8>,
    /// True when some inode stores a nonzero name filter.
    pub any_filter: bool,
}

/// Chooses shared xattrs and lays out each inode's area. The shared area starts at
/// byte `shared_start` (4-aligned), which fixes the shared ids.
pub(crate) fn plan(
    tree: &mut Tree,
    prefixes: &Prefixes,
    opts: &BuildOptions,
    shared_start: u64,
) -> Result<Plan> {
    let fp_name = prefixes.fingerprint_name();
    // A source xattr named like the fingerprint would be a second value for it.
    if let Some(fp) = &fp_name {
        for n in tree.nodes.iter_mut() {
            if matches!(n.kind, Kind::File) {
                n.xattrs.retain(|(name, _)| name != fp);
            }
        }
    }
    for (i, n) in tree.nodes.iter().enumerate() {
        for (name, value) in &n.xattrs {
            let (_, at, _, _) = prefixes.encode(name);
            if name.len() - at > usize::from(u8::MAX) || value.len() > usize::from(u16::MAX) {
                return Err(Error::Unrepresentable {
                    path: tree.path(i),
                    what: format!(
                        "xattr {} is too large ({} bytes of value)",
                        String::from_utf8_lossy(name),
                        value.len()
                    ),
                });
            }
        }
    }

    // Shared xattrs: those carried by more than `tolerance` inodes, in name order.
    let mut counts: HashMap<(&[u8], &[u8]), u64> = HashMap::new();
    for n in &tree.nodes {
        for (name, value) in &n.xattrs {
            *counts.entry((name, value)).or_default() += 1;
        }
    }
    let tolerance = u64::try_from(opts.xattr_tolerance).unwrap_or(u64::MAX);
    let mut shared: Vec<(&[u8], &[u8])> = counts
        .into_iter()
        .filter(|&(_, c)| c > tolerance)
        .map(|(k, _)| k)
        .collect();
    shared.sort_unstable();
    let mut shared_area = Vec::new();
    let mut ids: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
    for &(name, value) in &shared {
        let id = (shared_start + shared_area.len() as u64) / 4;
        let id = u32::try_from(id)
            .map_err(|_| Error::TooLarge("the shared xattr area is too large".into()))?;
        ids.insert((name, value), id);
        entry(prefixes, name, Some(value)).write(&mut shared_area, &[]);
    }

    let mut bodies = Vec::with_capacity(tree.nodes.len());
    let mut any_filter = false;
    for (i, n) in tree.nodes.iter().enumerate() {
        let fingerprint = fp_name.is_some() && matches!(n.kind, Kind::File) && n.size > 0;
        if n.xattrs.is_empty() && !fingerprint {
            bodies.push(Body::default());
            continue;
        }
        // Canonical order: by name, shared ids first, then inline entries.
        let mut items: Vec<(&[u8], Option<&[u8]>)> = n
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        if fingerprint {
            items.push((fp_name.as_deref().unwrap_or_default(), None));
            items.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        let mut body = Body::default();
        let mut bits = 0u32;
        for (name, value) in items {
            let (_, _, base, plen) = prefixes.encode(name);
            bits |= 1 << xattr_filter_bit(&name[plen..], base);
            let id = value.and_then(|v| ids.get(&(name, v)));
            match id {
                Some(&id) if body.shared.len() < MAX_SHARED_PER_INODE => body.shared.push(id),
                _ => match value {
                    Some(v) => body.inline.push(entry(prefixes, name, Some(v))),
                    None => body.inline.push(Entry {
                        name_index: XATTR_LONG_PREFIX
                            | prefixes.fingerprint.expect("fingerprint prefix"),
                        suffix: Vec::new(),
                        value: None,
                    }),
                },
            }
        }
        let size = size_of::<XattrIbodyHeader>()
            + 4 * body.shared.len()
            + body.inline.iter().map(Entry::size).sum::<usize>();
        if size > MAX_XATTR_ISIZE {
            return Err(Error::Unrepresentable {
                path: tree.path(i),
                what: format!("xattrs take {size} bytes, an inode holds at most {MAX_XATTR_ISIZE}"),
            });
        }
        body.size = size as u32;
        if opts.xattr_name_filter {
            body.filter = XATTR_FILTER_DEFAULT & !bits;
            any_filter |= body.filter != 0;
        }
        bodies.push(body);
    }
    // `--root-xattr-isize`: room for later xattrs in the root inode, as zero padding
    // after the real ones (a zero entry names no xattr to a reader).
    if opts.root_xattr_isize > 0 {
        let want = opts
            .root_xattr_isize
            .max(size_of::<XattrIbodyHeader>() as u32);
        let root = &mut bodies[0];
        root.size = root.size.max(want.next_multiple_of(4));
    }
    Ok(Plan {
        bodies,
        shared_area,
        any_filter,
    })
}

fn entry(prefixes: &Prefixes, name: &[u8], value: Option<&[u8]>) -> Entry {
    let (name_index, at, _, _) = prefixes.encode(name);
    Entry {
        name_index,
        suffix: name[at..].to_vec(),
        value: value.map(<[u8]>::to_vec),
    }
}
