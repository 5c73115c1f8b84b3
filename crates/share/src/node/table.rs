//! The node daemon's mounts: each served by a session of its own (its own FUSE
//! connection and worker threads) in this one process, all sharing one store state
//! per (store, domain, verify).
//!
//! # Contract
//!
//! * A mount is in the table from the moment its FUSE connection is initialized until
//!   its session has ended (unmounted by anyone, `ishare umount`, umount(8), or the
//!   daemon stopping); [`Table::wait_gone`] waits for that.
//! * Sessions are contained: a panic while serving one mount ends only that mount's
//!   session (the kernel's pending requests then fail), logged with the image; the
//!   other mounts and the daemon go on.
//! * One [`Sharing`] per (store root, domain, verify), created at its first mount and
//!   dropped (after its objects are published) when its last mount ends.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use log::{error, info};
use sha2::{Digest, Sha256};

use super::protocol::MountInfo;
use crate::error::{Error, Result};
use crate::fs::Counters;
use crate::mount::{Mounted, ServeMode, Stopper, mount_with, new_sharing};
use crate::options::{DomainId, MountOptions};
use crate::sharing::Sharing;

/// (store root, SHA-256 of the domain id: the id itself is kept only by the store,
/// verify).
type PoolKey = (PathBuf, [u8; 32], bool);

/// One live mount.
#[derive(Debug)]
struct Entry {
    image: PathBuf,
    mountpoint: PathBuf,
    kind: ServeMode,
    detail: String,
    counters: Arc<Counters>,
    stopper: Stopper,
}

impl Entry {
    fn info(&self) -> MountInfo {
        MountInfo {
            image: self.image.clone(),
            mountpoint: self.mountpoint.clone(),
            mode: self.kind.as_str().to_string(),
            detail: self.detail.clone(),
            shared_files: self.counters.shared_files.load(Ordering::Relaxed),
            shared_bytes: self.counters.shared_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Every mount of the daemon.
#[derive(Debug, Default)]
pub(crate) struct Table {
    mounts: Mutex<HashMap<u64, Entry>>,
    /// Signalled whenever a mount leaves the table.
    gone: Condvar,
    pool: Mutex<HashMap<PoolKey, Arc<Sharing>>>,
    next: AtomicU64,
}

impl Table {
    /// The pooled sharing state of (root, domain, verify), made at first use.
    fn sharing(&self, root: &Path, domain: &DomainId, verify: bool) -> Result<Arc<Sharing>> {
        let key = (
            root.to_path_buf(),
            Sha256::digest(domain.expose()).into(),
            verify,
        );
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = pool.get(&key) {
            return Ok(s.clone());
        }
        let s = new_sharing(root, domain, verify)?;
        pool.insert(key, s.clone());
        Ok(s)
    }

    /// Mounts `image` on `mountpoint` and serves it on a thread of its own; returns
    /// once the mount is ready, with what `ishare mounts` shows of it.
    pub(crate) fn mount(
        self: &Arc<Self>,
        image: &Path,
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> Result<MountInfo> {
        let open =
            |root: &Path, domain: &DomainId, verify: bool| self.sharing(root, domain, verify);
        let mounted = mount_with(image, mountpoint, opts, &open, false);
        let mounted = match mounted {
            Ok(m) => m,
            Err(e) => {
                // A pool entry made for this mount alone goes again.
                self.release_unused();
                return Err(e);
            }
        };
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            image: mounted.image.clone(),
            mountpoint: mounted.mountpoint().to_path_buf(),
            kind: mounted.kind,
            detail: mounted.mode.clone(),
            counters: mounted.counters(),
            stopper: mounted.stopper(),
        };
        let info = entry.info();
        info!("{}", mounted.summary);
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, entry);
        let table = self.clone();
        let serve = move || table.serve(key, mounted);
        if let Err(e) = std::thread::Builder::new()
            .name(format!("mount-{key}"))
            .spawn(serve)
        {
            // The closure (and the mount in it) is gone: detach the mount.
            if let Some(entry) = self.remove(key) {
                entry.stopper.stop();
            }
            return Err(Error::Os(e));
        }
        Ok(info)
    }

    /// Runs one mount's session until it ends, containing a panic to it.
    fn serve(&self, key: u64, mounted: Mounted) {
        let shown = format!(
            "{} on {}",
            mounted.image.display(),
            mounted.mountpoint().display()
        );
        let sharing = mounted.sharing().cloned();
        match std::panic::catch_unwind(AssertUnwindSafe(|| mounted.run())) {
            Ok(Ok(())) => info!("{shown}: unmounted"),
            Ok(Err(e)) => error!("{shown}: session ended: {e}"),
            Err(_) => {
                error!("{shown}: the session panicked; this mount is gone, the others serve on")
            }
        }
        drop(sharing);
        self.remove(key);
        self.release_unused();
    }

    fn remove(&self, key: u64) -> Option<Entry> {
        let entry = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.gone.notify_all();
        entry
    }

    /// Drops pooled sharing states no mount uses any more, once their objects are
    /// published.
    fn release_unused(&self) {
        let unused: Vec<Arc<Sharing>> = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<PoolKey> = pool
                .iter()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| pool.remove(k)).collect()
        };
        for s in unused {
            s.wait_published();
        }
    }

    /// Waits for every pooled sharing state to publish what it has prepared (and to
    /// write its records), emptying the pool (the daemon is about to exit).
    pub(crate) fn finish(&self) {
        let all: Vec<Arc<Sharing>> = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in all {
            s.wait_published();
        }
    }

    /// What `ishare mounts` shows, by mount point.
    pub(crate) fn list(&self) -> Vec<MountInfo> {
        let mut out: Vec<MountInfo> = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Entry::info)
            .collect();
        out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        out
    }

    /// Unmounts the daemon's mount on `mountpoint` (detaching it if `lazy`) and,
    /// unless lazy, waits up to `wait` for its session to end.
    pub(crate) fn unmount(&self, mountpoint: &Path, lazy: bool, wait: Duration) -> Result<()> {
        let found = {
            let mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
            mounts
                .iter()
                .find(|(_, e)| e.mountpoint == mountpoint)
                .map(|(k, e)| (*k, e.stopper.clone()))
        };
        let Some((key, stopper)) = found else {
            // Mount points are kept canonical; the request may name a link to one.
            if let Ok(canonical) = mountpoint.canonicalize()
                && canonical != mountpoint
            {
                return self.unmount(&canonical, lazy, wait);
            }
            return Err(Error::NotMounted(mountpoint.to_path_buf()));
        };
        match stopper.unmount(lazy) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                return Err(Error::Busy(mountpoint.to_path_buf()));
            }
            Err(error) => {
                return Err(Error::Unmount {
                    path: mountpoint.to_path_buf(),
                    error,
                });
            }
        }
        if !lazy && !self.wait_gone(&[key], wait) {
            return Err(Error::DaemonLingers {
                path: mountpoint.to_path_buf(),
                pid: std::process::id(),
                waited: wait,
            });
        }
        Ok(())
    }

    /// Detaches every mount (the daemon is stopping) and waits up to `wait` for their
    /// sessions to end.
    pub(crate) fn stop_all(&self, wait: Duration) {
        let all: Vec<(u64, Stopper)> = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, e)| (*k, e.stopper.clone()))
            .collect();
        for (_, s) in &all {
            s.stop();
        }
        let keys: Vec<u64> = all.iter().map(|(k, _)| *k).collect();
        self.wait_gone(&keys, wait);
    }

    /// Waits until none of `keys` is in the table; false on timeout.
    fn wait_gone(&self, keys: &[u64], wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        while keys.iter().any(|k| mounts.contains_key(k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            mounts = self
                .gone
                .wait_timeout(mounts, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}
