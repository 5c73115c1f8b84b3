//! The test harness of the ishare workspace, shared by the integration tests of every crate.
//!
//! * [`containerd`]: a private containerd 2.1.9 with runc, `ishare snapshotter`, OCI images
//!   built with umoci, container page cache charges;
//! * [`tools`]: the external tools the oracle tests compare against (erofs-utils 1.9.4 and
//!   1.5, host programs), the cache directory, running commands, the root check;
//! * [`mounts`]: tmpfs, kernel EROFS (file-backed or loop), bind and FUSE mounts, each
//!   unmounted on drop;
//! * [`tree`]: ONE generator of source trees, with profiles (the every-name/every-size tree,
//!   the builder's block-size tree, the reader's small tree, compressible trees, the minbase
//!   root filesystem);
//! * [`mod@snapshot`]: ONE snapshot of a directory tree and its comparison (plus file hashes
//!   and walks);
//! * [`image`]: byte-level patching of EROFS images (fields, superblock checksum), seed
//!   images built once from a tree, reads checked against the file size;
//! * [`pagecache`]: page cache charged to the test's memory cgroup, reads by read(2),
//!   mmap and sendfile;
//! * [`rng`]: the seeded pseudo-random generator;
//! * [`vm`]: the Linux 7.2 VM harness (QEMU, busybox initramfs);
//! * [`watchdog`]: bounded runs of code that may panic or hang.
//!
//! Contract: a missing tool or piece of the environment is a test failure naming
//! `scripts/install-deps.sh`, never a skip. Everything that mounts, chowns, mknods or sets
//! `trusted.` xattrs needs root and says so ([`tools::require_root`]).

pub mod containerd;
pub mod faultfs;
pub mod image;
pub mod mounts;
pub mod pagecache;
pub mod rng;
pub mod snapshot;
pub mod tools;
pub mod tree;
pub mod vm;
pub mod watchdog;

pub use mounts::{BindMount, ErofsMount, LoopMount, Tmpfs};
pub use rng::Rng;
pub use snapshot::{CompareOpts, Entry, Kind, Tree, assert_trees_eq, diff, snapshot};
pub use tools::{require_root, run, run_unchecked, tail};
