//! Metadata placement options of mkfs.erofs 1.9: the metabox (`-m`, metadata
//! compression) and the metadata zone (`--MZ`).
//!
//! With a metabox every inode of the tree, with its inline xattrs, compressed map,
//! chunk map and inline tail, and the long xattr prefix table, lives in the data of
//! one special regular file, the metabox inode; NIDs carry bit 63 to say so. That data
//! may be compressed with its own pcluster size and algorithm. The build lays the
//! metabox out in a scratch region after the image's blocks, fills it like the rest
//! of the metadata, then stores it as the metabox inode at the end of the image
//! ([`append_metabox`]). The kernel needs `INCOMPAT_48BIT` for a root NID with bit
//! 63, so a metabox image is a 48-bit image.
//!
//! With a metadata zone the metadata area (and with `d`, the directory blocks) comes
//! after the file data instead of before it; NIDs stay relative to `meta_blkaddr`.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::compress::config::{Compression, Compressor};
use crate::error::{Error, Result};

/// The compression algorithm of the metabox inode (`-m#:X`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaboxAlgorithm {
    /// An index into `-z`'s algorithm list.
    Index(usize),
    /// An algorithm by name (added to the image's algorithms).
    Codec(Compressor),
}

/// `-m#[:X]`: metadata in the metabox inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metabox {
    /// Pcluster size of the metabox inode's data in bytes (a multiple of the block
    /// size, at most `-C`'s); used only when the metabox is compressed.
    pub pcluster_size: u32,
    /// Its algorithm; `None` = the first of `-z` (without `-z`: stored uncompressed).
    pub algorithm: Option<MetaboxAlgorithm>,
}

impl Metabox {
    /// Parses `-m`'s argument: `PCLUSTER_SIZE[:ALGORITHM]`, the algorithm an index
    /// into `-z`'s list or a name with its options (`lzma`, `zstd,level=9`).
    pub fn parse(spec: &str) -> Result<Self> {
        let (size, alg) = match spec.split_once(':') {
            Some((s, a)) => (s, Some(a)),
            None => (spec, None),
        };
        let pcluster_size = crate::compress::config::parse_size(size)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "-m {spec}: the metabox pcluster size must be a positive number of bytes"
                ))
            })?;
        let algorithm = match alg {
            None => None,
            Some(a) => Some(match a.parse::<usize>() {
                Ok(i) => MetaboxAlgorithm::Index(i),
                Err(_) => MetaboxAlgorithm::Codec(Compressor::parse(a)?),
            }),
        };
        Ok(Self {
            pcluster_size,
            algorithm,
        })
    }

    /// Checks the pcluster size against the block size and `-z`/`-C`.
    pub(crate) fn validate(&self, block_size: u32, files: Option<&Compression>) -> Result<()> {
        let p = self.pcluster_size;
        if p < block_size || !p.is_multiple_of(block_size) {
            return Err(Error::InvalidOption(format!(
                "-m {p}: the metabox pcluster size must be a multiple of the block size ({block_size})"
            )));
        }
        if let Some(max) = files.map(Compression::max_pcluster)
            && p > max
        {
            return Err(Error::InvalidOption(format!(
                "-m {p}: the metabox pcluster size exceeds the largest pcluster ({max} bytes, -C)"
            )));
        }
        if let (Some(MetaboxAlgorithm::Index(i)), n) =
            (&self.algorithm, files.map_or(0, |c| c.algorithms.len()))
            && *i >= n
        {
            return Err(Error::InvalidOption(format!(
                "-m {p}:{i}: -z lists {n} algorithm(s), so there is no algorithm {i}"
            )));
        }
        Ok(())
    }

    /// Whether the metabox is compressed: with `-z`, or with an algorithm by name.
    pub(crate) fn compressed(&self, files: Option<&Compression>) -> bool {
        files.is_some() || matches!(self.algorithm, Some(MetaboxAlgorithm::Codec(_)))
    }

    /// The image's compression settings once the metabox's algorithm is among them
    /// (for the superblock's algorithm list and configuration records), and the
    /// settings the metabox is compressed with (its algorithm first); `None` when
    /// the metabox is stored uncompressed.
    pub(crate) fn settings(
        &self,
        files: Option<&Compression>,
        block_size: u32,
    ) -> Result<Option<(Compression, Compression)>> {
        if !self.compressed(files) {
            return Ok(None);
        }
        let mut image = match files {
            Some(c) => c.clone(),
            None => Compression::parse("lz4", block_size)?,
        };
        let chosen = match &self.algorithm {
            None => image.algorithms[0].clone(),
            Some(MetaboxAlgorithm::Index(i)) => image.algorithms[*i].clone(),
            Some(MetaboxAlgorithm::Codec(c)) => c.clone(),
        };
        if files.is_none() {
            image.algorithms.clear();
        }
        if !image.algorithms.contains(&chosen) {
            image.algorithms.push(chosen.clone());
        }
        // The metabox's own pcluster may exceed the files' (no -z): the records
        // must announce the largest pcluster the image holds.
        image.pcluster_size = image.pcluster_size.max(self.pcluster_size);
        let mut mbox = image.clone();
        mbox.algorithms = vec![chosen];
        mbox.hints.clear();
        mbox.fragments = false;
        mbox.all_fragments = false;
        mbox.dedupe = false;
        Ok(Some((image, mbox)))
    }
}

/// `--MZ[=0|[id]]`: which metadata goes into the zone after the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaZone {
    /// Inodes (`i`).
    pub inodes: bool,
    /// Directory blocks (`d`; needs `i`).
    pub dirdata: bool,
}

impl MetaZone {
    /// Parses `--MZ`'s optional argument as mkfs.erofs 1.9.4 does: none = both,
    /// `0` = neither, else a set of the letters `i` and `d`.
    pub fn parse(arg: Option<&str>) -> Result<Self> {
        let Some(a) = arg else {
            return Ok(Self {
                inodes: true,
                dirdata: true,
            });
        };
        if a == "0" {
            return Ok(Self::default());
        }
        let mut z = Self::default();
        for c in a.chars() {
            match c {
                'i' => z.inodes = true,
                'd' => z.dirdata = true,
                _ => {
                    return Err(Error::InvalidOption(format!(
                        "--MZ={a}: invalid metadata zone flags (`i` for inodes, `d` for directory data)"
                    )));
                }
            }
        }
        if z.dirdata && !z.inodes {
            return Err(Error::InvalidOption(format!(
                "--MZ={a}: directory data can only go into the metadata zone with the inodes (`id`)"
            )));
        }
        Ok(z)
    }
}

/// Reads `len` bytes at `off` of the image being built (the metabox scratch region).
pub(crate) fn read_back(file: &std::fs::File, path: &Path, off: u64, len: u64) -> Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    file.read_exact_at(&mut v, off)
        .map_err(|e| Error::io(path, "read back the metabox of", e))?;
    Ok(v)
}
