//! `--gzinfo`: a gzip decoder that also records random-access checkpoints, written
//! as an AWS SOCI "zinfo" file (zlib's zran scheme) in the layout erofs-utils
//! writes: a 12-byte header (checkpoint count as u32, span as u64, little-endian),
//! then per checkpoint its compressed byte offset (u64), uncompressed offset (u64),
//! the count of bits of the previous byte that belong to it (u8) and the 32 KiB of
//! output before it.
//!
//! A checkpoint is taken at a deflate block boundary (not in the last block) at the
//! start of each gzip member and then once more than a span (4 MiB) of output has
//! passed since the last one, as erofs-utils does; zlib's inflate reports those
//! boundaries (`Z_BLOCK` and `data_type`), which flate2 does not expose, hence the
//! direct calls to zlib-rs's zlib API here.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use libz_rs_sys as z;

/// Output kept before each checkpoint: deflate's window.
const WINDOW: usize = 32768;
/// Output between checkpoints, at least (erofs-utils' span).
pub(super) const SPAN: u64 = 4 << 20;

/// One place the stream can be decoded from.
pub(super) struct Checkpoint {
    /// Compressed bytes before it.
    input: u64,
    /// Bits of the byte before `input` that are part of the next block.
    bits: u8,
    /// Uncompressed bytes before it.
    output: u64,
    window: Box<[u8]>,
}

/// The checkpoints found so far, shared with the decoder (which the tar reader owns).
pub(super) type Checkpoints = Rc<RefCell<Vec<Checkpoint>>>;

/// A gzip (multi-member) decoder recording [`Checkpoint`]s.
pub(super) struct GzRan<R> {
    inner: R,
    /// zlib keeps a pointer to its stream: it must not move.
    strm: Box<z::z_stream>,
    input: Box<[u8]>,
    /// The last `WINDOW` bytes of output, as a ring indexed by output offset.
    ring: Box<[u8]>,
    total_in: u64,
    total_out: u64,
    /// At the start of a member (the next boundary is checkpointed).
    initial: bool,
    /// The last member ended and no input followed yet.
    member_end: bool,
    finished: bool,
    points: Checkpoints,
}

fn zerr(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<R: Read> GzRan<R> {
    pub(super) fn new(inner: R) -> io::Result<(Self, Checkpoints)> {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: `strm` is a default-initialized stream (allocator set) at a stable
        // address; the version string and size describe the library linked.
        let ret = unsafe {
            z::inflateInit2_(
                &mut *strm,
                16 + 15, // gzip wrapper, 32 KiB window
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if ret != z::Z_OK {
            return Err(io::Error::other(format!("cannot start inflate ({ret})")));
        }
        let points = Checkpoints::default();
        Ok((
            Self {
                inner,
                strm,
                input: vec![0u8; 1 << 16].into_boxed_slice(),
                ring: vec![0u8; WINDOW].into_boxed_slice(),
                total_in: 0,
                total_out: 0,
                initial: true,
                member_end: false,
                finished: false,
                points: points.clone(),
            },
            points,
        ))
    }

    fn remember(&mut self, out: &[u8]) {
        let out = &out[out.len().saturating_sub(WINDOW)..];
        let start = (self.total_out as usize).wrapping_sub(out.len()) % WINDOW;
        let first = out.len().min(WINDOW - start);
        self.ring[start..start + first].copy_from_slice(&out[..first]);
        self.ring[..out.len() - first].copy_from_slice(&out[first..]);
    }

    fn checkpoint(&mut self) {
        let dt = self.strm.data_type;
        let mut points = self.points.borrow_mut();
        let last = points.last().map_or(0, |c| c.output);
        if dt & 128 != 0 && dt & 64 == 0 && (self.initial || self.total_out - last > SPAN) {
            let p = (self.total_out % WINDOW as u64) as usize;
            let mut window = Vec::with_capacity(WINDOW);
            window.extend_from_slice(&self.ring[p..]);
            window.extend_from_slice(&self.ring[..p]);
            points.push(Checkpoint {
                input: self.total_in,
                bits: (dt & 7) as u8,
                output: self.total_out,
                window: window.into_boxed_slice(),
            });
            self.initial = false;
        }
    }
}

impl<R: Read> Read for GzRan<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.finished {
            return Ok(0);
        }
        loop {
            if self.strm.avail_in == 0 {
                let n = loop {
                    match self.inner.read(&mut self.input) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        r => break r?,
                    }
                };
                if n == 0 {
                    if self.member_end {
                        self.finished = true;
                        return Ok(0);
                    }
                    return Err(zerr("the gzip stream is truncated"));
                }
                self.strm.next_in = self.input.as_ptr();
                self.strm.avail_in = n as u32;
            }
            let cap = out.len().min(u32::MAX as usize);
            self.strm.next_out = out.as_mut_ptr();
            self.strm.avail_out = cap as u32;
            let before_in = self.strm.avail_in;
            // SAFETY: next_in/avail_in describe unread bytes of `self.input`, and
            // next_out/avail_out the first `cap` bytes of `out`, both alive for the
            // call; the stream was initialized by inflateInit2_.
            let ret = unsafe { z::inflate(&mut *self.strm, z::Z_BLOCK) };
            let consumed = u64::from(before_in - self.strm.avail_in);
            let produced = cap - self.strm.avail_out as usize;
            // Leave no pointer to `out` behind.
            self.strm.next_out = std::ptr::null_mut();
            self.strm.avail_out = 0;
            self.total_in += consumed;
            self.total_out += produced as u64;
            self.remember(&out[..produced]);
            if consumed > 0 {
                self.member_end = false;
            }
            match ret {
                z::Z_STREAM_END => {
                    // SAFETY: an initialized stream; resets it for the next member.
                    unsafe { z::inflateReset(&mut *self.strm) };
                    self.initial = true;
                    self.member_end = true;
                }
                z::Z_OK | z::Z_BUF_ERROR => self.checkpoint(),
                _ => return Err(zerr("corrupt gzip data")),
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }
}

impl<R> Drop for GzRan<R> {
    fn drop(&mut self) {
        // SAFETY: frees the state of a stream inflateInit2_ initialized.
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}

/// Writes the zinfo of `points` to `to`.
pub(super) fn write_zinfo(points: &[Checkpoint], to: &mut impl Write) -> io::Result<()> {
    let mut w = io::BufWriter::new(to);
    w.write_all(&(points.len() as u32).to_le_bytes())?;
    w.write_all(&SPAN.to_le_bytes())?;
    for c in points {
        w.write_all(&c.input.to_le_bytes())?;
        w.write_all(&c.output.to_le_bytes())?;
        w.write_all(&[c.bits])?;
        w.write_all(&c.window)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding matches flate2's, and a checkpoint is taken at the start and then
    /// about every span, each with the output before it as its window.
    #[test]
    fn decodes_and_checkpoints() {
        let mut data = Vec::new();
        let mut x = 1u64;
        while data.len() < 11 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(format!("line {} {}\n", x >> 40, data.len() % 97).as_bytes());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let (mut r, points) = GzRan::new(&gz[..]).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(out == data);
        let p = points.borrow();
        assert!(p.len() >= 3, "{} checkpoints", p.len());
        assert_eq!(p[0].output, 0);
        for w in p.windows(2) {
            assert!(w[1].output - w[0].output > SPAN);
        }
        for c in p.iter().skip(1) {
            let o = c.output as usize;
            assert!(c.window[..] == data[o - WINDOW..o]);
            assert!(c.input > 0 && (c.input as usize) < gz.len());
        }
        // Truncated input is an error, not a short stream.
        let (mut r, _) = GzRan::new(&gz[..gz.len() / 2]).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
