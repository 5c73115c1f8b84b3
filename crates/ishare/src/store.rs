//! `ishare store stat` and `ishare store gc`: the object store behind
//! `ishare mount -o inode_share` (logic in `ishare_share::inventory` and `ishare_share::gc`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use ishare_share::{Counts, DEFAULT_STORE, GcOptions, human_bytes};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Objects, bytes, domains (by tag, never the id), what live mounts use and save.
    ///
    /// Counts the store's objects and bytes, verified or not, per sharing domain (named
    /// by a tag, a keyed hash, never by the id), which objects live mounts hold and for
    /// how many mounts, the page cache that sharing saves, and stray temporary and
    /// lock files.
    #[command(after_long_help = crate::help::STORE_STAT)]
    Stat(StatArgs),
    /// Remove objects no live mount uses, stray temporary files and empty directories.
    ///
    /// Every mount holds a shared lock on each object it serves from; gc removes only
    /// objects nobody holds (all of them, or with --max-size the least recently used
    /// until the store fits), and stray temporary files, unheld lock files and empty
    /// directories. A mount reading a removed object keeps reading the same bytes.
    #[command(after_long_help = crate::help::STORE_GC)]
    Gc(GcArgs),
}

#[derive(clap::Args, Debug)]
struct StatArgs {
    /// The store (as `ishare mount -o store=DIR`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct GcArgs {
    /// The store (as `ishare mount -o store=DIR`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Remove unused objects only until the store takes at most SIZE on disk.
    ///
    /// Least recently used first. SIZE in bytes, or with K, M, G, T (powers of 1024) or
    /// KB, MB, GB, TB (powers of 1000). Without it, every unused object goes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Only tell what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    ishare_share::parse_size(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    // A store others can change is refused by mounts; the read-only tools still work on
    // it (to inspect or empty it) but say so.
    let store = match &args.cmd {
        Cmd::Stat(a) => &a.store,
        Cmd::Gc(a) => &a.store,
    };
    if let Some(why) = ishare_share::store_path_problem(store) {
        eprintln!("ishare: warning: {why}; mounts refuse this store");
    }
    match args.cmd {
        Cmd::Stat(a) => stat(a),
        Cmd::Gc(a) => gc(a),
    }
}

fn counts_json(c: &Counts, holders_known: bool) -> Value {
    json!({
        "objects": c.objects,
        "verified": c.verified,
        "unverified": c.unverified,
        "bytes": c.bytes,
        "disk_bytes": c.disk_bytes,
        "in_use_objects": c.in_use,
        "in_use_bytes": c.in_use_bytes,
        "mounts": if holders_known { json!(c.mounts) } else { Value::Null },
        "bytes_saved": if holders_known { json!(c.bytes_saved) } else { Value::Null },
    })
}

/// "1 empty directory", "2 empty directories".
fn plural_dirs(n: u64) -> String {
    let word = if n == 1 { "directory" } else { "directories" };
    format!("{n} empty {word}")
}

/// "1 object", "2 objects".
fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn counts_line(c: &Counts) -> String {
    format!(
        "{} ({} verified, {} unverified), {} ({} on disk)",
        plural(c.objects, "object"),
        c.verified,
        c.unverified,
        human_bytes(c.bytes),
        human_bytes(c.disk_bytes)
    )
}

fn stat(a: StatArgs) -> Result<()> {
    let inv = ishare_share::inventory(&a.store)?;
    if a.json {
        let mut v = json!({
            "store": inv.root,
            "exists": inv.exists,
            "tmp_files": inv.tmp_files,
            "tmp_bytes": inv.tmp_bytes,
            "lock_files": inv.lock_files,
            "other_files": inv.other_files,
            "other_bytes": inv.other_bytes,
            "domains": inv.domains.iter().map(|d| {
                let mut c = counts_json(&d.counts, inv.holders_known);
                c["tag"] = json!(d.tag);
                c
            }).collect::<Vec<_>>(),
        });
        if let (Value::Object(m), Value::Object(c)) =
            (&mut v, counts_json(&inv.total, inv.holders_known))
        {
            m.extend(c);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("store        {}", inv.root.display());
    if !inv.exists {
        println!("             does not exist (no mount has shared anything in it yet)");
        return Ok(());
    }
    let in_use = |c: &Counts, prefix: &str| {
        let mut line = format!(
            "{prefix}in use       {} ({})",
            plural(c.in_use, "object"),
            human_bytes(c.in_use_bytes)
        );
        if inv.holders_known {
            line.push_str(&format!(
                " by {}; sharing saves {} of page cache once each has read what it holds",
                plural(c.mounts as u64, "mount"),
                human_bytes(c.bytes_saved)
            ));
        }
        println!("{line}");
    };
    println!("objects      {}", counts_line(&inv.total));
    in_use(&inv.total, "");
    println!(
        "stray        {} ({}), {}, {} not of the store",
        plural(inv.tmp_files, "temporary file"),
        human_bytes(inv.tmp_bytes),
        plural(inv.lock_files, "lock file"),
        plural(inv.other_files, "file")
    );
    for d in &inv.domains {
        println!("domain {}", d.tag);
        println!("  objects      {}", counts_line(&d.counts));
        in_use(&d.counts, "  ");
    }
    Ok(())
}

fn gc(a: GcArgs) -> Result<()> {
    let opts = GcOptions {
        max_size: a.max_size,
        dry_run: a.dry_run,
    };
    let r = ishare_share::gc(&a.store, &opts)?;
    if a.json {
        let v = json!({
            "store": r.root,
            "exists": r.exists,
            "dry_run": r.dry_run,
            "max_size": r.max_size,
            "size_before": r.size_before,
            "size_after": r.size_after,
            "removed_objects": r.removed_objects,
            "removed_bytes": r.removed_bytes,
            "in_use_objects": r.in_use_objects,
            "in_use_bytes": r.in_use_bytes,
            "kept_objects": r.kept_objects,
            "kept_bytes": r.kept_bytes,
            "removed_tmp_files": r.removed_tmp_files,
            "removed_tmp_bytes": r.removed_tmp_bytes,
            "kept_tmp_files": r.kept_tmp_files,
            "removed_lock_files": r.removed_lock_files,
            "removed_probe_files": r.removed_probe_files,
            "removed_dirs": r.removed_dirs,
            "other_files": r.other_files,
            "errors": r.errors,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !r.exists {
        println!("{}: does not exist; nothing to do", r.root.display());
    } else {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        println!(
            "{verb} {} ({}), {} ({}), {}, {}",
            plural(r.removed_objects, "object"),
            human_bytes(r.removed_bytes),
            plural(r.removed_tmp_files, "temporary file"),
            human_bytes(r.removed_tmp_bytes),
            plural(r.removed_lock_files, "lock file"),
            plural_dirs(r.removed_dirs)
        );
        println!(
            "kept {} in use ({}), {} unused within --max-size ({}), {} being written",
            plural(r.in_use_objects, "object"),
            human_bytes(r.in_use_bytes),
            r.kept_objects,
            human_bytes(r.kept_bytes),
            plural(r.kept_tmp_files, "temporary file")
        );
        println!(
            "store files: {} before, {} after{}",
            human_bytes(r.size_before),
            human_bytes(r.size_after),
            match r.max_size {
                Some(m) if r.size_after > m => format!(
                    " (above --max-size {}: the rest is in use{})",
                    human_bytes(m),
                    if r.other_files > 0 {
                        " or not the store's"
                    } else {
                        ""
                    }
                ),
                _ => String::new(),
            }
        );
        for e in &r.errors {
            eprintln!("ishare: store gc: {e}");
        }
    }
    if !r.errors.is_empty() {
        bail!("{} files could not be removed", r.errors.len());
    }
    Ok(())
}
