use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use nix::errno::Errno;

use crate::dev_fuse::DevFuse;
use crate::passthrough::BackingId;

/// A raw communication channel to the FUSE kernel driver
#[derive(Debug, Clone)]
pub(crate) struct Channel(Arc<DevFuse>);

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Channel {
    /// Create a new communication channel to the kernel driver by mounting the
    /// given path. The kernel driver will delegate filesystem operations of
    /// the given path to the channel.
    pub(crate) fn new(device: Arc<DevFuse>) -> Self {
        Self(device)
    }

    /// Receives data up to the capacity of the given buffer (can block).
    fn receive(&self, buffer: &mut [u8]) -> nix::Result<usize> {
        nix::unistd::read(&self.0, buffer)
    }

    // ISHARE PATCH: spinning receive (see ISHARE-PATCH.md).
    /// Makes reads return EAGAIN instead of sleeping when `nonblocking`, or sleep
    /// otherwise. The flag belongs to the open file, which other processes holding
    /// the same descriptor share: a session sets it either way when it starts.
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> nix::Result<()> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&self.0, FcntlArg::F_GETFL)?);
        let flags = if nonblocking {
            flags | OFlag::O_NONBLOCK
        } else {
            flags - OFlag::O_NONBLOCK
        };
        fcntl(&self.0, FcntlArg::F_SETFL(flags)).map(drop)
    }

    /// Receives the next request into `buffer`, retrying on errors that are safe to
    /// retry (ENOENT: the request was interrupted; EINTR).
    ///
    /// On a channel made non-blocking, asks again (yielding the CPU between asks)
    /// for as long as `spin` says, then sleeps in `poll` until a request, or the end
    /// of the connection, is there. A blocking channel sleeps in `read` (EAGAIN,
    /// should another process sharing the descriptor have made it non-blocking,
    /// also sleeps in `poll`).
    pub(crate) fn receive_next(&self, buffer: &mut [u8], spin: &mut Spin) -> nix::Result<usize> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let start = std::time::Instant::now();
        let spin_for = spin.next();
        loop {
            match self.receive(buffer) {
                Ok(size) => {
                    spin.record(!spin_for.is_zero(), start.elapsed() < spin.time);
                    return Ok(size);
                }
                Err(Errno::ENOENT | Errno::EINTR) => {}
                Err(Errno::EAGAIN) if start.elapsed() < spin_for => std::thread::yield_now(),
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(err) => return Err(err),
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Returns a sender object for this channel. The sender object can be
    /// used to send to the channel. Multiple sender objects can be used
    /// and they can safely be sent to other threads.
    pub(crate) fn sender(&self) -> ChannelSender {
        // Since write/writev syscalls are threadsafe, we can simply create
        // a sender by using the same file and use it in other threads.
        ChannelSender(self.0.clone())
    }

    /// Clone the FUSE device fd using FUSE_DEV_IOC_CLONE ioctl.
    ///
    /// This creates a new fd that can read FUSE requests independently,
    /// enabling true parallel request processing. The kernel distributes
    /// requests across all cloned fds.
    ///
    /// Requires Linux 4.5+. Returns an error on older kernels or non-Linux.
    #[cfg(target_os = "linux")]
    pub(crate) fn clone_fd(&self) -> io::Result<Channel> {
        use std::os::fd::AsRawFd;

        let new_dev = DevFuse::open()?;

        let mut source_fd = self.0.as_raw_fd() as u32;
        // SAFETY: fuse_dev_ioc_clone is a valid ioctl for /dev/fuse
        unsafe {
            crate::ll::ioctl::fuse_dev_ioc_clone(new_dev.as_raw_fd(), &mut source_fd)?;
        }

        Ok(Channel::new(Arc::new(new_dev)))
    }
}

// ISHARE PATCH: spinning receive (see ISHARE-PATCH.md).
/// When an event loop thread spins for its next request (see
/// [`Channel::receive_next`]). A request that comes while the thread still asks
/// costs no wake-up of it: on a virtual machine whose idle CPUs halt, waking a
/// thread on another CPU takes several microseconds, paid on every round trip. But
/// a spin in vain is CPU taken from whatever else could run there (a process
/// between its opens, say), and its CPU looks busy to the scheduler meanwhile. So
/// the thread spins only while most requests come within `time` of the answer
/// before: a moving average (in 1/256) over the requests received spinning, as a
/// thread woken from its sleep cannot tell how long its request waited; one request
/// in 8 is received spinning anyway, to sample.
#[derive(Debug)]
pub(crate) struct Spin {
    time: std::time::Duration,
    soon_rate: u32,
    requests: u32,
}

impl Spin {
    /// Spins of up to `time` (zero: never).
    pub(crate) fn new(time: std::time::Duration) -> Spin {
        Spin {
            time,
            soon_rate: 0,
            requests: 0,
        }
    }

    /// How long to spin for the next request.
    fn next(&mut self) -> std::time::Duration {
        self.requests = self.requests.wrapping_add(1);
        if self.soon_rate >= 160 || self.requests % 8 == 0 {
            self.time
        } else {
            std::time::Duration::ZERO
        }
    }

    /// A request came, `soon` or not; counted when `spun` for.
    fn record(&mut self, spun: bool, soon: bool) {
        if spun {
            self.soon_rate = if soon {
                self.soon_rate + (256 - self.soon_rate) / 8
            } else {
                self.soon_rate - self.soon_rate / 8
            };
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ChannelSender(Arc<DevFuse>);

impl ChannelSender {
    pub(crate) fn send(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<()> {
        let rc = nix::sys::uio::writev(&self.0, bufs)?;
        // writev is atomic, so do not need to check how many bytes are written.
        // libfuse does not do it either
        // https://github.com/libfuse/libfuse/blob/6278995cca991978abd25ebb2c20ebd3fc9e8a13/lib/fuse_lowlevel.c#L267
        debug_assert_eq!(bufs.iter().map(|b| b.len()).sum::<usize>(), rc);
        Ok(())
    }

    pub(crate) fn open_backing(&self, fd: BorrowedFd<'_>) -> std::io::Result<BackingId> {
        BackingId::create(&self.0, fd)
    }

    pub(crate) unsafe fn wrap_backing(&self, id: u32) -> BackingId {
        unsafe { BackingId::wrap_raw(&self.0, id) }
    }
}
