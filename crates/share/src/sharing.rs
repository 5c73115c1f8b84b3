//! Which files share a backing object, and preparing those objects: the kernel's
//! `inode_share` rules (regular files whose fingerprint value is 1 byte to one block
//! long; equal sizes) plus verification of `sha256:` fingerprints against content (the
//! hashing is in [`crate::content`], publishing in [`crate::publish`]).
//!
//! Verification is done once per domain: a file whose content matched its fingerprint
//! is written in the domain's record (keyed by the image file's identity, see
//! [`crate::store::trust`]) and not hashed again by later mounts while the image file
//! is unchanged; a verified object is trusted only while it is as it was sealed when
//! published, else hashed again, and rebuilt from the file's own content when it no
//! longer matches (never served).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ishare_erofs::{FileType, Image, Inode};
use log::{debug, info, warn};

use crate::content::{check_content, copy_content, hash_file, sha256_digest};
use crate::direct::DirectReader;
use crate::error::Result;
use crate::publish::{Check, Job, Publisher, Verdict};
use crate::stats::Stats;
use crate::store::trust::Trust;
use crate::store::{Object, ObjectLock, Store};

/// How one regular file is served.
#[derive(Debug, Clone)]
pub enum Decision {
    /// From its own image.
    Unshared,
    /// From a store object shared by every file with its key.
    Shared(Arc<Object>),
    /// From a new object copied from this file, served to it at once while the
    /// copy is checked against the fingerprint in the background; shared with other
    /// files only once the check passes (see [`Verdict`]).
    Own(Arc<Object>, Arc<Verdict>),
}

/// Per fingerprint value: serializes preparing its object in this process, and finds
/// the object while the mount still holds it. (Held weakly: past the budget of
/// [`Kept`], a mount keeps an object open only while it serves from it, so the number
/// of descriptors stays bounded whatever the number of files in the image.)
type Slot = Arc<Mutex<SlotState>>;

/// What a [`Slot`] knows of its object.
#[derive(Debug, Default)]
struct SlotState {
    /// The object, while someone holds it.
    obj: Weak<Object>,
    /// Set while `obj` is a copy this process prepared and its check has not passed
    /// yet: other files wait for the check (not for the copy's publication, which
    /// syncs the disk), and get the copy only if it passes.
    pending: Option<Arc<Verdict>>,
}

/// The slots, by fingerprint value. Slots of objects nobody holds any more are
/// dropped now and then, so the map follows the objects in use, not every fingerprint
/// ever opened.
#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Vec<u8>, Slot>,
    /// Size after the last pruning.
    kept: usize,
}

/// Fewest slots worth pruning.
const PRUNE_MIN: usize = 1024;

impl Slots {
    fn get(&mut self, fp: &[u8]) -> Slot {
        if let Some(s) = self.map.get(fp) {
            return s.clone();
        }
        if self.map.len() >= PRUNE_MIN.max(2 * self.kept) {
            // Unused: no thread holds it (only the map does) and it leads nowhere; a
            // slot being locked right now is held by its user, so it stays.
            self.map.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .try_lock()
                        .map_or(true, |st| st.pending.is_some() || st.obj.strong_count() > 0)
            });
            self.kept = self.map.len();
        }
        self.map.entry(fp.to_vec()).or_default().clone()
    }
}

/// Objects kept open, by address, with their order of arrival.
#[derive(Debug, Default)]
struct Kept {
    objects: HashMap<usize, Arc<Object>>,
    order: std::collections::VecDeque<usize>,
    budget: usize,
}

impl Kept {
    /// Keeps `obj` open, closing the oldest kept object beyond the budget.
    fn keep(&mut self, obj: &Arc<Object>) {
        let key = Arc::as_ptr(obj) as usize;
        if self.budget == 0 || self.objects.contains_key(&key) {
            return;
        }
        if self.order.len() >= self.budget
            && let Some(old) = self.order.pop_front()
        {
            self.objects.remove(&old);
        }
        self.objects.insert(key, obj.clone());
        self.order.push_back(key);
    }
}

/// How many objects a mount keeps open once their files are closed: half of what it
/// may open, less a reserve for open files, FUSE and the store.
fn keep_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    (soft / 2).saturating_sub(64).min(1 << 20) as usize
}

/// Who asks for a decision.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// A file's open, which serves from the object.
    Open,
    /// The background preparation of a mount's files ([`Sharing::prepare`]).
    Ahead,
}

/// What [`Sharing::prepare`] did for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// Verified and in the store already.
    Done,
    /// Its object existed; its content was verified now.
    Verified,
    /// Copied into a new object, being checked and published.
    Copied,
    /// Not shared (no usable fingerprint, a mismatch, an error: logged), or left to the
    /// open deciding it right now.
    Unshared,
}

/// How an object is prepared.
enum Prepare {
    /// A new one, under its preparation lock.
    New(ObjectLock),
    /// Replacing a damaged one.
    Replace,
}

/// Sharing state of one mount: the domain's store and the objects opened so far.
#[derive(Debug)]
pub struct Sharing {
    store: Arc<Store>,
    verify: bool,
    /// What the domain has verified already, and the seals of its objects.
    trust: Arc<Trust>,
    /// Publishes prepared objects in the background.
    publisher: Publisher,
    /// Objects kept open after their files are closed, oldest first: a mount marks
    /// the objects it has used as in use (see [`crate::store`]) as long as it may
    /// hold that many descriptors.
    kept: Mutex<Kept>,
    /// One slot per fingerprint value.
    slots: Mutex<Slots>,
    unverifiable_noted: AtomicBool,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl Sharing {
    /// Sharing through `store`; `verify` checks `sha256:` fingerprints.
    pub fn new(store: Store, verify: bool) -> io::Result<Self> {
        let store = Arc::new(store);
        let stats = Arc::new(Stats::default());
        let trust = Arc::new(Trust::new(store.clone()));
        Ok(Sharing {
            publisher: Publisher::new(store.clone(), stats.clone(), trust.clone())?,
            store,
            trust,
            verify,
            kept: Mutex::new(Kept {
                budget: keep_budget(),
                ..Kept::default()
            }),
            slots: Mutex::new(Slots::default()),
            unverifiable_noted: AtomicBool::new(false),
            stats,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for objects still being synced and linked into the store, writes what
    /// was verified into the domain's records, and logs how verification went.
    pub fn wait_published(&self) {
        self.publisher.finish();
        self.trust.flush();
        if self.verify {
            info!("{}", self.stats.verification_summary());
        }
    }

    /// The sharing key's fingerprint of `inode` if it takes part in sharing, as the
    /// kernel decides: a regular file whose fingerprint xattr value is 1 byte to one
    /// block long. (Empty files are left out: there is nothing to share.)
    pub fn fingerprint(img: &Image, inode: &Inode) -> Option<Vec<u8>> {
        if inode.file_type != FileType::Regular || inode.size == 0 {
            return None;
        }
        match img.fingerprint(inode) {
            Ok(Some(fp)) => usable_fingerprint(img.superblock().block_size(), fp).ok(),
            _ => None,
        }
    }

    /// Decides how `inode` is served, preparing its shared object if needed. `checked`
    /// says this mount has already found the file's content to match its fingerprint
    /// (it is being shared again after its object was closed). `path` names the file
    /// in log lines.
    pub fn decide(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        checked: bool,
        path: &dyn Fn() -> String,
    ) -> Decision {
        let Some(fp) = Self::fingerprint(img, inode) else {
            debug!(
                "{}: {}: no usable fingerprint; unshared",
                img.name(),
                path()
            );
            return Decision::Unshared;
        };
        self.decide_for(img, direct, inode, fp, checked, path, Purpose::Open)
    }

    /// Prepares `inode` ahead of its first open (see [`crate::fs::ahead`]): verifies its
    /// content and makes its object when the store has none, keeping nothing open
    /// afterwards. What is done already costs a record lookup and a store lookup; a
    /// file whose first open is being decided right now is left to that open.
    pub fn prepare(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        path: &dyn Fn() -> String,
    ) -> Ahead {
        let Some(fp) = Self::fingerprint(img, inode) else {
            return Ahead::Unshared;
        };
        let recorded = !self.verify
            || sha256_digest(&fp).is_some_and(|_| {
                self.trust
                    .image_id(img)
                    .is_some_and(|id| self.trust.is_verified(&id, inode.nid, &fp))
            });
        if recorded
            && matches!(self.store.lookup(&fp, self.verify), Ok(Some(o)) if o.size == inode.size)
        {
            return Ahead::Done;
        }
        match self.decide_for(img, direct, inode, fp, false, path, Purpose::Ahead) {
            Decision::Unshared => Ahead::Unshared,
            Decision::Own(..) => Ahead::Copied,
            Decision::Shared(_) => Ahead::Verified,
        }
    }

    /// [`Sharing::decide`] for `purpose`, `fp` being the file's fingerprint.
    #[allow(clippy::too_many_arguments)]
    fn decide_for(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        fp: Vec<u8>,
        checked: bool,
        path: &dyn Fn() -> String,
        purpose: Purpose,
    ) -> Decision {
        let image = img.name();
        let sha = sha256_digest(&fp);
        if self.verify && sha.is_none() {
            if !self.unverifiable_noted.swap(true, Ordering::Relaxed) {
                warn!(
                    "{image}: fingerprints that are not sha256: digests cannot be verified; \
                     such files are not shared (first: {}); verify=off trusts them as the kernel does",
                    path()
                );
            }
            return Decision::Unshared;
        }
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(&fp)
        };
        let mut guard = match purpose {
            Purpose::Open => slot.lock().unwrap_or_else(|e| e.into_inner()),
            // Being decided by an open (or another preparation) right now.
            Purpose::Ahead => match slot.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Decision::Unshared,
            },
        };
        if let Some(verdict) = guard.pending.take()
            && verdict.wait() != Some(true)
        {
            // Failed its check (or never checked): not for anyone else.
            guard.obj = Weak::new();
        }
        let cannot_open = |e: io::Error| {
            warn!(
                "{image}: {}: cannot open its shared object in {}: {e}; served unshared",
                path(),
                self.store.root().display()
            );
            Decision::Unshared
        };
        // An object this Sharing holds was checked when it was opened (or, prepared
        // here, when its copy was checked).
        let from_slot = guard.obj.upgrade();
        let held = from_slot.is_some();
        let mut existing = match from_slot {
            Some(o) => Some(o),
            None => match self.store.lookup(&fp, self.verify) {
                Ok(o) => o.map(Arc::new),
                Err(e) => return cannot_open(e),
            },
        };
        // Not in the store yet: wait for any other mount preparing it, then look again.
        let mut lock = None;
        if existing.is_none() {
            let l = match self.store.lock(&fp) {
                Ok(l) => l,
                Err(e) => return cannot_open(e),
            };
            existing = match self.store.lookup(&fp, self.verify) {
                Ok(o) => o.map(Arc::new),
                Err(e) => return cannot_open(e),
            };
            if existing.is_none() {
                lock = Some(l);
            } else {
                // Published while we waited: the lock file is of no use any more.
                l.release_published();
            }
        }
        let decision = match existing {
            Some(obj) if obj.size == inode.size => {
                let sha = &sha.expect("checked above");
                if self.verify && !checked {
                    match self.content_verified(img, direct, inode, &fp, sha, path) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.stats.mismatches.fetch_add(1, Ordering::Relaxed);
                            warn!(
                                "{image}: {}: content does not match its sha256 fingerprint; \
                                 served from the image, unshared",
                                path()
                            );
                            return Decision::Unshared;
                        }
                        Err(e) => {
                            warn!("{image}: {}: cannot verify: {e}; served unshared", path());
                            return Decision::Unshared;
                        }
                    }
                }
                if !self.verify || held || self.object_intact(&obj, &fp, sha, image, path) {
                    Decision::Shared(obj)
                } else {
                    // This file's content is verified: rebuild the object from it.
                    drop(obj);
                    let how = (Prepare::Replace, purpose);
                    self.materialize(img, direct, inode, &fp, Some(*sha), how, path)
                }
            }
            Some(obj) if self.verify && obj.verified => {
                // A verified object always has the size of the content its name was
                // derived from; if ours matches the fingerprint, the object is damaged.
                self.stats.damaged.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "{image}: {}: shared object {} has {} bytes, the file {} (damaged); \
                     rebuilding it from this file",
                    path(),
                    self.store.object_path(&fp, true).display(),
                    obj.size,
                    inode.size
                );
                self.materialize(
                    img,
                    direct,
                    inode,
                    &fp,
                    sha,
                    (Prepare::Replace, purpose),
                    path,
                )
            }
            Some(obj) => {
                warn!(
                    "{image}: {}: same fingerprint as a shared file of another size \
                     ({} bytes here, {} there); not shared",
                    path(),
                    inode.size,
                    obj.size
                );
                return Decision::Unshared;
            }
            None => match lock {
                Some(l) => self.materialize(
                    img,
                    direct,
                    inode,
                    &fp,
                    sha,
                    (Prepare::New(l), purpose),
                    path,
                ),
                None => unreachable!("locked when no object exists"),
            },
        };
        // Prepared ahead, an object is not kept open: an open will look it up.
        let keep = matches!(purpose, Purpose::Open);
        match &decision {
            Decision::Shared(obj) => {
                guard.obj = Arc::downgrade(obj);
                if keep {
                    self.keep(obj);
                }
            }
            // Not for other files until checked: in this process they wait for the
            // check; other processes look in the store, waiting for the preparation
            // lock that publishing releases.
            Decision::Own(obj, verdict) => {
                guard.obj = Arc::downgrade(obj);
                guard.pending = Some(verdict.clone());
                if keep {
                    self.keep(obj);
                }
            }
            Decision::Unshared => {}
        }
        decision
    }

    /// Whether the content of `inode` matches the digest `sha` of its fingerprint `fp`:
    /// from the domain's record when it says so for this very image file, else hashed
    /// (and recorded when it matches).
    fn content_verified(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        fp: &[u8],
        sha: &[u8; 32],
        path: &dyn Fn() -> String,
    ) -> Result<bool> {
        let id = self.trust.image_id(img);
        if let Some(id) = &id
            && self.trust.is_verified(id, inode.nid, fp)
        {
            self.stats.recorded.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        self.stats.hashed.fetch_add(1, Ordering::Relaxed);
        debug!(
            "{}: {}: hashing its content to verify it",
            img.name(),
            path()
        );
        let matched = check_content(img, direct, inode, sha)?;
        // Recorded only if the image file did not change while it was read.
        if matched
            && let Some(id) = id
            && self.trust.image_id(img).as_ref() == Some(&id)
        {
            self.trust.add_verified(&id, inode.nid, fp);
        }
        Ok(matched)
    }

    /// Whether a verified object found in the store is still what was published: its
    /// seal matches the open file, or else its content hashes to `sha` (then it is
    /// sealed again). A damaged object is never served: the caller rebuilds it.
    fn object_intact(
        &self,
        obj: &Object,
        fp: &[u8],
        sha: &[u8; 32],
        image: &str,
        path: &dyn Fn() -> String,
    ) -> bool {
        if self.trust.is_sealed(fp, &obj.file) {
            return true;
        }
        self.stats.hashed.fetch_add(1, Ordering::Relaxed);
        let shown = self.store.object_path(fp, true);
        debug!(
            "{image}: {}: shared object {} is not sealed as it is; hashing it",
            path(),
            shown.display()
        );
        let why = match hash_file(&obj.file, obj.size) {
            Ok(got) if got == *sha => {
                if let Err(e) = self.trust.seal(fp, &obj.file) {
                    debug!("{}: cannot seal: {e}", shown.display());
                }
                return true;
            }
            Ok(_) => "does not match its fingerprint (damaged or tampered with)".to_string(),
            Err(e) => format!("cannot be read ({e})"),
        };
        self.stats.damaged.fetch_add(1, Ordering::Relaxed);
        warn!(
            "{image}: {}: shared object {} {why}; not served, rebuilt from this file",
            path(),
            shown.display()
        );
        false
    }

    fn keep(&self, obj: &Arc<Object>) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep(obj);
        self.stats.shared.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies `inode` from the image into a new object and publishes it in the
    /// background, after checking it against its `sha256:` fingerprint when verifying
    /// (the copy is this file's own content, so it serves this file meanwhile).
    #[allow(clippy::too_many_arguments)]
    fn materialize(
        &self,
        img: &Image,
        direct: &DirectReader,
        inode: &Inode,
        fp: &[u8],
        sha: Option<[u8; 32]>,
        (how, purpose): (Prepare, Purpose),
        path: &dyn Fn() -> String,
    ) -> Decision {
        let (replace, lock) = match how {
            Prepare::New(l) => (false, Some(l)),
            Prepare::Replace => (true, None),
        };
        let ahead = matches!(purpose, Purpose::Ahead);
        let image = img.name();
        let started = std::time::Instant::now();
        let res = (|| -> Result<Decision> {
            let tmp = self.store.create_tmp(fp)?;
            let id = if self.verify {
                self.trust.image_id(img)
            } else {
                None
            };
            copy_content(img, direct, inode, &tmp.file)?;
            // The copy's check verifies this file too, unless the image changed meanwhile.
            let id = id.filter(|id| self.trust.image_id(img).as_ref() == Some(id));
            // Served right away from the unpublished file (same inode, so same page
            // cache, as the object it becomes); checking, syncing and linking it under
            // its name go on in the background. A crash before the link leaves nothing.
            let obj = Arc::new(Object {
                file: tmp.reopen_read_only()?,
                size: inode.size,
                verified: false,
                opened: Default::default(),
            });
            // Prepared ahead: held until published (an open meanwhile finds it in its
            // slot rather than waiting for the store), then its pages go.
            let held = ahead.then(|| obj.clone());
            let want = if self.verify { sha } else { None };
            let check = want.map(|want| Check {
                want,
                verdict: Arc::new(Verdict::default()),
                fp: fp.to_vec(),
                source: id.map(|id| (id, inode.nid)),
            });
            let decision = match &check {
                Some(c) => Decision::Own(obj, c.verdict.clone()),
                None => Decision::Shared(obj),
            };
            self.publisher.submit(Job {
                tmp,
                size: inode.size,
                check,
                replace,
                lock,
                ahead: held,
                shown: format!("{image}: {}", path()),
                started,
            });
            Ok(decision)
        })();
        match res {
            Ok(decision) => {
                debug!(
                    "{image}: {}: copied {} bytes into a new object in {:.1?}",
                    path(),
                    inode.size,
                    started.elapsed()
                );
                decision
            }
            Err(e) => {
                warn!(
                    "{image}: {}: cannot prepare its shared object in {}: {e}; served unshared",
                    path(),
                    self.store.root().display()
                );
                Decision::Unshared
            }
        }
    }
}

/// A fingerprint xattr value the kernel shares by (1 byte to one block long), else
/// its length. Also the rule of `ishare report`'s prediction.
pub(crate) fn usable_fingerprint(
    block_size: u32,
    fp: Vec<u8>,
) -> std::result::Result<Vec<u8>, usize> {
    if (1..=block_size as usize).contains(&fp.len()) {
        Ok(fp)
    } else {
        Err(fp.len())
    }
}
