//! Zstandard, decoded by libzstd (the `zstd` crate), as the kernel's
//! `decompressor_zstd.c` and fsck.erofs do: one frame per pcluster, with the
//! kernel's largest window. One decoder per thread, reused.

use std::cell::RefCell;

use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::DParameter;

use super::{DecodeError, corrupt};

thread_local! {
    static DEC: RefCell<Option<Decoder<'static>>> = const { RefCell::new(None) };
}

/// Decodes one Zstandard frame into exactly `out` (or, partially referenced, its
/// first `out.len()` bytes).
pub(super) fn decode(src: &[u8], out: &mut [u8], partial: bool) -> Result<(), DecodeError> {
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

#[cfg(test)]
mod tests {
    use crate::decompress::Algorithm;
    use crate::decompress::tests::{bad, ok, padded, text};

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
