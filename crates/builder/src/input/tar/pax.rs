//! PAX extended headers (local and global): the records that matter here, with
//! libarchive's `%XX`-escaped xattr names and base64 values, and times with
//! fractions. Records are split by their length prefix, not at newlines, so binary
//! xattr values survive.

use std::collections::BTreeMap;

/// The records of PAX extended headers that matter here.
#[derive(Debug, Default, Clone)]
pub(super) struct Pax {
    pub(super) path: Option<Vec<u8>>,
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) size: Option<u64>,
    pub(super) uid: Option<u64>,
    pub(super) gid: Option<u64>,
    pub(super) mtime: Option<(i64, u32)>,
    pub(super) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(super) sparse: bool,
}

impl Pax {
    /// Parses `data` (records `LEN KEY=VALUE\n`) on top of `self`.
    pub(super) fn parse(&mut self, mut data: &[u8]) -> std::result::Result<(), String> {
        while !data.is_empty() {
            let sp = data
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or("a PAX record does not start with its length")?;
            let len: usize = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("a PAX record has a bad length")?;
            if len <= sp + 1 || len > data.len() {
                return Err(format!(
                    "a PAX record's length {len} is out of range ({} bytes left)",
                    data.len()
                ));
            }
            let rec = &data[sp + 1..len];
            data = &data[len..];
            let rec = rec
                .strip_suffix(b"\n")
                .ok_or("a PAX record does not end with a newline")?;
            let eq = rec
                .iter()
                .position(|&b| b == b'=')
                .ok_or("a PAX record has no '='")?;
            self.record(&rec[..eq], &rec[eq + 1..])?;
        }
        Ok(())
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), String> {
        let bad = || {
            format!(
                "bad PAX record {}={:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            )
        };
        let number = || -> std::result::Result<Option<u64>, String> {
            if value.is_empty() {
                return Ok(None);
            }
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(bad)
        };
        let opt = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        match key {
            b"path" => self.path = opt(value),
            b"linkpath" => self.linkpath = opt(value),
            b"size" => self.size = number()?,
            b"uid" => self.uid = number()?,
            b"gid" => self.gid = number()?,
            b"mtime" => {
                self.mtime = if value.is_empty() {
                    None
                } else {
                    Some(parse_time(value).ok_or_else(bad)?)
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattr(name.to_vec(), value.to_vec())?;
                } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                    let name = url_decode(name);
                    let value = base64_decode(value).ok_or_else(bad)?;
                    self.xattr(name, value)?;
                } else if key.starts_with(b"GNU.sparse.") {
                    self.sparse = true;
                }
                // Others (atime, ctime, uname, gname, comment, SCHILY.acl.*, ...)
                // have no place in an image, as for mkfs.erofs.
            }
        }
        Ok(())
    }

    fn xattr(&mut self, name: Vec<u8>, value: Vec<u8>) -> std::result::Result<(), String> {
        if name.is_empty() || name.contains(&0) {
            return Err(format!(
                "bad xattr name {:?} in a PAX record",
                String::from_utf8_lossy(&name)
            ));
        }
        self.xattrs.insert(name, value);
        Ok(())
    }
}

/// `[-]SECONDS[.FRACTION]` as (seconds, nanoseconds), rounding toward minus infinity.
pub(super) fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    if secs.is_empty() || !secs.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(secs).ok()?.parse().ok()?;
    let mut ns = 0u32;
    if let Some(f) = frac {
        if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..9 {
            ns = ns * 10 + u32::from(f.get(i).map_or(0, |d| d - b'0'));
        }
    }
    Some(match (neg, ns) {
        (false, _) => (secs, ns),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - ns),
    })
}

/// `%XX` escapes of libarchive's xattr names.
pub(super) fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Standard base64 with optional padding (libarchive's xattr values).
pub(super) fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records() {
        let mut p = Pax::default();
        // A binary value with a newline and an '=' inside, a fractional mtime.
        let rec = |k: &[u8], v: &[u8]| {
            let body = [b" ", k, b"=", v, b"\n"].concat();
            let mut len = body.len() + 1;
            while body.len() + len.to_string().len() != len {
                len = body.len() + len.to_string().len();
            }
            [len.to_string().as_bytes(), &body].concat()
        };
        let data = [
            rec(b"SCHILY.xattr.user.bin", b"a\nb=c\0"),
            rec(b"mtime", b"1700000000.5"),
            rec(b"size", b"12345678901"),
            rec(b"path", b"some/long/path"),
            rec(b"LIBARCHIVE.xattr.user.%41b", b"aGk="),
            rec(b"atime", b"1.2"),
        ]
        .concat();
        p.parse(&data).unwrap();
        assert_eq!(p.xattrs[&b"user.bin"[..]], b"a\nb=c\0");
        assert_eq!(p.xattrs[&b"user.Ab"[..]], b"hi");
        assert_eq!(p.mtime, Some((1_700_000_000, 500_000_000)));
        assert_eq!(p.size, Some(12_345_678_901));
        assert_eq!(p.path.as_deref(), Some(&b"some/long/path"[..]));
        assert!(Pax::default().parse(b"5 a=b").is_err());
        assert!(Pax::default().parse(b"99 a=b\n").is_err());
        assert!(Pax::default().parse(b"6 ab\n\n").is_err());
    }

    #[test]
    fn times_and_decoders() {
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_time(b"7.1234567891"), Some((7, 123_456_789)));
        assert_eq!(parse_time(b"7."), None);
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(base64_decode(b"AAEC/w==").unwrap(), [0, 1, 2, 255]);
        assert_eq!(base64_decode(b"YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode(b"Y"), None);
        assert_eq!(url_decode(b"a%3Db%zz%4"), b"a=b%zz%4");
    }
}
