//! EROFS on-disk structures and constants.
//!
//! Every structure is declared once, little-endian, as a zerocopy type: reading one
//! is a checked copy out of a byte slice, with no `unsafe`. Constant names follow the
//! kernel's `erofs_fs.h` without the `EROFS_` prefix. Field comments give the byte
//! offset inside the structure.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Byte offset of the superblock from the start of the primary device.
pub const SUPER_OFFSET: u64 = 1024;
/// Superblock magic number.
pub const SUPER_MAGIC_V1: u32 = 0xE0F5_E1E2;
/// Size of the fixed part of the superblock; `sb_extslots` 16-byte slots follow.
pub const SB_BASE_SIZE: usize = 128;
/// Size of one superblock extension slot.
pub const SB_EXTSLOT_SIZE: usize = 16;
/// Smallest supported block size shift (512 B).
pub const MIN_BLKSZBITS: u8 = 9;
/// Largest supported block size shift (64 KiB).
pub const MAX_BLKSZBITS: u8 = 16;
/// Inode slot size shift: NIDs count 32-byte slots.
pub const ISLOTBITS: u32 = 5;
/// Longest file name and longest xattr name suffix.
pub const NAME_LEN: usize = 255;
/// Longest xattr name (prefix included) the setxattr and getxattr system calls take.
pub const XATTR_NAME_MAX: usize = 255;
/// Nanoseconds in a second: a valid timestamp's nanoseconds are below this.
pub const NSEC_PER_SEC: u32 = 1_000_000_000;
/// Value of an unmapped block address (a hole).
pub const NULL_ADDR: u64 = u64::MAX;

/// Superblock checksum (CRC32C) is valid.
pub const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x0000_0001;
/// Inode timestamps are modification times.
pub const FEATURE_COMPAT_MTIME: u32 = 0x0000_0002;
/// Per-inode xattr name bloom filter is valid.
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x0000_0004;
/// Shared xattrs live in the metabox inode.
pub const FEATURE_COMPAT_SHARED_EA_IN_METABOX: u32 = 0x0000_0008;
/// Long xattr name prefixes are stored as plain bytes on the primary device.
pub const FEATURE_COMPAT_PLAIN_XATTR_PFX: u32 = 0x0000_0010;
/// `ishare_xattr_prefix_id` names the page-cache-share fingerprint xattr.
pub const FEATURE_COMPAT_ISHARE_XATTRS: u32 = 0x0000_0020;

/// Compressed data is end-aligned in its pcluster (zero padding in front).
pub const FEATURE_INCOMPAT_LZ4_0PADDING: u32 = 0x0000_0001;
/// `u1` is an algorithm bitmap and per-algorithm configs follow the superblock.
pub const FEATURE_INCOMPAT_COMPR_CFGS: u32 = 0x0000_0002;
/// Physical clusters may span several blocks (same bit as `COMPR_CFGS`).
pub const FEATURE_INCOMPAT_BIG_PCLUSTER: u32 = 0x0000_0002;
/// Chunk-based regular files exist.
pub const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x0000_0004;
/// A device table follows; chunk indexes may point at extra devices.
pub const FEATURE_INCOMPAT_DEVICE_TABLE: u32 = 0x0000_0008;
/// A second per-file compression algorithm (same bit as `DEVICE_TABLE`).
pub const FEATURE_INCOMPAT_COMPR_HEAD2: u32 = 0x0000_0008;
/// Compressed tail pclusters are inlined in metadata.
pub const FEATURE_INCOMPAT_ZTAILPACKING: u32 = 0x0000_0010;
/// Tails or whole files live in the packed inode.
pub const FEATURE_INCOMPAT_FRAGMENTS: u32 = 0x0000_0020;
/// Pclusters may be partially referenced (same bit as `FRAGMENTS`).
pub const FEATURE_INCOMPAT_DEDUPE: u32 = 0x0000_0020;
/// A long xattr name prefix table exists.
pub const FEATURE_INCOMPAT_XATTR_PREFIXES: u32 = 0x0000_0040;
/// 48-bit block addresses and 64-bit root NID.
pub const FEATURE_INCOMPAT_48BIT: u32 = 0x0000_0080;
/// Metadata lives in the metabox inode.
pub const FEATURE_INCOMPAT_METABOX: u32 = 0x0000_0100;
/// Every incompatible feature bit this reader knows.
pub const ALL_FEATURE_INCOMPAT: u32 = 0x0000_01FF;

/// Names of the compatible feature bits, as `dump.erofs` prints them.
pub const FEATURE_COMPAT_NAMES: &[(u32, &str)] = &[
    (FEATURE_COMPAT_SB_CHKSUM, "sb_csum"),
    (FEATURE_COMPAT_MTIME, "mtime"),
    (FEATURE_COMPAT_XATTR_FILTER, "xattr_filter"),
    (FEATURE_COMPAT_SHARED_EA_IN_METABOX, "shared_ea_in_metabox"),
    (FEATURE_COMPAT_PLAIN_XATTR_PFX, "plain_xattr_pfx"),
    (FEATURE_COMPAT_ISHARE_XATTRS, "ishare_xattrs"),
];

/// Names of the incompatible feature bits, as `dump.erofs` prints them. Bits with
/// two meanings carry both names.
pub const FEATURE_INCOMPAT_NAMES: &[(u32, &str)] = &[
    (FEATURE_INCOMPAT_LZ4_0PADDING, "0padding"),
    (FEATURE_INCOMPAT_COMPR_CFGS, "compr_cfgs"),
    (FEATURE_INCOMPAT_BIG_PCLUSTER, "big_pcluster"),
    (FEATURE_INCOMPAT_CHUNKED_FILE, "chunked_file"),
    (FEATURE_INCOMPAT_DEVICE_TABLE, "device_table"),
    (FEATURE_INCOMPAT_COMPR_HEAD2, "compr_head2"),
    (FEATURE_INCOMPAT_ZTAILPACKING, "ztailpacking"),
    (FEATURE_INCOMPAT_FRAGMENTS, "fragments"),
    (FEATURE_INCOMPAT_DEDUPE, "dedupe"),
    (FEATURE_INCOMPAT_XATTR_PREFIXES, "xattr_prefixes"),
    (FEATURE_INCOMPAT_48BIT, "48bit"),
    (FEATURE_INCOMPAT_METABOX, "metabox"),
];

/// The superblock, at byte 1024 of the primary device (144 bytes with one ext slot).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct SuperBlock {
    /// 0x00: [`SUPER_MAGIC_V1`].
    pub magic: U32,
    /// 0x04: CRC32C of the superblock block, valid with `FEATURE_COMPAT_SB_CHKSUM`.
    pub checksum: U32,
    /// 0x08: compatible feature bits (`FEATURE_COMPAT_*`).
    pub feature_compat: U32,
    /// 0x0C: log2 of the block size.
    pub blkszbits: u8,
    /// 0x0D: number of 16-byte extension slots after the first 128 bytes.
    pub sb_extslots: u8,
    /// 0x0E: root NID (16 bits); with `48BIT` and a nonzero `rootnid_8b`, bits 32..47
    /// of the block count instead.
    pub rootnid_2b: U16,

    /// 0x10: number of inodes.
    pub inos: U64,
    /// 0x18: base seconds of compact-inode timestamps.
    pub epoch: U64,

    /// 0x20: nanoseconds of every compact-inode timestamp.
    pub fixed_nsec: U32,
    /// 0x24: block count of the primary device (low 32 bits).
    pub blocks_lo: U32,
    /// 0x28: first block of the metadata area; NIDs count from here.
    pub meta_blkaddr: U32,
    /// 0x2C: first block of the shared xattr area.
    pub xattr_blkaddr: U32,

    /// 0x30: volume UUID.
    pub uuid: [u8; 16],

    /// 0x40: volume label, NUL-padded, not necessarily NUL-terminated.
    pub volume_name: [u8; 16],

    /// 0x50: incompatible feature bits (`FEATURE_INCOMPAT_*`).
    pub feature_incompat: U32,
    /// 0x54: with `COMPR_CFGS`, the bitmap of compression algorithms in use;
    /// otherwise the LZ4 window size (0 = 64 KiB).
    pub u1: U16,
    /// 0x56: number of devices besides the primary one.
    pub extra_devices: U16,
    /// 0x58: device table position, in 128-byte slots.
    pub devt_slotoff: U16,
    /// 0x5A: directory block size shift over the block size; must be 0.
    pub dirblkbits: u8,
    /// 0x5B: number of long xattr name prefixes.
    pub xattr_prefix_count: u8,
    /// 0x5C: position of the long prefix table, in 4-byte units.
    pub xattr_prefix_start: U32,

    /// 0x60: NID of the packed inode (fragments; possibly the prefix table).
    pub packed_nid: U64,
    /// 0x68: must be 0 for the xattr name filter to be used.
    pub xattr_filter_reserved: u8,
    /// 0x69: index of the fingerprint xattr in the long prefix table, valid with
    /// `FEATURE_COMPAT_ISHARE_XATTRS`.
    pub ishare_xattr_prefix_id: u8,
    /// 0x6A: reserved.
    pub reserved: [u8; 2],
    /// 0x6C: build time, in seconds after `epoch`.
    pub build_time: U32,

    /// 0x70: (48BIT) 64-bit root NID, used when nonzero.
    pub rootnid_8b: U64,
    /// 0x78: reserved.
    pub reserved2: [u8; 8],

    /// 0x80: (METABOX) NID of the metabox inode.
    pub metabox_nid: U64,
    /// 0x88: reserved, pads to one extension slot.
    pub reserved3: [u8; 8],
}

/// Inode format field (`i_format`): version bit.
pub const I_VERSION_MASK: u16 = 0x01;
/// Inode format field: data layout mask, after shifting by [`I_DATALAYOUT_BIT`].
pub const I_DATALAYOUT_MASK: u16 = 0x07;
/// Inode format field: position of the data layout.
pub const I_DATALAYOUT_BIT: u16 = 1;
/// Non-directory compact inodes: nlink is 1 and `i_nb` holds address high bits.
pub const I_NLINK_1_BIT: u16 = 4;
/// Directories: the "." entry is omitted.
pub const I_DOT_OMITTED_BIT: u16 = 4;
/// Every defined `i_format` bit.
pub const I_ALL: u16 = (1 << (I_NLINK_1_BIT + 1)) - 1;

/// Inode layout version: 32-byte compact inode.
pub const INODE_LAYOUT_COMPACT: u16 = 0;
/// Inode layout version: 64-byte extended inode.
pub const INODE_LAYOUT_EXTENDED: u16 = 1;

/// Data layout: contiguous blocks from `startblk`.
pub const INODE_FLAT_PLAIN: u16 = 0;
/// Data layout: compressed, full lcluster indexes.
pub const INODE_COMPRESSED_FULL: u16 = 1;
/// Data layout: contiguous blocks, last partial block inline after the inode.
pub const INODE_FLAT_INLINE: u16 = 2;
/// Data layout: compressed, compact lcluster indexes.
pub const INODE_COMPRESSED_COMPACT: u16 = 3;
/// Data layout: chunk-based.
pub const INODE_CHUNK_BASED: u16 = 4;
/// First reserved data layout value.
pub const INODE_DATALAYOUT_MAX: u16 = 5;

/// Chunk format: chunk size shift over the block size.
pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x001F;
/// Chunk format: 8-byte chunk indexes instead of a 4-byte block map.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x0020;
/// Chunk format: 48-bit chunk block addresses.
pub const CHUNK_FORMAT_48BIT: u16 = 0x0040;
/// Every defined chunk format bit.
pub const CHUNK_FORMAT_ALL: u16 = (CHUNK_FORMAT_48BIT << 1) - 1;
/// Size of a block map entry.
pub const BLOCK_MAP_ENTRY_SIZE: usize = 4;

/// The 32-byte compact inode.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct InodeCompact {
    /// 0x00: format bits (version, data layout, NLINK_1 / DOT_OMITTED).
    pub i_format: U16,
    /// 0x02: inline xattr area size code (see [`xattr_ibody_size`]).
    pub i_xattr_icount: U16,
    /// 0x04: file type and permission bits.
    pub i_mode: U16,
    /// 0x06: nlink, or with NLINK_1 the high 16 bits of the start block.
    pub i_nb: U16,
    /// 0x08: file size.
    pub i_size: U32,
    /// 0x0C: modification time in seconds after the superblock `epoch`.
    pub i_mtime: U32,
    /// 0x10: start block (low 32 bits), compressed block count, chunk format or rdev.
    pub i_u: U32,
    /// 0x14: inode number for 32-bit stat (informational).
    pub i_ino: U32,
    /// 0x18: owner.
    pub i_uid: U16,
    /// 0x1A: group.
    pub i_gid: U16,
    /// 0x1C: reserved.
    pub i_reserved: U32,
}

/// The 64-byte extended inode.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct InodeExtended {
    /// 0x00: format bits.
    pub i_format: U16,
    /// 0x02: inline xattr area size code.
    pub i_xattr_icount: U16,
    /// 0x04: file type and permission bits.
    pub i_mode: U16,
    /// 0x06: high 16 bits of the start block or compressed block count.
    pub i_nb: U16,
    /// 0x08: file size.
    pub i_size: U64,
    /// 0x10: start block (low 32 bits), compressed block count, chunk format or rdev.
    pub i_u: U32,
    /// 0x14: inode number for 32-bit stat (informational).
    pub i_ino: U32,
    /// 0x18: owner.
    pub i_uid: U32,
    /// 0x1C: group.
    pub i_gid: U32,

    /// 0x20: modification time, seconds since the Unix epoch.
    pub i_mtime: U64,
    /// 0x28: modification time, nanoseconds.
    pub i_mtime_nsec: U32,
    /// 0x2C: hard link count.
    pub i_nlink: U32,

    /// 0x30: reserved.
    pub i_reserved2: [u8; 16],
}

/// Directory entry file type: unknown.
pub const FT_UNKNOWN: u8 = 0;
/// Directory entry file type: regular file.
pub const FT_REG_FILE: u8 = 1;
/// Directory entry file type: directory.
pub const FT_DIR: u8 = 2;
/// Directory entry file type: character device.
pub const FT_CHRDEV: u8 = 3;
/// Directory entry file type: block device.
pub const FT_BLKDEV: u8 = 4;
/// Directory entry file type: fifo.
pub const FT_FIFO: u8 = 5;
/// Directory entry file type: socket.
pub const FT_SOCK: u8 = 6;
/// Directory entry file type: symbolic link.
pub const FT_SYMLINK: u8 = 7;
/// NID bit marking an inode stored inside the metabox inode.
pub const DIRENT_NID_METABOX_BIT: u32 = 63;

/// A 12-byte directory entry; names follow the entry array in the same block.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct Dirent {
    /// 0x00: NID of the target inode.
    pub nid: U64,
    /// 0x08: offset of the name from the start of the directory block.
    pub nameoff: U16,
    /// 0x0A: file type (`FT_*`).
    pub file_type: u8,
    /// 0x0B: reserved.
    pub reserved: u8,
}

/// The 12-byte header of an inode's inline xattr area.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct XattrIbodyHeader {
    /// 0x00: bloom filter of names; a set bit means "no xattr hashes here".
    pub h_name_filter: U32,
    /// 0x04: number of shared xattr ids following the header.
    pub h_shared_count: u8,
    /// 0x05: reserved.
    pub h_reserved2: [u8; 7],
}

/// A 4-byte xattr entry header; the name suffix and the value follow, and the whole
/// entry is padded to 4 bytes.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct XattrEntry {
    /// 0x00: length of the name suffix.
    pub e_name_len: u8,
    /// 0x01: short prefix index, or `XATTR_LONG_PREFIX | n` for long prefix n.
    pub e_name_index: u8,
    /// 0x02: value length.
    pub e_value_size: U16,
}

/// Xattr name index: no prefix (hidden from userspace).
pub const XATTR_INDEX_NONE: u8 = 0;
/// Xattr name index: `user.`.
pub const XATTR_INDEX_USER: u8 = 1;
/// Xattr name index: `system.posix_acl_access` (whole name).
pub const XATTR_INDEX_POSIX_ACL_ACCESS: u8 = 2;
/// Xattr name index: `system.posix_acl_default` (whole name).
pub const XATTR_INDEX_POSIX_ACL_DEFAULT: u8 = 3;
/// Xattr name index: `trusted.`.
pub const XATTR_INDEX_TRUSTED: u8 = 4;
/// Xattr name index: `lustre.` (not exposed by Linux).
pub const XATTR_INDEX_LUSTRE: u8 = 5;
/// Xattr name index: `security.`.
pub const XATTR_INDEX_SECURITY: u8 = 6;
/// Flag in `e_name_index` selecting a long name prefix.
pub const XATTR_LONG_PREFIX: u8 = 0x80;
/// Mask of the long prefix number in `e_name_index`.
pub const XATTR_LONG_PREFIX_MASK: u8 = 0x7F;
/// Number of bits in the xattr name bloom filter.
pub const XATTR_FILTER_BITS: u32 = 32;
/// Filter value of an inode with no xattrs.
pub const XATTR_FILTER_DEFAULT: u32 = u32::MAX;
/// xxh32 seed of the bloom filter, to which the short prefix index is added.
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;

/// The short prefix string of a name index, or `None` for unknown indexes.
pub fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        XATTR_INDEX_NONE => b"",
        XATTR_INDEX_USER => b"user.",
        XATTR_INDEX_POSIX_ACL_ACCESS => b"system.posix_acl_access",
        XATTR_INDEX_POSIX_ACL_DEFAULT => b"system.posix_acl_default",
        XATTR_INDEX_TRUSTED => b"trusted.",
        XATTR_INDEX_LUSTRE => b"lustre.",
        XATTR_INDEX_SECURITY => b"security.",
        _ => return None,
    })
}

/// Size in bytes of the inline xattr area for an `i_xattr_icount` value.
pub fn xattr_ibody_size(icount: u16) -> u32 {
    if icount == 0 {
        0
    } else {
        size_of::<XattrIbodyHeader>() as u32 + 4 * (u32::from(icount) - 1)
    }
}

/// Size of an xattr entry with its name and value, padded to 4 bytes.
pub fn xattr_entry_size(name_len: u8, value_size: u16) -> u32 {
    (size_of::<XattrEntry>() as u32 + u32::from(name_len) + u32::from(value_size))
        .next_multiple_of(4)
}

/// An 8-byte chunk index (`CHUNK_FORMAT_INDEXES`).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct ChunkIndex {
    /// 0x00: bits 32..47 of the start block (with `CHUNK_FORMAT_48BIT`).
    pub startblk_hi: U16,
    /// 0x02: device id (0 = primary), masked by the device count.
    pub device_id: U16,
    /// 0x04: start block, low 32 bits.
    pub startblk_lo: U32,
}

/// Size of a device table slot.
pub const DEVT_SLOT_SIZE: usize = 128;

/// One device table slot (`DEVICE_TABLE`).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct DeviceSlot {
    /// 0x00: device path or blob digest.
    pub tag: [u8; 64],
    /// 0x40: block count of the device, low 32 bits.
    pub blocks_lo: U32,
    /// 0x44: first block of the device in the unified address space, low 32 bits.
    pub uniaddr_lo: U32,
    /// 0x48: (48BIT) block count, high 16 bits.
    pub blocks_hi: U16,
    /// 0x4A: (48BIT) unified start block, high 16 bits.
    pub uniaddr_hi: U16,
    /// 0x4C: reserved.
    pub reserved: [u8; 52],
}

/// Compile-time checks that the structures have their on-disk sizes.
const _: () = {
    assert!(size_of::<SuperBlock>() == 144);
    assert!(size_of::<InodeCompact>() == 32);
    assert!(size_of::<InodeExtended>() == 64);
    assert!(size_of::<Dirent>() == 12);
    assert!(size_of::<XattrIbodyHeader>() == 12);
    assert!(size_of::<XattrEntry>() == 4);
    assert!(size_of::<ChunkIndex>() == 8);
    assert!(size_of::<DeviceSlot>() == DEVT_SLOT_SIZE);
};

/// Linux `new_encode_dev` decoding: 12-bit major, 20-bit minor.
pub fn decode_dev(raw: u32) -> (u32, u32) {
    let major = (raw & 0xfff00) >> 8;
    let minor = (raw & 0xff) | ((raw >> 12) & 0xfff00);
    (major, minor)
}

/// Linux `new_encode_dev`.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// File type bits of `i_mode`.
pub const S_IFMT: u16 = 0o170000;
/// Socket.
pub const S_IFSOCK: u16 = 0o140000;
/// Symbolic link.
pub const S_IFLNK: u16 = 0o120000;
/// Regular file.
pub const S_IFREG: u16 = 0o100000;
/// Block device.
pub const S_IFBLK: u16 = 0o060000;
/// Directory.
pub const S_IFDIR: u16 = 0o040000;
/// Character device.
pub const S_IFCHR: u16 = 0o020000;
/// Fifo.
pub const S_IFIFO: u16 = 0o010000;

// ---------------------------------------------------------------------------------------------
// Compression (layouts COMPRESSED_FULL and COMPRESSED_COMPACT)
// ---------------------------------------------------------------------------------------------

/// Largest encoded size of a physical cluster (pcluster).
pub const PCLUSTER_MAX_SIZE: u64 = 1024 * 1024;
/// Largest decoded size of a physical cluster (one extent).
pub const PCLUSTER_MAX_DSIZE: u64 = 12 * 1024 * 1024;

/// Algorithm id: LZ4 (also LZ4HC output).
pub const COMPRESSION_LZ4: u8 = 0;
/// Algorithm id: MicroLZMA.
pub const COMPRESSION_LZMA: u8 = 1;
/// Algorithm id: raw DEFLATE.
pub const COMPRESSION_DEFLATE: u8 = 2;
/// Algorithm id: Zstandard.
pub const COMPRESSION_ZSTD: u8 = 3;
/// Number of algorithm ids.
pub const COMPRESSION_MAX: u8 = 4;
/// Bitmap of every known algorithm.
pub const ALL_COMPR_ALGS: u16 = (1 << COMPRESSION_MAX) - 1;

/// Largest MicroLZMA dictionary a config may ask for.
pub const LZMA_MAX_DICT_SIZE: u32 = 8 * PCLUSTER_MAX_SIZE as u32;
/// Largest Zstandard window (log2) a config may ask for: 1 MiB.
pub const ZSTD_MAX_WINDOWLOG: u8 = 20;

/// Map header advise (compact layout): 2-byte packs are used.
pub const ADVISE_COMPACTED_2B: u16 = 0x0001;
/// Map header advise (full layout): extent records instead of lcluster indexes.
pub const ADVISE_EXTENTS: u16 = 0x0001;
/// Map header advise: HEAD1 pclusters may span several blocks.
pub const ADVISE_BIG_PCLUSTER_1: u16 = 0x0002;
/// Map header advise: HEAD2 (and PLAIN) pclusters may span several blocks.
pub const ADVISE_BIG_PCLUSTER_2: u16 = 0x0004;
/// Map header advise: the tail pcluster is inline after the indexes (ztailpacking).
pub const ADVISE_INLINE_PCLUSTER: u16 = 0x0008;
/// Map header advise: uncompressed pclusters are stored rotated (interlaced).
pub const ADVISE_INTERLACED_PCLUSTER: u16 = 0x0010;
/// Map header advise: the tail extent is a fragment in the packed inode.
pub const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x0020;
/// Map header advise: position of the extent record size code (extent layout).
pub const ADVISE_EXTRECSZ_BIT: u16 = 1;
/// Map header advise: mask of the extent record size code.
pub const ADVISE_EXTRECSZ_MASK: u16 = 0x3;
/// Bit of `h_clusterbits`: the whole file is a fragment in the packed inode.
pub const FRAGMENT_INODE_BIT: u8 = 7;

/// Lcluster type: head of an uncompressed (plain) pcluster.
pub const LCLUSTER_TYPE_PLAIN: u8 = 0;
/// Lcluster type: head of a pcluster compressed with the HEAD1 algorithm.
pub const LCLUSTER_TYPE_HEAD1: u8 = 1;
/// Lcluster type: continues the extent of an earlier head.
pub const LCLUSTER_TYPE_NONHEAD: u8 = 2;
/// Lcluster type: head of a pcluster compressed with the HEAD2 algorithm.
pub const LCLUSTER_TYPE_HEAD2: u8 = 3;

/// Full index `di_advise`: mask of the lcluster type.
pub const LI_LCLUSTER_TYPE_MASK: u16 = 0x3;
/// Full index `di_advise` (heads): the pcluster is only partially referenced.
pub const LI_PARTIAL_REF: u16 = 1 << 15;
/// Full index `di_advise` (heads): the pcluster is a hole.
pub const LI_HOLE: u16 = 1 << 14;
/// First NONHEAD `delta[0]`: flag that the rest is the pcluster's block count.
pub const LI_D0_CBLKCNT: u16 = 1 << 11;

/// Extent record `plen`: the pcluster is only partially referenced.
pub const EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
/// Extent record `plen`: position of the format (0 = plain, n = algorithm n − 1).
pub const EXTENT_PLEN_FMT_BIT: u32 = 28;
/// Extent record `plen`: mask of the encoded length.
pub const EXTENT_PLEN_MASK: u32 = ((PCLUSTER_MAX_SIZE as u32) << 1) - 1;

/// The 8-byte map header of a compressed inode, at `round_up(inode end, 8)`.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct MapHeader {
    /// 0x00: `h_fragmentoff`, or {reserved u16, `h_idata_size` u16}, or the low 32
    /// bits of the extent count.
    pub h_u: U32,
    /// 0x04: `ADVISE_*` bits.
    pub h_advise: U16,
    /// 0x06: algorithm of HEAD1 (low nibble) and HEAD2 (high nibble) lclusters.
    pub h_algorithmtype: u8,
    /// 0x07: lcluster size shift over the block size (bits 0–3); bit 7: the whole
    /// file is a fragment.
    pub h_clusterbits: u8,
}

/// An 8-byte full (non-compact) lcluster index.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct LclusterIndex {
    /// 0x00: type (bits 0–1) and `LI_*` flags.
    pub di_advise: U16,
    /// 0x02: where the extent starts inside this lcluster (heads).
    pub di_clusterofs: U16,
    /// 0x04: heads: start block of the pcluster; NONHEAD: `delta[0]` (low 16 bits,
    /// distance back to the head) and `delta[1]` (high 16 bits, distance to the next
    /// head).
    pub di_u: U32,
}

/// A compressed extent record (extent layout; only the first 4, 8, 16 or 32 bytes
/// are stored, per `ADVISE_EXTRECSZ`).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct ZExtentRecord {
    /// 0x00: encoded length, `EXTENT_PLEN_PARTIAL` and the format.
    pub plen: U32,
    /// 0x04: physical byte offset (low 32 bits).
    pub pstart_lo: U32,
    /// 0x08: physical byte offset (high 32 bits).
    pub pstart_hi: U32,
    /// 0x0C: logical byte offset (low 32 bits).
    pub lstart_lo: U32,
    /// 0x10: logical byte offset (high 32 bits).
    pub lstart_hi: U32,
    /// 0x14: reserved.
    pub reserved: [u8; 12],
}

/// Size of the map header plus the padding before full lcluster indexes.
pub const FULL_INDEX_PAD: u64 = 8;

const _: () = {
    assert!(size_of::<MapHeader>() == 8);
    assert!(size_of::<LclusterIndex>() == 8);
    assert!(size_of::<ZExtentRecord>() == 32);
};
