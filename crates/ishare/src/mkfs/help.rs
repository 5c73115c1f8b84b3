//! What `-h` and `-V` print. Tools read both: containerd decides whether
//! `mkfs.erofs` can build from a tar by looking for `--tar=` in `--help`, and
//! version checks read the first line of `-V` as erofs-utils prints it, so under
//! the name `mkfs.erofs` that line names the erofs-utils release whose command
//! line this program implements.

use super::args::Flavor;

/// The erofs-utils release whose `mkfs.erofs` command line is implemented.
pub const COMPAT_VERSION: &str = "1.9.4";

/// The compressors `-z` takes.
const COMPRESSORS: &str = "lz4, lz4hc, lzma, deflate, libdeflate, zstd";

pub fn version(flavor: Flavor) -> String {
    let ours = env!("CARGO_PKG_VERSION");
    match flavor {
        Flavor::MkfsErofs => format!(
            "mkfs.erofs (erofs-utils) {COMPAT_VERSION}\navailable compressors: {COMPRESSORS}\n\
             (ishare {ours}: the mkfs.erofs command line of erofs-utils {COMPAT_VERSION})\n"
        ),
        Flavor::Ishare => format!(
            "ishare mkfs {ours} (the mkfs.erofs command line of erofs-utils {COMPAT_VERSION})\n\
             available compressors: {COMPRESSORS}\n"
        ),
    }
}

pub fn usage(program: &str, flavor: Flavor) -> String {
    let digest_default = match flavor {
        Flavor::Ishare => "on by default; --no-xattr-inode-digest turns it off",
        Flavor::MkfsErofs => "off unless given",
    };
    format!(
        "Usage: {program} [OPTIONS] FILE [SOURCE(s)]
Build an EROFS image FILE from a directory or a tar archive SOURCE
(with --tar and no SOURCE, the tar is read from standard input), or from
EROFS images SOURCE(s) (rebuild mode: their overlay, later ones on top; the
data stays in them, which become FILE's devices (for tar indexes, their tars),
unless --clean=data).

 -V, --version          print the version and exit
 -h, --help             print this help and exit
 -b#                    block size # (512, 1024, 2048 or 4096; default 4096)
 -d<0-9>                verbosity: 0 = quiet, 9 = most (default 2)
 -x#                    xattr tolerance: < 0 = no xattrs; an xattr carried by
                        more than # inodes is shared (default 2)
 -zX[,level=Y][,dictsize=Z][:...]
                        compress with X = lz4, lz4hc, lzma, deflate,
                        libdeflate (levels 0-12) or zstd; a second algorithm
                        after ':'; lzma also takes lc=#, lp=#, pb=# (literal
                        context, literal position and position bits)
 -C#                    largest physical cluster, in bytes
 -EX[,...]              extended options: noinline_data, force-inode-compact,
                        force-inode-extended, force-chunk-indexes,
                        force-inode-blockmap, xattr-name-filter, nosbcrc,
                        plain-xattr-prefixes, ztailpacking, legacy-compress,
                        fragments[=SIZE], all-fragments, dedupe, fragdedupe[=inode],
                        48bit, dot-omitted ('^' negates)
 -L label               volume label (at most 15 bytes)
 -m#[:X]                metadata compression: inodes go into the metabox inode,
                        compressed in #-byte pclusters (with -z, or with X, an
                        index into -z's list or an algorithm name)
 -T#                    fixed UNIX timestamp # as the build time
    --all-time          ... and every file's mtime (the default)
    --mkfs-time         ... as the build time only
 -UX                    filesystem UUID X, 'clear' or 'random'
 --all-root             make every file owned by root
 --async-queue-limit=#  accepted; ishare's pipeline has no job queue to bound
 --blobdev=X            store the chunks of chunk-based files on device X
 --chunksize=#          chunk-based files with #-byte chunks (equal chunks
                        stored once, chunks of zeros as holes)
 --clean=X              rebuild mode, X = data (copy the data into FILE) or
                        rvsp (reserve room for it); by default it stays in the
                        SOURCE images
 --incremental=X        rebuild mode: add the SOURCE images to FILE, in place
                        after its blocks; X = data or rvsp as with --clean
 --compress-hints=X     per-file compression settings from file X
 --dsunit=#             align the start of each file's data to # blocks
 --exclude-path=X       leave out the file X (an exact path)
 --exclude-regex=X      leave out files matching the regular expression X
 --file-contexts=X      label files with SELinux contexts from file_contexts X
                        (directory SOURCE; paths under --mount-point)
 --force-uid=#          every file's uid is #
 --force-gid=#          every file's gid is #
 --fsalignblks=#        round the image's size up to a multiple of # blocks
 --uid-offset=#         add # to every file's uid
 --gid-offset=#         add # to every file's gid
 --hard-dereference     store hard links as separate inodes
 --ignore-mtime         files whose mtime is not the build time get it when
                        that lets their inode be compact
 --preserve-mtime       keep every file's mtime (the default)
 --max-extent-bytes=#   largest decompressed extent, in bytes
 --zD[=<0|1>]           compress directories (0: off, 1 or no value: on;
                        needs -z)
 --MZ[=<0|[id]>]        put inodes ('i') and/or directory blocks ('d') into a
                        metadata zone after the data (no value: both)
 --mount-point=X        where the image will be mounted: the prefix of the
                        paths --file-contexts looks up (default: /)
 --oci[=f|i][,platform=X][,layer=#|blob=X]
                        SOURCE is a local OCI image layout (directory or tar
                        archive, optionally :REF): its layers applied in order,
                        whiteouts resolved; i = a tar index of one plain layer;
                        registries are not supported
 --offset=#             write the image # bytes into FILE
 --ovlfs-strip=<0,1>    rebuild mode: drop overlayfs whiteouts and opaque
                        marks (1) or keep them (0, the default)
 --root-xattr-isize=#   reserve at least # bytes of inline xattrs in the root
 --aufs                 turn AUFS whiteouts in a tar into overlayfs ones
 --sort=<path,none>     order of tar data (path: by path; none: as in the tar)
 --vmdk-desc=X          write a VMDK descriptor X joining the image and its
                        tar (--tar=i) into one virtual disk
 --tar=X[,MAP]          build from a tar: X = f (full image), i (index: the
                        image refers to the tar's data, which is appended to the
                        image or given as a device) or headerball (the stream
                        holds headers only; files read as zeros); with i,MAP the
                        files' data gets whole image blocks, listed in MAP with
                        their tar offsets
 --quiet                print nothing on success
 --gzinfo[=X]           write the gzip tar's random-access checkpoints to X as an
                        AWS SOCI zinfo; --tar=i may then index a gzip tar
 --ungzip[=X]           the tar may be gzip-compressed (detected anyway); keep
                        the decompressed tar as X
 --unxz[=X]             the tar may be xz-compressed (detected anyway); keep
                        the decompressed tar as X
 --workers=#            threads (default: one per CPU)
 --xattr-inode-digest[=X]
                        record each file's SHA-256 in xattr X
                        (\"erofs.fingerprint.v1\" if omitted); {digest_default}
 --no-xattr-inode-digest
                        do not record digests (ishare's own option)
 --xattr-prefix=X       an extra long xattr name prefix X
 --zfeature-bits=#      set the compression features by bits: legacy-compress,
                        ztailpacking, fragments, all-fragments, dedupe, ...

Refused with a clear error (not implemented by ishare yet): -E48bit or
-Edot-omitted with -z or -m; --chunksize or --blobdev in rebuild mode or with a
--tar=MODE,MAP block map; --blobdev with --tar=i, headerball or --oci=i; -m with
--tar=i;
--s3 and remote --oci images (network services) are not supported.
"
    )
}
