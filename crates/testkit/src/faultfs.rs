//! A FUSE file system that serves the regular files of one directory read-only and
//! fails reads on demand: the "device" of the reliability tests. The host kernel has no
//! device-mapper (`error`/`flakey` targets) and no fault injection, so an image placed
//! here stands in for an image on a failing disk: ishare's daemon reads it through this
//! mount (`O_DIRECT` and `direct_io`, so every read reaches [`FaultFs`]) and gets EIO
//! when the test says so.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request,
};

/// What reads do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every read succeeds.
    None,
    /// Every read fails with EIO (a dead disk, dm `error`).
    Eio,
    /// Every third read fails with EIO (a flaky disk).
    Flaky,
}

const TTL: Duration = Duration::from_secs(1);

/// The file system: the files, and the fault switch shared with [`FaultMount`].
#[derive(Debug)]
struct FaultFs {
    files: Vec<(String, File)>,
    fault: Arc<AtomicU8>,
    reads: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

/// A mounted [`FaultFs`]; unmounted when dropped.
#[derive(Debug)]
pub struct FaultMount {
    dir: tempfile::TempDir,
    fault: Arc<AtomicU8>,
    failed: Arc<AtomicU64>,
    session: Option<BackgroundSession>,
}

impl FaultMount {
    /// Serves the regular files directly in `src` at a fresh mount point.
    pub fn new(src: &Path) -> FaultMount {
        let mut files = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(src)
            .expect("read the source directory")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, File::open(&p).expect("open a served file")));
        }
        let fault = Arc::new(AtomicU8::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let fs = FaultFs {
            files,
            fault: fault.clone(),
            reads: Arc::new(AtomicU64::new(0)),
            failed: failed.clone(),
        };
        let dir = crate::mounts::mount_point("ishare-faultfs-");
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("faultfs".into()),
            MountOption::Subtype("faultfs".into()),
        ];
        config.n_threads = Some(4);
        let session = fuser::Session::new(fs, dir.path(), &config)
            .and_then(|s| s.spawn())
            .expect("mount the fault file system");
        FaultMount {
            dir,
            fault,
            failed,
            session: Some(session),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sets what reads do from now on.
    pub fn set(&self, fault: Fault) {
        let v = match fault {
            Fault::None => 0,
            Fault::Eio => 1,
            Fault::Flaky => 2,
        };
        self.fault.store(v, Ordering::SeqCst);
    }

    /// Reads failed so far.
    pub fn failed_reads(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Drop for FaultMount {
    fn drop(&mut self) {
        // Whoever still reads gets errors, not a hang, while the session ends.
        self.set(Fault::Eio);
        drop(self.session.take());
    }
}

impl FaultFs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = if ino == 1 {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            let (_, f) = self.files.get(usize::try_from(ino - 2).ok()?)?;
            let m = f.metadata().ok()?;
            (FileType::RegularFile, 0o444, m.size(), 1)
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Whether this read fails, by the current fault.
    fn fails(&self) -> bool {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        let fail = match self.fault.load(Ordering::SeqCst) {
            0 => false,
            1 => true,
            _ => n % 3 == 2,
        };
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        fail
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent.0 == 1)
            .then(|| self.files.iter().position(|(n, _)| OsStr::new(n) == name))
            .flatten()
            .and_then(|i| self.attr(i as u64 + 2));
        match found {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // direct_io: no page cache here, so every read of the daemon reaches `read`.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((_, f)) = usize::try_from(ino.0 - 2)
            .ok()
            .and_then(|i| self.files.get(i))
        else {
            return reply.error(Errno::ENOENT);
        };
        if self.fails() {
            return reply.error(Errno::EIO);
        }
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..done]);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        for (i, (name, _)) in self.files.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(i as u64 + 2),
                i as u64 + 1,
                FileType::RegularFile,
                name,
            ) {
                break;
            }
        }
        reply.ok();
    }
}
