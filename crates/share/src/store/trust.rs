//! What a domain remembers having verified, so that verification happens once: which
//! files of which images matched their `sha256:` fingerprints, and the seals of
//! verified objects. Both are [`record`](super::record) files, authenticated with a key
//! derived from the domain id, so nobody without it can add an entry.
//!
//! # Images
//!
//! One record per image file, `records/image.<hex>` (named by a keyed hash of the image
//! file's device and inode). An entry says "in the image whose files have these
//! identities, the inode of this NID has content matching this fingerprint value"; its
//! key is `HMAC(K, "verified" ‖ generation ‖ nid ‖ fingerprint)`, where the generation
//! is a keyed hash of the [`FileId`]s (device, inode, size, mtime, ctime, btime) of the
//! image file and of its extra devices. A changed image file (any write moves its ctime)
//! or another file at the same path has another generation and finds no entry, so its
//! files are hashed again; entries of other generations are dropped at the next
//! rewrite. Keys are opaque: no fingerprint (which would tell which files an image
//! holds) and no domain id is stored.
//!
//! # Objects
//!
//! A verified object, once published, is sealed: `records/seals.<x>` (16 shards) maps
//! a keyed hash of its fingerprint to the object file's [`FileId`] at that time.
//! Whoever later uses the object compares the open file's identity with its seal; a
//! missing or different seal means the object must be hashed again before it is trusted
//! (flipping a byte in an object and restoring its mtime still moves its ctime).
//!
//! # Writing
//!
//! New entries are kept in memory and written in batches (every [`FLUSH_EVERY`] entries,
//! [`FLUSH_AFTER`] after the first unwritten one, and at [`Trust::flush`], which the end
//! of a mount calls). Losing unwritten entries (a killed daemon) only means hashing
//! again. Several processes share the records: writers merge under a lock (see
//! [`record`](super::record)); a reader whose lookup misses reads the record again if
//! its file changed since (another process may have added the entry).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ishare_erofs::Image;
use log::warn;

use super::Store;
use super::compact::Entries;
use super::identity::FileId;
use super::record::{self, Key, Update};

/// Unwritten entries that make the next addition write them, at least (see
/// [`Trust::add`]).
const FLUSH_EVERY: usize = 256;

/// ... and at most.
const FLUSH_MOST: usize = 4096;

/// How long the oldest unwritten entry waits at most (checked at the next addition).
const FLUSH_AFTER: Duration = Duration::from_secs(5);

/// How often a record missing an entry is compared with its file (another process
/// may have written the entry since).
const RECHECK: Duration = Duration::from_secs(1);

/// Prefix of image records' names.
const IMAGE_PREFIX: &str = "image.";

/// Prefix of seal shards' names.
const SEALS_PREFIX: &str = "seals.";

/// Which entries of a record a rewrite keeps.
type Keep = Box<dyn Fn(&Key, &[u8]) -> bool>;

/// Unwritten entries of one record, taken to be written.
struct Taken {
    name: String,
    generation: Option<[u8; 16]>,
    put: Vec<(Key, Vec<u8>)>,
}

/// An image as the records know it (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageId {
    /// Its record's name.
    record: String,
    generation: [u8; 16],
}

/// One record as loaded, with what this process added and has not written yet.
#[derive(Debug, Default)]
struct Cached {
    entries: Entries,
    pending: Vec<(Key, Vec<u8>)>,
    /// The record file's identity when read (`None`: there was none), to tell whether
    /// another process rewrote it since.
    file: Option<FileId>,
    /// Image records: the generation it was loaded for.
    generation: Option<[u8; 16]>,
    /// When the record file's identity was last compared with [`Cached::file`].
    checked: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, Cached>,
    unwritten: usize,
    oldest: Option<Instant>,
    /// Records already warned about (one warning per record file and process).
    warned: HashSet<String>,
}

/// The verification records and seals of one domain, as one [`crate::sharing::Sharing`]
/// uses them.
pub(crate) struct Trust {
    store: Arc<Store>,
    mac_key: [u8; 32],
    state: Mutex<State>,
    /// Image identities computed lately, by the states of the image's files: every
    /// decision asks for its image's identity (and again after reading, to see that the
    /// image did not change), and the keyed MACs of an identity cost more than the
    /// `statx` that tells whether it still holds.
    ids: Mutex<HashMap<Vec<FileId>, ImageId>>,
}

/// How many image identities [`Trust::image_id`] keeps (emptied when full): more than
/// the images a daemon prepares or opens files of at once.
const IDS_KEPT: usize = 256;

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").finish_non_exhaustive()
    }
}

impl Drop for Trust {
    fn drop(&mut self) {
        self.flush();
        self.mac_key.fill(0);
    }
}

impl Trust {
    /// The records of `store`'s domain.
    pub fn new(store: Arc<Store>) -> Trust {
        Trust {
            mac_key: store.keyed(&[b"record mac"]),
            store,
            state: Mutex::new(State::default()),
            ids: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shown(&self, name: &str) -> PathBuf {
        self.store.records_path().join(name)
    }

    /// `img` as the records know it; `None` when one of its files is not a file we can
    /// `statx` (an image in memory), which is then never taken as verified.
    pub fn image_id(&self, img: &Image) -> Option<ImageId> {
        let mut ids = Vec::new();
        for dev in 0..=img.devices().len() {
            let dev = u16::try_from(dev).ok()?;
            match img.device_file(dev, 0, 0) {
                Ok(Some((f, _))) => ids.push(FileId::of(f).ok()?),
                Ok(None) => return None,
                // Held in the primary device (no device files given): nothing more.
                Err(_) => {}
            }
        }
        let kept = || self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = kept().get(&ids) {
            return Some(id.clone());
        }
        let id = self.compute_image_id(&ids)?;
        let mut kept = kept();
        if kept.len() >= IDS_KEPT {
            kept.clear();
        }
        kept.insert(ids, id.clone());
        Some(id)
    }

    /// The identity of an image whose files are in the states `ids` (the first being
    /// the primary device's).
    fn compute_image_id(&self, ids: &[FileId]) -> Option<ImageId> {
        let primary = ids.first()?;
        let record = format!(
            "{IMAGE_PREFIX}{}",
            hex::encode(
                &self.store.keyed(&[
                    b"image record",
                    &primary.dev.to_le_bytes(),
                    &primary.ino.to_le_bytes()
                ])[..16]
            )
        );
        let mut parts: Vec<&[u8]> = vec![b"image generation"];
        let encoded: Vec<_> = ids.iter().map(FileId::encode).collect();
        parts.extend(encoded.iter().map(|e| e.as_slice()));
        let generation = self.store.keyed(&parts)[..16].try_into().expect("16 bytes");
        Some(ImageId { record, generation })
    }

    fn verified_key(&self, id: &ImageId, nid: u64, fp: &[u8]) -> Key {
        self.store.keyed(&[
            b"verified",
            &id.generation,
            &nid.to_le_bytes(),
            &(fp.len() as u64).to_le_bytes(),
            fp,
        ])
    }

    /// True when the record says the inode `nid` of image `id` matched `fp`.
    pub fn is_verified(&self, id: &ImageId, nid: u64, fp: &[u8]) -> bool {
        let key = self.verified_key(id, nid, fp);
        self.find(&id.record, Some(id.generation), &key, &id.generation)
    }

    /// Records that the inode `nid` of image `id` matched `fp`.
    pub fn add_verified(&self, id: &ImageId, nid: u64, fp: &[u8]) {
        let key = self.verified_key(id, nid, fp);
        self.add(&id.record, Some(id.generation), key, id.generation.to_vec());
    }

    fn seal_key(&self, fp: &[u8]) -> (String, Key) {
        let key = self
            .store
            .keyed(&[b"seal", &(fp.len() as u64).to_le_bytes(), fp]);
        (format!("{SEALS_PREFIX}{:x}", key[0] >> 4), key)
    }

    /// True when the open object `file` of fingerprint `fp` is as it was sealed.
    pub fn is_sealed(&self, fp: &[u8], file: &File) -> bool {
        let Ok(id) = FileId::of(file) else {
            return false;
        };
        let (name, key) = self.seal_key(fp);
        self.find(&name, None, &key, &id.encode())
    }

    /// Seals the open object `file` of fingerprint `fp` as it is now.
    pub fn seal(&self, fp: &[u8], file: &File) -> io::Result<()> {
        let id = FileId::of(file)?;
        let (name, key) = self.seal_key(fp);
        self.add(&name, None, key, id.encode().to_vec());
        Ok(())
    }

    /// Whether record `name` (for image records: of `generation`) has `key` set to
    /// `want`, reading the record again when it misses and the file changed since it
    /// was read.
    fn find(&self, name: &str, generation: Option<[u8; 16]>, key: &Key, want: &[u8]) -> bool {
        let mut st = self.lock();
        if let Some(r) = st.records.get_mut(name)
            && r.generation == generation
        {
            if r.entries.matches(key, want) {
                return true;
            }
            // What another process wrote is looked for at most every RECHECK: each look
            // walks the store's path (about 20 system calls), and a cold read misses
            // for every file (missing it costs one hash, never a wrong answer).
            if r.checked.is_some_and(|t| t.elapsed() < RECHECK) {
                return false;
            }
            r.checked = Some(Instant::now());
            let now = self.record_file_id(name);
            if now == r.file {
                return false;
            }
        }
        let fresh = self.load(&mut st, name, generation);
        let hit = fresh.entries.matches(key, want);
        let st = &mut *st;
        match st.records.get_mut(name) {
            // Keep what this process has not written yet (same generation only).
            Some(old) if old.generation == generation => {
                old.entries.extend(fresh.entries);
                old.file = fresh.file;
            }
            _ => {
                st.records.insert(name.to_owned(), fresh);
            }
        }
        hit
    }

    /// The current identity of record file `name` (`None`: none, or not readable).
    fn record_file_id(&self, name: &str) -> Option<FileId> {
        let dir = self.store.records_dir(false).ok()??;
        let fd = rustix::fs::openat(
            &dir,
            name,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()?;
        FileId::of(fd).ok()
    }

    /// Reads record `name` (image records: only entries of `generation`).
    fn load(&self, st: &mut State, name: &str, generation: Option<[u8; 16]>) -> Cached {
        let file = self.record_file_id(name);
        let read = match self.store.records_dir(false) {
            Ok(Some(dir)) => record::read(&dir, name, &self.mac_key),
            Ok(None) => Ok(record::Loaded::default()),
            Err(e) => Err(e),
        };
        let loaded = match read {
            Ok(l) => l,
            Err(e) => {
                if st.warned.insert(name.to_owned()) {
                    warn!(
                        "{}: cannot read this verification record: {e}; verifying again",
                        self.shown(name).display()
                    );
                }
                record::Loaded::default()
            }
        };
        if loaded.rejected > 0 && st.warned.insert(name.to_owned()) {
            warn!(
                "{}: {} entries of this verification record fail authentication; \
                 ignored (their files are verified again)",
                self.shown(name).display(),
                loaded.rejected
            );
        }
        let entries = Entries::from_pairs(
            loaded
                .entries
                .iter()
                .filter(|(_, v)| generation.is_none_or(|g| v[..] == g))
                .map(|(k, v)| (k, v.as_slice())),
        );
        Cached {
            entries,
            pending: Vec::new(),
            file,
            generation,
            checked: Some(Instant::now()),
        }
    }

    fn add(&self, name: &str, generation: Option<[u8; 16]>, key: Key, value: Vec<u8>) {
        let due = {
            let mut st = self.lock();
            let st = &mut *st;
            let r = st.records.entry(name.to_owned()).or_default();
            if r.generation != generation {
                // The image changed since its record was loaded: start over.
                *r = Cached {
                    generation,
                    ..Cached::default()
                };
            }
            r.entries.insert(&key, &value);
            r.pending.push((key, value));
            // A write rewrites whole records: waiting for a quarter of what the records
            // hold keeps the work of writing n entries, batch by batch, at a few times
            // n (every FLUSH_EVERY entries, preparing a 31,000-file image rewrote its
            // record 120 times: 2 million entry MACs, most of a core for 5 s); up to
            // FLUSH_MOST, as unwritten entries cost memory (~90 bytes each: 2.7 MiB
            // more daemon PSS with ten family images when uncapped).
            let held: usize = st.records.values().map(|r| r.entries.approx_len()).sum();
            let every = (held / 4).clamp(FLUSH_EVERY, FLUSH_MOST);
            st.unwritten += 1;
            let oldest = *st.oldest.get_or_insert_with(Instant::now);
            st.unwritten >= every || oldest.elapsed() >= FLUSH_AFTER
        };
        if due {
            self.flush();
        }
    }

    /// Writes what this process added and has not written yet.
    pub fn flush(&self) {
        let taken: Vec<Taken> = {
            let mut st = self.lock();
            st.unwritten = 0;
            st.oldest = None;
            st.records
                .iter_mut()
                .filter(|(_, r)| !r.pending.is_empty())
                .map(|(n, r)| Taken {
                    name: n.clone(),
                    generation: r.generation,
                    put: std::mem::take(&mut r.pending),
                })
                .collect()
        };
        if taken.is_empty() {
            return;
        }
        let keeps: Vec<Keep> = taken
            .iter()
            .map(|t| -> Keep {
                match t.generation {
                    // Entries of other generations are of an image file that changed.
                    Some(g) => Box::new(move |_, v| v[..] == g),
                    None => Box::new(|_, _| true),
                }
            })
            .collect();
        let updates: Vec<Update<'_>> = taken
            .iter()
            .zip(&keeps)
            .map(|(t, keep)| Update {
                name: t.name.clone(),
                put: t.put.clone(),
                keep: keep.as_ref(),
            })
            .collect();
        let res = self
            .store
            .records_dir(true)
            .and_then(|d| d.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
            .and_then(|d: OwnedFd| record::write(&d, &updates, &self.mac_key));
        let mut st = self.lock();
        match res {
            Ok(w) => {
                for name in w.rejected {
                    if st.warned.insert(name.clone()) {
                        warn!(
                            "{}: entries of this verification record failed authentication; \
                             dropped",
                            self.shown(&name).display()
                        );
                    }
                }
            }
            Err(e) => {
                if st.warned.insert(String::new()) {
                    warn!(
                        "{}: cannot write verification records: {e}; files will be verified again",
                        self.store.records_path().display()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DomainId;

    fn store(root: &std::path::Path) -> Arc<Store> {
        Arc::new(Store::open(root, &DomainId::new("d")).unwrap())
    }

    fn id(generation: u8) -> ImageId {
        ImageId {
            record: "image.test".into(),
            generation: [generation; 16],
        }
    }

    #[test]
    fn verified_entries_survive_a_new_process_and_only_for_their_image() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let a = Trust::new(s.clone());
        assert!(!a.is_verified(&id(1), 5, b"sha256:x"));
        a.add_verified(&id(1), 5, b"sha256:x");
        assert!(a.is_verified(&id(1), 5, b"sha256:x"));
        a.flush();
        // A new process (another Trust) finds it; not for another NID, fingerprint or
        // generation (the image file changed).
        let b = Trust::new(s.clone());
        assert!(b.is_verified(&id(1), 5, b"sha256:x"));
        assert!(!b.is_verified(&id(1), 6, b"sha256:x"));
        assert!(!b.is_verified(&id(1), 5, b"sha256:y"));
        assert!(!b.is_verified(&id(2), 5, b"sha256:x"));
        // Another domain's records are not this one's.
        let other = Trust::new(Arc::new(
            Store::open(t.path(), &DomainId::new("e")).unwrap(),
        ));
        assert!(!other.is_verified(&id(1), 5, b"sha256:x"));
        // The changed image's entries replace the old generation's at the next write.
        b.add_verified(&id(2), 5, b"sha256:x");
        b.flush();
        let c = Trust::new(s.clone());
        assert!(c.is_verified(&id(2), 5, b"sha256:x"));
        assert!(!c.is_verified(&id(1), 5, b"sha256:x"));
        // Nothing stored shows the fingerprint.
        for e in std::fs::read_dir(s.records_path()).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            assert!(!bytes.windows(8).any(|w| w == b"sha256:x"));
        }
    }

    #[test]
    fn a_miss_reads_what_another_process_wrote() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let a = Trust::new(s.clone());
        let b = Trust::new(s.clone());
        assert!(!a.is_verified(&id(1), 1, b"f"));
        b.add_verified(&id(1), 1, b"f");
        b.flush();
        // Looked for again once RECHECK has passed since the last look.
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert!(a.is_verified(&id(1), 1, b"f"));
    }

    #[test]
    fn seals_match_only_the_file_sealed() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let trust = Trust::new(s.clone());
        let p = t.path().join("obj");
        std::fs::write(&p, b"object").unwrap();
        let f = File::open(&p).unwrap();
        assert!(!trust.is_sealed(b"fp", &f));
        trust.seal(b"fp", &f).unwrap();
        assert!(trust.is_sealed(b"fp", &f));
        assert!(!trust.is_sealed(b"fq", &f));
        trust.flush();
        let again = Trust::new(s.clone());
        assert!(again.is_sealed(b"fp", &f));
        // A byte flipped, mtime restored: the seal no longer matches.
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&p, b"OBJECT").unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(!Trust::new(s.clone()).is_sealed(b"fp", &f));
        assert!(!again.is_sealed(b"fp", &f));
    }

    #[test]
    fn an_edited_record_is_ignored_with_a_warning_and_rewritten() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        let a = Trust::new(s.clone());
        a.add_verified(&id(1), 1, b"f");
        a.add_verified(&id(1), 2, b"f");
        a.flush();
        let p = s.records_path().join("image.test");
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let b = Trust::new(s.clone());
        let found = [1, 2].map(|nid| b.is_verified(&id(1), nid, b"f"));
        assert_eq!(found.iter().filter(|x| **x).count(), 1, "{found:?}");
        assert!(b.lock().warned.contains("image.test"));
    }
}
