//! The FUSE mount itself, made and ended by us rather than by `fuser`: opening
//! `/dev/fuse`, `mount(2)` (or the setuid `fusermount3` without the privilege), the
//! mount's identity, and unmounting only our own mount.
//!
//! # Why not fuser's mount
//!
//! `fuser::Session` unmounts *by path* when it is dropped, after its session ended
//! (its "is it still mounted" check reads a dead connection's POLLERR as mounted). By
//! then the session usually ended because someone unmounted us, and a new mount may
//! already be on the same path: the exiting daemon removed it. So the daemon mounts
//! here and hands fuser only the connection (`Session::from_fd`, which never unmounts).
//!
//! # Contract
//!
//! * [`mount_fuse`] returns the connection of a new `fuse.ishare` mount on the mount
//!   point; [`identify`] then records which mount that is ([`MountId`]: the
//!   connection's device number and the mount id).
//! * [`unmount_own`] detaches the mount at the mount point only if it is still this
//!   connection's mount (same device and mount id, connection alive); a lazy unmount
//!   (a daemon stopping) goes through a descriptor of that very mount
//!   (`/proc/self/fd/N`), so no mount made after the check can be hit; a non-lazy one
//!   (an explicit request) by path, as a descriptor would keep the mount busy (see
//!   [`unmount_checked`]). A connection the kernel already ended (someone unmounted
//!   it) unmounts nothing.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags, open, statx};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

/// Which mount: the FUSE connection's device number and the mount's id (as
/// `/proc/self/mountinfo` shows them). While the connection lives, no other
/// filesystem has its device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MountId {
    /// (major, minor) of the connection's device.
    pub(crate) dev: (u32, u32),
    /// The mount id.
    pub(crate) mount_id: u64,
}

/// How a FUSE mount is asked for.
#[derive(Debug)]
pub(crate) struct FuseMountSpec<'a> {
    /// The source column (`df`, mountinfo): the image.
    pub(crate) source: &'a str,
    /// Mount flags (read-only, nodev, nosuid, noexec).
    pub(crate) flags: MountFlags,
    /// `allow_other`: every user may use the mount.
    pub(crate) allow_other: bool,
}

/// Mounts a `fuse.ishare` filesystem on `mountpoint` and returns its connection
/// (`/dev/fuse`, close-on-exec). Without the privilege to open `/dev/fuse` or to mount,
/// the setuid `fusermount3` mounts and hands the connection over, as libfuse does.
pub(crate) fn mount_fuse(mountpoint: &Path, spec: &FuseMountSpec) -> io::Result<OwnedFd> {
    let root = rustix::fs::stat(mountpoint)?;
    let dev = match open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        Ok(dev) => dev,
        // /dev/fuse is often 0600: fusermount3 opens it as root.
        Err(Errno::ACCESS | Errno::PERM) => return mount_with_fusermount(mountpoint, spec),
        Err(e) => return Err(e.into()),
    };
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions,subtype=ishare",
        dev.as_raw_fd(),
        root.st_mode & 0o170_000,
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    if spec.allow_other {
        data.push_str(",allow_other");
    }
    let data = CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    match rustix::mount::mount(spec.source, mountpoint, "fuse", spec.flags, data.as_c_str()) {
        Ok(()) => Ok(dev),
        Err(Errno::PERM) => {
            drop(dev);
            mount_with_fusermount(mountpoint, spec)
        }
        Err(e) => Err(e.into()),
    }
}

/// `fusermount3 -o OPTIONS -- MOUNTPOINT` with `_FUSE_COMMFD`: it mounts, sends the
/// connection over the socket (SCM_RIGHTS) and exits.
fn mount_with_fusermount(mountpoint: &Path, spec: &FuseMountSpec) -> io::Result<OwnedFd> {
    let mut opts = vec!["default_permissions".to_string(), "subtype=ishare".into()];
    for (flag, set, unset) in [
        (MountFlags::RDONLY, "ro", "rw"),
        (MountFlags::NODEV, "nodev", "dev"),
        (MountFlags::NOSUID, "nosuid", "suid"),
        (MountFlags::NOEXEC, "noexec", "exec"),
    ] {
        opts.push(
            if spec.flags.contains(flag) {
                set
            } else {
                unset
            }
            .into(),
        );
    }
    if spec.allow_other {
        opts.push("allow_other".into());
    }
    // fusermount3 splits its options at commas.
    opts.push(format!("fsname={}", spec.source.replace(',', "_")));
    // The child's end is inherited (no close-on-exec); ours closes at exec.
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )?;
    rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC)?;
    let child = Command::new("fusermount3")
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    drop(theirs);
    let received = receive_fd(&ours);
    drop(ours);
    let out = child.wait_with_output()?;
    match received {
        Ok(Some(fd)) => {
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
            Ok(fd)
        }
        _ => Err(io::Error::other(format!(
            "fusermount3 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// One descriptor sent over `sock` with SCM_RIGHTS (None at EOF).
fn receive_fd(sock: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    loop {
        match rustix::net::recvmsg(
            sock,
            &mut [io::IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// The identity of the mount `fd` (an `O_PATH` descriptor of its root) is on. Asks the
/// kernel only for what it knows without the filesystem (`AT_STATX_DONT_SYNC`), so no
/// FUSE request is sent (the session may not be serving yet).
pub(crate) fn identify(fd: BorrowedFd) -> io::Result<MountId> {
    let st = statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::MNT_ID,
    )?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gives no mount id (Linux before 5.8)",
        ));
    }
    Ok(MountId {
        dev: (st.stx_dev_major, st.stx_dev_minor),
        mount_id: st.stx_mnt_id,
    })
}

/// An `O_PATH` descriptor of whatever is mounted on `mountpoint` now (its root).
pub(crate) fn open_mount_root(mountpoint: &Path) -> io::Result<OwnedFd> {
    Ok(open(
        mountpoint,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Whether the kernel still serves the connection `conn` (an ended one polls POLLERR).
pub(crate) fn connected(conn: BorrowedFd) -> bool {
    let mut fds = [PollFd::new(&conn, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(_) => return !fds[0].revents().contains(PollFlags::ERR),
            Err(Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

/// What [`unmount_own`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OwnUnmount {
    /// Our mount was detached.
    Detached,
    /// The connection had already ended: someone else unmounted us; nothing was done.
    AlreadyGone,
    /// Another mount is on the mount point now (ours is elsewhere, covered or detached
    /// but busy): nothing was done.
    NotOurs(MountId),
}

/// Unmounts the mount whose root `fd` is (`O_PATH`, just identified as the one to
/// unmount) on `mountpoint`. Lazily, through `fd` itself (the magic link resolves to
/// exactly that mount, whatever the path holds by now). Otherwise by path once `fd`
/// is closed, since a descriptor of the mount's root keeps it busy (EBUSY): a mount
/// stacked on the path between the check and the unmount would be the one unmounted,
/// a window of two system calls on an explicit request.
pub(crate) fn unmount_checked(mountpoint: &Path, fd: OwnedFd, lazy: bool) -> io::Result<()> {
    if lazy {
        let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::mount::unmount(by_fd.as_str(), UnmountFlags::DETACH)?;
    } else {
        drop(fd);
        rustix::mount::unmount(mountpoint, UnmountFlags::NOFOLLOW)?;
    }
    Ok(())
}

/// Unmounts the mount on `mountpoint` if it is `own`'s, the mount of the live
/// connection `conn` (detaches it with `lazy`, else fails with EBUSY when it is busy);
/// see the module's contract.
pub(crate) fn unmount_own(
    mountpoint: &Path,
    own: MountId,
    conn: BorrowedFd,
    lazy: bool,
) -> io::Result<OwnUnmount> {
    if !connected(conn) {
        return Ok(OwnUnmount::AlreadyGone);
    }
    let fd = open_mount_root(mountpoint)?;
    let at = identify(fd.as_fd())?;
    if at != own {
        return Ok(OwnUnmount::NotOurs(at));
    }
    unmount_checked(mountpoint, fd, lazy)?;
    Ok(OwnUnmount::Detached)
}

/// `FUSE_NOTIFY_RESEND` (Linux 6.9+): the kernel queues again every request of the
/// connection `conn` that was read but not answered (by a daemon that died or exited
/// in between), so a new daemon answers them. Older kernels refuse it (EINVAL): the
/// readers of those requests then wait until they are killed.
pub(crate) fn notify_resend(conn: BorrowedFd) -> io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    // struct fuse_out_header { u32 len; i32 error (the notify code); u64 unique (0) }.
    let mut msg = [0u8; 16];
    msg[0..4].copy_from_slice(&16u32.to_ne_bytes());
    msg[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    loop {
        match rustix::io::write(conn, &msg) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
