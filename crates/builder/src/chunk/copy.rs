//! The data pass of chunk-based files: each stored chunk is copied once, from the
//! first file that has it, to its block of the blob (in the image or on the blob
//! device), on all workers.

use std::fs::File;
use std::path::Path;

use rayon::prelude::*;

use super::ChunkPlan;
use crate::data::{CopyError, copy_range};
use crate::error::{Error, Result};
use crate::tree::{Source, Tree};

/// Largest read buffer when the kernel cannot copy.
const BUF_SIZE: u64 = 1 << 20;

/// Copies the chunks of `plan` to `dst` (named `dst_path` in errors), the blob
/// starting at block `base` of it.
pub(crate) fn copy_chunks(
    tree: &Tree,
    plan: &ChunkPlan,
    dst: &File,
    dst_path: &Path,
    base: u64,
    bs: u64,
) -> Result<()> {
    // One group per file, so each is opened once.
    let mut groups: Vec<&[super::Copy]> = plan.copies.chunk_by(|a, b| a.node == b.node).collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.iter().map(|c| c.len).sum::<u64>()));
    groups.into_par_iter().try_for_each(|g| {
        let src = Source::open(tree, g[0].node)?;
        let size = tree.nodes[g[0].node].size;
        let mut buf = Vec::new();
        for c in g {
            let to = (base + c.blk) * bs;
            // A layer file read through the EROFS reader has no file to copy from.
            let done = match src.file() {
                Some(f) => {
                    copy_range(f, src.base + c.src, dst, to, c.len).map_err(|e| match e {
                        CopyError::Src(e) => src.read_err(e),
                        CopyError::Dst(e) => Error::io(dst_path, "write", e),
                    })?
                }
                None => 0,
            };
            // Without copy_file_range: through a bounded buffer (chunks may be large).
            let mut pos = done;
            while pos < c.len {
                let n = (c.len - pos).min(BUF_SIZE);
                buf.resize(n as usize, 0);
                src.read_exact_at(&mut buf, c.src + pos, size)?;
                std::os::unix::fs::FileExt::write_all_at(dst, &buf, to + pos)
                    .map_err(|e| Error::io(dst_path, "write", e))?;
                pos += n;
            }
        }
        Ok(())
    })
}
