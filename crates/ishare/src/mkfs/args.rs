//! The command line of `ishare mkfs` and of `mkfs.erofs` (this program called by that
//! name): mkfs.erofs 1.9.4's syntax, parsed with getopt_long's rules.
//!
//! Why not clap, which the other subcommands use: tools run `mkfs.erofs` with
//! command lines written for erofs-utils, so what matters is accepting exactly what
//! getopt_long accepts and reading it the same way. clap gets close (attached short
//! values, `require_equals` for optional values, `infer_long_args` for
//! abbreviations) but differs where it counts: it refuses an option given twice
//! where getopt lets the last win (containerd's `-b4096` plus a user's own `-b`),
//! exits with status 2 where mkfs.erofs exits with 1, strips a leading `=` from an
//! attached short value (`-E=x` is the value `=x` to getopt), and its generated help
//! cannot be the option list that tools grep (containerd looks for `--tar=` in
//! `mkfs.erofs --help`). lexopt has the same `=` quirk. getopt's tokenization is a
//! few lines, so it is done here ([`Tokens`]), with the option table and these
//! rules: options and operands may mix (getopt permutes), `--` ends the options;
//! short options cluster and take an attached value or the next argument (even one
//! starting with `-`, as in `-x -1`); long options may be abbreviated to any
//! unambiguous prefix; an optional value is taken only when attached (`--tar=i`,
//! never `--tar i`); a long option's required value is attached or the next argument.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ishare_builder::parse_size;

/// Which program the user called: the defaults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `ishare mkfs`: fingerprints on by default.
    Ishare,
    /// `mkfs.erofs` (a link to this program): mkfs.erofs's defaults, fingerprints
    /// only with `--xattr-inode-digest`, so an image equals erofs-utils' in content.
    MkfsErofs,
}

/// `--tar=MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarMode {
    /// `f`: a full image holding the file data.
    Full,
    /// `i` (or `0`): an index whose regular files point into the tar itself.
    Index,
    /// `headerball`: the stream holds headers only; files become holes.
    Headerball,
}

/// `--oci[=f|i][,platform=X][,layer=N|blob=DIGEST]`: SOURCE is a local OCI image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciArgs {
    /// `i`: a tar index of one (uncompressed) layer instead of a full image.
    pub index: bool,
    /// `platform=OS/ARCH[/VARIANT]`.
    pub platform: Option<String>,
    /// `layer=N` or `blob=DIGEST`.
    pub layer: Option<ishare_builder::OciLayer>,
}

/// `--all-time` / `--mkfs-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeScope {
    /// The timestamp is also every inode's mtime (the default with `-T`).
    AllTime,
    /// The timestamp is the build time only.
    MkfsTime,
}

/// `--clean=X` / `--incremental=X`: what rebuild mode does with the layers' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataImport {
    /// `data` (or no value, or 1): copy it into the image.
    Full,
    /// `rvsp` (or 2): reserve its room in the image without writing it.
    Reserve,
    /// `0` (or 3): zero-filled data, which mkfs.erofs offers for S3 sources only.
    ZeroFill,
}

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// `-h` / `--help`.
    Help,
    /// `-V` / `--version`.
    Version,
    /// Build an image.
    Build(Box<Args>),
}

/// Everything a build was asked for.
#[derive(Debug, Clone)]
pub struct Args {
    pub flavor: Flavor,
    pub block_size: Option<u32>,
    /// `-d#`: 0 (quiet) to 9; 2 by default.
    pub debug_level: u8,
    pub xattr_tolerance: Option<i64>,
    pub compression: Option<String>,
    pub pcluster_size: Option<u32>,
    pub extended: Vec<String>,
    pub label: Option<OsString>,
    pub timestamp: Option<u64>,
    pub time_scope: Option<TimeScope>,
    pub uuid: Option<String>,
    pub all_root: bool,
    pub force_uid: Option<u32>,
    pub force_gid: Option<u32>,
    pub uid_offset: u32,
    pub gid_offset: u32,
    pub exclude_path: Vec<OsString>,
    pub exclude_regex: Vec<String>,
    pub xattr_prefix: Vec<OsString>,
    pub chunksize: Option<u64>,
    /// `--blobdev=X`: chunked data goes to the extra device X.
    pub blobdev: Option<PathBuf>,
    pub max_extent_bytes: Option<u64>,
    pub compress_hints: Option<PathBuf>,
    /// `-m#[:X]`: metadata compression (the metabox), parsed by the builder.
    pub metabox: Option<String>,
    /// `--MZ[=<0|[id]>]`: `Some(None)` without a value.
    pub metazone: Option<Option<String>>,
    /// `--zD[=0|1]`: compressed directories.
    pub compress_dirs: Option<bool>,
    pub quiet: bool,
    pub workers: usize,
    /// `--xattr-inode-digest[=NAME]`: `Some(None)` = the default name.
    pub fingerprint: Option<Option<OsString>>,
    pub no_fingerprint: bool,
    pub tar: Option<TarMode>,
    pub aufs: bool,
    /// `--sort=none`: keep the tar's data order (`path` is the default).
    pub sort_none: bool,
    /// `--ungzip[=X]` / `--unxz[=X]`: where to keep a copy of the decompressed tar.
    pub dump_tar: Option<PathBuf>,
    /// `--ignore-mtime` (true) / `--preserve-mtime` (false), the last one wins.
    pub ignore_mtime: bool,
    pub hard_dereference: bool,
    pub mount_point: Option<OsString>,
    /// `--file-contexts=X`: label directory entries from this SELinux file_contexts.
    pub file_contexts: Option<PathBuf>,
    pub async_queue_limit: Option<u64>,
    pub zfeature_bits: Option<i64>,
    pub root_xattr_isize: Option<u64>,
    pub offset: u64,
    pub fsalignblks: Option<u64>,
    pub dsunit: Option<u64>,
    /// `--ovlfs-strip[=0|1]` (rebuild mode).
    pub ovlfs_strip: bool,
    /// `--clean=X` / `--incremental=X`; `None` = the default (rebuild mode: the
    /// data stays in the layers).
    pub data_import: Option<DataImport>,
    /// `--incremental[=X]`: add to an existing image.
    pub incremental: bool,
    /// `--oci[=...]`.
    pub oci: Option<OciArgs>,
    /// `--vmdk-desc=X`: where to write a VMDK descriptor.
    pub vmdk_desc: Option<PathBuf>,
    /// `--tar=MODE,MAPFILE`: where to write the block map.
    pub tar_map: Option<PathBuf>,
    /// `--gzinfo[=X]`: where to write the gzip tar's SOCI zinfo (`Some(None)`: none).
    pub gzinfo: Option<Option<PathBuf>>,
    /// The image file.
    pub image: PathBuf,
    /// SOURCE(s): none (tar on standard input), a directory or a tar, or several
    /// EROFS images (rebuild mode).
    pub sources: Vec<PathBuf>,
}

impl Args {
    fn new(flavor: Flavor) -> Self {
        Self {
            flavor,
            block_size: None,
            debug_level: 2,
            xattr_tolerance: None,
            compression: None,
            pcluster_size: None,
            extended: Vec::new(),
            label: None,
            timestamp: None,
            time_scope: None,
            uuid: None,
            all_root: false,
            force_uid: None,
            force_gid: None,
            uid_offset: 0,
            gid_offset: 0,
            exclude_path: Vec::new(),
            exclude_regex: Vec::new(),
            xattr_prefix: Vec::new(),
            chunksize: None,
            blobdev: None,
            max_extent_bytes: None,
            compress_hints: None,
            metabox: None,
            metazone: None,
            compress_dirs: None,
            quiet: false,
            workers: 0,
            fingerprint: None,
            no_fingerprint: false,
            tar: None,
            aufs: false,
            sort_none: false,
            dump_tar: None,
            ignore_mtime: false,
            hard_dereference: false,
            mount_point: None,
            file_contexts: None,
            async_queue_limit: None,
            zfeature_bits: None,
            root_xattr_isize: None,
            offset: 0,
            fsalignblks: None,
            dsunit: None,
            ovlfs_strip: false,
            data_import: None,
            incremental: false,
            oci: None,
            vmdk_desc: None,
            gzinfo: None,
            tar_map: None,
            image: PathBuf::new(),
            sources: Vec::new(),
        }
    }
}

/// How a long option takes its value (getopt_long's `has_arg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Has {
    No,
    Required,
    /// Only attached: `--name=value`.
    Optional,
}

/// mkfs.erofs 1.9.4's long options (and `ishare mkfs`'s own), for prefix matching.
/// Names of one option (`gzip`/`ungzip`, `unlzma`/`unxz`) share the canonical name
/// used below, so a prefix of both is not ambiguous, as with getopt_long.
const LONG: &[(&str, Has, &str)] = &[
    ("version", Has::No, "version"),
    ("help", Has::No, "help"),
    ("exclude-path", Has::Required, "exclude-path"),
    ("exclude-regex", Has::Required, "exclude-regex"),
    ("file-contexts", Has::Required, "file-contexts"),
    ("force-uid", Has::Required, "force-uid"),
    ("force-gid", Has::Required, "force-gid"),
    ("all-root", Has::No, "all-root"),
    ("max-extent-bytes", Has::Required, "max-extent-bytes"),
    ("compress-hints", Has::Required, "compress-hints"),
    ("chunksize", Has::Required, "chunksize"),
    ("quiet", Has::No, "quiet"),
    ("blobdev", Has::Required, "blobdev"),
    ("ignore-mtime", Has::No, "ignore-mtime"),
    ("preserve-mtime", Has::No, "preserve-mtime"),
    ("uid-offset", Has::Required, "uid-offset"),
    ("gid-offset", Has::Required, "gid-offset"),
    ("tar", Has::Optional, "tar"),
    ("aufs", Has::No, "aufs"),
    ("mount-point", Has::Required, "mount-point"),
    ("ovlfs-strip", Has::Optional, "ovlfs-strip"),
    ("offset", Has::Required, "offset"),
    ("gzip", Has::No, "ungzip"),
    ("ungzip", Has::Optional, "ungzip"),
    ("gzinfo", Has::Optional, "gzinfo"),
    ("unlzma", Has::Optional, "unxz"),
    ("unxz", Has::Optional, "unxz"),
    ("workers", Has::Required, "workers"),
    ("zfeature-bits", Has::Required, "zfeature-bits"),
    ("clean", Has::Optional, "clean"),
    ("incremental", Has::Optional, "incremental"),
    ("root-xattr-isize", Has::Required, "root-xattr-isize"),
    ("mkfs-time", Has::No, "mkfs-time"),
    ("all-time", Has::No, "all-time"),
    ("sort", Has::Required, "sort"),
    ("hard-dereference", Has::No, "hard-dereference"),
    ("dsunit", Has::Required, "dsunit"),
    ("async-queue-limit", Has::Required, "async-queue-limit"),
    ("fsalignblks", Has::Required, "fsalignblks"),
    ("vmdk-desc", Has::Required, "vmdk-desc"),
    ("s3", Has::Required, "s3"),
    ("oci", Has::Optional, "oci"),
    ("zD", Has::Optional, "zD"),
    ("MZ", Has::Optional, "MZ"),
    ("xattr-prefix", Has::Required, "xattr-prefix"),
    ("xattr-inode-digest", Has::Optional, "xattr-inode-digest"),
    // ishare's own.
    ("no-xattr-inode-digest", Has::No, "no-xattr-inode-digest"),
];

/// Short options that take a value (all of mkfs.erofs's but -V and -h).
const SHORT_WITH_VALUE: &str = "CELTUbdmxz";

/// Resolves a long option name as getopt_long does: an exact match, or the one
/// option that the name is a prefix of.
fn resolve(name: &str) -> Result<(Has, &'static str, &'static str)> {
    if let Some(&(n, has, id)) = LONG.iter().find(|(n, _, _)| *n == name) {
        return Ok((has, id, n));
    }
    let hits: Vec<_> = LONG
        .iter()
        .filter(|(n, _, _)| n.starts_with(name))
        .collect();
    match hits.as_slice() {
        [] => bail!("unrecognized option '--{name}'"),
        [(n, has, id), rest @ ..] if rest.iter().all(|(_, h, i)| i == id && h == has) => {
            Ok((*has, id, n))
        }
        _ => {
            let names: Vec<String> = hits.iter().map(|(n, _, _)| format!("--{n}")).collect();
            bail!(
                "option '--{name}' is ambiguous; possibilities: {}",
                names.join(" ")
            )
        }
    }
}

/// One element of the command line, as getopt sees it.
#[derive(Debug)]
enum Token {
    /// `-c`, with the rest of its word (a possible attached value or more options).
    Short(char),
    /// `--name` or `--name=value`.
    Long(String, Option<OsString>),
    Operand(OsString),
}

/// getopt_long's tokenization: yields options and operands in order, and hands out
/// option values on request.
struct Tokens {
    args: std::vec::IntoIter<OsString>,
    /// The rest of a short-option cluster being read (`-zlz4` after `-z`: `lz4`).
    cluster: Vec<u8>,
    /// After `--`: everything is an operand.
    done: bool,
}

impl Tokens {
    fn next(&mut self) -> Result<Option<Token>> {
        if !self.cluster.is_empty() {
            let c = self.cluster.remove(0);
            return Ok(Some(Token::Short(char::from(c))));
        }
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if self.done {
            return Ok(Some(Token::Operand(arg)));
        }
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" {
            self.done = true;
            return self.next();
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, value) = match long.iter().position(|&b| b == b'=') {
                Some(i) => (&long[..i], Some(&long[i + 1..])),
                None => (long, None),
            };
            let name = std::str::from_utf8(name)
                .with_context(|| format!("unrecognized option {arg:?}"))?
                .to_owned();
            let value = value.map(os_from_bytes);
            return Ok(Some(Token::Long(name, value)));
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            self.cluster = bytes[1..].to_vec();
            return self.next();
        }
        Ok(Some(Token::Operand(arg)))
    }

    /// The value of the short option just read: the rest of its word, else the
    /// next argument.
    fn short_value(&mut self, c: char) -> Result<OsString> {
        if !self.cluster.is_empty() {
            return Ok(os_from_bytes(&std::mem::take(&mut self.cluster)));
        }
        self.args
            .next()
            .with_context(|| format!("option requires an argument -- '{c}'"))
    }
}

fn os_from_bytes(b: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b).to_os_string()
}

/// Parses the arguments after the program name (or after `ishare mkfs`).
pub fn parse(args: impl IntoIterator<Item = OsString>, flavor: Flavor) -> Result<Command> {
    let mut t = Tokens {
        args: args.into_iter().collect::<Vec<_>>().into_iter(),
        cluster: Vec::new(),
        done: false,
    };
    let mut a = Args::new(flavor);
    let mut operands: Vec<OsString> = Vec::new();
    while let Some(tok) = t.next()? {
        match tok {
            Token::Short(c) => {
                let v = if c.is_ascii() && SHORT_WITH_VALUE.contains(c) {
                    Some(t.short_value(c)?)
                } else {
                    None
                };
                match (c, v) {
                    ('V', _) => return Ok(Command::Version),
                    ('h', _) => return Ok(Command::Help),
                    (c, Some(v)) => short(&mut a, c, v)?,
                    (c, None) => bail!("invalid option -- '{c}'"),
                }
            }
            Token::Long(name, attached) => {
                let (has, id, full) = resolve(&name)?;
                let v = match (has, attached) {
                    (Has::No, Some(_)) => bail!("option '--{full}' doesn't allow an argument"),
                    (Has::No, None) => None,
                    (Has::Required, Some(v)) => Some(v),
                    (Has::Required, None) => Some(
                        t.args
                            .next()
                            .with_context(|| format!("option '--{full}' requires an argument"))?,
                    ),
                    (Has::Optional, v) => v,
                };
                match id {
                    "version" => return Ok(Command::Version),
                    "help" => return Ok(Command::Help),
                    _ => long(&mut a, id, v).with_context(|| format!("--{full}"))?,
                }
            }
            Token::Operand(v) => operands.push(v),
        }
    }
    let mut ops = operands.into_iter();
    a.image = ops
        .next()
        .map(PathBuf::from)
        .context("missing argument: FILE (the image to create)")?;
    a.sources = ops.map(PathBuf::from).collect();
    if a.sources.is_empty() && a.tar.is_none() {
        bail!("missing argument: SOURCE(s)");
    }
    if a.oci.is_some() {
        if a.tar.is_some() {
            bail!("--oci and --tar cannot be combined: the OCI image's layers are the tars");
        }
        if a.sources.len() != 1 {
            bail!("--oci takes one SOURCE, the OCI image layout (directory or archive)");
        }
    }
    // As erofs-utils: the zinfo of a tar, or of the one OCI layer an index refers to.
    if a.gzinfo.is_some() && a.tar.is_none() && !a.oci.as_ref().is_some_and(|o| o.index) {
        bail!("--gzinfo describes a gzip-compressed tar: it needs --tar, or --oci=i");
    }
    if a.tar.is_some() && a.sources.len() > 1 {
        bail!(
            "--tar takes one SOURCE (a tar archive, or none for standard input), not {}",
            a.sources.len()
        );
    }
    Ok(Command::Build(Box::new(a)))
}

fn text(v: &OsString) -> Result<&str> {
    v.to_str()
        .with_context(|| format!("{v:?} is not valid UTF-8"))
}

/// An integer as C's `strtol(s, _, 0)` reads it: decimal, `0x` hex or `0` octal,
/// with an optional sign.
fn c_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let n = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

/// An unsigned number (no sign, at most `max`).
fn c_uint(s: &str, what: &str, max: u64) -> Result<u64> {
    match c_int(s) {
        Some(n) if n >= 0 && n as u64 <= max => Ok(n as u64),
        _ => bail!("invalid {what} {s:?}"),
    }
}

/// A byte count with an optional `k`, `m` or `g` suffix (mkfs.erofs's sizes).
fn size(s: &str, what: &str) -> Result<u64> {
    parse_size(s).with_context(|| format!("invalid {what} {s:?}"))
}

fn short(a: &mut Args, c: char, v: OsString) -> Result<()> {
    let s = || text(&v);
    match c {
        'z' => a.compression = Some(s()?.to_owned()),
        'b' => {
            let n = size(s()?, "block size")?;
            if !(512..=65536).contains(&n) || !n.is_power_of_two() {
                bail!("-b: invalid block size {}", s()?);
            }
            a.block_size = Some(n as u32);
        }
        'd' => {
            // atoi, as mkfs.erofs reads it: the leading number, 0 if none.
            let t = s()?;
            let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits.parse().unwrap_or(0);
            if n > 9 || t.starts_with('-') {
                bail!("-d: invalid debug level {t} (0 to 9)");
            }
            a.debug_level = n as u8;
        }
        'x' => {
            let t = s()?;
            a.xattr_tolerance =
                Some(c_int(t).with_context(|| format!("-x: invalid xattr tolerance {t:?}"))?);
        }
        'E' => a.extended.push(s()?.to_owned()),
        'L' => a.label = Some(v),
        'T' => {
            let t = s()?;
            a.timestamp = Some(
                c_int(t)
                    .filter(|&n| n >= 0)
                    .with_context(|| format!("-T: invalid UNIX timestamp {t:?}"))?
                    as u64,
            );
        }
        'U' => a.uuid = Some(s()?.to_owned()),
        'C' => {
            let n = size(s()?, "physical cluster size").context("-C")?;
            a.pcluster_size = Some(
                u32::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("-C: invalid physical cluster size {n}"))?,
            );
        }
        'm' => a.metabox = Some(s()?.to_owned()),
        _ => unreachable!("SHORT_WITH_VALUE lists {c}"),
    }
    Ok(())
}

/// `--clean=X` / `--incremental=X`, read as mkfs.erofs does: a name, or a mode
/// number in C syntax (0 = the default).
fn data_import(v: Option<std::borrow::Cow<'_, str>>, id: &str) -> Result<Option<DataImport>> {
    Ok(Some(match v.as_deref() {
        None | Some("data") => DataImport::Full,
        Some("rvsp") => DataImport::Reserve,
        Some("0") => DataImport::ZeroFill,
        Some(s) => match c_number(s) {
            Some(0) => return Ok(None),
            Some(1) => DataImport::Full,
            Some(2) => DataImport::Reserve,
            Some(3) => DataImport::ZeroFill,
            _ => bail!("invalid --{id}={s} (data, rvsp or 0)"),
        },
    }))
}

/// A C integer literal (decimal, 0x hex or 0 octal), as strtol with base 0.
fn c_number(s: &str) -> Option<i64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        i64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// `--oci`'s value: `[f|i][,platform=X][,layer=N|blob=DIGEST]`, comma-separated
/// as erofs-utils reads it; its registry options are refused.
fn oci(v: Option<&str>) -> Result<OciArgs> {
    use ishare_builder::OciLayer;
    let mut o = OciArgs::default();
    let Some(v) = v else {
        return Ok(o);
    };
    let mut opts = v.split(',').peekable();
    if let Some(&m @ ("f" | "i")) = opts.peek() {
        o.index = m == "i";
        opts.next();
    }
    for opt in opts {
        if let Some(p) = opt.strip_prefix("platform=") {
            o.platform = Some(p.to_owned());
        } else if let Some(b) = opt.strip_prefix("blob=") {
            if matches!(o.layer, Some(OciLayer::Index(_))) {
                bail!("blob= and layer= cannot be set together");
            }
            o.layer = Some(OciLayer::Blob(b.to_owned()));
        } else if let Some(n) = opt.strip_prefix("layer=") {
            if matches!(o.layer, Some(OciLayer::Blob(_))) {
                bail!("layer= and blob= cannot be set together");
            }
            let n = n
                .parse::<usize>()
                .with_context(|| format!("layer={n}: not a layer index (0 = lowest)"))?;
            o.layer = Some(OciLayer::Index(n));
        } else if ["username=", "password=", "insecure"]
            .iter()
            .any(|k| opt.starts_with(k))
        {
            bail!(
                "{opt}: pulling from a registry is not supported; ishare reads local OCI \
                 image layouts only (e.g. made with `skopeo copy docker://... oci:DIR:TAG`)"
            );
        } else {
            bail!("invalid value {opt:?} (f, i, platform=, layer=, blob=)");
        }
    }
    Ok(o)
}

fn long(a: &mut Args, id: &str, v: Option<OsString>) -> Result<()> {
    // Required values are always there; optional ones may not be.
    let req = || -> Result<&OsString> { v.as_ref().context("a value is required") };
    let s = || -> Result<&str> { text(req()?) };
    match id {
        "exclude-path" => a.exclude_path.push(req()?.clone()),
        "exclude-regex" => a.exclude_regex.push(s()?.to_owned()),
        "force-uid" => a.force_uid = Some(c_uint(s()?, "uid", u64::from(u32::MAX - 1))? as u32),
        "force-gid" => a.force_gid = Some(c_uint(s()?, "gid", u64::from(u32::MAX - 1))? as u32),
        "all-root" => a.all_root = true,
        "max-extent-bytes" => a.max_extent_bytes = Some(size(s()?, "maximum extent size")?),
        "compress-hints" => a.compress_hints = Some(PathBuf::from(req()?)),
        "chunksize" => {
            let n = c_uint(s()?, "chunksize", u64::MAX >> 1)?;
            if !n.is_power_of_two() {
                bail!("chunksize {n} must be a power of two");
            }
            a.chunksize = Some(n);
        }
        "quiet" => a.quiet = true,
        "ignore-mtime" => a.ignore_mtime = true,
        "preserve-mtime" => a.ignore_mtime = false,
        "uid-offset" => a.uid_offset = c_uint(s()?, "uid offset", u64::from(u32::MAX))? as u32,
        "gid-offset" => a.gid_offset = c_uint(s()?, "gid offset", u64::from(u32::MAX))? as u32,
        "tar" => {
            let mut mode = v.as_ref().map(text).transpose()?.unwrap_or("f");
            // `MODE,MAPFILE`: a block map of the files' data (an empty name: none).
            a.tar_map = None;
            if let Some((m, map)) = mode.split_once(',') {
                mode = m;
                a.tar_map = (!map.is_empty()).then(|| PathBuf::from(map));
            }
            a.tar = Some(match mode {
                "f" => TarMode::Full,
                "i" | "0" => TarMode::Index,
                "headerball" => TarMode::Headerball,
                m => bail!("unknown mode {m:?} (f, i or headerball)"),
            });
        }
        "aufs" => a.aufs = true,
        "mount-point" => {
            // Trailing '/' dropped, as mkfs.erofs does.
            let mut m = req()?.clone().into_encoded_bytes();
            while m.len() > 1 && m.last() == Some(&b'/') {
                m.pop();
            }
            // The bytes came from an OsString and only ASCII '/' was removed.
            a.mount_point = Some(std::os::unix::ffi::OsStringExt::from_vec(m));
        }
        "offset" => a.offset = c_uint(s()?, "disk offset", u64::MAX >> 1)?,
        "ungzip" | "unxz" => {
            // The decompressor is picked by magic bytes anyway; the value is where
            // to keep the decompressed stream.
            if let Some(x) = &v {
                a.dump_tar = Some(PathBuf::from(x));
            }
        }
        "workers" => a.workers = c_uint(s()?, "worker number", 1 << 16)? as usize,
        "zfeature-bits" => {
            let t = s()?;
            a.zfeature_bits =
                Some(c_int(t).with_context(|| format!("invalid zfeature bits {t:?}"))?);
        }
        "root-xattr-isize" => {
            a.root_xattr_isize = Some(c_uint(s()?, "minimum inline xattr size", u64::MAX >> 1)?)
        }
        "mkfs-time" => a.time_scope = Some(TimeScope::MkfsTime),
        "all-time" => a.time_scope = Some(TimeScope::AllTime),
        "sort" => match s()? {
            "none" => a.sort_none = true,
            "path" => a.sort_none = false,
            o => bail!("unknown order {o:?} (path or none)"),
        },
        "hard-dereference" => a.hard_dereference = true,
        "dsunit" => a.dsunit = Some(c_uint(s()?, "dsunit", u64::from(u32::MAX))?),
        "async-queue-limit" => {
            a.async_queue_limit = Some(c_uint(s()?, "async-queue-limit", u64::MAX >> 1)?)
        }
        "fsalignblks" => a.fsalignblks = Some(c_uint(s()?, "fsalignblks", u64::from(u32::MAX))?),
        "xattr-prefix" => a.xattr_prefix.push(req()?.clone()),
        "xattr-inode-digest" => {
            a.fingerprint = Some(v);
            a.no_fingerprint = false;
        }
        "no-xattr-inode-digest" => {
            a.fingerprint = None;
            a.no_fingerprint = true;
        }
        "s3" => bail!("reading from S3 (a network service) is not supported"),
        "oci" => a.oci = Some(oci(v.as_ref().map(text).transpose()?)?),
        // As mkfs.erofs: a second one is ignored (it only keeps the first handle).
        "file-contexts" => {
            let f = PathBuf::from(req()?);
            a.file_contexts.get_or_insert(f);
        }
        "blobdev" => a.blobdev = Some(PathBuf::from(req()?)),
        // As mkfs.erofs: no value or `1` strips, anything else keeps.
        "ovlfs-strip" => a.ovlfs_strip = v.as_deref().is_none_or(|x| x == "1"),
        "gzinfo" => a.gzinfo = Some(v.map(PathBuf::from)),
        "clean" | "incremental" => {
            a.incremental = id == "incremental";
            a.data_import = data_import(v.as_deref().map(|x| x.to_string_lossy()), id)?;
        }
        "vmdk-desc" => a.vmdk_desc = Some(PathBuf::from(req()?)),
        // As `--help` documents it (1.9.4's binary inverts 0 and 1).
        "zD" => {
            a.compress_dirs = Some(match v.as_ref().map(text).transpose()? {
                None | Some("1") => true,
                Some("0") => false,
                Some(x) => bail!("--zD={x}: expected 0 (off) or 1 (on)"),
            })
        }
        "MZ" => a.metazone = Some(v.as_ref().map(text).transpose()?.map(str::to_owned)),
        _ => unreachable!("LONG lists {id}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(args: &[&str]) -> Result<Args> {
        match parse(args.iter().map(OsString::from), Flavor::MkfsErofs)? {
            Command::Build(a) => Ok(*a),
            c => bail!("not a build: {c:?}"),
        }
    }

    #[test]
    fn containerd_command_lines() {
        let a = build(&[
            "--tar=f",
            "--aufs",
            "--quiet",
            "-Enoinline_data",
            "--sort=none",
            "--xattr-inode-digest",
            "-U",
            "6ba7b811-9dad-11d1-80b4-00c04fd430c8",
            "layer.erofs",
        ])
        .unwrap();
        assert_eq!(a.tar, Some(TarMode::Full));
        assert!(a.aufs && a.quiet && a.sort_none);
        assert_eq!(a.extended, ["noinline_data"]);
        assert_eq!(a.fingerprint, Some(None));
        assert_eq!(
            a.uuid.as_deref(),
            Some("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
        );
        assert_eq!(a.image, PathBuf::from("layer.erofs"));
        assert!(a.sources.is_empty());

        let a = build(&["--tar=i", "--aufs", "--quiet", "-b4096", "l.erofs"]).unwrap();
        assert_eq!(a.tar, Some(TarMode::Index));
        assert_eq!(a.block_size, Some(4096));

        let a = build(&["--quiet", "-Enoinline_data", "-b4096", "l.erofs", "dir"]).unwrap();
        assert_eq!(a.sources, [PathBuf::from("dir")]);
        assert_eq!(a.tar, None);
    }

    #[test]
    fn getopt_rules() {
        // Attached and separate values, clusters, negative values, options after
        // operands, the last of a repeated option wins.
        let a = build(&[
            "-zlz4hc,12",
            "-Eforce-inode-compact",
            "-b",
            "512",
            "-T0",
            "-x",
            "-1",
            "-C",
            "64k",
            "img",
            "-b4096",
            "src",
            "-d0",
        ])
        .unwrap();
        assert_eq!(a.compression.as_deref(), Some("lz4hc,12"));
        assert_eq!(a.extended, ["force-inode-compact"]);
        assert_eq!(a.block_size, Some(4096));
        assert_eq!((a.timestamp, a.xattr_tolerance), (Some(0), Some(-1)));
        assert_eq!(a.pcluster_size, Some(65536));
        assert_eq!(a.debug_level, 0);
        assert_eq!((a.image.to_str(), a.sources.len()), (Some("img"), 1));
        // `-E=x` keeps its `=`, as getopt does.
        assert_eq!(build(&["-E=x", "i", "s"]).unwrap().extended, ["=x"]);
        // Abbreviated long options; ambiguous ones are refused.
        let a = build(&["--qui", "--ign", "--hard", "--uid-o=5", "i", "s"]).unwrap();
        assert!(a.quiet && a.ignore_mtime && a.hard_dereference);
        assert_eq!(a.uid_offset, 5);
        let e = build(&["--x", "i", "s"]).unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
        // An optional value is only taken attached: `--tar i` is the image `i`.
        let a = build(&["--tar", "i"]).unwrap();
        assert_eq!((a.tar, a.image.to_str()), (Some(TarMode::Full), Some("i")));
        // A required value may be the next argument.
        let a = build(&["--sort", "none", "--tar=headerball", "i", "-"]).unwrap();
        assert!(a.sort_none);
        assert_eq!(a.tar, Some(TarMode::Headerball));
        assert_eq!(a.sources, [PathBuf::from("-")]);
        // `--` ends the options.
        let a = build(&["--", "-img", "-src"]).unwrap();
        assert_eq!(a.image, PathBuf::from("-img"));
        // Several SOURCEs parse (rebuild mode).
        assert_eq!(
            build(&["m.erofs", "a.erofs", "b.erofs"])
                .unwrap()
                .sources
                .len(),
            2
        );
    }

    #[test]
    fn help_version_and_errors() {
        let p = |v: &[&str]| parse(v.iter().map(OsString::from), Flavor::Ishare);
        assert!(matches!(p(&["-V"]).unwrap(), Command::Version));
        assert!(matches!(p(&["--vers"]).unwrap(), Command::Version));
        assert!(matches!(p(&["-h"]).unwrap(), Command::Help));
        for (bad, want) in [
            (&["img"][..], "missing argument: SOURCE"),
            (&[][..], "missing argument: FILE"),
            (&["-q", "i", "s"], "invalid option -- 'q'"),
            (&["--bogus", "i", "s"], "unrecognized option '--bogus'"),
            (&["i", "s", "-b"], "requires an argument -- 'b'"),
            (&["--quiet=1", "i", "s"], "quiet"),
            (&["-b1000", "i", "s"], "invalid block size"),
            (&["-d12", "i", "s"], "invalid debug level"),
            (&["--tar=x", "i"], "unknown mode"),
            (&["--tar=f", "i", "a", "b"], "one SOURCE"),
            (&["--sort=size", "i", "s"], "unknown order"),
            (&["--chunksize=3000", "i", "s"], "power of two"),
            (&["--s3=host", "i", "s"], "not supported"),
            (&["--zD=2", "i", "s"], "expected 0 (off) or 1 (on)"),
        ] {
            let e = format!("{:#}", p(bad).unwrap_err());
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn file_contexts_and_mount_point() {
        // As mkfs.erofs: the first --file-contexts is kept, later ones ignored; the
        // mount point loses its trailing '/' and keeps non-UTF-8 bytes.
        let a = build(&[
            "--file-contexts=a",
            "--file-contexts",
            "b",
            "--mount-point=/system//",
            "i",
            "s",
        ])
        .unwrap();
        assert_eq!(a.file_contexts, Some(PathBuf::from("a")));
        assert_eq!(
            a.mount_point.as_deref(),
            Some(std::ffi::OsStr::new("/system"))
        );
        let raw = [
            OsString::from("--mount-point"),
            std::os::unix::ffi::OsStringExt::from_vec(b"/m\xff/".to_vec()),
            OsString::from("i"),
            OsString::from("s"),
        ];
        match parse(raw, Flavor::MkfsErofs).unwrap() {
            Command::Build(a) => assert_eq!(
                a.mount_point.map(std::os::unix::ffi::OsStringExt::into_vec),
                Some(b"/m\xff".to_vec())
            ),
            c => panic!("not a build: {c:?}"),
        }
        assert!(build(&["--file-contexts", "i"]).is_err());
    }

    #[test]
    fn c_numbers() {
        assert_eq!(c_int("0x10"), Some(16));
        assert_eq!(c_int("010"), Some(8));
        assert_eq!(c_int("-1"), Some(-1));
        assert_eq!(c_int("0"), Some(0));
        assert_eq!(c_int("1x"), None);
    }
}
