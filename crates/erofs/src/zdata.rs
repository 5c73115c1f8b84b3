//! Reading compressed inodes: each extent is decoded whole (directly into the
//! caller's buffer when the read covers it, else into a small cache of recently
//! decoded extents, so sequential reads in small pieces decode each extent once);
//! plain pclusters are read in place; fragments come from the packed inode.
//!
//! Memory per read is bounded by one pcluster (≤ 1 MiB) plus one extent (≤ 12 MiB).

use std::sync::Arc;

use crate::data::{Extent, ExtentKind};
use crate::decompress::{DecodeError, decode};
use crate::error::{ErrorKind, Result};
use crate::image::Image;
use crate::inode::Inode;
use crate::zmap::{Algorithm, Pcluster, ZExtent, ZPlace};

/// Decoded bytes kept at most (an extent larger than this is still kept alone).
const ZCACHE_BYTES: usize = 16 << 20;
/// Decoded extents kept at most.
const ZCACHE_ENTRIES: usize = 8;

/// What determines an extent's decoded bytes: the pcluster, the output length and,
/// for interlaced data, the extent's offset in its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ZKey {
    pcluster: Pcluster,
    llen: u64,
    blkoff: u64,
}

/// Recently decoded extents, most recent last.
#[derive(Debug, Default)]
pub(crate) struct ZCache {
    entries: Vec<(ZKey, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl ZCache {
    fn get(&mut self, key: &ZKey) -> Option<Arc<Vec<u8>>> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let e = self.entries.remove(i);
        let data = e.1.clone();
        self.entries.push(e);
        Some(data)
    }

    fn insert(&mut self, key: ZKey, data: Arc<Vec<u8>>) {
        if self.entries.iter().any(|(k, _)| *k == key) {
            return;
        }
        while !self.entries.is_empty()
            && (self.entries.len() >= ZCACHE_ENTRIES || self.bytes + data.len() > ZCACHE_BYTES)
        {
            let (_, old) = self.entries.remove(0);
            self.bytes -= old.len();
        }
        self.bytes += data.len();
        self.entries.push((key, data));
    }
}

impl Image {
    /// The extent of a compressed inode holding `pos`, as [`Image::map`] shows it:
    /// plain pclusters as mapped or inline bytes (unless `raw`), the others as
    /// `Compressed`.
    pub(crate) fn map_compressed(&self, inode: &Inode, pos: u64, raw: bool) -> Result<Extent> {
        let e = self.zmap(inode, pos)?;
        let kind = match e.place {
            ZPlace::Hole => ExtentKind::Hole,
            ZPlace::Fragment { offset } => ExtentKind::Fragment { offset },
            ZPlace::Pcluster(p) if p.algorithm == Algorithm::Plain && !raw => {
                if p.inline {
                    ExtentKind::Inline { offset: p.offset }
                } else {
                    ExtentKind::Mapped {
                        device: 0,
                        offset: p.offset,
                    }
                }
            }
            ZPlace::Pcluster(p) => ExtentKind::Compressed(p),
        };
        Ok(Extent {
            logical: e.la,
            len: e.llen,
            kind,
        })
    }

    /// `read_at` for compressed inodes.
    pub(crate) fn read_compressed(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let want = (buf.len() as u64).min(inode.size.saturating_sub(pos)) as usize;
        let mut done = 0;
        while done < want {
            let at = pos + done as u64;
            let e = self.zmap(inode, at)?;
            let skip = at - e.la;
            let n = ((e.llen - skip) as usize).min(want - done);
            let out = &mut buf[done..done + n];
            match e.place {
                ZPlace::Hole => out.fill(0),
                ZPlace::Fragment { offset } => {
                    let off = offset.checked_add(skip).ok_or_else(|| {
                        self.corrupt(format!("fragment offset {offset} overflows"))
                    })?;
                    self.read_fragment(inode, off, out)?;
                }
                ZPlace::Pcluster(p) if p.algorithm == Algorithm::Plain => {
                    if p.inline {
                        self.read_meta(out, p.offset + skip)?;
                    } else {
                        self.read_device(0, p.offset + skip, out)?;
                    }
                }
                ZPlace::Pcluster(p) => {
                    if skip == 0 && n as u64 == e.llen {
                        self.decode_extent(&e, &p, out)?;
                    } else {
                        let data = self.decoded(&e, &p)?;
                        out.copy_from_slice(&data[skip as usize..skip as usize + n]);
                    }
                }
            }
            done += n;
        }
        Ok(done)
    }

    /// The packed inode, read once.
    fn packed_inode(&self) -> Result<&Inode> {
        if let Some(p) = self.packed.get() {
            return Ok(p);
        }
        let nid = self
            .sb
            .packed_nid
            .ok_or_else(|| self.corrupt("fragment in an image without a packed inode"))?;
        let ino = self.inode(nid)?;
        Ok(self.packed.get_or_init(|| ino))
    }

    /// Fills `out` from byte `offset` of the packed inode.
    fn read_fragment(&self, inode: &Inode, offset: u64, out: &mut [u8]) -> Result<()> {
        if Some(inode.nid) == self.sb.packed_nid {
            return Err(self.corrupt("fragment inside the packed inode itself"));
        }
        let packed = self.packed_inode()?;
        let got = self.read_at(packed, offset, out)?;
        if got < out.len() {
            return Err(self.corrupt(format!(
                "fragment at {offset}+{} runs past the packed inode ({} bytes)",
                out.len(),
                packed.size
            )));
        }
        Ok(())
    }

    /// The decoded bytes of extent `e`, from the cache or decoded now.
    fn decoded(&self, e: &ZExtent, p: &Pcluster) -> Result<Arc<Vec<u8>>> {
        let key = ZKey {
            pcluster: *p,
            llen: e.llen,
            blkoff: e.la % u64::from(self.sb.block_size()),
        };
        let hit = self
            .zcache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key);
        if let Some(d) = hit {
            return Ok(d);
        }
        // llen is at most PCLUSTER_MAX_DSIZE (checked when mapping).
        let mut data = vec![0u8; e.llen as usize];
        self.decode_extent(e, p, &mut data)?;
        let data = Arc::new(data);
        self.zcache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, data.clone());
        Ok(data)
    }

    /// Reads pcluster `p` and decodes extent `e` into `out` (its whole length).
    fn decode_extent(&self, e: &ZExtent, p: &Pcluster, out: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size());
        let mut input = vec![0u8; p.len as usize];
        if p.inline {
            self.read_meta(&mut input, p.offset)?;
        } else {
            self.read_device(0, p.offset, &mut input)?;
        }
        let first_block = (bs - p.offset % bs) as usize;
        decode(
            p.algorithm,
            &input,
            out,
            p.partial,
            first_block,
            (e.la % bs) as usize,
            bs as usize,
        )
        .map_err(|err| {
            let what = format!(
                "{} pcluster at byte {} ({} bytes) of the extent at {}+{}",
                p.algorithm, p.offset, p.len, e.la, e.llen
            );
            match err {
                DecodeError::Corrupt(m) => self.corrupt(format!("{what}: {m}")),
                DecodeError::Unsupported(m) => self.err(ErrorKind::Unsupported(m)),
            }
        })
    }
}
