//! The image file: a temporary file next to it, metadata writes merged into few
//! syscalls, and the commit (permissions, the
//! `--offset`, the rename) that makes a finished build appear under its name; or,
//! for an incremental build in place, the image itself, opened for writing.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// A temporary file next to `image`, so the final rename stays on one file system.
pub(crate) fn create_temp(image: &Path) -> Result<tempfile::NamedTempFile> {
    if let Ok(m) = std::fs::metadata(image)
        && !m.is_file()
    {
        {
            return Err(Error::InvalidOption(format!(
                "{}: exists and is not a regular file (writing to devices is not supported yet)",
                image.display()
            )));
        }
    }
    let dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "create a temporary file in", e))
}

/// Gives the image the usual permissions and moves it to its final name, `offset`
/// bytes into the file (`--offset`; the bytes before it are zeros).
pub(crate) fn commit(out: tempfile::NamedTempFile, image: &Path, offset: u64) -> Result<()> {
    let out = if offset > 0 {
        // Rare enough that one more copy (in the kernel where it can) is simpler
        // than offsetting every write of the build.
        let shifted = create_temp(image)?;
        let len = out
            .as_file()
            .metadata()
            .map_err(|e| Error::io(out.path(), "stat", e))?
            .len();
        let total = offset
            .checked_add(len)
            .ok_or_else(|| Error::TooLarge("--offset".into()))?;
        shifted
            .as_file()
            .set_len(total)
            .map_err(|e| Error::io(shifted.path(), "resize", e))?;
        let mut done =
            crate::data::copy_range(out.as_file(), 0, shifted.as_file(), offset, len).unwrap_or(0);
        let mut buf = vec![0u8; 1 << 20];
        while done < len {
            let n = out
                .as_file()
                .read_at(&mut buf, done)
                .map_err(|e| Error::io(out.path(), "read back", e))?;
            if n == 0 {
                break;
            }
            shifted
                .as_file()
                .write_all_at(&buf[..n], offset + done)
                .map_err(|e| Error::io(shifted.path(), "write", e))?;
            done += n as u64;
        }
        shifted
    } else {
        out
    };
    let umask = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(umask);
    let mode = 0o666 & !umask.bits();
    out.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(out.path(), "set permissions of", e))?;
    out.persist(image)
        .map_err(|e| Error::io(image, "rename the finished image to", e.error))?;
    Ok(())
}

/// Where a build writes: a temporary file renamed over the image at the end, or the
/// existing image itself (an incremental build in place, which writes only past the
/// image's blocks until its superblock, written last).
pub(crate) enum Output {
    Temp(tempfile::NamedTempFile),
    InPlace(InPlace),
}

/// The image being added to in place. Until [`Output::seal`], dropping it (a failed
/// build) cuts the file back to its old length, so the image is as it was.
pub(crate) struct InPlace {
    file: std::fs::File,
    path: std::path::PathBuf,
    old_len: u64,
    sealed: std::cell::Cell<bool>,
}

impl Drop for InPlace {
    fn drop(&mut self) {
        if !self.sealed.get() {
            // Best effort: the bytes past the old length are unused either way.
            let _ = self.file.set_len(self.old_len);
        }
    }
}

impl Output {
    /// The temporary file next to `image` (see [`create_temp`]).
    pub(crate) fn temp(image: &Path) -> Result<Output> {
        create_temp(image).map(Output::Temp)
    }

    /// `image` itself, opened for writing (not truncated).
    pub(crate) fn in_place(image: &Path) -> Result<Output> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(|e| Error::io(image, "open for writing", e))?;
        let old_len = file
            .metadata()
            .map_err(|e| Error::io(image, "stat", e))?
            .len();
        Ok(Output::InPlace(InPlace {
            file,
            path: image.to_path_buf(),
            old_len,
            sealed: std::cell::Cell::new(false),
        }))
    }

    pub(crate) fn as_file(&self) -> &std::fs::File {
        match self {
            Output::Temp(t) => t.as_file(),
            Output::InPlace(p) => &p.file,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Output::Temp(t) => t.path(),
            Output::InPlace(p) => &p.path,
        }
    }

    /// In place: makes everything written so far durable, and keeps it whatever
    /// happens next; called just before the superblock that makes it the image is
    /// written.
    pub(crate) fn seal(&self) -> Result<()> {
        if let Output::InPlace(p) = self {
            p.file
                .sync_data()
                .map_err(|e| Error::io(&p.path, "sync", e))?;
            p.sealed.set(true);
        }
        Ok(())
    }

    /// Finishes the build: the temporary file is renamed over `image` (see
    /// [`commit`]); the image written in place is synced.
    pub(crate) fn commit(self, image: &Path, offset: u64) -> Result<()> {
        match self {
            Output::Temp(t) => commit(t, image, offset),
            Output::InPlace(p) => p
                .file
                .sync_data()
                .map_err(|e| Error::io(&p.path, "sync", e)),
        }
    }
}

/// Writes metadata pieces at their offsets, merging adjacent ones into one write.
pub(crate) struct MetaWriter<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> MetaWriter<'a> {
    const FLUSH_AT: usize = 1 << 20;

    pub(crate) fn new(file: &'a std::fs::File, path: &'a Path) -> Self {
        Self {
            file,
            path,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub(crate) fn write(&mut self, data: &[u8], off: u64) -> Result<()> {
        if self.start + self.buf.len() as u64 != off || self.buf.len() >= Self::FLUSH_AT {
            self.flush()?;
            self.start = off;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.start)
            .map_err(|e| Error::io(self.path, "write", e))?;
        self.start += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}
