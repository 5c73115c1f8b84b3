//! Tests of file_contexts parsing and lookups.

use super::*;

const REG: u32 = 0o100644;
const DIR: u32 = 0o040755;
const LNK: u32 = 0o120777;

fn load(text: &str) -> (tempfile::TempDir, Result<FileContexts>) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("file_contexts");
    std::fs::write(&p, text).unwrap();
    let fc = FileContexts::open(&p, None);
    (d, fc)
}

fn label<'a>(fc: &'a FileContexts, key: &str, mode: u32) -> Option<&'a str> {
    fc.lookup(key.as_bytes(), mode)
        .map(|l| std::str::from_utf8(l).unwrap())
}

#[test]
fn last_match_wins_and_exact_paths_beat_regexes() {
    let (_d, fc) = load(
        "# comment\n\
         \n\
         /etc/passwd  u:object_r:passwd:s0\n\
         /.*  u:object_r:default:s0\n\
         /etc(/.*)?  u:object_r:etc:s0\n\
         /etc/p.*  u:object_r:etc_p:s0\n",
    );
    let fc = fc.unwrap();
    assert_eq!(label(&fc, "/", DIR), Some("u:object_r:default:s0"));
    assert_eq!(label(&fc, "/etc", DIR), Some("u:object_r:etc:s0"));
    assert_eq!(label(&fc, "/etc/group", REG), Some("u:object_r:etc:s0"));
    assert_eq!(label(&fc, "/etc/profile", REG), Some("u:object_r:etc_p:s0"));
    // Listed first, but exact: it wins over every regex.
    assert_eq!(label(&fc, "/etc/passwd", REG), Some("u:object_r:passwd:s0"));
    assert_eq!(label(&fc, "/usr", DIR), Some("u:object_r:default:s0"));
}

#[test]
fn file_types_and_none() {
    let (_d, fc) = load(
        "/.*  u:object_r:default:s0\n\
         /srv(/.*)?  -d  u:object_r:srv_dir:s0\n\
         /srv/.*  --  u:object_r:srv_file:s0\n\
         /srv/.*  -l  <<none>>\n\
         /tmp/x  <<none>>\n",
    );
    let fc = fc.unwrap();
    assert_eq!(label(&fc, "/srv", DIR), Some("u:object_r:srv_dir:s0"));
    assert_eq!(label(&fc, "/srv/a", DIR), Some("u:object_r:srv_dir:s0"));
    assert_eq!(label(&fc, "/srv/a", REG), Some("u:object_r:srv_file:s0"));
    assert_eq!(label(&fc, "/srv/a", LNK), None);
    assert_eq!(
        label(&fc, "/srv/a", 0o020644),
        Some("u:object_r:default:s0")
    );
    assert_eq!(label(&fc, "/tmp/x", REG), None);
    assert_eq!(label(&fc, "/tmp/y", REG), Some("u:object_r:default:s0"));
    // Mode 0: any type.
    assert_eq!(label(&fc, "/srv/a", 0), None);
}

#[test]
fn anchoring_binds_as_libselinux() {
    // `^/a|/b$`: the first alternative is only anchored at the start.
    let (_d, fc) = load("/a|/b  u:r:ab:s0\n");
    let fc = fc.unwrap();
    assert_eq!(label(&fc, "/a", REG), Some("u:r:ab:s0"));
    assert_eq!(label(&fc, "/abc", REG), Some("u:r:ab:s0"));
    assert_eq!(label(&fc, "/x/b", REG), Some("u:r:ab:s0"));
    assert_eq!(label(&fc, "/bx", REG), None);
    // `.` matches any byte, also in non-UTF-8 names.
    let (_d, fc) = load("/d/.*  u:r:d:s0\n");
    let fc = fc.unwrap();
    assert_eq!(fc.lookup(b"/d/\xff\n", REG), Some(&b"u:r:d:s0"[..]));
}

#[test]
fn stems_limit_where_a_spec_applies() {
    // Stem `/usr`: the top-level alternative `/opt/b` is never tried on /opt.
    let (_d, fc) = load("/usr/a|/opt/b  u:r:x:s0\n");
    let fc = fc.unwrap();
    assert_eq!(label(&fc, "/usr/a", REG), Some("u:r:x:s0"));
    assert_eq!(label(&fc, "/opt/b", REG), None);
    assert_eq!(spec_stem(b"/usr/lib(/.*)?"), Some(&b"/usr"[..]));
    assert_eq!(spec_stem(b"/usr(/.*)?"), None);
    assert_eq!(spec_stem(b"/.*/x"), None);
    assert_eq!(spec_stem(b"/usr"), None);
    assert_eq!(file_stem(b"/usr/lib"), Some(&b"/usr"[..]));
    assert_eq!(file_stem(b"/usr"), None);
}

#[test]
fn literal_prefixes() {
    for (re, want) in [
        (&b"/usr/lib(/.*)?"[..], &b"/usr/lib"[..]),
        (b"/usr/libx?", b"/usr/lib"),
        (b"/usr/libx+", b"/usr/lib"),
        (b"/a|/b", b""),
        (b"/a(b|c)", b"/a"),
        (br"/etc/ld\.so", b"/etc/ld"),
        (b"/x[|]", b"/x"),
        (b"/x[]|]", b"/x"),
        (b"/x[[:alpha:]|]", b"/x"),
        (b"/x[|", b""),
        (b"/x(a|b))|c", b""),
        (b"/run/user/%{USERID}", b"/run/user/"),
        (b"/etc/passwd", b"/etc/passwd"),
        (b".*", b""),
    ] {
        assert_eq!(literal_prefix(re), want, "{}", re.escape_ascii());
    }
}

#[test]
fn meta_characters() {
    assert!(!has_meta(b"/etc/passwd"));
    assert!(!has_meta(br"/lib/ld\.so"));
    assert!(has_meta(b"/lib/ld.so"));
    assert!(has_meta(b"/a(/.*)?"));
    assert!(has_meta(b"/a{1}"));
    assert!(!has_meta(br"/a\{"));
}

#[test]
fn paths_are_cleaned_and_mount_point_prefixed() {
    assert_eq!(clean(b"//system//etc/"), b"/system/etc");
    assert_eq!(clean(b"///"), b"/");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fc");
    std::fs::write(
        &p,
        "/  u:r:root:s0\n/system  u:r:sys:s0\n/system/bin(/.*)?  u:r:bin:s0\n",
    )
    .unwrap();
    let fc = FileContexts::open(&p, Some(b"/system")).unwrap();
    assert_eq!(fc.label(b"", DIR), Some(&b"u:r:sys:s0"[..]));
    assert_eq!(fc.label(b"bin/sh", REG), Some(&b"u:r:bin:s0"[..]));
    let fc = FileContexts::open(&p, None).unwrap();
    assert_eq!(fc.label(b"", DIR), Some(&b"u:r:root:s0"[..]));
    assert_eq!(fc.label(b"bin/sh", REG), None);
}

#[test]
fn relabel_replaces_the_source_label() {
    let (_d, fc) = load("/a  u:r:a:s0\n");
    let fc = fc.unwrap();
    let x = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
    let mut xattrs = vec![
        x("security.capability", "c"),
        x("security.selinux", "old"),
        x("user.z", "z"),
    ];
    fc.relabel(&mut xattrs, b"a", REG);
    assert_eq!(
        xattrs,
        [
            x("security.capability", "c"),
            x("security.selinux", "u:r:a:s0"),
            x("user.z", "z")
        ]
    );
    // No label: the source's own is dropped all the same.
    fc.relabel(&mut xattrs, b"b", REG);
    assert_eq!(xattrs, [x("security.capability", "c"), x("user.z", "z")]);
}

#[test]
fn companions_local_and_substitutions() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fc");
    std::fs::write(&p, "/.*  u:r:default:s0\n/srv/www(/.*)?  u:r:www:s0\n").unwrap();
    std::fs::write(with_suffix(&p, "local"), "/opt/x  u:r:local:s0\n").unwrap();
    std::fs::write(with_suffix(&p, "subs"), "# local\n/web /srv/www\n").unwrap();
    std::fs::write(
        with_suffix(&p, "subs_dist"),
        "/usr/local/www /web\n/lib64 /lib\n",
    )
    .unwrap();
    let fc = FileContexts::open(&p, None).unwrap();
    assert_eq!(label(&fc, "/opt/x", REG), Some("u:r:local:s0"));
    assert_eq!(label(&fc, "/web/index", REG), Some("u:r:www:s0"));
    assert_eq!(label(&fc, "/web", DIR), Some("u:r:www:s0"));
    assert_eq!(label(&fc, "/webx", REG), Some("u:r:default:s0"));
    assert_eq!(
        sub_one(&parse_subs(b"/x /\n"), b"/x/y"),
        Some(b"/y".to_vec())
    );
    // Local first, then the distribution's on the result.
    assert_eq!(
        substitute(
            &parse_subs(b"/a /usr/local/www\n"),
            &parse_subs(b"/usr/local/www /web\n"),
            b"/a/i"
        ),
        Some(b"/web/i".to_vec())
    );
}

#[test]
fn extra_fields_are_ignored_and_comments_only_lead() {
    let (_d, fc) = load("  /a\t--\tu:r:a:s0  extra  fields\n");
    assert_eq!(label(&fc.unwrap(), "/a", REG), Some("u:r:a:s0"));
    // `#` after a field is a field: here an invalid file type.
    let (_d, fc) = load("/a u:r:a:s0 # trailing\n");
    assert!(fc.is_err());
}

#[test]
fn bad_files_name_the_file_and_line() {
    for (text, want) in [
        ("/ok u:r:a:s0\n/lonely\n", ":2: missing fields"),
        ("/a -x u:r:a:s0\n", ":1: invalid file type \"-x\""),
        ("/a --- u:r:a:s0\n", ":1: invalid file type \"---\""),
        (
            "\n/a(  u:r:a:s0\n",
            ":2: invalid or unsupported regex \"/a(\"",
        ),
        ("/(a)\\1  u:r:a:s0\n", ":1: invalid or unsupported regex"),
        ("/(?=a)  u:r:a:s0\n", ":1: invalid or unsupported regex"),
        ("/é  u:r:a:s0\n", ":1: non-ASCII characters"),
    ] {
        let (d, fc) = load(text);
        let e = fc.unwrap_err().to_string();
        let file = d.path().join("file_contexts").display().to_string();
        assert!(e.starts_with(&file), "{text:?}: {e}");
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("file_contexts.bin");
    std::fs::write(&p, COMPILED_MAGIC.to_le_bytes()).unwrap();
    let e = FileContexts::open(&p, None).unwrap_err().to_string();
    assert!(e.contains("compiled file_contexts"), "{e}");
    let e = FileContexts::open(&d.path().join("missing"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("read the file contexts"),
        "{e}"
    );
}

#[test]
fn pcre_literal_braces_and_classes() {
    assert_eq!(
        pcre_literals("/run/user/%{USERID}/x"),
        r"/run/user/%\{USERID\}/x"
    );
    assert_eq!(pcre_literals("/a{2}b{1,}c{1,3}"), "/a{2}b{1,}c{1,3}");
    assert_eq!(pcre_literals("/a{,3}"), r"/a\{,3\}");
    assert_eq!(
        pcre_literals(r"/a\{[]a[:digit:]&~[]"),
        r"/a\{[\]a[:digit:]\&\~\[]"
    );
    assert_eq!(pcre_literals("[^]x]"), r"[^\]x]");
    let (_d, fc) = load("/run/user/%{USERID}(/.*)?  u:r:run:s0\n/x[[]  u:r:b:s0\n");
    let fc = fc.unwrap();
    assert_eq!(label(&fc, "/run/user/%{USERID}/a", REG), Some("u:r:run:s0"));
    assert_eq!(label(&fc, "/x[", REG), Some("u:r:b:s0"));
}

#[test]
fn common_policy_escapes_compile() {
    // Escapes of punctuation as real policies write them.
    let (_d, fc) = load(
        "/usr/lib/ld-[^/]*\\.so(\\.[^/]*)*  u:r:ld:s0\n\
         /var/run/\\.nscd  u:r:n:s0\n\
         /dev/[shmxv]d[^/]*  -b  u:r:disk:s0\n\
         /etc/a\\-b  u:r:ab:s0\n",
    );
    let fc = fc.unwrap();
    assert_eq!(label(&fc, "/usr/lib/ld-2.36.so", REG), Some("u:r:ld:s0"));
    assert_eq!(label(&fc, "/var/run/.nscd", REG), Some("u:r:n:s0"));
    assert_eq!(label(&fc, "/dev/sda1", 0o060600), Some("u:r:disk:s0"));
    assert_eq!(label(&fc, "/etc/a-b", REG), Some("u:r:ab:s0"));
}
