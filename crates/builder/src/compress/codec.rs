//! The compressors, each in "fixed output" mode: fill a pcluster of a given
//! size with as much input as fits, and say how much that was.

use super::config::{Codec, Compressor};
use super::ffi;
use crate::error::{Error, Result};

/// One worker's compressor.
#[derive(Debug)]
pub(crate) struct Encoder {
    inner: Inner,
    /// Scratch output for the compressors without a fixed-output mode.
    scratch: Vec<u8>,
}

enum Inner {
    Lz4,
    Lz4Hc(ffi::Lz4Hc, i32),
    Lzma(Box<ffi::MicroLzma>),
    /// Levels 1-9: libdeflate, about twice as fast as miniz_oxide at level 1 (the
    /// default), which matters as the search compresses each input more than once.
    Deflate(Box<libdeflater::Compressor>),
    /// Level 0 (stored blocks), which libdeflate's wrapper does not offer.
    DeflateStored(flate2::Compress),
    /// `libdeflate`, searched as closely as erofs-utils does (stop when the encoding
    /// is within this many bytes of full), where `deflate` trades a few percent of
    /// size for fewer probes.
    Libdeflate(Box<libdeflater::Compressor>, usize),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Inner::Lz4 => "lz4",
            Inner::Lz4Hc(..) => "lz4hc",
            Inner::Lzma(_) => "lzma",
            Inner::Deflate(_) | Inner::DeflateStored(_) => "deflate",
            Inner::Libdeflate(..) => "libdeflate",
            Inner::Zstd(_) => "zstd",
        })
    }
}

impl Encoder {
    /// A compressor for `c`, whose dictionary/window was resolved by
    /// [`Compressor::dict_size`].
    pub(crate) fn new(c: &Compressor, pcluster_max: u32) -> Result<Self> {
        let level = c.effective_level();
        let fail = |what: &str| Error::InvalidOption(format!("{}: {what}", c.algorithm.name()));
        let inner = match c.algorithm {
            Codec::Lz4 => Inner::Lz4,
            Codec::Lz4hc => Inner::Lz4Hc(
                ffi::Lz4Hc::new().ok_or_else(|| fail("cannot allocate the LZ4HC state"))?,
                level,
            ),
            Codec::Lzma => {
                // mkfs.erofs levels: 0-9, or 100-109 for the "extreme" presets.
                const EXTREME: u32 = 0x8000_0000;
                let preset = if level >= 100 {
                    (level - 100) as u32 | EXTREME
                } else {
                    level as u32
                };
                Inner::Lzma(Box::new(
                    ffi::MicroLzma::new(preset, c.dict_size(pcluster_max), c.lzma_lc_lp_pb)
                        .ok_or_else(|| fail("liblzma refused the preset"))?,
                ))
            }
            Codec::Deflate => match libdeflater::CompressionLvl::new(level) {
                Ok(l) => Inner::Deflate(Box::new(libdeflater::Compressor::new(l))),
                Err(_) => Inner::DeflateStored(flate2::Compress::new(
                    flate2::Compression::new(level as u32),
                    false,
                )),
            },
            // libdeflate itself at every level, 0 (stored blocks) included.
            Codec::Libdeflate => {
                let l = libdeflater::CompressionLvl::new(level)
                    .map_err(|_| fail(&format!("libdeflate refused level {level}")))?;
                let slack = usize::try_from(22 - 2 * level).unwrap_or(0);
                Inner::Libdeflate(Box::new(libdeflater::Compressor::new(l)), slack)
            }
            Codec::Zstd => {
                use zstd::zstd_safe::CParameter;
                let mut z = zstd::bulk::Compressor::new(level)
                    .map_err(|e| fail(&format!("cannot create a context: {e}")))?;
                let wlog = c.dict_size(pcluster_max).trailing_zeros();
                z.set_parameter(CParameter::WindowLog(wlog))
                    .map_err(|e| fail(&format!("window log {wlog}: {e}")))?;
                // No checksum (the kernel does not check one) and no content size
                // field, which the extent length already gives.
                z.set_parameter(CParameter::ChecksumFlag(false))
                    .and_then(|()| z.set_parameter(CParameter::ContentSizeFlag(false)))
                    .map_err(|e| fail(&e.to_string()))?;
                Inner::Zstd(z)
            }
        };
        Ok(Self {
            inner,
            scratch: Vec::new(),
        })
    }

    /// Compresses the longest prefix of `src` whose encoding fits in `dst`; returns
    /// (input consumed, encoded bytes at the start of `dst`). (0, 0) when not even a
    /// small prefix fits.
    pub(crate) fn dest_size(&mut self, src: &[u8], dst: &mut [u8]) -> Result<(usize, usize)> {
        match &mut self.inner {
            Inner::Lz4 => Ok(ffi::lz4_dest_size(src, dst)),
            Inner::Lz4Hc(state, level) => Ok(state.dest_size(src, dst, *level)),
            Inner::Lzma(m) => m
                .dest_size(src, dst)
                .ok_or_else(|| Error::InvalidOption("lzma: the MicroLZMA encoder failed".into())),
            Inner::Deflate(z) => Ok(search(src, dst, &mut self.scratch, None, |s, out| {
                z.deflate_compress(s, out).ok()
            })),
            Inner::Libdeflate(z, slack) => Ok(search(
                src,
                dst,
                &mut self.scratch,
                Some(*slack),
                |s, out| z.deflate_compress(s, out).ok(),
            )),
            Inner::DeflateStored(z) => Ok(search(src, dst, &mut self.scratch, None, |s, out| {
                z.reset();
                match z.compress(s, out, flate2::FlushCompress::Finish) {
                    Ok(flate2::Status::StreamEnd) => Some(z.total_out() as usize),
                    _ => None,
                }
            })),
            Inner::Zstd(z) => Ok(search(src, dst, &mut self.scratch, None, |s, out| {
                z.compress_to_buffer(s, out).ok()
            })),
        }
    }
}

impl Encoder {
    /// Compresses all of `src` into `dst`; `None` if the encoding does not fit, or
    /// the codec has no such mode here (see [`Codec::encodes_whole`]).
    pub(crate) fn whole(&mut self, src: &[u8], dst: &mut [u8]) -> Option<usize> {
        match &mut self.inner {
            Inner::Zstd(z) => z.compress_to_buffer(src, dst).ok(),
            Inner::Libdeflate(z, _) => {
                let n = z.deflate_compress(src, dst).ok().filter(|&n| n > 0)?;
                // A stream starting with a zero byte (a non-final stored block) would
                // lose it to the kernel's skipping of zero padding; the bits after
                // the 3-bit block header are unused there (erofs-utils sets one too).
                if dst[0] == 0 {
                    dst[0] = 1 << 3;
                }
                Some(n)
            }
            _ => None,
        }
    }
}

/// Fixed-output compression by search, for compressors that can only compress a
/// whole input: find the longest prefix whose encoding fits, guessing each next
/// length from the last ratio, as erofs-utils does for zstd and libdeflate.
/// `compress(input, out)` returns the encoded size, or `None` if it does not fit.
/// `exact`: stop only when the encoding is within that many bytes of full or no
/// longer prefix is left to try (erofs-utils' rule for libdeflate); `None`: also
/// stop early when little is left to gain (below). Probes guided by the compression ratio alone, before each probe must also cut
/// the unknown range by a quarter.
const GUESSES: u32 = 4;

fn search(
    src: &[u8],
    dst: &mut [u8],
    scratch: &mut Vec<u8>,
    exact: Option<usize>,
    mut compress: impl FnMut(&[u8], &mut [u8]) -> Option<usize>,
) -> (usize, usize) {
    // The fraction of the gap left that is not worth another probe (none if exact).
    let small = |lo: usize| if exact.is_some() { 0 } else { lo / 128 };
    let cap = dst.len();
    // Some room past the target, so an attempt that overshoots a little still
    // tells its size and the next guess can be close.
    scratch.resize(cap + cap / 8 + 64, 0);
    let (mut lo, mut lo_size) = (0usize, 0usize); // longest prefix known to fit
    let mut hi = src.len() + 1; // shortest prefix known not to fit
    let mut m = cap.saturating_mul(4);
    let mut probes = 0u32;
    loop {
        m = m.max(lo + 1).min(hi - 1);
        if probes >= GUESSES && hi <= src.len() {
            // Ratio guesses can creep towards a bound (sizes do not grow evenly with
            // the input): from here on each probe takes a quarter of the gap away.
            let q = (hi - lo) / 4;
            m = m.clamp(lo + q.max(1), hi - 1 - q.min(hi - lo - 2));
        }
        if m <= lo {
            break;
        }
        probes += 1;
        match compress(&src[..m], scratch) {
            Some(n) if n <= cap => {
                dst[..n].copy_from_slice(&scratch[..n]);
                (lo, lo_size) = (m, n);
                // Done when everything fits, when the pcluster is within 1/32 of
                // full, or when at most 1/128 more input could fit: each further
                // probe compresses the whole input again for that little gain
                // (1/64 of full measured 5% more CPU for 0.3% smaller images).
                let full = match exact {
                    Some(slack) => n + slack >= cap,
                    None => n + cap / 32 >= cap,
                };
                if hi <= lo + 1 || full || hi - lo <= small(lo) {
                    break;
                }
                m = (cap as u128 * m as u128 / n.max(1) as u128) as usize;
            }
            Some(n) => {
                hi = m;
                if hi <= lo + 1 || hi - lo <= small(lo) {
                    break;
                }
                // Shrink in proportion, staying inside the known bounds.
                let guess = (cap as u128 * m as u128 / n as u128) as usize;
                m = if guess > lo && guess < hi {
                    guess
                } else {
                    lo + (hi - lo) / 2
                };
            }
            None => {
                hi = m;
                if hi <= lo + 1 || hi - lo <= small(lo) {
                    break;
                }
                m = lo + (hi - lo) / 2;
            }
        }
    }
    (lo, lo_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Text-like data with repeats, compressible about 3x.
        let words = [
            &b"erofs "[..],
            b"page ",
            b"cache ",
            b"share ",
            b"fingerprint\n",
        ];
        let mut v = Vec::with_capacity(len);
        let mut x = 12345u32;
        while v.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(words[(x >> 16) as usize % words.len()]);
            if x.is_multiple_of(7) {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(len);
        v
    }

    #[test]
    fn every_codec_fills_a_pcluster_and_reports_its_input() {
        let src = sample(1 << 20);
        for alg in Codec::ALL {
            let c = Compressor::new(alg);
            let mut e = Encoder::new(&c, 16384).unwrap();
            for cap in [4096usize, 16384] {
                let mut dst = vec![0u8; cap];
                let (used, n) = e.dest_size(&src, &mut dst).unwrap();
                assert!(n <= cap, "{alg:?}: {n} > {cap}");
                assert!(used > cap, "{alg:?}: only {used} bytes in {cap}");
                // Nearly full: the search stops within a few percent.
                assert!(n * 100 >= cap * 90, "{alg:?}: {n} of {cap}");
            }
        }
    }

    #[test]
    fn search_takes_all_of_a_short_input() {
        let src = sample(3000);
        let c = Compressor::new(Codec::Zstd);
        let mut e = Encoder::new(&c, 4096).unwrap();
        let mut dst = vec![0u8; 4096];
        let (used, n) = e.dest_size(&src, &mut dst).unwrap();
        assert_eq!(used, 3000);
        assert!(n < 3000);
    }
}
