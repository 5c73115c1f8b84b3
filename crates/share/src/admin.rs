//! `ishare store stat` and `ishare store gc`: what the object store holds, which of it
//! live mounts use, and removing what none uses.
//!
//! "In use" is what the kernel says: every mount process holds a shared `flock` on each
//! object it serves from (see [`crate::store`]), so an object is in use exactly when
//! `LOCK_EX | LOCK_NB` on it fails. gc removes an object only while holding that
//! exclusive lock, after checking that the path still names the file it locked; a mount
//! that opened the object meanwhile waits for the lock, notices the object is gone and
//! prepares a new one. Whatever gc removes, a process that has the file open keeps
//! reading the same bytes (an unlinked file lives on until closed).
//!
//! How many mounts use an object comes from `/proc/locks` (distinct processes holding
//! a shared `flock` on it). The kernel lists there only processes of the reader's pid
//! namespace, so mounts started in other containers are counted as in use but not
//! counted as sharers; "bytes saved" leaves them out rather than guess.
//!
//! One race is left open, harmlessly: a mount replacing an object it found damaged
//! (a rename over it) right between gc's check and its unlink makes gc remove the
//! replacement; that mount keeps reading it (it holds it open), and the next mount
//! prepares the object again.
//!
//! Everything here recognizes the store's own names only (domain tags, object names,
//! lock and temporary files); other files are counted and never removed.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, CWD, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::store::{LOCK_SUFFIX, PROBE_NAME, TMP_PREFIX, UNVERIFIED_SUFFIX, VERSION_DIR};

/// Named temporary files younger than this are left alone by gc even when nobody holds
/// them: a mount locks its temporary file right after creating it, and this rules out
/// collecting it in between.
pub const TMP_MIN_AGE: Duration = Duration::from_secs(60);

/// What a file in the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A published object.
    Object { verified: bool },
    /// A preparation lock (`<name>.lock`).
    Lock,
    /// A named temporary object (`.tmp.*`; only where `O_TMPFILE` is missing).
    Tmp,
    /// The passthrough probe file of a domain.
    Probe,
    /// Not one of ours.
    Other,
}

/// A file found in the store.
#[derive(Debug)]
struct Found {
    kind: Kind,
    path: PathBuf,
    /// Index into [`Scan::domains`].
    domain: Option<usize>,
    /// Index into [`Scan::dirs`] of the directory holding it.
    dir: Option<usize>,
    size: u64,
    /// Allocated bytes (what `du` counts).
    disk: u64,
    /// max(atime, mtime) in nanoseconds since the epoch: when a mount last read it, as
    /// far as the filesystem's atime policy tells (relatime: at least daily).
    last_use: i128,
    mtime: i128,
    dev: u64,
    ino: u64,
}

/// A directory gc may remove once empty (domain and object directories).
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    parent: Option<usize>,
    /// Entries when scanned.
    entries: usize,
    /// Entries removed since.
    gone: usize,
}

#[derive(Debug, Default)]
struct Scan {
    /// Domain tags (directory names).
    domains: Vec<String>,
    files: Vec<Found>,
    /// Each domain directory before its object directories.
    dirs: Vec<Dir>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn classify(name: &str, dir_name: &str) -> Kind {
    if is_hex(name, 64) && name.starts_with(dir_name) {
        return Kind::Object { verified: true };
    }
    let under = |suffix: &str| {
        name.strip_suffix(suffix)
            .is_some_and(|n| is_hex(n, 64) && n.starts_with(dir_name))
    };
    if under(UNVERIFIED_SUFFIX) {
        Kind::Object { verified: false }
    } else if under(LOCK_SUFFIX) {
        Kind::Lock
    } else if name.starts_with(TMP_PREFIX) {
        Kind::Tmp
    } else {
        Kind::Other
    }
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Directory entries sorted by name; `None` when the directory is gone.
fn entries(dir: &Path) -> Result<Option<Vec<fs::DirEntry>>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut v = rd
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    v.sort_by_key(|e| e.file_name());
    Ok(Some(v))
}

impl Scan {
    /// Records a file (nothing when it vanished meanwhile: a mount or gc removed it).
    fn file(
        &mut self,
        path: PathBuf,
        kind: Kind,
        domain: Option<usize>,
        dir: Option<usize>,
    ) -> Result<()> {
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        };
        // Only regular files are ours, whatever their name.
        let kind = if md.is_file() { kind } else { Kind::Other };
        let mtime = nanos(md.mtime(), md.mtime_nsec());
        self.files.push(Found {
            kind,
            path,
            domain,
            dir,
            size: md.len(),
            disk: md.blocks() * 512,
            last_use: mtime.max(nanos(md.atime(), md.atime_nsec())),
            mtime,
            dev: md.dev(),
            ino: md.ino(),
        });
        Ok(())
    }

    /// Everything under `root/v1`; `None` when `root` does not exist.
    fn of(root: &Path) -> Result<Option<Scan>> {
        match fs::metadata(root) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(root, e)),
        }
        let mut scan = Scan::default();
        let v1 = root.join(VERSION_DIR);
        for e in entries(&v1)?.unwrap_or_default() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && is_hex(&name, 32) {
                scan.domain(e.path(), name)?;
            } else if !is_dir {
                scan.file(e.path(), Kind::Other, None, None)?;
            }
        }
        Ok(Some(scan))
    }

    fn domain(&mut self, path: PathBuf, tag: String) -> Result<()> {
        let Some(list) = entries(&path)? else {
            return Ok(());
        };
        let d = self.domains.len();
        self.domains.push(tag);
        let ddir = self.dirs.len();
        self.dirs.push(Dir {
            path,
            parent: None,
            entries: list.len(),
            gone: 0,
        });
        for e in list {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && is_hex(&name, 2) {
                let Some(objs) = entries(&e.path())? else {
                    // Removed meanwhile.
                    self.dirs[ddir].gone += 1;
                    continue;
                };
                let odir = self.dirs.len();
                self.dirs.push(Dir {
                    path: e.path(),
                    parent: Some(ddir),
                    entries: objs.len(),
                    gone: 0,
                });
                for o in objs {
                    let oname = o.file_name().to_string_lossy().into_owned();
                    let kind = classify(&oname, &name);
                    self.file(o.path(), kind, Some(d), Some(odir))?;
                }
            } else if !is_dir {
                let kind = if name == PROBE_NAME {
                    Kind::Probe
                } else {
                    Kind::Other
                };
                self.file(e.path(), kind, Some(d), Some(ddir))?;
            }
        }
        Ok(())
    }
}

/// Whether a file is held by some process.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    Yes,
    No,
    /// Removed or replaced since it was scanned.
    Gone,
}

/// Takes `LOCK_EX | LOCK_NB` on `path` (the file `f` was scanned as); without `unlink`
/// only tells whether that succeeded, with it removes the file while holding the lock.
fn exclusive(f: &Found, unlink: bool) -> io::Result<Held> {
    // O_NONBLOCK: something that is not a regular file any more must not block us.
    let fd = match rustix::fs::open(
        &f.path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Held::Gone),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_dev != f.dev || st.st_ino != f.ino {
        return Ok(Held::Gone);
    }
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(Held::Yes),
        Err(e) => return Err(e.into()),
    }
    // The path must still name what we locked: unlinking a file that replaced it
    // would remove an object we never checked.
    match fs::symlink_metadata(&f.path) {
        Ok(md) if md.dev() == f.dev && md.ino() == f.ino => {}
        Ok(_) => return Ok(Held::Gone),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Held::Gone),
        Err(e) => return Err(e),
    }
    if unlink {
        match fs::remove_file(&f.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Held::Gone),
            Err(e) => return Err(e),
        }
    }
    // Closing `fd` releases the lock; a mount waiting for it finds the path gone.
    Ok(Held::No)
}

/// Processes holding shared `flock`s, per file: (major, minor, inode) to pids, from
/// `/proc/locks`. `None` when it cannot be read.
fn flock_holders() -> Option<HashMap<(u32, u32, u64), BTreeSet<u32>>> {
    let text = fs::read_to_string("/proc/locks").ok()?;
    let mut out: HashMap<_, BTreeSet<u32>> = HashMap::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  READ  1234 fe:01:5678 0 EOF"; waiters show "->" after the
        // number and hold nothing yet.
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" || f[3] != "READ" {
            continue;
        }
        let Ok(pid) = f[4].parse::<u32>() else {
            continue;
        };
        let mut id = f[5].split(':');
        let (Some(maj), Some(min), Some(ino)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        if let (Ok(maj), Ok(min), Ok(ino)) = (
            u32::from_str_radix(maj, 16),
            u32::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) {
            out.entry((maj, min, ino)).or_default().insert(pid);
        }
    }
    Some(out)
}

/// Object counts of a domain or of the whole store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Objects.
    pub objects: u64,
    /// Objects checked against a `sha256:` fingerprint when published.
    pub verified: u64,
    /// Objects published without that check (`verify=off`).
    pub unverified: u64,
    /// Their sizes.
    pub bytes: u64,
    /// Their allocated bytes (as `du` counts; less than `bytes` for sparse files).
    pub disk_bytes: u64,
    /// Objects some live mount holds.
    pub in_use: u64,
    /// Their sizes.
    pub in_use_bytes: u64,
    /// Mount processes holding objects (seen in `/proc/locks`).
    pub mounts: usize,
    /// Page cache that sharing saves once every mount holding an object has read it
    /// whole: for each object, its size times (mounts holding it - 1).
    pub bytes_saved: u64,
}

/// One domain's objects, named by its tag (a keyed hash, never the domain id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStats {
    /// The domain's directory name.
    pub tag: String,
    /// Its objects.
    pub counts: Counts,
}

/// What `ishare store stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The store root.
    pub root: PathBuf,
    /// The root exists (a store nobody used yet has no directory).
    pub exists: bool,
    /// All domains together.
    pub total: Counts,
    /// Per domain, by tag.
    pub domains: Vec<DomainStats>,
    /// Named temporary files (from mounts preparing objects now, or killed meanwhile).
    pub tmp_files: u64,
    /// Their allocated bytes.
    pub tmp_bytes: u64,
    /// Preparation lock files (held while a mount prepares an object; empty).
    pub lock_files: u64,
    /// Files that are not the store's.
    pub other_files: u64,
    /// Their allocated bytes.
    pub other_bytes: u64,
    /// `/proc/locks` could be read (mount counts and bytes saved are known).
    pub holders_known: bool,
}

/// Counts the store at `root`.
pub fn inventory(root: &Path) -> Result<Inventory> {
    let Some(scan) = Scan::of(root)? else {
        return Ok(Inventory {
            root: root.to_path_buf(),
            exists: false,
            total: Counts::default(),
            domains: Vec::new(),
            tmp_files: 0,
            tmp_bytes: 0,
            lock_files: 0,
            other_files: 0,
            other_bytes: 0,
            holders_known: false,
        });
    };
    let holders = flock_holders();
    let mut inv = Inventory {
        root: root.to_path_buf(),
        exists: true,
        total: Counts::default(),
        domains: scan
            .domains
            .iter()
            .map(|t| DomainStats {
                tag: t.clone(),
                counts: Counts::default(),
            })
            .collect(),
        tmp_files: 0,
        tmp_bytes: 0,
        lock_files: 0,
        other_files: 0,
        other_bytes: 0,
        holders_known: holders.is_some(),
    };
    let mut pids_all = BTreeSet::new();
    let mut pids_domain = vec![BTreeSet::new(); scan.domains.len()];
    for f in &scan.files {
        let verified = match f.kind {
            Kind::Object { verified } => verified,
            Kind::Tmp => {
                inv.tmp_files += 1;
                inv.tmp_bytes += f.disk;
                continue;
            }
            Kind::Lock => {
                inv.lock_files += 1;
                continue;
            }
            Kind::Probe => continue,
            Kind::Other => {
                inv.other_files += 1;
                inv.other_bytes += f.disk;
                continue;
            }
        };
        let held = exclusive(f, false).map_err(|e| Error::io(&f.path, e))?;
        if held == Held::Gone {
            continue;
        }
        let pids = holders
            .as_ref()
            .and_then(|h| h.get(&(rustix::fs::major(f.dev), rustix::fs::minor(f.dev), f.ino)))
            .filter(|_| held == Held::Yes);
        let d = f.domain.expect("objects live in domain directories");
        for c in [&mut inv.total, &mut inv.domains[d].counts] {
            c.objects += 1;
            c.verified += u64::from(verified);
            c.unverified += u64::from(!verified);
            c.bytes += f.size;
            c.disk_bytes += f.disk;
            if held == Held::Yes {
                c.in_use += 1;
                c.in_use_bytes += f.size;
            }
            if let Some(p) = pids {
                c.bytes_saved += f.size * (p.len() as u64).saturating_sub(1);
            }
        }
        if let Some(p) = pids {
            pids_all.extend(p.iter().copied());
            pids_domain[d].extend(p.iter().copied());
        }
    }
    inv.total.mounts = pids_all.len();
    for (d, p) in inv.domains.iter_mut().zip(pids_domain) {
        d.counts.mounts = p.len();
    }
    Ok(inv)
}

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

/// A byte count for people: "512 B", "1.5 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a size as `du` and `truncate` write them: bytes, or a number followed by K,
/// M, G, T, P or E (powers of 1024; also written KiB, MiB, ...) or by KB, MB, ...
/// (powers of 1000).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::BadSize(s.to_string());
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let suffix = &t[digits..];
    if suffix.is_empty() {
        return Ok(n);
    }
    let mut chars = suffix.chars();
    let letter = chars.next().expect("not empty").to_ascii_uppercase();
    let power = "KMGTPE".find(letter).ok_or_else(bad)? as u32 + 1;
    let base: u64 = match chars.as_str() {
        "" | "iB" => 1024,
        "B" => 1000,
        _ => return Err(bad()),
    };
    n.checked_mul(base.checked_pow(power).ok_or_else(bad)?)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::options::DomainId;
    use crate::store::{Published, Store};

    #[test]
    fn sizes_parse_as_du_writes_them() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("3M").unwrap(), 3 << 20);
        assert_eq!(parse_size("3MiB").unwrap(), 3 << 20);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1E").unwrap(), 1 << 60);
        for bad in [
            "",
            "K",
            "1.5G",
            "1X",
            "1Mb",
            "-1",
            "16E",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn publish(s: &Store, fp: &[u8], data: &[u8], verified: bool) {
        let mut t = s.create_tmp(fp).unwrap();
        t.file.write_all(data).unwrap();
        let Published::Ours(_) = s.publish(t, verified, false, false).unwrap() else {
            panic!("not published")
        };
    }

    #[test]
    fn gc_skips_held_objects_and_removes_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", &[1; 10000], true);
        publish(&s, b"b", &[2; 20000], true);
        publish(&s, b"c", &[3; 30000], false);
        // A lock file left by a killed mount, a held preparation lock.
        drop(s.lock(b"stale").unwrap());
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
    fn a_collected_object_stays_readable_where_it_is_open() {
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", b"content", true);
        let obj = s.lookup(b"a", true).unwrap().unwrap();
        // Removed behind the holder's back (rm -rf of the store).
        fs::remove_dir_all(t.path().join(VERSION_DIR)).unwrap();
        let mut buf = [0u8; 7];
        obj.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"content");
        assert!(s.lookup(b"a", true).unwrap().is_none());
    }

    #[test]
    fn lookup_racing_gc_gets_the_object_or_none() {
        // gc holds the object exclusively; a lookup waits, then finds it gone.
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), &DomainId::new("d")).unwrap();
        publish(&s, b"a", b"content", true);
        let path = s.object_path(b"a", true);
        let f = fs::File::open(&path).unwrap();
        rustix::fs::flock(&f, FlockOperation::LockExclusive).unwrap();
        std::thread::scope(|sc| {
            let h = sc.spawn(|| s.lookup(b"a", true).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            assert!(!h.is_finished(), "lookup did not wait for gc's lock");
            fs::remove_file(&path).unwrap();
            drop(f);
            assert!(
                h.join().unwrap().is_none(),
                "lookup returned a removed object"
            );
        });
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
