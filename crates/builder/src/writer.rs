//! The build itself: scan, plan, copy data, serialize metadata, and commit the image
//! by renaming a temporary file, so a failed build leaves nothing under the name.

use std::os::unix::fs::FileExt;
use std::path::Path;

use ishare_erofs::FileType;
use ishare_erofs::format::*;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::compress::config::compr_cfgs;
use crate::compress::frag::merge;
use crate::compress::spill::Spill;
use crate::compress::{compress_files, compress_packed, compress_special};
use crate::data::{DataPass, copy_all};
use crate::dir::{DirEntry, DirLayout};
use crate::error::{Error, Result};
use crate::input::dir::scan;
use crate::input::oci::OciSource;
use crate::input::tar::TarInput;
use crate::layout::{Layout, Placement, Prescan, layout};
use crate::options::{BuildOptions, TarData};
use crate::output::{MetaWriter, Output, commit, create_temp};
use crate::serialize::{DEVT_SLOT, Encoding, Packing, device_slot, inode_record, superblock};
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
pub(crate) fn finish(tree: Tree, image: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    finish_at(tree, image, opts, None)
}

/// Like [`finish`]; with `append = Some(n)`, the image is written in place after its
/// first `n` blocks, which are left as they are (an incremental build in place):
/// shared xattrs, prefixes, metadata and data all go from block `n` on, and the
/// superblock, written last, makes them the image. The caller has checked that
/// nothing else is needed in block 0 (no device table, no compression configs,
/// no metabox, no metadata zone, no `--offset`).
pub(crate) fn finish_at(
    mut tree: Tree,
    image: &Path,
    opts: &BuildOptions,
    append: Option<u64>,
) -> Result<BuildReport> {
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
        Some(l) if l.data == crate::rebuild::mode::RebuildData::BlobIndex => l.images.len() as u64,
        _ => u64::from(opts.tar_data == TarData::Index || opts.blob_device.is_some()),
    };
    let devt = devt_slots > 0;
    let shared_start = if let Some(n) = append {
        n.checked_mul(bs)
            .ok_or_else(|| Error::TooLarge("the image to add to".into()))?
    } else if devt {
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
    if !plain_prefixes.is_empty() && prefix_off / 4 > u64::from(u32::MAX) {
        return Err(Error::TooLarge(
            "the long xattr prefix table lies past 16 GiB, beyond the superblock's reach".into(),
        ));
    }
    let real_nodes = tree.nodes.len();

    let out = match append {
        Some(_) => Output::in_place(image)?,
        None => Output::temp(image)?,
    };
    let file = out.as_file();
    let dir = out.path().parent().unwrap_or(Path::new("."));
    let (mut zfiles, spill, mut packed) = match &opts.compression {
        Some(cfg) => {
            let spill = Spill::new(dir)?;
            let mut z = compress_files(&tree, cfg, opts, &spill, prefixes.fingerprint.is_some())?;
            let in_packed = if frags { &prefix_table[..] } else { &[][..] };
            let packed = merge(&tree, &mut z, cfg, &spill, in_packed, dir)?;
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
            // The inodes start at the block after the long prefix table, as with
            // mkfs.erofs (Linux 6.18 misreads the inline xattrs of some inodes in the
            // table's block when they are compact, -E 48bit).
            let start = if boxed_prefixes {
                prefix_table
                    .len()
                    .next_multiple_of(opts.block_size as usize)
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
    // In place, the configs there are the base's, the same (`rebuild::in_place_start`).
    if append.is_none() {
        w.write(&zcfgs, SUPER_OFFSET + sb_size)?;
    }
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
    w.flush()?;
    // In place, everything the superblock will point at is made durable first: a
    // crash up to here leaves the old superblock, which describes the old image in
    // its untouched blocks (the new bytes after them are ignored), and the
    // superblock itself is one write of a few hundred bytes inside one sector.
    out.seal()?;
    let mut sb_bytes = sb.as_bytes()[..sb_size as usize].to_vec();
    if opts.sb_checksum {
        // The checksum covers the rest of the superblock's block, metadata included
        // (in place, the old image's bytes there), so it is computed from the
        // finished bytes with the new superblock laid over them.
        let end = if bs > SUPER_OFFSET {
            bs
        } else {
            SUPER_OFFSET + bs
        };
        let mut first = vec![0u8; end as usize];
        file.read_exact_at(&mut first, 0)
            .map_err(|e| Error::io(out.path(), "read back", e))?;
        first[SUPER_OFFSET as usize..][..sb_bytes.len()].copy_from_slice(&sb_bytes);
        let crc = ishare_erofs::superblock_checksum(&first, bits).expect("block 0 was read");
        sb_bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    file.write_all_at(&sb_bytes, SUPER_OFFSET)
        .map_err(|e| Error::io(out.path(), "write", e))?;
    if let Some(to) = &opts.block_map {
        crate::blockmap::write(&tree, &lay, bs, to)?;
    }
    out.commit(image, opts.offset)?;
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
