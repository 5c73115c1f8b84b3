//! `ishare umount`: unmounting an ishare mount, and only one (the mount point's type
//! must be `fuse.ishare`). Its daemon then sees its session end, waits for objects it
//! is still publishing, and exits.

use std::path::Path;
use std::process::Command;

use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use crate::error::{Error, Result};
use crate::mountinfo;

/// The filesystem type of every ishare mount (`-t fuse` with subtype `ishare`).
const FSTYPE: &str = "fuse.ishare";

/// Unmounts the ishare mount at `mountpoint`; `lazy` detaches it now and lets the
/// kernel finish once it is no longer busy (`MNT_DETACH`). Without the privilege to
/// unmount, the setuid `fusermount3` does it for the mount's owner.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    // Not canonicalize: a mount whose daemon died fails every stat (ENOTCONN).
    let path = std::path::absolute(mountpoint)?;
    match mountinfo::type_at(&path)? {
        None => return Err(Error::NotMounted(path)),
        Some(fstype) if fstype != FSTYPE => return Err(Error::NotOurs { path, fstype }),
        Some(_) => {}
    }
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match rustix::mount::unmount(&path, flags) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) => {
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u");
            if lazy {
                cmd.arg("-z");
            }
            let status = cmd.arg(&path).status().map_err(Error::FusermountMissing)?;
            if !status.success() {
                return Err(Error::Fusermount { path, status });
            }
            Ok(())
        }
        Err(Errno::BUSY) => Err(Error::Busy(path)),
        Err(e) => Err(Error::Unmount {
            path,
            error: e.into(),
        }),
    }
}

/// Detaches the mount at `mountpoint` (`MNT_DETACH`), ignoring failure: how a daemon
/// ends its own mount when told to stop (the kernel then ends the session).
pub(crate) fn detach(mountpoint: &Path) {
    let _ = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH);
}
