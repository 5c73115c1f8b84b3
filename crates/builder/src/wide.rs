//! The 48-bit layout (`-E 48bit`, implied by `-E dot-omitted`), as mkfs.erofs
//! 1.9.4 writes it for uncompressed images.
//!
//! What changes: the superblock's `epoch` becomes a base that the 32-bit `build_time`
//! and every compact inode's 32-bit `i_mtime` count from, so compact inodes keep
//! their own mtime (without nanoseconds) and nearly every inode is compact; inodes
//! without data blocks carry the upper bits of the null block address in `i_nb`
//! when that field is not their link count; directories may leave out ".".

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::chunk::scan::{hash_zeros, next_data};
use crate::error::Result;
use crate::options::BuildOptions;
use crate::tree::{Kind, Source, Tree};

/// How inodes are written, from the options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InodeFormat {
    /// The 48-bit layout is on.
    pub wide: bool,
    /// Base of compact inode mtimes.
    pub epoch: i64,
    /// Directories have no "." entry.
    pub dot_omitted: bool,
}

impl InodeFormat {
    pub(crate) fn new(opts: &BuildOptions) -> Self {
        let wide = opts.format_48bit || opts.dot_omitted;
        Self {
            wide,
            epoch: epoch(opts, wide) as i64,
            dot_omitted: opts.dot_omitted,
        }
    }

    /// A compact inode's `i_mtime` for `mtime`, `None` if it cannot hold it. Without
    /// the 48-bit layout compact inodes show the epoch itself (kernels before 6.15
    /// read no time from them), so only that time fits.
    pub(crate) fn compact_mtime(&self, mtime: i64, nsec: u32) -> Option<u32> {
        if self.wide {
            u32::try_from(mtime.checked_sub(self.epoch)?).ok()
        } else {
            (mtime == self.epoch && nsec == 0).then_some(0)
        }
    }
}

/// The superblock's `epoch`: the build time, or with the 48-bit layout the base
/// that leaves the build time within 32 bits of it.
pub(crate) fn epoch(opts: &BuildOptions, wide: bool) -> u64 {
    if wide {
        opts.build_time.saturating_sub(u64::from(u32::MAX))
    } else {
        opts.build_time
    }
}

/// The superblock's 32-bit `build_time` (seconds after the epoch; 48-bit only).
pub(crate) fn build_time(opts: &BuildOptions, wide: bool) -> u32 {
    if wide {
        (opts.build_time - epoch(opts, true)) as u32
    } else {
        0
    }
}

/// Regular files among `nodes` that are entirely holes: with the 48-bit layout
/// mkfs.erofs gives them no data blocks (the null start block reads as zeros).
/// Returns, by node, `Some(digest)` for those (the digest of their zeros when
/// `digest`, else `[0; 32]`).
pub(crate) fn sparse_files(
    tree: &Tree,
    pick: impl Fn(usize) -> bool + Sync,
    digest: bool,
) -> Result<Vec<Option<[u8; 32]>>> {
    (0..tree.nodes.len())
        .into_par_iter()
        .map(|i| {
            let n = &tree.nodes[i];
            if !matches!(n.kind, Kind::File) || n.size == 0 || !pick(i) {
                return Ok(None);
            }
            let src = Source::open(tree, i)?;
            if next_data(&src, 0, n.size)?.is_some() {
                return Ok(None);
            }
            let mut h = Sha256::new();
            if digest {
                hash_zeros(&mut h, n.size);
            }
            Ok(Some(if digest { h.finalize().into() } else { [0; 32] }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_keeps_build_time_in_32_bits() {
        let mut o = BuildOptions {
            build_time: 1_700_000_000,
            format_48bit: true,
            ..Default::default()
        };
        assert_eq!((epoch(&o, true), build_time(&o, true)), (0, 1_700_000_000));
        o.build_time = (1 << 33) + 5;
        let e = epoch(&o, true);
        assert_eq!(e + u64::from(build_time(&o, true)), o.build_time);
        assert_eq!(build_time(&o, true), u32::MAX);
        let f = InodeFormat::new(&o);
        assert_eq!(f.compact_mtime(e as i64 + 7, 9), Some(7));
        assert_eq!(f.compact_mtime(e as i64 - 1, 0), None);
        let narrow = InodeFormat::new(&BuildOptions {
            build_time: 100,
            ..Default::default()
        });
        assert_eq!(narrow.compact_mtime(100, 0), Some(0));
        assert_eq!(narrow.compact_mtime(100, 1), None);
    }
}
