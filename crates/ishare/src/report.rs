//! `ishare report`: what a set of images would share under `inode_share`, from their
//! metadata. The analysis is `ishare_share::report`; this module only reads the
//! command line and formats: text, `--json`, `--svg`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ishare_share::human_bytes;
use ishare_share::report::{self, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also draw the figures as an SVG picture into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// How many of the largest shared contents to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Extra device (blob) file of a multi-device image (repeatable).
    ///
    /// Each image, in the order given, takes as many as its device table lists.
    #[arg(long = "device", value_name = "PATH")]
    devices: Vec<PathBuf>,
    /// Hash every file's content and check it against its fingerprint.
    ///
    /// Files whose content does not match are listed, and counted as not shared.
    #[arg(long)]
    verify: bool,
    /// The EROFS images.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let images = report::open_images(&a.images, &a.devices)?;
    let mut scans = report::scan_all(&images)?;
    for s in &scans {
        let (files, bytes) = s.to_hash(a.verify);
        if files > 0 {
            let why = if a.verify {
                "to verify their fingerprints"
            } else if s.has_fingerprints {
                "they have no fingerprint"
            } else {
                "the image has no fingerprints"
            };
            eprintln!(
                "{}: hashing {files} files ({}): {why}",
                s.path,
                human_bytes(bytes)
            );
        }
    }
    report::hash_contents(&images, &mut scans, a.verify)?;
    let r = report::analyze(&scans, a.top);
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(&r)).with_context(|| format!("write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
    } else {
        out.write_all(text(&r).as_bytes())?;
    }
    Ok(())
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The report for people.
fn text(r: &Report) -> String {
    let mut s = String::new();
    let width = r
        .images
        .iter()
        .map(|i| i.path.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        s,
        "{:<width$} {:>8} {:>11} {:>11} {:>17}",
        "IMAGE", "FILES", "BYTES", "IN PAGES", "SHARED WITH OTHERS"
    );
    for i in &r.images {
        let _ = writeln!(
            s,
            "{:<width$} {:>8} {:>11} {:>11} {:>11} {:>5}",
            i.path,
            i.files,
            human_bytes(i.bytes),
            human_bytes(i.page_bytes),
            human_bytes(i.shared_bytes),
            percent(i.shared_bytes, i.bytes)
        );
    }
    let set = &r.set;
    let _ = writeln!(
        s,
        "\npage cache to hold every file of {} image{} ({} of files):",
        r.images.len(),
        if r.images.len() == 1 { "" } else { "s" },
        human_bytes(set.bytes)
    );
    let _ = writeln!(
        s,
        "  without sharing (once per image):           {:>11}",
        human_bytes(set.page_cache_unshared)
    );
    let _ = writeln!(
        s,
        "  with inode_share (once per content):        {:>11}",
        human_bytes(set.page_cache_shared)
    );
    let _ = writeln!(
        s,
        "  saving:                                     {:>11} ({:.1}%)",
        human_bytes(set.saving_bytes),
        set.saving_percent
    );
    if set.page_cache_shared_if_fingerprinted != set.page_cache_shared {
        let _ = writeln!(
            s,
            "  with fingerprints in every file (rebuilt):  {:>11}",
            human_bytes(set.page_cache_shared_if_fingerprinted)
        );
    }
    if !r.top_shared.is_empty() {
        let _ = writeln!(s, "\nlargest contents held by more than one image:");
        for c in &r.top_shared {
            let _ = writeln!(
                s,
                "  {:>11}  in {} images  {}",
                human_bytes(c.size),
                c.images,
                c.fingerprint
            );
            for p in &c.paths {
                let _ = writeln!(s, "      {}: {}", p.image, p.path);
            }
        }
    }
    if !r.size_conflicts.is_empty() {
        let _ = writeln!(
            s,
            "\nsame fingerprint, different sizes (these do not share: the kernel needs equal sizes):"
        );
        for c in &r.size_conflicts {
            let _ = writeln!(s, "  {}", c.fingerprint);
            for f in &c.files {
                let _ = writeln!(s, "      {} bytes  {}: {}", f.size, f.image, f.path);
            }
        }
    }
    if !r.images_without_fingerprints.is_empty() {
        let _ = writeln!(
            s,
            "\nimages without fingerprints (they cannot share until rebuilt with them):"
        );
        for i in &r.images_without_fingerprints {
            let _ = writeln!(s, "  {i}");
        }
    }
    if !r.unusable_fingerprints.is_empty() {
        let _ = writeln!(
            s,
            "\nfingerprints the kernel ignores (empty or longer than a block; not shared):"
        );
        for u in &r.unusable_fingerprints {
            let _ = writeln!(s, "  {}: {} ({} bytes)", u.image, u.path, u.length);
        }
    }
    if !r.fingerprint_mismatches.is_empty() {
        let _ = writeln!(
            s,
            "\nfiles whose content does not match their fingerprint (not shared by ishare mount):"
        );
        for f in &r.fingerprint_mismatches {
            let _ = writeln!(s, "  {}: {}", f.image, f.path);
        }
    }
    if !r.not_hashed.is_empty() {
        let _ = writeln!(
            s,
            "\nnot hashed, larger than 1 GiB and {} times their image (holes, or a hostile size; counted as their own):",
            report::HASH_LIMIT_FACTOR
        );
        for f in &r.not_hashed {
            let _ = writeln!(s, "  {}: {} ({} bytes)", f.image, f.path, f.size);
        }
    }
    if r.hashed.files > 0 {
        let _ = writeln!(
            s,
            "\nhashed {} files ({})",
            r.hashed.files,
            human_bytes(r.hashed.bytes)
        );
    }
    s
}

/// Text for XML character data and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow (control characters in a path).
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The report as an SVG bar chart: one bar per image (content shared with other
/// images, and its own), then the page cache totals without and with sharing. Each
/// bar segment carries its byte count (`data-bytes`) and its kind (`class`), so
/// scripts and tests can read the figures back. Written by hand: a few rectangles
/// and labels need no charting crate.
fn svg(r: &Report) -> String {
    const LABEL: f64 = 260.0;
    const BAR: f64 = 500.0;
    const ROW: f64 = 34.0;
    const WIDTH: f64 = LABEL + BAR + 120.0;
    let max = r
        .images
        .iter()
        .map(|i| i.bytes)
        .chain([r.set.page_cache_unshared, r.set.page_cache_shared])
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let len = |b: u64| b as f64 / max * BAR;
    let rows = r.images.len() + 2;
    let height = 90.0 + ROW * rows as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="24" font-size="16" font-weight="bold">Page cache of {} images: {} without sharing, {} with inode_share (saving {:.1}%)</text>"#,
        r.images.len(),
        human_bytes(r.set.page_cache_unshared),
        human_bytes(r.set.page_cache_shared),
        r.set.saving_percent
    );
    // Legend.
    let _ = writeln!(
        s,
        r##"<rect x="10" y="40" width="14" height="14" fill="#2a9d8f"/><text x="30" y="52">content another image also holds</text><rect x="260" y="40" width="14" height="14" fill="#e76f51"/><text x="280" y="52">content of its own</text><rect x="420" y="40" width="14" height="14" fill="#6c757d"/><text x="440" y="52">page cache totals</text>"##
    );
    let mut y = 70.0;
    for i in &r.images {
        let own = i.bytes - i.shared_bytes;
        let (ws, wo) = (len(i.shared_bytes), len(own));
        let _ = writeln!(
            s,
            r#"<g class="image" data-path="{}" data-bytes="{}">"#,
            xml_escape(&i.path),
            i.bytes
        );
        // The file name as the label (the full path in its tooltip).
        let short = i.path.rsplit('/').next().unwrap_or(&i.path);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}<title>{}</title></text>"#,
            LABEL - 8.0,
            y + 17.0,
            xml_escape(short),
            xml_escape(&i.path)
        );
        let _ = writeln!(
            s,
            r##"<rect class="shared" data-bytes="{}" x="{LABEL}" y="{y}" width="{ws:.2}" height="24" fill="#2a9d8f"><title>shared: {}</title></rect>"##,
            i.shared_bytes,
            human_bytes(i.shared_bytes)
        );
        let _ = writeln!(
            s,
            r##"<rect class="own" data-bytes="{own}" x="{:.2}" y="{y}" width="{wo:.2}" height="24" fill="#e76f51"><title>own: {}</title></rect>"##,
            LABEL + ws,
            human_bytes(own)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{}">{}</text>"#,
            LABEL + ws + wo + 6.0,
            y + 17.0,
            human_bytes(i.bytes)
        );
        let _ = writeln!(s, "</g>");
        y += ROW;
    }
    y += 10.0;
    for (class, label, bytes) in [
        (
            "total-unshared",
            "page cache without sharing",
            r.set.page_cache_unshared,
        ),
        (
            "total-shared",
            "page cache with inode_share",
            r.set.page_cache_shared,
        ),
    ] {
        let w = len(bytes);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" font-weight="bold">{label}</text>"#,
            LABEL - 8.0,
            y + 17.0
        );
        let _ = writeln!(
            s,
            r##"<rect class="{class}" data-bytes="{bytes}" x="{LABEL}" y="{y}" width="{w:.2}" height="24" fill="#6c757d"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{}" font-weight="bold">{}</text>"#,
            LABEL + w + 6.0,
            y + 17.0,
            human_bytes(bytes)
        );
        y += ROW;
    }
    let _ = writeln!(s, "</svg>");
    s
}
