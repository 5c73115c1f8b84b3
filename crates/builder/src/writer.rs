//! The build itself: scan, plan, copy data, serialize metadata, and commit the image
//! by renaming a temporary file, so a failed build leaves nothing under the name.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use ishare_erofs::FileType;
use ishare_erofs::format::*;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::compress::config::{LZ4_MAX_DISTANCE, algorithms_bitmap, compr_cfgs, uses_cfgs};
use crate::compress::frag::merge;
use crate::compress::map::zmap;
use crate::compress::spill::Spill;
use crate::compress::{compress_files, compress_packed};
use crate::data::{DataPass, copy_all};
use crate::dir::{DirEntry, DirLayout};
use crate::error::{Error, Result};
use crate::input::dir::scan;
use crate::input::oci::OciSource;
use crate::input::tar::TarInput;
use crate::layout::{ChunkTarget, Layout, Placed, layout};
use crate::options::{BuildOptions, TarData};
use crate::tree::{Kind, Node, Tree};
use crate::xattr::{FINGERPRINT_LEN, Prefixes};

/// What a build produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Inodes in the image.
    pub inodes: u64,
    /// Blocks in the image.
    pub blocks: u64,
    /// Image size in bytes.
    pub image_size: u64,
    /// Regular files (inodes).
    pub files: u64,
    /// Bytes of regular file data.
    pub file_bytes: u64,
    /// Files that got a fingerprint xattr.
    pub fingerprints: u64,
}

/// The superblock is written without extension slots, as mkfs.erofs does.
const SB_SIZE: u64 = SB_BASE_SIZE as u64;

/// Worker stack size: room for the deepest trees a path can name (PATH_MAX).
const SCAN_STACK_SIZE: usize = 64 << 20;

/// Builds an EROFS image of directory `source` at `image`.
pub fn build(source: &Path, image: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    in_pool(opts, || {
        let tree = scan(source, opts)?;
        finish(tree, image, opts)
    })
}

/// Builds an EROFS image of a tar archive (`mkfs.erofs --tar=f`) at `image`.
///
/// The archive may be compressed with gzip, zstd or xz (detected by magic bytes).
/// An uncompressed archive in a regular file is indexed in place and file data is
/// copied from its ranges; any other input is first decompressed into an unnamed
/// temporary file in the image's directory, which goes away with the build.
pub fn build_tar(input: &TarInput, image: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    in_pool(opts, || {
        let tree = crate::input::tar::index(input, image, opts)?;
        if let (Some(keep), Some(a)) = (&opts.keep_tar, &tree.archive)
            && let Some(f) = &a.file
        {
            keep_archive(f, keep)?;
        }
        finish(tree, image, opts)
    })
}

/// Builds an image from a local OCI image (`mkfs.erofs --oci`): its layers applied
/// in order, whiteouts resolved; with `TarData::Index`, an index of its one chosen
/// layer, which must be an uncompressed tar.
pub fn build_oci(src: &OciSource, image: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    in_pool(opts, || {
        let work_dir = match image.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let r = crate::input::oci::resolve(src, work_dir)?;
        let tree = match opts.tar_data {
            TarData::Index => {
                let [layer] = r.layers.as_slice() else {
                    return Err(Error::Oci {
                        path: r.name.clone(),
                        what: format!(
                            "a tar index (--oci=i) refers to one layer, and the image has {}:                              choose one with layer=N or blob=DIGEST",
                            r.layers.len()
                        ),
                    });
                };
                if r.unpacked.is_some() {
                    return Err(Error::Oci {
                        path: r.name.clone(),
                        what: "a tar index (--oci=i) refers to the layer blob, which must stay:                                give the layout directory, not an archive of it"
                            .into(),
                    });
                }
                crate::input::tar::index(&TarInput::Path(layer.path.clone()), image, opts)?
            }
            _ => crate::input::tar::index_layers(&r.layers, &r.name, image, opts)?,
        };
        let report = finish(tree, image, opts);
        drop(r);
        report
    })
}

/// Copies the (decompressed) archive to `to` (`--ungzip=X`, `--unxz=X`).
fn keep_archive(archive: &std::fs::File, to: &Path) -> Result<()> {
    let len = archive
        .metadata()
        .map_err(|e| Error::io(to, "stat the archive copied to", e))?
        .len();
    let out = std::fs::File::create(to).map_err(|e| Error::io(to, "create", e))?;
    let mut done = crate::data::copy_range(archive, 0, &out, 0, len).unwrap_or(0);
    let mut buf = vec![0u8; 1 << 20];
    while done < len {
        let n = archive
            .read_at(&mut buf, done)
            .map_err(|e| Error::io(to, "copy the archive to", e))?;
        if n == 0 {
            break;
        }
        out.write_all_at(&buf[..n], done)
            .map_err(|e| Error::io(to, "write", e))?;
        done += n as u64;
    }
    Ok(())
}

/// Runs `f` on a pool of `opts.workers` threads, after checking the options.
fn in_pool<T: Send>(opts: &BuildOptions, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    opts.validate()?;
    // The scan recurses once per directory level on the workers' stacks.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.workers)
        .stack_size(SCAN_STACK_SIZE)
        .build()
        .map_err(|e| Error::InvalidOption(format!("cannot start {} workers: {e}", opts.workers)))?;
    pool.install(f)
}

/// Plans, writes and commits the image of a scanned tree.
fn finish(mut tree: Tree, image: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let bits = opts.blkszbits()?;
    let bs = u64::from(opts.block_size);
    let prefixes = Prefixes::new(opts)?;
    let zcfgs = opts
        .compression
        .as_ref()
        .map(|c| compr_cfgs(c, opts.block_size))
        .unwrap_or_default();
    // `--tar=i`: one device table slot (the tar) before the shared xattrs.
    let devt_off = (SUPER_OFFSET + SB_SIZE + zcfgs.len() as u64).next_multiple_of(DEVT_SLOT);
    let devt = opts.tar_data == TarData::Index;
    let shared_start = if devt {
        devt_off + DEVT_SLOT
    } else {
        SUPER_OFFSET + SB_SIZE + zcfgs.len() as u64
    };
    let mut xplan = crate::xattr::plan(&mut tree, &prefixes, opts, shared_start)?;
    let prefix_off = shared_start + xplan.shared_area.len() as u64;
    let prefix_table = prefixes.serialize();
    // With fragments the table is the start of the packed inode's data, as
    // mkfs.erofs stores it; otherwise plain bytes before the metadata.
    let frags = opts.compression.as_ref().is_some_and(|c| c.fragments)
        && !opts.plain_xattr_prefixes
        && !prefix_table.is_empty();
    let plain_prefixes = if frags { &[][..] } else { &prefix_table[..] };
    let meta_start = prefix_off + plain_prefixes.len() as u64;
    let real_nodes = tree.nodes.len();

    let out = create_temp(image)?;
    let file = out.as_file();
    let dir = out.path().parent().unwrap_or(Path::new("."));
    let (mut zfiles, spill, packed) = match &opts.compression {
        Some(cfg) => {
            let spill = Spill::new(dir)?;
            let mut z = compress_files(&tree, cfg, opts, &spill, prefixes.fingerprint.is_some())?;
            let in_packed = if frags { &prefix_table[..] } else { &[][..] };
            let packed = merge(&tree, &mut z, cfg, &spill, in_packed, dir, bs)?;
            (z, Some(spill), packed)
        }
        None => (vec![None; tree.nodes.len()], None, None),
    };
    if let (Some(pk), Some(cfg), Some(spill)) = (&packed, &opts.compression, &spill) {
        // The packed inode comes last, after every inode of the tree.
        tree.nodes.push(pk.node(opts.build_time));
        xplan.bodies.push(crate::xattr::Body::default());
        zfiles.push(compress_packed(&tree, real_nodes, cfg, opts, spill)?);
    }
    let packed_node = packed.as_ref().map(|_| real_nodes);
    let dirs = dir_layouts(&tree, opts.block_size as usize);
    let lay = layout(&tree, &xplan.bodies, &dirs, &zfiles, opts, meta_start)?;
    let total = lay
        .blocks
        .checked_mul(bs)
        .ok_or_else(|| Error::TooLarge("size overflows".into()))?;
    file.set_len(total)
        .map_err(|e| Error::io(out.path(), "resize", e))?;

    let pass = DataPass {
        tree: &tree,
        layout: &lay,
        image: file,
        image_path: out.path(),
        block_size: bs,
        hash: prefixes.fingerprint.is_some(),
        progress: opts.progress.as_deref(),
        zfiles: &zfiles,
        spill: spill.as_ref().map(|s| &s.file),
    };
    let digests = copy_all(&pass)?;
    drop(spill);
    drop(packed);

    let mut report = BuildReport {
        inodes: tree.nodes.len() as u64,
        blocks: lay.blocks,
        image_size: total,
        ..Default::default()
    };
    let mut w = MetaWriter::new(file, out.path());
    let mut buf = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate() {
        let p = &lay.inodes[i];
        let fp = digests[i].map(|d| {
            let mut v = Vec::with_capacity(FINGERPRINT_LEN);
            v.extend_from_slice(b"sha256:");
            v.extend_from_slice(&d);
            v
        });
        if matches!(node.kind, Kind::File) && i < real_nodes {
            report.files += 1;
            report.file_bytes += p.size;
            report.fingerprints += u64::from(fp.is_some());
        }
        buf.clear();
        inode_bytes(
            &mut buf,
            node,
            p,
            i,
            &xplan.bodies[i],
            fp.as_deref().unwrap_or_default(),
        );
        if let (Some(z), Some(zp)) = (&zfiles[i], &p.z) {
            buf.resize((zp.map_off - p.off) as usize, 0);
            let start_of = |n: usize| lay.inodes[n].startblk;
            let map = zmap(z, zp.inline, p.startblk, &start_of, opts, zp.map_off);
            buf.extend_from_slice(&map.bytes);
            // The form (so the size) cannot depend on where the data starts (see
            // PROVISIONAL_STARTBLK); writing past the placed length would corrupt the
            // next inode, so this is checked in every build.
            assert!(
                map.layout == p.layout && buf.len() as u64 == p.meta_len,
                "map of inode {i} changed form between layout and write"
            );
        }
        w.write(&buf, p.off)?;
        // Directory and symlink contents; file data was copied above.
        let content: Vec<Vec<u8>> = match &node.kind {
            Kind::Dir { .. } => {
                let d = dirs[i].as_ref().expect("directory layout");
                (0..d.block_ends.len())
                    .map(|b| d.block(b, bs as usize, |n| lay.nid(n, bs)))
                    .collect()
            }
            Kind::Symlink(t) => t.chunks(bs as usize).map(<[u8]>::to_vec).collect(),
            _ => Vec::new(),
        };
        for (b, block) in content.iter().enumerate() {
            let b = b as u64;
            if p.tail > 0 && b == p.size / bs {
                w.write(block, p.tail_off())?;
            } else {
                w.write(block, (u64::from(p.startblk) + b) * bs)?;
            }
        }
    }
    w.write(&zcfgs, SUPER_OFFSET + SB_SIZE)?;
    let device_blocks = match (devt, &tree.archive) {
        (true, Some(a)) => {
            let slot = device_slot(a, &lay, bs)?;
            w.write(slot.as_bytes(), devt_off)?;
            Some(slot)
        }
        _ => None,
    };
    w.write(&xplan.shared_area, shared_start)?;
    w.write(plain_prefixes, prefix_off)?;
    let mut sb = superblock(
        opts,
        bits,
        &tree,
        &lay,
        &prefixes,
        &xplan,
        Packing {
            prefix_off: if frags { 0 } else { prefix_off },
            plain_prefixes: !frags,
            packed_nid: packed_node.map(|n| lay.nid(n, bs)),
            dedupe: zfiles.iter().flatten().any(|z| z.dedupe),
        },
    );
    if device_blocks.is_some() {
        sb.feature_incompat |= FEATURE_INCOMPAT_DEVICE_TABLE;
        sb.extra_devices = U16::new(1);
        sb.devt_slotoff = U16::new((devt_off / DEVT_SLOT) as u16);
    }
    w.write(&sb.as_bytes()[..SB_SIZE as usize], SUPER_OFFSET)?;
    w.flush()?;
    if opts.sb_checksum {
        // The checksum covers the rest of the superblock's block, metadata included,
        // so it is computed from the finished bytes.
        let end = if bs > SUPER_OFFSET {
            bs
        } else {
            SUPER_OFFSET + bs
        };
        let mut first = vec![0u8; end as usize];
        file.read_exact_at(&mut first, 0)
            .map_err(|e| Error::io(out.path(), "read back", e))?;
        let crc = ishare_erofs::superblock_checksum(&first, bits).expect("block 0 was read");
        w.write(&crc.to_le_bytes(), SUPER_OFFSET + 4)?;
        w.flush()?;
    }
    if let Some(to) = &opts.block_map {
        crate::blockmap::write(&tree, &lay, bs, to)?;
    }
    commit(out, image, opts.offset)?;
    Ok(report)
}

/// Bytes of a device table slot.
const DEVT_SLOT: u64 = DEVT_SLOT_SIZE as u64;

/// The device table slot of the tar in `--tar=i`: its blocks follow the image's own
/// in the unified address space, so the image with the tar appended mounts with no
/// `device=` option (and with one, the tar is the device).
fn device_slot(a: &crate::tree::Archive, lay: &Layout, bs: u64) -> Result<DeviceSlot> {
    let blocks = a.len.div_ceil(bs);
    // Chunk indexes hold 32-bit addresses without the 48-bit feature, and the
    // unified address of the last tar block must fit them too.
    if lay.blocks + blocks > u64::from(u32::MAX) {
        return Err(Error::TooLarge(format!(
            "the image and the tar take {} blocks of {bs} bytes; an index holds 2^32 - 1",
            lay.blocks + blocks
        )));
    }
    Ok(DeviceSlot {
        tag: [0; 64],
        blocks_lo: U32::new(blocks as u32),
        uniaddr_lo: U32::new(lay.blocks as u32),
        blocks_hi: U16::new(0),
        uniaddr_hi: U16::new(0),
        reserved: [0; 52],
    })
}

/// Writes metadata pieces at their offsets, merging adjacent ones into one write.
struct MetaWriter<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> MetaWriter<'a> {
    const FLUSH_AT: usize = 1 << 20;

    fn new(file: &'a std::fs::File, path: &'a Path) -> Self {
        Self {
            file,
            path,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn write(&mut self, data: &[u8], off: u64) -> Result<()> {
        if self.start + self.buf.len() as u64 != off || self.buf.len() >= Self::FLUSH_AT {
            self.flush()?;
            self.start = off;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.start)
            .map_err(|e| Error::io(self.path, "write", e))?;
        self.start += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Entries of every directory, sorted and split into blocks.
fn dir_layouts(tree: &Tree, bs: usize) -> Vec<Option<DirLayout>> {
    let ft = |n: usize| {
        FileType::from_mode(tree.nodes[n].mode).map_or(FT_UNKNOWN, FileType::dirent_type)
    };
    tree.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match &n.kind {
            Kind::Dir { entries, parent } => {
                let mut v = Vec::with_capacity(entries.len() + 2);
                v.push(DirEntry {
                    name: b".".to_vec(),
                    node: i,
                    file_type: FT_DIR,
                });
                v.push(DirEntry {
                    name: b"..".to_vec(),
                    node: *parent,
                    file_type: FT_DIR,
                });
                v.extend(entries.iter().map(|(name, node)| DirEntry {
                    name: name.clone(),
                    node: *node,
                    file_type: ft(*node),
                }));
                Some(DirLayout::new(v, bs))
            }
            _ => None,
        })
        .collect()
}

/// Serializes an inode with its xattrs and chunk map.
fn inode_bytes(
    out: &mut Vec<u8>,
    n: &Node,
    p: &Placed,
    index: usize,
    body: &crate::xattr::Body,
    fingerprint: &[u8],
) {
    let i_u = match (&n.kind, &p.chunks) {
        (Kind::Special, _) => n.rdev,
        (_, Some(c)) => u32::from(c.format),
        // Compressed: the blocks the data takes (st_blocks).
        _ if p.z.is_some() => p.nblocks as u32,
        _ => p.startblk,
    };
    // i_ino is informational (32-bit stat); the serial number, as mkfs.erofs.
    let ino = U32::new((index as u32).wrapping_add(1));
    if p.extended {
        let d = InodeExtended {
            i_format: U16::new(INODE_LAYOUT_EXTENDED | (p.layout << I_DATALAYOUT_BIT)),
            i_xattr_icount: U16::new(body.icount()),
            i_mode: U16::new(n.mode),
            i_nb: U16::new(0),
            i_size: U64::new(p.size),
            i_u: U32::new(i_u),
            i_ino: ino,
            i_uid: U32::new(n.uid),
            i_gid: U32::new(n.gid),
            i_mtime: U64::new(n.mtime as u64),
            i_mtime_nsec: U32::new(n.mtime_nsec),
            i_nlink: U32::new(n.nlink),
            i_reserved2: [0; 16],
        };
        out.extend_from_slice(d.as_bytes());
    } else {
        // Fits were checked by the layout; the mtime is the epoch, offset 0.
        let d = InodeCompact {
            i_format: U16::new(INODE_LAYOUT_COMPACT | (p.layout << I_DATALAYOUT_BIT)),
            i_xattr_icount: U16::new(body.icount()),
            i_mode: U16::new(n.mode),
            i_nb: U16::new(n.nlink as u16),
            i_size: U32::new(p.size as u32),
            i_mtime: U32::new(0),
            i_u: U32::new(i_u),
            i_ino: ino,
            i_uid: U16::new(n.uid as u16),
            i_gid: U16::new(n.gid as u16),
            i_reserved: U32::new(0),
        };
        out.extend_from_slice(d.as_bytes());
    }
    body.write(out, fingerprint);
    if let Some(c) = &p.chunks {
        out.resize((out.len() as u64).next_multiple_of(c.unit) as usize, 0);
        for k in 0..c.count {
            // Block addresses were checked to fit 32 bits by the layout (image) and
            // by `check_device_blocks` (the tar of `--tar=i`).
            let (device, blk) = match c.target {
                ChunkTarget::Image => (0, (u64::from(p.startblk) + k * c.blocks_per_chunk) as u32),
                ChunkTarget::Device(start) => (1, (start + k * c.blocks_per_chunk) as u32),
                ChunkTarget::Hole => (0, u32::MAX),
            };
            if c.format & CHUNK_FORMAT_INDEXES != 0 {
                let idx = ChunkIndex {
                    startblk_hi: U16::new(0),
                    device_id: U16::new(device),
                    startblk_lo: U32::new(blk),
                };
                out.extend_from_slice(idx.as_bytes());
            } else {
                out.extend_from_slice(&blk.to_le_bytes());
            }
        }
    }
    debug_assert!(p.z.is_some() || out.len() as u64 == p.meta_len);
}

/// Where the superblock's packed-inode related fields come from.
struct Packing {
    /// Byte offset of the long prefix table: in the image, or in the packed inode.
    prefix_off: u64,
    plain_prefixes: bool,
    packed_nid: Option<u64>,
    /// Some pcluster is shared or partly referenced.
    dedupe: bool,
}

fn superblock(
    opts: &BuildOptions,
    bits: u8,
    tree: &Tree,
    lay: &Layout,
    prefixes: &Prefixes,
    xplan: &crate::xattr::Plan,
    pk: Packing,
) -> SuperBlock {
    let bs = u64::from(opts.block_size);
    let mut compat = FEATURE_COMPAT_MTIME;
    let mut incompat = 0;
    if opts.sb_checksum {
        compat |= FEATURE_COMPAT_SB_CHKSUM;
    }
    if xplan.any_filter {
        compat |= FEATURE_COMPAT_XATTR_FILTER;
    }
    if !prefixes.table.is_empty() {
        if pk.plain_prefixes {
            compat |= FEATURE_COMPAT_PLAIN_XATTR_PFX;
        }
        incompat |= FEATURE_INCOMPAT_XATTR_PREFIXES;
    }
    // Also DEDUPE (the same bit).
    if pk.packed_nid.is_some() || pk.dedupe {
        incompat |= FEATURE_INCOMPAT_FRAGMENTS;
    }
    if prefixes.fingerprint.is_some() {
        compat |= FEATURE_COMPAT_ISHARE_XATTRS;
    }
    if lay.inodes.iter().any(|p| p.chunks.is_some()) {
        incompat |= FEATURE_INCOMPAT_CHUNKED_FILE;
    }
    let mut u1 = 0;
    if let Some(c) = &opts.compression {
        incompat |= FEATURE_INCOMPAT_LZ4_0PADDING;
        if uses_cfgs(c, opts.block_size) {
            // Also BIG_PCLUSTER (the same bit).
            incompat |= FEATURE_INCOMPAT_COMPR_CFGS;
            u1 = algorithms_bitmap(c);
        } else {
            u1 = LZ4_MAX_DISTANCE;
        }
        if lay.inodes.iter().any(|p| p.z.is_some_and(|z| z.inline)) {
            incompat |= FEATURE_INCOMPAT_ZTAILPACKING;
        }
    }
    let mut volume_name = [0u8; 16];
    volume_name[..opts.label.len()].copy_from_slice(&opts.label);
    SuperBlock {
        magic: U32::new(SUPER_MAGIC_V1),
        checksum: U32::new(0),
        feature_compat: U32::new(compat),
        blkszbits: bits,
        sb_extslots: 0,
        rootnid_2b: U16::new(lay.nid(0, bs) as u16),
        inos: U64::new(tree.nodes.len() as u64),
        epoch: U64::new(opts.build_time),
        fixed_nsec: U32::new(0),
        blocks_lo: U32::new(lay.blocks as u32),
        meta_blkaddr: U32::new(lay.meta_blkaddr),
        xattr_blkaddr: U32::new(0),
        uuid: opts.uuid,
        volume_name,
        feature_incompat: U32::new(incompat),
        u1: U16::new(u1),
        extra_devices: U16::new(0),
        devt_slotoff: U16::new(0),
        dirblkbits: 0,
        xattr_prefix_count: prefixes.table.len() as u8,
        xattr_prefix_start: U32::new((pk.prefix_off / 4) as u32),
        packed_nid: U64::new(pk.packed_nid.unwrap_or(0)),
        xattr_filter_reserved: 0,
        ishare_xattr_prefix_id: prefixes.fingerprint.unwrap_or(0),
        reserved: [0; 2],
        build_time: U32::new(0),
        rootnid_8b: U64::new(0),
        reserved2: [0; 8],
        metabox_nid: U64::new(0),
        reserved3: [0; 8],
    }
}

/// A temporary file next to `image`, so the final rename stays on one file system.
fn create_temp(image: &Path) -> Result<tempfile::NamedTempFile> {
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
fn commit(out: tempfile::NamedTempFile, image: &Path, offset: u64) -> Result<()> {
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
