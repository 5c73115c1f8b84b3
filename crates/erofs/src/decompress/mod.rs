//! Compression: the algorithms an image may use and their superblock configuration
//! (`COMPR_CFGS`), and decoding one pcluster into one extent, as the kernel's
//! `decompressor*.c`: the two uncompressed forms (plain and interlaced) here, one
//! file per codec (LZ4, MicroLZMA, raw DEFLATE, Zstandard).
//!
//! Each decoder writes exactly `out.len()` bytes or fails: a stream that ends early,
//! or (unless the pcluster is only partially referenced) goes on past the extent, is
//! corrupt. Nothing is ever written outside `out`. Compressed data is end-aligned in
//! its pcluster behind zero padding (`ZERO_PADDING`, always on for everything but
//! very old LZ4 images); the padding must end inside the first block, as the kernel
//! requires. Each codec is a cargo feature (all on by default); a codec compiled out
//! gives [`DecodeError::Unsupported`].
//!
//! The decoders are the C libraries fsck.erofs uses: liblz4 (`lz4-sys`), liblzma
//! (`liblzma-sys`), libdeflate (`libdeflater`, a safe wrapper) and libzstd (`zstd`).
//! The calls into liblz4 and liblzma are the reader's only `unsafe` code, all in
//! [`lz4`] and [`lzma`]: each passes one input and one output slice, with their
//! lengths.

#[cfg(feature = "deflate")]
mod deflate;
#[cfg(feature = "lz4")]
mod lz4;
#[cfg(feature = "lzma")]
mod lzma;
#[cfg(feature = "zstd")]
mod zstd;

use std::fmt;

use crate::error::{ErrorKind, Result};
use crate::format::*;
use crate::image::Image;

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
}

/// Why a pcluster could not be decoded.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The data is not a valid stream for the extent.
    Corrupt(String),
    /// The codec was not compiled in.
    Unsupported(String),
}

fn corrupt(m: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt(m.into())
}

/// A codec's decoder: the stream (zero padding stripped) into exactly `out`, or
/// only its first `out.len()` bytes when the pcluster is partially referenced.
type Decoder = fn(&[u8], &mut [u8], bool) -> Result<(), DecodeError>;

/// `Some(module::decode)` when cargo feature `$feature` is on, else `None`.
macro_rules! decoder {
    ($feature:literal, $module:ident) => {{
        #[cfg(feature = $feature)]
        let d: Option<Decoder> = Some($module::decode);
        #[cfg(not(feature = $feature))]
        let d: Option<Decoder> = None;
        d
    }};
}

/// The codec table (the kernel's `z_erofs_decomp[]`): for each compressing
/// algorithm, its name in errors, its cargo feature and its decoder if compiled in.
fn codec(alg: Algorithm) -> (&'static str, &'static str, Option<Decoder>) {
    match alg {
        Algorithm::Lz4 => ("LZ4", "lz4", decoder!("lz4", lz4)),
        Algorithm::Lzma => ("MicroLZMA", "lzma", decoder!("lzma", lzma)),
        Algorithm::Deflate => ("DEFLATE", "deflate", decoder!("deflate", deflate)),
        Algorithm::Zstd => ("Zstandard", "zstd", decoder!("zstd", zstd)),
        Algorithm::Plain | Algorithm::Interlaced => unreachable!("not compressed"),
    }
}

/// Decodes `input` (the whole pcluster) into `out` (the extent).
///
/// `partial`: the extent is a prefix of the pcluster's data (dedupe); `first_block`:
/// bytes of `input` up to the end of its first block (where padding must end);
/// `blkoff`: the extent's start offset inside its block (interlaced data); `bs`: the
/// block size.
pub(crate) fn decode(
    alg: Algorithm,
    input: &[u8],
    out: &mut [u8],
    partial: bool,
    first_block: usize,
    blkoff: usize,
    bs: usize,
) -> Result<(), DecodeError> {
    let n = out.len();
    match alg {
        Algorithm::Plain => {
            let src = input
                .get(..n)
                .ok_or_else(|| corrupt("plain pcluster shorter than its extent"))?;
            out.copy_from_slice(src);
            Ok(())
        }
        Algorithm::Interlaced => {
            // The extent's first bs - blkoff bytes are at the end of the pcluster, the
            // rest from its start (the kernel's z_erofs_transform_plain).
            let head = bs - blkoff % bs;
            let from = input
                .len()
                .checked_sub(head)
                .filter(|_| n <= input.len())
                .ok_or_else(|| corrupt("interlaced pcluster shorter than its extent"))?;
            let first = head.min(n);
            out[..first].copy_from_slice(&input[from..from + first]);
            out[first..].copy_from_slice(&input[..n - first]);
            Ok(())
        }
        _ => {
            let pad = input[..first_block.min(input.len())]
                .iter()
                .position(|&b| b != 0)
                .ok_or_else(|| corrupt("compressed data start not found"))?;
            match codec(alg) {
                (_, _, Some(decode)) => decode(&input[pad..], out, partial),
                (name, feature, None) => Err(DecodeError::Unsupported(format!(
                    "{name} decompression was not compiled in (cargo feature `{feature}` of \
                     ishare-erofs)"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)] // unused when every codec is compiled out
    pub(super) fn text(n: usize) -> Vec<u8> {
        let words: [&[u8]; 5] = [b"erofs ", b"cluster ", b"page ", b"data\n", b"z "];
        let mut v = Vec::new();
        let mut i = 7usize;
        while v.len() < n {
            i = i.wrapping_mul(31).wrapping_add(17) % 1009;
            v.extend_from_slice(words[i % 5]);
        }
        v.truncate(n);
        v
    }

    /// `data` end-aligned in a pcluster of whole 4 KiB blocks behind zeros.
    #[allow(dead_code)]
    pub(super) fn padded(data: &[u8]) -> Vec<u8> {
        let len = data.len().next_multiple_of(4096);
        let mut v = vec![0u8; len - data.len()];
        v.extend_from_slice(data);
        v
    }

    pub(super) fn ok(alg: Algorithm, input: &[u8], want: &[u8], partial: bool) {
        let mut out = vec![0xEEu8; want.len()];
        decode(alg, input, &mut out, partial, 4096, 0, 4096)
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert!(out == want, "{alg}: wrong bytes");
    }

    pub(super) fn bad(alg: Algorithm, input: &[u8], len: usize, partial: bool, needle: &str) {
        let mut out = vec![0u8; len];
        match decode(alg, input, &mut out, partial, 4096, 0, 4096) {
            Err(DecodeError::Corrupt(m)) => assert!(m.contains(needle), "{alg}: {m}"),
            other => panic!("{alg}: expected corruption ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn plain_and_interlaced() {
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        ok(Algorithm::Plain, &data, &data[..1000], false);
        bad(Algorithm::Plain, &data[..100], 101, false, "shorter");
        // Extent starting 1000 bytes into its block: its first 3096 bytes are at the
        // end of the block, the rest at its start.
        let logical: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let mut stored = vec![0u8; 4096];
        stored[1000..].copy_from_slice(&logical[..3096]);
        stored[..1000].copy_from_slice(&logical[3096..]);
        for len in [4096, 50] {
            let mut out = vec![0u8; len];
            decode(
                Algorithm::Interlaced,
                &stored,
                &mut out,
                false,
                4096,
                1000,
                4096,
            )
            .unwrap();
            assert!(out == logical[..len]);
        }
    }
}
