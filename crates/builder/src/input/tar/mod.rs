//! Tar input (`mkfs.erofs --tar=f`): index an archive into a tree whose regular
//! files point at their data inside the archive.
//!
//! An uncompressed archive in a regular file is indexed in place: headers are
//! read, file data is skipped, and each file keeps its (offset, size) in the
//! archive, so only metadata is held in memory. Anything else (gzip, zstd or xz,
//! detected by magic bytes; standard input; a pipe) is decompressed while it is
//! indexed into an unnamed temporary file in the image's directory, which then
//! plays the archive's part. Every byte of file data is read once more by the data
//! pass, which hashes and copies it as for a directory.
//!
//! Headers are decoded with the `tar` crate's [`tar::Header`]; the sequence of
//! headers (GNU long names and link names, PAX local and global headers) is
//! handled here, because the crate's PAX iterator splits records at newlines,
//! which breaks binary xattr values (and then loses a `size` record after them).
//!
//! The tree is built as tar extraction does it, and as mkfs.erofs 1.9.4 does:
//! a later entry replaces an earlier one with the same path (a directory over a
//! directory only updates its metadata and keeps its entries), missing parent
//! directories are created with mode 0755 plus the group and other write bits of
//! their parent and the parent's owner and mtime, and the root, unless the archive
//! has a directory entry for it (`.` or `./`), is mode 0777, owned by root, with the
//! build time as mtime; any other entry naming the root (a regular file `/`, a
//! symlink `./`, ...) is refused, as mkfs.erofs refuses it. Paths are normalized as tar does (a leading `/`, `.` components
//! and repeated slashes dropped); a `..` that would leave the root is refused.
//!
//! The input as folders: where the bytes come from and their decompression
//! (`stream`), the PAX records and their decoders (`pax`), the path rules
//! (`path`), the header sequence and the tree built from it (`parser`, over the
//! archive's own inode model in `inode`).

mod gzran;
mod inode;
mod parser;
mod path;
mod pax;
mod stream;

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::options::{BuildOptions, TarData};
use crate::tree::{Archive, Tree};
use parser::Parser;
use stream::{Compressed, FileStream, SPOOL_BUF, TeeStream, detect, read_full, unsupported};

/// Where a tar archive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarInput {
    /// A file, or anything else `open(2)` reads (a FIFO, `/dev/stdin`).
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

/// Indexes the archive `input` into a tree; a temporary copy, if one is needed,
/// goes into the directory of `image`.
pub(crate) fn index(input: &TarInput, image: &Path, opts: &BuildOptions) -> Result<Tree> {
    let spool_dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match input {
        TarInput::Path(p) => {
            let file = File::open(p).map_err(|e| Error::io(p, "open", e))?;
            let meta = file.metadata().map_err(|e| Error::io(p, "stat", e))?;
            if meta.is_dir() {
                return Err(Error::Tar {
                    archive: p.clone(),
                    what: "is a directory, not a tar archive".into(),
                });
            }
            if meta.is_file() {
                return regular_file(file, meta.len(), p, &spool_dir, opts);
            }
            stream(Box::new(file), p, &spool_dir, opts)
        }
        TarInput::Stdin => {
            let name = Path::new("<stdin>");
            // Standard input redirected from a regular file at its start
            // (`mkfs.erofs --tar=f IMG < layer.tar`) is read in place like a named
            // file, with no temporary copy.
            use std::os::fd::AsFd;
            if let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() {
                let file = File::from(fd);
                let at_start = rustix::fs::seek(&file, rustix::fs::SeekFrom::Current(0)) == Ok(0);
                if let Ok(meta) = file.metadata()
                    && meta.is_file()
                    && at_start
                {
                    return regular_file(file, meta.len(), name, &spool_dir, opts);
                }
            }
            stream(Box::new(io::stdin().lock()), name, &spool_dir, opts)
        }
    }
}

/// `--gzinfo` describes a gzip stream: any other input is refused.
fn not_gzip_for_gzinfo(c: Compressed, name: &Path, opts: &BuildOptions) -> Result<()> {
    if opts.gzinfo.is_some() && c != Compressed::Gzip {
        return Err(Error::Tar {
            archive: name.to_path_buf(),
            what: "is not gzip-compressed: --gzinfo describes a gzip stream".into(),
        });
    }
    Ok(())
}

/// One layer of an OCI image: a tar archive, maybe compressed.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// The blob.
    pub(crate) path: PathBuf,
}

/// Indexes OCI image layers, lowest first, into one tree, as a container runtime
/// unpacks them: later entries replace earlier ones and whiteouts are resolved.
/// Every layer is decompressed into one temporary file in the image's directory,
/// which plays the archive's part; errors name the layer's blob.
pub(crate) fn index_layers(
    layers: &[Layer],
    name: &Path,
    image: &Path,
    opts: &BuildOptions,
) -> Result<Tree> {
    let spool_dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let spool_dir = spool_dir.as_path();
    let mut spool = Some(BufWriter::with_capacity(
        SPOOL_BUF,
        tempfile::tempfile_in(spool_dir)
            .map_err(|e| Error::io(spool_dir, "create a temporary file in", e))?,
    ));
    let mut parser = Parser::new(name, true, opts);
    let mut pos = 0u64;
    for layer in layers {
        let p = layer.path.as_path();
        let mut file = File::open(p).map_err(|e| Error::io(p, "open", e))?;
        let mut magic = vec![0u8; 10];
        let n = read_full(&mut file, &mut magic).map_err(|e| Error::io(p, "read", e))?;
        magic.truncate(n);
        let c = detect(&magic).map_err(|n| unsupported(p, n))?;
        let input = Box::new(io::Cursor::new(magic).chain(file));
        let inner: Box<dyn Read> =
            match c {
                Compressed::None => input,
                Compressed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
                Compressed::Zstd => Box::new(zstd::stream::read::Decoder::new(input).map_err(
                    |e| Error::Tar {
                        archive: p.to_path_buf(),
                        what: format!("cannot start decompressing: {e}"),
                    },
                )?),
                Compressed::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
            };
        let mut s = TeeStream {
            inner,
            spool: spool.take(),
            spool_dir,
            pos,
        };
        parser.begin_layer(p, pos, c != Compressed::None);
        parser.run(&mut s)?;
        // The rest of the layer (padding after the end-of-archive marker) is read
        // so that the decompressor checks it, and not kept: the next layer's bytes
        // follow this one's entries in the temporary file.
        io::copy(&mut s.inner, &mut io::sink()).map_err(|e| Error::Tar {
            archive: p.to_path_buf(),
            what: format!(
                "after the end of the archive (at {}): corrupt or truncated data: {e}",
                parser.at(s.pos)
            ),
        })?;
        pos = s.pos;
        spool = s.spool.take();
    }
    let file = spool
        .map(|sp| sp.into_inner())
        .transpose()
        .map_err(|e| Error::io(spool_dir, "write a temporary file in", e.into_error()))?;
    parser.into_tree(Archive {
        file,
        name: name.to_path_buf(),
        len: pos,
        digests: Default::default(),
    })
}

/// An archive in a regular file: indexed in place when uncompressed.
fn regular_file(
    file: File,
    len: u64,
    name: &Path,
    spool_dir: &Path,
    opts: &BuildOptions,
) -> Result<Tree> {
    let mut magic = [0u8; 10];
    let n = read_full(&mut ReadAt(&file, 0), &mut magic).map_err(|e| Error::io(name, "read", e))?;
    let c = detect(&magic[..n]).map_err(|n| unsupported(name, n))?;
    if c == Compressed::None {
        not_gzip_for_gzinfo(c, name, opts)?;
        return index_file(file, len, name, opts);
    }
    index_stream(Box::new(ReadAt(&file, 0)), c, name, spool_dir, opts)
}

/// Reads a file from an offset with `pread`, leaving its file position alone (the
/// file may be standard input, shared with the caller).
struct ReadAt<'a>(&'a File, u64);

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.0, buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

/// A non-seekable input: detects the compression from its first bytes.
fn stream(
    mut r: Box<dyn Read + '_>,
    name: &Path,
    spool_dir: &Path,
    opts: &BuildOptions,
) -> Result<Tree> {
    let mut magic = vec![0u8; 10];
    let n = read_full(&mut r, &mut magic).map_err(|e| Error::io(name, "read", e))?;
    magic.truncate(n);
    let c = detect(&magic).map_err(|n| unsupported(name, n))?;
    index_stream(
        Box::new(io::Cursor::new(magic).chain(r)),
        c,
        name,
        spool_dir,
        opts,
    )
}

fn index_file(file: File, len: u64, name: &Path, opts: &BuildOptions) -> Result<Tree> {
    let mut parser = Parser::new(name, false, opts);
    let mut s = FileStream {
        file: &file,
        pos: 0,
        len,
    };
    parser.run(&mut s)?;
    parser.into_tree(Archive {
        file: Some(file),
        name: name.to_path_buf(),
        len,
        digests: Default::default(),
    })
}

fn index_stream(
    input: Box<dyn Read + '_>,
    c: Compressed,
    name: &Path,
    spool_dir: &Path,
    opts: &BuildOptions,
) -> Result<Tree> {
    not_gzip_for_gzinfo(c, name, opts)?;
    // `--tar=i` refers to the tar's own bytes: a compressed archive's would be the
    // decompressed stream's, which exists only if it is kept (`--ungzip=FILE`) or
    // reachable through a zinfo (`--gzinfo=FILE`).
    if c != Compressed::None
        && opts.tar_data == TarData::Index
        && opts.keep_tar.is_none()
        && opts.gzinfo.is_none()
    {
        return Err(Error::Tar {
            archive: name.to_path_buf(),
            what: "is compressed, and a tar index (--tar=i) refers to the bytes of the \
                   uncompressed tar: decompress it first, or keep the decompressed tar \
                   with --ungzip=FILE / --unxz=FILE and append that"
                .into(),
        });
    }
    let decompress_err = |e: io::Error| Error::Tar {
        archive: name.to_path_buf(),
        what: format!("cannot start decompressing: {e}"),
    };
    let mut checkpoints = None;
    let inner: Box<dyn Read> = match c {
        Compressed::None => input,
        Compressed::Gzip if opts.gzinfo.is_some() => {
            let (r, points) = gzran::GzRan::new(input).map_err(decompress_err)?;
            checkpoints = Some(points);
            Box::new(r)
        }
        Compressed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compressed::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(decompress_err)?)
        }
        Compressed::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
    };
    // A tar index needs none of the stream's bytes after parsing (digests are
    // taken on the way), unless asked to keep them: then nothing is spooled.
    let index_only = opts.tar_data == TarData::Index && opts.keep_tar.is_none();
    let spool = match index_only {
        true => None,
        false => Some(BufWriter::with_capacity(
            SPOOL_BUF,
            tempfile::tempfile_in(spool_dir)
                .map_err(|e| Error::io(spool_dir, "create a temporary file in", e))?,
        )),
    };
    let mut s = TeeStream {
        inner,
        spool,
        spool_dir,
        pos: 0,
    };
    let mut parser = Parser::new(name, c != Compressed::None, opts);
    parser.hash_data = opts.tar_data == TarData::Index && opts.fingerprint.is_some();
    parser.run(&mut s)?;
    // Read to the end, so that the decompressor checks the rest of the stream
    // (a truncated gzip member, a bad checksum) and a writer on a pipe is not cut
    // off; what follows the end-of-archive marker is not kept.
    let end = s.pos;
    // A kept copy (`--ungzip=X`) is the whole decompressed stream, padding included.
    let mut sink = io::sink();
    let rest: &mut dyn io::Write = match (&opts.keep_tar, &mut s.spool) {
        (Some(_), Some(spool)) => spool,
        _ => &mut sink,
    };
    let rest_len = io::copy(&mut s.inner, rest).map_err(|e| Error::Tar {
        archive: name.to_path_buf(),
        what: format!(
            "after the end of the archive (at {}): {}: {e}",
            parser.at(end),
            if c == Compressed::None {
                "cannot read"
            } else {
                "corrupt or truncated compressed data"
            }
        ),
    })?;
    let file = s
        .spool
        .map(|sp| sp.into_inner())
        .transpose()
        .map_err(|e| Error::io(spool_dir, "write a temporary file in", e.into_error()))?;
    if let (Some(points), Some(to)) = (checkpoints, &opts.gzinfo) {
        File::create(to)
            .and_then(|mut f| gzran::write_zinfo(&points.borrow(), &mut f))
            .map_err(|e| Error::io(to, "write the zinfo (--gzinfo) to", e))?;
    }
    let digests = parser.take_digests();
    parser.into_tree(Archive {
        file,
        name: name.to_path_buf(),
        len: end + rest_len,
        digests,
    })
}
