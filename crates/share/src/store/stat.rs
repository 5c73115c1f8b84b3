//! `ishare store stat`: what the object store holds, by domain, and which of it live
//! mounts use (see [`super::scan`] for how "in use" is known).
//!
//! How many mounts use an object comes from `/proc/locks` (distinct processes holding
//! a shared `flock` on it). The kernel lists there only processes of the reader's pid
//! namespace, so mounts started in other containers are counted as in use but not
//! counted as sharers; "bytes saved" leaves them out rather than guess.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use super::scan::{Held, Kind, Scan, exclusive};
use crate::error::{Error, Result};

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
            Kind::Probe | Kind::Record => continue,
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
