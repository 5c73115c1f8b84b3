//! The snapshotter: containerd's snapshot calls on the metadata store, the snapshot
//! directories and the layers.
//!
//! Layout under the root (mode 0700):
//! * `metadata.redb`: the snapshots ([`crate::meta`]);
//! * `snapshots/ID/{fs,work}`: active snapshots and views (`fs` is the upper
//!   directory, or the whole tree of a snapshot without parent); an active one also
//!   holds `.erofslayer`, so containerd's EROFS differ (if configured for us) writes
//!   the layer as `snapshots/ID/layer.erofs`, which Commit then takes as it is;
//! * `layers/ID/layer.erofs`: committed layers' images;
//! * `l/ID`: their mounts (the node daemon's).
//!
//! Crash safety: a new snapshot's directories are created under its fresh id *before*
//! the transaction that records it, and removed *after* the one that forgets it; a
//! layer image is written to a temporary name, synced and renamed before its Commit
//! transaction. So after a crash every record's directories exist, and what no record
//! names is a leftover, which [`Snapshotter::cleanup`] (also run at start) removes.
//! Ids in use by a call in progress are never cleaned.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ishare_share::DomainId;

use crate::error::{Error, Result};
use crate::layer::{Layers, MountState, Usage, mount_state, remove_path};
use crate::meta::{Kind, Meta, Record};
use crate::mounts::{MountSpec, mounts};

/// The marker containerd's EROFS differ looks for (`internal/erofsutils`).
const EROFS_MARKER: &str = ".erofslayer";

/// How the snapshotter is set up.
#[derive(Debug)]
pub struct Config {
    /// Where its state lives.
    pub root: PathBuf,
    /// The node daemon's control socket.
    pub daemon_socket: PathBuf,
    /// The object store the node daemon shares layers' files through.
    pub store: PathBuf,
    /// The sharing domain of every layer mount.
    pub domain: DomainId,
    /// Starts a node daemon when none runs (`EXE daemon --launched`); `None`: one must run.
    pub daemon_exe: Option<PathBuf>,
}

/// A snapshot as Stat and List report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its key (or committed name).
    pub name: String,
    /// The record.
    pub record: Record,
}

/// The snapshotter.
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    meta: Meta,
    layers: Layers,
    /// Ids a call is working on: Cleanup leaves them, a second Commit or Remove of
    /// them waits its turn by failing.
    busy: Mutex<HashSet<u64>>,
}

/// Marks an id busy while alive.
struct Busy<'a>(&'a Snapshotter, u64);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_ids().remove(&self.1);
    }
}

impl Snapshotter {
    /// Opens the snapshotter at `cfg.root` (creating it), removes what a crash left
    /// and makes sure every committed layer is mounted (the node daemon may have
    /// restarted since).
    pub fn open(cfg: Config) -> Result<Snapshotter> {
        let root = cfg.root;
        for d in [
            root.clone(),
            root.join("snapshots"),
            root.join("layers"),
            root.join("l"),
        ] {
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&d)
                .map_err(|e| Error::io(&d, e))?;
        }
        let meta = Meta::open(&root.join("metadata.redb"))?;
        let layers = Layers {
            images: root.join("layers"),
            mounts: root.join("l"),
            socket: cfg.daemon_socket,
            options: format!(
                // allow_other: overlayfs and the container's processes reach the layer;
                // suid,dev: as containerd's own lower layers (allow_other alone would
                // imply nosuid,nodev). Only root can reach ROOT/l (mode 0700).
                "inode_share,allow_other,suid,dev,store={}",
                cfg.store.display()
            ),
            domain: cfg.domain,
            daemon_exe: cfg.daemon_exe,
            mounting: std::sync::Mutex::new(()),
        };
        if cfg.store.as_os_str().as_encoded_bytes().contains(&b',') {
            return Err(Error::Config(format!(
                "store {}: a comma in the path cannot go into mount options",
                cfg.store.display()
            )));
        }
        let s = Snapshotter {
            root,
            meta,
            layers,
            busy: Mutex::new(HashSet::new()),
        };
        s.cleanup()?;
        for (key, rec) in s.meta.all()? {
            if rec.kind == Kind::Committed
                && let Err(e) = s.layers.ensure_mounted(rec.id)
            {
                log::warn!("snapshot {key:?}: {e}");
            }
        }
        Ok(s)
    }

    fn busy_ids(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_busy(&self, key: &str, id: u64) -> Result<Busy<'_>> {
        if !self.busy_ids().insert(id) {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is busy (another call is working on it)"
            )));
        }
        Ok(Busy(self, id))
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// Prepare (`kind` Active) or View (`kind` View): a new snapshot `key` on `parent`.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        if self.meta.find(key)?.is_some() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let chain = match self.meta.chain(parent) {
            Err(Error::NotFound(_)) => {
                return Err(Error::ParentNotFound {
                    key: key.into(),
                    parent: parent.into(),
                });
            }
            other => other?,
        };
        let id = self.meta.next_id()?;
        let _busy = self.mark_busy(key, id)?;
        let dir = self.snapshot_dir(id);
        let made = (|| {
            for d in [dir.clone(), dir.join("fs"), dir.join("work")] {
                fs::DirBuilder::new()
                    .mode(if d == dir { 0o700 } else { 0o755 })
                    .create(&d)
                    .map_err(|e| Error::io(&d, e))?;
            }
            if kind == Kind::Active {
                // containerd's EROFS differ converts a layer tar straight to
                // `DIR/layer.erofs` when it finds this marker next to the mount's
                // source or upper directory; other differs ignore it.
                let marker = dir.join(EROFS_MARKER);
                fs::write(&marker, b"").map_err(|e| Error::io(&marker, e))?;
            }
            self.meta.create(key, parent, kind, id, labels)
        })();
        if let Err(e) = made {
            let _ = remove_path(&dir);
            return Err(e);
        }
        self.mounts_of(key, id, kind, &chain)
    }

    /// Mounts: how to use the active snapshot or view `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<MountSpec>> {
        let rec = self.meta.get(key)?;
        if rec.kind == Kind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is committed: only active snapshots and views have mounts"
            )));
        }
        let chain = self.meta.chain(&rec.parent)?;
        self.mounts_of(key, rec.id, rec.kind, &chain)
    }

    fn mounts_of(
        &self,
        key: &str,
        id: u64,
        kind: Kind,
        chain: &[Record],
    ) -> Result<Vec<MountSpec>> {
        for layer in chain {
            self.layers.ensure_mounted(layer.id)?;
        }
        let lowers: Vec<PathBuf> = chain.iter().map(|r| self.layers.mountpoint(r.id)).collect();
        let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        mounts(key, &self.snapshot_dir(id), kind == Kind::Active, &lowers)
    }

    /// Commit: the active snapshot `key` becomes the layer `name`: its tree is built
    /// into a fingerprinted EROFS image, mounted through the node daemon, recorded,
    /// and the applied directory removed.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let rec = self.meta.get(key)?;
        crate::meta::check_committable(key, &rec)?;
        if self.meta.find(name)?.is_some() {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let _busy = self.mark_busy(key, rec.id)?;
        let id = rec.id;
        let start = std::time::Instant::now();
        let done = (|| {
            let dir = self.snapshot_dir(id);
            let differ_made = dir.join("layer.erofs");
            let usage = if differ_made.exists() {
                log::debug!("snapshot {key:?}: layer image taken from containerd's EROFS differ");
                self.layers.adopt(key, id, &differ_made)?
            } else {
                log::debug!("snapshot {key:?}: building the layer image");
                self.layers.build(key, id, &dir.join("fs"))?
            };
            let built = start.elapsed();
            self.layers.ensure_mounted(id)?;
            let mounted = start.elapsed();
            let r = self.meta.commit(key, name, labels, usage);
            log::debug!(
                "snapshot {key:?}: layer {id} of {} bytes: image {:.3}s, mount {:.3}s, recorded {:.3}s",
                usage.0,
                built.as_secs_f64(),
                (mounted - built).as_secs_f64(),
                (start.elapsed() - mounted).as_secs_f64()
            );
            r
        })();
        if let Err(e) = done {
            // Nothing half-made stays: the layer goes, the active snapshot stays as it was.
            if let Err(e2) = self.layers.remove(id) {
                log::warn!("snapshot {key:?}: cleaning up the failed commit: {e2}");
            }
            return Err(e);
        }
        remove_path(&self.snapshot_dir(id))
    }

    /// Remove: forgets `key` (not while it has children) and deletes its directories,
    /// or its layer image after unmounting it.
    pub fn remove(&self, key: &str) -> Result<()> {
        let rec = self.meta.get(key)?;
        let _busy = self.mark_busy(key, rec.id)?;
        let rec = self.meta.remove(key)?;
        match rec.kind {
            Kind::Committed => self.layers.remove(rec.id),
            Kind::Active | Kind::View => remove_path(&self.snapshot_dir(rec.id)),
        }
    }

    /// Stat.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(Info {
            name: key.to_string(),
            record: self.meta.get(key)?,
        })
    }

    /// Update: `labels` replace the snapshot's labels (no `paths`, or `labels`), or set
    /// (or, when absent from `labels`, delete) the ones named `labels.KEY`.
    pub fn update(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Info> {
        for p in paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(Error::InvalidArgument(format!(
                    "cannot update field {p:?} of snapshot {key:?}: only labels can change"
                )));
            }
        }
        let record = self.meta.update_labels(key, |old| {
            if paths.is_empty() || paths.iter().any(|p| p == "labels") {
                *old = labels.clone();
                return;
            }
            for p in paths {
                let name = &p["labels.".len()..];
                match labels.get(name) {
                    Some(v) => old.insert(name.to_string(), v.clone()),
                    None => old.remove(name),
                };
            }
        })?;
        Ok(Info {
            name: key.to_string(),
            record,
        })
    }

    /// Usage: bytes on disk and inodes: a layer's image, or an active snapshot's tree.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.meta.get(key)?;
        match rec.usage {
            Some(u) if rec.kind == Kind::Committed => Ok(u),
            _ => du(&self.snapshot_dir(rec.id).join("fs")),
        }
    }

    /// List: every snapshot (filtering is the caller's).
    pub fn list(&self) -> Result<Vec<Info>> {
        Ok(self
            .meta
            .all()?
            .into_iter()
            .map(|(name, record)| Info { name, record })
            .collect())
    }

    /// Cleanup: removes every directory, image and mount no record names (leftovers
    /// of crashes and of interrupted calls), except those of calls in progress.
    pub fn cleanup(&self) -> Result<()> {
        let all = self.meta.all()?;
        let open: HashSet<u64> = all
            .iter()
            .filter(|(_, r)| r.kind != Kind::Committed)
            .map(|(_, r)| r.id)
            .collect();
        let layers: HashSet<u64> = all
            .iter()
            .filter(|(_, r)| r.kind == Kind::Committed)
            .map(|(_, r)| r.id)
            .collect();
        let busy = self.busy_ids().clone();
        let stale = |keep: &HashSet<u64>, name: &str| {
            name.parse::<u64>()
                .map_or(true, |id| !keep.contains(&id) && !busy.contains(&id))
        };
        for (dir, keep) in [
            (self.root.join("snapshots"), &open),
            (self.layers.images.clone(), &layers),
            (self.layers.mounts.clone(), &layers),
        ] {
            for e in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let e = e.map_err(|e| Error::io(&dir, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if stale(keep, &name) {
                    let p = e.path();
                    log::debug!("cleanup: removing {}", p.display());
                    if dir == self.layers.mounts && mount_state(&p) != MountState::None {
                        match name.parse::<u64>() {
                            Ok(id) => self.layers.remove(id)?,
                            Err(_) => crate::layer::detach(&p),
                        }
                    }
                    remove_path(&p)?;
                }
            }
        }
        Ok(())
    }
}

/// Bytes (allocated blocks) and inodes of the tree at `dir`, hard links counted once.
fn du(dir: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let (mut bytes, mut inodes) = (0u64, 0u64);
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).map_err(|e| Error::io(&d, e))?;
        if seen.insert((m.dev(), m.ino())) {
            bytes += m.blocks() * 512;
            inodes += 1;
        }
        if m.is_dir() {
            for e in fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
                stack.push(e.map_err(|e| Error::io(&d, e))?.path());
            }
        }
    }
    Ok((bytes, inodes))
}
