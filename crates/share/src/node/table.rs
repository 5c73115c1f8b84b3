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
//! * Kernel mode mounts (see [`crate::kernel`]) have no session: they are in the table
//!   from their mount until they are found unmounted (by `ishare umount`, `umount(8)`:
//!   checked against `/proc/self/mountinfo` whenever the table is listed or asked to
//!   unmount), and they stay mounted when the daemon stops (a daemon started again on
//!   the same socket takes them back into its table).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use sha2::{Digest, Sha256};

use super::protocol::MountInfo;
use crate::error::{Error, Result};
use crate::fs::{BackingLog, Counters};
use crate::fusemount::{self, MountId};
use crate::holder::{HeldMount, HolderClient};
use crate::kernel::{self, KernelMount};
use crate::mount::{Mounted, Resume, ServeMode, Stopper, mount_with, new_sharing};
use crate::options::{DomainId, MountOptions};
use crate::sharing::Sharing;

/// (store root, SHA-256 of the domain id: the id itself is kept only by the store,
/// verify).
type PoolKey = (PathBuf, [u8; 32], bool);

/// What unmounts a mount.
#[derive(Debug)]
enum Handle {
    /// A FUSE session of this process.
    Fuse(Stopper),
    /// A mount of the kernel's own EROFS.
    Kernel(KernelMount),
}

/// One live mount.
#[derive(Debug)]
struct Entry {
    image: PathBuf,
    mountpoint: PathBuf,
    kind: ServeMode,
    detail: String,
    counters: Arc<Counters>,
    handle: Handle,
    /// The fd holder keeps the connection (the mount survives the daemon).
    held: bool,
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
            prepare: crate::fs::ahead::state_name(self.counters.prepare.load(Ordering::Relaxed))
                .to_string(),
            prepared_files: self.counters.prepared_files.load(Ordering::Relaxed),
        }
    }
}

/// Every mount of the daemon.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Marks this daemon's kernel mounts (see [`kernel::adopt`]).
    tag: Vec<u8>,
    mounts: Mutex<HashMap<u64, Entry>>,
    /// Signalled whenever a mount leaves the table.
    gone: Condvar,
    pool: Mutex<HashMap<PoolKey, Arc<Sharing>>>,
    next: AtomicU64,
    /// The kernel's lack of `inode_share` was logged (once per daemon: it does not
    /// change).
    told_no_kernel: AtomicBool,
    /// Keeps the FUSE connections across restarts (`None`: mounts end with the daemon).
    holder: Option<Arc<HolderClient>>,
}

impl Table {
    /// An empty table whose kernel mounts are marked with `tag`, with the kernel mounts
    /// of an earlier daemon of the same tag that are still mounted.
    pub(crate) fn new(tag: Vec<u8>, holder: Option<Arc<HolderClient>>) -> Table {
        let t = Table {
            tag,
            holder,
            ..Table::default()
        };
        for km in kernel::adopt(&t.tag) {
            info!(
                "{} on {}: kernel mode mount of an earlier daemon, taken back",
                km.image.display(),
                km.mountpoint.display()
            );
            t.insert_kernel(km);
        }
        t
    }

    fn insert_kernel(&self, km: KernelMount) -> MountInfo {
        let counters = Arc::new(Counters::default());
        counters.shared_files.store(km.files, Ordering::Relaxed);
        counters.shared_bytes.store(km.bytes, Ordering::Relaxed);
        let entry = Entry {
            image: km.image.clone(),
            mountpoint: km.mountpoint.clone(),
            kind: ServeMode::Kernel,
            detail: km.detail.clone(),
            counters,
            handle: Handle::Kernel(km),
            held: false,
        };
        let info = entry.info();
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, entry);
        info
    }

    /// Mounts with the kernel when `opts` ask for it (or allow it) and the kernel
    /// takes the image (see [`kernel::try_mount`]); `None`: FUSE serves it.
    fn try_kernel(
        &self,
        image: &Path,
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> Result<Option<MountInfo>> {
        let km = kernel::try_mount(image, mountpoint, opts, &self.tag, &self.told_no_kernel)?;
        Ok(km.map(|km| self.insert_kernel(km)))
    }

    /// Drops the kernel mounts that are no longer mounted (unmounted by `umount(8)`).
    fn prune_kernel(&self) {
        let Ok(now) = crate::mountinfo::mounts() else {
            return;
        };
        let mut mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<u64> = mounts
            .iter()
            .filter(|(_, e)| matches!(&e.handle, Handle::Kernel(k) if !k.present(&now)))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(e) = mounts.remove(&key) {
                info!(
                    "{} on {}: unmounted (kernel mode)",
                    e.image.display(),
                    e.mountpoint.display()
                );
            }
        }
        drop(mounts);
        self.gone.notify_all();
    }

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
    /// once the mount is ready, with what `ishare mounts` shows of it. `options` and
    /// `domain` are the request's (what the fd holder keeps to serve it again).
    pub(crate) fn mount(
        self: &Arc<Self>,
        image: &Path,
        mountpoint: &Path,
        opts: &MountOptions,
        options: &[String],
        domain: Option<&str>,
    ) -> Result<MountInfo> {
        self.prune_kernel();
        if let Some(info) = self.try_kernel(image, mountpoint, opts)? {
            return Ok(info);
        }
        let open =
            |root: &Path, domain: &DomainId, verify: bool| self.sharing(root, domain, verify);
        // The mount id is known once mounted, before any file can be opened.
        let mount_id = Arc::new(OnceLock::new());
        let log = self.backing_log(mount_id.clone());
        let mounted = mount_with(image, mountpoint, opts, &open, false, None, log);
        let mounted = match mounted {
            Ok(m) => m,
            Err(e) => {
                // A pool entry made for this mount alone goes again.
                self.release_unused();
                return Err(e);
            }
        };
        let _ = mount_id.set(mounted.held().0.mount_id);
        let held = self.hold(&mounted, options, domain);
        self.serve_on(mounted, held)
    }

    /// What tells the fd holder of the backing file registrations of the mount whose
    /// id `mount_id` will hold.
    fn backing_log(&self, mount_id: Arc<OnceLock<u64>>) -> Option<BackingLog> {
        let holder = self.holder.clone()?;
        Some(Arc::new(move |nid, id| {
            if let Some(m) = mount_id.get() {
                holder.note_backing(*m, nid, id);
            }
        }))
    }

    /// Hands the mount's connection and record to the fd holder; false (logged) when
    /// there is none or it fails: the mount then ends with the daemon.
    fn hold(&self, mounted: &Mounted, options: &[String], domain: Option<&str>) -> bool {
        let Some(holder) = &self.holder else {
            return false;
        };
        let (id, conn, init, passthrough, generation) = mounted.held();
        let Some(init) = init else {
            return false;
        };
        let record = HeldMount {
            image: mounted.image.clone(),
            mountpoint: mounted.mountpoint().to_path_buf(),
            options: options.to_vec(),
            domain: domain.map(str::to_string),
            dev: id.dev,
            mount_id: id.mount_id,
            abi: (init.abi.0, init.abi.1),
            capabilities: init.capabilities.bits(),
            max_readahead: init.max_readahead,
            passthrough,
            generation,
        };
        match holder.put(&record, conn.as_fd()) {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    "{} on {}: the fd holder does not keep this mount ({e}); it ends with \
                     the daemon",
                    mounted.image.display(),
                    mounted.mountpoint().display()
                );
                false
            }
        }
    }

    /// Puts `mounted` in the table and serves it on a thread of its own.
    fn serve_on(self: &Arc<Self>, mounted: Mounted, held: bool) -> Result<MountInfo> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            image: mounted.image.clone(),
            mountpoint: mounted.mountpoint().to_path_buf(),
            kind: mounted.kind,
            detail: mounted.mode.clone(),
            counters: mounted.counters(),
            handle: Handle::Fuse(mounted.stopper()),
            held,
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
            if let Some(Entry {
                handle: Handle::Fuse(stopper),
                ..
            }) = self.remove(key)
            {
                stopper.stop();
            }
            return Err(Error::Os(e));
        }
        Ok(info)
    }

    /// Serves again every mount the fd holder keeps (an earlier daemon's: this one
    /// starts after a restart or a crash), then has the kernel send again the requests
    /// the earlier daemon read and did not answer. A mount that cannot be served again
    /// is detached (its readers get ENOTCONN rather than waiting forever).
    pub(crate) fn resume_held(self: &Arc<Self>) {
        let Some(holder) = &self.holder else {
            return;
        };
        let held = match holder.take() {
            Ok(h) => h,
            Err(e) => {
                warn!("the fd holder did not give its mounts: {e}");
                return;
            }
        };
        for (record, conn, backing) in held {
            let shown = format!(
                "{} on {}",
                record.image.display(),
                record.mountpoint.display()
            );
            if !fusemount::connected(conn.as_fd()) {
                let _ = holder.forget(record.mount_id);
                continue;
            }
            match self.resume_one(&record, conn, backing) {
                Ok(()) => info!("{shown}: served again (kept by the fd holder)"),
                Err((e, conn)) => {
                    error!("{shown}: cannot serve it again: {e}; unmounting it");
                    let id = MountId {
                        dev: record.dev,
                        mount_id: record.mount_id,
                    };
                    if let Err(e) =
                        fusemount::unmount_own(&record.mountpoint, id, conn.as_fd(), true)
                    {
                        warn!("{shown}: cannot unmount: {e}");
                    }
                    let _ = holder.forget(record.mount_id);
                }
            }
        }
    }

    /// Serves one held mount again; gives the connection back on failure.
    fn resume_one(
        self: &Arc<Self>,
        record: &HeldMount,
        conn: OwnedFd,
        backing: Vec<(u64, u32)>,
    ) -> std::result::Result<(), (Error, OwnedFd)> {
        let spare = match conn.try_clone() {
            Ok(c) => c,
            Err(e) => return Err((Error::Os(e), conn)),
        };
        let res = (|| -> Result<()> {
            let env_domain = match &record.domain {
                None => None,
                Some(h) => Some(super::protocol::unhex(h).ok_or_else(|| {
                    Error::BadOption("the held mount's domain is not hex".into())
                })?),
            };
            let opts = MountOptions::parse(&record.options, env_domain)?;
            let resume = Resume {
                conn,
                id: MountId {
                    dev: record.dev,
                    mount_id: record.mount_id,
                },
                init: fuser::KernelInit {
                    abi: fuser::Version(record.abi.0, record.abi.1),
                    capabilities: fuser::InitFlags::from_bits_retain(record.capabilities),
                    max_readahead: record.max_readahead,
                },
                passthrough: record.passthrough,
                generation: record.generation + 1,
                backing,
            };
            let open =
                |root: &Path, domain: &DomainId, verify: bool| self.sharing(root, domain, verify);
            let log = self.backing_log(Arc::new(OnceLock::from(record.mount_id)));
            let mounted = mount_with(
                &record.image,
                &record.mountpoint,
                &opts,
                &open,
                false,
                Some(resume),
                log,
            )?;
            // Before this daemon reads anything: only what the earlier one read and did
            // not answer is queued again (nothing is answered twice).
            if let Err(e) = fusemount::notify_resend(spare.as_fd()) {
                warn!(
                    "{} on {}: the kernel cannot send pending requests again \
                     (FUSE_NOTIFY_RESEND, Linux 6.9+): {e}; a read in flight at the \
                     restart waits until its process is killed",
                    record.image.display(),
                    record.mountpoint.display()
                );
            }
            let held = self.hold(&mounted, &record.options, record.domain.as_deref());
            self.serve_on(mounted, held)?;
            Ok(())
        })();
        res.map_err(|e| {
            self.release_unused();
            (e, spare)
        })
    }

    /// Runs one mount's session until it ends, containing a panic to it.
    fn serve(&self, key: u64, mounted: Mounted) {
        let shown = format!(
            "{} on {}",
            mounted.image.display(),
            mounted.mountpoint().display()
        );
        let sharing = mounted.sharing().cloned();
        let mount_id = mounted.held().0.mount_id;
        match std::panic::catch_unwind(AssertUnwindSafe(|| mounted.run())) {
            Ok(Ok(())) => info!("{shown}: unmounted"),
            Ok(Err(e)) => error!("{shown}: session ended: {e}"),
            Err(_) => {
                error!("{shown}: the session panicked; this mount is gone, the others serve on")
            }
        }
        drop(sharing);
        if let Some(Entry { held: true, .. }) = self.remove(key)
            && let Some(holder) = &self.holder
            && let Err(e) = holder.forget(mount_id)
        {
            warn!("{shown}: the fd holder was not told the mount ended: {e}");
        }
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
        self.prune_kernel();
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
        self.prune_kernel();
        let found = {
            let mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
            mounts
                .iter()
                .find(|(_, e)| e.mountpoint == mountpoint)
                .map(|(k, e)| match &e.handle {
                    Handle::Fuse(s) => (*k, Some(s.clone())),
                    Handle::Kernel(_) => (*k, None),
                })
        };
        if let Some((key, None)) = found {
            return self.unmount_kernel(key, mountpoint, lazy);
        }
        let Some((key, Some(stopper))) = found else {
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

    /// Unmounts the kernel mount `key` on `mountpoint` and takes it out of the table.
    fn unmount_kernel(&self, key: u64, mountpoint: &Path, lazy: bool) -> Result<()> {
        let res = {
            let mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
            match mounts.get(&key).map(|e| &e.handle) {
                Some(Handle::Kernel(km)) => km.unmount(lazy),
                _ => Ok(false),
            }
        };
        match res {
            Ok(_) => {
                self.remove(key);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                Err(Error::Busy(mountpoint.to_path_buf()))
            }
            Err(error) => Err(Error::Unmount {
                path: mountpoint.to_path_buf(),
                error,
            }),
        }
    }

    /// Detaches every FUSE mount (the daemon is stopping) and waits up to `wait` for
    /// their sessions to end; kernel mounts stay (no process serves them).
    pub(crate) fn stop_all(&self, wait: Duration) {
        let all: Vec<(u64, Stopper)> = self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(k, e)| match &e.handle {
                Handle::Fuse(s) => Some((*k, s.clone())),
                Handle::Kernel(_) => None,
            })
            .collect();
        for (_, s) in &all {
            s.stop();
        }
        let keys: Vec<u64> = all.iter().map(|(k, _)| *k).collect();
        self.wait_gone(&keys, wait);
    }

    /// The daemon stops but its mounts stay: detaches the FUSE mounts the fd holder
    /// does not keep (waiting up to `wait` for their sessions) and returns how many it
    /// keeps, which the next daemon serves again.
    pub(crate) fn stop_unheld(&self, wait: Duration) -> usize {
        let mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        let kept = mounts
            .values()
            .filter(|e| e.held && matches!(e.handle, Handle::Fuse(_)))
            .count();
        let unheld: Vec<(u64, Stopper)> = mounts
            .iter()
            .filter_map(|(k, e)| match &e.handle {
                Handle::Fuse(s) if !e.held => Some((*k, s.clone())),
                _ => None,
            })
            .collect();
        drop(mounts);
        for (_, s) in &unheld {
            s.stop();
        }
        let keys: Vec<u64> = unheld.iter().map(|(k, _)| *k).collect();
        self.wait_gone(&keys, wait);
        kept
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
