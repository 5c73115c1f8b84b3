//! Authenticated record files: small maps (32-byte key → short value) in the domain's
//! `records` directory, shared by every process that mounts from the domain.
//!
//! ```text
//! STORE/v1/<domain tag>/records/lock              flock'ed by whoever rewrites a record
//! STORE/v1/<domain tag>/records/<name>            one record (see `crate::store::trust`)
//! STORE/v1/<domain tag>/records/.tmp.<name>.*     a record being rewritten
//! ```
//!
//! # Contract
//!
//! * Readers never lock: a record is only ever replaced whole, by `rename`, so a reader
//!   sees one complete version.
//! * Writers merge: under an exclusive `flock` on `records/lock`, a writer reads the
//!   current version, keeps what its `keep` says, adds its entries, writes a temporary
//!   file, syncs it and renames it over the record. Entries written by other processes
//!   in the meantime are therefore never lost (they are in the version read under the
//!   lock). Several records are rewritten under one lock with one `syncfs`.
//! * Every entry carries `HMAC-SHA256(mac key, "entry" ‖ record name ‖ key ‖ value)`;
//!   the MAC key derives from the domain id (see [`super::Store::keyed`]), which is never
//!   stored. An entry whose MAC fails, a bad header or a truncated tail is dropped and
//!   counted in [`Loaded::rejected`] (the caller warns); nothing in a record is trusted
//!   without its MAC, so a torn or edited file can only make us verify again.
//! * Everything is opened relative to the directory's fd, `O_NOFOLLOW`, regular files
//!   only, mode `0600` in a `0700` directory.
//!
//! Why a hand-written format and not a database crate: the records are written by many
//! processes at once (a daemon per `ishare mount -f`, the node daemon), and redb allows
//! one process per database; SQLite would bring a C library for a set of fixed-size
//! entries. The format is a 16-byte magic followed by `key[32] ‖ len u8 ‖ value[len] ‖
//! mac[32]` entries, which a bounded loop parses without any allocation it does not
//! check.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use rustix::fs::{FileType, FlockOperation, Mode, OFlags};
use sha2::Sha256;

use super::TMP_PREFIX;

/// First bytes of every record file (the version is in it).
const MAGIC: &[u8; 16] = b"ishare record 1\n";

/// Name of the writers' lock file.
pub(crate) const LOCK_NAME: &str = "lock";

/// Records larger than this are not read (rejected whole, then rewritten): a bound on
/// what a damaged or hostile file can make a mount allocate. About 800,000 entries.
const MAX_FILE: u64 = 64 << 20;

/// Length of a MAC.
const MAC_LEN: usize = 32;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A record's key.
pub(crate) type Key = [u8; 32];

/// A record as read.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The authenticated entries.
    pub entries: HashMap<Key, Vec<u8>>,
    /// Entries (or whole files) dropped because they failed authentication or parsing.
    pub rejected: usize,
}

/// The MAC of one entry of record `name`.
fn mac(mac_key: &[u8; 32], name: &str, key: &Key, value: &[u8]) -> [u8; MAC_LEN] {
    let mut m = Hmac::<Sha256>::new_from_slice(mac_key).expect("HMAC takes keys of any length");
    m.update(b"entry");
    m.update(&(name.len() as u32).to_le_bytes());
    m.update(name.as_bytes());
    m.update(key);
    m.update(&[value.len() as u8]);
    m.update(value);
    m.finalize().into_bytes().into()
}

/// Parses a record's bytes, keeping the entries whose MAC holds.
fn parse(bytes: &[u8], mac_key: &[u8; 32], name: &str) -> Loaded {
    let mut out = Loaded::default();
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        out.rejected = usize::from(!bytes.is_empty());
        return out;
    };
    while !rest.is_empty() {
        let Some((key, len, tail)) = rest
            .split_first_chunk::<32>()
            .and_then(|(k, t)| t.split_first().map(|(l, t)| (k, usize::from(*l), t)))
        else {
            out.rejected += 1;
            break;
        };
        if tail.len() < len + MAC_LEN {
            out.rejected += 1;
            break;
        }
        let (value, tail) = tail.split_at(len);
        let (tag, tail) = tail.split_at(MAC_LEN);
        rest = tail;
        let want = mac(mac_key, name, key, value);
        // Constant time is not needed here (nothing answers an attacker per guess), but
        // costs nothing.
        if want.iter().zip(tag).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0 {
            out.entries.insert(*key, value.to_vec());
        } else {
            out.rejected += 1;
        }
    }
    out
}

/// Serializes entries (values longer than 255 bytes are a bug of the caller: skipped).
fn serialize<'a>(
    entries: impl Iterator<Item = (&'a Key, &'a Vec<u8>)>,
    mac_key: &[u8; 32],
    name: &str,
) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (k, v) in entries {
        let Ok(len) = u8::try_from(v.len()) else {
            continue;
        };
        out.extend_from_slice(k);
        out.push(len);
        out.extend_from_slice(v);
        out.extend_from_slice(&mac(mac_key, name, k, v));
    }
    out
}

/// True for names a record may have (plain, no path, not ours for other uses).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != LOCK_NAME
        && !name.starts_with(TMP_PREFIX)
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Reads record `name` in `dir`: empty when it does not exist.
pub(crate) fn read(dir: impl AsFd, name: &str, mac_key: &[u8; 32]) -> io::Result<Loaded> {
    if !valid_name(name) {
        return Err(io::Error::other(format!("bad record name {name:?}")));
    }
    let fd = match rustix::fs::openat(
        dir,
        name,
        // O_NONBLOCK: a FIFO planted under the name must not block us.
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Loaded::default()),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size as u64 > MAX_FILE
    {
        return Ok(Loaded {
            rejected: 1,
            ..Loaded::default()
        });
    }
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    File::from(fd).take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Ok(Loaded {
            rejected: 1,
            ..Loaded::default()
        });
    }
    Ok(parse(&bytes, mac_key, name))
}

/// One record to rewrite: the entries to add (replacing those of the same key), and
/// which of the entries already there to keep.
pub(crate) struct Update<'a> {
    /// The record's name.
    pub name: String,
    /// Entries to add.
    pub put: Vec<(Key, Vec<u8>)>,
    /// Whether an existing entry stays.
    pub keep: &'a dyn Fn(&Key, &[u8]) -> bool,
}

/// What [`write`] found along the way.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Records that held rejected entries (the caller warns once per name).
    pub rejected: Vec<String>,
}

/// Merges `updates` into their records in `dir` (see the module documentation).
pub(crate) fn write(
    dir: &OwnedFd,
    updates: &[Update<'_>],
    mac_key: &[u8; 32],
) -> io::Result<Written> {
    let mut written = Written::default();
    if updates.is_empty() {
        return Ok(written);
    }
    let lock = rustix::fs::openat(
        dir,
        LOCK_NAME,
        OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::fs::flock(&lock, FlockOperation::LockExclusive)?;
    // Temporary files written so far, with their final names; removed unless renamed.
    let mut tmps = Tmps {
        dir,
        names: Vec::new(),
    };
    for u in updates {
        let cur = read(dir, &u.name, mac_key)?;
        if cur.rejected > 0 {
            written.rejected.push(u.name.clone());
        }
        let mut entries: HashMap<Key, Vec<u8>> = cur
            .entries
            .into_iter()
            .filter(|(k, v)| (u.keep)(k, v))
            .collect();
        for (k, v) in &u.put {
            entries.insert(*k, v.clone());
        }
        // Sorted: the same set gives the same file (and tests can compare bytes).
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_unstable_by_key(|(k, _)| **k);
        let bytes = serialize(sorted.into_iter(), mac_key, &u.name);
        let tmp = format!(
            "{TMP_PREFIX}{}.{}.{}",
            u.name,
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        tmps.names.push((tmp, u.name.clone()));
        let mut f = File::from(fd);
        f.write_all(&bytes)?;
        if updates.len() == 1 {
            rustix::fs::fdatasync(&f)?;
        }
    }
    // The data before the names, as for objects: one syncfs for several records. (A
    // torn record would only be rejected, never trusted; syncing avoids the warning.)
    if updates.len() > 1 {
        rustix::fs::syncfs(dir)?;
    }
    for (tmp, name) in std::mem::take(&mut tmps.names) {
        if let Err(e) = rustix::fs::renameat(dir, tmp.as_str(), dir, name.as_str()) {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), rustix::fs::AtFlags::empty());
            return Err(e.into());
        }
    }
    Ok(written)
}

/// Temporary files of one [`write`], removed if it fails half way.
struct Tmps<'a> {
    dir: &'a OwnedFd,
    names: Vec<(String, String)>,
}

impl Drop for Tmps<'_> {
    fn drop(&mut self) {
        for (tmp, _) in &self.names {
            let _ = rustix::fs::unlinkat(self.dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn dir() -> (tempfile::TempDir, OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        let fd =
            rustix::fs::open(t.path(), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        (t, fd)
    }

    fn put(dir: &OwnedFd, name: &str, entries: &[(u8, &[u8])]) {
        let keep = |_: &Key, _: &[u8]| true;
        let u = Update {
            name: name.into(),
            put: entries
                .iter()
                .map(|(k, v)| ([*k; 32], v.to_vec()))
                .collect(),
            keep: &keep,
        };
        write(dir, &[u], &KEY).unwrap();
    }

    #[test]
    fn round_trip_and_merge() {
        let (t, d) = dir();
        assert!(read(&d, "r", &KEY).unwrap().entries.is_empty());
        put(&d, "r", &[(1, b"one"), (2, b"")]);
        put(&d, "r", &[(3, b"three"), (1, b"uno")]);
        let l = read(&d, "r", &KEY).unwrap();
        assert_eq!(l.rejected, 0);
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.entries[&[1; 32]], b"uno");
        assert_eq!(l.entries[&[2; 32]], b"");
        // Another key reads nothing; another name (a record moved) neither.
        let other = read(&d, "r", &[8; 32]).unwrap();
        assert!(other.entries.is_empty() && other.rejected == 3);
        std::fs::rename(t.path().join("r"), t.path().join("s")).unwrap();
        assert_eq!(read(&d, "s", &KEY).unwrap().rejected, 3);
        // No temporary file is left; the files are private.
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(TMP_PREFIX)),
            "{names:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path().join("s"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_edited_entry_is_rejected_and_the_others_kept() {
        let (t, d) = dir();
        put(&d, "r", &[(1, b"one"), (2, b"two"), (3, b"three")]);
        let p = t.path().join("r");
        let mut bytes = std::fs::read(&p).unwrap();
        // Entries are sorted by key: the second one's value ("two") starts after the
        // magic, the first entry (32 + 1 + 3 + 32 bytes) and its own key and length.
        let at = MAGIC.len() + 68 + 33;
        assert_eq!(&bytes[at..at + 3], b"two");
        bytes[at] = b'T';
        std::fs::write(&p, &bytes).unwrap();
        let l = read(&d, "r", &KEY).unwrap();
        assert_eq!(l.rejected, 1);
        assert_eq!(l.entries.len(), 2);
        assert!(!l.entries.contains_key(&[2; 32]));
        // A truncated file keeps what is whole; garbage is rejected whole.
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let l = read(&d, "r", &KEY).unwrap();
        assert_eq!((l.entries.len(), l.rejected), (1, 2));
        std::fs::write(&p, b"garbage").unwrap();
        let l = read(&d, "r", &KEY).unwrap();
        assert_eq!((l.entries.len(), l.rejected), (0, 1));
        // The next write reports it and starts over with what it adds.
        let keep = |_: &Key, _: &[u8]| true;
        let u = Update {
            name: "r".into(),
            put: vec![([9; 32], b"nine".to_vec())],
            keep: &keep,
        };
        let w = write(&d, &[u], &KEY).unwrap();
        assert_eq!(w.rejected, vec!["r".to_string()]);
        assert_eq!(read(&d, "r", &KEY).unwrap().entries.len(), 1);
    }

    #[test]
    fn symlinks_and_odd_names_are_refused() {
        let (t, d) = dir();
        let target = t.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        std::os::unix::fs::symlink(&target, t.path().join("r")).unwrap();
        assert!(read(&d, "r", &KEY).is_err());
        for bad in ["", "../x", "a/b", LOCK_NAME, ".tmp.x"] {
            assert!(read(&d, bad, &KEY).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn concurrent_writers_keep_every_entry() {
        // Each thread opens the lock file itself, as separate processes do (flock locks
        // belong to open files, not to processes).
        let (_t, d) = dir();
        std::thread::scope(|s| {
            for w in 0..4u8 {
                let d = &d;
                s.spawn(move || {
                    for i in 0..25u8 {
                        put(d, "r", &[(w * 50 + i, &[w, i])]);
                        put(d, "q", &[(w * 50 + i, &[i])]);
                    }
                });
            }
        });
        for name in ["r", "q"] {
            let l = read(&d, name, &KEY).unwrap();
            assert_eq!((l.entries.len(), l.rejected), (100, 0), "{name}");
        }
    }
}
