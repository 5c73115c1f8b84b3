//! Mounting an image: opening it, deciding the sharing and passthrough mode,
//! mounting the FUSE session, and running it until unmounted.
//!
//! The mount is made by `fusemount` (not by fuser, which would unmount by path when
//! the session ends), its identity recorded, and the daemon registered (`registry`)
//! so that `ishare umount` can wait for it. A [`Mounted`] unmounts only through
//! [`Stopper::stop`], and only its own mount; a session that ended because someone
//! unmounted it unmounts nothing.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{BackingId, Config, InitFlags, KernelInit, Session, SessionACL};
use ishare_erofs::format::FEATURE_COMPAT_ISHARE_XATTRS;
use ishare_erofs::{Image, ReadAt};
use log::{info, warn};

use crate::direct::DirectSource;
use crate::error::{Error, Result};
use crate::fs::{BackingLog, Counters, ImageFs, MountFs, PassthroughState};
use crate::fusemount::{self, FuseMountSpec, MountId, OwnUnmount};
use crate::options::{DomainId, MountBackend, MountOptions, Passthrough};
use crate::registry::{self, Registration};
use crate::sharing::Sharing;
use crate::store::Store;

/// `statfs` magic numbers of stacking filesystems (the backing file of a FUSE
/// passthrough counts one level deeper on them).
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const ECRYPTFS_SUPER_MAGIC: i64 = 0xf15f;

/// Where a mount's sharing state comes from: the store root, the domain and
/// `verify=`. A mount daemon of its own makes a new one ([`new_sharing`]); the node
/// daemon gives every mount of one (store, domain, verify) the same one, so files
/// with one fingerprint are prepared once and served from one open object.
pub(crate) type OpenSharing<'a> = &'a dyn Fn(&Path, &DomainId, bool) -> Result<Arc<Sharing>>;

/// A new sharing state on the store `root` (created as needed).
pub(crate) fn new_sharing(root: &Path, domain: &DomainId, verify: bool) -> Result<Arc<Sharing>> {
    let store = Store::open(root, domain).map_err(|error| Error::Store {
        path: root.to_path_buf(),
        error,
    })?;
    Ok(Arc::new(Sharing::new(store, verify)?))
}

/// How a mount serves its files, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeMode {
    /// Shared files pass through to store objects (kernel FUSE passthrough).
    Passthrough,
    /// Shared files are read by the daemon from store objects.
    Daemon,
    /// Nothing is shared.
    Unshared,
    /// Mounted by the kernel's own EROFS (`inode_share` where the image has
    /// fingerprints); no process serves it.
    Kernel,
}

impl ServeMode {
    /// The word `ishare mounts` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            ServeMode::Passthrough => "passthrough",
            ServeMode::Daemon => "daemon",
            ServeMode::Unshared => "unshared",
            ServeMode::Kernel => "kernel",
        }
    }
}

/// A connection made by an earlier node daemon, kept by the fd holder, to serve again
/// (see `crate::holder`).
#[derive(Debug)]
pub(crate) struct Resume {
    /// The connection.
    pub(crate) conn: OwnedFd,
    /// Which mount it is.
    pub(crate) id: MountId,
    /// What the kernel's INIT offered.
    pub(crate) init: KernelInit,
    /// Passthrough was negotiated (and worked).
    pub(crate) passthrough: bool,
    /// How many daemons served it before.
    pub(crate) generation: u64,
    /// The backing files the earlier daemons registered on it (node id, kernel id).
    pub(crate) backing: Vec<(u64, u32)>,
}

/// A mounted image, not yet serving.
pub struct Mounted {
    session: Session<MountFs>,
    sharing: Option<Arc<Sharing>>,
    /// The sharing state is this mount's alone: publishing ends with the session.
    owns_sharing: bool,
    counters: Arc<Counters>,
    mountpoint: PathBuf,
    /// Which mount is ours.
    id: MountId,
    /// The connection (a duplicate of the session's), to see whether it still lives.
    conn: Arc<OwnedFd>,
    /// This daemon's record, for `ishare umount` (kept until the process exits).
    _registration: Option<Registration>,
    /// What the kernel's INIT offered (for the fd holder).
    kernel_init: Option<KernelInit>,
    /// Daemons that served the connection before this one.
    generation: u64,
    /// The preparation ahead (`prepare=mount`), started when the mount is served.
    ahead: crate::fs::ahead::Start,
    /// How files are served.
    pub mode: String,
    /// The same, in one word.
    pub kind: ServeMode,
    /// The image file (absolute).
    pub image: PathBuf,
    /// "IMAGE on MOUNTPOINT: mode", for the log.
    pub summary: String,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .field("mode", &self.mode)
            .finish()
    }
}

/// True when this process holds CAP_SYS_ADMIN (needed for FUSE passthrough).
pub fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The FUSE `max_stack_depth` that backing files on `store`'s filesystem need.
pub(crate) fn stack_depth_for(store: &Path) -> u32 {
    match rustix::fs::statfs(store) {
        Ok(st) => {
            #[allow(clippy::unnecessary_cast)] // c_long on some targets
            let t = st.f_type as i64;
            if [
                OVERLAYFS_SUPER_MAGIC,
                FUSE_SUPER_MAGIC,
                ECRYPTFS_SUPER_MAGIC,
            ]
            .contains(&t)
            {
                2
            } else {
                1
            }
        }
        Err(_) => 1,
    }
}

/// Resolves a relative path against the current directory (the daemon later
/// changes to `/`).
fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// Opens the image and its extra devices as [`DirectSource`]s: the daemon's metadata
/// reads bypass the page cache.
pub(crate) fn open_image(image: &Path, devices: &[PathBuf]) -> Result<Image> {
    let open = |p: &Path| -> Result<(Arc<str>, Box<dyn ReadAt>)> {
        let src = DirectSource::open(p).map_err(|e| Error::io(p, e))?;
        Ok((p.display().to_string().into(), Box::new(src)))
    };
    let (name, src) = open(image)?;
    let devices = devices
        .iter()
        .map(|d| open(d))
        .collect::<Result<Vec<_>>>()?;
    Image::from_source(name, src, devices).map_err(Error::Image)
}

/// Raises the soft limit on open files to the hard one, as the kernel allows any
/// process to: a mount holds a descriptor per object in use by its open files (and the
/// kernel FUSE passthrough one per file opened through it), and systemd's default
/// soft limit of 1,024 is low for busy images.
fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
}

/// Opens `image`, mounts it on `mountpoint` and returns once the kernel has
/// initialized the connection (requests then queue until [`Mounted::run`]). The
/// mount's sharing state is its own.
pub fn mount(image: &Path, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted> {
    mount_with(image, mountpoint, opts, &new_sharing, true, None, None)
}

/// [`mount`] with the sharing state from `open_sharing`; `owns_sharing` when it is
/// this mount's alone (its publishing then ends with the session). With `resume`, no
/// new mount is made: the connection of an earlier daemon's mount is served again
/// (no INIT: the kernel keeps what the first handshake agreed). `backing_log` is told
/// of backing file registrations (see [`BackingLog`]).
pub(crate) fn mount_with(
    image: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    open_sharing: OpenSharing,
    owns_sharing: bool,
    resume: Option<Resume>,
    backing_log: Option<BackingLog>,
) -> Result<Mounted> {
    if opts.mode == MountBackend::Kernel {
        return Err(Error::KernelMode {
            image: image.to_path_buf(),
            reason: "kernel mounts are made by the node daemon or --dedicated (not with -f)".into(),
        });
    }
    raise_fd_limit();
    crate::malloc::tune();
    let image = absolute(image)?;
    // Canonical: the daemon later opens it to find its own mount there.
    let mountpoint = if resume.is_some() {
        // Kept canonical by the holder; resolving it would ask the connection no one
        // serves yet for the root's attributes, and wait forever.
        absolute(mountpoint)?
    } else {
        absolute(mountpoint)?
            .canonicalize()
            .map_err(|error| Error::Mount {
                path: mountpoint.to_path_buf(),
                error,
            })?
    };
    let devices = opts
        .devices
        .iter()
        .map(|d| absolute(d))
        .collect::<Result<Vec<_>>>()?;
    let img = open_image(&image, &devices)?;
    let shown = image.display().to_string();
    img.root().map_err(Error::Image)?;

    let mut sharing = None;
    if opts.inode_share {
        if !img.superblock().has_compat(FEATURE_COMPAT_ISHARE_XATTRS) {
            info!("{shown}: on-disk ishare xattrs not found; turning off inode_share");
        } else {
            let domain = opts
                .domain_id
                .as_ref()
                .expect("checked by the option parser");
            let root = absolute(&opts.store)?;
            sharing = Some(open_sharing(&root, domain, opts.verify)?);
        }
    }

    let mut want_pt = sharing.is_some() && opts.passthrough != Passthrough::Off;
    let mut why_not = String::new();
    if want_pt && !has_cap_sys_admin() {
        if opts.passthrough == Passthrough::On {
            return Err(Error::Passthrough(
                "passthrough=on: FUSE passthrough needs CAP_SYS_ADMIN, which this process lacks"
                    .into(),
            ));
        }
        want_pt = false;
        why_not = "no CAP_SYS_ADMIN".into();
    }
    let depth = sharing
        .as_ref()
        .map_or(1, |s| stack_depth_for(s.store().root()));
    let pt = Arc::new(PassthroughState::default());
    let counters = Arc::new(Counters::default());
    let mut fs = ImageFs::new(
        img,
        sharing.clone(),
        want_pt,
        depth,
        pt.clone(),
        counters.clone(),
    );

    let ahead = crate::fs::ahead::Start::default();
    if opts.prepare_ahead {
        fs.set_prepare_ahead(ahead.clone());
    }
    let generation = resume.as_ref().map_or(0, |r| r.generation);
    fs.set_generation(generation);
    if let Some(r) = &resume {
        fs.inherit_backing(&r.backing);
    }
    if let Some(log) = backing_log {
        fs.set_backing_log(log);
    }
    let mount_err = |error| Error::Mount {
        path: mountpoint.clone(),
        error,
    };
    let mut config = Config::default();
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads);
    let spin_us = opts.spin_us.unwrap_or_else(crate::wakeup::auto_spin_us);
    config.spin = std::time::Duration::from_micros(spin_us.into());
    // A RELEASE (sent without waiting when a reader closes a file) would otherwise wake
    // this thread ahead of the reader on the reader's CPU (see `crate::wakeup`): two
    // context switches per file. Under SCHED_BATCH it waits until the reader next
    // sleeps, typically in its next OPEN, and answers both at once. One open and close
    // 7.45 → 6.57 µs on this project's VM; requests someone waits for are unaffected
    // (the waiting process sleeps, the thread runs).
    config.batch = true;
    // A clone of the connection ends the requests it has read and not answered
    // (ECONNABORTED) when it is closed, so a daemon whose connections outlive it (the
    // node daemon's, kept by the fd holder) reads them all on the one descriptor the
    // holder keeps: its pending requests survive a crash and are sent again.
    config.clone_fd = owns_sharing;
    let acl = config.acl;
    let (session, id, conn) = match resume {
        Some(r) => {
            let conn = Arc::new(r.conn.try_clone().map_err(mount_err)?);
            // What the first daemon did not take is not offered to this one, where the
            // mount's state depends on it.
            let mut init = r.init;
            if !r.passthrough {
                init.capabilities &= !InitFlags::FUSE_PASSTHROUGH;
            }
            let session = Session::from_initialized_fd(MountFs::new(fs), r.conn, acl, config, init)
                .map_err(mount_err)?;
            (session, r.id, conn)
        }
        None => {
            let mut flags = rustix::mount::MountFlags::RDONLY;
            for (off, flag) in [
                (!opts.dev, rustix::mount::MountFlags::NODEV),
                (!opts.suid, rustix::mount::MountFlags::NOSUID),
                (!opts.exec, rustix::mount::MountFlags::NOEXEC),
            ] {
                if off {
                    flags |= flag;
                }
            }
            let spec = FuseMountSpec {
                source: &shown,
                flags,
                allow_other: opts.allow_other,
            };
            let dev = fusemount::mount_fuse(&mountpoint, &spec).map_err(mount_err)?;
            let conn = Arc::new(dev.try_clone().map_err(mount_err)?);
            // On any failure from here, the mount must go (it is surely ours: just made).
            let made = (|| {
                let session = Session::from_fd(MountFs::new(fs), dev, acl, config)?;
                let root = fusemount::open_mount_root(&mountpoint)?;
                let id = fusemount::identify(root.as_fd())?;
                Ok((session, id))
            })();
            match made {
                Ok((session, id)) => (session, id, conn),
                Err(error) => {
                    let _ =
                        rustix::mount::unmount(&mountpoint, rustix::mount::UnmountFlags::DETACH);
                    return Err(mount_err(error));
                }
            }
        }
    };
    // A mount whose sharing is its own is served by a process of its own (a dedicated
    // daemon, or `-f`), which exits with it; the node daemon's mounts share theirs.
    let registration = registry::register(id, owns_sharing);

    if want_pt && !pt.active.load(Ordering::Relaxed) {
        why_not = "the kernel offers no FUSE passthrough (Linux before 6.9, or CONFIG_FUSE_PASSTHROUGH off)".into();
    }
    if pt.active.load(Ordering::Relaxed) && generation == 0 {
        // Probe with a file in the store: privileges and stacking depth both show.
        // (A connection served again was probed by its first daemon.)
        if let Err(e) = probe_passthrough(&session, sharing.as_ref().expect("sharing").store()) {
            pt.active.store(false, Ordering::Relaxed);
            why_not = format!("opening a backing file failed: {e}");
        }
    }
    if opts.passthrough == Passthrough::On && !pt.active.load(Ordering::Relaxed) {
        return Err(Error::Passthrough(format!("passthrough=on, but {why_not}")));
    }
    let kind = match &sharing {
        None => ServeMode::Unshared,
        Some(_) if pt.active.load(Ordering::Relaxed) => ServeMode::Passthrough,
        Some(_) => ServeMode::Daemon,
    };
    let mode = match &sharing {
        None if opts.inode_share => "unshared (the image has no fingerprints)".to_string(),
        None => "unshared (no inode_share)".to_string(),
        Some(s) => {
            let how = if pt.active.load(Ordering::Relaxed) {
                format!(
                    "kernel FUSE passthrough to store objects (max_stack_depth {})",
                    pt.stack_depth.load(Ordering::Relaxed)
                )
            } else if opts.passthrough == Passthrough::Off {
                "daemon reads from store objects (passthrough=off)".to_string()
            } else {
                format!("daemon reads from store objects (no passthrough: {why_not})")
            };
            format!(
                "page cache sharing on, store {}, verify={}, {how}",
                s.store().root().display(),
                if opts.verify { "on" } else { "off" }
            )
        }
    };
    let summary = format!("{shown} on {}: {mode}", mountpoint.display());
    if !why_not.is_empty() && opts.passthrough == Passthrough::Auto && sharing.is_some() {
        warn!("{shown}: no FUSE passthrough ({why_not}); shared files are read by the daemon");
    }
    let session_init = session.kernel_init();
    Ok(Mounted {
        session,
        sharing,
        owns_sharing,
        counters,
        mountpoint,
        id,
        conn,
        _registration: registration,
        kernel_init: session_init,
        generation,
        ahead,
        mode,
        kind,
        image,
        summary,
    })
}

fn probe_passthrough(session: &Session<MountFs>, store: &Store) -> std::io::Result<()> {
    let f = store.probe_file()?;
    // The id stays registered until the connection ends (fuser can close only ids it
    // wraps itself); it pins one empty file.
    BackingId::create_raw(session, &f).map(|_| ())
}

impl Mounted {
    /// The mount point (absolute).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What unmounts this mount (and only it) from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            mountpoint: self.mountpoint.clone(),
            id: self.id,
            conn: self.conn.clone(),
        }
    }

    /// What the fd holder keeps of the connection: which mount, the connection, what
    /// the kernel's INIT offered, whether passthrough is on, and how many daemons
    /// served it before this one.
    pub(crate) fn held(&self) -> (MountId, Arc<OwnedFd>, Option<KernelInit>, bool, u64) {
        (
            self.id,
            self.conn.clone(),
            self.kernel_init,
            self.kind == ServeMode::Passthrough,
            self.generation,
        )
    }

    /// Files served shared so far, and their bytes.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The sharing state, if files are shared.
    pub(crate) fn sharing(&self) -> Option<&Arc<Sharing>> {
        self.sharing.as_ref()
    }

    /// Starts the preparation ahead (`prepare=mount`), serves requests until the file
    /// system is unmounted, then (when the sharing state is its own) waits for shared
    /// objects still being published.
    pub fn run(self) -> Result<()> {
        self.ahead.start();
        let res = self.session.run();
        if let (Some(s), true) = (&self.sharing, self.owns_sharing) {
            s.wait_published();
        }
        Ok(res?)
    }
}

/// Unmounts a [`Mounted`]'s own mount (for a daemon told to stop).
#[derive(Debug, Clone)]
pub struct Stopper {
    mountpoint: PathBuf,
    id: MountId,
    conn: Arc<OwnedFd>,
}

impl Stopper {
    /// Unmounts the mount if the mount on its mount point is still this one; `lazy`
    /// detaches it (the session then ends once it is no longer busy), else a busy
    /// mount stays and this fails with EBUSY.
    pub(crate) fn unmount(&self, lazy: bool) -> std::io::Result<OwnUnmount> {
        fusemount::unmount_own(&self.mountpoint, self.id, self.conn.as_fd(), lazy)
    }

    /// Detaches the mount if the mount on its mount point is still this one (the
    /// session then ends once the mount is no longer busy); logs what it did.
    pub fn stop(&self) {
        let shown = self.mountpoint.display();
        match self.unmount(true) {
            // Logged by the session's end (the process may exit before this thread
            // logs anything).
            Ok(OwnUnmount::Detached) => {}
            Ok(OwnUnmount::AlreadyGone) => info!("{shown}: already unmounted"),
            Ok(OwnUnmount::NotOurs(other)) => warn!(
                "{shown}: not unmounting: the mount there now is not this daemon's \
                 (device {}:{}, mount id {})",
                other.dev.0, other.dev.1, other.mount_id
            ),
            Err(e) => warn!("{shown}: cannot unmount: {e}"),
        }
    }
}
