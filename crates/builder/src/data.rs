//! Copying regular files into the image and hashing them, on all worker threads.
//!
//! Each file is streamed through a bounded buffer: full blocks go straight to their
//! place in the image (`pwrite`, or `copy_file_range` when nothing needs hashing),
//! the inline tail to its place right after the inode's metadata.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::layout::{ChunkTarget, Layout};
use crate::tree::{Kind, Source, Tree};

/// Largest read buffer per file.
const BUF_SIZE: usize = 1 << 20;

/// What the data pass needs.
pub(crate) struct DataPass<'a> {
    pub tree: &'a Tree,
    pub layout: &'a Layout,
    pub image: &'a File,
    pub image_path: &'a Path,
    pub block_size: u64,
    /// Compute SHA-256 fingerprints.
    pub hash: bool,
    /// Progress receiver.
    pub progress: Option<&'a dyn crate::options::Progress>,
    /// Compressed files (by node), whose encoded blocks are in `spill`.
    pub zfiles: &'a [Option<crate::compress::extent::ZFile>],
    pub spill: Option<&'a File>,
}

/// Copies every regular file; returns each node's SHA-256 (`None` for nodes that are
/// not hashed).
pub(crate) fn copy_all(pass: &DataPass<'_>) -> Result<Vec<Option<[u8; 32]>>> {
    // Files whose data stays out of the image: in the tar of `--tar=i` (only read,
    // for their digest), or nowhere (`--tar=headerball`).
    // Rebuild mode: files in place in their layer are only read for a digest the
    // layer did not have; reserved ones (`rvsp`) are not touched.
    let target = |i: usize| pass.layout.inodes[i].chunks.map(|c| c.target);
    // A flat file without blocks or tail is all holes (48-bit layout): nothing to copy.
    let all_holes = |i: usize| {
        let p = &pass.layout.inodes[i];
        p.nblocks == 0 && p.tail == 0 && p.chunks.is_none() && p.z.is_none()
    };
    let in_place = |i: usize| {
        matches!(
            target(i),
            Some(ChunkTarget::Device(_) | ChunkTarget::Layer(_))
        )
    };
    let reserved = |i: usize| pass.tree.layers.as_ref().is_some_and(|l| l.reserved(i));
    let files: Vec<usize> = (0..pass.tree.nodes.len())
        .filter(|&i| {
            matches!(pass.tree.nodes[i].kind, Kind::File)
                && pass.layout.inodes[i].size > 0
                && !all_holes(i)
                && target(i) != Some(ChunkTarget::Hole)
                // Chunk blobs are copied by `chunk::copy_chunks`.
                && !matches!(target(i), Some(ChunkTarget::Blob { .. }))
                && !reserved(i)
                && (pass.hash || !in_place(i))
        })
        .collect();
    if let Some(p) = pass.progress {
        p.start(files.iter().map(|&i| pass.layout.inodes[i].size).sum());
    }
    let digests: Vec<(usize, Option<[u8; 32]>)> = files
        .into_par_iter()
        .map(|i| {
            let d = match (&pass.zfiles[i], target(i)) {
                (Some(z), _) => copy_compressed(pass, i, z)?,
                (None, Some(ChunkTarget::Device(_) | ChunkTarget::Layer(_))) => hash_only(pass, i)?,
                (None, _) => copy_one(pass, i)?,
            };
            if let Some(p) = pass.progress {
                p.advance(pass.layout.inodes[i].size);
            }
            Ok((i, d))
        })
        .collect::<Result<_>>()?;
    if let Some(p) = pass.progress {
        p.finish();
    }
    let mut out = vec![None; pass.tree.nodes.len()];
    for (i, d) in digests {
        out[i] = d;
    }
    Ok(out)
}

fn copy_one(pass: &DataPass<'_>, node: usize) -> Result<Option<[u8; 32]>> {
    let p = &pass.layout.inodes[node];
    let source = Source::open(pass.tree, node)?;
    let read_err = |e| source.read_err(e);
    let size = p.size;
    let to_blocks = size - p.tail;
    let dst_off = u64::from(p.startblk) * pass.block_size;
    let short = || source.short(size);
    let write_err = |e| Error::io(pass.image_path, "write", e);
    let mut tail = Vec::with_capacity(p.tail as usize);
    // Rebuild mode: a digest the layer already had is not taken again.
    let known = pass
        .tree
        .layers
        .as_ref()
        .and_then(|l| l.files.get(&node)?.digest)
        .filter(|_| pass.hash);
    let mut hasher = (pass.hash && known.is_none()).then(Sha256::new);
    // An incremental build in place: the whole blocks are in the image already,
    // only the tail is written (all is read when a digest is to be taken).
    let kept = pass
        .tree
        .layers
        .as_ref()
        .and_then(|l| l.files.get(&node))
        .is_some_and(|f| f.kept(p));
    let mut pos = if kept && hasher.is_none() {
        to_blocks
    } else {
        0
    };
    if let (None, true, Some(src), false) = (&hasher, to_blocks > 0, source.file(), kept) {
        pos =
            copy_range(src, source.base, pass.image, dst_off, to_blocks).map_err(|e| match e {
                CopyError::Src(e) => read_err(e),
                CopyError::Dst(e) => write_err(e),
            })?;
    }
    let mut buf = vec![0u8; (size - pos).min(BUF_SIZE as u64) as usize];
    while pos < size {
        let want = (size - pos).min(buf.len() as u64) as usize;
        let got = match source.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(short()),
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        let chunk = &buf[..got];
        if let Some(h) = hasher.as_mut() {
            h.update(chunk);
        }
        // Split the chunk at the start of the inline tail.
        let in_blocks = (to_blocks.saturating_sub(pos)).min(got as u64) as usize;
        if in_blocks > 0 && !kept {
            pass.image
                .write_all_at(&chunk[..in_blocks], dst_off + pos)
                .map_err(write_err)?;
        }
        tail.extend_from_slice(&chunk[in_blocks..]);
        pos += got as u64;
    }
    if p.tail > 0 {
        pass.image
            .write_all_at(&tail, p.tail_off())
            .map_err(write_err)?;
    }
    Ok(hasher.map(|h| h.finalize().into()).or(known))
}

/// Reads a file whose data stays where it is (the tar of `--tar=i`) for its digest.
fn hash_only(pass: &DataPass<'_>, node: usize) -> Result<Option<[u8; 32]>> {
    let taken = pass.tree.archive.as_ref().and_then(|a| {
        let off = pass.tree.nodes[node].archive_offset?;
        a.digests.get(&off).copied()
    });
    // Rebuild mode: the layer's own fingerprint of the file.
    let taken = taken.or_else(|| pass.tree.layers.as_ref()?.files.get(&node)?.digest);
    if taken.is_some() {
        return Ok(taken);
    }
    let size = pass.layout.inodes[node].size;
    let source = Source::open(pass.tree, node)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; size.min(BUF_SIZE as u64) as usize];
    let mut pos = 0u64;
    while pos < size {
        let want = (size - pos).min(buf.len() as u64) as usize;
        source.read_exact_at(&mut buf[..want], pos, size)?;
        hasher.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(Some(hasher.finalize().into()))
}

/// Copies a compressed file's own encoded blocks from the spill file (not those it
/// shares with other files), and its inline tail; its digest was taken while
/// compressing.
fn copy_compressed(
    pass: &DataPass<'_>,
    node: usize,
    z: &crate::compress::extent::ZFile,
) -> Result<Option<[u8; 32]>> {
    use crate::compress::extent::At;
    let p = &pass.layout.inodes[node];
    let spill = pass.spill.expect("compressed files have a spill file");
    let use_inline = p.z.is_some_and(|zp| zp.inline);
    let bs = pass.block_size;
    let mut dst = u64::from(p.startblk) * bs;
    // Consecutive spill ranges are copied in one go.
    let mut run: Option<(u64, u64)> = None;
    let mut buf = Vec::new();
    let mut flush = |run: (u64, u64), dst: u64| -> Result<()> {
        let (off, n) = run;
        let copied = copy_range(spill, off, pass.image, dst, n).unwrap_or(0);
        if copied < n {
            buf.resize((n - copied) as usize, 0);
            spill
                .read_exact_at(&mut buf, off + copied)
                .and_then(|()| pass.image.write_all_at(&buf, dst + copied))
                .map_err(|e| Error::io(pass.image_path, "write", e))?;
        }
        Ok(())
    };
    for e in z.used(use_inline) {
        let At::Own { spill: off, .. } = e.at else {
            continue;
        };
        let n = u64::from(e.plen);
        run = match run {
            Some((o, l)) if o + l == off => Some((o, l + n)),
            Some(r) => {
                flush(r, dst)?;
                dst += r.1;
                Some((off, n))
            }
            None => Some((off, n)),
        };
    }
    if let Some(r) = run {
        flush(r, dst)?;
    }
    if let (Some(t), true) = (&z.inline, use_inline) {
        pass.image
            .write_all_at(&t.data, p.tail_off())
            .map_err(|e| Error::io(pass.image_path, "write", e))?;
    }
    Ok(z.digest)
}

pub(crate) enum CopyError {
    Src(std::io::Error),
    Dst(std::io::Error),
}

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off` in the kernel.
/// Returns how many bytes were copied: fewer than `len` when `copy_file_range` is
/// not available here, and the caller copies the rest itself.
pub(crate) fn copy_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
) -> std::result::Result<u64, CopyError> {
    use rustix::io::Errno;
    let (mut off_in, mut off_out) = (src_off, dst_off);
    let end = src_off + len;
    while off_in < end {
        let want = usize::try_from(end - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break, // the source shrank: the read loop reports it
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM)
                if off_in == src_off =>
            {
                break;
            }
            Err(e @ (Errno::NOSPC | Errno::FBIG | Errno::DQUOT)) => {
                return Err(CopyError::Dst(e.into()));
            }
            Err(e) => return Err(CopyError::Src(e.into())),
        }
    }
    Ok(off_in - src_off)
}
