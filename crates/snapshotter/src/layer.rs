//! Committed layers: the applied directory becomes a fingerprinted EROFS image
//! (`layers/ID/layer.erofs`, built in-process by `ishare-builder` on every core), which
//! the node daemon mounts with `inode_share` in the snapshotter's domain at `l/ID`.
//!
//! The mounts belong to the node daemon, not to this process: restarting the
//! snapshotter leaves them (and the containers whose overlays stack them) alone. At
//! start, and before a layer is stacked, [`Layers::ensure_mounted`] remounts a layer
//! whose mount is gone (the daemon restarted) or dead.
//!
//! Mount points are `ROOT/l/ID`, short on purpose: an overlay's `lowerdir=` lists one
//! per layer and the whole option string must fit a page (see `mounts.rs`).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_builder::{BuildOptions, TimePolicy};
use ishare_share::{DomainId, Request};

use crate::error::{Error, Result};

/// `statfs` f_type of FUSE.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Where layers live and how they are mounted.
#[derive(Debug)]
pub struct Layers {
    /// `ROOT/layers`: one directory per committed layer, holding `layer.erofs`.
    pub images: PathBuf,
    /// `ROOT/l`: the mount points.
    pub mounts: PathBuf,
    /// The node daemon's control socket.
    pub socket: PathBuf,
    /// The `-o` list every layer is mounted with.
    pub options: String,
    /// The sharing domain (sent over the socket only).
    pub domain: DomainId,
    /// How to start a node daemon when none listens (`ishare daemon --launched`);
    /// `None`: a missing daemon is an error.
    pub daemon_exe: Option<PathBuf>,
    /// Serialises [`Layers::ensure_mounted`]: two calls stacking the same layer at once
    /// must not both mount it.
    pub mounting: std::sync::Mutex<()>,
}

/// What a layer's Usage reports: bytes on disk and inodes.
pub type Usage = (u64, u64);

/// How a layer's mount point is doing.
#[derive(Debug, PartialEq, Eq)]
pub enum MountState {
    /// A live FUSE mount.
    Live,
    /// A FUSE mount whose daemon is gone (ENOTCONN).
    Dead,
    /// Nothing mounted.
    None,
}

impl Layers {
    /// The directory of layer `id`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.images.join(id.to_string())
    }

    /// Layer `id`'s image.
    pub fn image(&self, id: u64) -> PathBuf {
        self.dir(id).join("layer.erofs")
    }

    /// Layer `id`'s mount point.
    pub fn mountpoint(&self, id: u64) -> PathBuf {
        self.mounts.join(id.to_string())
    }

    /// Builds the image of layer `id` from the applied tree `src` (the snapshot `key`):
    /// written as `layer.erofs.tmp`, synced, then renamed, so `layer.erofs` is always
    /// whole. Overlay whiteouts (0:0 character devices) and `trusted.overlay.*` xattrs
    /// of the tree are kept as they are, as overlayfs expects them in a lower layer.
    pub fn build(&self, key: &str, id: u64, src: &Path) -> Result<Usage> {
        let dir = self.dir(id);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let tmp = dir.join("layer.erofs.tmp");
        let opts = BuildOptions {
            build_time: crate::meta::Stamp::now().secs.max(0) as u64,
            time_policy: TimePolicy::Keep,
            ..BuildOptions::default()
        };
        let report = ishare_builder::build(src, &tmp, &opts).map_err(|source| Error::Build {
            key: key.to_string(),
            source,
        })?;
        let f = fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        let image = self.image(id);
        fs::rename(&tmp, &image).map_err(|e| Error::io(&image, e))?;
        sync_dir(&dir)?;
        let blocks = f.metadata().map_err(|e| Error::io(&image, e))?.blocks();
        Ok((blocks * 512, report.inodes))
    }

    /// Takes over `made`, the image of layer `id` containerd's EROFS differ wrote into
    /// the snapshot `key` (the fast path: no build). It must open as an EROFS image;
    /// it is synced, then renamed into place (same filesystem), as [`Layers::build`]'s.
    pub fn adopt(&self, key: &str, id: u64, made: &Path) -> Result<Usage> {
        let img = ishare_erofs::Image::open(made).map_err(|source| Error::BadLayer {
            key: key.to_string(),
            path: made.to_path_buf(),
            source: Box::new(source),
        })?;
        let inodes = img.superblock().inos;
        if img.fingerprint_prefix().is_none() {
            log::warn!(
                "snapshot {key:?}: the EROFS differ's image has no fingerprints \
                 (mkfs_options lacks --xattr-inode-digest): its files will not be shared"
            );
        }
        drop(img);
        let dir = self.dir(id);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let f = fs::File::open(made).map_err(|e| Error::io(made, e))?;
        f.sync_all().map_err(|e| Error::io(made, e))?;
        let image = self.image(id);
        fs::rename(made, &image).map_err(|e| Error::io(&image, e))?;
        sync_dir(&dir)?;
        let blocks = f.metadata().map_err(|e| Error::io(&image, e))?.blocks();
        Ok((blocks * 512, inodes))
    }

    /// Mounts layer `id` unless it is mounted and alive.
    pub fn ensure_mounted(&self, id: u64) -> Result<()> {
        let _one_at_a_time = self.mounting.lock().unwrap_or_else(|e| e.into_inner());
        let mp = self.mountpoint(id);
        match mount_state(&mp) {
            MountState::Live => return Ok(()),
            MountState::Dead => {
                log::warn!("layer {id}: its mount {} is dead; remounting", mp.display());
                detach(&mp);
            }
            MountState::None => {}
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&mp)
            .map_err(|e| Error::io(&mp, e))?;
        let exe = self.daemon_exe.clone();
        let socket = self.socket.clone();
        let start = move || {
            let mut cmd = Command::new(exe.clone().unwrap_or_else(|| "ishare".into()));
            cmd.arg("daemon")
                .arg("--launched")
                .arg("--socket")
                .arg(&socket);
            cmd
        };
        if self.daemon_exe.is_none()
            && ishare_share::list_mounts(&self.socket)
                .ok()
                .flatten()
                .is_none()
        {
            return Err(Error::Config(format!(
                "no ishare node daemon listens at {}",
                self.socket.display()
            )));
        }
        ishare_share::mount_via_daemon(
            &self.socket,
            start,
            &self.image(id),
            &mp,
            std::slice::from_ref(&self.options),
            Some(self.domain.expose().to_vec()),
        )
        .map_err(|source| Error::Daemon {
            what: format!(
                "mounting layer {} on {}",
                self.image(id).display(),
                mp.display()
            ),
            source,
        })?;
        log::debug!("layer {id}: mounted on {}", mp.display());
        Ok(())
    }

    /// Unmounts layer `id` (through the daemon; detached directly when the daemon does
    /// not know it) and deletes its image and mount point.
    pub fn remove(&self, id: u64) -> Result<()> {
        let mp = self.mountpoint(id);
        if mount_state(&mp) != MountState::None {
            let req = Request::Unmount {
                mountpoint: mp.clone(),
                lazy: true,
            };
            if let Err(e) = ishare_share::request(&self.socket, &req) {
                log::warn!(
                    "layer {id}: the daemon did not unmount {}: {e}; detaching",
                    mp.display()
                );
                detach(&mp);
            }
        }
        remove_path(&mp)?;
        remove_path(&self.dir(id))
    }
}

/// Whether `mp` holds a live FUSE mount, a dead one, or none.
pub fn mount_state(mp: &Path) -> MountState {
    match rustix::fs::statfs(mp) {
        Ok(s) if s.f_type == FUSE_SUPER_MAGIC => MountState::Live,
        Ok(_) => MountState::None,
        Err(rustix::io::Errno::NOTCONN) => MountState::Dead,
        Err(_) => MountState::None,
    }
}

/// Lazily unmounts whatever is on `mp`.
pub fn detach(mp: &Path) {
    let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
}

/// Removes a file or a tree, if present.
pub fn remove_path(p: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

/// fsyncs a directory (after a rename in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
