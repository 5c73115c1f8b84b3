//! The in-memory tree every input produces and every later pass reads: one node per
//! inode (hard links share a node), node 0 the root, nodes in breadth-first order
//! with each directory's entries sorted by name bytes, so inode numbers and the image
//! do not depend on the input's listing order or on thread scheduling.
//!
//! Nodes keep their first name and parent, never a path: `Tree::path` rebuilds one
//! when a file is opened or an error names a node, so memory stays linear in the
//! number of nodes however deep the tree (a path per node would cost O(depth²)).

mod node;
mod source;

pub(crate) use node::{Archive, Kind, Node, OVL_ORIGIN, Origin, Tree, path_of, relative_of};
pub(crate) use source::Source;
