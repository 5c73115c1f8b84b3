//! The one seeded pseudo-random generator of the tests (splitmix64): deterministic for a
//! seed on every machine, good enough for test data and mutations, not for anything else;
//! [`pseudo_random`] seeds it with a name.

/// A splitmix64 generator; [`Rng::new`] with the same seed gives the same stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` bytes of compressible text: words of a small vocabulary, separated by spaces
    /// and (one in twelve) newlines.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "erofs",
            "page",
            "cache",
            "share",
            "block",
            "cluster",
            "extent",
            "lz4",
            "zstd",
            "deflate",
            "lzma",
            "the",
            "of",
            "and",
            "a",
            "to",
            "in",
            "is",
            "compressed",
            "inode",
            "kernel",
            "mount",
            "image",
            "file",
            "data",
        ];
        let mut v = Vec::with_capacity(len + 16);
        while v.len() < len {
            let w = WORDS[self.below(WORDS.len() as u64) as usize];
            v.extend_from_slice(w.as_bytes());
            v.push(if self.below(12) == 0 { b'\n' } else { b' ' });
        }
        v.truncate(len);
        v
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Deterministic bytes derived from a name: [`Rng`] seeded with an FNV-1a hash of `name`,
/// so the same name always gives the same contents, whatever else a tree holds.
pub fn pseudo_random(name: &[u8], len: usize) -> Vec<u8> {
    let seed = name.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    Rng::new(seed).bytes(len)
}

#[cfg(test)]
mod tests {
    use super::{Rng, pseudo_random};

    /// The same seed (or name) gives the same stream; another one does not.
    #[test]
    fn deterministic() {
        assert_eq!(Rng::new(7).bytes(100), Rng::new(7).bytes(100));
        assert_ne!(Rng::new(7).bytes(100), Rng::new(8).bytes(100));
        assert_eq!(pseudo_random(b"a", 33), pseudo_random(b"a", 33));
        assert_ne!(pseudo_random(b"a", 33), pseudo_random(b"b", 33));
        // A prefix of a longer stream.
        assert_eq!(Rng::new(1).bytes(5), Rng::new(1).bytes(16)[..5]);
    }
}
