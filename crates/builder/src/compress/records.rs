//! The extent-record map of a compressed inode (48-bit layout): one record per
//! extent instead of an index per lcluster, as mkfs.erofs 1.9.4 writes it
//! (`z_erofs_write_extents`).
//!
//! Record size: 4 bytes (only the encoded length, after one 8-byte start address)
//! when every extent but the last is the same power-of-two length and the pclusters
//! follow each other; 8 bytes (length and low start) when the lengths are uniform
//! but the pclusters are not contiguous; 16 bytes (with the start's high half and
//! the logical start) otherwise, or 32 for files past 4 GiB. The last extent may be
//! the tail fragment: its record holds the fragment's offset in the packed inode.
//! With block-aligned pclusters this form is used only when it is no larger than
//! full lcluster indexes; byte-aligned pclusters can only be described by it.

use ishare_erofs::format::*;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use super::index::{Map, MapSpec, RecordSpec, full_size};

/// The record-form map, or `None` where mkfs.erofs would write lcluster indexes
/// (block-aligned data whose records would take more room than full indexes).
pub(crate) fn encode(spec: &MapSpec<'_>, rs: RecordSpec, map_pos: u64) -> Option<Map> {
    let exts = spec.exts;
    let first = exts.first()?;
    let bbits = spec.blkszbits;
    // log2 of the common extent length, at least a block; 0 when lengths differ.
    let mut lcb = ceil_log2(first.len).max(bbits);
    let n = exts.len();
    for (i, e) in exts.iter().enumerate() {
        if e.len != 1 << lcb && (i + 1 != n || e.len > 1 << lcb) {
            lcb = 0;
        }
    }
    // A fragment offset past 4 GiB needs the start field of 8-byte records.
    let frag_hi = spec.fragmentoff.is_some_and(|o| o >> 32 != 0);
    let contiguous = !frag_hi && exts.iter().all(|e| !e.shared);
    let mut recsz: u64 = if rs.size > u64::from(u32::MAX) {
        32
    } else {
        16
    };
    // The 4-bit lcluster size field bounds the uniform forms.
    if lcb != 0 && lcb - bbits <= 15 {
        if contiguous {
            recsz = 4;
        } else if recsz <= 16 && !rs.far {
            recsz = 8;
        }
    }
    let moff = (map_pos + 8).next_multiple_of(recsz) - map_pos;
    let metasz = moff + recsz * n as u64 + if recsz <= 4 { 8 } else { 0 };
    if !rs.unaligned && metasz > full_size(rs.size.div_ceil(1 << bbits)) {
        return None;
    }
    let mut advise = ADVISE_EXTENTS | ((recsz.ilog2() as u16 - 2) << ADVISE_EXTRECSZ_BIT);
    if spec.interlaced {
        advise |= ADVISE_INTERLACED_PCLUSTER;
    }
    if spec.fragmentoff.is_some() {
        advise |= ADVISE_FRAGMENT_PCLUSTER;
    }
    let header = if recsz > 12 {
        let count = n as u64;
        MapHeader {
            h_u: U32::new(count as u32),
            h_advise: U16::new(advise),
            h_algorithmtype: (count >> 32) as u8,
            h_clusterbits: (count >> 40) as u8,
        }
    } else {
        MapHeader {
            h_u: U32::new(0),
            h_advise: U16::new(advise),
            h_algorithmtype: 0,
            h_clusterbits: (lcb - bbits) as u8,
        }
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.resize(moff as usize, 0);
    if recsz <= 4 {
        bytes.extend_from_slice(&first.pstart.to_le_bytes());
    }
    let mut lstart = 0u64;
    for e in exts {
        let (plen, pstart) = if e.fragment {
            let off = spec.fragmentoff.unwrap_or(0);
            (off as u32, off >> 32)
        } else {
            let fmt = if e.typ == LCLUSTER_TYPE_PLAIN {
                0
            } else {
                u32::from(spec.algorithmtype) + 1
            };
            let partial = if e.partial { EXTENT_PLEN_PARTIAL } else { 0 };
            (e.plen | fmt << EXTENT_PLEN_FMT_BIT | partial, e.pstart)
        };
        let r = ZExtentRecord {
            plen: U32::new(plen),
            pstart_lo: U32::new(pstart as u32),
            pstart_hi: U32::new((pstart >> 32) as u32),
            lstart_lo: U32::new(lstart as u32),
            lstart_hi: U32::new((lstart >> 32) as u32),
            reserved: [0; 12],
        };
        bytes.extend_from_slice(&r.as_bytes()[..recsz as usize]);
        lstart += e.len;
    }
    debug_assert_eq!(bytes.len() as u64, metasz);
    Some(Map {
        bytes,
        layout: INODE_COMPRESSED_FULL,
    })
}

/// Bits of the smallest power of two at least `len` (0 for 0 and 1).
fn ceil_log2(len: u64) -> u32 {
    if len <= 1 {
        0
    } else {
        64 - (len - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::index::Ext;

    fn ext(len: u64, pstart: u64, plen: u32) -> Ext {
        Ext {
            len,
            typ: LCLUSTER_TYPE_HEAD1,
            blkaddr: (pstart >> 12) as u32,
            blocks: plen.div_ceil(4096),
            pstart,
            plen,
            inline: false,
            fragment: false,
            partial: false,
            shared: false,
        }
    }

    fn spec(exts: &[Ext]) -> MapSpec<'_> {
        MapSpec {
            exts,
            blkszbits: 12,
            big_pcluster: false,
            allow_compact: true,
            algorithmtype: COMPRESSION_ZSTD,
            inline_size: 0,
            interlaced: false,
            fragmentoff: None,
            force_full: false,
            records: None,
        }
    }

    const RS: RecordSpec = RecordSpec {
        size: 10000,
        far: false,
        unaligned: true,
    };

    #[test]
    fn uniform_contiguous_extents_take_four_bytes_each() {
        let exts = [
            ext(4096, 8192, 100),
            ext(4096, 8292, 4096),
            ext(1808, 12388, 50),
        ];
        let m = encode(&spec(&exts), RS, 32).unwrap();
        // Header, start address, three lengths.
        assert_eq!(m.bytes.len(), 8 + 8 + 12);
        assert_eq!(u16::from_le_bytes([m.bytes[4], m.bytes[5]]), ADVISE_EXTENTS);
        assert_eq!(m.bytes[7], 0, "lclusters are blocks");
        assert_eq!(u64::from_le_bytes(m.bytes[8..16].try_into().unwrap()), 8192);
        let plen = u32::from_le_bytes(m.bytes[16..20].try_into().unwrap());
        assert_eq!(
            plen,
            100 | u32::from(COMPRESSION_ZSTD + 1) << EXTENT_PLEN_FMT_BIT
        );
    }

    #[test]
    fn varying_lengths_take_sixteen_bytes_with_their_logical_start() {
        let exts = [ext(5000, 4096, 4096), ext(5000, 8192, 4096)];
        // The records are 16-byte aligned: 8 bytes of padding after the header at 32.
        let rs = RecordSpec {
            size: 40000,
            far: false,
            unaligned: false,
        };
        let m = encode(&spec(&exts), rs, 32).unwrap();
        assert_eq!(m.bytes.len(), 16 + 32);
        assert_eq!(u32::from_le_bytes(m.bytes[0..4].try_into().unwrap()), 2);
        let rec = &m.bytes[16 + 16..];
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), 8192);
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().unwrap()), 5000);
    }

    #[test]
    fn aligned_records_larger_than_full_indexes_are_not_used() {
        // Two extents of a 6000-byte file: 2 lclusters of full indexes (32 bytes)
        // against 8 + 8 + 2 * 16 bytes of records.
        let exts = [ext(3000, 4096, 4096), ext(3000, 8192, 4096)];
        let rs = RecordSpec {
            size: 6000,
            far: false,
            unaligned: false,
        };
        assert!(encode(&spec(&exts), rs, 32).is_none());
    }
}
