//! Raw DEFLATE (no zlib header), decoded by libdeflate (`libdeflater`, a safe
//! wrapper), as the kernel's `decompressor_deflate.c` and fsck.erofs do. One
//! decompressor per thread, reused.

use std::cell::RefCell;

use libdeflater::{DecompressionError, Decompressor};

use super::{DecodeError, corrupt};

thread_local! {
    static STATE: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decodes one raw DEFLATE stream into exactly `out` (or, partially referenced, its
/// first `out.len()` bytes).
pub(super) fn decode(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
    let n = out.len();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let d = s.get_or_insert_with(Decompressor::new);
        // Whole buffers: libdeflate decodes the stream up to its final block, failing
        // when it does not fit in the output.
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

#[cfg(test)]
mod tests {
    use crate::decompress::Algorithm;
    use crate::decompress::tests::{bad, ok, padded, text};

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
}
