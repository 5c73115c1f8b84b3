//! The one walk of an image's tree, used by the consistency check, `ishare dump -S`
//! and extraction: every name below a directory, with its path, inode, parent and
//! whether its inode was reached before (a hard link).
//!
//! The walk never enters a directory twice: a directory reached again (a cycle or a
//! directory hard link, both corruption) is yielded as [`Reached::DirectoryAgain`],
//! not entered, so a corrupt image cannot make the walk loop. It is a step, not an
//! error, so that each caller decides when: the check first compares the entry's
//! type with the inode's, statistics skip it; callers that refuse it return
//! [`WalkEntry::cycle_error`], which names the path. A read error ends the walk; it
//! names the directory or entry it was reading.
//!
//! Every listing must follow [`Image::check_listing`] (names in order, one "." naming
//! the directory, one ".." naming the parent the walk came from) before any of its
//! entries is yielded; a listing that does not ends the walk with a corruption error
//! naming the directory. So skipping "." and ".." never hides a name: a second ".."
//! (which would hide a whole subtree from extraction and from the check) or a ".."
//! the mount could not read is refused, not stepped over.

use std::collections::HashSet;
use std::sync::Arc;

use crate::dir::DirEntry;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::inode::Inode;

/// In which order [`Image::walk`] visits the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkOrder {
    /// Depth first, as `tar` and `fsck.erofs` walk: a directory's subtree right after
    /// its entry, then a [`WalkStep::Leave`] for it (the walk's root last). Holds the
    /// listings of the directories on the current path.
    DepthFirst,
    /// One directory at a time: all entries of a directory, then the next directory
    /// from a stack of those found (the last found first); no [`WalkStep::Leave`].
    /// Holds one listing and the inodes of the directories still to visit. The
    /// order [`Image::check`] has always reported its first problem in.
    DirectoryByDirectory,
}

/// How the walk reached an entry's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The first time.
    First,
    /// Again: a later name of a non-directory (a hard link).
    HardLink,
    /// A directory reached again: a cycle or a directory hard link. Not entered.
    DirectoryAgain,
}

/// A name in a directory ("." and ".." are skipped).
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Its path below the walk's root, `/` first (`/dir/name`).
    pub path: Vec<u8>,
    /// NID of the directory holding the name.
    pub parent: u64,
    /// The type the directory entry records (`FT_*`; 0 when unknown), which a
    /// consistent image agrees with the inode's.
    pub entry_type: u8,
    /// The inode the name refers to.
    pub inode: Inode,
    /// First time reached, or again.
    pub reached: Reached,
    image: Arc<str>,
}

impl WalkEntry {
    /// The name (the last component of [`path`](Self::path)).
    pub fn name(&self) -> &[u8] {
        let start = self
            .path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        &self.path[start..]
    }

    /// The path as text (invalid UTF-8 replaced), as errors show it.
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// For a directory reached again, the corruption error naming its path and NID.
    pub fn cycle_error(&self) -> Option<Error> {
        (self.reached == Reached::DirectoryAgain).then(|| {
            let msg = "directory reached twice (a cycle or a directory hard link)";
            Error::new(&self.image, ErrorKind::Corrupt(msg.into()))
                .at_path(self.path_str())
                .at_nid(self.inode.nid)
        })
    }
}

/// A directory the walk lists.
#[derive(Debug, Clone)]
pub struct WalkDir {
    /// Its path below the walk's root (`/` for the root itself).
    pub path: Vec<u8>,
    /// Its inode.
    pub inode: Inode,
}

/// One step of the walk.
#[derive(Debug, Clone)]
pub enum WalkStep {
    /// A directory's listing has been read: its entries come next (with
    /// [`WalkOrder::DepthFirst`], its subtree up to its [`WalkStep::Leave`]).
    Enter(WalkDir),
    /// A name in a directory.
    Entry(WalkEntry),
    /// A directory whose whole subtree has been visited ([`WalkOrder::DepthFirst`]
    /// only).
    Leave(WalkDir),
}

/// A directory to list: its path and inode, and its entries once read.
#[derive(Debug)]
struct Frame {
    path: Vec<u8>,
    inode: Inode,
    /// The NID its ".." must name; unknown for a walk's root other than the image's.
    parent: Option<u64>,
    entries: Option<std::vec::IntoIter<DirEntry>>,
}

/// The walk of [`Image::walk`]: an iterator of [`WalkStep`]s, ending after the
/// first error.
#[derive(Debug)]
pub struct Walk<'a> {
    img: &'a Image,
    order: WalkOrder,
    /// Directories being listed or to list; the one listed is on top.
    stack: Vec<Frame>,
    /// NIDs reached so far.
    seen: HashSet<u64>,
}

impl Image {
    /// Walks the tree below directory `root` (normally [`Image::root`]): the first
    /// step is the [`WalkStep::Enter`] of `root`, whose entries the walk does not
    /// yield as a [`WalkEntry`]. A directory is listed when the walk comes to it
    /// (after the step that names it); entries come in on-disk order.
    pub fn walk(&self, root: Inode, order: WalkOrder) -> Walk<'_> {
        Walk {
            img: self,
            order,
            seen: HashSet::from([root.nid]),
            stack: vec![Frame {
                // The image root's ".." names the root itself.
                parent: (root.nid == self.sb.root_nid).then_some(root.nid),
                path: b"/".to_vec(),
                inode: root,
                entries: None,
            }],
        }
    }
}

impl Walk<'_> {
    fn step(&mut self) -> Result<Option<WalkStep>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(entries) = &mut top.entries else {
                let list = self
                    .img
                    .read_dir(&top.inode)
                    .and_then(|list| {
                        self.img.check_listing(&top.inode, &list, top.parent)?;
                        Ok(list)
                    })
                    .map_err(|e| e.at_path(String::from_utf8_lossy(&top.path).into_owned()))?;
                top.entries = Some(list.into_iter());
                return Ok(Some(WalkStep::Enter(WalkDir {
                    path: top.path.clone(),
                    inode: top.inode.clone(),
                })));
            };
            let Some(ent) = entries.next() else {
                let done = self.stack.pop().expect("non-empty");
                if self.order == WalkOrder::DepthFirst {
                    return Ok(Some(WalkStep::Leave(WalkDir {
                        path: done.path,
                        inode: done.inode,
                    })));
                }
                continue;
            };
            if ent.is_dot_or_dotdot() {
                continue; // checked with the listing
            }
            let mut path = top.path.clone();
            if path.len() > 1 {
                path.push(b'/');
            }
            path.extend_from_slice(&ent.name);
            let parent = top.inode.nid;
            let inode = self
                .img
                .inode(ent.nid)
                .map_err(|e| e.at_path(String::from_utf8_lossy(&path).into_owned()))?;
            let reached = match (self.seen.insert(ent.nid), inode.is_dir()) {
                (true, _) => Reached::First,
                (false, false) => Reached::HardLink,
                (false, true) => Reached::DirectoryAgain,
            };
            if reached == Reached::First && inode.is_dir() {
                let frame = Frame {
                    path: path.clone(),
                    inode: inode.clone(),
                    parent: Some(parent),
                    entries: None,
                };
                // Depth first: listed next. Directory by directory: after the rest of
                // this listing, before the directories found earlier.
                let at = match self.order {
                    WalkOrder::DepthFirst => self.stack.len(),
                    WalkOrder::DirectoryByDirectory => self.stack.len() - 1,
                };
                self.stack.insert(at, frame);
            }
            return Ok(Some(WalkStep::Entry(WalkEntry {
                path,
                parent,
                entry_type: ent.file_type,
                inode,
                reached,
                image: self.img.name.clone(),
            })));
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<WalkStep>;

    fn next(&mut self) -> Option<Self::Item> {
        let step = self.step();
        if step.is_err() {
            self.stack.clear(); // nothing after an error
        }
        step.transpose()
    }
}
