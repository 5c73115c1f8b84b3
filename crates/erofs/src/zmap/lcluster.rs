//! Loading one lcluster index of a compressed inode, full (`LclusterIndex`, 8 bytes
//! each) or compact (2- and 4-byte entries in packs sharing a base block), into a
//! [`Rec`]: the kernel's `z_erofs_load_{full,compact}_lcluster`. Every value is
//! checked against the inode's map header; the mapping itself is in the parent.

use zerocopy::FromBytes;

use super::{Mapper, Rec};
use crate::error::{ErrorKind, Result};
use crate::format::*;
use crate::inode::DataLayout;

/// Reads a little-endian u32 at bit position `pos` of `b` (zero-extended past its end).
fn le32_at(b: &[u8], byte: usize) -> u32 {
    let mut v = [0u8; 4];
    for (i, x) in v.iter_mut().enumerate() {
        *x = b.get(byte + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(v)
}

/// One compact entry: (lo bits, type).
fn decode_compactedbits(lobits: u32, pack: &[u8], pos: u32) -> (u64, u8) {
    let v = le32_at(pack, (pos / 8) as usize) >> (pos & 7);
    let lo = v & ((1u32 << lobits) - 1);
    (u64::from(lo), ((v >> lobits) & 3) as u8)
}

impl Mapper<'_> {
    fn load_full_lcluster(&self, m: &mut Rec, lcn: u64) -> Result<()> {
        let (inode, z) = (self.inode, self.z);
        let pos = lcn
            .checked_mul(size_of::<LclusterIndex>() as u64)
            .and_then(|o| o.checked_add(inode.meta_end().next_multiple_of(8) + 8 + FULL_INDEX_PAD))
            .ok_or_else(|| self.corrupt(format!("lcluster {lcn} index offset overflows")))?;
        let mut raw = [0u8; 8];
        self.img.read_meta(&mut raw, pos)?;
        let di = LclusterIndex::read_from_bytes(&raw).expect("index size");
        m.lcn = lcn;
        m.nextpackoff = pos + 8;
        let advise = di.di_advise.get();
        m.typ = (advise & LI_LCLUSTER_TYPE_MASK) as u8;
        let u = di.di_u.get();
        if m.typ == LCLUSTER_TYPE_NONHEAD {
            m.clusterofs = 1 << z.lclusterbits;
            let mut d0 = (u & 0xFFFF) as u16;
            if d0 & LI_D0_CBLKCNT != 0 {
                if z.advise & (ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2) == 0 {
                    return Err(self.corrupt(format!(
                        "block count in lcluster {lcn} without big pclusters"
                    )));
                }
                m.compressedblks = Some(u64::from(d0 & !LI_D0_CBLKCNT));
                d0 = 1;
            }
            m.delta = [u64::from(d0), u64::from(u >> 16)];
        } else {
            m.partialref = advise & LI_PARTIAL_REF != 0;
            m.clusterofs = u64::from(di.di_clusterofs.get());
            if advise & LI_HOLE != 0 {
                m.compressedblks = Some(0);
                m.pblk = NULL_ADDR;
            } else {
                m.pblk = u64::from(u);
            }
        }
        Ok(())
    }

    fn load_compact_lcluster(&self, m: &mut Rec, lcn: u64, lookahead: bool) -> Result<()> {
        let (inode, z) = (self.inode, self.z);
        let ebase = inode.meta_end().next_multiple_of(8) + 8;
        let lclusterbits = z.lclusterbits;
        let totalidx = inode.size.div_ceil(u64::from(self.img.sb.block_size()));
        if lcn >= totalidx || lclusterbits > 14 {
            return Err(self.corrupt(format!(
                "compact lcluster {lcn} out of range ({totalidx} indexes, lcluster bits \
                 {lclusterbits})"
            )));
        }
        let big_pcluster = z.advise & ADVISE_BIG_PCLUSTER_1 != 0;
        m.lcn = lcn;
        let compacted_4b_initial = ((32 - ebase % 32) / 4) & 7;
        let compacted_2b = if z.advise & ADVISE_COMPACTED_2B != 0 && compacted_4b_initial < totalidx
        {
            (totalidx - compacted_4b_initial) / 16 * 16
        } else {
            0
        };
        let mut pos = ebase;
        let mut amortizedshift = 2;
        let mut l = lcn;
        if l >= compacted_4b_initial {
            pos += compacted_4b_initial * 4;
            l -= compacted_4b_initial;
            if l < compacted_2b {
                amortizedshift = 1;
            } else {
                pos += compacted_2b * 2;
                l -= compacted_2b;
            }
        }
        // l < totalidx < 2^61 (i_size < 2^63), so this cannot overflow.
        pos += l << amortizedshift;
        let vcnt: u32 = if amortizedshift == 2 {
            2
        } else if lclusterbits <= 12 {
            16
        } else {
            return Err(self.err(ErrorKind::Unsupported(format!(
                "2-byte compact indexes with lcluster bits {lclusterbits}"
            ))));
        };
        let packsize = u64::from(vcnt) << amortizedshift;
        let packstart = pos / packsize * packsize;
        let mut pack = [0u8; 32];
        let pack = &mut pack[..packsize as usize];
        self.img.read_meta(pack, packstart)?;
        m.nextpackoff = packstart + packsize;
        let lobits = lclusterbits.max(LI_D0_CBLKCNT.ilog2() + 1);
        let encodebits = ((packsize as u32 - 4) * 8) / vcnt;
        let mut i = ((pos - packstart) >> amortizedshift) as i64;
        let dec = |i: i64| decode_compactedbits(lobits, pack, encodebits * i as u32);
        let cblkcnt = u64::from(LI_D0_CBLKCNT);

        let (lo, typ) = dec(i);
        m.typ = typ;
        if typ == LCLUSTER_TYPE_NONHEAD {
            m.clusterofs = 1 << lclusterbits;
            if lookahead {
                // Distance to the next head: count NONHEADs to the end of the pack,
                // then add what the pack's last entry stores.
                let mut d1 = 0u64;
                let mut j = i;
                loop {
                    let (lo_j, t_j) = dec(j);
                    if t_j != LCLUSTER_TYPE_NONHEAD {
                        break;
                    }
                    d1 += 1;
                    j += 1;
                    if j >= i64::from(vcnt) {
                        if lo_j & cblkcnt == 0 {
                            d1 = (d1 + lo_j).saturating_sub(1);
                        }
                        break;
                    }
                }
                m.delta[1] = d1;
            }
            if lo & cblkcnt != 0 {
                if !big_pcluster {
                    return Err(self.corrupt(format!(
                        "block count in lcluster {lcn} without big pclusters"
                    )));
                }
                m.compressedblks = Some(lo & !cblkcnt);
                m.delta[0] = 1;
                return Ok(());
            } else if i + 1 != i64::from(vcnt) {
                m.delta[0] = lo;
                return Ok(());
            }
            // The pack's last entry stores delta[1]; delta[0] comes from the one before.
            let (lo, t) = dec(i - 1);
            let lo = if t != LCLUSTER_TYPE_NONHEAD {
                0
            } else if lo & cblkcnt != 0 {
                1
            } else {
                lo
            };
            m.delta[0] = lo + 1;
            return Ok(());
        }
        m.clusterofs = lo;
        m.delta[0] = 0;
        // The head's block: the pack's base plus the blocks of the heads before it.
        let mut nblk: u64;
        if !big_pcluster {
            nblk = 1;
            while i > 0 {
                i -= 1;
                let (lo, t) = dec(i);
                if t == LCLUSTER_TYPE_NONHEAD {
                    i -= lo as i64;
                }
                if i >= 0 {
                    nblk += 1;
                }
            }
        } else {
            nblk = 0;
            while i > 0 {
                i -= 1;
                let (lo, t) = dec(i);
                if t == LCLUSTER_TYPE_NONHEAD {
                    if lo & cblkcnt != 0 {
                        i -= 1;
                        nblk += lo & !cblkcnt;
                        continue;
                    }
                    if lo <= 1 {
                        return Err(self.corrupt(format!(
                            "big pcluster lcluster with delta {lo} near lcluster {lcn}"
                        )));
                    }
                    i -= lo as i64 - 2;
                    continue;
                }
                nblk += 1;
            }
        }
        let base = u32::from_le_bytes(pack[pack.len() - 4..].try_into().expect("4 bytes"));
        m.pblk = u64::from(base) + nblk;
        Ok(())
    }

    pub(super) fn load_lcluster(&self, m: &mut Rec, lcn: u64, lookahead: bool) -> Result<()> {
        let (inode, z) = (self.inode, self.z);
        if inode.layout == DataLayout::CompressedCompact {
            self.load_compact_lcluster(m, lcn, lookahead)?;
        } else {
            self.load_full_lcluster(m, lcn)?;
        }
        if m.typ != LCLUSTER_TYPE_NONHEAD && m.clusterofs >= 1 << z.lclusterbits {
            return Err(self.corrupt(format!(
                "lcluster {lcn} starts its extent at {}, past its end",
                m.clusterofs
            )));
        }
        Ok(())
    }
}
