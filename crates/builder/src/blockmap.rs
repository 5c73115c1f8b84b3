//! `mkfs.erofs --tar=i,MAPFILE`: the block map of a tar build, one line per regular
//! file whose data is in the image, in erofs-utils' format: the first block
//! (hexadecimal, 8 digits), the block count (hexadecimal, right-aligned in 8), the
//! file's data offset in the tar (hexadecimal, at least 8 digits) and, when the last
//! block is not full, the zero bytes that end it (decimal, 8 digits). A tool can
//! fill or check the image's data blocks from the tar with it.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::tree::{Kind, Tree};

/// Writes the block map of `tree` as `lay` placed it (blocks of `bs` bytes) to `to`.
pub(crate) fn write(tree: &Tree, lay: &Layout, bs: u64, to: &Path) -> Result<()> {
    let mut out = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate() {
        let p = &lay.inodes[i];
        let (Kind::File, Some(src)) = (&node.kind, node.archive_offset) else {
            continue;
        };
        // Only data stored whole in its own blocks can be copied in from the tar.
        if p.nblocks == 0 || p.z.is_some() || p.chunks.is_some() || p.tail > 0 {
            continue;
        }
        let zeroed = p.nblocks * bs - p.size;
        let _ = write!(out, "{:08x} {:8x} {:08x}", p.startblk, p.nblocks, src);
        let _ = match zeroed {
            0 => writeln!(out),
            z => writeln!(out, " {z:08}"),
        };
    }
    std::fs::write(to, out).map_err(|e| Error::io(to, "write the block map to", e))
}
