//! `ishare snapshotter`: a containerd proxy snapshotter whose committed layers are
//! fingerprinted EROFS images mounted by the ishare node daemon with `inode_share`,
//! so the page cache of a file is shared across every image holding it.
//!
//! * `meta`: snapshot metadata in redb, with containerd's rules;
//! * `layer`: building a layer image and mounting it through the node daemon;
//! * `mounts`: the mounts containerd gets for a snapshot;
//! * `snapshotter`: the calls, on the metadata, the directories and the layers;
//! * `filter`: List's filters;
//! * `proto`, `service`, `server`: the gRPC API on a unix socket.

#![deny(missing_docs)]

mod error;
mod filter;
mod layer;
mod meta;
mod mounts;
pub mod proto;
mod server;
mod service;
mod snapshotter;

pub use error::{Error, Result};
pub use meta::{Kind, Record, Stamp};
pub use mounts::MountSpec;
pub use server::serve;
pub use service::Service;
pub use snapshotter::{Config, Info, Snapshotter};

/// Where the snapshotter keeps its state unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/ishare/snapshotter";
/// Where it listens unless told otherwise.
pub const DEFAULT_ADDRESS: &str = "/run/ishare/snapshotter.sock";
