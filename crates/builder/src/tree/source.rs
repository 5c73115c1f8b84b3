//! Reading a regular file's data wherever the input left it: its own file (opened
//! without following symlinks and, when allowed, without touching its atime), its
//! range of the tar archive, or its inode in a layer image (rebuild mode, read
//! through the EROFS reader, so any layout of the layer can be copied). Read errors name the file, or the archive, the entry
//! and the offset; data that ends early is reported as a changed source.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::node::Tree;
use crate::error::{Error, Result};

fn open_source(path: &Path) -> Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    // O_NOATIME keeps the build from touching the source's atimes; it is refused
    // for files the caller does not own unless privileged.
    let fd = match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::open(path, flags, Mode::empty()),
        r => r,
    }
    .map_err(|e| Error::io(path, "open", e.into()))?;
    Ok(File::from(fd))
}

/// Where a regular file's data is read from: its own file, or its range of the tar
/// archive; read errors name the file (or the archive, entry and offset).
pub(crate) struct Source<'a> {
    own: Option<File>,
    layer: Option<(&'a ishare_erofs::Image, &'a ishare_erofs::Inode, &'a Path)>,
    /// A layer file whose data is one contiguous range of its layer image: that
    /// file, read directly from [`Source::base`] (and copied in the kernel).
    in_layer: Option<&'a File>,
    tree: &'a Tree,
    node: usize,
    /// Offset of the data in the file read.
    pub base: u64,
}

impl<'a> Source<'a> {
    pub(crate) fn open(tree: &'a Tree, node: usize) -> Result<Self> {
        let n = &tree.nodes[node];
        if let Some(l) = tree.layers.as_ref().and_then(|l| l.file(node)) {
            let (img, inode, _) = l;
            // One extent over the whole file, on the layer image or on its extra
            // device appended to it (a tar index's tar): read from the file.
            let direct = match img.map(inode, 0) {
                Ok(ishare_erofs::Extent {
                    logical: 0,
                    len,
                    kind: ishare_erofs::ExtentKind::Mapped { device, offset },
                }) if inode.size > 0 && len >= inode.size => {
                    img.device_file(device, offset, inode.size).ok().flatten()
                }
                _ => None,
            };
            return Ok(Self {
                own: None,
                layer: Some(l),
                in_layer: direct.map(|(f, _)| f),
                tree,
                node,
                base: direct.map_or(0, |(_, at)| at),
            });
        }
        let (own, base) = match n.archive_offset {
            Some(off) => {
                let a = tree.archive.as_ref().expect("tar nodes have their archive");
                if a.file.is_none() {
                    return Err(Error::Tar {
                        archive: a.name.clone(),
                        what: format!(
                            "the data of entry {} was not kept (a tar index read from a stream)",
                            tree.path(node).display()
                        ),
                    });
                }
                (None, off)
            }
            None => (Some(open_source(&tree.path(node))?), 0),
        };
        Ok(Self {
            own,
            layer: None,
            in_layer: None,
            tree,
            node,
            base,
        })
    }

    /// The file the data is in, from byte [`Source::base`]; `None` for a file in a
    /// layer image, which is only read through [`Source::read_at`].
    pub(crate) fn file(&self) -> Option<&File> {
        if self.layer.is_some() {
            return self.in_layer;
        }
        Some(match &self.own {
            Some(f) => f,
            None => self
                .tree
                .archive
                .as_ref()
                .and_then(|a| a.file.as_ref())
                .expect("Source::open checked the archive file"),
        })
    }

    /// Reads file bytes from `pos` into `buf`; returns the count (0 at the end).
    pub(crate) fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        match (self.layer, self.file()) {
            (_, Some(f)) => f.read_at(buf, self.base + pos),
            (Some((img, inode, _)), None) => img
                .read_at(inode, pos, buf)
                .map_err(|e| std::io::Error::other(e.to_string())),
            (None, None) => unreachable!("a source without a layer has a file"),
        }
    }

    /// The path that read errors name.
    pub(crate) fn path(&self) -> PathBuf {
        if let Some((_, _, p)) = self.layer {
            return p.to_path_buf();
        }
        match &self.own {
            Some(_) => self.tree.path(self.node),
            None => self.tree.archive.as_ref().expect("archive").name.clone(),
        }
    }

    pub(crate) fn read_err(&self, e: std::io::Error) -> Error {
        if let Some((_, _, layer)) = self.layer {
            return Error::Layer {
                layer: layer.to_path_buf(),
                what: format!("/{}: {e}", self.tree.path(self.node).display()),
            };
        }
        let n = &self.tree.nodes[self.node];
        match n.archive_offset {
            Some(off) => Error::io(
                self.path(),
                "read",
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "the data of entry {} at byte {off}: {e}",
                        self.tree.path(self.node).display()
                    ),
                ),
            ),
            None => Error::io(self.path(), "read", e),
        }
    }

    /// The error for data that ends before the size the scan saw.
    pub(crate) fn short(&self, size: u64) -> Error {
        let n = &self.tree.nodes[self.node];
        Error::Changed {
            path: self.path(),
            what: match n.archive_offset {
                Some(_) => format!(
                    "it ends inside the data of entry {}",
                    self.tree.path(self.node).display()
                ),
                None => format!("it is shorter than the {size} bytes it had"),
            },
        }
    }

    /// Reads `buf.len()` bytes at file offset `pos` (of a file of `size` bytes).
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64, size: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => return Err(self.short(size)),
                Ok(k) => done += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e)),
            }
        }
        Ok(())
    }
}
