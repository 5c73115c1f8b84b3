//! SELinux labels from a `file_contexts` file (`--file-contexts`): the
//! `security.selinux` value mkfs.erofs gets from libselinux's
//! `selabel_lookup(SELABEL_CTX_FILE)` for each path.
//!
//! Written here rather than taken from a crate: no Rust crate reads file_contexts
//! without binding the C libselinux (which would make libselinux a build and run
//! dependency for one option), and what matters is to pick the same spec as
//! libselinux 3.4's label_file backend (Debian bookworm's, what mkfs.erofs links):
//!
//! - a line is `REGEX [TYPE] CONTEXT`, fields split at C `isspace`, only the first
//!   three read; `#` starts a comment only as the first field; fields are ASCII;
//! - TYPE is `--` `-d` `-l` `-b` `-c` `-p` `-s`; CONTEXT `<<none>>` means "no label";
//! - each REGEX is matched against the whole path, anchored as `^REGEX$` (not
//!   `^(?:REGEX)$`: a top-level `|` binds as libselinux's does), with PCRE2_DOTALL;
//! - the specs are ordered with those whose REGEX has no regex meta character
//!   (`.^$?*+|[({`, `\` escaping the next character) after the others, each group in
//!   file order, and the last matching spec wins: an exact path beats any regex;
//! - a spec whose REGEX starts with a literal directory (its "stem", `/usr` of
//!   `/usr/lib(/.*)?`) is only tried on paths in that top-level directory;
//! - the path has runs of `/` collapsed and a trailing `/` dropped, then goes through
//!   the substitutions of `FILE.subs` and `FILE.subs_dist`;
//! - `FILE.homedirs` and `FILE.local`, when present, add specs after FILE's.
//!
//! The regexes are the `regex` crate's, with what PCRE2 reads as literals escaped
//! (`pcre_literals`), each compiled once when the file is read, to check it: an
//! invalid one, or one using PCRE syntax the crate lacks (back-references,
//! look-around), is an error naming the file and line (libselinux only fails when a
//! lookup reaches it). Two known differences remain, neither met by real paths:
//! PCRE's `$` also matches before a final newline, and a compiled `FILE.bin` newer
//! than FILE is not read (libselinux would prefer it; it is FILE compiled, so the
//! labels are the same).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::bytes::{Regex, RegexBuilder};

use crate::error::{Error, Result};

/// `S_IFMT` and the file types a spec may be restricted to.
const S_IFMT: u32 = 0o170000;
const TYPES: [(u8, u32); 7] = [
    (b'-', 0o100000),
    (b'd', 0o040000),
    (b'l', 0o120000),
    (b'b', 0o060000),
    (b'c', 0o020000),
    (b'p', 0o010000),
    (b's', 0o140000),
];

/// libselinux's magic number at the start of a compiled (`sefcontext_compile`) file.
const COMPILED_MAGIC: u32 = 0xf97c_ff8a;

/// The context that means "leave the file unlabelled".
const NONE: &[u8] = b"<<none>>";

/// The xattr mkfs.erofs sets from a file_contexts file.
pub(crate) const SELINUX_XATTR: &[u8] = b"security.selinux";

/// One line of a file_contexts file.
#[derive(Debug)]
struct Spec {
    /// `^REGEX$` in the `regex` crate's syntax.
    pattern: String,
    /// `pattern` compiled, at the first lookup that needs it: a policy's specs are
    /// mostly never run on a given tree, and each compiled regex takes ~10 KiB.
    regex: OnceLock<Regex>,
    /// Text every path REGEX matches starts with: a cheap test before the regex.
    prefix: Vec<u8>,
    /// The literal leading directory of REGEX (`/usr`), if it has one.
    stem: Option<Vec<u8>>,
    /// The file type (`S_IFMT` bits) the spec is restricted to.
    mode: Option<u32>,
    /// The label; `None` for `<<none>>`.
    context: Option<Vec<u8>>,
    /// REGEX has none of libselinux's meta characters (an exact path).
    exact: bool,
}

/// A path prefix substitution (`FILE.subs`, `FILE.subs_dist`): paths under `src`
/// are labelled as if under `dst`.
#[derive(Debug)]
struct Sub {
    src: Vec<u8>,
    dst: Vec<u8>,
}

/// A loaded file_contexts file, with the mount point its paths are under.
#[derive(Debug)]
pub struct FileContexts {
    /// Regex specs, then exact ones; searched from the end.
    specs: Vec<Spec>,
    /// `FILE.subs`, later lines first (libselinux prepends each line to a list).
    subs: Vec<Sub>,
    /// `FILE.subs_dist`, likewise.
    dist_subs: Vec<Sub>,
    /// `--mount-point`: prefixed to every path of the image.
    mount_point: Vec<u8>,
}

impl FileContexts {
    /// Loads `path` (and its `.homedirs`, `.local`, `.subs` and `.subs_dist`
    /// companions when they exist); paths in the image are looked up under
    /// `mount_point` (`--mount-point`).
    pub fn open(path: &Path, mount_point: Option<&[u8]>) -> Result<Self> {
        let mut specs = parse_specs(path, &read(path)?)?;
        for suffix in ["homedirs", "local"] {
            let extra = with_suffix(path, suffix);
            if let Some(text) = read_optional(&extra)? {
                specs.extend(parse_specs(&extra, &text)?);
            }
        }
        // Stable: each group keeps file order.
        let (exact, mut specs): (Vec<_>, Vec<_>) = specs.into_iter().partition(|s| s.exact);
        specs.extend(exact);
        let subs = |suffix| -> Result<Vec<Sub>> {
            let file = with_suffix(path, suffix);
            Ok(read_optional(&file)?.map_or_else(Vec::new, |t| parse_subs(&t)))
        };
        Ok(Self {
            specs,
            subs: subs("subs")?,
            dist_subs: subs("subs_dist")?,
            mount_point: mount_point.unwrap_or_default().to_vec(),
        })
    }

    /// The label of the image path `key` (absolute, as libselinux is asked) of a
    /// file of type `mode` (`S_IFMT` bits; 0 = any): `None` when no spec matches or
    /// the matching spec says `<<none>>`.
    pub fn lookup(&self, key: &[u8], mode: u32) -> Option<&[u8]> {
        let key = clean(key);
        let key = substitute(&self.subs, &self.dist_subs, &key).unwrap_or(key);
        let stem = file_stem(&key);
        let mode = mode & S_IFMT;
        let spec = self.specs.iter().rev().find(|s| {
            s.stem.as_deref().is_none_or(|st| Some(st) == stem)
                && (mode == 0 || s.mode.is_none_or(|m| m == mode))
                && key.starts_with(&s.prefix)
                && s.regex().is_match(&key)
        })?;
        spec.context.as_deref()
    }

    /// The label of the entry at `rel` (relative to the source root, `b""` for the
    /// root) of type `mode`, looked up as mkfs.erofs does: as `/MOUNT_POINT/rel`.
    pub(crate) fn label(&self, rel: &[u8], mode: u32) -> Option<&[u8]> {
        let mut key = Vec::with_capacity(self.mount_point.len() + rel.len() + 2);
        key.push(b'/');
        if !self.mount_point.is_empty() {
            key.extend_from_slice(&self.mount_point);
            key.push(b'/');
        }
        key.extend_from_slice(rel);
        self.lookup(&key, mode)
    }

    /// Replaces the `security.selinux` xattr among `xattrs` (sorted by name) with
    /// the label of `rel`: as mkfs.erofs, a source file's own label is dropped
    /// even when the file_contexts gives none.
    pub(crate) fn relabel(&self, xattrs: &mut Vec<(Vec<u8>, Vec<u8>)>, rel: &[u8], mode: u32) {
        xattrs.retain(|(k, _)| k != SELINUX_XATTR);
        if let Some(label) = self.label(rel, mode) {
            let at = xattrs.partition_point(|(k, _)| k.as_slice() < SELINUX_XATTR);
            xattrs.insert(at, (SELINUX_XATTR.to_vec(), label.to_vec()));
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, "read the file contexts", e))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, "read the file contexts", e)),
    }
}

/// `FILE.suffix`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn bad(file: &Path, line: usize, what: impl Into<String>) -> Error {
    Error::FileContexts {
        path: file.to_path_buf(),
        line: Some(line),
        what: what.into(),
    }
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The specs of one file, in file order.
fn parse_specs(file: &Path, text: &[u8]) -> Result<Vec<Spec>> {
    if text.len() >= 4
        && u32::from_le_bytes(text[..4].try_into().expect("4 bytes")) == COMPILED_MAGIC
    {
        return Err(Error::FileContexts {
            path: file.to_path_buf(),
            line: None,
            what: "a compiled file_contexts (sefcontext_compile's .bin) is not supported: give the text file".into(),
        });
    }
    let mut specs = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        // As getline + strlen: a NUL ends the line.
        let line = line.split(|&b| b == 0).next().unwrap_or_default();
        let n = i + 1;
        // Only the first three fields are read (and must be ASCII); more are ignored.
        let fields: Vec<&[u8]> = line
            .split(|&b| is_space(b))
            .filter(|f| !f.is_empty())
            .take(3)
            .collect();
        match fields.first() {
            None => continue,
            Some(f) if f[0] == b'#' => continue,
            Some(_) => {}
        }
        if fields.iter().any(|f| !f.is_ascii()) {
            return Err(bad(file, n, "non-ASCII characters"));
        }
        let (re, ty, ctx) = match fields[..] {
            [re, ctx] => (re, None, ctx),
            [re, ty, ctx] => (re, Some(ty), ctx),
            _ => {
                return Err(bad(
                    file,
                    n,
                    "missing fields: expected PATH_REGEX [FILE_TYPE] CONTEXT",
                ));
            }
        };
        let re_text = String::from_utf8_lossy(re);
        let mode = ty
            .map(|t| match t {
                [b'-', c] => TYPES
                    .iter()
                    .find(|(k, _)| k == c)
                    .map(|&(_, m)| m)
                    .ok_or(()),
                _ => Err(()),
            })
            .transpose()
            .map_err(|()| {
                bad(
                    file,
                    n,
                    format!(
                        "invalid file type {:?} (one of -- -d -l -b -c -p -s)",
                        String::from_utf8_lossy(ty.unwrap_or_default())
                    ),
                )
            })?;
        // Compiled once here to check it (and dropped), again when first needed.
        let pattern = format!("^{}$", pcre_literals(&re_text));
        compile(&pattern).map_err(|e| {
            // The crate's message spans lines (pattern, caret, error): keep the
            // error line.
            let why = match e {
                regex::Error::Syntax(s) => s
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_owned(),
                e => e.to_string(),
            };
            bad(
                file,
                n,
                format!("invalid or unsupported regex {re_text:?}: {why}"),
            )
        })?;
        specs.push(Spec {
            pattern,
            regex: OnceLock::new(),
            prefix: literal_prefix(re).to_vec(),
            stem: spec_stem(re).map(<[u8]>::to_vec),
            mode,
            context: (ctx != NONE).then(|| ctx.to_vec()),
            exact: !has_meta(re),
        });
    }
    Ok(specs)
}

/// `re` with the characters PCRE2 (10.42, Debian bookworm's) reads as literals but
/// the `regex` crate does not escaped: a `{` that does not start a `{n}`, `{n,}` or
/// `{n,m}` quantifier (`%{USERID}` in Debian's reference policy) and the `}` after
/// it, and inside a class a `[` not starting a POSIX class, and `&`, `~` (set
/// operators to the crate).
fn pcre_literals(re: &str) -> String {
    let b = re.as_bytes();
    let mut out = String::with_capacity(re.len() + 8);
    let mut i = 0;
    let mut class = false;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            '\\' if i + 1 < b.len() => {
                out.push(c);
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            '[' if !class => {
                class = true;
                out.push('[');
                i += 1;
                // `[^` and a leading `]`, which is a literal.
                if b.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    out.push_str("\\]");
                    i += 1;
                }
                continue;
            }
            '[' if b.get(i + 1) == Some(&b':') => {
                // A POSIX class `[:name:]`: copied whole.
                let end = re[i + 2..].find(":]").map(|e| i + 2 + e + 2);
                let end = end.unwrap_or(i + 1);
                out.push_str(&re[i..end]);
                i = end;
                continue;
            }
            '[' | '&' | '~' if class => out.push('\\'),
            ']' if class => class = false,
            '{' if !class => match quantifier(&b[i..]) {
                Some(len) => {
                    out.push_str(&re[i..i + len]);
                    i += len;
                    continue;
                }
                None => out.push('\\'),
            },
            '}' if !class => out.push('\\'),
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The length of the `{n}`, `{n,}` or `{n,m}` quantifier `s` starts with.
fn quantifier(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let n = digits(1);
    if n == 0 {
        return None;
    }
    let mut i = 1 + n;
    if s.get(i) == Some(&b',') {
        i += 1 + digits(i + 1);
    }
    (s.get(i) == Some(&b'}')).then_some(i + 1)
}

/// The literal text every match of `^re$` starts with (not a libselinux rule: it
/// only spares running regexes that cannot match, where libselinux runs one per
/// spec, over 1 ms a file with Debian's reference policy). The text before the
/// first meta character or `\`, less its last character if a quantifier may make
/// that optional; nothing when a top-level `|` offers another start.
fn literal_prefix(re: &[u8]) -> &[u8] {
    let end = re
        .iter()
        .position(|b| b".^$?*+|[({\\".contains(b))
        .unwrap_or(re.len());
    let mut prefix = &re[..end];
    if matches!(re.get(end), Some(b'?' | b'*' | b'+' | b'{')) {
        prefix = &prefix[..prefix.len().saturating_sub(1)];
    }
    if top_level_alternation(re) {
        return &[];
    }
    prefix
}

/// Whether `re` has a `|` outside every group (or cannot be read to tell: then it
/// answers yes, the safe side).
fn top_level_alternation(re: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < re.len() {
        match re[i] {
            b'\\' => i += 1,
            b'[' => {
                // Skip the class: a leading `^` and `]` are part of it, `\` escapes,
                // `[:name:]` nests.
                i += 1;
                if re.get(i) == Some(&b'^') {
                    i += 1;
                }
                if re.get(i) == Some(&b']') {
                    i += 1;
                }
                loop {
                    match re.get(i) {
                        None => return true,
                        Some(b'\\') => i += 1,
                        Some(b'[') if re.get(i + 1) == Some(&b':') => {
                            match re[i + 2..].windows(2).position(|w| w == b":]") {
                                Some(e) => i += 2 + e + 1,
                                None => return true,
                            }
                        }
                        Some(b']') => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            b'|' if depth == 0 => return true,
            _ => {}
        }
        i += 1;
    }
    depth != 0
}

/// PCRE2 without UTF, with DOTALL, as libselinux compiles: bytes, `.` matching
/// newlines too.
fn compile(pattern: &str) -> std::result::Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .dot_matches_new_line(true)
        .build()
}

impl Spec {
    fn regex(&self) -> &Regex {
        self.regex.get_or_init(|| {
            // Deterministic: it compiled when the file was read.
            compile(&self.pattern).expect("checked when the file was read")
        })
    }
}

/// libselinux's `spec_hasMetaChars`: any of `.^$?*+|[({` outside a `\` escape.
fn has_meta(re: &[u8]) -> bool {
    let mut i = 0;
    while i < re.len() {
        match re[i] {
            b'.' | b'^' | b'$' | b'?' | b'*' | b'+' | b'|' | b'[' | b'(' | b'{' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// libselinux's `get_stem_from_spec`: the text before the regex's second `/` when
/// it has no meta character (`\` is not one here).
fn spec_stem(re: &[u8]) -> Option<&[u8]> {
    let end = 1 + re.get(1..)?.iter().position(|&b| b == b'/')?;
    let stem = &re[..end];
    (!stem.iter().any(|b| b".^$?*+|[({".contains(b))).then_some(stem)
}

/// libselinux's `get_stem_from_file_name`: the path up to its second `/`.
fn file_stem(key: &[u8]) -> Option<&[u8]> {
    let end = 1 + key.get(1..)?.iter().position(|&b| b == b'/')?;
    Some(&key[..end])
}

/// Runs of `/` collapsed, a trailing `/` dropped (but `/` stays `/`).
fn clean(key: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(key.len());
    for &b in key {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    if out.len() > 1 && out.last() == Some(&b'/') {
        out.pop();
    }
    out
}

/// `FILE.subs`/`FILE.subs_dist` lines: `SRC DST`, `#` comments; lines without both
/// fields are skipped. Returned later lines first, the order libselinux tries them.
fn parse_subs(text: &[u8]) -> Vec<Sub> {
    let mut subs: Vec<Sub> = text
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| is_space(b)).filter(|f| !f.is_empty());
            let src = f.next()?;
            if src.starts_with(b"#") {
                return None;
            }
            Some(Sub {
                src: src.to_vec(),
                dst: f.next()?.to_vec(),
            })
        })
        .collect();
    subs.reverse();
    subs
}

/// libselinux's `selabel_sub`: the first substitution whose source is `key` or a
/// directory above it.
fn sub_one(subs: &[Sub], key: &[u8]) -> Option<Vec<u8>> {
    subs.iter().find_map(|s| {
        let rest = key.strip_prefix(s.src.as_slice())?;
        if !rest.is_empty() && rest[0] != b'/' {
            return None;
        }
        // `/x` -> `/` would otherwise give `//y`.
        let rest = if s.dst == b"/" && !rest.is_empty() {
            &rest[1..]
        } else {
            rest
        };
        Some([s.dst.as_slice(), rest].concat())
    })
}

/// libselinux's `selabel_sub_key`: local substitutions, then the distribution's.
fn substitute(subs: &[Sub], dist: &[Sub], key: &[u8]) -> Option<Vec<u8>> {
    match sub_one(subs, key) {
        Some(k) => Some(sub_one(dist, &k).unwrap_or(k)),
        None => sub_one(dist, key),
    }
}

#[cfg(test)]
mod tests;
