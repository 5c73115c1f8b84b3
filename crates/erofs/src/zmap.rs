//! The map of compressed inodes (layouts COMPRESSED_FULL and COMPRESSED_COMPACT): the
//! per-inode map header, and mapping a logical offset to the compressed extent
//! holding it. The algorithms and the image's compression settings are in
//! [`crate::decompress`].
//!
//! Mapping follows the kernel's `fs/erofs/zmap.c` rules (full and compact lcluster
//! indexes, big pclusters, ztailpacking, fragments, partially referenced pclusters,
//! and the extent-record layout), with one difference: the length of an extent is
//! always its full decoded length (what the kernel computes for FIEMAP), so an
//! extent is decoded once, completely, and never needs partial decoding except for
//! partially referenced (deduplicated) pclusters. All arithmetic on on-disk values is
//! checked; extents longer than [`PCLUSTER_MAX_DSIZE`] or pclusters larger than
//! [`PCLUSTER_MAX_SIZE`] are corruption.

use zerocopy::FromBytes;

use crate::decompress::Algorithm;
use crate::error::{Error, ErrorKind, Result};
use crate::format::*;
use crate::image::Image;
use crate::inode::{DataLayout, Inode};

mod lcluster;

/// Where a compressed extent's encoded bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pcluster {
    /// Byte offset: on the primary device (unified address space), or in the
    /// metadata area for an inline pcluster (in the metabox's data when bit 63 is
    /// set, as for [`ExtentKind::Inline`](crate::ExtentKind::Inline)).
    pub offset: u64,
    /// Encoded length in bytes (leading zero padding included).
    pub len: u32,
    /// Stored inline after the inode's indexes (ztailpacking).
    pub inline: bool,
    /// Encoding.
    pub algorithm: Algorithm,
    /// Only a prefix of the pcluster's decoded data belongs to this extent
    /// (deduplicated, partially referenced pcluster).
    pub partial: bool,
}

/// What a compressed extent is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZPlace {
    /// Not mapped: zeros.
    Hole,
    /// In the packed inode, starting at this byte of its data.
    Fragment { offset: u64 },
    /// Encoded in a pcluster.
    Pcluster(Pcluster),
}

/// One extent of a compressed inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZExtent {
    /// First logical byte.
    pub la: u64,
    /// Full decoded length.
    pub llen: u64,
    pub place: ZPlace,
}

/// Per-inode compression state from the map header (and, for ztailpacking and
/// fragments, the lookup of the tail extent the kernel does once per inode).
#[derive(Debug, Clone)]
pub(crate) struct ZInfo {
    advise: u16,
    /// Algorithm ids of HEAD1 and HEAD2 lclusters.
    algs: [u8; 2],
    lclusterbits: u32,
    /// Encoded size of the inline tail pcluster (0: none).
    idata_size: u16,
    /// Byte offset of the inline tail pcluster.
    idata_pos: u64,
    /// Offset of the tail (or whole-file) fragment in the packed inode.
    fragmentoff: u64,
    /// Lcluster of the tail extent's head (ztailpacking, fragments).
    tail_headlcn: u64,
    /// Extent-record layout: number of records.
    extents: Option<u64>,
}

impl ZInfo {
    fn fragment(&self) -> bool {
        self.advise & ADVISE_FRAGMENT_PCLUSTER != 0
    }
}

/// What loading one lcluster index gathered (the kernel's `z_erofs_maprecorder`).
#[derive(Debug, Default, Clone)]
struct Rec {
    lcn: u64,
    typ: u8,
    headtype: u8,
    clusterofs: u64,
    delta: [u64; 2],
    pblk: u64,
    /// Byte just after the index pack holding this lcluster (ztailpacking data follows).
    nextpackoff: u64,
    /// Pcluster size in blocks, when known (`None` = the kernel's -1).
    compressedblks: Option<u64>,
    partialref: bool,
}

impl Image {
    /// The compression state of `inode`, computed on first use and kept in it.
    pub(crate) fn zinfo<'a>(&self, inode: &'a Inode) -> Result<&'a ZInfo> {
        if let Some(z) = inode.z.get() {
            return Ok(z);
        }
        let z = self.load_zinfo(inode)?;
        Ok(inode.z.get_or_init(|| z))
    }

    fn load_zinfo(&self, inode: &Inode) -> Result<ZInfo> {
        if self.sb.compression.algorithms == 0 {
            return Err(self.corrupt("compressed inode in an image without compression"));
        }
        let pos = inode.meta_end().next_multiple_of(8);
        let mut raw = [0u8; 8];
        self.read_meta(&mut raw, pos)?;
        let h = MapHeader::read_from_bytes(&raw).expect("header size");
        let mut z = ZInfo {
            advise: 0,
            algs: [0; 2],
            lclusterbits: 0,
            idata_size: 0,
            idata_pos: 0,
            fragmentoff: 0,
            tail_headlcn: 0,
            extents: None,
        };
        if h.h_clusterbits >> FRAGMENT_INODE_BIT != 0 {
            // The whole file is a fragment; the other 63 bits are its offset.
            z.advise = ADVISE_FRAGMENT_PCLUSTER;
            z.fragmentoff = u64::from_le_bytes(raw) ^ (1 << 63);
            return Ok(z);
        }
        z.advise = h.h_advise.get();
        z.lclusterbits = u32::from(self.sb.blkszbits) + u32::from(h.h_clusterbits & 15);
        if inode.layout == DataLayout::CompressedFull && z.advise & ADVISE_EXTENTS != 0 {
            let hi = u16::from_le_bytes([raw[6], raw[7]]);
            z.extents = Some(u64::from(h.h_u.get()) | (u64::from(hi) << 32));
            return Ok(z);
        }
        if z.fragment() {
            z.fragmentoff = u64::from(h.h_u.get());
        } else if z.advise & ADVISE_INLINE_PCLUSTER != 0 {
            z.idata_size = (h.h_u.get() >> 16) as u16;
        }
        for (i, a) in z.algs.iter_mut().enumerate() {
            *a = (h.h_algorithmtype >> (4 * i)) & 15;
            if *a >= COMPRESSION_MAX {
                return Err(self.err(ErrorKind::Unsupported(format!(
                    "unknown HEAD{} compression algorithm {a}",
                    i + 1
                ))));
            }
        }
        let big = z.advise & (ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2);
        if big != 0 && !self.sb.has_incompat(FEATURE_INCOMPAT_BIG_PCLUSTER) {
            return Err(self.corrupt("big pclusters without the superblock feature"));
        }
        if inode.layout == DataLayout::CompressedCompact
            && big != 0
            && big != ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2
        {
            return Err(self.corrupt("compact indexes with big pclusters for one head type only"));
        }
        if z.idata_size != 0 || z.fragment() {
            let (nextpackoff, tail) = Mapper::new(self, inode, &z).find_tail()?;
            if z.idata_size != 0 {
                z.idata_pos = nextpackoff;
            }
            z.tail_headlcn = tail.lcn;
            if z.fragment() && inode.layout == DataLayout::CompressedFull {
                z.fragmentoff |= tail.pblk << 32;
            }
        }
        Ok(z)
    }

    /// Maps logical byte `pos` (< size) of a compressed inode to its extent.
    pub(crate) fn zmap(&self, inode: &Inode, pos: u64) -> Result<ZExtent> {
        let z = self.zinfo(inode)?;
        let mapper = Mapper::new(self, inode, z);
        let ext = if z.extents.is_some() {
            mapper.map_ext(pos)?
        } else {
            mapper.map_fo(pos)?
        };
        self.zsanity(inode, &ext, pos)?;
        Ok(ext)
    }

    fn zsanity(&self, inode: &Inode, e: &ZExtent, pos: u64) -> Result<()> {
        let end = e.la.checked_add(e.llen).filter(|&end| end <= inode.size);
        if e.la > pos || end.is_none_or(|end| end <= pos) {
            return Err(self.corrupt(format!(
                "compressed extent {}+{} does not cover offset {pos} (inconsistent indexes)",
                e.la, e.llen
            )));
        }
        let ZPlace::Pcluster(p) = e.place else {
            return Ok(());
        };
        let plen = u64::from(p.len);
        if plen > PCLUSTER_MAX_SIZE {
            return Err(self.corrupt(format!(
                "pcluster of {plen} bytes at {} exceeds 1 MiB",
                e.la
            )));
        }
        if e.llen > PCLUSTER_MAX_DSIZE {
            return Err(self.corrupt(format!(
                "compressed extent at {} decodes to {} bytes, more than 12 MiB",
                e.la, e.llen
            )));
        }
        match p.algorithm.id() {
            Some(id) => {
                if self.sb.compression.algorithms & (1 << id) == 0 {
                    return Err(self.corrupt(format!(
                        "extent at {} uses {}, which the superblock does not list",
                        e.la, p.algorithm
                    )));
                }
                if !p.partial && e.llen < plen && e.la + e.llen < inode.size {
                    return Err(self.corrupt(format!(
                        "too much compressed data ({plen} bytes for {}) at {}",
                        e.llen, e.la
                    )));
                }
            }
            None if e.llen > plen => {
                return Err(self.corrupt(format!(
                    "not enough plain data on disk ({plen} bytes for {}) at {}",
                    e.llen, e.la
                )));
            }
            None => {}
        }
        let bs = u64::from(self.sb.block_size());
        if p.inline {
            if p.offset % bs + plen > bs {
                return Err(self.corrupt("ztailpacking inline data crosses a block boundary"));
            }
        } else {
            let pend = p.offset.checked_add(plen);
            if pend.is_none_or(|pend| (pend >> self.sb.blkszbits) >= 1 << 48) {
                return Err(self.corrupt(format!(
                    "pcluster at byte {} is beyond 48-bit block addresses",
                    p.offset
                )));
            }
        }
        Ok(())
    }
}

/// One compressed inode's map being read: the image, the inode and its map header.
struct Mapper<'a> {
    img: &'a Image,
    inode: &'a Inode,
    z: &'a ZInfo,
}

impl<'a> Mapper<'a> {
    fn new(img: &'a Image, inode: &'a Inode, z: &'a ZInfo) -> Self {
        Self { img, inode, z }
    }

    fn corrupt(&self, msg: impl Into<String>) -> Error {
        self.img.corrupt(msg)
    }

    fn err(&self, kind: ErrorKind) -> Error {
        self.img.err(kind)
    }

    /// Goes back `distance` lclusters at a time to the head of the extent; sets
    /// `m.headtype` and returns the extent's first logical byte.
    fn extent_lookback(&self, m: &mut Rec, distance: u64) -> Result<u64> {
        let z = self.z;
        let mut distance = distance;
        while distance != 0 && m.lcn >= distance {
            let lcn = m.lcn - distance;
            self.load_lcluster(m, lcn, false)?;
            if m.typ == LCLUSTER_TYPE_NONHEAD {
                distance = m.delta[0];
                continue;
            }
            m.headtype = m.typ;
            return Ok((lcn << z.lclusterbits) | m.clusterofs);
        }
        Err(self.corrupt(format!(
            "bogus lookback distance {distance} at lcluster {}",
            m.lcn
        )))
    }

    fn extent_compressedlen(&self, m: &mut Rec) -> Result<u64> {
        let (inode, z) = (self.inode, self.z);
        let big1 = z.advise & ADVISE_BIG_PCLUSTER_1 != 0;
        let big2 = z.advise & ADVISE_BIG_PCLUSTER_2 != 0;
        let lcn = m.lcn + 1;
        let past_eof = lcn
            .checked_mul(1 << z.lclusterbits)
            .is_none_or(|o| o >= inode.size);
        if (m.headtype == LCLUSTER_TYPE_HEAD1 && !big1)
            || ((m.headtype == LCLUSTER_TYPE_PLAIN || m.headtype == LCLUSTER_TYPE_HEAD2) && !big2)
            || past_eof
        {
            m.compressedblks.get_or_insert(1);
        }
        if m.compressedblks.is_none() {
            self.load_lcluster(m, lcn, false)?;
            if m.typ != LCLUSTER_TYPE_NONHEAD {
                m.compressedblks = Some(1);
            } else if m.delta[0] != 1 || m.compressedblks.is_none() {
                return Err(self.corrupt(format!("bogus block count at lcluster {lcn}")));
            }
        }
        Ok(m.compressedblks.expect("set above"))
    }

    /// The full decoded length of the extent whose head is lcluster `headlcn` and
    /// which starts at `la` (the kernel's FIEMAP length).
    fn extent_decompressedlen(&self, la: u64) -> Result<u64> {
        let (inode, z) = (self.inode, self.z);
        let headlcn = la >> z.lclusterbits;
        let mut lcn = headlcn;
        let mut m = Rec::default();
        loop {
            let start = lcn.checked_mul(1 << z.lclusterbits);
            if start.is_none_or(|s| s >= inode.size) {
                return Ok(inode.size - la);
            }
            self.load_lcluster(&mut m, lcn, true)?;
            if m.typ == LCLUSTER_TYPE_NONHEAD {
                // Pre-1.0 mkfs wrote 0 here.
                if m.delta[1] == 0 {
                    m.delta[1] = 1;
                }
            } else {
                if lcn != headlcn {
                    break;
                }
                m.delta[1] = 1;
            }
            lcn = lcn.saturating_add(m.delta[1]);
        }
        ((lcn << z.lclusterbits) + m.clusterofs)
            .checked_sub(la)
            .ok_or_else(|| self.corrupt(format!("extent at {la} ends before it starts")))
    }

    /// Looks up the tail extent once per inode (the kernel's FINDTAIL mapping):
    /// returns the end of the index pack of the last lcluster (where an inline tail
    /// pcluster is) and the record of the tail extent's head (its lcluster and, full
    /// indexes, the high bits of the fragment offset).
    fn find_tail(&self) -> Result<(u64, Rec)> {
        let (inode, z) = (self.inode, self.z);
        let ofs = inode.size.checked_sub(1).ok_or_else(|| {
            self.corrupt("empty compressed inode with a tail pcluster or fragment")
        })?;
        let lcb = z.lclusterbits;
        let mut m = Rec::default();
        self.load_lcluster(&mut m, ofs >> lcb, false)?;
        let nextpackoff = m.nextpackoff;
        let endoff = ofs & ((1 << lcb) - 1);
        if m.typ == LCLUSTER_TYPE_NONHEAD || endoff < m.clusterofs {
            let distance = if m.typ == LCLUSTER_TYPE_NONHEAD {
                m.delta[0]
            } else {
                1
            };
            self.extent_lookback(&mut m, distance)?;
        }
        Ok((nextpackoff, m))
    }

    /// Mapping with lcluster indexes (the kernel's `z_erofs_map_blocks_fo`).
    fn map_fo(&self, ofs: u64) -> Result<ZExtent> {
        let (inode, z) = (self.inode, self.z);
        let bsbits = self.img.sb.blkszbits;
        if z.fragment() && z.tail_headlcn == 0 {
            return Ok(ZExtent {
                la: 0,
                llen: inode.size,
                place: ZPlace::Fragment {
                    offset: z.fragmentoff,
                },
            });
        }
        let lcb = z.lclusterbits;
        let initial_lcn = ofs >> lcb;
        let endoff = ofs & ((1 << lcb) - 1);
        let mut m = Rec::default();
        self.load_lcluster(&mut m, initial_lcn, false)?;
        let la = if m.typ != LCLUSTER_TYPE_NONHEAD && endoff >= m.clusterofs {
            m.headtype = m.typ;
            (m.lcn << lcb) | m.clusterofs
        } else {
            let distance = if m.typ != LCLUSTER_TYPE_NONHEAD {
                if m.lcn == 0 {
                    return Err(self.corrupt("lcluster 0 starts its extent past byte 0"));
                }
                1
            } else {
                m.delta[0]
            };
            self.extent_lookback(&mut m, distance)?
        };
        let partial = m.partialref;
        let ztailpacking = z.idata_size != 0;
        let place = if ztailpacking && m.lcn == z.tail_headlcn {
            Some(Pcluster {
                offset: z.idata_pos,
                len: u32::from(z.idata_size),
                inline: true,
                algorithm: Algorithm::Plain,
                partial,
            })
        } else if z.fragment() && m.lcn == z.tail_headlcn {
            None
        } else {
            let offset = m.pblk.checked_mul(1 << bsbits).ok_or_else(|| {
                self.corrupt(format!("pcluster block {} is out of range", m.pblk))
            })?;
            let blks = self.extent_compressedlen(&mut m)?;
            if blks == 0 {
                let llen = self.extent_decompressedlen(la)?;
                return Ok(ZExtent {
                    la,
                    llen,
                    place: ZPlace::Hole,
                });
            }
            let len = u32::try_from(blks << bsbits)
                .ok()
                .filter(|&l| u64::from(l) <= PCLUSTER_MAX_SIZE)
                .ok_or_else(|| {
                    self.corrupt(format!("pcluster of {blks} blocks at {la} exceeds 1 MiB"))
                })?;
            Some(Pcluster {
                offset,
                len,
                inline: false,
                algorithm: Algorithm::Plain,
                partial,
            })
        };
        let llen = self.extent_decompressedlen(la)?;
        let Some(mut p) = place else {
            return Ok(ZExtent {
                la,
                llen,
                place: ZPlace::Fragment {
                    offset: z.fragmentoff,
                },
            });
        };
        p.algorithm = match m.headtype {
            LCLUSTER_TYPE_PLAIN => {
                if z.advise & ADVISE_INTERLACED_PCLUSTER != 0 && !p.inline {
                    Algorithm::Interlaced
                } else {
                    Algorithm::Plain
                }
            }
            t => {
                let id = z.algs[usize::from(t == LCLUSTER_TYPE_HEAD2)];
                Algorithm::from_id(id).expect("checked when loading the header")
            }
        };
        Ok(ZExtent {
            la,
            llen,
            place: ZPlace::Pcluster(p),
        })
    }

    /// Mapping with extent records (the kernel's `z_erofs_map_blocks_ext`).
    fn map_ext(&self, pos: u64) -> Result<ZExtent> {
        let (inode, z) = (self.inode, self.z);
        let recsz = 4u64 << ((z.advise >> ADVISE_EXTRECSZ_BIT) & ADVISE_EXTRECSZ_MASK);
        let mut at = (inode.meta_end().next_multiple_of(8) + 8).next_multiple_of(recsz);
        let bmask = u64::from(self.img.sb.block_size()) - 1;
        let interlaced = z.advise & ADVISE_INTERLACED_PCLUSTER != 0;
        let mut lend = inode.size;
        let read = |at: u64| -> Result<ZExtentRecord> {
            let mut raw = [0u8; 32];
            self.img.read_meta(&mut raw[..recsz as usize], at)?;
            Ok(ZExtentRecord::read_from_bytes(&raw).expect("record size"))
        };
        let (mut lstart, mut plen, mut pa, last);
        plen = 0u32;
        pa = 0u64;
        if recsz <= 8 {
            let lcb = z.lclusterbits;
            if lcb > 40 {
                return Err(self.corrupt(format!("extent lcluster bits {lcb}")));
            }
            let step = 1u64 << lcb;
            // Contiguous pclusters (4-byte records): a base address, then lengths.
            let mut next_pa = if recsz <= 4 {
                let mut raw = [0u8; 8];
                self.img.read_meta(&mut raw, at)?;
                at += 8;
                lstart = 0;
                Some(u64::from_le_bytes(raw))
            } else {
                lstart = pos / step * step;
                at = (lstart >> lcb)
                    .checked_mul(recsz)
                    .and_then(|o| o.checked_add(at))
                    .ok_or_else(|| self.corrupt("extent record offset overflows"))?;
                None
            };
            while lstart <= pos {
                let r = read(at)?;
                plen = r.plen.get();
                match next_pa.as_mut() {
                    Some(npa) => {
                        pa = *npa;
                        *npa = npa.wrapping_add(u64::from(plen & EXTENT_PLEN_MASK));
                    }
                    None => pa = u64::from(r.pstart_lo.get()),
                }
                at += recsz;
                lstart += step;
            }
            last = lstart >= inode.size.div_ceil(step).saturating_mul(step);
            lend = lend.min(lstart);
            lstart -= step;
        } else {
            let count = z.extents.expect("extent layout");
            lstart = lend;
            let (mut l, mut r) = (0u64, count);
            while l < r {
                let mid = l + (r - l) / 2;
                let rat = mid
                    .checked_mul(recsz)
                    .and_then(|o| o.checked_add(at))
                    .ok_or_else(|| self.corrupt("extent record offset overflows"))?;
                let e = read(rat)?;
                let mut la = u64::from(e.lstart_lo.get());
                if recsz > 16 {
                    la |= u64::from(e.lstart_hi.get()) << 32;
                }
                let epa = u64::from(e.pstart_lo.get()) | (u64::from(e.pstart_hi.get()) << 32);
                if la > pos {
                    r = mid;
                    if la > lend {
                        return Err(self.corrupt(format!("extent records out of order at {mid}")));
                    }
                    lend = la;
                } else {
                    l = mid + 1;
                    if pos == la {
                        r = r.min(l + 1);
                    }
                    lstart = la;
                    plen = e.plen.get();
                    pa = epa;
                }
            }
            last = l >= count;
        }
        if lstart >= lend {
            // No record covers pos: a hole up to the next record.
            return Ok(ZExtent {
                la: pos,
                llen: lend.saturating_sub(pos),
                place: ZPlace::Hole,
            });
        }
        let llen = lend - lstart;
        let place = if last && z.fragment() {
            let hi = if recsz > 4 { pa << 32 } else { 0 };
            ZPlace::Fragment {
                offset: u64::from(plen) | hi,
            }
        } else if plen & EXTENT_PLEN_MASK != 0 {
            let fmt = plen >> EXTENT_PLEN_FMT_BIT;
            let len = plen & EXTENT_PLEN_MASK;
            let algorithm = if fmt != 0 {
                let id = (fmt - 1) as u8;
                Algorithm::from_id(id).ok_or_else(|| {
                    self.err(ErrorKind::Unsupported(format!(
                        "unknown compression algorithm {id} at {lstart}"
                    )))
                })?
            } else if interlaced && (pa | u64::from(len)) & bmask == 0 {
                Algorithm::Interlaced
            } else {
                Algorithm::Plain
            };
            ZPlace::Pcluster(Pcluster {
                offset: pa,
                len,
                inline: false,
                algorithm,
                partial: plen & EXTENT_PLEN_PARTIAL != 0,
            })
        } else {
            ZPlace::Hole
        };
        Ok(ZExtent {
            la: lstart,
            llen,
            place,
        })
    }
}
