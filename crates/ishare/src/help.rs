//! The long help of each command: what `ishare CMD --help` prints after the options
//! (EXAMPLES and EXIT STATUS), and the man pages' sections of the same names
//! (`generate.rs` reads them back from the clap definitions, so the two cannot
//! differ). The short `-h` leaves them out.
//!
//! Layout, which `generate.rs` parses into man page sections of the same names: an
//! `Examples:` block of pairs, what it does (two spaces in) then the command (four
//! spaces in); an `Exit status:` block (required) and optional `Environment:` and
//! `Files:` blocks of `  TERM  meaning` lines (two spaces between).

/// ishare(1)'s DESCRIPTION: what the program is for (each subcommand's page says how).
pub const ISHARE: &str = "\
ishare builds EROFS images whose files carry content fingerprints \
(mkfs.erofs-compatible), reads and checks any EROFS image, and mounts images over \
FUSE so that identical files across images share one copy in the page cache, on \
kernels without Linux 7.0's inode_share. A node daemon serves every mount of the \
host, and a containerd proxy snapshotter turns container layers into such images.

Each subcommand has its own page (ishare-mkfs(1), ishare-mount(8), ...), and its own \
--help.";

pub const ISHARE_AFTER: &str = "\
Examples:
  Build an image with fingerprints:
    ishare mkfs -zlz4 app.erofs rootfs/
  Mount it, sharing page cache with other images (domain id in a root-only file):
    ishare mount -o inode_share,domain_id_file=/etc/ishare/domain-id \\
      app.erofs /mnt/app
  Check what this host supports:
    ishare doctor

Exit status:
  0  success
  1  failure (the error is printed on standard error)
  2  the command line is wrong

Environment:
  ISHARE_DOMAIN_ID  the sharing domain id, for mount and snapshotter (never on a command line)
  ISHARE_SOCKET  the node daemon's control socket (default /run/ishare/daemon.sock)
  ISHARE_LOG  how much the daemons log: warn, info (default), debug or trace

Files:
  /etc/default/ishare  the units' settings (the Debian package)
  /etc/ishare/domain-id  the domain id the snapshotter unit reads (root-only, mode 0600)
  /run/ishare/daemon.sock  the node daemon's control socket
  /var/cache/ishare/store  the object store of shared mounts";

pub const DUMP: &str = "\
Examples:
  Show the superblock and statistics:
    ishare dump -s -S app.erofs
  Show one file's inode, then print its contents:
    ishare dump --path=/etc/os-release app.erofs
    ishare dump --cat --path=/etc/os-release app.erofs

Exit status:
  0  success
  1  the image cannot be read, or the inode asked for does not exist
  2  the command line is wrong";

pub const EXTRACT: &str = "\
Examples:
  Recreate the tree of an image in out/:
    ishare extract app.erofs out/

Exit status:
  0  success
  1  the image cannot be read, DIR is not empty (without --overwrite), or a file \
cannot be written
  2  the command line is wrong";

pub const FSCK: &str = "\
Examples:
  Check an image and every file's fingerprint:
    ishare fsck --xattr-inode-digest app.erofs

Exit status:
  0  the image is consistent
  1  the image is corrupt or cannot be read (each problem is printed)
  2  the command line is wrong";

pub const REPORT: &str = "\
Examples:
  What two images would share, drawn into an SVG picture too:
    ishare report --svg share.svg a.erofs b.erofs
  The same as JSON, for scripts:
    ishare report --json a.erofs b.erofs

Exit status:
  0  success
  1  an image cannot be read
  2  the command line is wrong";

pub const MKFS: &str = "\
Examples:
  Build an LZ4-compressed image from a directory:
    ishare mkfs -zlz4 app.erofs rootfs/
  Build from a tar on standard input, with fixed timestamps:
    ishare mkfs --tar=f -T0 app.erofs < layer.tar

Exit status:
  0  success
  1  the image could not be built or the options are wrong";

pub const MOUNT: &str = "\
Examples:
  Mount with page cache sharing, the domain id in a root-only file:
    ishare mount -o inode_share,domain_id_file=/etc/ishare/domain-id \\
      app.erofs /mnt/app
  The same through mount(8):
    mount -t fuse.ishare app.erofs /mnt/app \\
      -o inode_share,domain_id_file=/etc/ishare/domain-id
  Mount without sharing, served in the foreground (Ctrl-C unmounts):
    ishare mount -f app.erofs /mnt/app

Exit status:
  0  the mount is ready
  1  the mount failed (the daemon's error is printed)
  2  the command line is wrong
  32  as mount.fuse.ishare: the helper's command line is wrong (mount(8)'s mount failure)

Environment:
  ISHARE_DOMAIN_ID  the sharing domain id when no domain_id_file= or domain_id= is given
  ISHARE_SOCKET  the node daemon's control socket (as --socket)
  ISHARE_LOG  how much a started daemon logs: warn, info (default), debug or trace";

pub const UMOUNT: &str = "\
Examples:
  Unmount and wait for the daemon to finish:
    ishare umount /mnt/app

Exit status:
  0  unmounted (and its daemon of its own, if any, has exited)
  1  not unmounted, or the mount's daemon still runs after --timeout
  2  the command line is wrong";

pub const MOUNTS: &str = "\
Examples:
  List the node daemon's mounts:
    ishare mounts

Exit status:
  0  success, also when no node daemon runs (it says so; --json gives \"daemon\": null)
  1  the daemon cannot be asked (e.g. no permission on the socket) or its answer is wrong
  2  the command line is wrong";

pub const DAEMON: &str = "\
Examples:
  Run the node daemon (as ishare.service does):
    ishare daemon --socket /run/ishare/daemon.sock

Exit status:
  0  stopped by SIGTERM, SIGINT or SIGHUP (every mount it served detached)
  1  the daemon could not start (e.g. the socket is taken) or failed
  2  the command line is wrong

Environment:
  ISHARE_SOCKET  the control socket (as --socket)
  ISHARE_LOG  how much it logs: warn, info (default), debug or trace

Files:
  /run/ishare/daemon.sock  the control socket (its directory must be the daemon's alone)
  /etc/default/ishare  ishare.service's settings (the Debian package)";

pub const STORE: &str = "\
Examples:
  Show the object store:
    ishare store stat
  Shrink it to 10 GiB, least recently used objects first:
    ishare store gc --max-size 10G

Exit status:
  0  success
  1  the store cannot be read or changed
  2  the command line is wrong";

pub const STORE_STAT: &str = "\
Examples:
  Show the object store, as JSON:
    ishare store stat --json

Exit status:
  0  success
  1  the store cannot be read
  2  the command line is wrong";

pub const STORE_GC: &str = "\
Examples:
  What a collection would remove:
    ishare store gc --dry-run
  Remove every object no mount uses:
    ishare store gc

Exit status:
  0  success
  1  the store cannot be read or changed
  2  the command line is wrong";

pub const SNAPSHOTTER: &str = "\
Examples:
  Serve containerd's snapshots API (as ishare-snapshotter.service does):
    ishare snapshotter --domain-id-file /etc/ishare/domain-id

Exit status:
  0  stopped by SIGTERM or SIGINT
  1  the snapshotter could not start (no domain id, the socket is taken) or failed
  2  the command line is wrong

Environment:
  ISHARE_DOMAIN_ID  the sharing domain id (else --domain-id-file)
  ISHARE_SOCKET  the node daemon's control socket (as --socket)
  ISHARE_LOG  how much it logs: warn, info (default), debug or trace

Files:
  /etc/ishare/domain-id  the domain id ishare-snapshotter.service reads
  /var/lib/ishare/snapshotter  its metadata, layer images and mounts (--root)
  /run/ishare/snapshotter.sock  the socket containerd talks to (--address)
  /etc/default/ishare  ishare-snapshotter.service's settings (the Debian package)";

pub const DOCTOR: &str = "\
Examples:
  Tell what this host supports, as JSON:
    ishare doctor --json

Exit status:
  0  everything ishare mount needs is there
  1  something ishare mount needs is missing (see the lines marked no)
  2  the command line is wrong";
