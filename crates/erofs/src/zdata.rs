//! Reading compressed inodes: each extent is decoded whole (directly into the
//! caller's buffer when the read covers it, else into a small cache of recently
//! decoded extents, so sequential reads in small pieces decode each extent once);
//! plain pclusters are read in place; fragments come from the packed inode.
//!
//! Memory per read is bounded by one pcluster (≤ 1 MiB, in a buffer each thread
//! keeps for the next read) plus one extent (≤ 12 MiB).

use std::cell::RefCell;
use std::sync::Arc;

use crate::data::{Extent, ExtentKind};
use crate::decompress::{Algorithm, DecodeError, decode};
use crate::error::{ErrorKind, Result};
use crate::format::{PCLUSTER_MAX_DSIZE, PCLUSTER_MAX_SIZE};
use crate::image::Image;
use crate::inode::Inode;
use crate::zmap::{Pcluster, ZPlace};

thread_local! {
    /// The pcluster being decoded, reused by the thread's next decode (so neither
    /// allocated nor zeroed each time); never more than [`PCLUSTER_MAX_SIZE`].
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
    /// The buffer of an evicted extent that no reader held any more, for the next
    /// decode (so that it is neither allocated nor zeroed again).
    spare: Option<Vec<u8>>,
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
            if let Ok(v) = Arc::try_unwrap(old) {
                self.spare = Some(v);
            }
        }
        self.bytes += data.len();
        self.entries.push((key, data));
    }

    /// A buffer of `len` bytes to decode an extent into: the spare one if its
    /// capacity fits (it may hold old bytes: a successful decode overwrites them
    /// all), else a new one.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        match self.spare.take() {
            Some(mut v) if (len..=len.max(64 << 10) * 2).contains(&v.capacity()) => {
                if v.len() >= len {
                    v.truncate(len);
                } else {
                    v.resize(len, 0);
                }
                v
            }
            _ => vec![0u8; len],
        }
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

    /// Reads bytes `skip..skip + out.len()` of compressed extent `ext` (pcluster
    /// `p`): decoded straight into `out` when that is the whole extent, else through
    /// the cache.
    pub(crate) fn read_pcluster(
        &self,
        ext: &Extent,
        p: &Pcluster,
        skip: u64,
        out: &mut [u8],
    ) -> Result<()> {
        // Mapping checks these; an extent made up by the caller is checked here.
        if u64::from(p.len) > PCLUSTER_MAX_SIZE || ext.len > PCLUSTER_MAX_DSIZE {
            return Err(self.corrupt(format!(
                "pcluster of {} bytes for an extent of {} bytes is too large",
                p.len, ext.len
            )));
        }
        if skip == 0 && out.len() as u64 == ext.len {
            return self.decode_extent(ext.logical, p, out);
        }
        let data = self.decoded(ext, p)?;
        out.copy_from_slice(&data[skip as usize..skip as usize + out.len()]);
        Ok(())
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
    pub(crate) fn read_fragment(&self, inode: &Inode, offset: u64, out: &mut [u8]) -> Result<()> {
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
    fn decoded(&self, e: &Extent, p: &Pcluster) -> Result<Arc<Vec<u8>>> {
        let key = ZKey {
            pcluster: *p,
            llen: e.len,
            blkoff: e.logical % u64::from(self.sb.block_size()),
        };
        let hit = self
            .zcache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key);
        if let Some(d) = hit {
            return Ok(d);
        }
        // The length is at most PCLUSTER_MAX_DSIZE (checked by the caller).
        let mut data = self
            .zcache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buffer(e.len as usize);
        self.decode_extent(e.logical, p, &mut data)?;
        let data = Arc::new(data);
        self.zcache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, data.clone());
        Ok(data)
    }

    /// Reads pcluster `p` (at most [`PCLUSTER_MAX_SIZE`] bytes) and decodes the
    /// extent starting at logical byte `la` into `out` (its whole length).
    fn decode_extent(&self, la: u64, p: &Pcluster, out: &mut [u8]) -> Result<()> {
        // The thread's buffer, unless it is in use (it never is: nothing below
        // decodes) or gone (thread exit).
        let done = INPUT
            .try_with(|b| {
                b.try_borrow_mut()
                    .ok()
                    .map(|mut buf| self.decode_with(la, p, out, &mut buf))
            })
            .ok()
            .flatten();
        match done {
            Some(r) => r,
            None => self.decode_with(la, p, out, &mut Vec::new()),
        }
    }

    /// [`Image::decode_extent`] with `buf` for the pcluster.
    fn decode_with(&self, la: u64, p: &Pcluster, out: &mut [u8], buf: &mut Vec<u8>) -> Result<()> {
        let len = p.len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let input = &mut buf[..len];
        if p.inline {
            self.read_meta(input, p.offset)?;
        } else {
            self.read_device(0, p.offset, input)?;
        }
        self.decode_pcluster(la, p, input, out)
    }

    /// Decodes `input`, the whole pcluster `p`, into `out`: the extent at `la`.
    fn decode_pcluster(&self, la: u64, p: &Pcluster, input: &[u8], out: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size());
        let first_block = (bs - p.offset % bs) as usize;
        decode(
            p.algorithm,
            input,
            out,
            p.partial,
            first_block,
            (la % bs) as usize,
            bs as usize,
        )
        .map_err(|err| {
            let what = format!(
                "{} pcluster at byte {} ({} bytes) of the extent at {}+{}",
                p.algorithm,
                p.offset,
                p.len,
                la,
                out.len()
            );
            match err {
                DecodeError::Corrupt(m) => self.corrupt(format!("{what}: {m}")),
                DecodeError::Unsupported(m) => self.err(ErrorKind::Unsupported(m)),
            }
        })
    }
}
