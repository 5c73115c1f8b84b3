//! What every compression step needs to know about the build: the tree, the
//! settings, the spill file, and which of the file-level features are on.

use super::config::Compression;
use super::spill::Spill;
use crate::tree::Tree;

/// What the compression pass needs.
pub(crate) struct Pass<'a> {
    pub tree: &'a Tree,
    pub cfg: &'a Compression,
    pub block_size: u32,
    /// Take each file's SHA-256 (fingerprints) while its data is read anyway.
    pub hash: bool,
    /// Where encoded blocks and tail fragments wait for the layout.
    pub spill: &'a Spill,
    pub progress: Option<&'a dyn crate::options::Progress>,
    /// Ends of files become tail fragments (not for the packed inode itself).
    pub fragments: bool,
    /// Inline tails allowed (ztailpacking, and no fragments).
    pub tailpacking: bool,
    /// Uncompressed blocks stored rotated (`ADVISE_INTERLACED_PCLUSTER`).
    pub interlaced: bool,
    /// Hash each pcluster's encoded bytes (to find identical ones).
    pub pcluster_hashes: bool,
    /// The superblock has the 48-bit feature: extent records, and byte-aligned
    /// pclusters for some algorithms.
    pub wide: bool,
}
