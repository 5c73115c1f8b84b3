//! The entries of a verification record as a process keeps them in memory: 32 bytes
//! each, sorted, instead of a hash map of 32-byte keys to heap-allocated values.
//!
//! A node daemon holds the records of every image it serves (one entry per verified
//! file: 117,000 for ten Debian images) and the seals of every object; as
//! `HashMap<[u8; 32], Vec<u8>>` they took about 20 MiB, a fifth of the daemon. Here an
//! entry is the first 16 bytes of its key (keys are keyed hashes already, so 128 bits
//! keep them apart) and the first 16 bytes of the SHA-256 of its value (only ever
//! compared for equality), in a vector sorted by key; entries added since are kept in a
//! small map and merged in batches.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::record::Key;

/// 16 bytes of a key or of a value's digest.
type Half = [u8; 16];

/// Entries added that make the next addition merge them into the sorted vector.
const MERGE_AT: usize = 1024;

/// A record's entries (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// Sorted by key, keys unique.
    sorted: Vec<(Half, Half)>,
    /// Added since the last merge (these win over `sorted`).
    recent: HashMap<Half, Half>,
}

fn short(key: &Key) -> Half {
    key[..16].try_into().expect("16 bytes")
}

fn digest(value: &[u8]) -> Half {
    Sha256::digest(value)[..16].try_into().expect("16 bytes")
}

impl Entries {
    /// The entries of `loaded` (unique keys).
    pub fn from_pairs<'a>(loaded: impl IntoIterator<Item = (&'a Key, &'a [u8])>) -> Entries {
        let mut sorted: Vec<(Half, Half)> = loaded
            .into_iter()
            .map(|(k, v)| (short(k), digest(v)))
            .collect();
        sorted.sort_unstable_by_key(|e| e.0);
        sorted.dedup_by_key(|e| e.0);
        sorted.shrink_to_fit();
        Entries {
            sorted,
            recent: HashMap::new(),
        }
    }

    /// About how many entries (an entry both merged and changed since counts twice),
    /// at no cost.
    pub fn approx_len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// How many entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sorted.len()
            + self
                .recent
                .keys()
                .filter(|k| self.sorted.binary_search_by_key(*k, |e| e.0).is_err())
                .count()
    }

    /// Whether the entry of `key` has the value `value`.
    pub fn matches(&self, key: &Key, value: &[u8]) -> bool {
        let k = short(key);
        let got = match self.recent.get(&k) {
            Some(v) => Some(*v),
            None => self
                .sorted
                .binary_search_by_key(&k, |e| e.0)
                .ok()
                .map(|i| self.sorted[i].1),
        };
        got == Some(digest(value))
    }

    /// Sets the entry of `key` to `value`.
    pub fn insert(&mut self, key: &Key, value: &[u8]) {
        self.recent.insert(short(key), digest(value));
        if self.recent.len() >= MERGE_AT {
            self.merge();
        }
    }

    /// Adds every entry of `other` (its values win).
    pub fn extend(&mut self, other: Entries) {
        let Entries { sorted, recent } = other;
        self.recent.extend(sorted);
        self.recent.extend(recent);
        self.merge();
    }

    /// Moves the recent entries into the sorted vector.
    fn merge(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let mut new = Vec::new();
        for (k, v) in self.recent.drain() {
            match self.sorted.binary_search_by_key(&k, |e| e.0) {
                Ok(i) => self.sorted[i].1 = v,
                Err(_) => new.push((k, v)),
            }
        }
        self.sorted.extend(new);
        self.sorted.sort_unstable_by_key(|e| e.0);
        self.sorted.shrink_to_fit();
        self.recent.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k[31] = 0xff;
        k
    }

    #[test]
    fn finds_loaded_added_and_replaced_entries_by_value() {
        let loaded: Vec<(Key, Vec<u8>)> = (0..100).map(|i| (key(i), vec![i as u8])).collect();
        let mut e = Entries::from_pairs(loaded.iter().map(|(k, v)| (k, v.as_slice())));
        assert!(e.matches(&key(5), &[5]));
        assert!(!e.matches(&key(5), &[6]), "another value");
        assert!(!e.matches(&key(500), &[5]), "no such key");
        // Past a merge: added entries are found, replaced values replace.
        for i in 100..(100 + MERGE_AT as u32 + 7) {
            e.insert(&key(i), b"new");
        }
        e.insert(&key(5), b"five");
        assert!(e.matches(&key(5), b"five"));
        assert!(!e.matches(&key(5), &[5]));
        assert!(e.matches(&key(100), b"new"));
        assert!(e.matches(&key(99), &[99]));
        assert_eq!(e.len(), 100 + MERGE_AT + 7);
        // Extending: the other's values win.
        let other = Entries::from_pairs([(&key(99), b"x".as_slice()), (&key(7777), b"y")]);
        e.extend(other);
        assert!(e.matches(&key(99), b"x"));
        assert!(e.matches(&key(7777), b"y"));
        assert!(e.matches(&key(5), b"five"));
        assert_eq!(e.len(), 100 + MERGE_AT + 8);
    }
}
