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
//! has an entry for it (`.` or `./`), is mode 0777, owned by root, with the build
//! time as mtime. Paths are normalized as tar does (a leading `/`, `.` components
//! and repeated slashes dropped); a `..` that would leave the root is refused.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ishare_erofs::format::{NAME_LEN, encode_dev};

use crate::error::{Error, Result};
use crate::options::BuildOptions;
use crate::tree::{Archive, Kind, Node, OVL_ORIGIN, Tree};

/// Where a tar archive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarInput {
    /// A file, or anything else `open(2)` reads (a FIFO, `/dev/stdin`).
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

const BLOCK: u64 = 512;
/// Largest GNU long name or long link name accepted.
const MAX_LONG_NAME: u64 = 1 << 20;
/// Largest PAX extended header accepted (xattr values are at most 64 KiB each).
const MAX_PAX: u64 = 16 << 20;
/// Longest symlink target: what Linux can create (PATH_MAX - 1).
const MAX_SYMLINK: usize = 4095;
/// Write buffer of the temporary copy of a stream.
const SPOOL_BUF: usize = 1 << 20;

const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;
const S_IFCHR: u16 = 0o020000;
const S_IFBLK: u16 = 0o060000;
const S_IFIFO: u16 = 0o010000;

/// AUFS whiteout prefix and opaque-directory marker (`--aufs`).
const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const OVL_OPAQUE: &[u8] = b"trusted.overlay.opaque";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

/// The compression of a stream starting with `magic`; `Err` names a known but
/// unsupported one.
fn detect(magic: &[u8]) -> std::result::Result<Compression, &'static str> {
    Ok(match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
        [
            b'B',
            b'Z',
            b'h',
            b'1'..=b'9',
            0x31,
            0x41,
            0x59,
            0x26,
            0x53,
            0x59,
            ..,
        ] => {
            return Err("bzip2");
        }
        [0x04, 0x22, 0x4d, 0x18, ..] => return Err("lz4"),
        _ => Compression::None,
    })
}

/// Reads until `buf` is full or the end; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
                let mut magic = [0u8; 10];
                let n = read_full(&mut &file, &mut magic).map_err(|e| Error::io(p, "read", e))?;
                let c = detect(&magic[..n]).map_err(|name| unsupported(p, name))?;
                if c == Compression::None {
                    return index_file(file, meta.len(), p, opts);
                }
                let file = File::open(p).map_err(|e| Error::io(p, "open", e))?;
                return index_stream(Box::new(file), c, p, &spool_dir, opts);
            }
            stream(Box::new(file), p, &spool_dir, opts)
        }
        TarInput::Stdin => stream(
            Box::new(io::stdin().lock()),
            Path::new("<stdin>"),
            &spool_dir,
            opts,
        ),
    }
}

fn unsupported(archive: &Path, name: &str) -> Error {
    Error::Tar {
        archive: archive.to_path_buf(),
        what: format!(
            "is compressed with {name}, which is not supported (gzip, zstd and xz are); \
             decompress it first"
        ),
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

/// Where the parser reads the archive from.
trait Stream {
    /// Reads until `buf` is full or the archive ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Skips up to `n` bytes; returns how many there were.
    fn skip(&mut self, n: u64) -> io::Result<u64>;
    /// Bytes consumed so far: the offset of the next byte in the archive.
    fn pos(&self) -> u64;
}

/// An uncompressed archive in a regular file, read in place.
struct FileStream<'a> {
    file: &'a File,
    pos: u64,
    len: u64,
}

impl Stream for FileStream<'_> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.file.read_at(&mut buf[n..], self.pos) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let k = n.min(self.len.saturating_sub(self.pos));
        self.pos += k;
        Ok(k)
    }

    fn pos(&self) -> u64 {
        self.pos
    }
}

/// A decompressed stream, copied to the temporary file as it is read.
struct TeeStream<'a> {
    inner: Box<dyn Read + 'a>,
    spool: BufWriter<File>,
    spool_dir: &'a Path,
    pos: u64,
}

impl TeeStream<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(k) => {
                    self.spool.write_all(&buf[..k]).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot write the decompressed archive to a temporary file in {}: {e}",
                                self.spool_dir.display()
                            ),
                        )
                    })?;
                    self.pos += k as u64;
                    return Ok(k);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Stream for TeeStream<'_> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.read_some(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; n.min(1 << 16) as usize];
        let mut done = 0;
        while done < n {
            let want = (n - done).min(buf.len() as u64) as usize;
            match self.read_some(&mut buf[..want])? {
                0 => break,
                k => done += k as u64,
            }
        }
        Ok(done)
    }

    fn pos(&self) -> u64 {
        self.pos
    }
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
        file,
        name: name.to_path_buf(),
    })
}

fn index_stream(
    input: Box<dyn Read + '_>,
    c: Compression,
    name: &Path,
    spool_dir: &Path,
    opts: &BuildOptions,
) -> Result<Tree> {
    let decompress_err = |e: io::Error| Error::Tar {
        archive: name.to_path_buf(),
        what: format!("cannot start decompressing: {e}"),
    };
    let inner: Box<dyn Read> = match c {
        Compression::None => input,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(decompress_err)?)
        }
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
    };
    let spool = tempfile::tempfile_in(spool_dir)
        .map_err(|e| Error::io(spool_dir, "create a temporary file in", e))?;
    let mut s = TeeStream {
        inner,
        spool: BufWriter::with_capacity(SPOOL_BUF, spool),
        spool_dir,
        pos: 0,
    };
    let mut parser = Parser::new(name, c != Compression::None, opts);
    parser.run(&mut s)?;
    // Read to the end, so that the decompressor checks the rest of the stream
    // (a truncated gzip member, a bad checksum) and a writer on a pipe is not cut
    // off; what follows the end-of-archive marker is not kept.
    let end = s.pos;
    io::copy(&mut s.inner, &mut io::sink()).map_err(|e| Error::Tar {
        archive: name.to_path_buf(),
        what: format!(
            "after the end of the archive (at {}): {}: {e}",
            parser.at(end),
            if c == Compression::None {
                "cannot read"
            } else {
                "corrupt or truncated compressed data"
            }
        ),
    })?;
    let file = s
        .spool
        .into_inner()
        .map_err(|e| Error::io(spool_dir, "write a temporary file in", e.into_error()))?;
    parser.into_tree(Archive {
        file,
        name: name.to_path_buf(),
    })
}

/// The records of PAX extended headers that matter here.
#[derive(Debug, Default, Clone)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    sparse: bool,
}

impl Pax {
    /// Parses `data` (records `LEN KEY=VALUE\n`) on top of `self`.
    fn parse(&mut self, mut data: &[u8]) -> std::result::Result<(), String> {
        while !data.is_empty() {
            let sp = data
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or("a PAX record does not start with its length")?;
            let len: usize = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("a PAX record has a bad length")?;
            if len <= sp + 1 || len > data.len() {
                return Err(format!(
                    "a PAX record's length {len} is out of range ({} bytes left)",
                    data.len()
                ));
            }
            let rec = &data[sp + 1..len];
            data = &data[len..];
            let rec = rec
                .strip_suffix(b"\n")
                .ok_or("a PAX record does not end with a newline")?;
            let eq = rec
                .iter()
                .position(|&b| b == b'=')
                .ok_or("a PAX record has no '='")?;
            self.record(&rec[..eq], &rec[eq + 1..])?;
        }
        Ok(())
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), String> {
        let bad = || {
            format!(
                "bad PAX record {}={:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            )
        };
        let number = || -> std::result::Result<Option<u64>, String> {
            if value.is_empty() {
                return Ok(None);
            }
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(bad)
        };
        let opt = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        match key {
            b"path" => self.path = opt(value),
            b"linkpath" => self.linkpath = opt(value),
            b"size" => self.size = number()?,
            b"uid" => self.uid = number()?,
            b"gid" => self.gid = number()?,
            b"mtime" => {
                self.mtime = if value.is_empty() {
                    None
                } else {
                    Some(parse_time(value).ok_or_else(bad)?)
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattr(name.to_vec(), value.to_vec())?;
                } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                    let name = url_decode(name);
                    let value = base64_decode(value).ok_or_else(bad)?;
                    self.xattr(name, value)?;
                } else if key.starts_with(b"GNU.sparse.") {
                    self.sparse = true;
                }
                // Others (atime, ctime, uname, gname, comment, SCHILY.acl.*, ...)
                // have no place in an image, as for mkfs.erofs.
            }
        }
        Ok(())
    }

    fn xattr(&mut self, name: Vec<u8>, value: Vec<u8>) -> std::result::Result<(), String> {
        if name.is_empty() || name.contains(&0) {
            return Err(format!(
                "bad xattr name {:?} in a PAX record",
                String::from_utf8_lossy(&name)
            ));
        }
        self.xattrs.insert(name, value);
        Ok(())
    }
}

/// `[-]SECONDS[.FRACTION]` as (seconds, nanoseconds), rounding toward minus infinity.
fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    if secs.is_empty() || !secs.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(secs).ok()?.parse().ok()?;
    let mut ns = 0u32;
    if let Some(f) = frac {
        if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..9 {
            ns = ns * 10 + u32::from(f.get(i).map_or(0, |d| d - b'0'));
        }
    }
    Some(match (neg, ns) {
        (false, _) => (secs, ns),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - ns),
    })
}

/// `%XX` escapes of libarchive's xattr names.
fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Standard base64 with optional padding (libarchive's xattr values).
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Splits `path` into normal components: empty and `.` components (a leading `/`,
/// `./`, doubled or trailing slashes) are dropped and `..` removes the previous
/// one; a `..` with nothing left to remove would escape the root.
fn normalize(path: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    if path.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("the path escapes the root of the archive with '..'".into());
                }
            }
            _ if c.len() > NAME_LEN => {
                return Err(format!(
                    "the name {:?} is {} bytes long, EROFS allows at most {NAME_LEN}",
                    String::from_utf8_lossy(c),
                    c.len()
                ));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

#[derive(Debug)]
enum IKind {
    Dir {
        children: BTreeMap<Vec<u8>, usize>,
        /// `.wh..wh..opq` seen (`--aufs`).
        opaque: bool,
        /// Holds a whiteout made from `.wh.NAME` (`--aufs`).
        whiteouts: bool,
    },
    File {
        offset: u64,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// Device, fifo (`rdev` in `new_encode_dev` form).
    Special {
        rdev: u32,
    },
}

#[derive(Debug)]
struct Inode {
    kind: IKind,
    /// Mode with the file type bits.
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    nsec: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Normalized path of the entry that made it ("." for the root).
    path: Vec<u8>,
}

impl Inode {
    fn children(&self) -> Option<&BTreeMap<Vec<u8>, usize>> {
        match &self.kind {
            IKind::Dir { children, .. } => Some(children),
            _ => None,
        }
    }
}

/// What an entry's header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    File,
    HardLink,
    Symlink,
    Chr,
    Blk,
    Dir,
    Fifo,
}

fn type_name(k: &IKind, mode: u16) -> &'static str {
    match k {
        IKind::Dir { .. } => "a directory",
        IKind::File { .. } => "a regular file",
        IKind::Symlink(_) => "a symlink",
        IKind::Special { .. } => match mode & S_IFMT {
            S_IFCHR => "a character device",
            S_IFBLK => "a block device",
            _ => "a fifo",
        },
    }
}

/// What messages need to name a place in the archive.
#[derive(Debug, Clone, Copy)]
struct Loc<'a> {
    name: &'a Path,
    /// Offsets are in the decompressed stream.
    decompressed: bool,
}

impl Loc<'_> {
    /// "byte N", or "byte N of the decompressed stream".
    fn at(&self, pos: u64) -> String {
        if self.decompressed {
            format!("byte {pos} of the decompressed stream")
        } else {
            format!("byte {pos}")
        }
    }

    fn err(&self, what: impl Display) -> Error {
        Error::Tar {
            archive: self.name.to_path_buf(),
            what: what.to_string(),
        }
    }

    /// An error about the entry `path` whose header is at `at`.
    fn entry_err(&self, path: &[u8], at: u64, what: impl Display) -> Error {
        self.err(format_args!(
            "entry {:?} (header at {}): {what}",
            String::from_utf8_lossy(path),
            self.at(at)
        ))
    }
}

struct Parser<'a> {
    opts: &'a BuildOptions,
    loc: Loc<'a>,
    inodes: Vec<Inode>,
    global: Pax,
    /// Path and header offset of the last entry, for messages.
    last: Option<(Vec<u8>, u64)>,
}

/// Extension headers waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Pax>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// Offset of the first of them.
    at: Option<u64>,
}

impl<'a> Parser<'a> {
    fn new(name: &'a Path, decompressed: bool, opts: &'a BuildOptions) -> Self {
        let root = Inode {
            kind: IKind::Dir {
                children: BTreeMap::new(),
                opaque: false,
                whiteouts: false,
            },
            mode: S_IFDIR | 0o777,
            uid: 0,
            gid: 0,
            mtime: i64::try_from(opts.build_time).unwrap_or(i64::MAX),
            nsec: 0,
            xattrs: BTreeMap::new(),
            path: b".".to_vec(),
        };
        Self {
            opts,
            loc: Loc { name, decompressed },
            inodes: vec![root],
            global: Pax::default(),
            last: None,
        }
    }

    fn at(&self, pos: u64) -> String {
        self.loc.at(pos)
    }

    fn err(&self, what: impl Display) -> Error {
        self.loc.err(what)
    }

    fn entry_err(&self, path: &[u8], at: u64, what: impl Display) -> Error {
        self.loc.entry_err(path, at, what)
    }

    /// An error at `pos` between entries.
    fn stream_err(&self, pos: u64, what: impl Display) -> Error {
        let after = match &self.last {
            Some((p, a)) => format!(
                " (after entry {:?}, header at {})",
                String::from_utf8_lossy(p),
                self.at(*a)
            ),
            None => String::new(),
        };
        self.err(format_args!("at {}{after}: {what}", self.at(pos)))
    }

    /// Reads the `size` bytes of an extension header's data and its padding.
    fn read_ext(
        &self,
        s: &mut impl Stream,
        size: u64,
        max: u64,
        at: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        if size > max {
            return Err(self.stream_err(
                at,
                format!("{what} of {size} bytes is larger than the {max} accepted"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        let n = s
            .read_full(&mut data)
            .map_err(|e| self.stream_err(s.pos(), format!("cannot read the {what}: {e}")))?;
        if n < data.len() {
            return Err(self.stream_err(
                s.pos(),
                format!("the archive ends inside a {what}: truncated"),
            ));
        }
        let pad = size.next_multiple_of(BLOCK) - size;
        s.skip(pad)
            .map_err(|e| self.stream_err(s.pos(), format!("cannot read: {e}")))?;
        Ok(data)
    }

    /// Reads headers up to the end-of-archive marker.
    fn run(&mut self, s: &mut impl Stream) -> Result<()> {
        let mut block = [0u8; BLOCK as usize];
        let mut pending = Pending::default();
        loop {
            let at = s.pos();
            let n = s
                .read_full(&mut block)
                .map_err(|e| self.stream_err(at, format!("cannot read a header: {e}")))?;
            if n == 0 && at == 0 {
                return Err(self.err("is empty, not a tar archive"));
            }
            if n == 0 {
                return Err(self.stream_err(
                    at,
                    "the archive ends without its end-of-archive marker: truncated",
                ));
            }
            if n < block.len() {
                return Err(self.stream_err(at, "the archive ends inside a header: truncated"));
            }
            if block.iter().all(|&b| b == 0) {
                if let Some(p) = pending.at {
                    return Err(self.stream_err(
                        p,
                        "extension headers are not followed by the entry they describe",
                    ));
                }
                return Ok(());
            }
            let h = tar::Header::from_byte_slice(&block);
            if !checksum_ok(&block) {
                return Err(if at == 0 {
                    self.err("not a tar archive (the first header's checksum does not match)")
                } else {
                    self.stream_err(at, "header checksum mismatch: corrupt")
                });
            }
            let typeflag = block[156];
            let size = h
                .entry_size()
                .map_err(|e| self.stream_err(at, format!("bad size field in a header: {e}")))?;
            match typeflag {
                b'x' | b'g' => {
                    let data = self.read_ext(s, size, MAX_PAX, at, "PAX extended header")?;
                    let target = if typeflag == b'g' {
                        &mut self.global
                    } else {
                        pending.at.get_or_insert(at);
                        pending.pax.get_or_insert_with(Pax::default)
                    };
                    let r = target.parse(&data);
                    r.map_err(|e| self.stream_err(at, e))?;
                    continue;
                }
                b'L' | b'K' => {
                    let mut data = self.read_ext(s, size, MAX_LONG_NAME, at, "GNU long name")?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    pending.at.get_or_insert(at);
                    if typeflag == b'L' {
                        pending.long_name = Some(data);
                    } else {
                        pending.long_link = Some(data);
                    }
                    continue;
                }
                _ => {}
            }
            let pax = pending.pax.take().unwrap_or_default();
            let size = pax.size.unwrap_or(size);
            let path = pax
                .path
                .clone()
                .or(pending.long_name.take())
                .unwrap_or_else(|| h.path_bytes().into_owned());
            let link = pax
                .linkpath
                .clone()
                .or(pending.long_link.take())
                .or_else(|| h.link_name_bytes().map(|c| c.into_owned()));
            pending = Pending::default();
            self.last = Some((path.clone(), at));
            let data_at = s.pos();
            self.entry(h, typeflag, &path, link, size, data_at, at, &pax)?;
            let padded = size
                .checked_next_multiple_of(BLOCK)
                .ok_or_else(|| self.entry_err(&path, at, "absurd size"))?;
            let skipped = s
                .skip(padded)
                .map_err(|e| self.entry_err(&path, at, format!("cannot read its data: {e}")))?;
            if skipped < size {
                return Err(self.entry_err(
                    &path,
                    at,
                    format!(
                        "the archive ends inside its data ({skipped} of {size} bytes, from {}): truncated",
                        self.at(data_at)
                    ),
                ));
            }
        }
    }

    /// Adds one entry to the tree.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        h: &tar::Header,
        typeflag: u8,
        path: &[u8],
        link: Option<Vec<u8>>,
        size: u64,
        data_at: u64,
        at: u64,
        pax: &Pax,
    ) -> Result<()> {
        let loc = self.loc;
        let err = move |what: String| loc.entry_err(path, at, what);
        let what = match typeflag {
            // Regular; BSD tar's convention of a trailing slash for directories
            // in old archives is honoured, as GNU tar does.
            b'0' | 0 | b'7' if path.ends_with(b"/") => What::Dir,
            b'0' | 0 | b'7' => What::File,
            b'1' => What::HardLink,
            b'2' => What::Symlink,
            b'3' => What::Chr,
            b'4' => What::Blk,
            b'5' => What::Dir,
            b'6' => What::Fifo,
            b'S' => return Err(err("GNU sparse files are not supported".into())),
            // A GNU volume label names the archive, not a file.
            b'V' => return Ok(()),
            t => {
                return Err(err(format!(
                    "unsupported entry type {:?}",
                    char::from(t).escape_default().to_string()
                )));
            }
        };
        if pax.sparse {
            return Err(err("PAX sparse files are not supported".into()));
        }
        let mut comps = normalize(path).map_err(err)?;
        // A component that a later `..` undoes is still made a directory, as tar
        // extraction and mkfs.erofs do ("z/../f" makes "z").
        if path.split(|&b| b == b'/').any(|c| c == b"..") {
            let mut walked: Vec<&[u8]> = Vec::new();
            for c in path.split(|&b| b == b'/') {
                match c {
                    b"" | b"." => {}
                    b".." => {
                        self.dir(&walked, path, at)?;
                        walked.pop();
                    }
                    _ => walked.push(c),
                }
            }
        }

        // Whiteouts (--aufs).
        let mut whiteout = false;
        if self.opts.aufs
            && let Some(&last) = comps.last()
        {
            if last == WH_OPAQUE {
                comps.pop();
                if self.is_excluded(&comps) {
                    return Ok(());
                }
                let dir = self.dir(&comps, path, at)?;
                if let IKind::Dir { opaque, .. } = &mut self.inodes[dir].kind {
                    *opaque = true;
                }
                return Ok(());
            }
            if let Some(name) = last.strip_prefix(WH_PREFIX) {
                if name.is_empty() || name == b"." || name == b".." {
                    return Err(err("a whiteout that names no file".into()));
                }
                *comps.last_mut().expect("a last component") = name;
                whiteout = true;
            }
        }
        if self.is_excluded(&comps) {
            return Ok(());
        }

        let perm = (h.mode().map_err(|e| err(format!("bad mode field: {e}")))? & 0o7777) as u16;
        let id = |v: Option<u64>, g: Option<u64>, field: io::Result<u64>, what: &str| {
            let v = match v.or(g) {
                Some(v) => v,
                None => field.map_err(|e| err(format!("bad {what} field: {e}")))?,
            };
            u32::try_from(v).map_err(|_| err(format!("{what} {v} does not fit 32 bits")))
        };
        let uid = id(pax.uid, self.global.uid, h.uid(), "uid")?;
        let gid = id(pax.gid, self.global.gid, h.gid(), "gid")?;
        let (mtime, nsec) = match pax.mtime.or(self.global.mtime) {
            Some(t) => t,
            None => {
                let t = h
                    .mtime()
                    .map_err(|e| err(format!("bad mtime field: {e}")))?;
                let t = i64::try_from(t).map_err(|_| err(format!("mtime {t} out of range")))?;
                (t, 0)
            }
        };
        let mut xattrs = BTreeMap::new();
        if self.opts.xattr_tolerance >= 0 {
            xattrs = self.global.xattrs.clone();
            xattrs.extend(pax.xattrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }

        let Some((&name, parents)) = comps.split_last() else {
            // The root itself ("." or "./").
            if what != What::Dir {
                return Err(err("the root of the archive must be a directory".into()));
            }
            let root = &mut self.inodes[0];
            root.mode = S_IFDIR | perm;
            (root.uid, root.gid, root.mtime, root.nsec) = (uid, gid, mtime, nsec);
            root.xattrs.extend(xattrs);
            return Ok(());
        };
        let parent = self.dir(parents, path, at)?;
        let existing = self.inodes[parent]
            .children()
            .and_then(|c| c.get(name))
            .copied();

        if what == What::HardLink && !whiteout {
            let target = link.ok_or_else(|| err("a hard link without a target".into()))?;
            let shown = String::from_utf8_lossy(&target).into_owned();
            let tcomps =
                normalize(&target).map_err(|e| err(format!("hard link target {shown:?}: {e}")))?;
            let t = self.lookup(&tcomps, path, at)?.ok_or_else(|| {
                err(format!(
                    "hard link to {shown:?}, which the archive does not hold before it"
                ))
            })?;
            if let IKind::Dir { .. } = self.inodes[t].kind {
                return Err(err(format!("hard link to the directory {shown:?}")));
            }
            if existing != Some(t) {
                self.set_child(parent, name, t);
            }
            return Ok(());
        }

        // A directory over a directory keeps its entries and takes the new metadata.
        if what == What::Dir
            && !whiteout
            && let Some(e) = existing
            && let IKind::Dir { .. } = self.inodes[e].kind
        {
            let d = &mut self.inodes[e];
            d.mode = S_IFDIR | perm;
            (d.uid, d.gid, d.mtime, d.nsec) = (uid, gid, mtime, nsec);
            d.xattrs.extend(xattrs);
            return Ok(());
        }

        let dev = || -> Result<u32> {
            let major = h
                .device_major()
                .map_err(|e| err(format!("bad device major field: {e}")))?
                .unwrap_or(0);
            let minor = h
                .device_minor()
                .map_err(|e| err(format!("bad device minor field: {e}")))?
                .unwrap_or(0);
            if major > 0xfff || minor > 0xf_ffff {
                return Err(err(format!(
                    "device number {major}:{minor} does not fit 32 bits"
                )));
            }
            Ok(encode_dev(major, minor))
        };
        let (kind, mode) = if whiteout {
            // As mkfs.erofs: a 0:0 character device with no permission bits.
            (IKind::Special { rdev: 0 }, S_IFCHR)
        } else {
            match what {
                What::File => (
                    IKind::File {
                        offset: data_at,
                        size,
                    },
                    S_IFREG | perm,
                ),
                What::Symlink => {
                    let t = link.unwrap_or_default();
                    if t.is_empty() || t.len() > MAX_SYMLINK {
                        return Err(err(format!(
                            "symlink target of {} bytes: it must be 1 to {MAX_SYMLINK} bytes long",
                            t.len()
                        )));
                    }
                    if t.contains(&0) {
                        return Err(err(format!(
                            "symlink target {:?} contains a NUL byte",
                            String::from_utf8_lossy(&t)
                        )));
                    }
                    (IKind::Symlink(t), S_IFLNK | perm)
                }
                What::Chr => (IKind::Special { rdev: dev()? }, S_IFCHR | perm),
                What::Blk => (IKind::Special { rdev: dev()? }, S_IFBLK | perm),
                What::Fifo => (IKind::Special { rdev: 0 }, S_IFIFO | perm),
                What::Dir => (
                    IKind::Dir {
                        children: BTreeMap::new(),
                        opaque: false,
                        whiteouts: false,
                    },
                    S_IFDIR | perm,
                ),
                What::HardLink => unreachable!("handled above"),
            }
        };
        let idx = self.inodes.len();
        self.inodes.push(Inode {
            kind,
            mode,
            uid,
            gid,
            mtime,
            nsec,
            xattrs,
            path: join(&comps),
        });
        self.set_child(parent, name, idx);
        if whiteout && let IKind::Dir { whiteouts, .. } = &mut self.inodes[parent].kind {
            *whiteouts = true;
        }
        Ok(())
    }

    fn is_excluded(&self, comps: &[&[u8]]) -> bool {
        if self.opts.exclude_paths.is_empty() && self.opts.exclude_regexes.is_empty() {
            return false;
        }
        // Everything below an excluded path is excluded too, as for directories.
        (1..=comps.len()).any(|i| self.opts.excluded(&join(&comps[..i])))
    }

    fn set_child(&mut self, dir: usize, name: &[u8], inode: usize) {
        if let IKind::Dir { children, .. } = &mut self.inodes[dir].kind {
            children.insert(name.to_vec(), inode);
        }
    }

    /// The directory at `comps`, creating missing ones as mkfs.erofs does.
    fn dir(&mut self, comps: &[&[u8]], path: &[u8], at: u64) -> Result<usize> {
        let mut cur = 0;
        for (i, &c) in comps.iter().enumerate() {
            let next = self.inodes[cur].children().and_then(|m| m.get(c)).copied();
            cur = match next {
                Some(n) if self.inodes[n].children().is_some() => n,
                Some(n) => {
                    return Err(self.entry_err(
                        path,
                        at,
                        format!(
                            "{:?} is {}, not a directory",
                            String::from_utf8_lossy(&join(&comps[..=i])),
                            type_name(&self.inodes[n].kind, self.inodes[n].mode)
                        ),
                    ));
                }
                None => {
                    let p = &self.inodes[cur];
                    let d = Inode {
                        kind: IKind::Dir {
                            children: BTreeMap::new(),
                            opaque: false,
                            whiteouts: false,
                        },
                        mode: S_IFDIR | 0o755 | (p.mode & 0o022),
                        uid: p.uid,
                        gid: p.gid,
                        mtime: p.mtime,
                        nsec: p.nsec,
                        xattrs: BTreeMap::new(),
                        path: join(&comps[..=i]),
                    };
                    let idx = self.inodes.len();
                    self.inodes.push(d);
                    self.set_child(cur, c, idx);
                    idx
                }
            };
        }
        Ok(cur)
    }

    /// The inode at `comps`, if there is one.
    fn lookup(&self, comps: &[&[u8]], path: &[u8], at: u64) -> Result<Option<usize>> {
        let mut cur = 0;
        for (i, &c) in comps.iter().enumerate() {
            let Some(m) = self.inodes[cur].children() else {
                return Err(self.entry_err(
                    path,
                    at,
                    format!(
                        "{:?} is not a directory",
                        String::from_utf8_lossy(&join(&comps[..i]))
                    ),
                ));
            };
            match m.get(c) {
                Some(&n) => cur = n,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The tree, in breadth-first order of name-sorted directories as the
    /// directory scan numbers it (the first name of a hard-linked inode in that
    /// order gets the inode).
    fn into_tree(self, archive: Archive) -> Result<Tree> {
        let opts = self.opts;
        let node = |ino: &Inode, parent: usize| -> Node {
            let kind = match &ino.kind {
                IKind::Dir { .. } => Kind::Dir {
                    entries: Vec::new(),
                    parent,
                },
                IKind::File { .. } => Kind::File,
                IKind::Symlink(t) => Kind::Symlink(t.clone()),
                IKind::Special { .. } => Kind::Special,
            };
            let mut xattrs = ino.xattrs.clone();
            if let IKind::Dir {
                opaque, whiteouts, ..
            } = &ino.kind
            {
                if *opaque {
                    xattrs.insert(OVL_OPAQUE.to_vec(), b"y".to_vec());
                }
                // As mkfs.erofs: marks the directory as copied up, so overlayfs
                // does not expose the whiteouts when it iterates it directly.
                if *whiteouts {
                    xattrs.insert(OVL_ORIGIN.to_vec(), Vec::new());
                }
            }
            let (mtime, mtime_nsec) = opts.mtime(ino.mtime, ino.nsec);
            let (size, archive_offset, rdev) = match ino.kind {
                IKind::File { offset, size } => (size, (size > 0).then_some(offset), 0),
                IKind::Special { rdev } => (0, None, rdev),
                _ => (0, None, 0),
            };
            Node {
                path: PathBuf::from(OsStr::from_bytes(&ino.path)),
                kind,
                mode: ino.mode,
                uid: opts.force_uid.unwrap_or(ino.uid),
                gid: opts.force_gid.unwrap_or(ino.gid),
                mtime,
                mtime_nsec,
                nlink: if matches!(ino.kind, IKind::Dir { .. }) {
                    2
                } else {
                    1
                },
                size,
                rdev,
                xattrs: xattrs.into_iter().collect(),
                archive_offset,
            }
        };
        let too_many = |n: &Node| Error::Unrepresentable {
            path: n.path.clone(),
            what: "too many links".into(),
        };
        let mut node_of: Vec<Option<usize>> = vec![None; self.inodes.len()];
        let mut nodes = vec![node(&self.inodes[0], 0)];
        node_of[0] = Some(0);
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
        while let Some((dir_node, dir_ino)) = queue.pop_front() {
            let children = self.inodes[dir_ino].children().expect("a directory");
            let mut entries = Vec::with_capacity(children.len());
            for (name, &child) in children {
                if let Some(n) = node_of[child] {
                    // Another name of a hard-linked inode.
                    let nl = nodes[n].nlink.checked_add(1);
                    nodes[n].nlink = nl.ok_or_else(|| too_many(&nodes[n]))?;
                    entries.push((name.clone(), n));
                    continue;
                }
                let idx = nodes.len();
                node_of[child] = Some(idx);
                let n = node(&self.inodes[child], dir_node);
                if matches!(n.kind, Kind::Dir { .. }) {
                    let nl = nodes[dir_node].nlink.checked_add(1);
                    nodes[dir_node].nlink = nl.ok_or_else(|| too_many(&nodes[dir_node]))?;
                    queue.push_back((idx, child));
                }
                nodes.push(n);
                entries.push((name.clone(), idx));
            }
            if let Kind::Dir { entries: e, .. } = &mut nodes[dir_node].kind {
                *e = entries;
            }
        }
        Ok(Tree {
            nodes,
            archive: Some(archive),
        })
    }
}

/// The header checksum: the sum of its bytes with the checksum field read as
/// spaces, unsigned as POSIX says or signed as some old tars wrote it.
fn checksum_ok(block: &[u8; BLOCK as usize]) -> bool {
    let Ok(stored) = tar::Header::from_byte_slice(block).cksum() else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    stored == unsigned || stored as i32 == signed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_tar() {
        let n = |p: &[u8]| normalize(p).map(|c| join(&c));
        assert_eq!(n(b"./a/b/").unwrap(), b"a/b");
        assert_eq!(n(b"/abs//x/./y").unwrap(), b"abs/x/y");
        assert_eq!(n(b"a/../b").unwrap(), b"b");
        assert_eq!(n(b".").unwrap(), b"");
        assert!(n(b"../x").unwrap_err().contains("escapes"));
        assert!(n(b"/abs/../../x").unwrap_err().contains("escapes"));
        assert!(n(b"a/\0b").unwrap_err().contains("NUL"));
        assert!(n(&[b'x'; 256]).unwrap_err().contains("256 bytes"));
        assert!(n(&[b'x'; 255]).is_ok());
    }

    #[test]
    fn pax_records() {
        let mut p = Pax::default();
        // A binary value with a newline and an '=' inside, a fractional mtime.
        let rec = |k: &[u8], v: &[u8]| {
            let body = [b" ", k, b"=", v, b"\n"].concat();
            let mut len = body.len() + 1;
            while body.len() + len.to_string().len() != len {
                len = body.len() + len.to_string().len();
            }
            [len.to_string().as_bytes(), &body].concat()
        };
        let data = [
            rec(b"SCHILY.xattr.user.bin", b"a\nb=c\0"),
            rec(b"mtime", b"1700000000.5"),
            rec(b"size", b"12345678901"),
            rec(b"path", b"some/long/path"),
            rec(b"LIBARCHIVE.xattr.user.%41b", b"aGk="),
            rec(b"atime", b"1.2"),
        ]
        .concat();
        p.parse(&data).unwrap();
        assert_eq!(p.xattrs[&b"user.bin"[..]], b"a\nb=c\0");
        assert_eq!(p.xattrs[&b"user.Ab"[..]], b"hi");
        assert_eq!(p.mtime, Some((1_700_000_000, 500_000_000)));
        assert_eq!(p.size, Some(12_345_678_901));
        assert_eq!(p.path.as_deref(), Some(&b"some/long/path"[..]));
        assert!(Pax::default().parse(b"5 a=b").is_err());
        assert!(Pax::default().parse(b"99 a=b\n").is_err());
        assert!(Pax::default().parse(b"6 ab\n\n").is_err());
    }

    #[test]
    fn times_and_decoders() {
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_time(b"7.1234567891"), Some((7, 123_456_789)));
        assert_eq!(parse_time(b"7."), None);
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(base64_decode(b"AAEC/w==").unwrap(), [0, 1, 2, 255]);
        assert_eq!(base64_decode(b"YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode(b"Y"), None);
        assert_eq!(url_decode(b"a%3Db%zz%4"), b"a=b%zz%4");
    }

    #[test]
    fn compression_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Ok(Compression::Gzip));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Ok(Compression::Zstd));
        assert_eq!(detect(b"\xfd7zXZ\0"), Ok(Compression::Xz));
        assert_eq!(detect(b"BZh91AY&SY"), Err("bzip2"));
        assert_eq!(detect(b"./file"), Ok(Compression::None));
        assert_eq!(detect(b""), Ok(Compression::None));
    }
}
