//! `ishare dump`: the superblock, statistics, one inode, a directory listing or a
//! file's contents, in the spirit of `dump.erofs`; `--json` for scripts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use ishare_erofs::{
    CompressionInfo, ExtentKind, FileType, Image, Inode, Reached, WalkOrder, WalkStep, Xattr,
};
use serde_json::{Value, json};

use crate::DeviceArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show the superblock (the default when nothing else is asked).
    #[arg(short = 's')]
    superblock: bool,
    /// Show statistics of the whole filesystem.
    #[arg(short = 'S')]
    stats: bool,
    /// The inode to show, by NID.
    #[arg(long, conflicts_with = "path")]
    nid: Option<u64>,
    /// The inode to show, by path.
    #[arg(long)]
    path: Option<String>,
    /// List the directory's entries.
    #[arg(long)]
    ls: bool,
    /// List the file's extents (logical and physical ranges, like `dump.erofs -e`).
    #[arg(short = 'e', long = "extents")]
    extents: bool,
    /// Write the file's contents to standard output.
    #[arg(long)]
    cat: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    devices: DeviceArgs,
    /// The EROFS image.
    image: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let img = a.devices.open(&a.image)?;
    let target = a.nid.is_some() || a.path.is_some();
    if (a.ls || a.cat) && !target {
        bail!("--ls and --cat need --nid or --path");
    }
    if a.extents && !target {
        bail!("-e needs --nid or --path");
    }
    let mut out = std::io::stdout().lock();
    if a.cat {
        let inode = pick(&img, &a)?;
        if inode.file_type != FileType::Regular {
            bail!(
                "{}: {}: not a regular file",
                img.name(),
                describe(&a, &inode)
            );
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < inode.size {
            let n = img.read_at(&inode, pos, &mut buf)?;
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        return Ok(());
    }
    let show_sb = a.superblock || (!a.stats && !target);
    let mut doc = serde_json::Map::new();
    if show_sb {
        let v = superblock_json(&img);
        if a.json {
            doc.insert("superblock".into(), v);
        } else {
            print_superblock(&mut out, &img, &v)?;
        }
    }
    if a.stats {
        let v = stats_json(&img)?;
        if a.json {
            doc.insert("statistics".into(), v);
        } else {
            print_stats(&mut out, &v)?;
        }
    }
    if target {
        let inode = pick(&img, &a)?;
        let v = inode_json(&img, &inode, a.path.as_deref())?;
        if a.json {
            doc.insert("inode".into(), v);
        } else {
            print_inode(&mut out, &v)?;
        }
        if a.extents {
            let list = extents_json(&img, &inode)?;
            if a.json {
                doc.insert("extents".into(), Value::Array(list));
            } else {
                print_extents(&mut out, &describe(&a, &inode), &list)?;
            }
        }
        if a.ls {
            if !inode.is_dir() {
                bail!("{}: {}: not a directory", img.name(), describe(&a, &inode));
            }
            let entries = img.read_dir(&inode)?;
            if a.json {
                let list: Vec<Value> = entries
                    .iter()
                    .map(|e| json!({"name": bytes_str(&e.name), "nid": e.nid, "type": dirent_type_name(e.file_type)}))
                    .collect();
                doc.insert("entries".into(), Value::Array(list));
            } else {
                writeln!(out, "{:>20} {:>10} NAME", "NID", "TYPE")?;
                for e in entries {
                    writeln!(
                        out,
                        "{:>20} {:>10} {}",
                        e.nid,
                        dirent_type_name(e.file_type),
                        bytes_str(&e.name)
                    )?;
                }
            }
        }
    }
    if a.json {
        serde_json::to_writer_pretty(&mut out, &Value::Object(doc))?;
        writeln!(out)?;
    }
    Ok(())
}

fn pick(img: &Image, a: &Args) -> Result<Inode> {
    Ok(match (&a.nid, &a.path) {
        (Some(nid), _) => img.inode(*nid)?,
        (None, Some(p)) => img.lookup_path(p.as_bytes())?,
        _ => unreachable!("checked by the caller"),
    })
}

fn describe(a: &Args, inode: &Inode) -> String {
    a.path
        .clone()
        .unwrap_or_else(|| format!("nid {}", inode.nid))
}

fn dirent_type_name(t: u8) -> &'static str {
    use ishare_erofs::format::*;
    match t {
        FT_REG_FILE => "file",
        FT_DIR => "dir",
        FT_CHRDEV => "chrdev",
        FT_BLKDEV => "blkdev",
        FT_FIFO => "fifo",
        FT_SOCK => "socket",
        FT_SYMLINK => "symlink",
        _ => "unknown",
    }
}

/// Bytes as text when they are UTF-8 without control characters, else escaped.
fn bytes_str(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => b.escape_ascii().to_string(),
    }
}

/// An xattr value for display: the fingerprint as `sha256:<hex>`, printable text
/// as is, anything else as `0x<hex>`.
pub fn value_str(img: &Image, x: &Xattr) -> String {
    let is_fp = img
        .fingerprint_prefix()
        .is_some_and(|p| p.full_name() == x.name);
    if let Some(d) = x
        .value
        .strip_prefix(b"sha256:")
        .filter(|d| is_fp && d.len() == 32)
    {
        return format!("sha256:{}", hex::encode(d));
    }
    match std::str::from_utf8(&x.value) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => format!("{s:?}"),
        _ => format!("0x{}", hex::encode(&x.value)),
    }
}

fn uuid_str(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn superblock_json(img: &Image) -> Value {
    let sb = img.superblock();
    let raw = &sb.raw;
    let devices: Vec<Value> = img
        .devices()
        .iter()
        .map(|d| json!({"tag": bytes_str(&d.tag), "blocks": d.blocks, "uniaddr": d.uniaddr}))
        .collect();
    let prefixes: Vec<Value> = img
        .long_prefixes()
        .iter()
        .map(|p| json!({"base_index": p.base_index, "name": bytes_str(&p.full_name())}))
        .collect();
    json!({
        "magic": format!("{:#010x}", raw.magic.get()),
        "checksum": format!("{:#010x}", raw.checksum.get()),
        "block_size": sb.block_size(),
        "blocks": sb.blocks,
        "meta_blkaddr": sb.meta_blkaddr,
        "xattr_blkaddr": sb.xattr_blkaddr,
        "root_nid": sb.root_nid,
        "inodes": sb.inos,
        "epoch": sb.epoch,
        "fixed_nsec": sb.fixed_nsec,
        "build_time": sb.epoch.saturating_add(i64::from(raw.build_time.get())),
        "sb_size": sb.sb_size,
        "uuid": uuid_str(&raw.uuid),
        "volume_name": bytes_str(sb.volume_name()),
        "feature_compat": format!("{:#x}", sb.feature_compat),
        "feature_incompat": format!("{:#x}", sb.feature_incompat),
        "features": sb.feature_names(),
        "extra_devices": devices,
        "xattr_prefixes": prefixes,
        "packed_nid": sb.packed_nid,
        "metabox_nid": sb.metabox_nid,
        "compression": compression_json(&sb.compression),
        "fingerprint_xattr": img.fingerprint_prefix().map(|p| bytes_str(&p.full_name())),
        "ishare_xattr_prefix_id": sb.ishare_xattr_prefix_id,
    })
}

fn print_superblock(out: &mut impl Write, img: &Image, v: &Value) -> Result<()> {
    let rows = [
        ("Filesystem magic number", "magic"),
        ("Filesystem blocksize", "block_size"),
        ("Filesystem blocks", "blocks"),
        ("Filesystem inode metadata start block", "meta_blkaddr"),
        (
            "Filesystem shared xattr metadata start block",
            "xattr_blkaddr",
        ),
        ("Filesystem root nid", "root_nid"),
        ("Filesystem sb_size", "sb_size"),
        ("Filesystem inode count", "inodes"),
        ("Filesystem created", "build_time"),
        ("Filesystem checksum", "checksum"),
        ("Filesystem UUID", "uuid"),
        ("Filesystem volume name", "volume_name"),
    ];
    for (label, key) in rows {
        writeln!(out, "{:<46}{}", format!("{label}:"), plain(&v[key]))?;
    }
    let feats: Vec<String> = v["features"]
        .as_array()
        .into_iter()
        .flatten()
        .map(plain)
        .collect();
    // As dump.erofs: only images with a metabox (metadata compression) have the row.
    if !v["metabox_nid"].is_null() {
        writeln!(
            out,
            "{:<46}{}",
            "Filesystem metabox nid:",
            plain(&v["metabox_nid"])
        )?;
    }
    writeln!(out, "{:<46}{}", "Filesystem features:", feats.join(" "))?;
    let c = &v["compression"];
    if let Some(algs) = c["algorithms"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<String> = algs.iter().map(plain).collect();
        writeln!(out, "{:<46}{}", "Compression algorithms:", names.join(" "))?;
        for (label, key) in [
            ("LZ4 max distance", "lz4_max_distance"),
            ("LZ4 max pcluster blocks", "lz4_max_pclusterblks"),
            ("LZMA dictionary size", "lzma_dict_size"),
            ("DEFLATE window bits", "deflate_windowbits"),
            ("Zstandard window log", "zstd_windowlog"),
        ] {
            if !c[key].is_null() {
                writeln!(out, "{:<46}{}", format!("{label}:"), plain(&c[key]))?;
            }
        }
    }
    for (i, p) in img.long_prefixes().iter().enumerate() {
        writeln!(
            out,
            "{:<46}{}",
            format!("Xattr prefix {i}:"),
            bytes_str(&p.full_name())
        )?;
    }
    if let Some(id) = img.superblock().ishare_xattr_prefix_id {
        writeln!(
            out,
            "{:<46}{} (prefix {id})",
            "Page cache share fingerprint xattr:",
            plain(&v["fingerprint_xattr"])
        )?;
    }
    for (i, d) in img.devices().iter().enumerate() {
        writeln!(
            out,
            "{:<46}{} blocks {} at {}",
            format!("Extra device {}:", i + 1),
            bytes_str(&d.tag),
            d.blocks,
            d.uniaddr
        )?;
    }
    Ok(())
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Walks the whole tree once (the reader's walk) and counts: file types, sizes, a
/// size histogram.
fn stats_json(img: &Image) -> Result<Value> {
    let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
    let mut hist: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut files_bytes, mut fingerprints, mut inodes) = (0u64, 0u64, 0u64);
    // As dump.erofs counts: compressed files take their compressed blocks, the others
    // their size; the packed inode (fragments) counts once.
    let (mut compressed, mut uncompressed, mut stored) = (0u64, 0u64, 0u64);
    for step in img.walk(img.root()?, WalkOrder::DirectoryByDirectory) {
        let WalkStep::Entry(e) = step? else {
            continue;
        };
        if e.reached != Reached::First {
            continue; // hard link, or a directory cycle (reported by fsck and extract)
        }
        let ino = e.inode;
        inodes += 1;
        *by_type.entry(ino.file_type.name()).or_default() += 1;
        if ino.file_type == FileType::Regular {
            files_bytes += ino.size;
            stored += occupied(img, &ino);
            if ino.layout.is_compressed() {
                compressed += 1;
            } else {
                uncompressed += 1;
            }
            // Bucket k holds sizes in [2^(k-1), 2^k); bucket 0 is empty files.
            *hist.entry(64 - ino.size.leading_zeros()).or_default() += 1;
            if img.fingerprint(&ino)?.is_some() {
                fingerprints += 1;
            }
        }
    }
    let hist: Vec<Value> = hist
        .into_iter()
        .map(|(k, n)| {
            let (lo, hi) = if k == 0 {
                (0, 0)
            } else {
                (1u64 << (k - 1), (1u128 << k) as u64 - 1)
            };
            json!({"from": lo, "to": hi, "files": n})
        })
        .collect();
    if let Some(nid) = img.superblock().packed_nid {
        stored += occupied(img, &img.inode(nid)?);
    }
    let ratio = (files_bytes > 0).then(|| 100.0 * stored as f64 / files_bytes as f64);
    Ok(json!({
        "inodes": inodes + 1,
        "compressed_files": compressed,
        "uncompressed_files": uncompressed,
        "stored_file_bytes": stored,
        "compression_ratio_percent": ratio.map(|r| (r * 100.0).round() / 100.0),
        "by_type": by_type,
        "regular_file_bytes": files_bytes,
        "image_bytes": img.size(),
        "files_with_fingerprint": fingerprints,
        "file_size_histogram": hist,
    }))
}

fn print_stats(out: &mut impl Write, v: &Value) -> Result<()> {
    writeln!(
        out,
        "{:<46}{}",
        "Filesystem total inodes (root included):", v["inodes"]
    )?;
    for (t, n) in v["by_type"].as_object().into_iter().flatten() {
        writeln!(out, "{:<46}{n}", format!("Filesystem {t} count:"))?;
    }
    writeln!(
        out,
        "{:<46}{}",
        "Regular file bytes:", v["regular_file_bytes"]
    )?;
    writeln!(out, "{:<46}{}", "Compressed files:", v["compressed_files"])?;
    writeln!(
        out,
        "{:<46}{}",
        "Uncompressed files:", v["uncompressed_files"]
    )?;
    writeln!(
        out,
        "{:<46}{}",
        "Stored file bytes:", v["stored_file_bytes"]
    )?;
    if let Some(r) = v["compression_ratio_percent"].as_f64() {
        writeln!(out, "{:<46}{r:.2}%", "Compression ratio (stored/original):")?;
    }
    writeln!(out, "{:<46}{}", "Image bytes:", v["image_bytes"])?;
    writeln!(
        out,
        "{:<46}{}",
        "Files with a fingerprint:", v["files_with_fingerprint"]
    )?;
    writeln!(out, "File size distribution:")?;
    for h in v["file_size_histogram"].as_array().into_iter().flatten() {
        writeln!(out, "  {:>14} .. {:<14} {}", h["from"], h["to"], h["files"])?;
    }
    Ok(())
}

fn inode_json(img: &Image, ino: &Inode, path: Option<&str>) -> Result<Value> {
    let xattrs: Vec<Value> = img
        .xattrs(ino)?
        .iter()
        .map(
            |x| json!({"name": bytes_str(&x.name), "value": value_str(img, x), "shared": x.shared}),
        )
        .collect();
    let mut v = json!({
        "nid": ino.nid,
        "path": path,
        "type": ino.file_type.name(),
        "inode_format": if ino.extended { "extended" } else { "compact" },
        "layout": ino.layout.name(),
        "mode": format!("{:o}", ino.mode),
        "uid": ino.uid,
        "gid": ino.gid,
        "nlink": ino.nlink,
        "size": ino.size,
        "mtime": ino.mtime,
        "mtime_nsec": ino.mtime_nsec,
        "xattr_size": ino.xattr_isize,
        "location": ino.location(),
        "xattrs": xattrs,
    });
    let m = v.as_object_mut().expect("object");
    if let Some(b) = ino.start_block() {
        m.insert("start_block".into(), json!(b));
    }
    if let Some(blocks) = ino.compressed_blocks() {
        m.insert("compressed_blocks".into(), json!(blocks));
        let stored = occupied(img, ino);
        if ino.size > 0 {
            let r = 100.0 * stored as f64 / ino.size as f64;
            m.insert(
                "compression_ratio_percent".into(),
                json!((r * 100.0).round() / 100.0),
            );
        }
    }
    if let Some(c) = ino.chunk_size(img.superblock().blkszbits) {
        m.insert("chunk_size".into(), json!(c));
        m.insert(
            "chunk_format".into(),
            json!(format!("{:#x}", ino.chunk_format())),
        );
    }
    match ino.file_type {
        FileType::CharDevice | FileType::BlockDevice => {
            let (ma, mi) = ino.device_numbers();
            m.insert("rdev".into(), json!(format!("{ma}:{mi}")));
        }
        FileType::Symlink => {
            m.insert("target".into(), json!(bytes_str(&img.read_link(ino)?)));
        }
        _ => {}
    }
    Ok(v)
}

fn print_inode(out: &mut impl Write, v: &Value) -> Result<()> {
    if !v["path"].is_null() {
        writeln!(out, "Path: {}", plain(&v["path"]))?;
    }
    writeln!(
        out,
        "NID: {}  Type: {}  Inode: {}  Layout: {}",
        v["nid"],
        plain(&v["type"]),
        plain(&v["inode_format"]),
        plain(&v["layout"])
    )?;
    writeln!(
        out,
        "Size: {}  Links: {}  Xattr size: {}",
        v["size"], v["nlink"], v["xattr_size"]
    )?;
    writeln!(
        out,
        "Mode: {}  Uid: {}  Gid: {}",
        plain(&v["mode"]),
        v["uid"],
        v["gid"]
    )?;
    writeln!(
        out,
        "Mtime: {}.{:09}",
        v["mtime"],
        v["mtime_nsec"].as_u64().unwrap_or(0)
    )?;
    for key in [
        "start_block",
        "compressed_blocks",
        "compression_ratio_percent",
        "chunk_size",
        "chunk_format",
        "rdev",
        "target",
    ] {
        if !v[key].is_null() {
            writeln!(out, "{}: {}", key.replace('_', " "), plain(&v[key]))?;
        }
    }
    let xs = v["xattrs"].as_array().cloned().unwrap_or_default();
    if !xs.is_empty() {
        writeln!(out, "Xattrs:")?;
        for x in xs {
            let shared = if x["shared"] == json!(true) {
                " (shared)"
            } else {
                ""
            };
            writeln!(
                out,
                "  {}={}{shared}",
                plain(&x["name"]),
                plain(&x["value"])
            )?;
        }
    }
    Ok(())
}

/// Bytes a regular file occupies, as dump.erofs counts them: compressed blocks for
/// compressed inodes, the size for the others.
fn occupied(img: &Image, ino: &Inode) -> u64 {
    match ino.compressed_blocks() {
        Some(b) => b.saturating_mul(u64::from(img.superblock().block_size())),
        None => ino.size,
    }
}

fn compression_json(c: &CompressionInfo) -> Value {
    let algs: Vec<&str> = c.algorithm_list().iter().map(|a| a.name()).collect();
    json!({
        "algorithms": algs,
        "configs": c.has_configs,
        "lz4_max_distance": (c.algorithms & 1 != 0).then_some(c.lz4_max_distance),
        "lz4_max_pclusterblks": (c.algorithms & 1 != 0).then_some(c.lz4_max_pclusterblks),
        "lzma_dict_size": c.lzma_dict_size,
        "deflate_windowbits": c.deflate_windowbits,
        "zstd_windowlog": c.zstd_windowlog,
    })
}

/// Every extent of `ino`, from byte 0 to its size (compressed inodes: one per
/// pcluster, with its full decoded length, as `dump.erofs -e` shows them).
fn extents_json(img: &Image, ino: &Inode) -> Result<Vec<Value>> {
    let mut list = Vec::new();
    let mut pos = 0;
    while pos < ino.size {
        let e = img.map_raw(ino, pos)?;
        let (physical, plen, kind) = match e.kind {
            ExtentKind::Hole => (None, 0, json!({"type": "hole"})),
            ExtentKind::Mapped { device, offset } => (
                Some(offset),
                e.len,
                json!({"type": "mapped", "device": device}),
            ),
            ExtentKind::Inline { offset } => (Some(offset), e.len, json!({"type": "inline"})),
            ExtentKind::Compressed(p) => (
                Some(p.offset),
                u64::from(p.len),
                json!({
                    "type": if p.inline { "inline-pcluster" } else { "pcluster" },
                    "algorithm": p.algorithm.name(),
                    "partial": p.partial,
                }),
            ),
            ExtentKind::Fragment { offset } => (
                None,
                0,
                json!({"type": "fragment", "packed_offset": offset}),
            ),
        };
        let mut v = json!({
            "logical": e.logical,
            "length": e.len,
            "physical": physical,
            "physical_length": plen,
        });
        let m = v.as_object_mut().expect("object");
        for (k, x) in kind.as_object().expect("object") {
            m.insert(k.clone(), x.clone());
        }
        list.push(v);
        pos = e.logical + e.len;
    }
    Ok(list)
}

fn print_extents(out: &mut impl Write, what: &str, list: &[Value]) -> Result<()> {
    writeln!(
        out,
        " Ext:   logical offset   |  length :     physical offset    |  length"
    )?;
    for (i, e) in list.iter().enumerate() {
        let la = e["logical"].as_u64().unwrap_or(0);
        let len = e["length"].as_u64().unwrap_or(0);
        let pa = e["physical"].as_u64().unwrap_or(0);
        let plen = e["physical_length"].as_u64().unwrap_or(0);
        let mut note = plain(&e["type"]);
        if let Some(a) = e["algorithm"].as_str() {
            note = format!("{note} {a}");
        }
        if e["partial"] == json!(true) {
            note.push_str(" partial");
        }
        if let Some(o) = e["packed_offset"].as_u64() {
            note = format!("{note} at {o} of the packed inode");
        }
        writeln!(
            out,
            "{i:4}: {la:8}..{:8} | {len:7} : {pa:10}..{:10} | {plen:7}  # {note}",
            la + len,
            pa + plen
        )?;
    }
    writeln!(out, "{what}: {} extents found", list.len())?;
    Ok(())
}
