//! MicroLZMA, decoded by liblzma's `lzma_microlzma_decoder` (`liblzma-sys`; the
//! liblzma crate does not wrap it), as the kernel's `decompressor_lzma.c` and
//! fsck.erofs do.

use liblzma_sys as x;

use super::{DecodeError, corrupt};

/// Decodes one MicroLZMA stream into exactly `out` (or, partially referenced, its
/// first `out.len()` bytes).
#[allow(unsafe_code)]
pub(super) fn decode(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
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
