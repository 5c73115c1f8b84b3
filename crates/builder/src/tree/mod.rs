//! The in-memory tree every input produces and every later pass reads: one node per
//! inode (hard links share a node), node 0 the root, nodes in breadth-first order
//! with each directory's entries sorted by name bytes, so inode numbers and the image
//! do not depend on the input's listing order or on thread scheduling.

mod node;
mod source;

pub(crate) use node::{Archive, Kind, Node, OVL_ORIGIN, Tree};
pub(crate) use source::Source;
