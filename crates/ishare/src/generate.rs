//! `ishare generate man DIR` and `ishare generate completions DIR` (hidden): man pages
//! and shell completions written from the command line's own definitions (clap's for
//! every subcommand: about, long about, options, and the EXAMPLES and EXIT STATUS of
//! the long help, help.rs; the `--help` text for `mkfs`), so that neither can drift
//! from the program. `scripts/package.sh` and `tests/manpages.rs` call it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::mkfs::{self, Flavor};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Write ishare.1 and one page per subcommand into DIR.
    Man { dir: PathBuf },
    /// Write bash, zsh and fish completions into DIR.
    Completions { dir: PathBuf },
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Man { dir } => man_pages(&dir),
        What::Completions { dir } => completions(&dir),
    }
}

/// Administrative commands (they run daemons or mount) belong in section 8.
fn section(sub: &str) -> &'static str {
    match sub {
        "mount" | "daemon" | "snapshotter" => "8",
        _ => "1",
    }
}

/// The `Examples:` and `Exit status:` blocks of a command's long help (see help.rs):
/// (what it does, command lines) pairs and (code, meaning) pairs. A command without
/// both is an error, so a new one cannot ship without them.
type Examples = Vec<(String, Vec<String>)>;
type Statuses = Vec<(String, String)>;

fn parse_after_help(name: &str, after: Option<&str>) -> Result<(Examples, Statuses)> {
    let Some(after) = after else {
        bail!("{name} has no after_long_help with Examples and Exit status (see help.rs)");
    };
    let (mut examples, mut statuses) = (Examples::new(), Statuses::new());
    let mut block = "";
    for line in after.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            block = line;
            continue;
        }
        match block {
            "Examples:" if line.starts_with("    ") => match examples.last_mut() {
                // Continuation lines keep their indentation past the command's.
                Some((_, cmds)) => cmds.push(line[4..].to_owned()),
                None => bail!("{name}: an example command before its description"),
            },
            "Examples:" => examples.push((line.trim().to_owned(), Vec::new())),
            "Exit status:" => {
                let Some((code, what)) = line.trim().split_once("  ") else {
                    bail!("{name}: exit status line {line:?} is not `CODE  meaning`");
                };
                statuses.push((code.to_owned(), what.trim().to_owned()));
            }
            other => bail!("{name}: unknown block {other:?} in the long help"),
        }
    }
    if examples.is_empty() || examples.iter().any(|(_, c)| c.is_empty()) {
        bail!("{name}: no Examples (or one without a command) in its long help");
    }
    if statuses.is_empty() {
        bail!("{name}: no Exit status in its long help");
    }
    Ok((examples, statuses))
}

/// EXAMPLES and EXIT STATUS (from the long help), SEE ALSO.
fn extra_sections(name: &str, after: Option<&str>) -> Result<String> {
    let (examples, statuses) = parse_after_help(name, after)?;
    let mut r = Roff::new();
    r.control("SH", ["EXAMPLES"]);
    for (what, cmds) in &examples {
        // Command lines as written (no filling): a long one is continued with `\`.
        r.control("TP", []).text([roman(what.as_str())]);
        r.control("nf", []);
        for cmd in cmds {
            r.text([bold(cmd.as_str())]);
        }
        r.control("fi", []);
    }
    r.control("SH", ["EXIT STATUS"]);
    for (code, what) in &statuses {
        r.control("TP", [])
            .text([bold(code.as_str())])
            .text([roman(what.as_str())]);
    }
    if name != "ishare" {
        r.control("SH", ["SEE ALSO"])
            .text([bold("ishare"), roman("(1)")]);
    }
    Ok(r.to_roff())
}

/// A page: clap_mangen's sections, then a SUBCOMMANDS section naming each page with its
/// own section number (clap_mangen gives every one its parent's), then ours.
fn write_page(dir: &Path, cmd: clap::Command, name: &str, section: &str) -> Result<()> {
    // No `help` subcommand: it has no page.
    let cmd = cmd.disable_help_subcommand(true);
    let man = Man::new(cmd.clone()).title(name).section(section);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subs.is_empty() {
        let mut r = Roff::new();
        r.control("SH", ["SUBCOMMANDS"]);
        for sub in subs {
            let sect = if name == "ishare" {
                self::section(sub.get_name())
            } else {
                section
            };
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            r.control("TP", [])
                .text([bold(format!("{name}-{}({sect})", sub.get_name()))])
                .text([roman(about)]);
        }
        out.extend_from_slice(r.to_roff().as_bytes());
    }
    man.render_version_section(&mut out)?;
    let after = cmd.get_after_long_help().map(|a| a.to_string());
    out.extend_from_slice(extra_sections(name, after.as_deref())?.as_bytes());
    let path = dir.join(format!("{name}.{section}"));
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}

fn man_pages(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = crate::Cli::command();
    let version = cmd.get_version().unwrap_or_default().to_owned();
    write_page(dir, cmd.clone(), "ishare", "1")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        if name == "mkfs" {
            // Not clap's: its parser is mkfs.erofs's (see mkfs/args.rs).
            let path = dir.join("ishare-mkfs.1");
            let after = sub.get_after_long_help().map(|a| a.to_string());
            let page = mkfs_page(&version)? + &extra_sections("ishare-mkfs", after.as_deref())?;
            fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
            continue;
        }
        let sect = section(name);
        let page_name = format!("ishare-{name}");
        let c = sub
            .clone()
            .name(&page_name)
            .bin_name(format!("ishare {name}"))
            .version(version.clone());
        write_page(dir, c.clone(), &page_name, sect)?;
        for nested in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let n = nested.get_name();
            let nested_name = format!("{page_name}-{n}");
            let nc = nested
                .clone()
                .name(&nested_name)
                .bin_name(format!("ishare {name} {n}"))
                .version(version.clone());
            write_page(dir, nc, &nested_name, sect)?;
        }
    }
    Ok(())
}

/// `ishare-mkfs(1)` from the text `ishare mkfs --help` prints: option lines (starting
/// with `-`) become tagged paragraphs, their descriptions the continuation lines.
fn mkfs_page(version: &str) -> Result<String> {
    let help = mkfs::help::usage("ishare mkfs", Flavor::Ishare);
    let mut lines = help.lines();
    let mut r = Roff::new();
    r.control("TH", ["ishare-mkfs", "1", "", &format!("ishare {version}")]);
    r.control("SH", ["NAME"]).text([roman(
        "ishare-mkfs - build an EROFS image from a directory or a tar",
    )]);
    let usage = lines.next().unwrap_or_default();
    let Some(synopsis) = usage.strip_prefix("Usage: ") else {
        bail!("the mkfs help does not start with Usage:");
    };
    r.control("SH", ["SYNOPSIS"]).text([bold(synopsis)]);
    r.control("SH", ["DESCRIPTION"]);
    let mut desc = String::new();
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
        desc.push_str(l.trim());
        desc.push(' ');
    }
    desc.push_str(
        "As ishare mkfs it records every file's fingerprint (the xattr of mkfs.erofs \
         --xattr-inode-digest) unless given --no-xattr-inode-digest; under the name mkfs.erofs (a link to \
         ishare) the program takes the same options, prints erofs-utils' version line and \
         records fingerprints only when asked.",
    );
    r.text([roman(desc)]);
    r.control("SH", ["OPTIONS"]);
    // (option spec, description) pairs; a spec without description on its line takes
    // the following indented lines.
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut tail = String::new();
    // The option table ends at the first blank line after it; the rest (what is refused)
    // is prose, though a line of it may start with an option's name.
    let mut in_table = false;
    for l in lines {
        let t = l.trim();
        if t.is_empty() {
            if in_table {
                in_table = false;
                tail.push(' ');
            }
            continue;
        }
        if tail.is_empty() && t.starts_with('-') && l.len() - l.trim_start().len() < 8 {
            in_table = true;
            let (spec, d) = t.split_once("  ").unwrap_or((t, ""));
            opts.push((spec.trim().to_owned(), d.trim().to_owned()));
        } else if l.starts_with("   ") && !opts.is_empty() && tail.is_empty() {
            let d = &mut opts.last_mut().expect("checked non-empty").1;
            if !d.is_empty() {
                d.push(' ');
            }
            d.push_str(t);
        } else {
            tail.push_str(t);
            tail.push(' ');
        }
    }
    if opts.is_empty() {
        bail!("no options found in the mkfs help");
    }
    for (spec, d) in &opts {
        r.control("TP", [])
            .text([bold(spec.as_str())])
            .text([roman(d.as_str())]);
    }
    if !tail.is_empty() {
        r.control("SH", ["NOTES"]).text([roman(tail.trim())]);
    }
    Ok(r.to_roff())
}

fn completions(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = crate::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "ishare", dir)
            .with_context(|| format!("writing the {shell} completions"))?;
    }
    Ok(())
}
