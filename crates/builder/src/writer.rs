//! The build itself: scan, plan, copy data, serialize metadata, and commit the image
//! by renaming a temporary file, so a failed build leaves nothing under the name.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use ishare_erofs::FileType;
use ishare_erofs::format::*;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::chunk::ChunkAt;
use crate::compress::config::{LZ4_MAX_DISTANCE, algorithms_bitmap, compr_cfgs, uses_cfgs};
use crate::compress::frag::merge;
use crate::compress::map::zmap;
use crate::compress::spill::Spill;
use crate::compress::{compress_files, compress_packed, compress_special};
use crate::data::{DataPass, copy_all};
use crate::dir::{DirEntry, DirLayout};
use crate::error::{Error, Result};
use crate::input::dir::scan;
use crate::input::oci::OciSource;
use crate::input::tar::TarInput;
use crate::layout::{ChunkTarget, Layout, NULL_STARTBLK, Placed, Placement, Prescan, layout};
use crate::options::{BuildOptions, TarData};
use crate::tree::{Kind, Node, Tree};
use crate::wide::InodeFormat;
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
pub(crate) fn in_pool<T: Send>(
    opts: &BuildOptions,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
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
pub(crate) fn finish(mut tree: Tree, image: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let bits = opts.blkszbits()?;
    let bs = u64::from(opts.block_size);
    let prefixes = Prefixes::new(opts)?;
    // `-m`: the image's algorithms include the metabox's, which has its own settings.
    let mbox = match &opts.metabox {
        Some(m) => {
            m.validate(opts.block_size, opts.compression.as_ref())?;
            // The tar of an index follows the image's blocks in the unified address
            // space, and the metabox is appended after them.
            if opts.tar_data == TarData::Index {
                return Err(Error::InvalidOption(
                    "-m: metadata compression cannot be combined with a tar index (--tar=i)".into(),
                ));
            }
            Some(m.settings(opts.compression.as_ref(), opts.block_size)?)
        }
        None => None,
    };
    let image_cfg = match &mbox {
        Some(Some((image, _))) => Some(image),
        _ => opts.compression.as_ref(),
    };
    let zcfgs = image_cfg
        .map(|c| compr_cfgs(c, opts.block_size))
        .unwrap_or_default();
    // A metabox image has a superblock extension slot for the metabox NID.
    let sb_size = if opts.metabox.is_some() {
        SB_SIZE + SB_EXTSLOT_SIZE as u64
    } else {
        SB_SIZE
    };
    // `--tar=i`: one device table slot (the tar) before the shared xattrs; rebuild
    // mode referring to the layers in place: one per layer.
    let devt_off = (SUPER_OFFSET + sb_size + zcfgs.len() as u64).next_multiple_of(DEVT_SLOT);
    let devt_slots = match &tree.layers {
        Some(l) if l.data == crate::rebuild::layers::RebuildData::BlobIndex => {
            l.images.len() as u64
        }
        _ => u64::from(opts.tar_data == TarData::Index || opts.blob_device.is_some()),
    };
    let devt = devt_slots > 0;
    let shared_start = if devt {
        devt_off + devt_slots * DEVT_SLOT
    } else {
        SUPER_OFFSET + sb_size + zcfgs.len() as u64
    };
    let mut xplan = crate::xattr::plan(&mut tree, &prefixes, opts, shared_start)?;
    let prefix_off = shared_start + xplan.shared_area.len() as u64;
    let prefix_table = prefixes.serialize();
    // With fragments the table is the start of the packed inode's data, as
    // mkfs.erofs stores it; otherwise plain bytes before the metadata.
    // With a metabox the table starts the metabox's data instead, as mkfs.erofs
    // stores it.
    let boxed_prefixes =
        opts.metabox.is_some() && !opts.plain_xattr_prefixes && !prefix_table.is_empty();
    let frags = opts.compression.as_ref().is_some_and(|c| c.fragments)
        && !opts.plain_xattr_prefixes
        && !prefix_table.is_empty()
        && !boxed_prefixes;
    let plain_prefixes = if frags || boxed_prefixes {
        &[][..]
    } else {
        &prefix_table[..]
    };
    let meta_start = prefix_off + plain_prefixes.len() as u64;
    let real_nodes = tree.nodes.len();

    let out = create_temp(image)?;
    let file = out.as_file();
    let dir = out.path().parent().unwrap_or(Path::new("."));
    let (mut zfiles, spill, mut packed) = match &opts.compression {
        Some(cfg) => {
            let spill = Spill::new(dir)?;
            let mut z = compress_files(&tree, cfg, opts, &spill, prefixes.fingerprint.is_some())?;
            let in_packed = if frags { &prefix_table[..] } else { &[][..] };
            let packed = merge(&tree, &mut z, cfg, &spill, in_packed, dir, bs)?;
            (z, Some(spill), packed)
        }
        None => (vec![None; tree.nodes.len()], None, None),
    };
    let fmt = InodeFormat::new(opts);
    let mut dirs = dir_layouts(&tree, opts.block_size as usize, fmt.dot_omitted);
    // `--zD`: directories are fragments of the packed inode.
    let zdirs = opts.compress_dirs && opts.compression.is_some();
    if zdirs {
        let pk = match &mut packed {
            Some(pk) => pk,
            None => packed.insert(crate::compress::frag::Packed::empty(dir)?),
        };
        crate::zdir::plan(&tree, &dirs, &mut zfiles, pk)?;
    }
    if let (Some(pk), Some(cfg), Some(spill)) = (&packed, &opts.compression, &spill) {
        // The packed inode comes last, after every inode of the tree.
        tree.nodes.push(pk.node(opts.build_time));
        xplan.bodies.push(crate::xattr::Body::default());
        dirs.push(None);
        // With compressed directories it is complete only once the NIDs are known.
        zfiles.push(if zdirs {
            None
        } else {
            compress_packed(&tree, real_nodes, cfg, opts, spill)?
        });
    }
    let packed_node = packed.as_ref().map(|_| real_nodes);
    // `--chunksize`: copied files that are not compressed become chunk-based, their
    // chunks deduplicated into a blob.
    let chunk_plan = match opts.chunk_size {
        Some(cs) if opts.tar_data == TarData::Copy => {
            Some(crate::chunk::plan(&tree, opts, cs, |i| {
                i < real_nodes && zfiles[i].is_none()
            })?)
        }
        _ => None,
    };
    // 48-bit layout: files that are all holes get no blocks.
    // (Not in rebuild mode, whose files keep the layers' layout or reserved room.)
    let sparse = if fmt.wide
        && chunk_plan.is_none()
        && opts.tar_data == TarData::Copy
        && tree.layers.is_none()
    {
        crate::wide::sparse_files(
            &tree,
            |i| i < real_nodes && zfiles[i].is_none(),
            prefixes.fingerprint.is_some(),
        )?
    } else {
        Vec::new()
    };
    let prescan = Prescan {
        chunks: chunk_plan.as_ref(),
        sparse: &sparse,
    };
    let placement = Placement {
        metabox: opts.metabox.as_ref().map(|_| {
            let start = if boxed_prefixes {
                prefix_table.len()
            } else {
                0
            };
            (real_nodes, start as u64)
        }),
        zone: opts.metazone,
        data_start: None,
    };
    let mut lay = layout(
        &tree,
        &xplan.bodies,
        &dirs,
        &zfiles,
        opts,
        meta_start,
        prescan,
        placement,
    )?;
    if let (true, Some(pk), Some(cfg), Some(spill)) = (zdirs, &packed, &opts.compression, &spill) {
        crate::zdir::fill(&tree, &dirs, &zfiles, &lay, pk, bs)?;
        zfiles[real_nodes] = compress_packed(&tree, real_nodes, cfg, opts, spill)?;
        let again = layout(
            &tree,
            &xplan.bodies,
            &dirs,
            &zfiles,
            opts,
            meta_start,
            prescan,
            placement,
        )?;
        // Only the packed inode, the last node, changed: the NIDs written into the
        // directories still hold.
        assert!(
            (0..real_nodes).all(|n| again.nid(n, bs) == lay.nid(n, bs)),
            "NIDs moved when the packed inode was compressed"
        );
        lay = again;
    }
    let total = lay
        .blocks
        .checked_mul(bs)
        .ok_or_else(|| Error::TooLarge("size overflows".into()))?;
    file.set_len(total + lay.box_len)
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
    let mut digests = copy_all(&pass)?;
    for (d, s) in digests.iter_mut().zip(&sparse) {
        if s.is_some() && prefixes.fingerprint.is_some() {
            *d = *s;
        }
    }
    let blob = match (&chunk_plan, &opts.blob_device) {
        (Some(plan), Some(path)) => Some(write_blob(&tree, plan, path, bs)?),
        (Some(plan), None) => {
            crate::chunk::copy_chunks(&tree, plan, file, out.path(), lay.blob_start, bs)?;
            None
        }
        _ => None,
    };
    if let Some(plan) = &chunk_plan {
        for (d, c) in digests.iter_mut().zip(&plan.digests) {
            if c.is_some() {
                *d = *c;
            }
        }
    }
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
        let blob_map = chunk_plan
            .as_ref()
            .and_then(|c| c.files[i].as_ref())
            .map_or(&[][..], |f| &f.chunks[..]);
        inode_record(
            &mut buf,
            &tree,
            &lay,
            i,
            &xplan.bodies[i],
            fp.as_deref().unwrap_or_default(),
            zfiles[i].as_ref(),
            opts,
            &Encoding {
                fmt: &fmt,
                blob_map,
                blob_start: lay.blob_start,
                layer_chunks: None,
            },
        );
        w.write(&buf, p.off)?;
        // Directory and symlink contents; file data was copied above.
        let content: Vec<Vec<u8>> = match &node.kind {
            Kind::Dir { .. } if !crate::zdir::is_compressed_dir(&tree, &zfiles, i) => {
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
    w.write(&zcfgs, SUPER_OFFSET + sb_size)?;
    let device_blocks = match (devt, &tree.archive, &tree.layers) {
        // `--blobdev`: its slot is written once the image's size is known (below).
        (true, _, _) if opts.blob_device.is_some() => None,
        (true, Some(a), _) => {
            let slot = device_slot(a, &lay, bs)?;
            w.write(slot.as_bytes(), devt_off)?;
            Some(slot)
        }
        (true, _, Some(l)) => {
            let slots = crate::rebuild::layers::device_slots(l, lay.blocks)?;
            for (k, slot) in slots.iter().enumerate() {
                w.write(slot.as_bytes(), devt_off + k as u64 * DEVT_SLOT)?;
            }
            slots.into_iter().next()
        }
        _ => None,
    };
    w.write(&xplan.shared_area, shared_start)?;
    w.write(plain_prefixes, prefix_off)?;
    if boxed_prefixes {
        w.write(&prefix_table, lay.box_base)?;
    }
    // `-m`: the metabox scratch region, now complete, becomes the metabox inode.
    let appended = if opts.metabox.is_some() {
        w.flush()?;
        let data = crate::metabox::read_back(file, out.path(), lay.box_base, lay.box_len)?;
        let mcfg = mbox.as_ref().and_then(|m| m.as_ref()).map(|(_, m)| m);
        let pcluster = opts.metabox.as_ref().map_or(0, |m| m.pcluster_size);
        let a = append_metabox(file, out.path(), dir, data, &lay, opts, mcfg, pcluster)?;
        report.blocks = a.blocks;
        report.image_size = a.blocks * bs;
        Some(a)
    } else {
        None
    };
    let mut sb = superblock(
        opts,
        bits,
        &tree,
        &lay,
        &prefixes,
        &xplan,
        Packing {
            prefix_off: if frags || boxed_prefixes {
                0
            } else {
                prefix_off
            },
            plain_prefixes: !frags && !boxed_prefixes,
            packed_nid: packed_node.map(|n| lay.nid(n, bs)),
            dedupe: zfiles.iter().flatten().any(|z| z.dedupe),
            compression: image_cfg,
        },
    );
    if let Some(a) = &appended {
        // The root's NID has bit 63: only the 48-bit superblock's 64-bit field
        // holds it (the 16-bit field then holds the block count's high bits, 0).
        sb.feature_incompat =
            U32::new(sb.feature_incompat.get() | FEATURE_INCOMPAT_48BIT | FEATURE_INCOMPAT_METABOX);
        if a.inline_tail {
            sb.feature_incompat =
                U32::new(sb.feature_incompat.get() | FEATURE_INCOMPAT_ZTAILPACKING);
        }
        sb.sb_extslots = 1;
        sb.rootnid_2b = U16::new(0);
        sb.rootnid_8b = U64::new(lay.nid(0, bs));
        sb.metabox_nid = U64::new(a.nid);
        sb.blocks_lo = U32::new(a.blocks as u32);
    }
    // `--blobdev`: the blob's blocks follow the image's, a metabox included, in the
    // unified address space.
    let blob_slot = if devt && opts.blob_device.is_some() {
        let blocks = chunk_plan.as_ref().map_or(0, |p| p.blob_blocks);
        let slot = DeviceSlot {
            tag: [0; 64],
            blocks_lo: U32::new(blocks as u32),
            uniaddr_lo: U32::new(appended.as_ref().map_or(lay.blocks, |a| a.blocks) as u32),
            blocks_hi: U16::new(0),
            uniaddr_hi: U16::new(0),
            reserved: [0; 52],
        };
        w.write(slot.as_bytes(), devt_off)?;
        true
    } else {
        false
    };
    if device_blocks.is_some() || blob_slot {
        sb.feature_incompat |= FEATURE_INCOMPAT_DEVICE_TABLE;
        sb.extra_devices = U16::new(devt_slots as u16);
        sb.devt_slotoff = U16::new((devt_off / DEVT_SLOT) as u16);
    }
    w.write(&sb.as_bytes()[..sb_size as usize], SUPER_OFFSET)?;
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
    if let (Some(b), Some(path)) = (blob, &opts.blob_device) {
        commit(b, path, 0)?;
    }
    Ok(report)
}

/// Writes the chunk blob of `--blobdev` to a temporary file next to `path` (renamed
/// into place after the image), sized to whole blocks.
fn write_blob(
    tree: &Tree,
    plan: &crate::chunk::ChunkPlan,
    path: &Path,
    bs: u64,
) -> Result<tempfile::NamedTempFile> {
    // Chunk indexes hold 32-bit device addresses without the 48-bit layout.
    if plan.blob_blocks > u64::from(u32::MAX) {
        return Err(Error::TooLarge(format!(
            "the blob device would take {} blocks, at most 2^32 - 1",
            plan.blob_blocks
        )));
    }
    let blob = create_temp(path)?;
    blob.as_file()
        .set_len(plan.blob_blocks * bs)
        .map_err(|e| Error::io(blob.path(), "resize", e))?;
    crate::chunk::copy_chunks(tree, plan, blob.as_file(), blob.path(), 0, bs)?;
    Ok(blob)
}

/// Serializes inode `i` of `tree` as placed in `lay`: the inode, its xattrs, and its
/// chunk map or compressed map.
#[allow(clippy::too_many_arguments)]
fn inode_record(
    buf: &mut Vec<u8>,
    tree: &Tree,
    lay: &Layout,
    i: usize,
    body: &crate::xattr::Body,
    fingerprint: &[u8],
    z: Option<&crate::compress::extent::ZFile>,
    opts: &BuildOptions,
    enc: &Encoding<'_>,
) {
    let p = &lay.inodes[i];
    // Rebuild mode: where the file's chunks lie in its layer.
    let layer_chunks = tree
        .layers
        .as_ref()
        .and_then(|l| l.files.get(&i)?.chunks.as_ref())
        .map(|c| c.blocks.as_slice());
    let enc = Encoding {
        layer_chunks,
        ..*enc
    };
    inode_bytes(buf, &tree.nodes[i], p, i, body, fingerprint, &enc);
    if let (Some(z), Some(zp)) = (z, &p.z) {
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
}

/// The metabox inode as appended to the image.
struct Appended {
    nid: u64,
    /// The image's blocks with it.
    blocks: u64,
    /// Its last pcluster is inline (ztailpacking).
    inline_tail: bool,
}

/// Stores `data`, the metabox (whose scratch copy is `lay.box_len` bytes at
/// `lay.box_base`), as the metabox inode: a regular file, as mkfs.erofs writes it,
/// placed where the scratch region was, its inode first, then its data, compressed
/// with `mcfg` in `pcluster`-byte pclusters when given (and when that saves space).
#[allow(clippy::too_many_arguments)]
fn append_metabox(
    file: &std::fs::File,
    path: &Path,
    dir: &Path,
    data: Vec<u8>,
    lay: &Layout,
    opts: &BuildOptions,
    mcfg: Option<&crate::compress::config::Compression>,
    pcluster: u32,
) -> Result<Appended> {
    let bs = u64::from(opts.block_size);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ishare-metabox.")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "create a temporary file in", e))?;
    std::io::Write::write_all(&mut tmp, &data).map_err(|e| Error::io(tmp.path(), "write", e))?;
    let start = lay.box_base;
    file.set_len(start)
        .map_err(|e| Error::io(path, "resize", e))?;
    let tree = Tree {
        nodes: vec![Node {
            origin: crate::tree::Origin::File(tmp.path().to_path_buf()),
            kind: Kind::File,
            mode: S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            mtime: i64::try_from(opts.build_time).unwrap_or(i64::MAX),
            mtime_nsec: 0,
            nlink: 1,
            size: data.len() as u64,
            rdev: 0,
            xattrs: Vec::new(),
            archive_offset: None,
        }],
        base: std::path::PathBuf::new(),
        archive: None,
        layers: None,
    };
    let sub = BuildOptions {
        compression: mcfg.cloned(),
        metabox: None,
        metazone: Default::default(),
        chunk_size: None,
        tar_data: TarData::Copy,
        inline_data: true,
        inode_version: crate::options::InodeVersion::Auto,
        dsunit: 0,
        fsalign_blocks: 0,
        fingerprint: None,
        progress: None,
        ..opts.clone()
    };
    let spill = mcfg.map(|_| Spill::new(dir)).transpose()?;
    let z = match (mcfg, &spill) {
        (Some(c), Some(s)) => compress_special(&tree, 0, c, &sub, s, pcluster)?,
        _ => None,
    };
    let zfiles = [z];
    let body = crate::xattr::Body::default();
    let place = |meta_start: u64, data_start: Option<u64>| {
        layout(
            &tree,
            std::slice::from_ref(&body),
            &[None],
            &zfiles,
            &sub,
            meta_start,
            Prescan {
                chunks: None,
                sparse: &[],
            },
            Placement {
                data_start,
                ..Placement::default()
            },
        )
    };
    // In the free end of the metadata's last block when it fits there (as mkfs.erofs
    // puts it among the first inodes), its data where the scratch region was; else
    // the inode there too, its data after it.
    let free = lay.meta_free.next_multiple_of(1 << ISLOTBITS);
    let in_meta = place(free, Some(start / bs))?;
    let p = &in_meta.inodes[0];
    let sublay = if p.off == free && p.tail_off() + p.tail <= lay.meta_free.next_multiple_of(bs) {
        in_meta
    } else {
        place(start, None)?
    };
    // `--fsalignblks` rounds the whole image, metabox included.
    let mut blocks = sublay.blocks;
    if opts.fsalign_blocks > 1 {
        let align = opts
            .fsalign_blocks
            .checked_next_power_of_two()
            .ok_or_else(|| Error::TooLarge("--fsalignblks".into()))?;
        blocks = blocks.next_multiple_of(align);
    }
    file.set_len(blocks * bs)
        .map_err(|e| Error::io(path, "resize", e))?;
    copy_all(&DataPass {
        tree: &tree,
        layout: &sublay,
        image: file,
        image_path: path,
        block_size: bs,
        hash: false,
        progress: None,
        zfiles: &zfiles,
        spill: spill.as_ref().map(|s| &s.file),
    })?;
    let mut buf = Vec::new();
    inode_record(
        &mut buf,
        &tree,
        &sublay,
        0,
        &body,
        &[],
        zfiles[0].as_ref(),
        &sub,
        &Encoding {
            fmt: &InodeFormat::new(&sub),
            blob_map: &[],
            blob_start: 0,
            layer_chunks: None,
        },
    );
    let p = &sublay.inodes[0];
    file.write_all_at(&buf, p.off)
        .map_err(|e| Error::io(path, "write", e))?;
    // The main layout has meta_blkaddr 0 with a metabox (the root is in it).
    debug_assert_eq!(lay.meta_blkaddr, 0);
    Ok(Appended {
        nid: p.off >> ISLOTBITS,
        blocks,
        inline_tail: p.z.is_some_and(|z| z.inline),
    })
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
fn dir_layouts(tree: &Tree, bs: usize, dot_omitted: bool) -> Vec<Option<DirLayout>> {
    let ft = |n: usize| {
        FileType::from_mode(tree.nodes[n].mode).map_or(FT_UNKNOWN, FileType::dirent_type)
    };
    tree.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match &n.kind {
            Kind::Dir { entries, parent } => {
                let mut v = Vec::with_capacity(entries.len() + 2);
                // `-E dot-omitted`: the kernel makes up "." itself.
                if !dot_omitted {
                    v.push(DirEntry {
                        name: b".".to_vec(),
                        node: i,
                        file_type: FT_DIR,
                    });
                }
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

/// What an inode's bytes depend on besides its node and placement.
struct Encoding<'a> {
    fmt: &'a InodeFormat,
    /// A chunk-based file's map (empty for other inodes).
    blob_map: &'a [ChunkAt],
    /// First block of the chunk blob in the image.
    blob_start: u64,
    /// Rebuild mode: each chunk's first block in the file's layer (`u32::MAX`: a
    /// hole); set by `inode_record`.
    layer_chunks: Option<&'a [u32]>,
}

/// Serializes an inode with its xattrs and chunk map.
fn inode_bytes(
    out: &mut Vec<u8>,
    n: &Node,
    p: &Placed,
    index: usize,
    body: &crate::xattr::Body,
    fingerprint: &[u8],
    enc: &Encoding<'_>,
) {
    let Encoding {
        fmt,
        blob_map,
        blob_start,
        layer_chunks,
    } = *enc;
    let i_u = match (&n.kind, &p.chunks) {
        (Kind::Special, _) => n.rdev,
        (_, Some(c)) => u32::from(c.format),
        // Compressed: the blocks the data takes (st_blocks).
        _ if p.z.is_some() => p.nblocks as u32,
        // An empty file was never given a data address: mkfs.erofs leaves 0.
        (Kind::File, None) if p.size == 0 => 0,
        _ => p.startblk,
    };
    // i_ino is informational (32-bit stat); the serial number, as mkfs.erofs.
    let ino = U32::new((index as u32).wrapping_add(1));
    let mut i_format = p.layout << I_DATALAYOUT_BIT;
    if fmt.dot_omitted && matches!(n.kind, Kind::Dir { .. }) {
        i_format |= 1 << I_DOT_OMITTED_BIT;
    }
    // 48-bit: an uncompressed flat inode without data blocks has the null address,
    // whose upper 16 bits go in `i_nb` where that is not the link count (extended
    // inodes), as mkfs.erofs writes it.
    let null_hi = fmt.wide
        && i_u == NULL_STARTBLK
        && p.chunks.is_none()
        && p.z.is_none()
        && !matches!(n.kind, Kind::Special);
    if p.extended {
        let d = InodeExtended {
            i_format: U16::new(INODE_LAYOUT_EXTENDED | i_format),
            i_xattr_icount: U16::new(body.icount()),
            i_mode: U16::new(n.mode),
            i_nb: U16::new(if null_hi { u16::MAX } else { 0 }),
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
        // Fits were checked by the layout; without the 48-bit layout the mtime is
        // the epoch, offset 0.
        let d = InodeCompact {
            i_format: U16::new(INODE_LAYOUT_COMPACT | i_format),
            i_xattr_icount: U16::new(body.icount()),
            i_mode: U16::new(n.mode),
            i_nb: U16::new(n.nlink as u16),
            i_size: U32::new(p.size as u32),
            i_mtime: U32::new(fmt.compact_mtime(n.mtime, n.mtime_nsec).unwrap_or(0)),
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
                ChunkTarget::Blob { device } => match blob_map[k as usize] {
                    // Holes are the null address on the primary device, as mkfs.erofs.
                    ChunkAt::Hole => (0, u32::MAX),
                    ChunkAt::At { blk, .. } if device => (1, blk as u32),
                    ChunkAt::At { blk, .. } => (0, (blob_start + blk) as u32),
                },
                ChunkTarget::Device(start) => (1, (start + k * c.blocks_per_chunk) as u32),
                ChunkTarget::Hole => (0, u32::MAX),
                // Checked against the layer by `rebuild::chunks`.
                ChunkTarget::Layer(l) => match layer_chunks.map(|c| c[k as usize]) {
                    Some(u32::MAX) | None => (0, u32::MAX),
                    Some(b) => (l + 1, b),
                },
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
struct Packing<'a> {
    /// Byte offset of the long prefix table: in the image, or in the packed inode.
    prefix_off: u64,
    plain_prefixes: bool,
    packed_nid: Option<u64>,
    /// Some pcluster is shared or partly referenced.
    dedupe: bool,
    /// The image's compression settings (with the metabox's algorithm).
    compression: Option<&'a crate::compress::config::Compression>,
}

fn superblock(
    opts: &BuildOptions,
    bits: u8,
    tree: &Tree,
    lay: &Layout,
    prefixes: &Prefixes,
    xplan: &crate::xattr::Plan,
    pk: Packing<'_>,
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
    if let Some(c) = pk.compression {
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
    let wide = opts.format_48bit || opts.dot_omitted;
    if wide {
        incompat |= FEATURE_INCOMPAT_48BIT;
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
        epoch: U64::new(crate::wide::epoch(opts, wide)),
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
        build_time: U32::new(crate::wide::build_time(opts, wide)),
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
