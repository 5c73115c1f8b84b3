//! Decoding one pcluster into one extent: LZ4, MicroLZMA, raw DEFLATE, Zstandard,
//! and the two uncompressed forms (plain and interlaced).
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
//! The calls into liblz4 and liblzma are the reader's only `unsafe` code, all in this
//! file: each passes one input and one output slice, with their lengths.

use crate::zmap::Algorithm;

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
            let src = &input[pad..];
            match alg {
                Algorithm::Lz4 => lz4(src, out, partial),
                Algorithm::Lzma => lzma(src, out, partial),
                Algorithm::Deflate => deflate(src, out, partial),
                Algorithm::Zstd => zstd(src, out, partial),
                Algorithm::Plain | Algorithm::Interlaced => unreachable!("handled above"),
            }
        }
    }
}

#[allow(dead_code)]
fn not_built(name: &str, feature: &str) -> DecodeError {
    DecodeError::Unsupported(format!(
        "{name} decompression was not compiled in (cargo feature `{feature}` of ishare-erofs)"
    ))
}

// ---------------------------------------------------------------------------------------------
// LZ4 (liblz4)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "lz4")]
#[allow(unsafe_code)]
unsafe extern "C" {
    // Not declared by lz4-sys, which links the static liblz4 (1.10) that defines it.
    fn LZ4_decompress_safe_partial(
        src: *const std::ffi::c_char,
        dst: *mut std::ffi::c_char,
        src_size: std::ffi::c_int,
        target_output_size: std::ffi::c_int,
        dst_capacity: std::ffi::c_int,
    ) -> std::ffi::c_int;
}

/// liblz4's safe decoders, as the kernel and fsck.erofs use them: the whole block
/// into exactly `out`, or (partially referenced pcluster) its first `out.len()`
/// bytes. Both check every offset and length against the buffers they are given;
/// corrupt input gives a negative result, never an access outside them.
#[cfg(feature = "lz4")]
#[allow(unsafe_code)]
fn lz4(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
    use std::ffi::c_int;
    let n = out.len();
    // A pcluster is at most 1 MiB and an extent at most 12 MiB (checked when mapping);
    // refuse anything else rather than truncate the lengths.
    let (Ok(src_len), Ok(cap)) = (c_int::try_from(src.len()), c_int::try_from(n)) else {
        return Err(corrupt("lz4: pcluster or extent too large"));
    };
    let got = if partial {
        // SAFETY: `src` is readable for `src_len` bytes and `out` writable for `cap`
        // bytes, both borrowed for the call; liblz4 reads and writes only inside them
        // (target_output_size == dst_capacity: it stops once `out` is full).
        unsafe {
            LZ4_decompress_safe_partial(
                src.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                src_len,
                cap,
                cap,
            )
        }
    } else {
        // SAFETY: as above; a stream that would write past `cap` bytes is an error.
        unsafe {
            lz4_sys::LZ4_decompress_safe(src.as_ptr().cast(), out.as_mut_ptr().cast(), src_len, cap)
        }
    };
    match usize::try_from(got) {
        Err(_) if partial => Err(corrupt("lz4: corrupt compressed data")),
        Err(_) => Err(corrupt(
            "lz4: corrupt compressed data, or a stream that goes on past its extent",
        )),
        Ok(got) if got != n => Err(corrupt(format!("lz4 stream ends after {got} of {n} bytes"))),
        Ok(_) => Ok(()),
    }
}

#[cfg(not(feature = "lz4"))]
fn lz4(_: &[u8], _: &mut [u8], _: bool) -> Result<(), DecodeError> {
    Err(not_built("LZ4", "lz4"))
}

// ---------------------------------------------------------------------------------------------
// MicroLZMA (liblzma)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "lzma")]
#[allow(unsafe_code)]
fn lzma(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
    use liblzma_sys as x;
    let n = out.len();
    // Matches only reach back into this extent's output, so a dictionary the size of
    // the output is enough (and avoids allocating the 8 MiB maximum every time).
    let dict = u32::try_from(n)
        .unwrap_or(u32::MAX)
        .clamp(4096, crate::format::LZMA_MAX_DICT_SIZE);
    // SAFETY: an all-zero lzma_stream is LZMA_STREAM_INIT (null pointers and zero
    // integers only).
    let mut strm: x::lzma_stream = unsafe { std::mem::zeroed() };
    // SAFETY: `strm` is a valid, initialised stream; the decoder allocates its state
    // in `strm.internal`, freed by `lzma_end` below on every path.
    let ret = unsafe {
        x::lzma_microlzma_decoder(
            &mut strm,
            src.len() as u64,
            n as u64,
            x::lzma_bool::from(!partial),
            dict,
        )
    };
    if ret != x::lzma_ret_LZMA_OK {
        // SAFETY: as above; lzma_end accepts a stream whose init failed.
        unsafe { x::lzma_end(&mut strm) };
        return Err(corrupt(format!("lzma: decoder setup failed ({ret})")));
    }
    strm.next_in = src.as_ptr();
    strm.avail_in = src.len();
    strm.next_out = out.as_mut_ptr();
    strm.avail_out = n;
    // SAFETY: next_in/avail_in describe `src` and next_out/avail_out describe `out`,
    // both borrowed for this whole block; liblzma reads and writes only inside them.
    let ret = unsafe { x::lzma_code(&mut strm, x::lzma_action_LZMA_FINISH) };
    let written = n - strm.avail_out;
    // SAFETY: frees the decoder state; `strm` is not used afterwards.
    unsafe { x::lzma_end(&mut strm) };
    match ret {
        x::lzma_ret_LZMA_STREAM_END if written == n => Ok(()),
        x::lzma_ret_LZMA_STREAM_END | x::lzma_ret_LZMA_OK | x::lzma_ret_LZMA_BUF_ERROR => Err(
            corrupt(format!("lzma stream ends after {written} of {n} bytes")),
        ),
        x::lzma_ret_LZMA_DATA_ERROR => Err(corrupt("lzma: corrupt compressed data")),
        x::lzma_ret_LZMA_OPTIONS_ERROR => Err(corrupt("lzma: invalid stream properties")),
        x::lzma_ret_LZMA_MEM_ERROR => Err(corrupt("lzma: out of memory")),
        other => Err(corrupt(format!("lzma: error {other}"))),
    }
}

#[cfg(not(feature = "lzma"))]
fn lzma(_: &[u8], _: &mut [u8], _: bool) -> Result<(), DecodeError> {
    Err(not_built("MicroLZMA", "lzma"))
}

// ---------------------------------------------------------------------------------------------
// DEFLATE (libdeflate)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "deflate")]
fn deflate(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
    use libdeflater::{DecompressionError, Decompressor};
    use std::cell::RefCell;
    thread_local! {
        static STATE: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    }
    let n = out.len();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let d = s.get_or_insert_with(Decompressor::new);
        // Raw DEFLATE (no zlib header), whole buffers: libdeflate decodes the stream
        // up to its final block, failing when it does not fit in the output.
        if !partial {
            return match d.deflate_decompress(src, out) {
                Ok(got) if got == n => Ok(()),
                Ok(got) => Err(corrupt(format!(
                    "deflate stream ends after {got} of {n} bytes"
                ))),
                Err(DecompressionError::InsufficientSpace) => {
                    Err(corrupt("deflate stream goes on past its extent"))
                }
                Err(DecompressionError::BadData) => {
                    Err(corrupt("deflate: corrupt compressed data"))
                }
            };
        }
        // The extent is a prefix of the pcluster's data, whose full length is not
        // recorded: decode into a larger buffer, doubling it (as fsck.erofs does) up to
        // the largest extent, then keep the prefix.
        let limit = crate::format::PCLUSTER_MAX_DSIZE as usize;
        let mut cap = n.saturating_mul(2).clamp(4096, limit);
        loop {
            let mut tmp = vec![0u8; cap];
            match d.deflate_decompress(src, &mut tmp) {
                Ok(got) if got >= n => {
                    out.copy_from_slice(&tmp[..n]);
                    return Ok(());
                }
                Ok(got) => {
                    return Err(corrupt(format!(
                        "deflate stream ends after {got} of {n} bytes"
                    )));
                }
                Err(DecompressionError::InsufficientSpace) if cap < limit => {
                    cap = cap.saturating_mul(2).min(limit);
                }
                Err(DecompressionError::InsufficientSpace) => {
                    return Err(corrupt(format!(
                        "deflate stream decodes to more than {limit} bytes"
                    )));
                }
                Err(DecompressionError::BadData) => {
                    return Err(corrupt("deflate: corrupt compressed data"));
                }
            }
        }
    })
}

#[cfg(not(feature = "deflate"))]
fn deflate(_: &[u8], _: &mut [u8], _: bool) -> Result<(), DecodeError> {
    Err(not_built("DEFLATE", "deflate"))
}

// ---------------------------------------------------------------------------------------------
// Zstandard
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "zstd")]
fn zstd(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
    use std::cell::RefCell;
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    use zstd::zstd_safe::DParameter;
    thread_local! {
        static DEC: RefCell<Option<Decoder<'static>>> = const { RefCell::new(None) };
    }
    let n = out.len();
    let bad = |e: std::io::Error| corrupt(format!("zstd: {e}"));
    DEC.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            let mut dec = Decoder::new().map_err(bad)?;
            // The kernel's largest window (Z_EROFS_ZSTD_MAX_DICT_SIZE).
            dec.set_parameter(DParameter::WindowLogMax(u32::from(
                crate::format::ZSTD_MAX_WINDOWLOG,
            )))
            .map_err(bad)?;
            *d = Some(dec);
        }
        let dec = d.as_mut().expect("set above");
        let res = (|| {
            let mut inb = InBuffer::around(src);
            let mut outb = OutBuffer::around(&mut *out);
            let mut hint = dec.run(&mut inb, &mut outb).map_err(bad)?;
            let mut written = outb.pos();
            if written == n && hint != 0 && !partial {
                // Full output: let the frame finish (epilogue, checksum) with no more
                // room; any further data is past the extent.
                let mut extra = [0u8; 1];
                let mut more = OutBuffer::around(&mut extra[..]);
                hint = dec.run(&mut inb, &mut more).map_err(bad)?;
                if more.pos() != 0 {
                    return Err(corrupt("zstd stream goes on past its extent"));
                }
            }
            if written < n {
                written = outb.pos();
                return Err(corrupt(format!(
                    "zstd stream ends after {written} of {n} bytes"
                )));
            }
            if !partial && hint != 0 {
                return Err(corrupt("zstd frame does not end with its extent"));
            }
            Ok(())
        })();
        // Ready for the next frame whatever happened.
        if dec.reinit().is_err() {
            *d = None;
        }
        res
    })
}

#[cfg(not(feature = "zstd"))]
fn zstd(_: &[u8], _: &mut [u8], _: bool) -> Result<(), DecodeError> {
    Err(not_built("Zstandard", "zstd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)] // unused when every codec is compiled out
    fn text(n: usize) -> Vec<u8> {
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
    fn padded(data: &[u8]) -> Vec<u8> {
        let len = data.len().next_multiple_of(4096);
        let mut v = vec![0u8; len - data.len()];
        v.extend_from_slice(data);
        v
    }

    fn ok(alg: Algorithm, input: &[u8], want: &[u8], partial: bool) {
        let mut out = vec![0xEEu8; want.len()];
        decode(alg, input, &mut out, partial, 4096, 0, 4096)
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert!(out == want, "{alg}: wrong bytes");
    }

    fn bad(alg: Algorithm, input: &[u8], len: usize, partial: bool, needle: &str) {
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
        let mut out = vec![0u8; 4096];
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
        assert!(out == logical);
        let mut out = vec![0u8; 50];
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
        assert!(out == logical[..50]);
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_full_partial_and_corrupt() {
        let data = text(20_000);
        let c = padded(&lz4_flex::block::compress(&data));
        ok(Algorithm::Lz4, &c, &data, false);
        ok(Algorithm::Lz4, &c, &data[..7777], true);
        ok(Algorithm::Lz4, &c, &data[..1], true);
        // Full decoding of a prefix: the stream goes on past the extent.
        bad(Algorithm::Lz4, &c, 7777, false, "lz4");
        // Longer than the stream.
        bad(Algorithm::Lz4, &c, data.len() + 1, false, "lz4");
        bad(Algorithm::Lz4, &c, data.len() + 1, true, "ends after");
        bad(
            Algorithm::Lz4,
            &vec![0u8; 4096],
            10,
            false,
            "start not found",
        );
        let mut broken = c.clone();
        let n = broken.len();
        broken[n - 3] ^= 0x55;
        let mut out = vec![0u8; data.len()];
        // Either an error or other bytes, never a panic or output past `out`.
        let r = decode(Algorithm::Lz4, &broken, &mut out, false, 4096, 0, 4096);
        assert!(r.is_err() || out != data || broken == c);
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn deflate_full_partial_and_corrupt() {
        let data = text(30_000);
        let mut z = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut raw = vec![0u8; z.deflate_compress_bound(data.len())];
        let len = z.deflate_compress(&data, &mut raw).unwrap();
        let c = padded(&raw[..len]);
        ok(Algorithm::Deflate, &c, &data, false);
        ok(Algorithm::Deflate, &c, &data[..1234], true);
        // A prefix much shorter than the stream: the buffer is doubled several times.
        ok(Algorithm::Deflate, &c, &data[..10], true);
        bad(Algorithm::Deflate, &c, data.len() + 1, true, "ends after");
        bad(Algorithm::Deflate, &c, 1234, false, "past its extent");
        bad(Algorithm::Deflate, &c, data.len() + 10, false, "ends after");
        let n = c.len();
        bad(
            Algorithm::Deflate,
            &c[..n - 20],
            data.len(),
            false,
            "deflate",
        );
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_full_partial_and_corrupt() {
        let data = text(50_000);
        let c = padded(&zstd::bulk::compress(&data, 3).unwrap());
        ok(Algorithm::Zstd, &c, &data, false);
        ok(Algorithm::Zstd, &c, &data[..999], true);
        bad(Algorithm::Zstd, &c, 999, false, "zstd");
        bad(Algorithm::Zstd, &c, data.len() + 1, false, "ends after");
        let n = c.len();
        bad(Algorithm::Zstd, &c[..n - 10], data.len(), false, "zstd");
        // The decoder is reused: a good stream after bad ones still decodes.
        ok(Algorithm::Zstd, &c, &data, false);
    }
}
