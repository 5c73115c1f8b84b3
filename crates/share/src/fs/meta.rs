//! One memory budget for the metadata that every mount of the process keeps: the
//! serving state of the files opened (with their inodes) and the names looked up (for
//! paths in log lines), keyed by (mount, NID).
//!
//! A node daemon serves many images whose files number in the hundreds of thousands;
//! a map per mount that only grows made its memory grow with every file ever opened
//! (172 MiB with ten Debian images). Everything here can be found again: an evicted
//! file state is decided again at the file's next open (from the domain's record of
//! verified files, and from the objects the sharing state still holds, so nothing is
//! hashed again for it), an evicted name shows as "(nid N)" in a log line. FUSE node
//! ids are NIDs, so no map is needed to get from a node id to its inode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::FileState;

/// Bytes of file states the process keeps at most, and of names (approximately: each
/// entry is weighed by its size plus a fixed overhead). Names only make log lines
/// readable, and a stat walk looks up every entry: they get their own, smaller share,
/// so a walk never pushes out the states of the files in use. (3 + 1 MiB since the
/// node daemon's 40 MiB target; 8 + 2 before: an evicted state costs the next open a
/// decision again, a record lookup and the object found again, no hashing.)
const FILES_BUDGET: u64 = 3 << 20;
const NAMES_BUDGET: u64 = 1 << 20;
/// Per-entry overhead beyond the entry's own size: the cache's slot, key and
/// allocator headers.
const OVERHEAD: u64 = 64;

/// (mount, NID).
type Key = (u64, u64);
/// Parent NID and name.
type Name = Arc<(u64, Box<[u8]>)>;

#[derive(Clone)]
struct Weigh;

impl Weighter<Key, Arc<FileState>> for Weigh {
    fn weight(&self, _key: &Key, _val: &Arc<FileState>) -> u64 {
        OVERHEAD + std::mem::size_of::<FileState>() as u64
    }
}

impl Weighter<Key, Name> for Weigh {
    fn weight(&self, _key: &Key, val: &Name) -> u64 {
        OVERHEAD + (std::mem::size_of::<(u64, Box<[u8]>)>() + val.1.len()) as u64
    }
}

/// The process's caches of file states and of names.
fn files() -> &'static Cache<Key, Arc<FileState>, Weigh> {
    static CACHE: OnceLock<Cache<Key, Arc<FileState>, Weigh>> = OnceLock::new();
    // (The item estimate only sizes the tables; the weight is the budget.)
    CACHE.get_or_init(|| Cache::with_weighter((FILES_BUDGET / 256) as usize, FILES_BUDGET, Weigh))
}

fn names() -> &'static Cache<Key, Name, Weigh> {
    static CACHE: OnceLock<Cache<Key, Name, Weigh>> = OnceLock::new();
    CACHE.get_or_init(|| Cache::with_weighter((NAMES_BUDGET / 128) as usize, NAMES_BUDGET, Weigh))
}

/// One mount's view of the process's metadata cache.
#[derive(Debug)]
pub(super) struct MountMeta {
    /// Unique in the process (mounts come and go; their entries age out).
    mount: u64,
}

impl MountMeta {
    pub(super) fn new() -> MountMeta {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        MountMeta {
            mount: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The cached state of file `nid`, if still cached.
    pub(super) fn file(&self, nid: u64) -> Option<Arc<FileState>> {
        files().get(&(self.mount, nid))
    }

    /// Caches `state` for file `nid` unless another thread cached one first; returns
    /// the one cached.
    pub(super) fn insert_file(&self, nid: u64, state: Arc<FileState>) -> Arc<FileState> {
        files()
            .get_or_insert_with(&(self.mount, nid), || {
                Ok::<_, std::convert::Infallible>(state.clone())
            })
            .unwrap_or(state)
    }

    /// Parent and name of `nid`, if still cached.
    pub(super) fn name(&self, nid: u64) -> Option<Name> {
        names().get(&(self.mount, nid))
    }

    /// Remembers that `nid` is `name` in directory `parent` (the first name seen
    /// stays: a hard link has several).
    pub(super) fn remember(&self, parent: u64, name: &[u8], nid: u64) {
        let key = (self.mount, nid);
        if names().peek(&key).is_none() {
            names().insert(key, Arc::new((parent, name.into())));
        }
    }
}

impl Drop for MountMeta {
    /// A mount gone: its entries go now rather than when the budget pushes them out.
    fn drop(&mut self) {
        let mount = self.mount;
        files().retain(|k, _| k.0 != mount);
        names().retain(|k, _| k.0 != mount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_within_the_budget_and_per_mount() {
        let (a, b) = (MountMeta::new(), MountMeta::new());
        a.remember(1, b"x", 7);
        assert_eq!(a.name(7).map(|n| n.1.to_vec()), Some(b"x".to_vec()));
        assert!(b.name(7).is_none(), "another mount's entry");
        // Far more names than the budget holds: the cache's weight stays bounded.
        let name = [b'n'; 200];
        for nid in 0..(2 * NAMES_BUDGET / 200) {
            b.remember(1, &name, nid + 100);
        }
        assert!(
            names().weight() <= NAMES_BUDGET,
            "{} > {NAMES_BUDGET}",
            names().weight()
        );
        let gone = b.mount;
        drop(b);
        assert!(names().iter().all(|(k, _)| k.0 != gone));
    }
}
