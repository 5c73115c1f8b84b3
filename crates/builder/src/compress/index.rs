//! The map of a compressed inode: its map header and lcluster indexes, full (8 bytes
//! per lcluster) or compact (4- and 2-byte packs), from its list of extents.
//!
//! Lclusters are one block here. Every lcluster gets an index: the one where an
//! extent starts is its head (type, offset of the start, pcluster block); the others
//! are NONHEAD with the distances back to their head and on to the next one (the
//! first NONHEAD of a big pcluster carries its block count instead). Compact packs
//! store no block addresses but one base per pack, from which the kernel counts
//! pcluster sizes; they are used only when that count gives every head's address,
//! else the full form is written.

use ishare_erofs::format::*;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

/// One extent as the index sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ext {
    pub len: u64,
    /// `LCLUSTER_TYPE_PLAIN` or `LCLUSTER_TYPE_HEAD1`.
    pub typ: u8,
    /// First block of the pcluster (ignored for an inline one).
    pub blkaddr: u32,
    /// Blocks of the pcluster.
    pub blocks: u32,
    /// Byte address and encoded length of the pcluster (extent records).
    pub pstart: u64,
    pub plen: u32,
    /// Stored inline after the indexes: its address is not checked.
    pub inline: bool,
    /// The tail fragment (in the packed inode): its address is not checked.
    pub fragment: bool,
    /// Only a prefix of the pcluster's data is this extent's (`LI_PARTIAL_REF`).
    pub partial: bool,
    /// The pcluster is another extent's (deduplicated): not contiguous with the
    /// file's own.
    pub shared: bool,
}

/// A legacy (full) index entry before encoding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    typ: u8,
    /// Heads: offset of the extent start; NONHEAD: `delta[0]`.
    lo: u16,
    /// NONHEAD: `delta[1]`.
    d1: u16,
    blkaddr: u32,
    /// Heads whose block address the compact form must reproduce.
    check: bool,
    partial: bool,
}

fn entries(exts: &[Ext], bits: u32, big_pcluster: bool) -> Vec<Entry> {
    let bs = 1u64 << bits;
    let mut v = Vec::new();
    let mut ofs = 0u64; // where the next extent starts inside its lcluster
    for e in exts {
        let head = Entry {
            typ: e.typ,
            lo: ofs as u16,
            d1: 0,
            blkaddr: e.blkaddr,
            check: !e.inline && !e.fragment,
            partial: e.partial,
        };
        let mut count = e.len;
        let mut d1 = (ofs + count) >> bits;
        if d1 == 0 {
            // Ends inside this lcluster: only the file's last extent does.
            v.push(head);
            ofs = 0;
            continue;
        }
        let mut d0 = 0u64;
        loop {
            let entry = if d0 == 0 {
                head
            } else {
                let lo = if d0 == 1 && big_pcluster {
                    LI_D0_CBLKCNT | e.blocks as u16
                } else {
                    d0.min(u64::from(LI_D0_CBLKCNT) - 1) as u16
                };
                Entry {
                    typ: LCLUSTER_TYPE_NONHEAD,
                    lo,
                    d1: d1.min(u64::from(u16::MAX)) as u16,
                    blkaddr: 0,
                    check: false,
                    partial: false,
                }
            };
            v.push(entry);
            count -= bs - ofs;
            ofs = 0;
            d0 += 1;
            d1 -= 1;
            if count < bs {
                break;
            }
        }
        ofs = count;
    }
    if ofs != 0 {
        // Marks where the last extent ends inside the final lcluster.
        v.push(Entry {
            typ: LCLUSTER_TYPE_PLAIN,
            lo: ofs as u16,
            d1: 0,
            blkaddr: 0,
            check: false,
            partial: false,
        });
    }
    v
}

/// What the record form needs beyond the common map settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordSpec {
    /// The file's size.
    pub size: u64,
    /// Pclusters may start past 4 GiB (decided once per image, before addresses are
    /// known, so the form does not change when they are).
    pub far: bool,
    /// Pclusters are byte-aligned (always records).
    pub unaligned: bool,
}

/// What to encode.
#[derive(Debug)]
pub(crate) struct MapSpec<'a> {
    pub exts: &'a [Ext],
    pub blkszbits: u32,
    pub big_pcluster: bool,
    pub allow_compact: bool,
    /// `h_algorithmtype`.
    pub algorithmtype: u8,
    /// Inline tail bytes (0 = none).
    pub inline_size: u16,
    pub interlaced: bool,
    /// Offset of the tail fragment in the packed inode (the last extent is it).
    pub fragmentoff: Option<u64>,
    /// Full indexes even where compact ones would do (deduplicated files, as
    /// mkfs.erofs; partial references and fragment offsets past 4 GiB need them).
    pub force_full: bool,
    /// The 48-bit layout: extent records where mkfs.erofs writes them.
    pub records: Option<RecordSpec>,
}

/// The map (header and indexes), and the inode layout it needs.
#[derive(Debug)]
pub(crate) struct Map {
    pub bytes: Vec<u8>,
    /// `INODE_COMPRESSED_FULL` or `INODE_COMPRESSED_COMPACT`.
    pub layout: u16,
}

/// Encodes the map as lcluster indexes, which start at `map_pos` (the 8-aligned
/// end of the inode and its xattrs; only its value modulo 32 matters). The extent
/// record form is `records::encode`; `map.rs` chooses.
pub(crate) fn encode(spec: &MapSpec<'_>, map_pos: u64) -> Map {
    let bits = spec.blkszbits;
    let ents = entries(spec.exts, bits, spec.big_pcluster);
    let mut advise = 0u16;
    if spec.inline_size > 0 {
        advise |= ADVISE_INLINE_PCLUSTER;
    }
    if spec.interlaced {
        advise |= ADVISE_INTERLACED_PCLUSTER;
    }
    if spec.fragmentoff.is_some() {
        advise |= ADVISE_FRAGMENT_PCLUSTER;
    }
    let h_u = match spec.fragmentoff {
        Some(off) => off as u32,
        None => u32::from(spec.inline_size) << 16,
    };
    let header = |advise: u16| MapHeader {
        h_u: U32::new(h_u),
        h_advise: U16::new(advise),
        h_algorithmtype: spec.algorithmtype,
        h_clusterbits: 0,
    };
    // Lclusters are one block, so lclusterbits = blkszbits <= 12 allow 2-byte packs.
    let full_needed = spec.force_full
        || ents.iter().any(|e| e.partial)
        || spec.fragmentoff.is_some_and(|o| o >> 32 != 0);
    if spec.allow_compact && bits <= 14 && !full_needed {
        let mut a = advise;
        if bits <= 12 {
            a |= ADVISE_COMPACTED_2B;
        }
        if spec.big_pcluster {
            a |= ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2;
        }
        if let Some(packs) = compact(&ents, map_pos + 8, bits, a, spec.big_pcluster) {
            let mut bytes = header(a).as_bytes().to_vec();
            bytes.extend_from_slice(&packs);
            return Map {
                bytes,
                layout: INODE_COMPRESSED_COMPACT,
            };
        }
    }
    let mut a = advise;
    if spec.big_pcluster {
        a |= ADVISE_BIG_PCLUSTER_1;
    }
    let mut bytes = header(a).as_bytes().to_vec();
    bytes.resize(bytes.len() + FULL_INDEX_PAD as usize, 0);
    for e in &ents {
        let di_u = if e.typ == LCLUSTER_TYPE_NONHEAD {
            u32::from(e.lo) | u32::from(e.d1) << 16
        } else {
            e.blkaddr
        };
        let partial = if e.partial { LI_PARTIAL_REF } else { 0 };
        let di = LclusterIndex {
            di_advise: U16::new(u16::from(e.typ) | partial),
            di_clusterofs: U16::new(if e.typ == LCLUSTER_TYPE_NONHEAD {
                0
            } else {
                e.lo
            }),
            di_u: U32::new(di_u),
        };
        bytes.extend_from_slice(di.as_bytes());
    }
    Map {
        bytes,
        layout: INODE_COMPRESSED_FULL,
    }
}

/// Full-form map size.
pub(crate) fn full_size(nlclusters: u64) -> u64 {
    8 + FULL_INDEX_PAD + nlclusters * 8
}

/// How many lclusters go in leading 4-byte packs, 2-byte packs and trailing 4-byte
/// packs: 4-byte packs until the indexes are 32-byte aligned, then 2-byte packs of
/// 16, then 4-byte packs for the rest (the kernel's rule).
fn compact_split(total: u64, ebase: u64, two_b: bool) -> (u64, u64, u64) {
    if !two_b {
        return (0, 0, total);
    }
    let initial = ((32 - ebase % 32) / 4) & 7;
    if initial > total {
        return (0, 0, total);
    }
    let mid = (total - initial) / 16 * 16;
    (initial, mid, total - initial - mid)
}

fn compact(ents: &[Entry], ebase: u64, bits: u32, advise: u16, big: bool) -> Option<Vec<u8>> {
    let (initial, two_b, _) =
        compact_split(ents.len() as u64, ebase, advise & ADVISE_COMPACTED_2B != 0);
    let lobits = bits.max(LI_D0_CBLKCNT.ilog2() + 1);
    let mut out = Vec::new();
    let mut i = 0usize;
    let mut base = ents.iter().find(|e| e.check).map_or(0, |e| e.blkaddr);
    while i < ents.len() {
        let vcnt = if (i as u64) < initial || (i as u64) >= initial + two_b {
            2
        } else {
            16
        };
        let packsize = if vcnt == 2 { 8 } else { 32 };
        let encodebits = (packsize * 8 - 32) / vcnt as u32;
        let chunk: Vec<Entry> = (0..vcnt)
            .map(|k| {
                ents.get(i + k).copied().unwrap_or(Entry {
                    typ: LCLUSTER_TYPE_PLAIN,
                    lo: 0,
                    d1: 0,
                    blkaddr: 0,
                    check: false,
                    partial: false,
                })
            })
            .collect();
        // The value each slot stores: heads their offset; NONHEADs delta[0] (or the
        // block count), except the pack's last, which stores delta[1].
        let vals: Vec<(u8, u64)> = chunk
            .iter()
            .enumerate()
            .map(|(k, e)| {
                let lo =
                    if e.typ == LCLUSTER_TYPE_NONHEAD && e.lo & LI_D0_CBLKCNT == 0 && k + 1 == vcnt
                    {
                        u64::from(e.d1.min(LI_D0_CBLKCNT - 1))
                    } else {
                        u64::from(e.lo)
                    };
                (e.typ, lo)
            })
            .collect();
        // Base: the first checked head's address minus what the kernel counts
        // before it; every other checked head must then come out right.
        if let Some(k) = chunk.iter().position(|e| e.check) {
            base = chunk[k]
                .blkaddr
                .checked_sub(blocks_before(&vals, k, big)?)?;
        }
        for (k, e) in chunk.iter().enumerate() {
            if e.check
                && u64::from(base) + u64::from(blocks_before(&vals, k, big)?)
                    != u64::from(e.blkaddr)
            {
                return None;
            }
        }
        let mut pack = vec![0u8; packsize as usize];
        let mut pos = 0u32;
        for &(typ, lo) in &vals {
            let v = (u32::from(typ) << lobits) | lo as u32;
            let (byte, rem) = ((pos / 8) as usize, pos % 8);
            // Up to 16 bits at any bit offset: spread over three bytes.
            let w = v << rem;
            for b in 0..3 {
                if let Some(x) = pack.get_mut(byte + b) {
                    *x |= (w >> (8 * b)) as u8;
                }
            }
            pos += encodebits;
        }
        let n = pack.len();
        pack[n - 4..].copy_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&pack);
        i += vcnt;
    }
    Some(out)
}

/// Blocks the kernel counts from a pack's base to the head in slot `k` (its walk back
/// over the slots before it); `None` where it would find the pack corrupt.
fn blocks_before(vals: &[(u8, u64)], k: usize, big: bool) -> Option<u32> {
    let cblkcnt = u64::from(LI_D0_CBLKCNT);
    let mut i = k as i64;
    let mut n: u64;
    if !big {
        n = 1;
        while i > 0 {
            i -= 1;
            let (t, lo) = vals[i as usize];
            if t == LCLUSTER_TYPE_NONHEAD {
                i -= lo as i64;
            }
            if i >= 0 {
                n += 1;
            }
        }
    } else {
        n = 0;
        while i > 0 {
            i -= 1;
            let (t, lo) = vals[i as usize];
            if t == LCLUSTER_TYPE_NONHEAD {
                if lo & cblkcnt != 0 {
                    i -= 1;
                    n += lo & !cblkcnt;
                    continue;
                }
                if lo <= 1 {
                    return None;
                }
                i -= lo as i64 - 2;
                continue;
            }
            n += 1;
        }
    }
    u32::try_from(n).ok()
}
