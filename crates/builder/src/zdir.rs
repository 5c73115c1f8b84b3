//! Compressed directories (`--zD`), as mkfs.erofs 1.9.4 writes them: each directory
//! of at least 8 bytes is a compressed inode whose whole data is one fragment in the
//! packed inode (its map is the 8-byte header holding the fragment's offset), and the
//! packed inode, compressed, holds every directory's blocks one after another.
//!
//! The map's size does not depend on the directory's contents, so the layout (and
//! every NID) is fixed before the contents, which hold NIDs, are written: the writer
//! lays out once, fills the reserved ranges of the packed inode ([`fill`]), compresses
//! it and lays out again; only the packed inode, the last node, changes.

use crate::compress::extent::{Frag, ZFile};
use crate::compress::frag::Packed;
use crate::dir::DirLayout;
use crate::error::Result;
use crate::layout::Layout;
use crate::tree::{Kind, Tree};

/// Smallest directory stored compressed (mkfs.erofs: the map header's size).
const MIN_SIZE: u64 = 8;

/// Makes every directory of at least [`MIN_SIZE`] bytes a whole-file fragment, its
/// range reserved at the end of `pk`.
pub(crate) fn plan(
    tree: &Tree,
    dirs: &[Option<DirLayout>],
    zfiles: &mut [Option<ZFile>],
    pk: &mut Packed,
) -> Result<()> {
    for (node, n) in tree.nodes.iter().enumerate() {
        let Some(d) = dirs.get(node).and_then(Option::as_ref) else {
            continue;
        };
        if !matches!(n.kind, Kind::Dir { .. }) || d.size < MIN_SIZE {
            continue;
        }
        let offset = pk.reserve(d.size)?;
        zfiles[node] = Some(ZFile {
            frag: Some(Frag {
                lstart: 0,
                len: d.size,
                spill: None,
                offset,
                suffix_of: None,
            }),
            ..ZFile::default()
        });
    }
    Ok(())
}

/// True when node `node` is a directory stored as a fragment.
pub(crate) fn is_compressed_dir(tree: &Tree, zfiles: &[Option<ZFile>], node: usize) -> bool {
    matches!(tree.nodes[node].kind, Kind::Dir { .. }) && zfiles[node].is_some()
}

/// Writes each compressed directory's blocks, with the NIDs of `lay`, into its range
/// of the packed inode.
pub(crate) fn fill(
    tree: &Tree,
    dirs: &[Option<DirLayout>],
    zfiles: &[Option<ZFile>],
    lay: &Layout,
    pk: &Packed,
    bs: u64,
) -> Result<()> {
    for node in 0..tree.nodes.len() {
        if !is_compressed_dir(tree, zfiles, node) {
            continue;
        }
        let d = dirs[node].as_ref().expect("directory layout");
        let f = zfiles[node]
            .as_ref()
            .and_then(|z| z.frag)
            .expect("planned as a fragment");
        let mut data = Vec::with_capacity(d.size as usize);
        for b in 0..d.block_ends.len() {
            data.extend_from_slice(&d.block(b, bs as usize, |n| lay.nid(n, bs)));
        }
        debug_assert_eq!(data.len() as u64, d.size);
        pk.put(&data, f.offset)?;
    }
    Ok(())
}
