//! Fixed-output compressors that only C libraries provide: liblz4's
//! `LZ4_compress_destSize` / `LZ4_compress_HC_destSize` (bundled and compiled by
//! `lz4-sys`, which does not declare them) and liblzma's MicroLZMA encoder.
//!
//! EROFS pclusters have a fixed encoded size, so the compressor must stop when its
//! output is full and say how much input it consumed. No Rust crate offers that for
//! LZ4 or LZMA; this module is the only `unsafe` of the builder.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

// Keeps lz4-sys (and so its static liblz4) linked in.
use lz4_sys as _;

unsafe extern "C" {
    fn LZ4_compress_destSize(
        src: *const c_char,
        dst: *mut c_char,
        src_size: *mut c_int,
        target_dst_size: c_int,
    ) -> c_int;
    fn LZ4_createStreamHC() -> *mut c_void;
    fn LZ4_freeStreamHC(stream: *mut c_void) -> c_int;
    fn LZ4_compress_HC_destSize(
        state: *mut c_void,
        src: *const c_char,
        dst: *mut c_char,
        src_size: *mut c_int,
        target_dst_size: c_int,
        level: c_int,
    ) -> c_int;
}

/// Input and output sizes as C ints (pclusters are at most 1 MiB; inputs are capped
/// by the caller).
fn sizes(src: &[u8], dst: &[u8]) -> (c_int, c_int) {
    (
        c_int::try_from(src.len()).unwrap_or(c_int::MAX),
        c_int::try_from(dst.len()).unwrap_or(c_int::MAX),
    )
}

/// LZ4: compresses the longest prefix of `src` whose output fits `dst`; returns
/// (input consumed, output bytes).
pub(crate) fn lz4_dest_size(src: &[u8], dst: &mut [u8]) -> (usize, usize) {
    let (mut n, cap) = sizes(src, dst);
    // SAFETY: `src` is readable for `n` bytes and `dst` writable for `cap` bytes, both
    // borrowed for the call; liblz4 reads and writes only inside them.
    let out =
        unsafe { LZ4_compress_destSize(src.as_ptr().cast(), dst.as_mut_ptr().cast(), &mut n, cap) };
    (n.max(0) as usize, out.max(0) as usize)
}

/// An LZ4HC compression state (about 256 KiB), one per worker.
pub(crate) struct Lz4Hc(*mut c_void);

// SAFETY: the state is plain memory owned by this value; it is used by one thread
// at a time (`&mut self`).
unsafe impl Send for Lz4Hc {}

impl std::fmt::Debug for Lz4Hc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lz4Hc")
    }
}

impl Lz4Hc {
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: allocates and initializes a state, or returns null.
        let p = unsafe { LZ4_createStreamHC() };
        (!p.is_null()).then_some(Self(p))
    }

    /// As [`lz4_dest_size`], with LZ4HC at `level`.
    pub(crate) fn dest_size(&mut self, src: &[u8], dst: &mut [u8], level: i32) -> (usize, usize) {
        let (mut n, cap) = sizes(src, dst);
        // SAFETY: the state is valid (created above, freed only in drop) and used by
        // this thread alone; buffers as in `lz4_dest_size`.
        let out = unsafe {
            LZ4_compress_HC_destSize(
                self.0,
                src.as_ptr().cast(),
                dst.as_mut_ptr().cast(),
                &mut n,
                cap,
                level,
            )
        };
        (n.max(0) as usize, out.max(0) as usize)
    }
}

impl Drop for Lz4Hc {
    fn drop(&mut self) {
        // SAFETY: created by LZ4_createStreamHC, freed once.
        unsafe { LZ4_freeStreamHC(self.0) };
    }
}

/// A MicroLZMA encoder: settings plus one liblzma stream, kept across pclusters
/// because re-initializing a stream of the same kind reuses its memory (the match
/// finder's tables), which a new stream per pcluster would allocate and clear.
pub(crate) struct MicroLzma {
    opts: liblzma_sys::lzma_options_lzma,
    strm: liblzma_sys::lzma_stream,
}

// SAFETY: the stream's state is owned by this value and used through `&mut self`
// only; the options hold no pointer besides a null preset dictionary.
unsafe impl Send for MicroLzma {}

impl std::fmt::Debug for MicroLzma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroLzma")
            .field("dict_size", &self.opts.dict_size)
            .finish()
    }
}

impl MicroLzma {
    /// `preset` is liblzma's (0-9, `| LZMA_PRESET_EXTREME`), `lc_lp_pb` overrides of
    /// its literal context, literal position and position bits; `None` if invalid.
    pub(crate) fn new(preset: u32, dict_size: u32, lc_lp_pb: [Option<u32>; 3]) -> Option<Self> {
        // SAFETY: lzma_options_lzma is plain data (integers, enums, one pointer that
        // lzma_lzma_preset sets to null); all-zero is a valid value to overwrite.
        let mut opts: liblzma_sys::lzma_options_lzma = unsafe { std::mem::zeroed() };
        // SAFETY: `opts` is a valid, writable options struct.
        if unsafe { liblzma_sys::lzma_lzma_preset(&mut opts, preset) } != 0 {
            return None;
        }
        opts.dict_size = dict_size;
        let [lc, lp, pb] = lc_lp_pb;
        opts.lc = lc.unwrap_or(opts.lc);
        opts.lp = lp.unwrap_or(opts.lp);
        opts.pb = pb.unwrap_or(opts.pb);
        Some(Self {
            opts,
            // SAFETY: an all-zero lzma_stream is LZMA_STREAM_INIT.
            strm: unsafe { std::mem::zeroed() },
        })
    }

    /// As [`lz4_dest_size`], with MicroLZMA; `None` on an encoder error.
    pub(crate) fn dest_size(&mut self, src: &[u8], dst: &mut [u8]) -> Option<(usize, usize)> {
        use liblzma_sys as x;
        let strm = &mut self.strm;
        // SAFETY: `strm` is LZMA_STREAM_INIT or a stream this encoder used before;
        // liblzma re-initializes it in place (freed by lzma_end in drop).
        if unsafe { x::lzma_microlzma_encoder(strm, &self.opts) } != x::lzma_ret_LZMA_OK {
            return None;
        }
        strm.next_in = src.as_ptr();
        strm.avail_in = src.len();
        strm.next_out = dst.as_mut_ptr();
        strm.avail_out = dst.len();
        // SAFETY: next_in/avail_in describe `src`, next_out/avail_out describe `dst`,
        // both borrowed for this call; liblzma stays inside them.
        let ret = unsafe { x::lzma_code(strm, x::lzma_action_LZMA_FINISH) };
        let (consumed, written) = (strm.total_in as usize, strm.total_out as usize);
        // Leave no pointers to the borrowed buffers behind.
        strm.next_in = std::ptr::null();
        strm.avail_in = 0;
        strm.next_out = std::ptr::null_mut();
        strm.avail_out = 0;
        (ret == x::lzma_ret_LZMA_STREAM_END).then_some((consumed, written))
    }
}

impl Drop for MicroLzma {
    fn drop(&mut self) {
        // SAFETY: frees the encoder state (a no-op for a never-used stream).
        unsafe { liblzma_sys::lzma_end(&mut self.strm) };
    }
}
