//! Inodes: locating one by NID, decoding compact and extended inodes with the
//! kernel's rules, and symlink targets.

use std::sync::OnceLock;

use zerocopy::FromBytes;

use crate::error::{ErrorKind, Result};
use crate::format::*;
use crate::image::{Image, META_IN_METABOX};
use crate::zmap::ZInfo;

/// How an inode's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLayout {
    /// Contiguous blocks from a start block (or a hole when the start is null).
    FlatPlain,
    /// Compressed with full lcluster indexes.
    CompressedFull,
    /// Contiguous blocks with the last partial block inline after the inode.
    FlatInline,
    /// Compressed with compact lcluster indexes.
    CompressedCompact,
    /// Chunks mapped by a block map or chunk indexes.
    ChunkBased,
}

impl DataLayout {
    fn from_raw(v: u16) -> Option<Self> {
        Some(match v {
            INODE_FLAT_PLAIN => Self::FlatPlain,
            INODE_COMPRESSED_FULL => Self::CompressedFull,
            INODE_FLAT_INLINE => Self::FlatInline,
            INODE_COMPRESSED_COMPACT => Self::CompressedCompact,
            INODE_CHUNK_BASED => Self::ChunkBased,
            _ => return None,
        })
    }

    /// The name `dump.erofs` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::FlatPlain => "flat_plain",
            Self::CompressedFull => "compressed_full",
            Self::FlatInline => "flat_inline",
            Self::CompressedCompact => "compressed_compact",
            Self::ChunkBased => "chunk_based",
        }
    }

    /// True for the compressed layouts.
    pub fn is_compressed(self) -> bool {
        matches!(self, Self::CompressedFull | Self::CompressedCompact)
    }
}

/// File type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Fifo.
    Fifo,
    /// Socket.
    Socket,
}

impl FileType {
    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u16) -> Option<Self> {
        Some(match mode & S_IFMT {
            S_IFREG => Self::Regular,
            S_IFDIR => Self::Directory,
            S_IFLNK => Self::Symlink,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFIFO => Self::Fifo,
            S_IFSOCK => Self::Socket,
            _ => return None,
        })
    }

    /// The directory entry type code (`FT_*`).
    pub fn dirent_type(self) -> u8 {
        match self {
            Self::Regular => FT_REG_FILE,
            Self::Directory => FT_DIR,
            Self::Symlink => FT_SYMLINK,
            Self::CharDevice => FT_CHRDEV,
            Self::BlockDevice => FT_BLKDEV,
            Self::Fifo => FT_FIFO,
            Self::Socket => FT_SOCK,
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
        }
    }
}

/// A decoded inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Its NID.
    pub nid: u64,
    /// Extended (64-byte) rather than compact (32-byte).
    pub extended: bool,
    /// Data layout.
    pub layout: DataLayout,
    /// File type.
    pub file_type: FileType,
    /// Mode, type bits included.
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Device number (`new_encode_dev` form) of device nodes.
    pub rdev: u32,
    /// The 32-bit inode number stored on disk (informational).
    pub ino: u32,
    /// Size of the inline xattr area.
    pub xattr_isize: u32,
    /// The "." entry is omitted from this directory.
    pub dot_omitted: bool,
    /// Byte offset of the inode in the image.
    pub(crate) loc: u64,
    /// 32 or 64.
    pub(crate) inode_isize: u32,
    /// First data block, [`NULL_ADDR`] for a hole (flat layouts).
    pub(crate) startblk: u64,
    /// Chunk format bits (chunk-based layout).
    pub(crate) chunkformat: u16,
    /// Compression state (compressed layouts), loaded on first use.
    pub(crate) z: OnceLock<ZInfo>,
}

impl Inode {
    /// Byte offset just past the inode and its inline xattrs.
    pub(crate) fn meta_end(&self) -> u64 {
        self.loc + u64::from(self.inode_isize) + u64::from(self.xattr_isize)
    }

    /// Byte offset of the inode in the image; with bit 63 set, the offset in the
    /// metabox inode's data instead (an inode whose NID has the metabox bit).
    pub fn location(&self) -> u64 {
        self.loc
    }

    /// First data block of a flat layout, or `None` for a hole or other layouts.
    pub fn start_block(&self) -> Option<u64> {
        (matches!(self.layout, DataLayout::FlatPlain | DataLayout::FlatInline)
            && self.startblk != NULL_ADDR)
            .then_some(self.startblk)
    }

    /// Blocks the compressed data occupies (compressed layouts only).
    pub fn compressed_blocks(&self) -> Option<u64> {
        self.layout.is_compressed().then_some(self.startblk)
    }

    /// Chunk size in bytes for chunk-based inodes.
    pub fn chunk_size(&self, blkszbits: u8) -> Option<u64> {
        (self.layout == DataLayout::ChunkBased).then(|| {
            1u64 << (u32::from(blkszbits) + u32::from(self.chunkformat & CHUNK_FORMAT_BLKBITS_MASK))
        })
    }

    /// Chunk format bits.
    pub fn chunk_format(&self) -> u16 {
        self.chunkformat
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// Permission bits (with setuid, setgid and sticky).
    pub fn permissions(&self) -> u16 {
        self.mode & 0o7777
    }

    /// Major and minor numbers of a device node.
    pub fn device_numbers(&self) -> (u32, u32) {
        decode_dev(self.rdev)
    }
}

impl Image {
    /// The root directory's inode.
    pub fn root(&self) -> Result<Inode> {
        self.inode(self.sb.root_nid)
    }

    /// Where the next inode on disk would start after `inode`, as a NID: past the
    /// inode, its inline xattrs and what follows them (an inline tail, a chunk table),
    /// in 32-byte slots. Mkfs tools lay the inodes of a directory's entries out one
    /// after another, so this is the order to read files ahead in. A hint only: the
    /// slot may hold padding (the next inode then starts at a block boundary, see
    /// [`Image::nid_at_next_block`]). `None` for compressed inodes (their index
    /// arrays' size takes the whole map to tell), those in the metabox, and sizes past
    /// the address space.
    pub fn nid_after(&self, inode: &Inode) -> Option<u64> {
        if inode.loc & META_IN_METABOX != 0 {
            return None;
        }
        let bs = u64::from(self.sb.block_size());
        let end = match inode.layout {
            DataLayout::FlatPlain => inode.meta_end(),
            DataLayout::FlatInline => {
                // The last block's worth of data is inline (as `map` reads it).
                let full = inode.size.div_ceil(bs).saturating_sub(1) * bs;
                inode.meta_end().checked_add(inode.size - full)?
            }
            DataLayout::ChunkBased => {
                let unit = if inode.chunkformat & CHUNK_FORMAT_INDEXES != 0 {
                    size_of::<ChunkIndex>() as u64
                } else {
                    BLOCK_MAP_ENTRY_SIZE as u64
                };
                let chunks = inode.size.div_ceil(inode.chunk_size(self.sb.blkszbits)?);
                // mkfs.erofs reserves the table from an 8-byte boundary whatever its
                // entries' size (the kernel reads block maps from a 4-byte one).
                inode
                    .meta_end()
                    .next_multiple_of(8)
                    .checked_add(chunks.checked_mul(unit)?)?
            }
            DataLayout::CompressedFull | DataLayout::CompressedCompact => return None,
        };
        self.slot_nid(end.checked_next_multiple_of(1 << ISLOTBITS)?)
    }

    /// The NID of the first slot of the block after the one holding `nid`'s slot
    /// (where an inode that did not fit the rest of a block starts).
    pub fn nid_at_next_block(&self, nid: u64) -> Option<u64> {
        let bs = u64::from(self.sb.block_size());
        let loc = self
            .meta_base()?
            .checked_add(nid.checked_mul(1 << ISLOTBITS)?)?;
        self.slot_nid((loc / bs).checked_add(1)?.checked_mul(bs)?)
    }

    /// Byte offset of NID 0 (outside the metabox).
    fn meta_base(&self) -> Option<u64> {
        self.sb
            .meta_blkaddr
            .checked_mul(u64::from(self.sb.block_size()))
    }

    /// The NID of the slot at byte offset `loc`.
    fn slot_nid(&self, loc: u64) -> Option<u64> {
        let nid = loc.checked_sub(self.meta_base()?)? >> ISLOTBITS;
        (nid >> DIRENT_NID_METABOX_BIT == 0).then_some(nid)
    }

    /// Reads and decodes the inode `nid`.
    pub fn inode(&self, nid: u64) -> Result<Inode> {
        self.read_inode(nid).map_err(|e| e.at_nid(nid))
    }

    fn read_inode(&self, nid: u64) -> Result<Inode> {
        // A NID with bit 63 addresses a slot in the metabox inode's data; the
        // location keeps that bit, so everything read relative to it (xattrs, inline
        // data, indexes) comes from the metabox too.
        let (base, slot, mbox) = if nid >> DIRENT_NID_METABOX_BIT != 0 {
            self.metabox_inode()?;
            (0, nid & !META_IN_METABOX, META_IN_METABOX)
        } else {
            let base = self
                .sb
                .meta_blkaddr
                .checked_mul(u64::from(self.sb.block_size()));
            (base.unwrap_or(u64::MAX), nid, 0)
        };
        let loc = slot
            .checked_mul(1 << ISLOTBITS)
            .and_then(|o| o.checked_add(base))
            .filter(|o| o & META_IN_METABOX == 0)
            .ok_or_else(|| self.corrupt(format!("NID {nid} is out of range")))?
            | mbox;
        let mut raw = [0u8; size_of::<InodeExtended>()];
        self.read_meta(&mut raw[..size_of::<InodeCompact>()], loc)?;
        let ifmt = u16::from_le_bytes([raw[0], raw[1]]);
        if ifmt & !I_ALL != 0 {
            return Err(self.err(ErrorKind::Unsupported(format!(
                "i_format {ifmt:#x} has unknown bits"
            ))));
        }
        let layout_raw = (ifmt >> I_DATALAYOUT_BIT) & I_DATALAYOUT_MASK;
        let layout = DataLayout::from_raw(layout_raw)
            .ok_or_else(|| self.err(ErrorKind::Unsupported(format!("data layout {layout_raw}"))))?;
        let extended = ifmt & I_VERSION_MASK == INODE_LAYOUT_EXTENDED;
        let mut ino = if extended {
            self.read_meta(
                &mut raw[size_of::<InodeCompact>()..],
                loc + size_of::<InodeCompact>() as u64,
            )?;
            let d = InodeExtended::read_from_bytes(&raw).expect("inode size");
            let mtime = i64::try_from(d.i_mtime.get()).unwrap_or(i64::MAX);
            let size = d.i_size.get();
            if i64::try_from(size).is_err() {
                return Err(self.corrupt(format!("negative i_size {}", size as i64)));
            }
            Inode {
                nid,
                extended,
                layout,
                file_type: FileType::Regular,
                mode: d.i_mode.get(),
                uid: d.i_uid.get(),
                gid: d.i_gid.get(),
                nlink: d.i_nlink.get(),
                size,
                mtime,
                mtime_nsec: d.i_mtime_nsec.get(),
                rdev: d.i_u.get(),
                ino: d.i_ino.get(),
                xattr_isize: xattr_ibody_size(d.i_xattr_icount.get()),
                dot_omitted: false,
                loc,
                inode_isize: 64,
                startblk: u64::from(d.i_u.get()) | (u64::from(d.i_nb.get()) << 32),
                chunkformat: d.i_u.get() as u16,
                z: OnceLock::new(),
            }
        } else {
            let d = InodeCompact::read_from_bytes(&raw[..32]).expect("inode size");
            let mode = d.i_mode.get();
            let nlink_1 = (ifmt >> I_NLINK_1_BIT) & 1 != 0 && mode & S_IFMT != S_IFDIR;
            let (nlink, hi) = if nlink_1 {
                (1, u64::from(d.i_nb.get()))
            } else {
                (u32::from(d.i_nb.get()), 0)
            };
            Inode {
                nid,
                extended,
                layout,
                file_type: FileType::Regular,
                mode,
                uid: u32::from(d.i_uid.get()),
                gid: u32::from(d.i_gid.get()),
                nlink,
                size: u64::from(d.i_size.get()),
                mtime: self.sb.epoch.saturating_add(i64::from(d.i_mtime.get())),
                mtime_nsec: self.sb.fixed_nsec,
                rdev: d.i_u.get(),
                ino: d.i_ino.get(),
                xattr_isize: xattr_ibody_size(d.i_xattr_icount.get()),
                dot_omitted: false,
                loc,
                inode_isize: 32,
                startblk: u64::from(d.i_u.get()) | (hi << 32),
                chunkformat: d.i_u.get() as u16,
                z: OnceLock::new(),
            }
        };
        // The kernel stores any i_mtime_nsec as it is (and stat shows it); we refuse
        // 10^9 and more: no system call accepts such a time (extraction's utimensat
        // failed with EINVAL) and a FUSE mount would carry it into the seconds,
        // showing another time than the kernel. Compact inodes take the superblock's
        // fixed_nsec, refused the same way when the image is opened.
        if ino.mtime_nsec >= NSEC_PER_SEC {
            return Err(self.corrupt(format!(
                "mtime nanoseconds {} are not below 10^9",
                ino.mtime_nsec
            )));
        }
        ino.file_type = FileType::from_mode(ino.mode)
            .ok_or_else(|| self.corrupt(format!("bogus i_mode {:#o}", ino.mode)))?;
        // Compact inodes without NLINK_1 (and directories) have 32-bit addresses and
        // no high bits; the others 48-bit. A flat plain inode whose start block is all
        // ones in those bits is a hole, as in the kernel (for a flat inline inode the
        // value is unused unless it has full blocks, where it is then out of range).
        let wide = ino.extended || ((ifmt >> I_NLINK_1_BIT) & 1 != 0 && !ino.is_dir());
        let addrmask = if wide {
            (1u64 << 48) - 1
        } else {
            u64::from(u32::MAX)
        };
        ino.startblk &= addrmask;
        if matches!(ino.layout, DataLayout::FlatPlain | DataLayout::FlatInline)
            && ino.startblk == addrmask
        {
            ino.startblk = NULL_ADDR;
        }
        match ino.file_type {
            FileType::Directory => ino.dot_omitted = (ifmt >> I_DOT_OMITTED_BIT) & 1 != 0,
            FileType::Regular | FileType::Symlink => {}
            FileType::CharDevice | FileType::BlockDevice => ino.startblk = NULL_ADDR,
            FileType::Fifo | FileType::Socket => {
                ino.rdev = 0;
                ino.startblk = NULL_ADDR;
            }
        }
        if ino.layout == DataLayout::ChunkBased {
            if ino.chunkformat & !CHUNK_FORMAT_ALL != 0 {
                return Err(self.err(ErrorKind::Unsupported(format!(
                    "chunk format {:#x}",
                    ino.chunkformat
                ))));
            }
            let chunkbits = u32::from(self.sb.blkszbits)
                + u32::from(ino.chunkformat & CHUNK_FORMAT_BLKBITS_MASK);
            if chunkbits > 47 {
                return Err(self.corrupt(format!("chunk size 2^{chunkbits} is too large")));
            }
        }
        if ino.xattr_isize > 0 && ino.xattr_isize < size_of::<XattrIbodyHeader>() as u32 {
            return Err(self.corrupt(format!("bogus xattr area size {}", ino.xattr_isize)));
        }
        Ok(ino)
    }

    /// The target of a symbolic link.
    pub fn read_link(&self, inode: &Inode) -> Result<Vec<u8>> {
        if inode.file_type != FileType::Symlink {
            return Err(self
                .err(ErrorKind::WrongType("not a symlink"))
                .at_nid(inode.nid));
        }
        // PATH_MAX including the terminating NUL.
        if inode.size == 0 || inode.size >= 4096 {
            return Err(self
                .corrupt(format!("invalid symlink size {}", inode.size))
                .at_nid(inode.nid));
        }
        let mut target = vec![0u8; inode.size as usize];
        let n = self.read_at(inode, 0, &mut target)?;
        if n != target.len() || target.contains(&0) {
            return Err(self
                .corrupt("symlink target contains NUL or is short")
                .at_nid(inode.nid));
        }
        Ok(target)
    }
}
