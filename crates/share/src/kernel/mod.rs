//! Kernel mode (`mode=auto|kernel`): an image whose every fingerprint is verified is
//! mounted by the kernel's own EROFS with `inode_share` (Linux 7.0+ built with
//! `CONFIG_EROFS_FS_PAGE_CACHE_SHARE`), so its files share the page cache with no
//! process in the read path at all.
//!
//! # Why verification first
//!
//! The kernel trusts fingerprints: two files of one domain with equal fingerprint values
//! (and sizes) share one page cache, filled from whichever file is read first (see
//! `shared/docs/erofs-format.md` §2.10). An image claiming another file's fingerprint
//! would poison every other image of the domain. So the kernel gets an image only once
//! every file it would share (a regular, non-empty file whose fingerprint xattr is 1 byte
//! to one block long, as the kernel decides) has a `sha256:` fingerprint that its
//! content matches. Results are kept in the domain's verification record
//! ([`crate::store::trust`]), so an image verified once (by a kernel or a FUSE mount) is
//! not hashed again while its file is unchanged; what must be hashed is hashed on all
//! cores. A file that lies, or a fingerprint that is not `sha256:`, keeps the image
//! away from the kernel (`mode=auto` serves it with FUSE, where that file is read
//! unshared).
//!
//! The image file must not be writable by anyone but its owner, root or us: the loop
//! device reads the file as it is at each page cache miss, so whoever could rewrite it
//! after verification could still put other bytes into the shared cache. (Root can
//! always do so; that is no worse than root's `mount -t erofs`.)
//!
//! # The domain the kernel sees
//!
//! The kernel's `domain_id` is `hex(HMAC-SHA256(domain id, "ishare kernel domain" ‖
//! verify))`: equal for every image of one domain (so they share), never the user's id
//! (which stays in this process), and different for `verify=off`, so that images whose
//! fingerprints were trusted unchecked never meet verified ones in one cache. EROFS
//! never shows `domain_id` in `/proc/mounts`; it travels only in `mount(2)`'s data.
//!
//! # What is mounted
//!
//! `erofs` on a loop device ([`loopdev`]: read-only, autoclear, marked as ours), with
//! `ro,inode_share,domain_id=...` and the mount's `nodev`/`nosuid`/`noexec`. No process
//! serves it: it survives the daemon, and unmounting it (`ishare umount`, `umount(8)`)
//! frees the loop device. Extra devices (a device table) must each be given with
//! `device=` (as the kernel's option; our reader's unified address space is not the
//! kernel's way) and get loop devices of their own, passed on as `device=/dev/loopN`;
//! they are verified and must be unwritable by others like the image file.

pub(crate) mod config;
mod loopdev;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use ishare_erofs::format::FEATURE_COMPAT_ISHARE_XATTRS;
use ishare_erofs::{FileType, Image, Inode, Reached, WalkOrder, WalkStep};
use log::{info, warn};
use rayon::prelude::*;
use rustix::mount::{MountFlags, UnmountFlags};
use sha2::Sha256;

use crate::content::{check_content, sha256_digest};
use crate::direct::DirectReader;
use crate::error::Error;
use crate::fusemount::{MountId, identify, open_mount_root, unmount_checked};
use crate::mountinfo::MountEntry;
use crate::options::{DomainId, MountBackend, MountOptions};
use crate::store::Store;
use crate::store::trust::{ImageId, Trust};

/// An image mounted by the kernel for `ishare mount`.
#[derive(Debug)]
pub(crate) struct KernelMount {
    /// The image file.
    pub image: PathBuf,
    /// The mount point (canonical).
    pub mountpoint: PathBuf,
    /// Which mount is ours.
    pub id: MountId,
    /// The files the kernel may share (verified), and their bytes.
    pub files: u64,
    /// See `files`.
    pub bytes: u64,
    /// How it is mounted, in words.
    pub detail: String,
}

/// How verification of an image went.
#[derive(Debug, Default)]
struct Verified {
    files: u64,
    bytes: u64,
    hashed: u64,
    recorded: u64,
}

/// A file the kernel would share.
struct Candidate {
    path: String,
    inode: Inode,
    fingerprint: Vec<u8>,
}

/// The `domain_id` the kernel gets for `domain` (see the module documentation).
pub(crate) fn kernel_domain(domain: &DomainId, verify: bool) -> String {
    let mut m =
        Hmac::<Sha256>::new_from_slice(domain.expose()).expect("HMAC takes keys of any length");
    m.update(b"ishare kernel domain");
    m.update(if verify { b"\x01" } else { b"\x00" });
    hex::encode(m.finalize().into_bytes())
}

/// The kernel side of the mode decision of a mount daemon (`mode=auto|fuse|kernel`):
/// `Some` when the kernel mounted the image; `None` when FUSE is to serve it (`fuse`,
/// `auto` without `inode_share`, or `auto` refused, logged with the reason); for
/// `mode=kernel` the kernel did not take, an error naming the image and the reason.
/// `told` says the kernel's lack of `inode_share` was logged already (then it is
/// logged at debug level only: it is the same for every mount).
pub(crate) fn try_mount(
    image: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    tag: &[u8],
    told: &AtomicBool,
) -> crate::error::Result<Option<KernelMount>> {
    let forced = match opts.mode {
        MountBackend::Fuse => return Ok(None),
        MountBackend::Auto if !opts.inode_share => return Ok(None),
        MountBackend::Auto => false,
        MountBackend::Kernel => true,
    };
    let refused = |reason: String| Error::KernelMode {
        image: image.to_path_buf(),
        reason,
    };
    if opts.inode_share
        && let Err(why) = config::inode_share_support()
    {
        if forced {
            return Err(refused(why));
        }
        let msg = format!(
            "{}: mode=auto: FUSE serves it, not the kernel: {why}",
            image.display()
        );
        if told.swap(true, Ordering::Relaxed) {
            log::debug!("{msg}");
        } else {
            info!("{msg} (said once)");
        }
        return Ok(None);
    }
    match mount(image, mountpoint, opts, tag) {
        Ok(km) => {
            info!(
                "{} on {}: {}",
                km.image.display(),
                km.mountpoint.display(),
                km.detail
            );
            Ok(Some(km))
        }
        Err(why) if forced => Err(refused(why)),
        Err(why) => {
            warn!(
                "{}: mode=auto: FUSE serves it, not the kernel: {why}",
                image.display()
            );
            Ok(None)
        }
    }
}

/// Mounts `image` on `mountpoint` with the kernel's EROFS, marking the loop device with
/// `tag` (the daemon's); `Err` says why the kernel was not given the image (a
/// sentence, without the image's name), and then nothing was left mounted. The caller
/// has checked that the kernel has `inode_share` ([`config::inode_share_support`]) when
/// `opts` ask for it.
pub(crate) fn mount(
    image: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    tag: &[u8],
) -> std::result::Result<KernelMount, String> {
    let image = std::path::absolute(image).map_err(|e| e.to_string())?;
    let mountpoint = std::path::absolute(mountpoint)
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("mount point {}: {e}", mountpoint.display()))?;
    let devices = opts
        .devices
        .iter()
        .map(std::path::absolute)
        .collect::<io::Result<Vec<PathBuf>>>()
        .map_err(|e| e.to_string())?;
    // The files the loop devices read, and the ones verified: the same open files.
    let file = File::open(&image).map_err(|e| e.to_string())?;
    check_ownership(&file).map_err(|e| format!("the image file {e}"))?;
    let device_files = devices
        .iter()
        .map(|d| {
            let f = File::open(d).map_err(|e| format!("device={}: {e}", d.display()))?;
            check_ownership(&f).map_err(|e| format!("device={}: {e}", d.display()))?;
            Ok(f)
        })
        .collect::<std::result::Result<Vec<File>, String>>()?;
    let img = crate::mount::open_image(&image, &devices).map_err(|e| e.to_string())?;
    if img.devices().len() != devices.len() {
        return Err(format!(
            "the image's device table names {} extra devices and device= gave {}: the kernel \
             is given each extra device by device=",
            img.devices().len(),
            devices.len()
        ));
    }
    let share = opts.inode_share && img.superblock().has_compat(FEATURE_COMPAT_ISHARE_XATTRS);
    let mut trust = None;
    let mut verified = Verified::default();
    let mut image_id = None;
    if share {
        let domain = opts
            .domain_id
            .as_ref()
            .expect("inode_share needs domain_id: checked by the option parser");
        let candidates = candidates(&img)?;
        if opts.verify {
            let root = std::path::absolute(&opts.store).map_err(|e| e.to_string())?;
            let store =
                Store::open(&root, domain).map_err(|e| format!("store {}: {e}", root.display()))?;
            let t = Trust::new(Arc::new(store));
            image_id = t.image_id(&img);
            verified = verify(&img, &t, image_id.as_ref(), &candidates)?;
            trust = Some(t);
        } else {
            verified.files = candidates.len() as u64;
            verified.bytes = candidates.iter().map(|c| c.inode.size).sum();
        }
    }

    let dev = loopdev::attach(&file, tag).map_err(|e| format!("loop device: {e}"))?;
    // Extra devices in device table order, each on a loop device of its own (marked,
    // autoclear: they go with the mount too).
    let extra = device_files
        .iter()
        .zip(&devices)
        .map(|(f, d)| {
            loopdev::attach(f, tag)
                .map_err(|e| format!("loop device for device={}: {e}", d.display()))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let mut flags = MountFlags::RDONLY;
    for (off, flag) in [
        (!opts.dev, MountFlags::NODEV),
        (!opts.suid, MountFlags::NOSUID),
        (!opts.exec, MountFlags::NOEXEC),
    ] {
        if off {
            flags |= flag;
        }
    }
    let mut data = String::from("ro");
    for x in &extra {
        data.push_str(",device=");
        data.push_str(&x.path.to_string_lossy());
    }
    if share {
        let domain = opts.domain_id.as_ref().expect("checked above");
        data.push_str(",inode_share,domain_id=");
        data.push_str(&kernel_domain(domain, opts.verify));
    }
    let data_c = std::ffi::CString::new(std::mem::take(&mut data)).expect("no NUL in options");
    let mounted = rustix::mount::mount(
        &dev.path,
        &mountpoint,
        "erofs",
        flags,
        Some(data_c.as_c_str()),
    );
    // Best effort: the derived id leaves our memory with the string.
    let mut bytes = data_c.into_bytes();
    bytes.fill(0);
    mounted.map_err(|e| format!("mount -t erofs {}: {e}", dev.path.display()))?;
    let undo = |why: String| {
        let _ = rustix::mount::unmount(&mountpoint, UnmountFlags::DETACH);
        why
    };
    // The image must be the file verified, unchanged since.
    if let (Some(t), Some(id)) = (&trust, &image_id)
        && t.image_id(&img).as_ref() != Some(id)
    {
        return Err(undo(
            "the image file changed while it was verified".to_string(),
        ));
    }
    let id = open_mount_root(&mountpoint)
        .and_then(|fd| identify(fd.as_fd()))
        .map_err(|e| undo(format!("cannot identify the new mount: {e}")))?;
    let how = if share {
        let v = &verified;
        let checked = if opts.verify {
            format!(
                "{} files with fingerprints verified ({} hashed now, {} from the record)",
                v.files, v.hashed, v.recorded
            )
        } else {
            format!(
                "{} files with fingerprints trusted unchecked (verify=off)",
                v.files
            )
        };
        format!("kernel EROFS with inode_share: {checked}")
    } else if opts.inode_share {
        "kernel EROFS, unshared (the image has no fingerprints)".to_string()
    } else {
        "kernel EROFS, unshared (no inode_share)".to_string()
    };
    let mut detail = format!(
        "{how}; {}{}",
        dev.path.display(),
        if dev.direct_io { " (direct I/O)" } else { "" }
    );
    for x in &extra {
        detail.push_str(&format!(", device {}", x.path.display()));
    }
    // The mount holds the loop devices now; ours close (autoclear from here on).
    drop(dev);
    drop(extra);
    drop(file);
    drop(device_files);
    Ok(KernelMount {
        image,
        mountpoint,
        id,
        files: verified.files,
        bytes: verified.bytes,
        detail,
    })
}

/// Refuses a file of the image that someone but root or us could rewrite; the message
/// follows "the image file" or the device's name.
fn check_ownership(file: &File) -> std::result::Result<(), String> {
    let md = file.metadata().map_err(|e| e.to_string())?;
    let euid = rustix::process::geteuid().as_raw();
    if md.uid() != 0 && md.uid() != euid {
        return Err(format!(
            "is owned by uid {}, who could rewrite it after verification",
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "has mode {:04o}: group or others could rewrite it after verification",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Every file of `img` the kernel would share, once each (hard links are one inode).
fn candidates(img: &Image) -> std::result::Result<Vec<Candidate>, String> {
    let root = img.root().map_err(|e| e.to_string())?;
    let bs = img.superblock().block_size() as usize;
    let name = img.fingerprint_prefix().map(|p| p.full_name());
    let mut out = Vec::new();
    for step in img.walk(root, WalkOrder::DirectoryByDirectory) {
        let e = match step.map_err(|e| e.to_string())? {
            WalkStep::Entry(e) => e,
            _ => continue,
        };
        if e.reached != Reached::First || e.inode.file_type != FileType::Regular {
            continue;
        }
        if e.inode.size == 0 {
            continue;
        }
        let Some(name) = &name else { continue };
        let xattrs = img
            .xattrs(&e.inode)
            .map_err(|err| format!("{}: {err}", e.path_str()))?;
        let mut values = xattrs.iter().filter(|x| &x.name == name);
        let Some(first) = values.next() else { continue };
        // Two: which one the kernel takes is not ours to guess.
        if values.next().is_some() {
            return Err(format!("{}: more than one fingerprint xattr", e.path_str()));
        }
        // Taken whether or not the xattr filter hides it from lookups: which files the
        // kernel's lookup finds is then no guess of ours.
        if (1..=bs).contains(&first.value.len()) {
            out.push(Candidate {
                path: e.path_str(),
                inode: e.inode,
                fingerprint: first.value.clone(),
            });
        }
    }
    Ok(out)
}

/// Checks every candidate's content against its `sha256:` fingerprint (from the record
/// where it has the file, else hashed on all cores) and records what matched.
fn verify(
    img: &Image,
    trust: &Trust,
    id: Option<&ImageId>,
    candidates: &[Candidate],
) -> std::result::Result<Verified, String> {
    let mut v = Verified {
        files: candidates.len() as u64,
        bytes: candidates.iter().map(|c| c.inode.size).sum(),
        ..Verified::default()
    };
    let mut pending = Vec::new();
    for c in candidates {
        let Some(sha) = sha256_digest(&c.fingerprint) else {
            return Err(format!(
                "{}: its fingerprint is not a sha256: digest, so it cannot be verified",
                c.path
            ));
        };
        if id.is_some_and(|id| trust.is_verified(id, c.inode.nid, &c.fingerprint)) {
            v.recorded += 1;
        } else {
            pending.push((c, sha));
        }
    }
    let direct = DirectReader::default();
    let hashed = AtomicU64::new(0);
    let results: Vec<(&Candidate, crate::error::Result<bool>)> = pending
        .par_iter()
        .map(|(c, sha)| {
            hashed.fetch_add(1, Ordering::Relaxed);
            (*c, check_content(img, &direct, &c.inode, sha))
        })
        .collect();
    v.hashed = hashed.into_inner();
    let mut lies = Vec::new();
    let mut failed = None;
    for (c, r) in &results {
        match r {
            Ok(true) => {
                if let Some(id) = id {
                    trust.add_verified(id, c.inode.nid, &c.fingerprint);
                }
            }
            Ok(false) => lies.push(c.path.as_str()),
            Err(e) => {
                failed.get_or_insert_with(|| format!("{}: cannot verify: {e}", c.path));
            }
        }
    }
    trust.flush();
    if !lies.is_empty() {
        return Err(format!(
            "{}: content does not match its sha256 fingerprint{}",
            lies[0],
            match lies.len() {
                1 => String::new(),
                n => format!(" (and {} more files)", n - 1),
            }
        ));
    }
    if let Some(f) = failed {
        return Err(f);
    }
    info!(
        "{}: {} files with fingerprints verified for kernel mode ({} hashed, {} from the record)",
        img.name(),
        v.files,
        v.hashed,
        v.recorded
    );
    Ok(v)
}

impl KernelMount {
    /// Whether the mount is still in `mounts` (someone may have unmounted it). Mount
    /// ids are reused and so are loop devices (whose number is the device's): the
    /// mount point must match too.
    pub(crate) fn present(&self, mounts: &[MountEntry]) -> bool {
        let at = self.mountpoint.as_os_str().as_bytes();
        mounts
            .iter()
            .any(|m| m.mount_id == self.id.mount_id && m.dev == self.id.dev && m.mount_point == at)
    }

    /// Unmounts the mount if it is still ours on its mount point (detaching it with
    /// `lazy`, else failing with EBUSY when busy); `Ok(false)` when it was gone already.
    pub(crate) fn unmount(&self, lazy: bool) -> io::Result<bool> {
        let fd = match open_mount_root(&self.mountpoint) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if identify(fd.as_fd())? != self.id {
            return Ok(false);
        }
        unmount_checked(&self.mountpoint, fd, lazy)?;
        Ok(true)
    }
}

/// Whether `entry` is a kernel mode mount of ishare (an EROFS mount on a loop device
/// marked by [`loopdev::attach`]).
pub(crate) fn is_ours(entry: &MountEntry) -> bool {
    entry.fstype == "erofs"
        && loopdev::device_path(entry.dev).is_some_and(|p| loopdev::tag_of(&p).is_some())
}

/// The kernel mode mounts made by a daemon with `tag` that are mounted now (for a
/// daemon started again: mounts outlive it).
pub(crate) fn adopt(tag: &[u8]) -> Vec<KernelMount> {
    let Ok(mounts) = crate::mountinfo::mounts() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| m.fstype == "erofs") {
        let Some(dev) = loopdev::device_path(m.dev) else {
            continue;
        };
        if loopdev::tag_of(&dev).as_deref() != Some(tag) {
            continue;
        }
        let mountpoint = PathBuf::from(std::ffi::OsStr::from_bytes(&m.mount_point));
        let image = loopdev::backing_file(&dev).unwrap_or_default();
        out.push(KernelMount {
            image,
            mountpoint,
            id: MountId {
                dev: m.dev,
                mount_id: m.mount_id,
            },
            files: 0,
            bytes: 0,
            detail: format!(
                "kernel EROFS (mounted before this daemon started); {}",
                dev.display()
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_domain_is_per_domain_and_verify_and_hides_the_id() {
        let d = DomainId::new("s3cret-domain");
        let k = kernel_domain(&d, true);
        assert_eq!(k, kernel_domain(&DomainId::new("s3cret-domain"), true));
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!k.contains("s3cret"));
        assert_ne!(k, kernel_domain(&d, false));
        assert_ne!(k, kernel_domain(&DomainId::new("s3cret-domaiN"), true));
    }
}
