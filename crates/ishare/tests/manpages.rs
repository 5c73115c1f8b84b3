//! The man pages `ishare generate man` writes: each renders without warnings, has a
//! DESCRIPTION paragraph, EXAMPLES and EXIT STATUS and the workspace's version; every
//! subcommand `ishare --help` lists has a page, and every long option a `--help` lists
//! appears in its page — so an option added without documentation fails here. `--help`
//! carries the same examples and exit statuses; `-h` stays short.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ISHARE: &str = env!("CARGO_BIN_EXE_ishare");

fn run(args: &[&str]) -> String {
    let out = Command::new(ISHARE)
        .args(args)
        .output()
        .expect("run ishare");
    assert!(
        out.status.success(),
        "ishare {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands of a clap `--help` (the "Commands:" block), without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect()
}

/// Every `--long-option` a help text names in an option position (the start of a
/// line's option list), e.g. `  -o, --options <O>` or ` --tar=X`.
fn long_options(help: &str) -> BTreeSet<String> {
    let mut opts = BTreeSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        // The option spec ends at the first run of two spaces (then the description).
        let spec = t.split("  ").next().unwrap_or(t);
        for word in spec.split([',', ' ', '=', '[']) {
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() {
                    opts.insert(format!("--{name}"));
                }
            }
        }
    }
    opts
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How many words a page's section (roff source, `.SH NAME` to the next `.SH`) holds.
fn section_words(text: &str, name: &str) -> usize {
    text.lines()
        .skip_while(|l| *l != format!(".SH {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .filter(|l| !l.starts_with('.'))
        .map(|l| l.split_whitespace().count())
        .sum()
}

/// A page's source with roff's escaped hyphens plain, for looking options up.
fn page_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read page")
        .replace("\\-", "-")
}

fn page(dir: &Path, name: &str) -> std::path::PathBuf {
    for sect in ["1", "8"] {
        let p = dir.join(format!("{name}.{sect}"));
        if p.exists() {
            return p;
        }
    }
    panic!("no man page for {name}");
}

fn assert_options_documented(help: &str, page_path: &Path) {
    let text = page_text(page_path);
    let opts = long_options(help);
    assert!(
        opts.contains("--help"),
        "no options parsed from help:\n{help}"
    );
    let missing: Vec<_> = opts.iter().filter(|o| !text.contains(o.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} lacks {missing:?}",
        page_path.display()
    );
}

/// `--help` (long) ends with the examples and exit statuses the man page shows; `-h`
/// (short) leaves them (and the long descriptions) out.
fn assert_long_and_short_help(cmd: &[&str]) {
    let long = run(&[cmd, &["--help"]].concat());
    let short = run(&[cmd, &["-h"]].concat());
    for block in ["\nExamples:\n", "\nExit status:\n  0  "] {
        assert!(
            long.contains(block),
            "ishare {cmd:?} --help lacks {block:?}"
        );
        assert!(!short.contains(block), "ishare {cmd:?} -h has {block:?}");
    }
    assert!(
        short.len() < long.len(),
        "ishare {cmd:?} -h is not short ({} bytes, --help {})",
        short.len(),
        long.len()
    );
}

#[test]
fn long_options_parses_both_help_styles() {
    let clap = "Options:\n  -o, --options <O>  Mount options\n      --json  As JSON\n";
    let mkfs = " -zX[,level=Y]\n --tar=X   from a tar\n --ungzip[=X]  gz\n text --not-an-option\n";
    assert_eq!(
        long_options(clap),
        BTreeSet::from(["--options".into(), "--json".into()])
    );
    assert_eq!(
        long_options(mkfs),
        BTreeSet::from(["--tar".into(), "--ungzip".into()])
    );
}

#[test]
fn man_pages_render_and_document_every_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(&["generate", "man", d.to_str().expect("utf-8 path")]);

    // Each page renders without warnings, through man(1) as a user reads it and
    // through groff with every warning on.
    let mut pages: Vec<_> = std::fs::read_dir(d)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    pages.sort();
    assert!(pages.len() > 10, "too few pages: {pages:?}");
    for p in &pages {
        let out = Command::new("man")
            .args(["-l", "--warnings"])
            .arg(p)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_STDERR", "1")
            .output()
            .expect("run man (install man-db: scripts/install-deps.sh)");
        assert!(out.status.success(), "man -l {}", p.display());
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(p)
            .output()
            .expect("run groff");
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = page_text(p);
        // .TH NAME SECTION DATE "ishare VERSION" (or clap_mangen's "NAME VERSION"):
        // the version the package and --version carry.
        let th = text
            .lines()
            .find(|l| l.starts_with(".TH "))
            .expect(".TH line");
        assert!(
            th.contains(&format!(" {VERSION}")),
            "{}: {th} lacks version {VERSION}",
            p.display()
        );
        let words = section_words(&text, "DESCRIPTION");
        assert!(
            words >= 30,
            "{}: DESCRIPTION has {words} words, not a paragraph",
            p.display()
        );
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH EXAMPLES",
            ".SH \"EXIT STATUS\"",
        ] {
            assert!(text.contains(section), "{} lacks {section}", p.display());
        }
    }

    // Every subcommand has a page with every long option of its --help.
    let top = run(&["--help"]);
    assert_long_and_short_help(&[]);
    assert_options_documented(&top, &page(d, "ishare"));
    let subs = subcommands(&top);
    assert!(subs.contains(&"mount".to_owned()), "subcommands: {subs:?}");
    for sub in &subs {
        let help = run(&[sub, "--help"]);
        if sub != "mkfs" {
            assert_long_and_short_help(&[sub]);
        }
        let p = page(d, &format!("ishare-{sub}"));
        // mkfs has mkfs.erofs's own parser and help; its page is made from that help.
        assert_options_documented(&help, &p);
        for nested in subcommands(&help) {
            assert_long_and_short_help(&[sub, &nested]);
            let help = run(&[sub, &nested, "--help"]);
            assert_options_documented(&help, &page(d, &format!("ishare-{sub}-{nested}")));
        }
    }
    // Every page a page refers to, as ishare-NAME(SECTION), exists in that section.
    for p in &pages {
        let text = page_text(p).replace("\\fB", "").replace("\\fR", "");
        for (i, _) in text.match_indices("ishare-") {
            let rest = &text[i..];
            let Some(open) = rest.find('(') else { continue };
            let name = &rest[..open];
            if !name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                continue;
            }
            let sect = &rest[open + 1..open + 2];
            assert!(
                d.join(format!("{name}.{sect}")).exists(),
                "{} refers to {name}({sect}), which does not exist",
                p.display()
            );
        }
    }
    for admin in ["mount", "daemon", "snapshotter"] {
        assert!(
            d.join(format!("ishare-{admin}.8")).exists(),
            "ishare-{admin} is not in section 8"
        );
    }
}

#[test]
fn completions_are_written_for_three_shells() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(&[
        "generate",
        "completions",
        dir.path().to_str().expect("utf-8 path"),
    ]);
    for f in ["ishare.bash", "_ishare", "ishare.fish"] {
        let s = std::fs::read_to_string(dir.path().join(f)).expect("completion file");
        assert!(s.contains("snapshotter"), "{f} lacks the subcommands");
    }
}
