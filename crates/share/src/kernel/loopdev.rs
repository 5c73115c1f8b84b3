//! Loop devices for kernel mounts (FFI: the loop driver's ioctls, which neither rustix
//! nor libc wraps).
//!
//! Why a loop device and not a file-backed EROFS mount: Linux 7.2 refuses file-backed
//! mounts of files on tmpfs ("Block device required"), and a block device works
//! everywhere. The device is configured in one `LOOP_CONFIGURE` (Linux 5.8+):
//!
//! * read-only;
//! * `LO_FLAGS_AUTOCLEAR`: the kernel detaches the device when its last user closes it,
//!   so once the mount holds it and we close our descriptor, unmounting (by anyone,
//!   `umount(8)` included) frees the device; nothing is left to clean up;
//! * `LO_FLAGS_DIRECT_IO` where the image's filesystem takes it: the image file's own
//!   page cache stays empty, so its data is cached once (by EROFS), not twice;
//! * `lo_file_name` set to [`MARKER`] and the tag of the daemon that mounted it, which
//!   `LOOP_GET_STATUS64` returns: how `ishare umount` tells ishare's kernel mounts from
//!   other EROFS mounts, and a restarted daemon finds its own.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// What `lo_file_name` of our loop devices says.
pub(crate) const MARKER: &[u8] = b"ishare kernel mode";

const LOOP_CTL_GET_FREE: u32 = 0x4C82;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_GET_STATUS64: u32 = 0x4C05;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// `ioctl(fd, request, arg)`, its result or errno.
#[allow(unsafe_code)]
fn ioctl<T>(fd: impl AsFd, request: u32, arg: *mut T) -> io::Result<i32> {
    // SAFETY: the requests used here take a pointer to the repr(C) struct their
    // `<linux/loop.h>` definition names (or no argument: LOOP_CTL_GET_FREE ignores it),
    // and `arg` points to one that lives across the call.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), request as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A loop device attached to an image file (see the module documentation). Dropping it
/// closes our descriptor: with autoclear the device goes once nothing else holds it.
#[derive(Debug)]
pub(crate) struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// Direct I/O to the image file is on.
    pub direct_io: bool,
    _fd: OwnedFd,
}

/// Attaches `backing` (open read-only) to a free loop device, read-only, autoclear,
/// marked with [`MARKER`], a space and `tag` (cut to fit).
pub(crate) fn attach(backing: &File, tag: &[u8]) -> io::Result<LoopDevice> {
    let mut name = [0u8; LO_NAME_SIZE];
    let marker: Vec<u8> = [MARKER, b" ", tag].concat();
    // The last byte stays NUL.
    let n = marker.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&marker[..n]);
    let ctl = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("/dev/loop-control: {e}")))?;
    // Another process may take the device we were offered before we configure it.
    for _ in 0..32 {
        let n = ioctl(&ctl, LOOP_CTL_GET_FREE, std::ptr::null_mut::<u8>())
            .map_err(|e| io::Error::new(e.kind(), format!("no free loop device: {e}")))?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("{}: {e}", path.display()),
                )
            })?;
        let mut flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        loop {
            let mut info = LoopInfo64::zeroed();
            info.lo_flags = flags;
            info.lo_file_name = name;
            let mut cfg = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            match ioctl(&dev, LOOP_CONFIGURE, &mut cfg) {
                Ok(_) => {
                    return Ok(LoopDevice {
                        path,
                        direct_io: flags & LO_FLAGS_DIRECT_IO != 0,
                        _fd: dev,
                    });
                }
                // The image's filesystem takes no direct I/O: buffered, then.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && flags & LO_FLAGS_DIRECT_IO != 0 =>
                {
                    flags &= !LO_FLAGS_DIRECT_IO;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: configuring it failed: {e}", path.display()),
                    ));
                }
            }
        }
    }
    Err(io::Error::other(
        "every free loop device was taken by someone else first (32 tries)",
    ))
}

/// The loop device of block device number `dev`, if it is one: `/dev/loopN`.
pub(crate) fn device_path(dev: (u32, u32)) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    let name = link.file_name()?.to_str()?;
    name.strip_prefix("loop")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Path::new("/dev").join(name))
}

/// The tag of the loop device at `path` if ishare's kernel mode attached it (its
/// `lo_file_name` starts with [`MARKER`]); `None` for any other device.
pub(crate) fn tag_of(path: &Path) -> Option<Vec<u8>> {
    let dev = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut info = LoopInfo64::zeroed();
    ioctl(&dev, LOOP_GET_STATUS64, &mut info).ok()?;
    let name = &info.lo_file_name;
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let rest = name[..len].strip_prefix(MARKER)?;
    match rest {
        [] => Some(Vec::new()),
        [b' ', tag @ ..] => Some(tag.to_vec()),
        _ => None,
    }
}

/// The file a loop device reads (`/sys/block/loopN/loop/backing_file`).
pub(crate) fn backing_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}
