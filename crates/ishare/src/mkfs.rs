//! `ishare mkfs`: build an EROFS image, uncompressed or compressed (`-z`), from a
//! directory or a tar archive, with page-cache-share fingerprints on by default.
//! Options are named as mkfs.erofs's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ishare_builder::{
    BuildOptions, Compression, DEFAULT_FINGERPRINT_NAME, ExtendedOptions, TarInput, TimePolicy,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Block size in bytes: 512, 1024, 2048 or 4096.
    #[arg(short = 'b', value_name = "SIZE", default_value_t = 4096)]
    block_size: u32,
    /// Fixed timestamp (seconds since the epoch) for every inode and the build time.
    #[arg(short = 'T', value_name = "SECONDS")]
    timestamp: Option<u64>,
    /// Use -T (or SOURCE_DATE_EPOCH) as the build time only; inodes keep their mtimes.
    #[arg(long)]
    mkfs_time: bool,
    /// Volume UUID, or `clear` (all zeros) or `random` (the default).
    #[arg(short = 'U', value_name = "UUID")]
    uuid: Option<String>,
    /// Volume label (at most 15 bytes).
    #[arg(short = 'L', value_name = "LABEL")]
    label: Option<OsString>,
    /// Make every inode owned by root (uid and gid 0).
    #[arg(long)]
    all_root: bool,
    /// Owner of every inode.
    #[arg(long, value_name = "UID")]
    force_uid: Option<u32>,
    /// Group of every inode.
    #[arg(long, value_name = "GID")]
    force_gid: Option<u32>,
    /// Leave out this path (relative to SOURCE) and everything below it; repeatable.
    #[arg(long, value_name = "PATH")]
    exclude_path: Vec<OsString>,
    /// Leave out paths (relative to SOURCE) matching this regular expression; repeatable.
    #[arg(long, value_name = "REGEX")]
    exclude_regex: Vec<String>,
    /// Add a long xattr name prefix; repeatable.
    #[arg(long, value_name = "PREFIX")]
    xattr_prefix: Vec<OsString>,
    /// Xattr tolerance: negative = no xattrs from the source; otherwise an xattr
    /// carried by more than N inodes is stored once as a shared xattr (default 2).
    #[arg(short = 'x', value_name = "N", allow_negative_numbers = true)]
    xattr_tolerance: Option<i64>,
    /// Store regular files as chunks of SIZE bytes (a power of two, at least the block size).
    #[arg(long, value_name = "SIZE")]
    chunksize: Option<u64>,
    /// Extended options, comma-separated (`^` negates): noinline_data,
    /// force-inode-compact, force-inode-extended, force-chunk-indexes,
    /// force-inode-blockmap, xattr-name-filter, nosbcrc, plain-xattr-prefixes;
    /// with -z: ztailpacking, legacy-compress, fragments[=SIZE], all-fragments,
    /// dedupe.
    #[arg(short = 'E', value_name = "OPTIONS")]
    extended: Vec<String>,
    /// Record each regular file's SHA-256 in xattr NAME (on by default).
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_FINGERPRINT_NAME)]
    xattr_inode_digest: Option<OsString>,
    /// Do not record fingerprints.
    #[arg(long, conflicts_with = "xattr_inode_digest")]
    no_xattr_inode_digest: bool,
    /// Threads for scanning, hashing and copying (0 = one per CPU).
    #[arg(long, value_name = "N", default_value_t = 0)]
    workers: usize,
    /// Print nothing on success.
    #[arg(long)]
    quiet: bool,
    /// SOURCE is a tar archive (`-` = standard input), uncompressed or compressed
    /// with gzip, zstd or xz (detected). MODE `f` (full image) is the only one.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true,
          default_missing_value = "f")]
    tar: Option<String>,
    /// With --tar: convert AUFS/OCI whiteouts as mkfs.erofs does (`.wh.NAME` to a
    /// 0:0 character device, `.wh..wh..opq` to trusted.overlay.opaque=y).
    #[arg(long, requires = "tar")]
    aufs: bool,
    /// Compress files: ALG[,LEVEL] or ALG[,level=N][,dictsize=N] with ALG one of
    /// lz4, lz4hc, lzma, deflate, zstd; a second algorithm after `:`.
    #[arg(short = 'z', value_name = "ALGORITHM")]
    compression: Option<String>,
    /// Largest physical cluster in bytes (a multiple of the block size; default one block).
    #[arg(short = 'C', value_name = "SIZE")]
    pcluster_size: Option<u32>,
    /// Largest decompressed extent in bytes.
    #[arg(long, value_name = "BYTES")]
    max_extent_bytes: Option<u64>,
    /// Per-file compression: lines of `PCLUSTER_SIZE [ALGORITHM_INDEX] REGEX` (first
    /// match on the path relative to SOURCE wins; size 0 = do not compress).
    #[arg(long, value_name = "FILE")]
    compress_hints: Option<PathBuf>,
    /// The image file to create.
    image: PathBuf,
    /// The source directory; with --tar, the tar archive or `-` for standard input.
    source: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let mut opts = options(&a)?;
    // A progress bar only for a person watching: on a terminal and not --quiet.
    if !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        opts.progress = Some(std::sync::Arc::new(Bar(indicatif::ProgressBar::hidden())));
    }
    let start = Instant::now();
    let r = match a.tar.as_deref() {
        None => ishare_builder::build(&a.source, &a.image, &opts),
        Some("f") => {
            let input = if a.source.as_os_str() == "-" {
                TarInput::Stdin
            } else {
                TarInput::Path(a.source.clone())
            };
            ishare_builder::build_tar(&input, &a.image, &opts)
        }
        Some(m) => {
            bail!("--tar={m}: only --tar=f (a full image holding the file data) is supported")
        }
    }
    .with_context(|| format!("building {}", a.image.display()))?;
    if !a.quiet {
        println!(
            "{}: {} inodes, {} blocks of {} bytes ({} bytes); {} files, {} bytes of data, {} fingerprints; {:.2}s",
            a.image.display(),
            r.inodes,
            r.blocks,
            opts.block_size,
            r.image_size,
            r.files,
            r.file_bytes,
            r.fingerprints,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The data pass's progress on standard error.
#[derive(Debug)]
struct Bar(indicatif::ProgressBar);

impl ishare_builder::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        self.0
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn options(a: &Args) -> Result<BuildOptions> {
    let mut o = BuildOptions {
        block_size: a.block_size,
        workers: a.workers,
        force_uid: a.force_uid,
        force_gid: a.force_gid,
        aufs: a.aufs,
        ..BuildOptions::default()
    };
    // -T beats SOURCE_DATE_EPOCH; without either the build time is now.
    let env_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(
            v.parse::<u64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH {v:?} is not a number of seconds"))?,
        ),
        Err(_) => None,
    };
    (o.build_time, o.time_policy) = match (a.timestamp, env_epoch) {
        (Some(t), _) => (t, TimePolicy::Fixed),
        (None, Some(t)) => (t, TimePolicy::Clamp),
        (None, None) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (now.as_secs(), TimePolicy::Keep)
        }
    };
    if a.mkfs_time {
        o.time_policy = TimePolicy::Keep;
    }
    o.uuid = match a.uuid.as_deref() {
        None | Some("random") => random_uuid()?,
        Some("clear") => [0; 16],
        Some(s) => parse_uuid(s).with_context(|| format!("-U {s}: not a UUID"))?,
    };
    if let Some(l) = &a.label {
        o.label = l.clone().into_vec();
    }
    if a.all_root {
        o.force_uid = Some(0);
        o.force_gid = Some(0);
    }
    o.exclude_paths = a
        .exclude_path
        .iter()
        .map(|p| p.clone().into_vec())
        .collect();
    o.exclude_regexes = a
        .exclude_regex
        .iter()
        .map(|r| regex::bytes::Regex::new(r).with_context(|| format!("--exclude-regex {r:?}")))
        .collect::<Result<_>>()?;
    o.xattr_prefixes = a
        .xattr_prefix
        .iter()
        .map(|p| p.clone().into_vec())
        .collect();
    if let Some(x) = a.xattr_tolerance {
        o.xattr_tolerance = x;
    }
    o.chunk_size = a.chunksize;
    o.fingerprint = if a.no_xattr_inode_digest {
        None
    } else {
        Some(
            a.xattr_inode_digest
                .clone()
                .map_or_else(|| DEFAULT_FINGERPRINT_NAME.into(), OsString::into_vec),
        )
    };
    let mut z = ExtendedOptions::default();
    for e in &a.extended {
        z.parse(&mut o, e)?;
    }
    match &a.compression {
        Some(spec) => {
            let mut c = Compression::parse(spec, o.block_size)?;
            c.pcluster_size = a.pcluster_size.unwrap_or(o.block_size);
            z.apply(&mut c);
            c.max_extent_bytes = a.max_extent_bytes;
            if let Some(h) = &a.compress_hints {
                let text = std::fs::read_to_string(h)
                    .with_context(|| format!("--compress-hints {}", h.display()))?;
                c.parse_hints(&text, &h.display().to_string())?;
            }
            o.compression = Some(c);
        }
        None if a.pcluster_size.is_some()
            || a.max_extent_bytes.is_some()
            || a.compress_hints.is_some() =>
        {
            bail!("-C, --max-extent-bytes and --compress-hints need compression (-z)")
        }
        None => z.check_uncompressed()?,
    }
    Ok(o)
}

fn random_uuid() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .context("reading /dev/urandom for a random UUID")?;
    u[6] = (u[6] & 0x0f) | 0x40; // version 4
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    Ok(u)
}

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    let dashes_ok = s.len() == 32
        || (s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'));
    if hex.len() != 32 || !dashes_ok {
        bail!("expected 32 hex digits, optionally as 8-4-4-4-12");
    }
    let mut u = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let p = std::str::from_utf8(pair)?;
        u[i] = u8::from_str_radix(p, 16).with_context(|| format!("{p:?} is not hex"))?;
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ishare_builder::InodeVersion;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<BuildOptions> {
        let cli = Cli::try_parse_from(std::iter::once("mkfs").chain(args.iter().copied()))?;
        options(&cli.args)
    }

    #[test]
    fn fingerprints_on_by_default() {
        let o = parse(&["img", "src"]).unwrap();
        assert_eq!(
            o.fingerprint.as_deref(),
            Some(DEFAULT_FINGERPRINT_NAME.as_bytes())
        );
        let o = parse(&["--xattr-inode-digest=trusted.fp", "img", "src"]).unwrap();
        assert_eq!(o.fingerprint.as_deref(), Some(&b"trusted.fp"[..]));
        let o = parse(&["--xattr-inode-digest", "img", "src"]).unwrap();
        assert_eq!(
            o.fingerprint.as_deref(),
            Some(DEFAULT_FINGERPRINT_NAME.as_bytes())
        );
        let o = parse(&["--no-xattr-inode-digest", "img", "src"]).unwrap();
        assert_eq!(o.fingerprint, None);
    }

    #[test]
    fn mkfs_erofs_spellings() {
        let o = parse(&[
            "-b512",
            "-T",
            "100",
            "-Uclear",
            "-Llabel",
            "-x",
            "-1",
            "-Enoinline_data,nosbcrc",
            "-E",
            "force-inode-extended,^xattr-name-filter",
            "--all-root",
            "img",
            "src",
        ])
        .unwrap();
        assert_eq!(o.block_size, 512);
        assert_eq!((o.build_time, o.time_policy), (100, TimePolicy::Fixed));
        assert_eq!(o.uuid, [0; 16]);
        assert_eq!(o.label, b"label");
        assert_eq!(o.xattr_tolerance, -1);
        assert!(!o.inline_data && !o.sb_checksum && !o.xattr_name_filter);
        assert_eq!(o.inode_version, InodeVersion::Extended);
        assert_eq!((o.force_uid, o.force_gid), (Some(0), Some(0)));
        let o = parse(&["-T100", "--mkfs-time", "img", "src"]).unwrap();
        assert_eq!((o.build_time, o.time_policy), (100, TimePolicy::Keep));
        // Fragments and dedupe are compression options.
        assert!(parse(&["-Efragments", "img", "src"]).is_err());
        assert!(parse(&["-Ededupe", "img", "src"]).is_err());
    }

    #[test]
    fn uuids() {
        let u = parse_uuid("01234567-89ab-cdef-0123-456789ABCDEF").unwrap();
        assert_eq!(u[0], 0x01);
        assert_eq!(u[15], 0xef);
        assert_eq!(parse_uuid("0123456789abcdef0123456789abcdef").unwrap(), u);
        for bad in [
            "",
            "0123",
            "01234567-89ab-cdef-0123-456789abcdeg",
            "0-123456789abcdef0123456789abcdef",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad}");
        }
        let r = random_uuid().unwrap();
        assert_eq!(r[6] >> 4, 4);
    }

    #[test]
    fn tar_options() {
        let cli = Cli::try_parse_from(["mkfs", "--tar=f", "--aufs", "img", "-"]).unwrap();
        assert_eq!(cli.args.tar.as_deref(), Some("f"));
        assert!(options(&cli.args).unwrap().aufs);
        let cli = Cli::try_parse_from(["mkfs", "--tar", "img", "x.tar"]).unwrap();
        assert_eq!(cli.args.tar.as_deref(), Some("f"));
        assert!(Cli::try_parse_from(["mkfs", "--aufs", "img", "dir"]).is_err());
        let cli = Cli::try_parse_from(["mkfs", "--tar=i", "img", "x.tar"]).unwrap();
        let e = run(cli.args).unwrap_err().to_string();
        assert!(e.contains("only --tar=f"), "{e}");
    }

    #[test]
    fn compression_options() {
        let o = parse(&["-zlz4hc,12", "-C65536", "-Eztailpacking", "img", "src"]).unwrap();
        let c = o.compression.unwrap();
        assert_eq!(c.algorithms[0].level, Some(12));
        assert_eq!(c.pcluster_size, 65536);
        assert!(c.ztailpacking && !c.legacy_indexes);
        let o = parse(&["-zlz4hc", "-Efragments=16k,dedupe", "img", "src"]).unwrap();
        let c = o.compression.unwrap();
        assert!(c.fragments && !c.all_fragments && c.dedupe);
        assert_eq!(c.packed_pcluster_size, Some(16384));
        let o = parse(&["-zlz4", "-Eall-fragments", "img", "src"]).unwrap();
        let c = o.compression.unwrap();
        assert!(c.fragments && c.all_fragments && !c.dedupe);
        for bad in [
            &["-zlz5", "img", "src"][..],
            &["-zlz4", "-Efragments=x", "img", "src"],
            &["-zlz4", "-Ededupe=1", "img", "src"],
            &["-zzstd,23", "img", "src"],
            &["-C65536", "img", "src"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
