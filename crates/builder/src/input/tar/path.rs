//! The path rules of tar extraction: a leading `/`, `.` components and repeated
//! slashes are dropped, `..` removes the previous component but may not leave the
//! root, and each name must fit EROFS.

use ishare_erofs::format::NAME_LEN;

/// Splits `path` into normal components: empty and `.` components (a leading `/`,
/// `./`, doubled or trailing slashes) are dropped and `..` removes the previous
/// one; a `..` with nothing left to remove would escape the root.
pub(super) fn normalize(path: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    if path.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("the path escapes the root of the archive with '..'".into());
                }
            }
            _ if c.len() > NAME_LEN => {
                return Err(format!(
                    "the name {:?} is {} bytes long, EROFS allows at most {NAME_LEN}",
                    String::from_utf8_lossy(c),
                    c.len()
                ));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

pub(super) fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_tar() {
        let n = |p: &[u8]| normalize(p).map(|c| join(&c));
        assert_eq!(n(b"./a/b/").unwrap(), b"a/b");
        assert_eq!(n(b"/abs//x/./y").unwrap(), b"abs/x/y");
        assert_eq!(n(b"a/../b").unwrap(), b"b");
        assert_eq!(n(b".").unwrap(), b"");
        assert!(n(b"../x").unwrap_err().contains("escapes"));
        assert!(n(b"/abs/../../x").unwrap_err().contains("escapes"));
        assert!(n(b"a/\0b").unwrap_err().contains("NUL"));
        assert!(n(&[b'x'; 256]).unwrap_err().contains("256 bytes"));
        assert!(n(&[b'x'; 255]).is_ok());
    }
}
