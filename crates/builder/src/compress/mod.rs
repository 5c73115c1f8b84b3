//! Compressed files: the driver of the compression pass. It picks the files that
//! may gain (and their pcluster size and codec by `--compress-hints`), chooses the
//! schedule (`schedule`) and keeps only the files whose compressed form saves space.
//!
//! The pass as folders: settings and their grammar (`config`); one segment cut into
//! extents (`segment`, with `dedupe` and the shapes of its output in `extent`);
//! which segments and files run where (`schedule`, `pool`, tail matching in `tail`);
//! the spill file that holds encoded blocks (`spill`); the packed inode of fragments
//! (`frag`); the map on disk: lcluster indexes (`index`) or, with the 48-bit
//! feature, extent records (`records`); the codecs (`codec`, over `ffi`).

mod codec;
pub(crate) mod config;
mod dedupe;
pub(crate) mod extent;
mod ffi;
pub(crate) mod frag;
pub(crate) mod index;
pub(crate) mod map;
mod pass;
mod pool;
pub(crate) mod records;
mod schedule;
mod segment;
pub(crate) mod spill;
mod tail;

use config::Compression;
use extent::{ZFile, worth_keeping};
use pass::Pass;
use spill::Spill;

use crate::error::Result;
use crate::options::BuildOptions;
use crate::tree::{Kind, Tree};

/// Compresses every regular file that may gain from it; `None` for the others and
/// for files whose compressed form saves nothing (they are stored uncompressed).
pub(crate) fn compress_files(
    tree: &Tree,
    cfg: &Compression,
    opts: &BuildOptions,
    spill: &Spill,
    hash: bool,
) -> Result<Vec<Option<ZFile>>> {
    let bs = u64::from(opts.block_size);
    // Hints match the relative path, rebuilt per file (O(depth)) rather than
    // kept for every node, which would cost the sum of all depths.
    let settings = |i: usize| {
        if cfg.hints.is_empty() {
            (cfg.pcluster_size, 0)
        } else {
            cfg.settings_for(&tree.relative(i))
        }
    };
    let nodes: Vec<(usize, u32, usize)> = (0..tree.nodes.len())
        .filter_map(|i| {
            let n = &tree.nodes[i];
            // A file of one block or less only gains when its tail can be inline or
            // in the packed inode.
            if !(matches!(n.kind, Kind::File)
                && n.size > 0
                && (n.size > bs || cfg.ztailpacking || cfg.fragments))
            {
                return None;
            }
            let (pcluster, alg) = settings(i);
            (pcluster > 0).then_some((i, pcluster, alg))
        })
        .collect();
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start(nodes.iter().map(|&(i, ..)| tree.nodes[i].size).sum());
    }
    let pass = Pass {
        tree,
        cfg,
        block_size: opts.block_size,
        hash,
        spill,
        progress,
        fragments: cfg.fragments,
        // The end of a file goes to the packed inode rather than inline.
        tailpacking: cfg.ztailpacking && !cfg.fragments,
        interlaced: cfg.interlaced(),
        // Identical pclusters are found by their hashes when fragments are on
        // (mkfs.erofs's multithreaded path); dedupe finds them by content.
        pcluster_hashes: cfg.fragments && !cfg.dedupe,
        wide: opts.extent_records(),
    };
    let files: Vec<Option<ZFile>> = if cfg.all_fragments {
        schedule::compress_all_fragments(&pass, &nodes)?
            .into_iter()
            .map(Some)
            .collect()
    } else if cfg.dedupe {
        schedule::compress_dedupe(&pass, &nodes)?
    } else {
        schedule::compress_all(&pass, &nodes)?
            .into_iter()
            .zip(&nodes)
            .map(|(z, &(i, ..))| worth_keeping(&z, tree.nodes[i].size, bs).then_some(z))
            .collect()
    };
    if let Some(p) = progress {
        p.finish();
    }
    let mut out = vec![None; tree.nodes.len()];
    for ((node, ..), z) in nodes.into_iter().zip(files) {
        out[node] = z;
    }
    Ok(out)
}

/// Compresses the packed inode (node `node`, whose data is the packed file) as
/// mkfs.erofs does: its own pcluster size, ztailpacking if asked, no fragments of
/// its own, no dedupe. `None` if that saves nothing.
pub(crate) fn compress_packed(
    tree: &Tree,
    node: usize,
    cfg: &Compression,
    opts: &BuildOptions,
    spill: &Spill,
) -> Result<Option<ZFile>> {
    compress_special(tree, node, cfg, opts, spill, cfg.packed_pcluster())
}

/// Compresses a special inode (the packed inode, the metabox inode) whose data is
/// node `node`'s file, with pclusters of `pcluster` bytes and the first algorithm of
/// `cfg`: ztailpacking if asked, no fragments, no dedupe. `None` if that saves nothing.
pub(crate) fn compress_special(
    tree: &Tree,
    node: usize,
    cfg: &Compression,
    opts: &BuildOptions,
    spill: &Spill,
    pcluster: u32,
) -> Result<Option<ZFile>> {
    let bs = u64::from(opts.block_size);
    let size = tree.nodes[node].size;
    if size <= bs && !cfg.ztailpacking {
        return Ok(None);
    }
    let pass = Pass {
        tree,
        cfg,
        block_size: opts.block_size,
        hash: false,
        spill,
        progress: None,
        fragments: false,
        tailpacking: cfg.ztailpacking,
        interlaced: cfg.interlaced(),
        pcluster_hashes: false,
        wide: opts.extent_records(),
    };
    let z = schedule::compress_all(&pass, &[(node, pcluster, 0)])?
        .pop()
        .expect("one file");
    Ok(worth_keeping(&z, size, bs).then_some(z))
}
