//! Byte counts: shown to people ("1.5 MiB") and read from them (`--max-size`).

use crate::error::{Error, Result};

/// A byte count for people: "512 B", "1.5 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a size as `du` and `truncate` write them: bytes, or a number followed by K,
/// M, G, T, P or E (powers of 1024; also written KiB, MiB, ...) or by KB, MB, ...
/// (powers of 1000).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::BadSize(s.to_string());
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let suffix = &t[digits..];
    if suffix.is_empty() {
        return Ok(n);
    }
    let mut chars = suffix.chars();
    let letter = chars.next().expect("not empty").to_ascii_uppercase();
    let power = "KMGTPE".find(letter).ok_or_else(bad)? as u32 + 1;
    let base: u64 = match chars.as_str() {
        "" | "iB" => 1024,
        "B" => 1000,
        _ => return Err(bad()),
    };
    n.checked_mul(base.checked_pow(power).ok_or_else(bad)?)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_du_writes_them() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("3M").unwrap(), 3 << 20);
        assert_eq!(parse_size("3MiB").unwrap(), 3 << 20);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1E").unwrap(), 1 << 60);
        for bad in [
            "",
            "K",
            "1.5G",
            "1X",
            "1Mb",
            "-1",
            "16E",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
