//! Opening an image: superblock validation, extra devices, the long xattr prefix
//! table, and bounds-checked metadata reads that every other module goes through.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use zerocopy::FromBytes;

use crate::decompress::CompressionInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::format::*;
use crate::inode::Inode;
use crate::source::ReadAt;
use crate::zdata::ZCache;

/// An extra device (blob) of a multi-device image.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The tag from the device table: a path or a digest.
    pub tag: Vec<u8>,
    /// Block count.
    pub blocks: u64,
    /// First block in the unified address space.
    pub uniaddr: u64,
}

/// A long xattr name prefix (`INCOMPAT_XATTR_PREFIXES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongPrefix {
    /// Short prefix index the infix extends.
    pub base_index: u8,
    /// Bytes after the short prefix.
    pub infix: Vec<u8>,
}

impl LongPrefix {
    /// The whole prefix: short prefix then infix.
    pub fn full_name(&self) -> Vec<u8> {
        let mut v = xattr_prefix(self.base_index).unwrap_or_default().to_vec();
        v.extend_from_slice(&self.infix);
        v
    }
}

/// Decoded superblock values.
#[derive(Debug, Clone)]
pub struct SuperInfo {
    /// The raw superblock.
    pub raw: SuperBlock,
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Compatible features.
    pub feature_compat: u32,
    /// Incompatible features.
    pub feature_incompat: u32,
    /// Root directory NID.
    pub root_nid: u64,
    /// Primary device block count.
    pub blocks: u64,
    /// First block of the metadata area.
    pub meta_blkaddr: u64,
    /// First block of the shared xattr area.
    pub xattr_blkaddr: u64,
    /// Base seconds of compact inode timestamps.
    pub epoch: i64,
    /// Nanoseconds of compact inode timestamps.
    pub fixed_nsec: u32,
    /// Inode count.
    pub inos: u64,
    /// Superblock size in bytes.
    pub sb_size: usize,
    /// Fingerprint prefix index when `COMPAT_ISHARE_XATTRS` is set.
    pub ishare_xattr_prefix_id: Option<u8>,
    /// NID of the packed inode when it exists.
    pub packed_nid: Option<u64>,
    /// NID of the metabox inode (`INCOMPAT_METABOX`).
    pub metabox_nid: Option<u64>,
    /// Compression settings (algorithms and their configuration records).
    pub compression: CompressionInfo,
}

impl SuperInfo {
    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.blkszbits
    }
    /// True when compatible feature `bit` is set.
    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }
    /// True when incompatible feature `bit` is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }
    /// Volume label, up to the first NUL.
    pub fn volume_name(&self) -> &[u8] {
        let v = &self.raw.volume_name;
        &v[..v.iter().position(|&b| b == 0).unwrap_or(v.len())]
    }
    /// Names of the feature bits that are set, compatible first. A bit with two
    /// meanings shows both names, as `dump.erofs` does.
    pub fn feature_names(&self) -> Vec<&'static str> {
        let compat = FEATURE_COMPAT_NAMES
            .iter()
            .filter(|(b, _)| self.feature_compat & b != 0);
        let incompat = FEATURE_INCOMPAT_NAMES
            .iter()
            .filter(|(b, _)| self.feature_incompat & b != 0);
        compat.chain(incompat).map(|(_, n)| *n).collect()
    }
}

/// An extra device as opened.
struct Device {
    info: DeviceInfo,
    source: Option<(Arc<str>, Box<dyn ReadAt>)>,
}

/// An open EROFS image.
pub struct Image {
    pub(crate) name: Arc<str>,
    source: Box<dyn ReadAt>,
    size: u64,
    pub(crate) sb: SuperInfo,
    devices: Vec<Device>,
    /// Chunk indexes address extra devices through the unified address space of the
    /// primary device (no devices were given), as the kernel does.
    flatdev: bool,
    pub(crate) device_id_mask: u16,
    pub(crate) prefixes: Vec<LongPrefix>,
    cache: Mutex<MetaCache>,
    /// The packed inode (fragments), read on first use.
    pub(crate) packed: OnceLock<Inode>,
    /// The metabox inode (`INCOMPAT_METABOX`), read when the image is opened as the
    /// kernel does: its data is the home of the inodes whose NID has bit 63 set.
    pub(crate) metabox: Option<Inode>,
    /// Recently decoded compressed extents.
    pub(crate) zcache: Mutex<ZCache>,
}

/// Bit of a metadata address (an inode's location and what follows it) that puts
/// it in the metabox inode's data rather than on the primary device, as bit 63 of a
/// NID does. Offsets inside the metabox stay far below it (NIDs are checked).
pub(crate) const META_IN_METABOX: u64 = 1 << 63;

/// Number of metadata blocks kept in memory (direct-mapped by block number).
const META_CACHE_BLOCKS: usize = 64;

/// A few recently read metadata blocks: inodes, xattrs and directory blocks are
/// small and clustered, so one block read serves many of them.
struct MetaCache {
    slots: Vec<Option<(u64, Box<[u8]>)>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

/// Options for opening an image.
#[derive(Debug, Default, Clone)]
pub struct OpenOptions {
    /// Extra device files, in device table order (like `--device` / `-o device=`).
    pub devices: Vec<PathBuf>,
}

impl Image {
    /// Opens an image file with no extra devices.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens an image file with options.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self> {
        let path = path.as_ref();
        let name: Arc<str> = path.display().to_string().into();
        let file = File::open(path).map_err(|e| Error::new(&name, ErrorKind::Open(e)))?;
        let mut devices: Vec<(Arc<str>, Box<dyn ReadAt>)> = Vec::new();
        for dev in &opts.devices {
            let dname: Arc<str> = dev.display().to_string().into();
            let f = File::open(dev).map_err(|e| Error::new(&dname, ErrorKind::Open(e)))?;
            devices.push((dname, Box::new(f)));
        }
        Self::from_source(name, Box::new(file), devices)
    }

    /// Opens an image from any source; `name` is used in error messages.
    pub fn from_source(
        name: impl Into<Arc<str>>,
        source: Box<dyn ReadAt>,
        devices: Vec<(Arc<str>, Box<dyn ReadAt>)>,
    ) -> Result<Self> {
        let name = name.into();
        let size = source.size().map_err(|e| io_err(&name, 0, 0, e))?;
        let sb = read_superblock(&name, source.as_ref(), size)?;
        let mut img = Image {
            name,
            source,
            size,
            sb,
            devices: Vec::new(),
            flatdev: devices.is_empty(),
            device_id_mask: 0,
            prefixes: Vec::new(),
            cache: Mutex::new(MetaCache {
                slots: vec![None; META_CACHE_BLOCKS],
            }),
            packed: OnceLock::new(),
            metabox: None,
            zcache: Mutex::new(ZCache::default()),
        };
        img.sb.compression = img.read_compression_info()?;
        img.scan_devices(devices)?;
        if let Some(nid) = img.sb.metabox_nid {
            let ino = img.inode(nid).map_err(|e| e.at_path("(metabox inode)"))?;
            img.metabox = Some(ino);
        }
        img.prefixes = img.read_prefixes()?;
        Ok(img)
    }

    /// The image name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decoded superblock.
    pub fn superblock(&self) -> &SuperInfo {
        &self.sb
    }

    /// Size of the primary device in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Extra devices from the device table.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.devices.iter().map(|d| d.info.clone()).collect()
    }

    /// Long xattr name prefixes.
    pub fn long_prefixes(&self) -> &[LongPrefix] {
        &self.prefixes
    }

    /// The inode number the kernel reports for NID `nid` (`erofs_nid_to_ino64`): the
    /// NID itself, except in metabox images, where the metabox bit (63) moves to bit
    /// 31 and bits 31..62 move up one, so inode numbers stay small.
    pub fn ino_of(&self, nid: u64) -> u64 {
        if !self.sb.has_incompat(FEATURE_INCOMPAT_METABOX) {
            return nid;
        }
        ((nid << 1) & !((1 << 32) - 1)) | (nid & ((1 << 31) - 1)) | ((nid >> 63) << 31)
    }

    /// The NID whose inode number is `ino` (the inverse of [`Image::ino_of`]).
    pub fn nid_of(&self, ino: u64) -> u64 {
        if !self.sb.has_incompat(FEATURE_INCOMPAT_METABOX) {
            return ino;
        }
        ((ino >> 1) & !((1 << 31) - 1) & !(1 << 63))
            | (ino & ((1 << 31) - 1))
            | (((ino >> 31) & 1) << 63)
    }

    /// The name of the page-cache-share fingerprint xattr, when the image has one.
    pub fn fingerprint_prefix(&self) -> Option<&LongPrefix> {
        self.sb
            .ishare_xattr_prefix_id
            .and_then(|id| self.prefixes.get(usize::from(id)))
    }

    pub(crate) fn err(&self, kind: ErrorKind) -> Error {
        Error::new(&self.name, kind)
    }

    pub(crate) fn corrupt(&self, msg: impl Into<String>) -> Error {
        self.err(ErrorKind::Corrupt(msg.into()))
    }

    /// Reads `buf.len()` bytes of metadata at `offset`, checking bounds: on the
    /// primary device, or in the metabox inode's data when `offset` carries
    /// [`META_IN_METABOX`].
    pub(crate) fn read_meta(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset & META_IN_METABOX != 0 {
            return self.read_metabox(buf, offset & !META_IN_METABOX);
        }
        let bs = u64::from(self.sb.block_size());
        let (blk, off) = (offset / bs, (offset % bs) as usize);
        let block_end = (blk + 1).saturating_mul(bs);
        // Reads inside one whole block go through the cache; the rest read directly.
        if off + buf.len() > bs as usize || block_end > self.size {
            return read_checked(&self.name, self.source.as_ref(), self.size, buf, offset);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut cache.slots[(blk % META_CACHE_BLOCKS as u64) as usize];
        if slot.as_ref().is_none_or(|(b, _)| *b != blk) {
            let mut data = vec![0u8; bs as usize].into_boxed_slice();
            read_checked(
                &self.name,
                self.source.as_ref(),
                self.size,
                &mut data,
                blk * bs,
            )?;
            *slot = Some((blk, data));
        }
        let (_, data) = slot.as_ref().expect("filled above");
        buf.copy_from_slice(&data[off..off + buf.len()]);
        Ok(())
    }

    /// Reads `len` bytes of metadata into a new buffer.
    pub(crate) fn read_meta_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        // Check the bounds before allocating, so a corrupt length cannot make us
        // allocate more than the image holds.
        self.check_range(offset, len as u64)?;
        let mut v = vec![0; len];
        self.read_meta(&mut v, offset)?;
        Ok(v)
    }

    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset & META_IN_METABOX != 0 {
            let (offset, size) = (offset & !META_IN_METABOX, self.metabox_inode()?.size);
            return match offset.checked_add(len) {
                Some(end) if end <= size => Ok(()),
                _ => Err(self.corrupt(format!(
                    "metadata at {offset}+{len} runs past the metabox inode ({size} bytes)"
                ))),
            };
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(self.err(ErrorKind::Truncated {
                offset,
                len,
                size: self.size,
            })),
        }
    }

    /// The metabox inode, or a corruption error when the image has none (a NID or
    /// address with the metabox bit in an image without `INCOMPAT_METABOX`).
    pub(crate) fn metabox_inode(&self) -> Result<&Inode> {
        self.metabox.as_ref().ok_or_else(|| {
            self.corrupt("metadata in the metabox, but the image has no metabox inode")
        })
    }

    /// Reads bytes `offset..` of the metabox inode's data (decoded when compressed).
    fn read_metabox(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset | META_IN_METABOX, buf.len() as u64)?;
        let mb = self.metabox_inode()?;
        let got = self.read_at(mb, offset, buf)?;
        if got < buf.len() {
            return Err(self.corrupt(format!(
                "metadata at {offset}+{} runs past the metabox inode",
                buf.len()
            )));
        }
        Ok(())
    }

    /// Resolves device `device` (0 = primary, unified address space) and byte
    /// `offset`, as the kernel's `erofs_map_dev` does, to the source holding the bytes,
    /// its name, its size and the offset in it.
    fn resolve(&self, device: u16, offset: u64) -> Result<(&Arc<str>, &dyn ReadAt, u64, u64)> {
        let primary = (&self.name, self.source.as_ref(), self.size, offset);
        if device == 0 {
            if !self.flatdev {
                // Addresses in the unified space that fall inside an extra device.
                let bs = u64::from(self.sb.block_size());
                for d in &self.devices {
                    let (start, len) = (d.info.uniaddr * bs, d.info.blocks * bs);
                    if d.info.uniaddr != 0 && offset >= start && offset - start < len {
                        return self.extra(d, offset - start);
                    }
                }
            }
            return Ok(primary);
        }
        let d = self.devices.get(usize::from(device) - 1).ok_or_else(|| {
            self.corrupt(format!(
                "chunk refers to device {device}, which the device table lacks"
            ))
        })?;
        if self.flatdev {
            let base = d.info.uniaddr.checked_mul(u64::from(self.sb.block_size()));
            let at = base
                .and_then(|b| b.checked_add(offset))
                .ok_or_else(|| self.corrupt("device address overflows"))?;
            if at >= self.size {
                // Blobs appended to the primary device are read in place, as the
                // kernel does without device= options; otherwise the blob is needed.
                return Err(self.err(ErrorKind::Unsupported(format!(
                    "data lives on extra device {device} (tag {:?}), which was not given (use --device)",
                    String::from_utf8_lossy(&d.info.tag)
                ))));
            }
            return Ok((primary.0, primary.1, primary.2, at));
        }
        self.extra(d, offset)
    }

    fn extra<'a>(
        &'a self,
        d: &'a Device,
        offset: u64,
    ) -> Result<(&'a Arc<str>, &'a dyn ReadAt, u64, u64)> {
        let (name, src) = d.source.as_ref().expect("non-flat devices are opened");
        let size = src.size().map_err(|e| io_err(name, 0, 0, e))?;
        Ok((name, src.as_ref(), size, offset))
    }

    /// Reads data from device `device` (0 = primary) at byte `offset`.
    pub(crate) fn read_device(&self, device: u16, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (name, src, size, at) = self.resolve(device, offset)?;
        read_checked(name, src, size, buf, at)
    }

    /// The file and offset holding `len` bytes at `offset` of device `device` (0 =
    /// primary), after checking they lie inside it; `None` when the source is not a
    /// file. For zero-copy transfers (`copy_file_range`, passthrough).
    pub fn device_file(&self, device: u16, offset: u64, len: u64) -> Result<Option<(&File, u64)>> {
        let (name, src, size, at) = self.resolve(device, offset)?;
        match at.checked_add(len) {
            Some(end) if end <= size => Ok(src.as_file().map(|f| (f, at))),
            _ => Err(Error::new(
                name,
                ErrorKind::Truncated {
                    offset: at,
                    len,
                    size,
                },
            )),
        }
    }

    fn scan_devices(&mut self, given: Vec<(Arc<str>, Box<dyn ReadAt>)>) -> Result<()> {
        let count = if self.sb.has_incompat(FEATURE_INCOMPAT_DEVICE_TABLE) {
            usize::from(self.sb.raw.extra_devices.get())
        } else {
            0
        };
        if !given.is_empty() && given.len() != count {
            return Err(self.err(ErrorKind::Unsupported(format!(
                "{} extra devices given, but the image has {count}",
                given.len()
            ))));
        }
        if count == 0 {
            return Ok(());
        }
        self.device_id_mask = ((count + 1).next_power_of_two() - 1) as u16;
        let is48 = self.sb.has_incompat(FEATURE_INCOMPAT_48BIT);
        let mut pos = u64::from(self.sb.raw.devt_slotoff.get()) * DEVT_SLOT_SIZE as u64;
        let mut given = given.into_iter();
        for _ in 0..count {
            let mut raw = [0u8; DEVT_SLOT_SIZE];
            self.read_meta(&mut raw, pos)?;
            let slot = DeviceSlot::read_from_bytes(&raw).expect("slot size");
            let hi = |v: u16| if is48 { u64::from(v) << 32 } else { 0 };
            let info = DeviceInfo {
                tag: slot.tag[..slot.tag.iter().position(|&b| b == 0).unwrap_or(64)].to_vec(),
                blocks: u64::from(slot.blocks_lo.get()) | hi(slot.blocks_hi.get()),
                uniaddr: u64::from(slot.uniaddr_lo.get()) | hi(slot.uniaddr_hi.get()),
            };
            self.devices.push(Device {
                info,
                source: given.next(),
            });
            pos += DEVT_SLOT_SIZE as u64;
        }
        Ok(())
    }

    fn read_prefixes(&self) -> Result<Vec<LongPrefix>> {
        let count = self.sb.raw.xattr_prefix_count;
        if count == 0 {
            return Ok(Vec::new());
        }
        let plain = self.sb.has_compat(FEATURE_COMPAT_PLAIN_XATTR_PFX);
        // Without the plain flag the table lives in the metabox inode's data when
        // there is one, else in the packed inode's, else plain on the primary device.
        let packed = if plain {
            None
        } else if let Some(mb) = &self.metabox {
            Some(mb.clone())
        } else {
            self.sb.packed_nid.map(|nid| self.inode(nid)).transpose()?
        };
        let read = |buf: &mut [u8], pos: u64| -> Result<()> {
            match &packed {
                Some(ino) => {
                    let n = self.read_at(ino, pos, buf)?;
                    if n < buf.len() {
                        return Err(self.corrupt(
                            "long xattr prefix table runs past the packed or metabox inode",
                        ));
                    }
                    Ok(())
                }
                None => self.read_meta(buf, pos),
            }
        };
        let mut pos = u64::from(self.sb.raw.xattr_prefix_start.get()) * 4;
        let mut out = Vec::with_capacity(usize::from(count));
        for i in 0..count {
            pos = pos.next_multiple_of(4);
            let mut len = [0u8; 2];
            read(&mut len, pos)?;
            let len = match u16::from_le_bytes(len) {
                0 => 65536,
                n => usize::from(n),
            };
            if !(1..=NAME_LEN + 1).contains(&len) {
                return Err(self.corrupt(format!("long xattr prefix {i} has invalid length {len}")));
            }
            let mut rec = vec![0u8; len];
            read(&mut rec, pos + 2)?;
            pos += 2 + len as u64;
            out.push(LongPrefix {
                base_index: rec[0],
                infix: rec[1..].to_vec(),
            });
        }
        Ok(out)
    }
}

fn io_err(name: &Arc<str>, offset: u64, len: u64, source: std::io::Error) -> Error {
    Error::new(
        name,
        ErrorKind::Io {
            offset,
            len,
            error: source,
        },
    )
}

fn read_checked(
    name: &Arc<str>,
    src: &dyn ReadAt,
    size: u64,
    buf: &mut [u8],
    offset: u64,
) -> Result<()> {
    let len = buf.len() as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size => {}
        _ => return Err(Error::new(name, ErrorKind::Truncated { offset, len, size })),
    }
    src.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::new(name, ErrorKind::Truncated { offset, len, size })
        } else {
            io_err(name, offset, len, e)
        }
    })
}

/// CRC32C as EROFS stores it: seed ~0, no final inversion.
pub fn erofs_crc32c(data: &[u8]) -> u32 {
    !crc32c::crc32c(data)
}

/// Computes the superblock checksum of an image whose first block is `block`
/// (`block` starts at byte 0 of the device and covers the superblock block).
pub fn superblock_checksum(block: &[u8], blkszbits: u8) -> Option<u32> {
    let start = SUPER_OFFSET as usize;
    let bs = 1usize << blkszbits;
    let len = if bs > start { bs - start } else { bs };
    let mut data = block.get(start..start + len)?.to_vec();
    data[4..8].fill(0);
    Some(erofs_crc32c(&data))
}

fn read_superblock(name: &Arc<str>, src: &dyn ReadAt, size: u64) -> Result<SuperInfo> {
    let corrupt = |m: String| Error::new(name, ErrorKind::Corrupt(m));
    let mut raw = [0u8; size_of::<SuperBlock>()];
    read_checked(name, src, size, &mut raw, SUPER_OFFSET)?;
    let sb = SuperBlock::read_from_bytes(&raw).expect("superblock size");
    if sb.magic.get() != SUPER_MAGIC_V1 {
        return Err(corrupt(format!(
            "bad magic {:#010x} at offset {SUPER_OFFSET} (not an EROFS image)",
            sb.magic.get()
        )));
    }
    let bits = sb.blkszbits;
    if !(MIN_BLKSZBITS..=MAX_BLKSZBITS).contains(&bits) {
        return Err(corrupt(format!(
            "block size 2^{bits} is outside 512 B..64 KiB"
        )));
    }
    if sb.dirblkbits != 0 {
        return Err(Error::new(
            name,
            ErrorKind::Unsupported(format!("dirblkbits {}", sb.dirblkbits)),
        ));
    }
    let compat = sb.feature_compat.get();
    if compat & FEATURE_COMPAT_SB_CHKSUM != 0 {
        let bs = 1u64 << bits;
        let end = SUPER_OFFSET
            + if bs > SUPER_OFFSET {
                bs - SUPER_OFFSET
            } else {
                bs
            };
        let mut block = vec![0u8; end as usize];
        read_checked(name, src, size, &mut block, 0)?;
        let want = superblock_checksum(&block, bits).expect("block read");
        if want != sb.checksum.get() {
            return Err(corrupt(format!(
                "superblock checksum mismatch: stored {:#010x}, computed {want:#010x}",
                sb.checksum.get()
            )));
        }
    }
    let incompat = sb.feature_incompat.get();
    let unknown = incompat & !ALL_FEATURE_INCOMPAT;
    if unknown != 0 {
        return Err(Error::new(
            name,
            ErrorKind::Unsupported(format!("unknown incompatible feature bits {unknown:#x}")),
        ));
    }
    let sb_size = SB_BASE_SIZE + usize::from(sb.sb_extslots) * SB_EXTSLOT_SIZE;
    if sb_size > 4096 - SUPER_OFFSET as usize {
        return Err(corrupt(format!(
            "superblock size {sb_size} (sb_extslots {}) is too large",
            sb.sb_extslots
        )));
    }
    let ishare = if compat & FEATURE_COMPAT_ISHARE_XATTRS != 0 {
        if sb.ishare_xattr_prefix_id >= sb.xattr_prefix_count {
            return Err(corrupt(format!(
                "invalid ishare xattr prefix id {} (the image has {} long prefixes)",
                sb.ishare_xattr_prefix_id, sb.xattr_prefix_count
            )));
        }
        Some(sb.ishare_xattr_prefix_id)
    } else {
        None
    };
    let is48 = incompat & FEATURE_INCOMPAT_48BIT != 0;
    let (root_nid, blocks) = if is48 && sb.rootnid_8b.get() != 0 {
        (
            sb.rootnid_8b.get(),
            u64::from(sb.blocks_lo.get()) | (u64::from(sb.rootnid_2b.get()) << 32),
        )
    } else {
        (
            u64::from(sb.rootnid_2b.get()),
            u64::from(sb.blocks_lo.get()),
        )
    };
    if incompat & FEATURE_INCOMPAT_METABOX != 0 {
        if sb_size <= 0x80 {
            return Err(corrupt(
                "metabox feature without room for metabox_nid".into(),
            ));
        }
        if sb.metabox_nid.get() >> DIRENT_NID_METABOX_BIT != 0 {
            return Err(corrupt("metabox NID refers to the metabox itself".into()));
        }
        // The kernel reads the packed inode before the metabox one: a packed inode
        // inside the metabox cannot be read (and could loop through fragments).
        if incompat & FEATURE_INCOMPAT_FRAGMENTS != 0
            && sb.packed_nid.get() >> DIRENT_NID_METABOX_BIT != 0
        {
            return Err(corrupt("packed inode NID points into the metabox".into()));
        }
    }
    // Every compact inode's nanoseconds: refused as an extended inode's are (see
    // `Image::inode`); the kernel takes them as they are.
    if sb.fixed_nsec.get() >= NSEC_PER_SEC {
        return Err(corrupt(format!(
            "fixed_nsec {} (the nanoseconds of compact inodes' times) is not below 10^9",
            sb.fixed_nsec.get()
        )));
    }
    let packed_nid = (incompat & FEATURE_INCOMPAT_FRAGMENTS != 0 && sb.packed_nid.get() != 0)
        .then(|| sb.packed_nid.get());
    Ok(SuperInfo {
        raw: sb,
        blkszbits: bits,
        feature_compat: compat,
        feature_incompat: incompat,
        root_nid,
        blocks,
        meta_blkaddr: u64::from(sb.meta_blkaddr.get()),
        xattr_blkaddr: u64::from(sb.xattr_blkaddr.get()),
        epoch: sb.epoch.get() as i64,
        fixed_nsec: sb.fixed_nsec.get(),
        inos: sb.inos.get(),
        sb_size,
        ishare_xattr_prefix_id: ishare,
        packed_nid,
        metabox_nid: (incompat & FEATURE_INCOMPAT_METABOX != 0).then(|| sb.metabox_nid.get()),
        compression: CompressionInfo::default(),
    })
}
