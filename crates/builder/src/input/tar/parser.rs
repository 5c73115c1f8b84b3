//! The tar parser: reads the sequence of headers (GNU long names and link names,
//! PAX local and global headers, then the entry), applies each entry to the inode
//! model as tar extraction does, and turns the result into the build's tree.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ishare_erofs::format::encode_dev;

use super::inode::*;
use super::path::{join, normalize};
use super::pax::Pax;
use super::stream::Stream;
use crate::error::{Error, Result};
use crate::options::{BuildOptions, TarData};
use crate::tree::{Archive, Kind, Node, OVL_ORIGIN, Origin, Tree, path_of};
use std::io;

const BLOCK: u64 = 512;
/// Largest GNU long name or long link name accepted.
const MAX_LONG_NAME: u64 = 1 << 20;
/// Largest PAX extended header accepted (xattr values are at most 64 KiB each).
const MAX_PAX: u64 = 16 << 20;
/// Longest symlink target: what Linux can create (PATH_MAX - 1).
const MAX_SYMLINK: usize = 4095;

/// AUFS whiteout prefix and opaque-directory marker (`--aufs`).
const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const OVL_OPAQUE: &[u8] = b"trusted.overlay.opaque";

/// What messages need to name a place in the archive.
#[derive(Debug, Clone, Copy)]
struct Loc<'a> {
    name: &'a Path,
    /// Offsets are in the decompressed stream.
    decompressed: bool,
    /// Where this archive starts in the stream read (OCI layers follow each other
    /// in one temporary file); positions in messages are relative to it.
    base: u64,
}

impl Loc<'_> {
    /// "byte N", or "byte N of the decompressed stream".
    pub(super) fn at(&self, pos: u64) -> String {
        let pos = pos - self.base.min(pos);
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

pub(super) struct Parser<'a> {
    opts: &'a BuildOptions,
    loc: Loc<'a>,
    inodes: Vec<Inode>,
    global: Pax,
    /// Path and header offset of the last entry, for messages.
    last: Option<(Vec<u8>, u64)>,
    /// Take the SHA-256 of regular files' data while reading past it (a tar index
    /// read from a stream keeps no copy to hash later).
    pub(super) hash_data: bool,
    /// Those digests, by data offset.
    digests: std::collections::HashMap<u64, [u8; 32]>,
    /// OCI image layers (`--oci`): whiteouts are resolved, not kept; the layer
    /// being read (1 for the first).
    oci: bool,
    layer: u32,
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
    pub(super) fn new(name: &'a Path, decompressed: bool, opts: &'a BuildOptions) -> Self {
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
            layer: 0,
        };
        Self {
            opts,
            loc: Loc {
                name,
                decompressed,
                base: 0,
            },
            inodes: vec![root],
            global: Pax::default(),
            last: None,
            hash_data: false,
            digests: Default::default(),
            oci: false,
            layer: 0,
        }
    }

    /// Starts the next OCI image layer, the archive `name`, whose bytes start at
    /// `base` of the stream: entries from here on are applied over the tree so far,
    /// `.wh.NAME` removes NAME and `.wh..wh..opq` hides what lower layers put in its
    /// directory, as a container runtime unpacks an image.
    pub(super) fn begin_layer(&mut self, name: &'a Path, base: u64, decompressed: bool) {
        self.oci = true;
        self.layer += 1;
        self.loc = Loc {
            name,
            decompressed,
            base,
        };
        // Global PAX headers hold for the rest of their own archive only.
        self.global = Pax::default();
        self.last = None;
    }

    /// The digests taken while parsing ([`Parser::hash_data`]).
    pub(super) fn take_digests(&mut self) -> std::collections::HashMap<u64, [u8; 32]> {
        std::mem::take(&mut self.digests)
    }

    /// Reads past `size` bytes of file data hashing them; returns the bytes read.
    fn hash_past(&mut self, s: &mut impl Stream, size: u64, data_at: u64) -> io::Result<u64> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; size.min(1 << 16) as usize];
        let mut done = 0;
        while done < size {
            let want = (size - done).min(buf.len() as u64) as usize;
            let n = s.read_full(&mut buf[..want])?;
            h.update(&buf[..n]);
            done += n as u64;
            if n < want {
                return Ok(done);
            }
        }
        self.digests.insert(data_at, h.finalize().into());
        Ok(done)
    }

    pub(super) fn at(&self, pos: u64) -> String {
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
    pub(super) fn run(&mut self, s: &mut impl Stream) -> Result<()> {
        let mut block = [0u8; BLOCK as usize];
        let mut pending = Pending::default();
        loop {
            let at = s.pos();
            let n = s
                .read_full(&mut block)
                .map_err(|e| self.stream_err(at, format!("cannot read a header: {e}")))?;
            let first = at == self.loc.base;
            if n == 0 && first {
                return Err(self.err("is empty, not a tar archive"));
            }
            // A headerball (`--tar=headerball`) may end without the marker, as
            // mkfs.erofs accepts it.
            if n == 0 && self.opts.tar_data == TarData::Omitted {
                return Ok(());
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
                return Err(if first {
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
            // A headerball holds no file data: the next header follows.
            if self.opts.tar_data == TarData::Omitted {
                continue;
            }
            let is_file = matches!(typeflag, b'0' | 0 | b'7') && !path.ends_with(b"/");
            let skipped = if self.hash_data && is_file && size > 0 {
                self.hash_past(s, size, data_at)
                    .and_then(|n| match n == size {
                        true => s.skip(padded - size).map(|p| n + p),
                        false => Ok(n),
                    })
            } else {
                s.skip(padded)
            }
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

        if self.oci && self.oci_whiteout(&mut comps, path, at)? {
            return Ok(());
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
            // The root itself ("." or "./"): only a directory entry (type '5') may
            // describe it, as mkfs.erofs 1.9.4 has it (ENOTDIR for anything else).
            // The trailing-slash convention does not apply here: a regular file
            // "/", "./" or "///" is not an old archive's directory but an entry
            // that would hand the root its mode (often 0, a root nobody can enter).
            if typeflag != b'5' {
                return Err(err(format!(
                    "{} may not name the root directory (only a directory entry may)",
                    entry_type_name(typeflag)
                )));
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
            let layer = self.layer;
            let d = &mut self.inodes[e];
            d.mode = S_IFDIR | perm;
            (d.uid, d.gid, d.mtime, d.nsec) = (uid, gid, mtime, nsec);
            d.xattrs.extend(xattrs);
            d.layer = layer;
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
            layer: self.layer,
        });
        self.set_child(parent, name, idx);
        if whiteout && let IKind::Dir { whiteouts, .. } = &mut self.inodes[parent].kind {
            *whiteouts = true;
        }
        Ok(())
    }

    /// An OCI whiteout entry applied to the tree (`true`), or not a whiteout.
    /// `.wh.NAME` removes NAME with everything below it, whatever layer it came from
    /// (as containerd applies a layer); `.wh..wh..opq` removes, recursively, what
    /// lower layers put in its directory, which is what overlayfs shows of an
    /// opaque directory.
    fn oci_whiteout(&mut self, comps: &mut Vec<&[u8]>, path: &[u8], at: u64) -> Result<bool> {
        let Some(&last) = comps.last() else {
            return Ok(false);
        };
        if last == WH_OPAQUE {
            comps.pop();
            if self.is_excluded(comps) {
                return Ok(true);
            }
            let dir = self.dir(comps, path, at)?;
            self.hide_lower(dir);
            return Ok(true);
        }
        let Some(name) = last.strip_prefix(WH_PREFIX) else {
            return Ok(false);
        };
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err(self.entry_err(path, at, "a whiteout that names no file"));
        }
        // The parent, if there is one: a whiteout of something absent is a no-op.
        let mut cur = 0;
        for &c in &comps[..comps.len() - 1] {
            match self.inodes[cur].children().and_then(|m| m.get(c)) {
                Some(&n) if self.inodes[n].children().is_some() => cur = n,
                _ => return Ok(true),
            }
        }
        if let IKind::Dir { children, .. } = &mut self.inodes[cur].kind {
            children.remove(name);
        }
        Ok(true)
    }

    /// Removes from the directory `dir`, and from its subdirectories written by
    /// the current layer, every entry that a lower layer wrote.
    fn hide_lower(&mut self, dir: usize) {
        let layer = self.layer;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let IKind::Dir { children, .. } = &mut self.inodes[d].kind else {
                continue;
            };
            let mut kept = std::mem::take(children);
            kept.retain(|_, &mut n| self.inodes[n].layer >= layer);
            stack.extend(
                kept.values()
                    .copied()
                    .filter(|&n| self.inodes[n].children().is_some()),
            );
            if let IKind::Dir { children, .. } = &mut self.inodes[d].kind {
                *children = kept;
            }
        }
    }

    fn is_excluded(&self, comps: &[&[u8]]) -> bool {
        if self.opts.exclude_paths.is_empty() && self.opts.exclude_regexes.is_empty() {
            return false;
        }
        // Everything below an excluded path is excluded too, as for directories.
        // One buffer grows through the prefixes (a copy of each would be O(depth²)).
        let mut prefix = Vec::new();
        comps.iter().any(|c| {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(c);
            self.opts.excluded(&prefix)
        })
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
                        layer: self.layer,
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
    pub(super) fn into_tree(self, archive: Archive) -> Result<Tree> {
        let opts = self.opts;
        let node = |ino: &Inode, parent: usize, name: &[u8]| -> Option<Node> {
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
            let (uid, gid) = opts.owner(ino.uid, ino.gid)?;
            Some(Node {
                origin: Origin::Entry {
                    parent,
                    name: name.to_vec(),
                },
                kind,
                mode: ino.mode,
                uid,
                gid,
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
            })
        };
        let overflow = |nodes: &[Node], parent: usize, name: &[u8]| {
            let mut p = match nodes.is_empty() {
                true => PathBuf::from("."),
                false => path_of(nodes, Path::new(""), parent),
            };
            p.push(std::ffi::OsStr::from_bytes(name));
            Error::Unrepresentable {
                path: p,
                what: "the uid or gid overflows 32 bits with --uid-offset/--gid-offset".into(),
            }
        };
        let too_many = |nodes: &[Node], n: usize| Error::Unrepresentable {
            path: path_of(nodes, Path::new(""), n),
            what: "too many links".into(),
        };
        let mut node_of: Vec<Option<usize>> = vec![None; self.inodes.len()];
        let root = node(&self.inodes[0], 0, b"").ok_or_else(|| overflow(&[], 0, b""))?;
        let mut nodes = vec![root];
        node_of[0] = Some(0);
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
        while let Some((dir_node, dir_ino)) = queue.pop_front() {
            let children = self.inodes[dir_ino].children().expect("a directory");
            let mut entries = Vec::with_capacity(children.len());
            for (name, &child) in children {
                if let Some(n) = node_of[child] {
                    // Another name of a hard-linked inode.
                    let nl = nodes[n].nlink.checked_add(1);
                    nodes[n].nlink = nl.ok_or_else(|| too_many(&nodes, n))?;
                    entries.push((name.clone(), n));
                    continue;
                }
                let idx = nodes.len();
                node_of[child] = Some(idx);
                let n = node(&self.inodes[child], dir_node, name)
                    .ok_or_else(|| overflow(&nodes, dir_node, name))?;
                if matches!(n.kind, Kind::Dir { .. }) {
                    let nl = nodes[dir_node].nlink.checked_add(1);
                    nodes[dir_node].nlink = nl.ok_or_else(|| too_many(&nodes, dir_node))?;
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
            base: PathBuf::new(),
            archive: Some(archive),
            layers: None,
        })
    }
}

/// What an entry of type `typeflag` is, for messages ("a regular file").
fn entry_type_name(typeflag: u8) -> &'static str {
    match typeflag {
        b'1' => "a hard link",
        b'2' => "a symlink",
        b'3' => "a character device",
        b'4' => "a block device",
        b'5' => "a directory",
        b'6' => "a fifo",
        _ => "a regular file",
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
