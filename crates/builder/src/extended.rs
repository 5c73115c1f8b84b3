//! mkfs.erofs's extended options (`-E`): comma-separated, `^` negates. The options
//! of the image go straight into [`BuildOptions`]; the compression ones are kept
//! until `-z` says whether there is compression, then put into its
//! [`Compression`] (or refused without it). The `-z` grammar itself is
//! [`Compression::parse`].

use crate::compress::config::{Compression, FragDedupe, parse_size};
use crate::error::{Error, Result};
use crate::options::{BuildOptions, InodeVersion};

/// The compression options of `-E`, collected over every `-E` argument.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtendedOptions {
    /// `ztailpacking`.
    pub ztailpacking: bool,
    /// `legacy-compress`.
    pub legacy_compress: bool,
    /// `fragments`.
    pub fragments: bool,
    /// `all-fragments`.
    pub all_fragments: bool,
    /// `fragments=SIZE` (or `all-fragments=SIZE`): the packed inode's pcluster size.
    pub packed_pcluster: Option<u32>,
    /// `dedupe`.
    pub dedupe: bool,
    /// `^dedupe` (or bit 4 clear in `--zfeature-bits`): without compression, no
    /// chunk deduplication either.
    pub dedupe_off: bool,
    /// `fragdedupe[=inode]` / `^fragdedupe`: how tail fragments are deduplicated.
    pub fragdedupe: FragDedupe,
    /// `force-inode-blockmap` was the last chunk format asked for (a blob device
    /// needs chunk indexes, so `--blobdev` refuses it, as mkfs.erofs).
    pub force_blockmap: bool,
}

impl ExtendedOptions {
    /// Applies one `-E` argument: image options to `o`, compression ones to `self`.
    pub fn parse(&mut self, o: &mut BuildOptions, arg: &str) -> Result<()> {
        for token in arg.split(',').filter(|t| !t.is_empty()) {
            let (clear, key) = match token.strip_prefix('^') {
                Some(k) => (true, k),
                None => (false, token),
            };
            let (key, value) = match key.split_once('=') {
                Some((k, v)) if k == "fragments" || k == "all-fragments" => (k, Some(v)),
                // Any value but "inode" means full deduplication, as mkfs.erofs.
                Some(("fragdedupe", v)) if !clear && !v.is_empty() => {
                    self.fragdedupe = if v == "inode" {
                        FragDedupe::Inode
                    } else {
                        FragDedupe::Full
                    };
                    continue;
                }
                _ => (key, None),
            };
            if let Some(v) = value {
                if clear {
                    return Err(Error::InvalidOption(format!(
                        "-E {token}: a negated option takes no value"
                    )));
                }
                let n = parse_size(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::InvalidOption(format!("-E {token}: bad pcluster size {v:?}"))
                    })?;
                self.packed_pcluster = Some(n);
            }
            match key {
                "noinline_data" => o.inline_data = clear,
                "inline_data" => o.inline_data = !clear,
                "force-inode-compact" => o.inode_version = InodeVersion::Compact,
                "force-inode-extended" => o.inode_version = InodeVersion::Extended,
                "force-chunk-indexes" => {
                    o.chunk_indexes = !clear;
                    self.force_blockmap = clear;
                }
                "force-inode-blockmap" => {
                    o.chunk_indexes = clear;
                    self.force_blockmap = !clear;
                }
                "xattr-name-filter" => o.xattr_name_filter = !clear,
                "nosbcrc" => o.sb_checksum = clear,
                "plain-xattr-prefixes" => o.plain_xattr_prefixes = !clear,
                "ztailpacking" => self.ztailpacking = !clear,
                "legacy-compress" => self.legacy_compress = !clear,
                "fragments" => {
                    self.fragments = !clear;
                    if clear {
                        self.all_fragments = false;
                    }
                }
                "all-fragments" => self.all_fragments = !clear,
                "fragdedupe" if clear => self.fragdedupe = FragDedupe::Off,
                "fragdedupe" => self.fragdedupe = FragDedupe::Full,
                "48bit" => o.format_48bit = !clear,
                "dot-omitted" => o.dot_omitted = !clear,
                "dedupe" => {
                    self.dedupe = !clear;
                    self.dedupe_off = clear;
                }
                _ => {
                    return Err(Error::InvalidOption(format!(
                        "-E {token}: unknown or unsupported extended option"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `--zfeature-bits=N`: bit i sets (1) or clears (0) the i-th compression
    /// feature of mkfs.erofs's list, up to N's highest set bit: legacy-compress,
    /// ztailpacking, fragments, all-fragments, dedupe, fragdedupe, 48bit,
    /// dot-omitted.
    pub fn apply_bits(&mut self, o: &mut BuildOptions, bits: i64) -> Result<()> {
        const NAMES: [&str; 8] = [
            "legacy-compress",
            "ztailpacking",
            "fragments",
            "all-fragments",
            "dedupe",
            "fragdedupe",
            "48bit",
            "dot-omitted",
        ];
        if bits < 0 || bits >> NAMES.len() != 0 {
            return Err(Error::InvalidOption(format!(
                "--zfeature-bits={bits}: only bits 0 to {} are features",
                NAMES.len() - 1
            )));
        }
        for (i, name) in NAMES.iter().enumerate() {
            if bits >> i == 0 {
                break;
            }
            let on = bits >> i & 1 == 1;
            match i {
                0 => self.legacy_compress = on,
                1 => self.ztailpacking = on,
                2 => self.fragments = on,
                3 => self.all_fragments = on,
                4 => {
                    self.dedupe = on;
                    self.dedupe_off = !on;
                }
                5 if on => self.fragdedupe = FragDedupe::Full,
                5 => self.fragdedupe = FragDedupe::Off,
                6 => o.format_48bit = on,
                _ => {
                    debug_assert_eq!(*name, "dot-omitted");
                    o.dot_omitted = on;
                }
            }
        }
        Ok(())
    }

    /// Puts the compression options into `c` (all-fragments implies fragments).
    pub fn apply(&self, c: &mut Compression) {
        c.ztailpacking = self.ztailpacking;
        c.legacy_indexes = self.legacy_compress;
        c.fragments = self.fragments || self.all_fragments;
        c.all_fragments = self.all_fragments;
        c.packed_pcluster_size = self.packed_pcluster;
        c.dedupe = self.dedupe;
        c.fragdedupe = self.fragdedupe;
    }

    /// For a build without `-z`: an error if an option that needs compression is
    /// set; `dedupe` means chunk deduplication instead, with block-sized chunks, and
    /// `^dedupe` turns chunk deduplication off (both as mkfs.erofs 1.9.4).
    pub fn apply_uncompressed(&self, o: &mut BuildOptions) -> Result<()> {
        if self.fragments || self.all_fragments {
            return Err(Error::InvalidOption(
                "-E fragments and all-fragments need compression (-z)".into(),
            ));
        }
        if self.dedupe {
            o.chunk_size = Some(u64::from(o.block_size));
        }
        if self.dedupe_off {
            o.chunk_dedupe = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_and_compression_options() {
        let mut o = BuildOptions::default();
        let mut e = ExtendedOptions::default();
        e.parse(&mut o, "noinline_data,^xattr-name-filter,fragments=16k")
            .unwrap();
        e.parse(&mut o, "all-fragments,dedupe,^fragments").unwrap();
        assert!(!o.inline_data && !o.xattr_name_filter);
        assert!(!e.fragments && !e.all_fragments && e.dedupe);
        assert_eq!(e.packed_pcluster, Some(16384));
        assert!(e.apply_uncompressed(&mut o).is_ok());
        assert_eq!(o.chunk_size, Some(4096));
        e.all_fragments = true;
        assert!(e.apply_uncompressed(&mut o).is_err());
        e.all_fragments = false;
        let mut z = ExtendedOptions {
            legacy_compress: true,
            ..Default::default()
        };
        z.apply_bits(&mut o, 0b10010).unwrap();
        assert!(z.ztailpacking && z.dedupe && !z.legacy_compress && !z.fragments);
        assert_eq!(z.fragdedupe, FragDedupe::Full);
        z.apply_bits(&mut o, 0b1000_0000).unwrap();
        assert!(o.dot_omitted && !o.format_48bit && z.fragdedupe == FragDedupe::Off);
        z.apply_bits(&mut o, 1 << 6).unwrap();
        assert!(o.format_48bit);
        assert!(z.apply_bits(&mut o, 1 << 8).is_err());
        assert!(z.apply_bits(&mut o, -1).is_err());
        e.parse(&mut o, "fragdedupe=inode,^48bit").unwrap();
        assert_eq!(e.fragdedupe, FragDedupe::Inode);
        assert!(!o.format_48bit);
        e.parse(&mut o, "^fragdedupe").unwrap();
        assert_eq!(e.fragdedupe, FragDedupe::Off);
        e.parse(&mut o, "fragdedupe=x").unwrap();
        assert_eq!(e.fragdedupe, FragDedupe::Full);
        for (bad, msg) in [
            (
                "^fragments=4k",
                "-E ^fragments=4k: a negated option takes no value",
            ),
            ("fragments=x", "-E fragments=x: bad pcluster size \"x\""),
            (
                "dedupe=1",
                "-E dedupe=1: unknown or unsupported extended option",
            ),
        ] {
            let err = e.parse(&mut o, bad).unwrap_err().to_string();
            assert_eq!(err, msg);
        }
    }
}
