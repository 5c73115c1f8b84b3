//! `ishare mkfs` and `mkfs.erofs` (this program called by that name): build an EROFS
//! image, uncompressed or compressed (`-z`), from a directory, a tar archive (in
//! full, or as an index into the tar) or a local OCI image (`--oci`), with
//! mkfs.erofs 1.9.4's command line (`args`), help and version (`help`), and the side
//! files it can write (`--vmdk-desc`: `vmdk`). Under `ishare mkfs` page-cache-share
//! fingerprints are on by default; under `mkfs.erofs`, as there, only when asked.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ishare_builder::{
    BuildOptions, Compression, DEFAULT_FINGERPRINT_NAME, ExtendedOptions, OciSource, TarData,
    TarInput, TimePolicy,
};

pub mod args;
pub(crate) mod help;
mod vmdk;

pub use args::Flavor;
use args::{Args, Command, TarMode, TimeScope};

/// `ishare mkfs ARGS...`: the raw arguments, parsed by [`args::parse`] with
/// mkfs.erofs's rules (see there why not clap).
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RawArgs {
    /// mkfs.erofs's options, FILE and SOURCE(s); `ishare mkfs --help` lists them.
    #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
    args: Vec<OsString>,
}

/// `ishare mkfs`: errors go back to `main`, which prints them.
pub fn run_ishare(raw: RawArgs) -> Result<()> {
    let cmd = args::parse(raw.args, Flavor::Ishare)
        .context("see 'ishare mkfs --help' for the options")?;
    dispatch(cmd, "ishare mkfs")
}

/// This program called as `mkfs.erofs` (`argv` without the program name): mkfs.erofs's
/// defaults, messages and exit status (1 on any error).
pub fn main_mkfs_erofs(argv: Vec<OsString>, program: &str) -> std::process::ExitCode {
    let res = match args::parse(argv, Flavor::MkfsErofs) {
        Ok(cmd) => dispatch(cmd, program),
        Err(e) => {
            eprintln!("mkfs.erofs: {e:#}");
            eprintln!("Try '{program} --help' for more information.");
            return std::process::ExitCode::FAILURE;
        }
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkfs.erofs: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command, program: &str) -> Result<()> {
    use std::io::Write;
    let flavor_of = |c: &Command| match c {
        Command::Build(a) => a.flavor,
        _ => Flavor::Ishare,
    };
    let flavor = if program == "ishare mkfs" {
        flavor_of(&cmd)
    } else {
        Flavor::MkfsErofs
    };
    match cmd {
        Command::Help => {
            let mut text = help::usage(program, flavor);
            // `ishare mkfs` ends with the examples and exit statuses of its man page;
            // the mkfs.erofs link prints erofs-utils' help alone.
            if program == "ishare mkfs" {
                text = format!("{text}\n{}\n", crate::help::MKFS);
            }
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Version => {
            std::io::stdout().write_all(help::version(flavor).as_bytes())?;
            Ok(())
        }
        Command::Build(a) => run(&a),
    }
}

/// Builds the image the arguments describe.
pub fn run(a: &Args) -> Result<()> {
    let mut opts = options(a)?;
    let quiet = a.quiet || a.debug_level == 0;
    // A progress bar only for a person watching: on a terminal and not --quiet.
    if !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        opts.progress = Some(std::sync::Arc::new(Bar(indicatif::ProgressBar::hidden())));
    }
    // The VMDK descriptor names every device: the tar of an index must be a path (a
    // `--blobdev` blob is one).
    let index_tar = match (a.tar, a.sources.first()) {
        // With a block map the data is in the image: there is no device.
        _ if a.tar_map.is_some() => None,
        (Some(TarMode::Index), Some(s)) if s.as_os_str() != "-" => Some(s.clone()),
        (Some(TarMode::Index), _) => None,
        _ => None,
    };
    if a.vmdk_desc.is_some() {
        if a.tar == Some(TarMode::Index) && index_tar.is_none() {
            bail!(
                "--vmdk-desc names the tar of a --tar=i index: give it as SOURCE, not on standard input"
            );
        }
        if a.oci.as_ref().is_some_and(|o| o.index) {
            bail!("--vmdk-desc with --oci=i is not supported: index the layer blob with --tar=i");
        }
    }
    let start = Instant::now();
    let r = match a.tar {
        None if a.oci.is_some() => {
            let o = a.oci.as_ref().expect("checked");
            let src = OciSource {
                path: a.sources[0].clone(),
                platform: o.platform.clone(),
                layer: o.layer.clone(),
            };
            ishare_builder::build_oci(&src, &a.image, &opts)
        }
        None => {
            let source = &a.sources[0];
            // As mkfs.erofs: a SOURCE that is not a directory, or several, are
            // EROFS images to merge (rebuild mode).
            if a.sources.len() > 1 || !source.is_dir() {
                let ro = rebuild_options(a)?;
                ishare_builder::build_rebuild(&ro, &a.image, &opts)
            } else {
                if a.incremental || a.data_import.is_some() || a.ovlfs_strip {
                    bail!("--clean, --incremental and --ovlfs-strip apply to rebuild mode (EROFS images as SOURCEs)");
                }
                ishare_builder::build(source, &a.image, &opts)
            }
        }
        Some(_) => {
            let input = match a.sources.first() {
                None => TarInput::Stdin,
                Some(s) if s.as_os_str() == "-" => TarInput::Stdin,
                Some(s) => TarInput::Path(s.clone()),
            };
            ishare_builder::build_tar(&input, &a.image, &opts)
        }
    }
    .with_context(|| format!("building {}", a.image.display()))?;
    // erofs-utils maps only an index's files; other modes leave the map empty.
    if let Some(map) = &a.tar_map
        && opts.block_map.is_none()
    {
        std::fs::write(map, b"").with_context(|| format!("--tar: writing {}", map.display()))?;
    }
    if let Some(to) = &a.vmdk_desc {
        let mut devices = vec![(
            a.image.display().to_string(),
            r.blocks * u64::from(opts.block_size) / 512,
        )];
        if let Some(t) = &index_tar {
            let len = std::fs::metadata(t)
                .with_context(|| format!("--vmdk-desc: {}", t.display()))?
                .len();
            devices.push((t.display().to_string(), len.div_ceil(512)));
        }
        // `--blobdev`: the blob is the image's extra device.
        if let Some(b) = &a.blobdev {
            let len = std::fs::metadata(b)
                .with_context(|| format!("--vmdk-desc: {}", b.display()))?
                .len();
            devices.push((b.display().to_string(), len.div_ceil(512)));
        }
        vmdk::write(to, &opts.uuid, &devices)?;
    }
    if !quiet {
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

/// Rebuild mode's settings: the layers and what becomes of their data.
fn rebuild_options(a: &Args) -> Result<ishare_builder::RebuildOptions> {
    use args::DataImport;
    let data = match a.data_import {
        None => ishare_builder::RebuildData::BlobIndex,
        Some(DataImport::Full) => ishare_builder::RebuildData::Full,
        Some(DataImport::Reserve) => ishare_builder::RebuildData::Reserve,
        // mkfs.erofs refuses it too: zero-filled data is for S3 sources.
        Some(DataImport::ZeroFill) => {
            bail!(
                "--clean=0 (zero-filled data) does not apply to rebuild mode: use data, rvsp or the default"
            )
        }
    };
    // `--incremental`: the image is the lowest layer of its own rebuild, written
    // in place after its blocks as mkfs.erofs does (or afresh where that cannot
    // be; see ishare_builder's rebuild mode).
    let mut layers = a.sources.clone();
    if a.incremental {
        if !a.image.is_file() {
            bail!(
                "{}: --incremental adds to an existing image, and there is none",
                a.image.display()
            );
        }
        layers.insert(0, a.image.clone());
    }
    Ok(ishare_builder::RebuildOptions {
        layers,
        data,
        ovlfs_strip: a.ovlfs_strip,
        incremental: a.incremental,
        keep_uuid: a.uuid.is_none(),
    })
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
        block_size: a.block_size.unwrap_or(4096),
        workers: a.workers,
        force_uid: a.force_uid,
        force_gid: a.force_gid,
        uid_offset: a.uid_offset,
        gid_offset: a.gid_offset,
        aufs: a.aufs,
        ignore_mtime: a.ignore_mtime,
        hard_dereference: a.hard_dereference,
        offset: a.offset,
        fsalign_blocks: a.fsalignblks.unwrap_or(0),
        dsunit: a.dsunit.unwrap_or(0),
        keep_tar: a.dump_tar.clone(),
        gzinfo: a.gzinfo.clone().flatten(),
        ..BuildOptions::default()
    };
    if let Some(n) = a.root_xattr_isize {
        o.root_xattr_isize = u32::try_from(n)
            .ok()
            .filter(|&n| n <= ishare_builder::MAX_INLINE_XATTR_SIZE)
            .with_context(|| {
                format!(
                    "--root-xattr-isize={n}: at most {} bytes fit an inode",
                    ishare_builder::MAX_INLINE_XATTR_SIZE
                )
            })?;
    }
    // `--aufs` only means something for tar input (directories carry overlayfs
    // whiteouts as they are); mkfs.erofs accepts and ignores it there.
    // `--oci` reads tar layers: `--oci=i` is a tar index of one.
    let tar = match &a.oci {
        Some(oci) if oci.index => Some(TarMode::Index),
        Some(_) => Some(TarMode::Full),
        None => a.tar,
    };
    o.aufs = a.aufs && tar.is_some();
    o.tar_data = match tar {
        // `--tar=i,MAPFILE`: as erofs-utils, the index keeps the block size and the
        // files' data gets whole blocks of the image, listed with their tar offsets
        // in the map (ishare also copies the data in, so the image is complete).
        Some(TarMode::Index) if a.tar_map.is_some() => {
            o.inline_data = false;
            o.block_map = a.tar_map.clone();
            TarData::Copy
        }
        Some(TarMode::Index) => {
            // The tar's data blocks are addressed in 512-byte units, whatever -b
            // says (mkfs.erofs does the same: containerd passes -b4096 here too).
            o.block_size = 512;
            TarData::Index
        }
        Some(TarMode::Headerball) => TarData::Omitted,
        _ => TarData::Copy,
    };
    // `--sort=none` asks mkfs.erofs to write tar data in archive order instead of
    // buffering it to sort by path; ishare reads file data in place from the archive
    // (or its one temporary copy) and writes it in inode order either way, so the
    // image's content is the same and there is nothing to switch.
    let _ = a.sort_none;
    // `--async-queue-limit` bounds mkfs.erofs's queue of pending compression jobs;
    // ishare's workers take files from a fixed list, with no such queue: accepted
    // (and range-checked) for compatibility, no effect.
    let _ = a.async_queue_limit;
    // `--file-contexts`: read (and checked) whatever the source, as mkfs.erofs opens
    // it while parsing options; only a directory SOURCE gets its labels, the tar,
    // OCI and rebuild inputs keep their own xattrs, as with mkfs.erofs.
    // `--mount-point` is the prefix of the paths looked up (it also feeds Android's
    // fs_config in erofs-utils, which ishare does not have).
    if let Some(f) = &a.file_contexts {
        let mp = a.mount_point.as_ref().map(|m| m.as_bytes());
        o.file_contexts = Some(std::sync::Arc::new(
            ishare_builder::FileContexts::open(f, mp).context("--file-contexts")?,
        ));
    }
    // -T beats SOURCE_DATE_EPOCH; without either the build time is now.
    let env_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<u64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH {v:?} is not a number of seconds"))?,
        ),
        _ => None,
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
    match a.time_scope {
        Some(TimeScope::MkfsTime) => o.time_policy = TimePolicy::Keep,
        // As mkfs.erofs: every inode gets the build time (now, without -T).
        Some(TimeScope::AllTime) => o.time_policy = TimePolicy::Fixed,
        _ => {}
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
    o.blob_device = a.blobdev.clone();
    let default_on = a.flavor == Flavor::Ishare && !a.no_fingerprint;
    o.fingerprint = match &a.fingerprint {
        Some(name) => Some(
            name.clone()
                .map_or_else(|| DEFAULT_FINGERPRINT_NAME.into(), OsString::into_vec),
        ),
        None if default_on => Some(DEFAULT_FINGERPRINT_NAME.into()),
        None => None,
    };
    // Headers only: there is no data to take digests of.
    if o.tar_data == TarData::Omitted {
        o.fingerprint = None;
    }
    let mut z = ExtendedOptions::default();
    for e in &a.extended {
        z.parse(&mut o, e)?;
    }
    // A mapped file's data is whole blocks (no inline tail), whatever -E says.
    if o.block_map.is_some() {
        o.inline_data = false;
    }
    if let Some(bits) = a.zfeature_bits {
        z.apply_bits(&mut o, bits)?;
    }
    if z.force_blockmap && o.blob_device.is_some() {
        bail!(
            "--blobdev cannot work with a block map (-E force-inode-blockmap): chunks on a device need chunk indexes"
        );
    }
    match &a.compression {
        Some(_) if o.tar_data != TarData::Copy || o.block_map.is_some() => {
            bail!("-z: --tar=i and --tar=headerball images hold no data to compress")
        }
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
        None => z.apply_uncompressed(&mut o)?,
    }
    if let Some(m) = &a.metabox {
        o.metabox = Some(ishare_builder::Metabox::parse(m)?);
    }
    if let Some(on) = a.compress_dirs {
        if on && o.compression.is_none() {
            bail!("--zD: compressed directories need compression (-z)");
        }
        o.compress_dirs = on;
    }
    if let Some(zone) = &a.metazone {
        o.metazone = ishare_builder::MetaZone::parse(zone.as_deref())?;
    }
    // (After -E: `-Ededupe` without -z means a chunk size of one block.)
    if o.block_map.is_some() && o.chunk_size.is_some() {
        bail!(
            "--chunksize (or -Ededupe) cannot be used with a --tar=MODE,MAPFILE block map: the map lists files stored whole in image blocks"
        );
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
    use ishare_builder::InodeVersion;

    fn parse_as(flavor: Flavor, args: &[&str]) -> Result<BuildOptions> {
        match args::parse(args.iter().map(OsString::from), flavor)? {
            Command::Build(a) => options(&a),
            c => bail!("not a build: {c:?}"),
        }
    }

    fn parse(args: &[&str]) -> Result<BuildOptions> {
        parse_as(Flavor::Ishare, args)
    }

    #[test]
    fn fingerprint_defaults_per_name() {
        let fp = |f, a: &[&str]| parse_as(f, a).unwrap().fingerprint;
        let default = Some(DEFAULT_FINGERPRINT_NAME.as_bytes().to_vec());
        assert_eq!(fp(Flavor::Ishare, &["i", "s"]), default);
        assert_eq!(fp(Flavor::MkfsErofs, &["i", "s"]), None);
        assert_eq!(
            fp(Flavor::MkfsErofs, &["--xattr-inode-digest", "i", "s"]),
            default
        );
        assert_eq!(
            fp(
                Flavor::Ishare,
                &["--xattr-inode-digest=trusted.fp", "i", "s"]
            ),
            Some(b"trusted.fp".to_vec())
        );
        assert_eq!(
            fp(Flavor::Ishare, &["--no-xattr-inode-digest", "i", "s"]),
            None
        );
        // Headerballs hold no data to take digests of.
        assert_eq!(fp(Flavor::Ishare, &["--tar=headerball", "i"]), None);
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
            "--uid-offset=3",
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
        assert_eq!(
            (o.force_uid, o.force_gid, o.uid_offset),
            (Some(0), Some(0), 3)
        );
        let o = parse(&["-T100", "--mkfs-time", "img", "src"]).unwrap();
        assert_eq!((o.build_time, o.time_policy), (100, TimePolicy::Keep));
        let o = parse(&["--all-time", "img", "src"]).unwrap();
        assert_eq!(o.time_policy, TimePolicy::Fixed);
        assert!(parse(&["-Efragments", "img", "src"]).is_err());
        assert!(parse(&["-Ubogus", "img", "src"]).is_err());
    }

    #[test]
    fn tar_modes() {
        // Index mode: 512-byte blocks whatever -b says, no compression.
        let o = parse(&["--tar=i", "-b4096", "img"]).unwrap();
        assert_eq!((o.tar_data, o.block_size), (TarData::Index, 512));
        assert!(parse(&["--tar=i", "-zlz4", "img"]).is_err());
        let o = parse(&["--tar=f", "--aufs", "--ungzip=raw.tar", "img", "-"]).unwrap();
        assert_eq!(o.tar_data, TarData::Copy);
        assert!(o.aufs);
        assert_eq!(o.keep_tar, Some("raw.tar".into()));
        // --aufs means nothing for a directory.
        assert!(!parse(&["--aufs", "img", "dir"]).unwrap().aufs);
    }

    #[test]
    fn compression_options() {
        let o = parse(&["-zlz4hc,12", "-C65536", "-Eztailpacking", "img", "src"]).unwrap();
        let c = o.compression.unwrap();
        assert_eq!(c.algorithms[0].level, Some(12));
        assert_eq!(c.pcluster_size, 65536);
        assert!(c.ztailpacking && !c.legacy_indexes);
        let o = parse(&["-zlz4", "--zfeature-bits=0x12", "img", "src"]).unwrap();
        let c = o.compression.unwrap();
        assert!(c.ztailpacking && c.dedupe && !c.fragments);
        for bad in [
            &["-zlz5", "img", "src"][..],
            &["-zzstd,23", "img", "src"],
            &["-C65536", "img", "src"],
            &["-zlz4", "--zfeature-bits=256", "img", "src"],
            &["--root-xattr-isize=70000", "img", "src"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rebuild_mode_options() {
        use args::DataImport;
        let args = |a: &[&str]| match args::parse(a.iter().map(OsString::from), Flavor::MkfsErofs) {
            Ok(Command::Build(a)) => Ok(*a),
            Ok(c) => bail!("not a build: {c:?}"),
            Err(e) => Err(e),
        };
        for (opt, data, incremental) in [
            ("--clean", Some(DataImport::Full), false),
            ("--clean=data", Some(DataImport::Full), false),
            ("--clean=rvsp", Some(DataImport::Reserve), false),
            ("--clean=0", Some(DataImport::ZeroFill), false),
            ("--clean=0x0", None, false),
            ("--incremental", Some(DataImport::Full), true),
            ("--incremental=2", Some(DataImport::Reserve), true),
            ("--incremental=03", Some(DataImport::ZeroFill), true),
        ] {
            let a = args(&[opt, "img", "a.erofs", "b.erofs"]).unwrap();
            assert_eq!((a.data_import, a.incremental), (data, incremental), "{opt}");
        }
        assert!(args(&["--clean=7", "img", "a"]).is_err());
        assert!(args(&["--clean=bogus", "img", "a"]).is_err());
        // As mkfs.erofs: no value or 1 strips, anything else keeps.
        for (opt, strip) in [
            ("--ovlfs-strip", true),
            ("--ovlfs-strip=1", true),
            ("--ovlfs-strip=0", false),
            ("--ovlfs-strip=yes", false),
        ] {
            assert_eq!(
                args(&[opt, "img", "a"]).unwrap().ovlfs_strip,
                strip,
                "{opt}"
            );
        }
        let a = args(&["img", "a.erofs", "b.erofs"]).unwrap();
        let ro = rebuild_options(&a).unwrap();
        assert_eq!(ro.data, ishare_builder::RebuildData::BlobIndex);
        assert_eq!(ro.layers.len(), 2);
        assert!(rebuild_options(&args(&["--clean=0", "img", "a"]).unwrap()).is_err());
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
        assert_eq!(random_uuid().unwrap()[6] >> 4, 4);
    }
}
