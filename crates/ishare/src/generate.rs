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

/// A block of a command's long help (see help.rs) and the man page section it
/// becomes: `Examples:` holds (what it does, command lines) pairs; every other block
/// (`Exit status:`, `Environment:`, `Files:`) holds `  TERM  meaning` lines.
enum Block {
    Examples(Vec<(String, Vec<String>)>),
    Terms(Vec<(String, String)>),
}

/// The blocks of a long help, in order, by their man page section name. Examples and
/// Exit status are required, so a new command cannot ship without them.
fn parse_after_help(name: &str, after: Option<&str>) -> Result<Vec<(String, Block)>> {
    let Some(after) = after else {
        bail!("{name} has no after_long_help with Examples and Exit status (see help.rs)");
    };
    let mut blocks: Vec<(String, Block)> = Vec::new();
    for line in after.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let Some(title) = line.strip_suffix(':') else {
                bail!("{name}: {line:?} in the long help is not a `Title:` line");
            };
            let block = if title == "Examples" {
                Block::Examples(Vec::new())
            } else {
                Block::Terms(Vec::new())
            };
            blocks.push((title.to_uppercase(), block));
            continue;
        }
        match blocks.last_mut() {
            None => bail!("{name}: long help text before its first `Title:` line"),
            Some((_, Block::Examples(ex))) if line.starts_with("    ") => match ex.last_mut() {
                // Continuation lines keep their indentation past the command's.
                Some((_, cmds)) => cmds.push(line[4..].to_owned()),
                None => bail!("{name}: an example command before its description"),
            },
            Some((_, Block::Examples(ex))) => ex.push((line.trim().to_owned(), Vec::new())),
            Some((title, Block::Terms(terms))) => {
                let Some((term, what)) = line.trim().split_once("  ") else {
                    bail!("{name}: {title} line {line:?} is not `TERM  meaning`");
                };
                terms.push((term.to_owned(), what.trim().to_owned()));
            }
        }
    }
    let has = |t: &str| {
        blocks.iter().any(|(title, b)| {
            title == t
                && match b {
                    Block::Examples(ex) => !ex.is_empty() && ex.iter().all(|(_, c)| !c.is_empty()),
                    Block::Terms(terms) => !terms.is_empty(),
                }
        })
    };
    for required in ["EXAMPLES", "EXIT STATUS"] {
        if !has(required) {
            bail!("{name}: no (or an empty) {required} block in its long help");
        }
    }
    Ok(blocks)
}

/// The long help's sections (EXAMPLES, EXIT STATUS, ...), then SEE ALSO.
fn extra_sections(name: &str, after: Option<&str>) -> Result<String> {
    let mut r = Roff::new();
    for (title, block) in parse_after_help(name, after)? {
        r.control("SH", [title.as_str()]);
        match block {
            Block::Examples(ex) => {
                for (what, cmds) in &ex {
                    // Command lines as written (no filling): a long one is continued
                    // with `\`.
                    r.control("TP", []).text([roman(what.as_str())]);
                    r.control("nf", []);
                    for cmd in cmds {
                        r.text([bold(cmd.as_str())]);
                    }
                    r.control("fi", []);
                }
            }
            Block::Terms(terms) => {
                for (term, what) in &terms {
                    r.control("TP", [])
                        .text([bold(term.as_str())])
                        .text([roman(what.as_str())]);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_help_blocks_parse_and_examples_exit_status_are_required() {
        let ok = "Examples:\n  Do it:\n    ishare x \\\n      y\n\nExit status:\n  0  fine\n\
                  \nEnvironment:\n  X_Y  what it sets\n";
        let blocks = parse_after_help("t", Some(ok)).expect("parses");
        let titles: Vec<_> = blocks.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles, ["EXAMPLES", "EXIT STATUS", "ENVIRONMENT"]);
        match &blocks[0].1 {
            Block::Examples(ex) => assert_eq!(
                ex,
                &[(
                    "Do it:".to_owned(),
                    vec!["ishare x \\".to_owned(), "  y".to_owned()]
                )]
            ),
            Block::Terms(_) => panic!("examples parsed as terms"),
        }
        for bad in [
            None,
            Some("Exit status:\n  0  fine\n"),
            Some("Examples:\n  Do it:\n    ishare x\n"),
            Some("Examples:\n  Do it:\nExit status:\n  0  fine\n"),
            Some("Examples:\n  Do it:\n    ishare x\nExit status:\n  0 fine\n"),
            Some("  stray\nExamples:\n  Do it:\n    ishare x\nExit status:\n  0  fine\n"),
        ] {
            assert!(parse_after_help("t", bad).is_err(), "{bad:?} accepted");
        }
    }
}
