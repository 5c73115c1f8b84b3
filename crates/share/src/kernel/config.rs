//! The running kernel's release and configuration, read in one place: `ishare doctor`
//! reports from them and `mode=auto|kernel` mounts decide by them whether the kernel has
//! EROFS `inode_share` of its own.
//!
//! Why the configuration and not a test mount: a kernel built without
//! `CONFIG_EROFS_FS_PAGE_CACHE_SHARE` accepts `inode_share,domain_id=` and only logs
//! "inode_share option not supported", mounting unshared; nothing a mount returns tells
//! the two apart.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;

/// The first Linux release with EROFS `inode_share` (merged for 7.0-rc1).
pub(crate) const INODE_SHARE_SINCE: (u32, u32) = (7, 0);

/// The Kconfig symbol of the kernel's EROFS page cache sharing.
pub(crate) const INODE_SHARE_CONFIG: &str = "CONFIG_EROFS_FS_PAGE_CACHE_SHARE";

/// `uname -r`.
pub(crate) fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Parses "6.18.44-foo" into (6, 18).
pub(crate) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Parses a kernel configuration: `CONFIG_X=value` lines (`# CONFIG_X is not set` and
/// comments are left out).
pub(crate) fn parse_kernel_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The running kernel's configuration and where it came from (`/proc/config.gz`, else
/// `/boot/config-RELEASE`).
pub(crate) fn kernel_config(release: &str) -> Option<(HashMap<String, String>, String)> {
    if let Ok(f) = File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some((parse_kernel_config(&text), "/proc/config.gz".into()));
        }
    }
    let boot = format!("/boot/config-{release}");
    let text = std::fs::read_to_string(&boot).ok()?;
    Some((parse_kernel_config(&text), boot))
}

/// `key` is `y` or `m`.
pub(crate) fn enabled(config: &HashMap<String, String>, key: &str) -> bool {
    config.get(key).is_some_and(|v| v == "y" || v == "m")
}

/// Whether a kernel of `version` with `config` has EROFS `inode_share`: `Some(true)` or
/// `Some(false)` when that is known, `None` when the configuration is not published
/// (and the version does not rule it out).
pub(crate) fn has_inode_share(
    version: Option<(u32, u32)>,
    config: Option<&HashMap<String, String>>,
) -> Option<bool> {
    match (config, version) {
        (_, Some(v)) if v < INODE_SHARE_SINCE => Some(false),
        (Some(c), _) => Some(enabled(c, INODE_SHARE_CONFIG)),
        (None, _) => None,
    }
}

/// `Ok` when the running kernel has EROFS `inode_share`, else why not (a sentence
/// naming the release and what is missing). Read once per process: the running
/// kernel does not change.
pub(crate) fn inode_share_support() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(read_inode_share_support).clone()
}

fn read_inode_share_support() -> Result<(), String> {
    let release = release();
    let version = parse_kernel_version(&release);
    let config = kernel_config(&release);
    let (a, b) = INODE_SHARE_SINCE;
    match has_inode_share(version, config.as_ref().map(|(c, _)| c)) {
        Some(true) => Ok(()),
        Some(false) => match (version, &config) {
            (Some(v), _) if v < INODE_SHARE_SINCE => Err(format!(
                "Linux {release} has no EROFS inode_share (Linux {a}.{b}+ with {INODE_SHARE_CONFIG})"
            )),
            (_, Some((_, src))) => Err(format!(
                "Linux {release} is built without {INODE_SHARE_CONFIG} (per {src})"
            )),
            _ => Err(format!("Linux {release} has no EROFS inode_share")),
        },
        None => Err(format!(
            "Linux {release} publishes no configuration (/proc/config.gz, /boot/config-{release}): \
             whether it has {INODE_SHARE_CONFIG} is unknown"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_and_configs_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_kernel_version("7.0-rc1"), Some((7, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
        let c = parse_kernel_config(
            "# comment\nCONFIG_EROFS_FS=y\n# CONFIG_EROFS_FS_ZIP_ZSTD is not set\nCONFIG_X=\"s\"\n",
        );
        assert!(enabled(&c, "CONFIG_EROFS_FS"));
        assert!(!enabled(&c, "CONFIG_EROFS_FS_ZIP_ZSTD"));
        assert_eq!(c.get("CONFIG_X").map(String::as_str), Some("s"));
    }

    #[test]
    fn inode_share_needs_7_0_and_the_config() {
        let on = parse_kernel_config("CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y\n");
        let off = parse_kernel_config("# CONFIG_EROFS_FS_PAGE_CACHE_SHARE is not set\n");
        assert_eq!(has_inode_share(Some((7, 2)), Some(&on)), Some(true));
        assert_eq!(has_inode_share(Some((7, 2)), Some(&off)), Some(false));
        // A backported symbol on an older kernel is not taken for the feature.
        assert_eq!(has_inode_share(Some((6, 18)), Some(&on)), Some(false));
        assert_eq!(has_inode_share(Some((6, 18)), None), Some(false));
        assert_eq!(has_inode_share(Some((7, 0)), None), None);
    }
}
