//! `ishare store gc`: removing what no live mount uses.
//!
//! gc removes an object only while holding it exclusively (see [`super::scan`]); a
//! mount that opened the object meanwhile waits for the lock, notices the object is
//! gone and prepares a new one. Whatever gc removes, a process that has the file open
//! keeps reading the same bytes (an unlinked file lives on until closed).
//!
//! A domain's records (what it verified, its objects' seals) go with its last object:
//! they are worth nothing without objects (a new object is hashed when made). A mount
//! writing a record meanwhile makes gc keep the directory, or loses that record (its
//! files are verified again).
//!
//! One race is left open, harmlessly: a mount replacing an object it found damaged
//! (a rename over it) right between gc's check and its unlink makes gc remove the
//! replacement; that mount keeps reading it (it holds it open), and the next mount
//! prepares the object again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, CWD};
use rustix::io::Errno;

use super::scan::{Found, Held, Kind, Scan, exclusive};
use crate::error::Result;

/// Named temporary files younger than this are left alone by gc even when nobody holds
/// them: a mount locks its temporary file right after creating it, and this rules out
/// collecting it in between.
pub const TMP_MIN_AGE: Duration = Duration::from_secs(60);

/// What `ishare store gc` does.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Remove unused objects, least recently used first, only until the store's files
    /// take at most this many bytes on disk; `None`: remove every unused object.
    pub max_size: Option<u64>,
    /// Only tell what would be removed.
    pub dry_run: bool,
}

/// What `ishare store gc` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The store root.
    pub root: PathBuf,
    /// The root exists.
    pub exists: bool,
    /// Nothing was removed.
    pub dry_run: bool,
    /// The size asked for.
    pub max_size: Option<u64>,
    /// Allocated bytes of the store's files before.
    pub size_before: u64,
    /// Allocated bytes of the store's files after.
    pub size_after: u64,
    /// Objects removed.
    pub removed_objects: u64,
    /// Their allocated bytes.
    pub removed_bytes: u64,
    /// Objects kept because a live mount holds them.
    pub in_use_objects: u64,
    /// Their allocated bytes.
    pub in_use_bytes: u64,
    /// Unused objects kept because the store already fits `max_size`.
    pub kept_objects: u64,
    /// Their allocated bytes.
    pub kept_bytes: u64,
    /// Stray named temporary files removed.
    pub removed_tmp_files: u64,
    /// Their allocated bytes.
    pub removed_tmp_bytes: u64,
    /// Named temporary files kept (held by a mount writing them, or younger than
    /// [`TMP_MIN_AGE`]).
    pub kept_tmp_files: u64,
    /// Preparation lock files removed (nobody held them).
    pub removed_lock_files: u64,
    /// Passthrough probe files removed (no mount of their domain lives).
    pub removed_probe_files: u64,
    /// Empty directories removed.
    pub removed_dirs: u64,
    /// Files that are not the store's (never removed).
    pub other_files: u64,
    /// Files that could not be removed, with why.
    pub errors: Vec<String>,
}

/// Removes what no live mount uses from the store at `root` (see the module
/// documentation for how that is known safely).
pub fn gc(root: &Path, opts: &GcOptions) -> Result<GcReport> {
    let mut rep = GcReport {
        root: root.to_path_buf(),
        dry_run: opts.dry_run,
        max_size: opts.max_size,
        ..GcReport::default()
    };
    let Some(mut scan) = Scan::of(root)? else {
        return Ok(rep);
    };
    rep.exists = true;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    let counted = |k: Kind| matches!(k, Kind::Object { .. } | Kind::Tmp | Kind::Other);
    rep.size_before = scan
        .files
        .iter()
        .filter(|f| counted(f.kind))
        .map(|f| f.disk)
        .sum();
    let mut size = rep.size_before;
    let mut gone = vec![false; scan.files.len()];
    // Takes the file exclusively and, if `remove` (and not a dry run), unlinks it.
    let try_remove = |f: &Found, remove: bool, rep: &mut GcReport| -> Option<Held> {
        match exclusive(f, remove && !opts.dry_run) {
            Ok(h) => Some(h),
            Err(e) => {
                rep.errors.push(format!("{}: {e}", f.path.display()));
                None
            }
        }
    };

    // Leftovers first: temporary files of mounts that died, locks nobody holds.
    for (i, f) in scan.files.iter().enumerate() {
        match f.kind {
            Kind::Tmp => {
                if now - f.mtime < TMP_MIN_AGE.as_nanos() as i128 {
                    rep.kept_tmp_files += 1;
                    continue;
                }
                match try_remove(f, true, &mut rep) {
                    Some(Held::No) => {
                        rep.removed_tmp_files += 1;
                        rep.removed_tmp_bytes += f.disk;
                        size -= f.disk;
                        gone[i] = true;
                    }
                    Some(Held::Yes) => rep.kept_tmp_files += 1,
                    Some(Held::Gone) => {
                        size -= f.disk;
                        gone[i] = true;
                    }
                    None => {}
                }
            }
            Kind::Lock => match try_remove(f, true, &mut rep) {
                Some(Held::No) => {
                    rep.removed_lock_files += 1;
                    gone[i] = true;
                }
                Some(Held::Gone) => gone[i] = true,
                _ => {}
            },
            Kind::Other => rep.other_files += 1,
            _ => {}
        }
    }

    // Objects, least recently used first; once the store fits `max_size`, the rest are
    // only checked (to tell kept from in use).
    let mut order: Vec<usize> = (0..scan.files.len())
        .filter(|&i| matches!(scan.files[i].kind, Kind::Object { .. }))
        .collect();
    order.sort_by_key(|&i| (scan.files[i].last_use, scan.files[i].path.clone()));
    for i in order {
        let f = &scan.files[i];
        let fits = opts.max_size.is_some_and(|max| size <= max);
        match try_remove(f, !fits, &mut rep) {
            Some(Held::Yes) => {
                rep.in_use_objects += 1;
                rep.in_use_bytes += f.disk;
            }
            Some(Held::No) if fits => {
                rep.kept_objects += 1;
                rep.kept_bytes += f.disk;
            }
            Some(Held::No) => {
                rep.removed_objects += 1;
                rep.removed_bytes += f.disk;
                size -= f.disk;
                gone[i] = true;
            }
            Some(Held::Gone) => {
                size -= f.disk;
                gone[i] = true;
            }
            None => {}
        }
    }

    // Probe files last: a domain's probe goes once no mount of it lives.
    for (i, f) in scan.files.iter().enumerate() {
        if f.kind == Kind::Probe {
            match try_remove(f, true, &mut rep) {
                Some(Held::No) => {
                    rep.removed_probe_files += 1;
                    gone[i] = true;
                }
                Some(Held::Gone) => gone[i] = true,
                _ => {}
            }
        }
    }

    // Records last, in domains left without any other file.
    let mut left = vec![false; scan.domains.len()];
    for (i, f) in scan.files.iter().enumerate() {
        if f.kind != Kind::Record
            && !gone[i]
            && let Some(d) = f.domain
        {
            left[d] = true;
        }
    }
    for (i, f) in scan.files.iter().enumerate() {
        if f.kind == Kind::Record && f.domain.is_some_and(|d| !left[d]) {
            let removed = opts.dry_run
                || match std::fs::remove_file(&f.path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                    Err(e) => {
                        rep.errors.push(format!("{}: {e}", f.path.display()));
                        false
                    }
                };
            gone[i] = removed;
        }
    }

    for (i, f) in scan.files.iter().enumerate() {
        if gone[i]
            && let Some(d) = f.dir
        {
            scan.dirs[d].gone += 1;
        }
    }
    // Object directories come after their domain's: go backwards.
    for d in (0..scan.dirs.len()).rev() {
        if scan.dirs[d].gone < scan.dirs[d].entries {
            continue;
        }
        let removed = opts.dry_run
            || match rustix::fs::unlinkat(CWD, &scan.dirs[d].path, AtFlags::REMOVEDIR) {
                Ok(()) => true,
                // A mount created something in it meanwhile, or it went already.
                Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT) => false,
                Err(e) => {
                    rep.errors
                        .push(format!("{}: {e}", scan.dirs[d].path.display()));
                    false
                }
            };
        if removed {
            rep.removed_dirs += 1;
            if let Some(p) = scan.dirs[d].parent {
                scan.dirs[p].gone += 1;
            }
        }
    }
    rep.size_after = size;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rustix::fs::FlockOperation;

    use super::*;
    use crate::options::DomainId;
    use crate::store::stat::inventory;
    use crate::store::tests::publish;
    use crate::store::{Store, TMP_PREFIX, VERSION_DIR};

    #[test]
    fn gc_skips_held_objects_and_removes_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", &[1; 10000], true);
        publish(&s, b"b", &[2; 20000], true);
        publish(&s, b"c", &[3; 30000], false);
        // A lock file of an earlier version, a held preparation lock.
        let stale = s.object_name(b"stale");
        let odir = s.dir().join(&stale[..2]);
        std::fs::create_dir_all(&odir).unwrap();
        std::fs::write(
            odir.join(format!("{stale}{}", crate::store::LOCK_SUFFIX)),
            b"",
        )
        .unwrap();
        let held_lock = s.lock(b"busy").unwrap();
        // "a" is used by a mount (this process): held by the lookup.
        let used = s.lookup(b"a", true).unwrap().unwrap();

        let inv = inventory(t.path()).unwrap();
        assert_eq!(inv.total.objects, 3);
        assert_eq!((inv.total.verified, inv.total.unverified), (2, 1));
        assert_eq!(inv.total.bytes, 60000);
        assert_eq!((inv.total.in_use, inv.total.in_use_bytes), (1, 10000));
        assert_eq!(inv.domains.len(), 1);
        assert_eq!(
            inv.domains[0].tag,
            s.dir().file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(inv.lock_files, 2);
        // One process holds "a": nothing saved.
        assert_eq!(inv.total.bytes_saved, 0);

        let dry = gc(
            t.path(),
            &GcOptions {
                max_size: None,
                dry_run: true,
            },
        )
        .unwrap();
        assert_eq!((dry.removed_objects, dry.in_use_objects), (2, 1));
        assert_eq!(
            inventory(t.path()).unwrap().total.objects,
            3,
            "dry run removed"
        );

        let rep = gc(t.path(), &GcOptions::default()).unwrap();
        assert_eq!((rep.removed_objects, rep.in_use_objects), (2, 1), "{rep:?}");
        assert_eq!(rep.removed_lock_files, 1, "{rep:?}");
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert!(s.lookup(b"b", false).unwrap().is_none());
        assert!(s.lookup(b"c", false).unwrap().is_none());
        assert!(s.lookup(b"a", true).unwrap().is_some());
        drop(held_lock);
        drop(used);
        // Now nothing is held: everything goes, with the directories.
        let rep = gc(t.path(), &GcOptions::default()).unwrap();
        assert_eq!(rep.removed_objects, 1, "{rep:?}");
        assert_eq!(rep.size_after, 0);
        let left: Vec<_> = fs::read_dir(t.path().join(VERSION_DIR)).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // And the store keeps working after its directories went.
        publish(&s, b"a", &[1; 10000], true);
        assert!(s.lookup(b"a", true).unwrap().is_some());
        s.lock(b"x").unwrap();
    }

    #[test]
    fn stray_temporaries_go_once_old_and_unheld() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", b"x", true);
        let odir = s.object_path(b"a", true).parent().unwrap().to_path_buf();
        let old = odir.join(format!("{TMP_PREFIX}stray.1.0"));
        let young = odir.join(format!("{TMP_PREFIX}stray.1.1"));
        let held = odir.join(format!("{TMP_PREFIX}stray.1.2"));
        for p in [&old, &young, &held] {
            fs::write(p, b"partial").unwrap();
        }
        let past = SystemTime::now() - 2 * TMP_MIN_AGE;
        for p in [&old, &held] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        let h = fs::File::open(&held).unwrap();
        rustix::fs::flock(&h, FlockOperation::LockShared).unwrap();
        let other = odir.join("not-ours");
        fs::write(&other, b"?").unwrap();
        let inv = inventory(t.path()).unwrap();
        assert_eq!((inv.tmp_files, inv.other_files), (3, 1));
        let rep = gc(t.path(), &GcOptions::default()).unwrap();
        assert_eq!(
            (rep.removed_tmp_files, rep.kept_tmp_files),
            (1, 2),
            "{rep:?}"
        );
        assert!(!old.exists() && young.exists() && held.exists() && other.exists());
        // The directory still holds files: kept.
        assert!(odir.exists());
    }
}
