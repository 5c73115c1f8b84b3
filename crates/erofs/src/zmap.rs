//! Compressed inodes (layouts COMPRESSED_FULL and COMPRESSED_COMPACT): the image's
//! compression settings (superblock `u1` and the `COMPR_CFGS` records), the per-inode
//! map header, and mapping a logical offset to the compressed extent holding it.
//!
//! Mapping follows the kernel's `fs/erofs/zmap.c` rules (full and compact lcluster
//! indexes, big pclusters, ztailpacking, fragments, partially referenced pclusters,
//! and the extent-record layout), with one difference: the length of an extent is
//! always its full decoded length (what the kernel computes for FIEMAP), so an
//! extent is decoded once, completely, and never needs partial decoding except for
//! partially referenced (deduplicated) pclusters. All arithmetic on on-disk values is
//! checked; extents longer than [`PCLUSTER_MAX_DSIZE`] or pclusters larger than
//! [`PCLUSTER_MAX_SIZE`] are corruption.

use std::fmt;

use zerocopy::FromBytes;

use crate::error::{ErrorKind, Result};
use crate::format::*;
use crate::image::Image;
use crate::inode::{DataLayout, Inode};

/// How a pcluster's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// LZ4 block format (LZ4 and LZ4HC).
    Lz4,
    /// MicroLZMA.
    Lzma,
    /// Raw DEFLATE.
    Deflate,
    /// Zstandard.
    Zstd,
    /// Stored uncompressed, from the start of the pcluster ("shifted").
    Plain,
    /// Stored uncompressed, rotated so that the extent's first byte sits at its
    /// offset inside the block ("interlaced").
    Interlaced,
}

impl Algorithm {
    /// The algorithm with on-disk id `id` (`COMPRESSION_*`).
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            COMPRESSION_LZ4 => Self::Lz4,
            COMPRESSION_LZMA => Self::Lzma,
            COMPRESSION_DEFLATE => Self::Deflate,
            COMPRESSION_ZSTD => Self::Zstd,
            _ => return None,
        })
    }

    /// The on-disk id, for the compressing algorithms.
    pub fn id(self) -> Option<u8> {
        Some(match self {
            Self::Lz4 => COMPRESSION_LZ4,
            Self::Lzma => COMPRESSION_LZMA,
            Self::Deflate => COMPRESSION_DEFLATE,
            Self::Zstd => COMPRESSION_ZSTD,
            Self::Plain | Self::Interlaced => return None,
        })
    }

    /// The name `mkfs.erofs -z` and `dump.erofs` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lz4 => "lz4",
            Self::Lzma => "lzma",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
            Self::Plain => "plain",
            Self::Interlaced => "interlaced",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The image's compression settings: the algorithm bitmap and the per-algorithm
/// configuration records (`COMPR_CFGS`), or the LZ4 window of older images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompressionInfo {
    /// Bit n set: algorithm n (`COMPRESSION_*`) may be used. 0 for a plain image.
    pub algorithms: u16,
    /// The records come from `COMPR_CFGS` (else only LZ4 is possible).
    pub has_configs: bool,
    /// LZ4 window (`lz4_max_distance`), 0 = the default 64 KiB.
    pub lz4_max_distance: u16,
    /// Largest LZ4 pcluster in blocks (1 without a record).
    pub lz4_max_pclusterblks: u16,
    /// MicroLZMA dictionary size, from its record.
    pub lzma_dict_size: Option<u32>,
    /// DEFLATE window bits, from its record.
    pub deflate_windowbits: Option<u8>,
    /// Zstandard window log, from its record.
    pub zstd_windowlog: Option<u8>,
}

impl CompressionInfo {
    /// The algorithms in use.
    pub fn algorithm_list(&self) -> Vec<Algorithm> {
        (0..COMPRESSION_MAX)
            .filter(|a| self.algorithms & (1 << a) != 0)
            .filter_map(Algorithm::from_id)
            .collect()
    }
}

/// Where a compressed extent's encoded bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pcluster {
    /// Byte offset: on the primary device (unified address space), or in the
    /// metadata area for an inline pcluster.
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

impl Image {
    /// Reads the compression settings after the superblock (`COMPR_CFGS`), as the
    /// kernel does at mount: unknown algorithms and invalid records are refused.
    pub(crate) fn read_compression_info(&self) -> Result<CompressionInfo> {
        let sb = &self.sb;
        let u1 = sb.raw.u1.get();
        let bs = u64::from(sb.block_size());
        let mut info = CompressionInfo::default();
        if !sb.has_incompat(FEATURE_INCOMPAT_COMPR_CFGS) {
            // Older images: LZ4 only, `u1` is its window. Linux 7.0+ counts the image
            // as compressed only with a window or ZERO_PADDING.
            if u1 != 0 || sb.has_incompat(FEATURE_INCOMPAT_LZ4_0PADDING) {
                info.algorithms = 1 << COMPRESSION_LZ4;
                info.lz4_max_distance = u1;
                info.lz4_max_pclusterblks = 1;
            }
            return Ok(info);
        }
        info.has_configs = true;
        info.algorithms = u1;
        if u1 & !ALL_COMPR_ALGS != 0 {
            return Err(self.err(ErrorKind::Unsupported(format!(
                "unknown compression algorithms {:#x}",
                u1 & !ALL_COMPR_ALGS
            ))));
        }
        let mut pos = SUPER_OFFSET + sb.sb_size as u64;
        for alg in 0..COMPRESSION_MAX {
            if u1 & (1 << alg) == 0 {
                continue;
            }
            pos = pos.next_multiple_of(4);
            let mut len = [0u8; 2];
            self.read_meta(&mut len, pos)?;
            let len = match u16::from_le_bytes(len) {
                0 => 65536,
                n => u64::from(n),
            };
            pos += 2;
            self.check_range(pos, len)?;
            let mut rec = [0u8; 16];
            let n = len.min(16) as usize;
            self.read_meta(&mut rec[..n], pos)?;
            pos += len;
            let name = Algorithm::from_id(alg).expect("known id").name();
            let need = if alg == COMPRESSION_LZ4 || alg == COMPRESSION_LZMA {
                14
            } else {
                6
            };
            if (len as usize) < need {
                return Err(self.corrupt(format!(
                    "{name} configuration record of {len} bytes is too short"
                )));
            }
            let unsupported = |m: String| Err(self.err(ErrorKind::Unsupported(m)));
            match alg {
                COMPRESSION_LZ4 => {
                    info.lz4_max_distance = u16::from_le_bytes([rec[0], rec[1]]);
                    let blks = u16::from_le_bytes([rec[2], rec[3]]).max(1);
                    if u64::from(blks) * bs > PCLUSTER_MAX_SIZE {
                        return Err(self.corrupt(format!("lz4 pclusters of {blks} blocks")));
                    }
                    info.lz4_max_pclusterblks = blks;
                }
                COMPRESSION_LZMA => {
                    let dict = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
                    let format = u16::from_le_bytes([rec[4], rec[5]]);
                    if format != 0 {
                        return unsupported(format!("lzma format {format:#x}"));
                    }
                    if !(4096..=LZMA_MAX_DICT_SIZE).contains(&dict) {
                        return unsupported(format!("lzma dictionary size {dict}"));
                    }
                    info.lzma_dict_size = Some(dict);
                }
                COMPRESSION_DEFLATE => {
                    if rec[0] > 15 {
                        return unsupported(format!("deflate window bits {}", rec[0]));
                    }
                    info.deflate_windowbits = Some(rec[0]);
                }
                _ => {
                    if rec[0] != 0 {
                        return unsupported(format!("zstd format {}", rec[0]));
                    }
                    if rec[1] > ZSTD_MAX_WINDOWLOG - 10 {
                        return unsupported(format!("zstd window log {}", u32::from(rec[1]) + 10));
                    }
                    info.zstd_windowlog = Some(rec[1] + 10);
                }
            }
        }
        Ok(info)
    }

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
            self.find_tail(inode, &mut z)?;
        }
        Ok(z)
    }

    /// Maps logical byte `pos` (< size) of a compressed inode to its extent.
    pub(crate) fn zmap(&self, inode: &Inode, pos: u64) -> Result<ZExtent> {
        let z = self.zinfo(inode)?;
        let ext = if z.extents.is_some() {
            self.map_ext(inode, z, pos)?
        } else {
            self.map_fo(inode, z, pos)?
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

    // -----------------------------------------------------------------------------------
    // Lcluster indexes
    // -----------------------------------------------------------------------------------

    fn load_full_lcluster(&self, inode: &Inode, z: &ZInfo, m: &mut Rec, lcn: u64) -> Result<()> {
        let pos = lcn
            .checked_mul(size_of::<LclusterIndex>() as u64)
            .and_then(|o| o.checked_add(inode.meta_end().next_multiple_of(8) + 8 + FULL_INDEX_PAD))
            .ok_or_else(|| self.corrupt(format!("lcluster {lcn} index offset overflows")))?;
        let mut raw = [0u8; 8];
        self.read_meta(&mut raw, pos)?;
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

    fn load_compact_lcluster(
        &self,
        inode: &Inode,
        z: &ZInfo,
        m: &mut Rec,
        lcn: u64,
        lookahead: bool,
    ) -> Result<()> {
        let ebase = inode.meta_end().next_multiple_of(8) + 8;
        let lclusterbits = z.lclusterbits;
        let totalidx = inode.size.div_ceil(u64::from(self.sb.block_size()));
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
        self.read_meta(pack, packstart)?;
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

    fn load_lcluster(
        &self,
        inode: &Inode,
        z: &ZInfo,
        m: &mut Rec,
        lcn: u64,
        lookahead: bool,
    ) -> Result<()> {
        if inode.layout == DataLayout::CompressedCompact {
            self.load_compact_lcluster(inode, z, m, lcn, lookahead)?;
        } else {
            self.load_full_lcluster(inode, z, m, lcn)?;
        }
        if m.typ != LCLUSTER_TYPE_NONHEAD && m.clusterofs >= 1 << z.lclusterbits {
            return Err(self.corrupt(format!(
                "lcluster {lcn} starts its extent at {}, past its end",
                m.clusterofs
            )));
        }
        Ok(())
    }

    /// Goes back `distance` lclusters at a time to the head of the extent; sets
    /// `m.headtype` and returns the extent's first logical byte.
    fn extent_lookback(&self, inode: &Inode, z: &ZInfo, m: &mut Rec, distance: u64) -> Result<u64> {
        let mut distance = distance;
        while distance != 0 && m.lcn >= distance {
            let lcn = m.lcn - distance;
            self.load_lcluster(inode, z, m, lcn, false)?;
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

    fn extent_compressedlen(&self, inode: &Inode, z: &ZInfo, m: &mut Rec) -> Result<u64> {
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
            self.load_lcluster(inode, z, m, lcn, false)?;
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
    fn extent_decompressedlen(&self, inode: &Inode, z: &ZInfo, la: u64) -> Result<u64> {
        let headlcn = la >> z.lclusterbits;
        let mut lcn = headlcn;
        let mut m = Rec::default();
        loop {
            let start = lcn.checked_mul(1 << z.lclusterbits);
            if start.is_none_or(|s| s >= inode.size) {
                return Ok(inode.size - la);
            }
            self.load_lcluster(inode, z, &mut m, lcn, true)?;
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

    /// Looks up the tail extent once per inode (the kernel's FINDTAIL mapping): its
    /// head lcluster, where an inline tail pcluster is, and (full indexes) the high
    /// bits of the fragment offset.
    fn find_tail(&self, inode: &Inode, z: &mut ZInfo) -> Result<()> {
        let ofs = inode.size.checked_sub(1).ok_or_else(|| {
            self.corrupt("empty compressed inode with a tail pcluster or fragment")
        })?;
        let lcb = z.lclusterbits;
        let mut m = Rec::default();
        self.load_lcluster(inode, z, &mut m, ofs >> lcb, false)?;
        if z.idata_size != 0 {
            z.idata_pos = m.nextpackoff;
        }
        let endoff = ofs & ((1 << lcb) - 1);
        if m.typ == LCLUSTER_TYPE_NONHEAD || endoff < m.clusterofs {
            let distance = if m.typ == LCLUSTER_TYPE_NONHEAD {
                m.delta[0]
            } else {
                1
            };
            self.extent_lookback(inode, z, &mut m, distance)?;
        }
        z.tail_headlcn = m.lcn;
        if z.fragment() && inode.layout == DataLayout::CompressedFull {
            z.fragmentoff |= m.pblk << 32;
        }
        Ok(())
    }

    /// Mapping with lcluster indexes (the kernel's `z_erofs_map_blocks_fo`).
    fn map_fo(&self, inode: &Inode, z: &ZInfo, ofs: u64) -> Result<ZExtent> {
        let bsbits = self.sb.blkszbits;
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
        self.load_lcluster(inode, z, &mut m, initial_lcn, false)?;
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
            self.extent_lookback(inode, z, &mut m, distance)?
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
            let blks = self.extent_compressedlen(inode, z, &mut m)?;
            if blks == 0 {
                let llen = self.extent_decompressedlen(inode, z, la)?;
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
        let llen = self.extent_decompressedlen(inode, z, la)?;
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
    fn map_ext(&self, inode: &Inode, z: &ZInfo, pos: u64) -> Result<ZExtent> {
        let recsz = 4u64 << ((z.advise >> ADVISE_EXTRECSZ_BIT) & ADVISE_EXTRECSZ_MASK);
        let mut at = (inode.meta_end().next_multiple_of(8) + 8).next_multiple_of(recsz);
        let bmask = u64::from(self.sb.block_size()) - 1;
        let interlaced = z.advise & ADVISE_INTERLACED_PCLUSTER != 0;
        let mut lend = inode.size;
        let read = |at: u64| -> Result<ZExtentRecord> {
            let mut raw = [0u8; 32];
            self.read_meta(&mut raw[..recsz as usize], at)?;
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
                self.read_meta(&mut raw, at)?;
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
