//! A mount's passthrough backing files: which file (by NID) passes through to which
//! kernel backing id, and how many open files use it.
//!
//! A registration stays after its file's last close, so every later open of the file
//! is answered from this table alone: no file state, no store lookup, no ioctl, no
//! word to the fd holder. That is what makes a warm open cost one FUSE round trip
//! (measured on the ten-image family: open+close 57 µs with 2048 kept per mount, 25 µs
//! with all). Keeping one costs this process ~40 bytes and the kernel ~400 bytes (the
//! object's open file, its in-use `flock`, the backing record: slab growth measured
//! with 117,145 files kept against 20,480), next to the ~1 KiB of the FUSE inode the
//! kernel keeps for the file anyway. Past [`IDLE_LIMIT`] idle registrations in one
//! mount (an image with more files than that, all opened) idle ones are closed, a
//! quarter at a time, so the kernel's share stays under ~13 MiB per mount.

use std::collections::HashMap;

use fuser::BackingId;

/// Idle registrations one mount keeps (those of files no longer open).
pub(super) const IDLE_LIMIT: usize = 1 << 15;

/// One registration.
#[derive(Debug)]
struct Entry {
    id: BackingId,
    /// Open files of this mount passing through to it.
    open: u32,
}

/// A mount's registrations.
#[derive(Debug)]
pub(super) struct Backing {
    ids: HashMap<u64, Entry>,
    /// Entries with no open file.
    idle: usize,
    limit: usize,
}

impl Default for Backing {
    fn default() -> Self {
        Backing::with_limit(IDLE_LIMIT)
    }
}

impl Backing {
    pub(super) fn with_limit(limit: usize) -> Backing {
        Backing {
            ids: HashMap::new(),
            idle: 0,
            limit: limit.max(1),
        }
    }

    /// The registration of `nid` for one more open file, if it has one.
    pub(super) fn acquire(&mut self, nid: u64) -> Option<&BackingId> {
        let e = self.ids.get_mut(&nid)?;
        if e.open == 0 {
            self.idle -= 1;
        }
        e.open += 1;
        Some(&e.id)
    }

    /// Records a new registration of `nid`, used by one open file.
    pub(super) fn insert(&mut self, nid: u64, id: BackingId) -> &BackingId {
        let e = self.ids.entry(nid).insert_entry(Entry { id, open: 1 });
        &e.into_mut().id
    }

    /// Records a registration an earlier daemon made on this connection (no file of
    /// ours uses it yet).
    pub(super) fn inherit(&mut self, nid: u64, id: BackingId) {
        if self
            .ids
            .insert(nid, Entry { id, open: 0 })
            .is_none_or(|e| e.open > 0)
        {
            self.idle += 1;
        }
    }

    /// An open file of `nid` was closed. Returns the NIDs whose registrations were
    /// closed to stay within the limit (dropping a `BackingId` closes it in the kernel).
    pub(super) fn release(&mut self, nid: u64) -> Vec<u64> {
        let Some(e) = self.ids.get_mut(&nid) else {
            return Vec::new();
        };
        if e.open == 0 {
            return Vec::new();
        }
        e.open -= 1;
        if e.open > 0 {
            return Vec::new();
        }
        self.idle += 1;
        if self.idle <= self.limit {
            return Vec::new();
        }
        // Which idle ones go matters little (the next open registers again); a quarter
        // at once keeps the scan's cost per release constant on average.
        let mut excess = self.idle - self.limit * 3 / 4;
        let mut closed = Vec::with_capacity(excess);
        self.ids.retain(|&n, e| {
            if excess > 0 && e.open == 0 && n != nid {
                excess -= 1;
                closed.push(n);
                false
            } else {
                true
            }
        });
        self.idle -= closed.len();
        closed
    }

    /// Registrations held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_outlive_closes_and_stay_bounded() {
        let mut b = Backing::with_limit(8);
        for nid in 0..8 {
            b.insert(nid, BackingId::inherited(nid as u32 + 100));
            assert!(b.release(nid).is_empty());
        }
        // Idle ones answer the next open.
        assert_eq!(b.acquire(3).map(BackingId::id), Some(103));
        assert!(b.release(3).is_empty());
        // File 20 stays open across the trim; the ninth idle one triggers it.
        b.insert(20, BackingId::inherited(120));
        b.insert(9, BackingId::inherited(109));
        let closed = b.release(9);
        assert_eq!(closed.len(), 3, "idle 9 > 8: down to 6");
        assert!(!closed.contains(&9) && !closed.contains(&20));
        assert_eq!(b.len(), 10 - 3);
        assert_eq!(b.acquire(20).map(BackingId::id), Some(120));
        // A release without an open changes nothing.
        assert!(b.release(77).is_empty());
    }

    #[test]
    fn inherited_ones_count_as_idle() {
        let mut b = Backing::with_limit(2);
        b.inherit(1, BackingId::inherited(1));
        b.inherit(2, BackingId::inherited(2));
        b.insert(3, BackingId::inherited(3));
        assert_eq!(b.release(3).len(), 2, "three idle over a limit of two");
        assert_eq!(b.len(), 1);
    }
}
