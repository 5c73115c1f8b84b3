//! The fd holder (`ishare fd-holder`): a small process that keeps the node daemon's
//! FUSE connections (`/dev/fuse` descriptors) open, so that the mounts outlive the
//! daemon (a restart, an upgrade, `kill -9`), and hands them to the next daemon.
//!
//! # Contract
//!
//! * One holder per daemon socket, listening on `SOCKET.holder` (`SOCK_SEQPACKET`, mode
//!   0600; peers other than root and the holder's own user are refused, checked with
//!   `SO_PEERCRED`); one holder per socket (`flock` of `SOCKET.holder.lock`).
//! * The daemon starts it at its first FUSE mount ([`HolderClient::put`]); it runs in
//!   a session of its own, single-threaded, with nothing open but its sockets and the
//!   descriptors it holds, so a signal to the daemon's process group or `kill -9` of
//!   the daemon leaves it running.
//! * It keeps, per mount, a duplicate of the connection and the mount's record
//!   ([`HeldMount`]: image, mount point, options, the domain id, what the kernel's INIT
//!   offered): in memory only, never in an argument vector, a file or a log.
//! * An entry goes when the daemon says so (the mount ended) or when its connection
//!   ends (`POLLERR`/`POLLHUP`: someone unmounted it). A daemon that serves the held
//!   mounts says so ([`HolderClient`] sends `Serving` on its registrations
//!   connection); while one is connected, the holder looks at the connections only
//!   without sleeping on them (a sleeping `poll` would be woken by every request the
//!   kernel queues on them), after each wake-up; with none, it watches them. With no
//!   entry and no client left, the holder exits: it never outlives the last mount.
//! * [`HolderClient::take`] gives a starting daemon every held mount, each with a
//!   duplicate of its connection; the holder keeps its own until told otherwise.

mod client;
mod process;
mod wire;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) use client::HolderClient;
pub use process::run_fd_holder;

/// The holder's socket for the daemon socket `daemon_socket`.
pub fn holder_socket(daemon_socket: &Path) -> PathBuf {
    let mut p = daemon_socket.as_os_str().to_owned();
    p.push(".holder");
    PathBuf::from(p)
}

/// One held mount: what a new daemon needs to serve its connection again.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldMount {
    /// The image (absolute).
    pub(crate) image: PathBuf,
    /// The mount point (canonical).
    pub(crate) mountpoint: PathBuf,
    /// The `-o` lists of the mount request, as given.
    pub(crate) options: Vec<String>,
    /// The requester's domain id (hex) from its environment, if any.
    pub(crate) domain: Option<String>,
    /// The connection's device number and the mount id (which mount is ours).
    pub(crate) dev: (u32, u32),
    /// The mount id.
    pub(crate) mount_id: u64,
    /// The kernel's FUSE protocol version at INIT.
    pub(crate) abi: (u32, u32),
    /// The capabilities the kernel offered at INIT.
    pub(crate) capabilities: u64,
    /// The kernel's maximum readahead at INIT.
    pub(crate) max_readahead: u32,
    /// FUSE passthrough was negotiated (and works) on the connection.
    pub(crate) passthrough: bool,
    /// How many daemons served the connection before (file handles of each carry it, so
    /// a handle of an earlier daemon is never taken for one of ours).
    pub(crate) generation: u64,
}

impl std::fmt::Debug for HeldMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldMount")
            .field("image", &self.image)
            .field("mountpoint", &self.mountpoint)
            .field("options", &self.options.len())
            .field("domain", &self.domain.as_ref().map(|_| "<secret>"))
            .field("mount_id", &self.mount_id)
            .field("generation", &self.generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_its_debug_hides_the_domain() {
        let m = HeldMount {
            image: "/i.erofs".into(),
            mountpoint: "/m".into(),
            options: vec!["inode_share".into()],
            domain: Some("73336372657421".into()),
            dev: (0, 77),
            mount_id: 1234,
            abi: (7, 41),
            capabilities: 1 << 41,
            max_readahead: 131_072,
            passthrough: true,
            generation: 2,
        };
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(serde_json::from_slice::<HeldMount>(&json).unwrap(), m);
        assert!(!format!("{m:?}").contains("73336372657421"));
        assert_eq!(
            holder_socket(Path::new("/run/ishare/daemon.sock")),
            Path::new("/run/ishare/daemon.sock.holder")
        );
    }
}
