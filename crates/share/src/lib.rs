//! `ishare mount`: EROFS images served over FUSE, read-only, with the page cache of
//! identical files shared across images as Linux 7.0's `inode_share` does, on any
//! kernel with FUSE (passthrough from 6.9).
//!
//! # Semantics (the kernel's)
//!
//! With `-o inode_share,domain_id=ID` (both required, as in the kernel), a regular file
//! whose fingerprint xattr value is 1 byte to one block long reads its data from one
//! object per key (domain, fingerprint value); everything else (stat, xattrs, nlink,
//! times, inode numbers, directories, symlinks, devices) stays per image, exactly as a
//! kernel mount shows it. An image without `COMPAT_ISHARE_XATTRS` mounts unshared with
//! a notice. A file whose key already has an object of another size is not shared
//! (warning).
//!
//! # Beyond the kernel
//!
//! * `verify=on` (default): a `sha256:` fingerprint is checked against the file's own
//!   content before the file is shared, both when its object is created and when an
//!   existing object is used, so an image lying about a fingerprint reads its own bytes
//!   (warning naming image and path) and never poisons other images. Fingerprints that
//!   are not `sha256:` cannot be checked and are not shared under `verify=on`. Objects
//!   created with `verify=off` live under other names and are never used by
//!   `verify=on` mounts.
//! * The domain id is a secret: store paths derive from a keyed hash of it (see
//!   `store`); it is in no log line, mount option or daemon command line.
//! * Image file data is read with `O_DIRECT` (see `direct`), so neither sharing nor
//!   unshared reads leave a second cached copy under the image file.
//!
//! # How data reaches readers
//!
//! Shared files' objects are materialized on first open (copied from the image and
//! hashed, then published atomically; see `store`). Then:
//!
//! * with kernel FUSE passthrough (CAP_SYS_ADMIN, Linux 6.9+; `passthrough=auto|on`),
//!   the open passes through to the object file: read, mmap, splice/sendfile all use
//!   the object's page cache, shared by every mount of the domain;
//! * without it (`passthrough=off`, or not available), the file is opened `direct_io`
//!   and the daemon reads the object (buffered): read(2) shares the object's cache;
//!   mmap and splice fill the mount's own FUSE cache (not shared).
//!
//! Unshared files are read from the image and cached by FUSE (`keep_cache`).
//!
//! # The public face
//!
//! What a command line, a node daemon or a snapshotter needs, at the crate root:
//!
//! * mounting: [`MountOptions`] (parsed from `-o` lists by [`MountOptions::parse`]),
//!   [`mount()`] (returns a [`Mounted`] to [`Mounted::run`]), and the daemon process
//!   around it: [`run_foreground`], [`launch_detached`] and [`run_detached`];
//!   [`unmount`];
//! * the node daemon: [`run_node`], and its clients' side: [`mount_via_daemon`],
//!   [`list_mounts`], [`request`];
//! * the store: [`inventory`] (`ishare store stat`) and [`gc`] (`ishare store gc`);
//! * the host: [`examine_host`] (`ishare doctor`);
//! * one [`Error`] type for all of it.
//!
//! Everything else is private to the crate.
//!
//! # Modules (lower ones first; none imports one listed after it)
//!
//! * `error`: the error type;
//! * `options`: the `-o` options;
//! * `units`: byte counts for people;
//! * `mountinfo`: `/proc/self/mountinfo`, read in one place;
//! * `logger`: the daemon's log;
//! * `malloc`: glibc malloc tuning for the daemons (FFI: `unsafe`, as only
//!   `kernel::loopdev` besides);
//! * `direct`: reading image data past the page cache;
//! * `stats`: a mount's sharing counters;
//! * `store`: the per-domain content-addressed object store, with `stat` and `gc`;
//! * `content`: copying and hashing a file's content, `sha256:` fingerprints;
//! * `publish`: checking and publishing prepared objects in the background;
//! * `sharing`: which files share and preparing their objects (with verification);
//! * `fs`: the FUSE filesystem;
//! * `fusemount`: the FUSE mount itself (made by us, not fuser), its identity, and
//!   unmounting only our own mount;
//! * `registry`: which daemon serves which mount (for `ishare umount` to wait);
//! * `mount`: mounting an image and the mode decision;
//! * `kernel`: kernel mode (verified images mounted by the kernel's EROFS with
//!   `inode_share`), the running kernel's configuration, loop devices;
//! * `umount`: unmounting;
//! * `daemon`: a mount daemon of its own as a process (foreground, or detached with
//!   a launcher), signals;
//! * `node`: the node daemon serving every mount in one process, its control socket
//!   and its client;
//! * `doctor`: `ishare doctor`, what the host supports;
//! * `report`: `ishare report`, what a set of images would share (public: a
//!   library of its own, sans-IO but for reading the images).

mod burst;
mod content;
mod daemon;
mod direct;
mod doctor;
mod error;
mod fs;
mod fusemount;
mod holder;
mod kernel;
mod logger;
mod malloc;
mod mount;
mod mountinfo;
mod node;
mod options;
mod publish;
mod registry;
pub mod report;
mod sharing;
mod stats;
mod store;
mod umount;
mod units;
mod wakeup;

pub use daemon::{launch_detached, run_detached, run_foreground};
pub use doctor::{
    CheckStatus, ErofsSupport, FuseSupport, HostCheck, HostReport, MountMode, PassthroughSupport,
    StoreCheck, examine_host,
};
pub use error::{Error, Result};
pub use holder::{holder_socket, run_fd_holder};
pub use logger::{
    detached_target as logger_target, init as init_logging, set_target as set_log_target,
};
pub use mount::{Mounted, ServeMode, Stopper, mount};
pub use node::{
    DEFAULT_SOCKET, MountInfo, NodeConfig, Reply, Request, list as list_mounts, mount_via_daemon,
    request, run_node, start as start_node,
};
pub use options::{
    DEFAULT_STORE, DOMAIN_ID_ENV, DomainId, MountBackend, MountOptions, Passthrough,
    command_line_domain_warning, domain_from_env, read_domain_id_file,
};
pub use store::gc::{GcOptions, GcReport, TMP_MIN_AGE, gc};
pub use store::safe::problem as store_path_problem;
pub use store::stat::{Counts, DomainStats, Inventory, inventory};
pub use umount::unmount;
pub use units::{human_bytes, parse_size};
