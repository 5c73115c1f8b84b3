//! The node daemon (`ishare daemon`): one process serving every mount of a host, each
//! as a FUSE session of its own, with one sharing state per (store, domain, verify),
//! driven over a root-only control socket.
//!
//! * `protocol`: the requests and replies on the socket (JSON lines);
//! * `table`: the live mounts, their sessions and the pooled sharing states;
//! * `server`: the daemon process: the socket, peer checks, signals;
//! * `client`: asking the daemon, and starting it when none runs.

mod client;
mod protocol;
mod server;
mod table;

pub use client::{DEFAULT_SOCKET, list, mount_via_daemon, request, start};
pub use protocol::{MountInfo, Reply, Request};
pub use server::{NodeConfig, run_node};
