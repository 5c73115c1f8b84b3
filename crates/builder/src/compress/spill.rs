//! The spill file: an unnamed temporary file that holds encoded blocks (and tail
//! fragments) from compression until the layout knows where they go in the image.
//! Writers reserve their range with one atomic add, so workers never wait on it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The unnamed temporary file that holds encoded blocks until the layout is known.
pub(crate) struct Spill {
    pub file: File,
    path: std::path::PathBuf,
    end: AtomicU64,
}

impl Spill {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir)
            .map_err(|e| Error::io(dir, "create a temporary file in", e))?;
        Ok(Self {
            file,
            path: dir.to_path_buf(),
            end: AtomicU64::new(0),
        })
    }

    pub(crate) fn put(&self, data: &[u8]) -> Result<u64> {
        let off = self.end.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.file
            .write_all_at(data, off)
            .map_err(|e| Error::io(&self.path, "write a temporary file in", e))?;
        Ok(off)
    }

    pub(crate) fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| Error::io(&self.path, "read a temporary file in", e))
    }
}
