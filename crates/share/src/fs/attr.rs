//! What `stat` and `readdir` show of an inode, as a kernel mount of the image shows it:
//! mode, owner, nlink, size and rdev as stored, atime = ctime = mtime, `st_blocks` as
//! the kernel computes it.

use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, INodeNo};
use ishare_erofs::{FileType, Inode};

use super::ImageFs;

impl ImageFs {
    pub(super) fn attr(&self, inode: &Inode, ino: u64) -> FileAttr {
        let kind = match inode.file_type {
            FileType::Regular => fuser::FileType::RegularFile,
            FileType::Directory => fuser::FileType::Directory,
            FileType::Symlink => fuser::FileType::Symlink,
            FileType::CharDevice => fuser::FileType::CharDevice,
            FileType::BlockDevice => fuser::FileType::BlockDevice,
            FileType::Fifo => fuser::FileType::NamedPipe,
            FileType::Socket => fuser::FileType::Socket,
        };
        let t = if inode.mtime >= 0 {
            UNIX_EPOCH + Duration::new(inode.mtime as u64, inode.mtime_nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(inode.mtime.unsigned_abs())
                + Duration::from_nanos(u64::from(inode.mtime_nsec))
        };
        let bs = u64::from(self.block_size);
        FileAttr {
            ino: INodeNo(ino),
            size: inode.size,
            // As the kernel: the stored block count for compressed files, else the
            // size rounded up to blocks.
            blocks: inode
                .compressed_blocks()
                .unwrap_or_else(|| inode.size.div_ceil(bs))
                * (bs / 512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm: inode.permissions(),
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: inode.rdev,
            blksize: self.block_size,
            flags: 0,
        }
    }

    /// The attributes of a child entry (ino = node id, as FUSE requires).
    pub(super) fn entry_attr(&self, inode: &Inode) -> FileAttr {
        self.attr(inode, self.node(inode.nid))
    }
}

pub(super) fn dirent_kind(t: u8) -> fuser::FileType {
    use ishare_erofs::format::*;
    match t {
        FT_DIR => fuser::FileType::Directory,
        FT_SYMLINK => fuser::FileType::Symlink,
        FT_CHRDEV => fuser::FileType::CharDevice,
        FT_BLKDEV => fuser::FileType::BlockDevice,
        FT_FIFO => fuser::FileType::NamedPipe,
        FT_SOCK => fuser::FileType::Socket,
        _ => fuser::FileType::RegularFile,
    }
}

/// The attributes of a negative entry (node id 0: "no such name", cached).
pub(super) fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 512,
        flags: 0,
    }
}
