//! File data: mapping a logical offset to where its bytes live (blocks on a device,
//! the inline tail, or a hole), and positional reads built on that mapping.

use zerocopy::FromBytes;

use crate::error::Result;
use crate::format::*;
use crate::image::Image;
use crate::inode::{DataLayout, Inode};
use crate::zmap::Pcluster;

/// Where a run of file bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Reads as zeros.
    Hole,
    /// On device `device` (0 = primary) at byte `offset`.
    Mapped {
        /// Device index: 0 is the primary device, n the n-th extra device.
        device: u16,
        /// Byte offset on that device (unified address space for device 0).
        offset: u64,
    },
    /// In the metadata area at byte `offset` (inline tail): of the primary device,
    /// or, when bit 63 of `offset` is set, of the metabox inode's data (an inode in
    /// the metabox; read it with [`Image::read_extent`]).
    Inline {
        /// Byte offset on the primary device, or in the metabox with bit 63 set.
        offset: u64,
    },
    /// Encoded in a pcluster (compressed inodes): read it with [`Image::read_at`].
    Compressed(Pcluster),
    /// In the packed inode (a fragment), from byte `offset` of its data: read it
    /// with [`Image::read_at`].
    Fragment {
        /// Byte offset in the packed inode's data of the extent's first byte.
        offset: u64,
    },
}

/// A run of file bytes with one placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical byte.
    pub logical: u64,
    /// Length in bytes (never past the file size).
    pub len: u64,
    /// Placement.
    pub kind: ExtentKind,
}

/// Most chunk entries looked at per mapping call; merges adjacent chunks into one
/// extent without reading an unbounded index range.
const MAX_CHUNKS_PER_MAP: u64 = 512;

impl Image {
    /// Maps logical byte `pos` (< size) of `inode` to the extent that contains it.
    ///
    /// In compressed inodes, uncompressed pclusters show as `Mapped` or `Inline`
    /// bytes, compressed ones as `Compressed` (with their whole decoded length), and
    /// tails stored in the packed inode as `Fragment`.
    pub fn map(&self, inode: &Inode, pos: u64) -> Result<Extent> {
        self.map_inner(inode, pos, false)
            .map_err(|e| e.at_nid(inode.nid))
    }

    /// Like [`Image::map`], but every pcluster of a compressed inode, uncompressed
    /// ones included, shows as `Compressed` (for listing extents, `dump -e`).
    pub fn map_raw(&self, inode: &Inode, pos: u64) -> Result<Extent> {
        self.map_inner(inode, pos, true)
            .map_err(|e| e.at_nid(inode.nid))
    }

    fn map_inner(&self, inode: &Inode, pos: u64, raw: bool) -> Result<Extent> {
        if pos >= inode.size {
            return Err(self.corrupt(format!("map past end of file: {pos} >= {}", inode.size)));
        }
        let bs = u64::from(self.sb.block_size());
        match inode.layout {
            DataLayout::CompressedFull | DataLayout::CompressedCompact => {
                self.map_compressed(inode, pos, raw)
            }
            DataLayout::FlatPlain | DataLayout::FlatInline => {
                let tail_inline = inode.layout == DataLayout::FlatInline;
                if !tail_inline && inode.startblk == NULL_ADDR {
                    return Ok(Extent {
                        logical: 0,
                        len: inode.size,
                        kind: ExtentKind::Hole,
                    });
                }
                let nblocks = inode.size.div_ceil(bs);
                let flat_end = (nblocks - u64::from(tail_inline)) * bs;
                if pos < flat_end {
                    let offset = inode
                        .startblk
                        .checked_mul(bs)
                        .filter(|o| o.checked_add(flat_end).is_some())
                        .ok_or_else(|| {
                            self.corrupt(format!("start block {} is out of range", inode.startblk))
                        })?;
                    let len = flat_end.min(inode.size);
                    return Ok(Extent {
                        logical: 0,
                        len,
                        kind: ExtentKind::Mapped { device: 0, offset },
                    });
                }
                let offset = inode.meta_end() + (flat_end % bs);
                let len = inode.size - flat_end;
                if offset % bs + len > bs {
                    return Err(self.corrupt("inline data crosses a block boundary"));
                }
                Ok(Extent {
                    logical: flat_end,
                    len,
                    kind: ExtentKind::Inline { offset },
                })
            }
            DataLayout::ChunkBased => self.map_chunks(inode, pos),
        }
    }

    fn map_chunks(&self, inode: &Inode, pos: u64) -> Result<Extent> {
        let bs = u64::from(self.sb.block_size());
        let chunk_size = inode.chunk_size(self.sb.blkszbits).expect("chunk-based");
        let indexes = inode.chunkformat & CHUNK_FORMAT_INDEXES != 0;
        let unit = if indexes {
            size_of::<ChunkIndex>() as u64
        } else {
            BLOCK_MAP_ENTRY_SIZE as u64
        };
        let addrmask = if inode.chunkformat & CHUNK_FORMAT_48BIT != 0 {
            (1u64 << 48) - 1
        } else {
            u64::from(u32::MAX)
        };
        let first = pos / chunk_size;
        let nchunks = inode.size.div_ceil(chunk_size);
        let count = (nchunks - first).min(MAX_CHUNKS_PER_MAP);
        let table = inode.meta_end().next_multiple_of(unit);
        let at = first
            .checked_mul(unit)
            .and_then(|o| o.checked_add(table))
            .ok_or_else(|| self.corrupt("chunk index offset overflows"))?;
        let raw = self.read_meta_vec(at, (count * unit) as usize)?;
        // Decodes entry i to (device, block) or None for a hole.
        let entry = |i: usize| -> Option<(u16, u64)> {
            let e = &raw[i * unit as usize..(i + 1) * unit as usize];
            if indexes {
                let ci = ChunkIndex::read_from_bytes(e).expect("index size");
                let blk = (u64::from(ci.startblk_lo.get())
                    | (u64::from(ci.startblk_hi.get()) << 32))
                    & addrmask;
                (blk != addrmask).then_some((ci.device_id.get() & self.device_id_mask, blk))
            } else {
                let blk = u64::from(u32::from_le_bytes(e.try_into().expect("entry size")));
                (blk != u64::from(u32::MAX)).then_some((0, blk))
            }
        };
        let head = entry(0);
        let per_chunk_blocks = chunk_size / bs;
        let mut n = 1;
        while n < count as usize {
            let next = match (head, entry(n)) {
                (None, None) => true,
                (Some((d0, b0)), Some((d, b))) => {
                    d == d0 && Some(b) == b0.checked_add(per_chunk_blocks * n as u64)
                }
                _ => false,
            };
            if !next {
                break;
            }
            n += 1;
        }
        let logical = first * chunk_size;
        let len = (n as u64 * chunk_size).min(inode.size - logical);
        let kind = match head {
            None => ExtentKind::Hole,
            Some((device, blk)) => ExtentKind::Mapped {
                device,
                // The whole extent must be addressable, so offset + skip never wraps.
                offset: blk
                    .checked_mul(bs)
                    .filter(|o| o.checked_add(len).is_some())
                    .ok_or_else(|| self.corrupt(format!("chunk address {blk} overflows")))?,
            },
        };
        Ok(Extent { logical, len, kind })
    }

    /// Reads file bytes at `pos` into `buf`; returns the count read (short only at
    /// end of file).
    pub fn read_at(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let want = (buf.len() as u64).min(inode.size.saturating_sub(pos)) as usize;
        let mut done = 0;
        while done < want {
            let at = pos + done as u64;
            let ext = self.map(inode, at)?;
            let skip = at - ext.logical;
            let n = ((ext.len - skip) as usize).min(want - done);
            self.read_extent(inode, &ext, skip, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(done)
    }

    /// Reads bytes `skip..skip + out.len()` of extent `ext` of `inode` (as
    /// [`Image::map`] or [`Image::map_raw`] returned it) into `out`, without mapping
    /// again.
    ///
    /// For reading whole files in order: map at the current position, read the whole
    /// extent (`skip` 0, `out.len() == ext.len`), move on to its end. A compressed
    /// extent read whole is decoded once, straight into `out`, with a per-thread
    /// buffer for the pcluster; read in parts, it is decoded once into a small cache
    /// of recently decoded extents that the following parts are copied from.
    ///
    /// # Panics
    ///
    /// If `skip + out.len()` is past the end of the extent (`ext.len`).
    pub fn read_extent(
        &self,
        inode: &Inode,
        ext: &Extent,
        skip: u64,
        out: &mut [u8],
    ) -> Result<()> {
        assert!(
            skip.checked_add(out.len() as u64)
                .is_some_and(|end| end <= ext.len),
            "read_extent: {skip}+{} is past the extent's {} bytes",
            out.len(),
            ext.len
        );
        let at = |offset: u64| {
            offset
                .checked_add(skip)
                .ok_or_else(|| self.corrupt(format!("extent offset {offset} overflows")))
        };
        match ext.kind {
            ExtentKind::Hole => {
                out.fill(0);
                Ok(())
            }
            ExtentKind::Mapped { device, offset } => self.read_device(device, at(offset)?, out),
            ExtentKind::Inline { offset } => self.read_meta(out, at(offset)?),
            ExtentKind::Compressed(p) => self.read_pcluster(ext, &p, skip, out),
            ExtentKind::Fragment { offset } => self.read_fragment(inode, at(offset)?, out),
        }
        .map_err(|e| e.at_nid(inode.nid))
    }

    /// Reads a whole file into memory; for small files (symlinks, tests).
    pub fn read_to_vec(&self, inode: &Inode) -> Result<Vec<u8>> {
        let len = usize::try_from(inode.size)
            .map_err(|_| self.corrupt("file too large").at_nid(inode.nid))?;
        // Sparse files may legitimately exceed the image; everything else must fit.
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| self.corrupt("file too large to buffer").at_nid(inode.nid))?;
        v.resize(len, 0);
        self.read_at(inode, 0, &mut v)?;
        Ok(v)
    }
}
