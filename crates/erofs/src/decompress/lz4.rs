//! LZ4 (LZ4 and LZ4HC images), decoded by liblz4 (`lz4-sys`), as the kernel's
//! `decompressor.c` and fsck.erofs do: the whole block into exactly the extent, or,
//! for a partially referenced pcluster, its first bytes only.

use std::ffi::c_int;

use super::{DecodeError, corrupt};

#[allow(unsafe_code)]
unsafe extern "C" {
    // Not declared by lz4-sys, which links the static liblz4 (1.10) that defines it.
    fn LZ4_decompress_safe_partial(
        src: *const std::ffi::c_char,
        dst: *mut std::ffi::c_char,
        src_size: c_int,
        target_output_size: c_int,
        dst_capacity: c_int,
    ) -> c_int;
}

/// liblz4's safe decoders: the whole block into exactly `out`, or (partially
/// referenced pcluster) its first `out.len()` bytes. Both check every offset and
/// length against the buffers they are given; corrupt input gives a negative result,
/// never an access outside them.
#[allow(unsafe_code)]
pub(super) fn decode(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
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

#[cfg(test)]
mod tests {
    use crate::decompress::tests::{bad, ok, padded, text};
    use crate::decompress::{Algorithm, decode};

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
}
