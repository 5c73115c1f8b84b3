//! What a build does: the library's counterpart of `mkfs.erofs`'s options.

use std::sync::Arc;

use crate::compress::config::Compression;
use crate::error::{Error, Result};

/// Default name of the page-cache-share fingerprint xattr, as erofs-utils 1.9.2+.
pub const DEFAULT_FINGERPRINT_NAME: &str = "erofs.fingerprint.v1";

/// Default xattr tolerance of `mkfs.erofs -x`: an xattr (name and value) carried by
/// more than this many inodes is stored once, as a shared xattr.
pub const DEFAULT_XATTR_TOLERANCE: i64 = 2;

/// How inode timestamps relate to the build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePolicy {
    /// Inodes keep their source mtimes (`--mkfs-time`, or no `-T`).
    Keep,
    /// Every inode gets the build time, nanoseconds 0 (`-T`).
    Fixed,
    /// Mtimes at or after the build time become the build time (`SOURCE_DATE_EPOCH`).
    Clamp,
}

/// What a tar build does with file data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarData {
    /// Copy it into the image (`--tar=f`).
    Copy,
    /// Leave it in the tar: regular files are chunk-indexed into an extra device,
    /// the tar, whose blocks follow the image's own in the unified address space,
    /// so the image with the tar appended mounts alone (`--tar=i`; 512-byte blocks).
    Index,
    /// The stream holds headers only; regular files become holes (`--tar=headerball`).
    Omitted,
}

/// Largest `--root-xattr-isize`: mkfs.erofs's bound (65535 less an entry header,
/// rounded up to 4 bytes), well within what `i_xattr_icount` can describe.
pub const MAX_INLINE_XATTR_SIZE: u32 = (u16::MAX as u32 - 4).next_multiple_of(4);

/// Which on-disk inode version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeVersion {
    /// Compact (32 bytes) where everything fits, extended (64 bytes) otherwise.
    Auto,
    /// Always compact; mtimes become the build time; an inode that cannot be
    /// compact is an error (`-E force-inode-compact`).
    Compact,
    /// Always extended (`-E force-inode-extended`).
    Extended,
}

/// Everything a build needs besides the source and image paths.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Block size in bytes: 512, 1024, 2048 or 4096.
    pub block_size: u32,
    /// Build time in seconds since the Unix epoch: the superblock epoch, the
    /// reference of compact inode timestamps.
    pub build_time: u64,
    /// How inode mtimes relate to `build_time`.
    pub time_policy: TimePolicy,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume label, at most 15 bytes.
    pub label: Vec<u8>,
    /// Owner of every inode, when set (`--force-uid`, `--all-root`).
    pub force_uid: Option<u32>,
    /// Group of every inode, when set (`--force-gid`, `--all-root`).
    pub force_gid: Option<u32>,
    /// Paths relative to the source root to leave out, with what is below them.
    pub exclude_paths: Vec<Vec<u8>>,
    /// Regular expressions; a relative path matching any is left out.
    pub exclude_regexes: Vec<regex::bytes::Regex>,
    /// Long xattr name prefixes (`--xattr-prefix`), in table order.
    pub xattr_prefixes: Vec<Vec<u8>>,
    /// `mkfs.erofs -x`: negative = no xattrs from the source; otherwise an xattr
    /// carried by more than this many inodes becomes shared.
    pub xattr_tolerance: i64,
    /// Chunk size in bytes for chunk-based regular files (`--chunksize`).
    pub chunk_size: Option<u64>,
    /// 8-byte chunk indexes instead of a 4-byte block map.
    pub chunk_indexes: bool,
    /// Chunk-based files: store equal chunks once and chunks of zeros as holes
    /// (mkfs.erofs's default; `-E ^dedupe` turns it off).
    pub chunk_dedupe: bool,
    /// Chunk-based files: put the chunks on this extra device instead of in the
    /// image (`--blobdev`; needs `chunk_size`).
    pub blob_device: Option<std::path::PathBuf>,
    /// The 48-bit layout (`-E 48bit`): compact inodes keep their own 32-bit mtime
    /// (relative to the epoch), so nearly every inode is compact.
    pub format_48bit: bool,
    /// Directories leave out their "." entry (`-E dot-omitted`; implies 48-bit).
    pub dot_omitted: bool,
    /// Tail-pack regular files into their inode's block (`^noinline_data`).
    pub inline_data: bool,
    /// Inode version choice.
    pub inode_version: InodeVersion,
    /// Store the per-inode xattr name bloom filter (`-E xattr-name-filter`, default on).
    pub xattr_name_filter: bool,
    /// Store the superblock CRC32C.
    pub sb_checksum: bool,
    /// Keep the long xattr prefix table as plain bytes even when a packed inode
    /// could hold it (`-E plain-xattr-prefixes`; matters with fragments).
    pub plain_xattr_prefixes: bool,
    /// Name of the fingerprint xattr; `None` = no fingerprints.
    pub fingerprint: Option<Vec<u8>>,
    /// Threads for scanning, hashing and copying; 0 = one per CPU.
    pub workers: usize,
    /// Tar input only (`--aufs`): convert OCI/AUFS whiteouts as erofs-utils does,
    /// `.wh.NAME` to a 0:0 character device NAME (its directory gets an empty
    /// `trusted.overlay.origin`) and `.wh..wh..opq` to `trusted.overlay.opaque=y`
    /// on its directory.
    pub aufs: bool,
    /// Compress regular files (`-z`); `None` = no compression.
    pub compression: Option<Compression>,
    /// Added to every uid (after `force_uid`); a uid that overflows is an error.
    pub uid_offset: u32,
    /// Added to every gid (after `force_gid`).
    pub gid_offset: u32,
    /// `--ignore-mtime`: an inode that is compact but for its mtime gets the build
    /// time and is compact.
    pub ignore_mtime: bool,
    /// `--hard-dereference` (directory input): every name of a hard-linked file
    /// gets its own inode.
    pub hard_dereference: bool,
    /// At least this many bytes of inline xattrs in the root inode
    /// (`--root-xattr-isize`), so that a later tool can add xattrs in place.
    pub root_xattr_isize: u32,
    /// The image starts this many bytes into the output file (`--offset`); the
    /// bytes before it are zeros.
    pub offset: u64,
    /// The image's block count is rounded up to a multiple of the next power of two
    /// of this (`--fsalignblks`; 0 or 1 = no rounding).
    pub fsalign_blocks: u64,
    /// Each file's data starts at a multiple of this many blocks (`--dsunit`; 0 or 1
    /// = no alignment).
    pub dsunit: u64,
    /// Tar input: what becomes of file data.
    pub tar_data: TarData,
    /// Tar input: keep a copy of the (decompressed) archive here (`--ungzip=X`).
    pub keep_tar: Option<std::path::PathBuf>,
    /// Tar input, gzip-compressed: write its random-access checkpoints here, as an
    /// AWS SOCI zinfo file (`--gzinfo=X`); a tar index (`--tar=i`) may then refer
    /// to the uncompressed stream the zinfo gives access to.
    pub gzinfo: Option<std::path::PathBuf>,
    /// Tar input: write the block map of the regular files' data (image blocks and
    /// tar offsets) here (`--tar=MODE,MAPFILE`).
    pub block_map: Option<std::path::PathBuf>,
    /// Told how far the data pass is (for a progress bar).
    pub progress: Option<Arc<dyn Progress>>,
    /// `-m`: inodes and the long prefix table in the metabox inode.
    pub metabox: Option<crate::metabox::Metabox>,
    /// `--MZ`: the metadata area (and directory blocks) after the file data.
    pub metazone: crate::metabox::MetaZone,
    /// `--zD`: directories compressed, their data in the packed inode (needs
    /// `compression`).
    pub compress_dirs: bool,
    /// Directory input: label every entry from this file_contexts
    /// (`--file-contexts`, under its `--mount-point`), replacing the source's own
    /// `security.selinux`. Tar, OCI and rebuild inputs are left as they are, as
    /// mkfs.erofs does.
    pub file_contexts: Option<Arc<crate::selabel::FileContexts>>,
}

/// Receives the progress of the data pass, which dominates a build's time.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// The pass starts: `total` bytes of file data will be copied.
    fn start(&self, total: u64);
    /// `bytes` more bytes were copied (called from worker threads).
    fn advance(&self, bytes: u64);
    /// The pass is over.
    fn finish(&self);
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            block_size: 4096,
            build_time: 0,
            time_policy: TimePolicy::Keep,
            uuid: [0; 16],
            label: Vec::new(),
            force_uid: None,
            force_gid: None,
            exclude_paths: Vec::new(),
            exclude_regexes: Vec::new(),
            xattr_prefixes: Vec::new(),
            xattr_tolerance: DEFAULT_XATTR_TOLERANCE,
            chunk_size: None,
            chunk_indexes: false,
            chunk_dedupe: true,
            blob_device: None,
            format_48bit: false,
            dot_omitted: false,
            inline_data: true,
            inode_version: InodeVersion::Auto,
            // On by default, as in mkfs.erofs 1.9 (`-E ^xattr-name-filter` turns it off).
            xattr_name_filter: true,
            sb_checksum: true,
            plain_xattr_prefixes: false,
            fingerprint: Some(DEFAULT_FINGERPRINT_NAME.as_bytes().to_vec()),
            workers: 0,
            aufs: false,
            compression: None,
            uid_offset: 0,
            gid_offset: 0,
            ignore_mtime: false,
            hard_dereference: false,
            root_xattr_isize: 0,
            offset: 0,
            fsalign_blocks: 0,
            dsunit: 0,
            tar_data: TarData::Copy,
            keep_tar: None,
            gzinfo: None,
            block_map: None,
            progress: None,
            metabox: None,
            metazone: crate::metabox::MetaZone::default(),
            compress_dirs: false,
            file_contexts: None,
        }
    }
}

impl BuildOptions {
    /// The superblock has the 48-bit feature: `-E 48bit`, implied by
    /// `-E dot-omitted`, and metabox images (`-m`). Compressed files then get
    /// extent records, as mkfs.erofs 1.9.4 writes them.
    pub(crate) fn extent_records(&self) -> bool {
        self.format_48bit || self.dot_omitted || self.metabox.is_some()
    }

    /// Whether the entry at `rel` (relative to the source root, no leading `/`) is
    /// left out by `--exclude-path` or `--exclude-regex`.
    pub(crate) fn excluded(&self, rel: &[u8]) -> bool {
        self.exclude_paths
            .iter()
            .any(|p| p.strip_prefix(b"/").unwrap_or(p) == rel)
            || self.exclude_regexes.iter().any(|r| r.is_match(rel))
    }

    /// An inode's owner after `force_*` and the id offsets; `None` if an offset
    /// overflows 32 bits.
    pub(crate) fn owner(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        let uid = self.force_uid.unwrap_or(uid).checked_add(self.uid_offset)?;
        let gid = self.force_gid.unwrap_or(gid).checked_add(self.gid_offset)?;
        Some((uid, gid))
    }

    /// An mtime after the time policy.
    pub(crate) fn mtime(&self, mtime: i64, nsec: u32) -> (i64, u32) {
        let build = i64::try_from(self.build_time).unwrap_or(i64::MAX);
        match self.time_policy {
            TimePolicy::Keep => (mtime, nsec),
            TimePolicy::Fixed => (build, 0),
            TimePolicy::Clamp if mtime >= build => (build, 0),
            TimePolicy::Clamp => (mtime, nsec),
        }
    }

    /// log2 of the block size, after checking it.
    pub(crate) fn blkszbits(&self) -> Result<u8> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(512..=4096).contains(&bs) {
            return Err(Error::BlockSize(u64::from(bs)));
        }
        Ok(bs.trailing_zeros() as u8)
    }

    /// Checks the options that do not depend on the source tree.
    pub(crate) fn validate(&self) -> Result<()> {
        let bits = self.blkszbits()?;
        if self.label.len() > 15 {
            return Err(Error::InvalidOption(format!(
                "volume label {:?} is {} bytes long, at most 15 fit",
                String::from_utf8_lossy(&self.label),
                self.label.len()
            )));
        }
        if let Some(cs) = self.chunk_size {
            let max = 1u64
                << (u32::from(bits) + u32::from(ishare_erofs::format::CHUNK_FORMAT_BLKBITS_MASK));
            if !cs.is_power_of_two() || cs < u64::from(self.block_size) || cs > max {
                return Err(Error::InvalidOption(format!(
                    "chunk size {cs} must be a power of two from the block size ({}) to {max}",
                    self.block_size
                )));
            }
        }
        if self.blob_device.is_some() && self.chunk_size.is_none() {
            return Err(Error::InvalidOption(
                "--blobdev must be used together with --chunksize".into(),
            ));
        }
        // The device table has room for the tar or the blob, not both.
        if self.blob_device.is_some() && self.tar_data != TarData::Copy {
            return Err(Error::InvalidOption(
                "--blobdev cannot be used with --tar=i or --tar=headerball".into(),
            ));
        }
        if let Some(c) = &self.compression {
            c.validate(self.block_size)?;
        }
        let prefixes = self.xattr_prefixes.iter().chain(self.fingerprint.iter());
        for p in prefixes {
            if p.is_empty() || p.len() > usize::from(u8::MAX) || p.contains(&0) {
                return Err(Error::InvalidOption(format!(
                    "xattr name prefix {:?} must be 1 to 255 bytes without NUL",
                    String::from_utf8_lossy(p)
                )));
            }
        }
        Ok(())
    }
}
