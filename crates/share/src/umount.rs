//! `ishare umount`: unmounting an ishare mount, and only one (the mount point's type
//! must be `fuse.ishare`, or `erofs` on a loop device of ishare's kernel mode, which
//! has no daemon to wait for: its loop device goes with the mount). Its daemon then sees its session end, waits for objects it
//! is still publishing, and exits; [`unmount`] returns only once it has exited (a
//! daemon found through its record, see `registry`), so a mount made on the same path
//! right after never races the old daemon's exit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use crate::error::{Error, Result};
use crate::mountinfo;
use crate::registry;

/// The filesystem type of every ishare mount (`-t fuse` with subtype `ishare`).
const FSTYPE: &str = "fuse.ishare";

/// Unmounts the ishare mount at `mountpoint`, then waits up to `wait` for its daemon
/// to exit (when the daemon registered; it did not when it runs as another user or is
/// older than the registry). `lazy` detaches the mount now and lets the kernel finish
/// once it is no longer busy (`MNT_DETACH`); the daemon then exits only after that,
/// so it is not waited for. Without the privilege to unmount, the setuid `fusermount3`
/// does it for the mount's owner.
pub fn unmount(mountpoint: &Path, lazy: bool, wait: Duration) -> Result<()> {
    // Not canonicalize: a mount whose daemon died fails every stat (ENOTCONN).
    let path = std::path::absolute(mountpoint)?;
    let entry = match mountinfo::mount_at(&path)? {
        None => return Err(Error::NotMounted(path)),
        Some(m) if crate::kernel::is_ours(&m) => return detach_or_unmount(&path, lazy),
        Some(m) if m.fstype != FSTYPE => {
            return Err(Error::NotOurs {
                path,
                fstype: m.fstype,
            });
        }
        Some(m) => m,
    };
    // Found (and pinned) before the unmount: afterwards its record may be gone.
    let daemon = registry::find(entry.dev, entry.mount_id);
    detach_or_unmount(&path, lazy)?;
    match daemon {
        Some(d) if !lazy && !d.wait(wait) => Err(Error::DaemonLingers {
            path,
            pid: d.pid,
            waited: wait,
        }),
        _ => Ok(()),
    }
}

fn detach_or_unmount(path: &Path, lazy: bool) -> Result<()> {
    let path = path.to_path_buf();
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
