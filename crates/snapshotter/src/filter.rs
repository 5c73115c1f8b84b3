//! List filters, a subset of containerd's filter syntax: each filter is clauses
//! joined by `,` (all must hold), a snapshot is listed when any filter holds (or no
//! filter is given). A clause is `FIELD`, `FIELD==VALUE` or `FIELD!=VALUE` with FIELD
//! one of `name`, `parent`, `kind`, `labels.KEY` (KEY may be quoted: `labels."a.b"`)
//! and VALUE bare or double-quoted. Regular-expression clauses (`~=`) are refused
//! with InvalidArgument rather than misread.

use crate::error::{Error, Result};
use crate::snapshotter::Info;

#[derive(Debug, PartialEq, Eq)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Clause {
    field: Vec<String>,
    op: Op,
}

/// Parsed filters.
#[derive(Debug)]
pub struct Filters(Vec<Vec<Clause>>);

impl Filters {
    /// Parses `filters`; an error names the bad one.
    pub fn parse(filters: &[String]) -> Result<Filters> {
        filters
            .iter()
            .map(|f| {
                parse_one(f).map_err(|why| Error::InvalidArgument(format!("filter {f:?}: {why}")))
            })
            .collect::<Result<_>>()
            .map(Filters)
    }

    /// Whether `info` is listed.
    pub fn matches(&self, info: &Info) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| f.iter().all(|c| holds(c, info)))
    }
}

fn holds(c: &Clause, info: &Info) -> bool {
    let value: Option<&str> = match c.field.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["name"] => Some(&info.name),
        ["parent"] => Some(&info.record.parent)
            .filter(|p| !p.is_empty())
            .map(|s| s.as_str()),
        ["kind"] => Some(info.record.kind.name()),
        ["labels", ref key @ ..] if !key.is_empty() => {
            info.record.labels.get(&key.join(".")).map(String::as_str)
        }
        _ => None,
    };
    match &c.op {
        Op::Present => value.is_some(),
        Op::Eq(v) => value == Some(v.as_str()),
        Op::Ne(v) => value != Some(v.as_str()),
    }
}

/// Splits `s` at `sep` outside double quotes (backslash escapes inside).
fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for ch in s.chars() {
        if escaped {
            escaped = false;
        } else if quoted && ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
        } else if ch == sep && !quoted {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(ch);
    }
    out.push(cur);
    out
}

fn unquote(s: &str) -> std::result::Result<String, String> {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('"') else {
        return Ok(s.to_string());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("unterminated quote in {s}"))?;
    let (mut out, mut esc) = (String::new(), false);
    for ch in inner.chars() {
        if esc || ch != '\\' {
            out.push(ch);
            esc = false;
        } else {
            esc = true;
        }
    }
    Ok(out)
}

fn parse_one(f: &str) -> std::result::Result<Vec<Clause>, String> {
    let mut out = Vec::new();
    for clause in split_outside_quotes(f, ',') {
        let clause = clause.trim();
        if clause.is_empty() {
            return Err("empty clause".into());
        }
        let find = |op: &str| {
            let mut quoted = false;
            clause.char_indices().find_map(|(i, ch)| {
                if ch == '"' {
                    quoted = !quoted;
                }
                (!quoted && clause[i..].starts_with(op)).then_some(i)
            })
        };
        if find("~=").is_some() {
            return Err("regular-expression clauses (~=) are not supported".into());
        }
        let (field, op) = match (find("=="), find("!=")) {
            (Some(i), _) => (&clause[..i], Op::Eq(unquote(&clause[i + 2..])?)),
            (None, Some(i)) => (&clause[..i], Op::Ne(unquote(&clause[i + 2..])?)),
            (None, None) => (clause, Op::Present),
        };
        let field: Vec<String> = split_outside_quotes(field.trim(), '.')
            .iter()
            .map(|p| unquote(p))
            .collect::<std::result::Result<_, _>>()?;
        let known = matches!(
            field.first().map(String::as_str),
            Some("name" | "parent" | "kind")
        ) && field.len() == 1
            || field.first().is_some_and(|f| f == "labels") && field.len() > 1;
        if !known {
            return Err(format!("unknown field {:?}", field.join(".")));
        }
        out.push(Clause { field, op });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Kind, Record, Stamp};
    use std::collections::BTreeMap;

    fn info(name: &str, parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            name: name.into(),
            record: Record {
                id: 1,
                kind,
                parent: parent.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                created: Stamp::now(),
                updated: Stamp::now(),
                usage: None,
            },
        }
    }

    fn f(s: &[&str]) -> Filters {
        Filters::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn clauses() {
        let a = info("a", "", Kind::Committed, &[("containerd.io/gc.root", "x")]);
        let b = info("b", "a", Kind::Active, &[]);
        assert!(f(&[]).matches(&a));
        assert!(f(&["kind==committed"]).matches(&a) && !f(&["kind==committed"]).matches(&b));
        assert!(f(&["parent==a"]).matches(&b) && !f(&["parent"]).matches(&a));
        assert!(f(&[r#"labels."containerd.io/gc.root""#]).matches(&a));
        assert!(f(&[r#"labels."containerd.io/gc.root"==x,name==a"#]).matches(&a));
        assert!(!f(&[r#"labels."containerd.io/gc.root"!=x"#]).matches(&a));
        assert!(f(&["name==zz", "name==b"]).matches(&b));
        assert!(f(&[r#"name=="a""#]).matches(&a));
        for bad in ["size==1", "name~=a.*", "", r#"name=="a"#] {
            let e = Filters::parse(&[bad.to_string()]).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
    }
}
