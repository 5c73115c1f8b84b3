//! `ishare report`: what a set of images would share under `inode_share`, worked out
//! from their metadata before anyone mounts them.
//!
//! Three steps, so the arithmetic stays free of I/O and can be tested on its own:
//!
//! 1. [`scan`] walks one image (metadata only): every regular file once per inode (a
//!    hard link is one page cache copy), its size and its fingerprint when the kernel
//!    would share by it (the rule of [`crate::sharing`]: a value 1 byte to one block
//!    long); an unusable value is noted, an xattr or inode the reader cannot parse is
//!    an error naming the image and the path.
//! 2. [`hash_contents`] hashes (SHA-256, the digest `mkfs.erofs --xattr-inode-digest`
//!    and `ishare mkfs` write) the files that have no fingerprint, or every file with
//!    `verify`, on all cores, reading past the page cache (see [`crate::direct`]) so a
//!    report run before a measurement does not disturb it.
//! 3. [`analyze`] turns the scans into figures ([`Report`]), no I/O.
//!
//! The sharing key is the kernel's: the same fingerprint value and the same size (the
//! domain is left out: a report is about one domain). Files without a usable
//! fingerprint are kept once per image, as both the kernel and `ishare mount` do; what
//! they would save if their images were rebuilt with fingerprints is reported apart
//! (by content hash). Page cache is counted in whole blocks of each image's block size.
//! Two files of one image with the same key share too (counted once), but only
//! content held by another listed image counts as an image's `shared_bytes`.
//!
//! Prediction of `ishare mount` (which shares a plain with a compressed copy); the
//! kernel's own `inode_share` also needs both copies to be read the same way
//! (compressed or not), which this report does not model.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use ishare_erofs::{FileType, Image, OpenOptions, Reached, WalkOrder, WalkStep};
use rayon::prelude::*;
use serde::Serialize;

use crate::content::{hash_content, sha256_digest};
use crate::direct::DirectReader;
use crate::error::{Error, Result};
use crate::sharing::usable_fingerprint;

/// One regular file (inode) of a scanned image.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Its first path in the walk.
    pub path: String,
    /// Its NID (to read it again for hashing).
    pub nid: u64,
    /// Size in bytes.
    pub size: u64,
    /// The fingerprint value the kernel shares it by, if usable.
    pub fingerprint: Option<Vec<u8>>,
    /// The SHA-256 of its content, once hashed.
    pub digest: Option<[u8; 32]>,
    /// It was to be hashed but is larger than its image's [`hash_limit`].
    pub too_large: bool,
}

/// A fingerprint xattr the kernel ignores (empty or longer than a block).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnusableFingerprint {
    /// The image.
    pub image: String,
    /// The file.
    pub path: String,
    /// Length of the value in bytes.
    pub length: usize,
}

/// What [`scan`] found in one image.
#[derive(Debug, Clone)]
pub struct ImageScan {
    /// The image's name (its path as given).
    pub path: String,
    /// Its block size: page cache is counted in whole blocks of it.
    pub block_size: u32,
    /// The superblock names a fingerprint xattr (`COMPAT_ISHARE_XATTRS`).
    pub has_fingerprints: bool,
    /// Regular files, once per inode, in walk order.
    pub files: Vec<ScannedFile>,
    /// Fingerprint values the kernel would not use.
    pub unusable: Vec<UnusableFingerprint>,
    /// Files larger than this are not hashed (see [`hash_limit`]).
    pub hash_limit: u64,
}

/// How many times its image (and devices) a file may be before [`hash_contents`]
/// leaves it unhashed: data past that can only be holes or extreme compression, and a
/// hostile image can claim a hole of 2^63 bytes, which would take centuries to hash.
pub const HASH_LIMIT_FACTOR: u64 = 16;

/// The largest file [`hash_contents`] hashes in `img`: [`HASH_LIMIT_FACTOR`] times its
/// image file and devices, and at least 1 GiB.
pub fn hash_limit(img: &Image) -> u64 {
    let bs = u64::from(img.superblock().block_size());
    let devices = img
        .devices()
        .iter()
        .map(|d| d.blocks.saturating_mul(bs))
        .fold(0u64, u64::saturating_add);
    img.size()
        .saturating_add(devices)
        .saturating_mul(HASH_LIMIT_FACTOR)
        .max(1 << 30)
}

impl ImageScan {
    /// The files [`hash_contents`] hashes: non-empty ones without a fingerprint, or
    /// all non-empty ones with `verify`.
    fn needs_hash(&self, verify: bool) -> impl Iterator<Item = (usize, &ScannedFile)> {
        self.files
            .iter()
            .enumerate()
            .filter(move |(_, f)| f.size > 0 && f.digest.is_none())
            .filter(move |(_, f)| verify || f.fingerprint.is_none())
            .filter(|(_, f)| f.size <= self.hash_limit)
    }

    /// How many files (and bytes) [`hash_contents`] will hash in this image.
    pub fn to_hash(&self, verify: bool) -> (u64, u64) {
        self.needs_hash(verify)
            .fold((0, 0), |(n, b), (_, f)| (n + 1, b + f.size))
    }
}

/// Opens every image, giving each the extra devices its device table asks for: the
/// `devices` are taken in order, as many for each image (in the order given) as its
/// table has entries. Without any `devices`, images read their blobs through the
/// unified address space, as the kernel does.
pub fn open_images(paths: &[PathBuf], devices: &[PathBuf]) -> Result<Vec<Image>> {
    let mut left = devices;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let img = Image::open(path).map_err(Error::Image)?;
        let wanted = img.devices().len();
        if devices.is_empty() || wanted == 0 {
            out.push(img);
            continue;
        }
        if left.len() < wanted {
            return Err(Error::BadArgument(format!(
                "{}: its device table has {wanted} devices, {} --device left for it",
                path.display(),
                left.len()
            )));
        }
        let opts = OpenOptions {
            devices: left[..wanted].to_vec(),
        };
        left = &left[wanted..];
        out.push(Image::open_with(path, &opts).map_err(Error::Image)?);
    }
    if !left.is_empty() {
        return Err(Error::BadArgument(format!(
            "{} --device given beyond what the images' device tables list",
            left.len()
        )));
    }
    Ok(out)
}

/// Walks one image's tree, metadata only.
pub fn scan(img: &Image) -> Result<ImageScan> {
    let block_size = img.superblock().block_size();
    let has_fingerprints = img.fingerprint_prefix().is_some();
    let mut out = ImageScan {
        path: img.name().to_string(),
        block_size,
        has_fingerprints,
        files: Vec::new(),
        unusable: Vec::new(),
        hash_limit: hash_limit(img),
    };
    let root = img.root().map_err(|e| Error::Image(e.at_path("/")))?;
    for step in img.walk(root, WalkOrder::DirectoryByDirectory) {
        let WalkStep::Entry(e) = step.map_err(Error::Image)? else {
            continue;
        };
        if let Some(err) = e.cycle_error() {
            return Err(Error::Image(err));
        }
        if e.reached != Reached::First || e.inode.file_type != FileType::Regular {
            continue;
        }
        let path = e.path_str();
        let value = if has_fingerprints && e.inode.size > 0 {
            img.fingerprint(&e.inode)
                .map_err(|er| Error::Image(er.at_path(path.clone())))?
        } else {
            None
        };
        let fingerprint = match value {
            Some(v) => match usable_fingerprint(block_size, v) {
                Ok(v) => Some(v),
                Err(length) => {
                    out.unusable.push(UnusableFingerprint {
                        image: out.path.clone(),
                        path: path.clone(),
                        length,
                    });
                    None
                }
            },
            None => None,
        };
        out.files.push(ScannedFile {
            path,
            nid: e.inode.nid,
            size: e.inode.size,
            fingerprint,
            digest: None,
            too_large: false,
        });
    }
    Ok(out)
}

/// [`scan`]s every image, on all cores.
pub fn scan_all(images: &[Image]) -> Result<Vec<ImageScan>> {
    images.par_iter().map(scan).collect()
}

/// Hashes the content of the files each scan needs hashed (see
/// [`ImageScan::to_hash`]), on all cores; `images` and `scans` in the same order.
pub fn hash_contents(images: &[Image], scans: &mut [ImageScan], verify: bool) -> Result<()> {
    let mut jobs: Vec<(usize, usize, u64)> = scans
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.needs_hash(verify).map(move |(j, f)| (i, j, f.size)))
        .collect();
    // Largest first, so one big file does not finish alone at the end.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.2));
    let direct = DirectReader::default();
    let scans_ro: &[ImageScan] = scans;
    let digests: Vec<(usize, usize, [u8; 32])> = jobs
        .par_iter()
        .map(|&(i, j, _)| {
            let img = &images[i];
            let file = &scans_ro[i].files[j];
            let inode = img
                .inode(file.nid)
                .map_err(|e| Error::Image(e.at_path(file.path.clone())))?;
            let d = hash_content(img, &direct, &inode).map_err(|e| match e {
                Error::Image(e) => Error::Image(e.at_path(file.path.clone())),
                other => other,
            })?;
            Ok((i, j, d))
        })
        .collect::<Result<_>>()?;
    for (i, j, d) in digests {
        scans[i].files[j].digest = Some(d);
    }
    for s in scans.iter_mut() {
        let limit = s.hash_limit;
        for f in &mut s.files {
            f.too_large =
                f.size > limit && f.digest.is_none() && (verify || f.fingerprint.is_none());
        }
    }
    Ok(())
}

/// One file of a listed image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileRef {
    /// The image.
    pub image: String,
    /// The path in it.
    pub path: String,
}

/// Figures of one image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageFigures {
    /// The image.
    pub path: String,
    /// Regular files (inodes: hard links count once).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their bytes in whole blocks: what a mount keeps in page cache once all is read.
    pub page_bytes: u64,
    /// Bytes of files whose content another listed image also holds and shares
    /// (same fingerprint and size).
    pub shared_bytes: u64,
    /// The image's block size.
    pub block_size: u32,
    /// The image has fingerprints at all.
    pub fingerprints: bool,
    /// Non-empty files without a usable fingerprint (kept per image).
    pub files_without_fingerprint: u64,
    /// Like `shared_bytes`, by content hash, as if every image had fingerprints.
    pub shared_bytes_if_fingerprinted: u64,
}

/// Figures of the whole set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetFigures {
    /// Bytes of all regular files of all images.
    pub bytes: u64,
    /// Page cache holding every image's files once per image (mounts without sharing).
    pub page_cache_unshared: u64,
    /// Page cache holding each distinct (fingerprint, size) once, and files without a
    /// fingerprint once per image (mounts with `inode_share`).
    pub page_cache_shared: u64,
    /// `page_cache_unshared - page_cache_shared`.
    pub saving_bytes: u64,
    /// The saving in percent of `page_cache_unshared` (two decimals).
    pub saving_percent: f64,
    /// `page_cache_shared` if every image were rebuilt with fingerprints (distinct
    /// contents by SHA-256 and size).
    pub page_cache_shared_if_fingerprinted: u64,
}

/// One content several images hold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SharedContent {
    /// Its fingerprint, as `sha256:<hex>` or hex.
    pub fingerprint: String,
    /// Its size.
    pub size: u64,
    /// How many images hold it.
    pub images: usize,
    /// One path per image (the first in name order).
    pub paths: Vec<FileRef>,
}

/// A file of a fingerprint held at several sizes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SizedFile {
    /// The image.
    pub image: String,
    /// The path in it (the first in name order for this image and size).
    pub path: String,
    /// Its size.
    pub size: u64,
}

/// A fingerprint held by files of different sizes: the kernel shares only files of
/// the same size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SizeConflict {
    /// The fingerprint.
    pub fingerprint: String,
    /// One file per image and size.
    pub files: Vec<SizedFile>,
}

/// Hashing done for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Hashed {
    /// Files hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What [`analyze`] works out.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Per image, in the order given.
    pub images: Vec<ImageFigures>,
    /// The whole set.
    pub set: SetFigures,
    /// The largest contents held by more than one image, largest first.
    pub top_shared: Vec<SharedContent>,
    /// Fingerprints held at different sizes.
    pub size_conflicts: Vec<SizeConflict>,
    /// Images without fingerprints: they cannot share until rebuilt.
    pub images_without_fingerprints: Vec<String>,
    /// Fingerprint values the kernel ignores (the files stay unshared).
    pub unusable_fingerprints: Vec<UnusableFingerprint>,
    /// With `verify`: `sha256:` fingerprints their file's content does not match
    /// (`ishare mount` serves such files their own bytes, unshared).
    pub fingerprint_mismatches: Vec<FileRef>,
    /// Content hashed because fingerprints were missing (or `verify`).
    pub hashed: Hashed,
    /// Files that were to be hashed but are larger than [`HASH_LIMIT_FACTOR`] times
    /// their image (holes or a hostile size): not hashed, counted as their own content.
    pub not_hashed: Vec<SizedFile>,
}

/// Bytes of `size` in whole blocks of `block`.
pub fn whole_blocks(size: u64, block: u32) -> u64 {
    size.div_ceil(u64::from(block)) * u64::from(block)
}

/// A fingerprint for people: `sha256:<hex>` or the value in hex.
pub fn show_fingerprint(v: &[u8]) -> String {
    match sha256_digest(v) {
        Some(d) => format!("sha256:{}", hex::encode(d)),
        None => hex::encode(v),
    }
}

/// A (value, size) key and where it occurs.
#[derive(Default)]
struct Holders<'a> {
    /// Block size of the first image holding it (its page cache copy is that one's).
    block: u32,
    /// For each image holding it, its first path in name order.
    paths: BTreeMap<usize, &'a str>,
}

/// A fingerprint value (borrowed from the scan, or made from a hash) and a size.
type Key<'a> = (Cow<'a, [u8]>, u64);

/// The keys of one file: the one `inode_share` shares it by (if any) and its content
/// (fingerprint, else `sha256:` of its hash) as if its image had fingerprints.
fn keys(f: &ScannedFile, mismatch: bool) -> (Option<Key<'_>>, Option<Key<'_>>) {
    if f.size == 0 {
        return (None, None);
    }
    let share = f
        .fingerprint
        .as_deref()
        .filter(|_| !mismatch)
        .map(|v| (Cow::Borrowed(v), f.size));
    let content = match (&f.digest, &share) {
        (_, Some(k)) => Some(k.clone()),
        (Some(d), None) => Some((Cow::Owned([b"sha256:".as_slice(), d].concat()), f.size)),
        (None, None) => None,
    };
    (share, content)
}

/// With `verify`, a `sha256:` fingerprint the file's hash disagrees with.
fn is_mismatch(f: &ScannedFile) -> bool {
    match (&f.fingerprint, &f.digest) {
        (Some(v), Some(d)) => sha256_digest(v).is_some_and(|want| &want != d),
        _ => false,
    }
}

fn tally<'a>(
    map: &mut HashMap<Key<'a>, Holders<'a>>,
    key: Key<'a>,
    image: usize,
    block: u32,
    path: &'a str,
) {
    let h = map.entry(key).or_insert_with(|| Holders {
        block,
        ..Holders::default()
    });
    let p = h.paths.entry(image).or_insert(path);
    if path < *p {
        *p = path;
    }
}

/// The page cache of one copy of each key, plus `rest`.
fn page_cache(map: &HashMap<Key<'_>, Holders<'_>>, rest: u64) -> u64 {
    map.iter()
        .map(|((_, size), h)| whole_blocks(*size, h.block))
        .sum::<u64>()
        + rest
}

/// Works out the figures of the scanned (and hashed) images; `top` is how many
/// shared contents to list.
pub fn analyze(scans: &[ImageScan], top: usize) -> Report {
    let mut share: HashMap<Key<'_>, Holders<'_>> = HashMap::new();
    let mut content: HashMap<Key<'_>, Holders<'_>> = HashMap::new();
    // Each file's keys, for the per-image pass.
    let mut file_keys: Vec<Vec<(Option<Key<'_>>, Option<Key<'_>>)>> = Vec::new();
    let mut unkeyed_pages = 0u64; // files without a share key, once per image
    let mut uncontented_pages = 0u64; // files without any content key (empty)
    let mut mismatches = Vec::new();
    let mut hashed = Hashed::default();
    for (i, s) in scans.iter().enumerate() {
        let mut image_keys = Vec::with_capacity(s.files.len());
        for f in &s.files {
            if f.digest.is_some() {
                hashed.files += 1;
                hashed.bytes += f.size;
            }
            let mismatch = is_mismatch(f);
            if mismatch {
                mismatches.push(FileRef {
                    image: s.path.clone(),
                    path: f.path.clone(),
                });
            }
            let (sk, ck) = keys(f, mismatch);
            let pages = whole_blocks(f.size, s.block_size);
            match &sk {
                Some(k) => tally(&mut share, k.clone(), i, s.block_size, &f.path),
                None => unkeyed_pages += pages,
            }
            match &ck {
                Some(k) => tally(&mut content, k.clone(), i, s.block_size, &f.path),
                None => uncontented_pages += pages,
            }
            image_keys.push((sk, ck));
        }
        file_keys.push(image_keys);
    }
    let held_elsewhere = |map: &HashMap<Key<'_>, Holders<'_>>, key: &Option<Key<'_>>, i: usize| {
        key.as_ref()
            .and_then(|k| map.get(k))
            .is_some_and(|h| h.paths.keys().any(|&j| j != i))
    };
    let images: Vec<ImageFigures> = scans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut fig = ImageFigures {
                path: s.path.clone(),
                files: s.files.len() as u64,
                bytes: 0,
                page_bytes: 0,
                shared_bytes: 0,
                block_size: s.block_size,
                fingerprints: s.has_fingerprints,
                files_without_fingerprint: 0,
                shared_bytes_if_fingerprinted: 0,
            };
            for (f, (sk, ck)) in s.files.iter().zip(&file_keys[i]) {
                fig.bytes += f.size;
                fig.page_bytes += whole_blocks(f.size, s.block_size);
                if f.size > 0 && sk.is_none() {
                    fig.files_without_fingerprint += 1;
                }
                if held_elsewhere(&share, sk, i) {
                    fig.shared_bytes += f.size;
                }
                if held_elsewhere(&content, ck, i) {
                    fig.shared_bytes_if_fingerprinted += f.size;
                }
            }
            fig
        })
        .collect();

    let unshared: u64 = images.iter().map(|f| f.page_bytes).sum();
    let shared = page_cache(&share, unkeyed_pages);
    let saving = unshared.saturating_sub(shared);
    let set = SetFigures {
        bytes: images.iter().map(|f| f.bytes).sum(),
        page_cache_unshared: unshared,
        page_cache_shared: shared,
        saving_bytes: saving,
        saving_percent: if unshared == 0 {
            0.0
        } else {
            (saving as f64 * 10000.0 / unshared as f64).round() / 100.0
        },
        page_cache_shared_if_fingerprinted: page_cache(&content, uncontented_pages),
    };

    let name = |i: usize| scans[i].path.clone();
    let refs = |h: &Holders| -> Vec<FileRef> {
        h.paths
            .iter()
            .map(|(&i, p)| FileRef {
                image: name(i),
                path: p.to_string(),
            })
            .collect()
    };
    let mut multi: Vec<(&Key<'_>, &Holders<'_>)> =
        share.iter().filter(|(_, h)| h.paths.len() > 1).collect();
    multi.sort_by(|a, b| b.0.1.cmp(&a.0.1).then_with(|| a.0.0.cmp(&b.0.0)));
    let top_shared = multi
        .into_iter()
        .take(top)
        .map(|((v, size), h)| SharedContent {
            fingerprint: show_fingerprint(v),
            size: *size,
            images: h.paths.len(),
            paths: refs(h),
        })
        .collect();

    // Fingerprint -> the sizes it is held at, with their holders.
    let mut by_value: BTreeMap<&[u8], Vec<(u64, &Holders<'_>)>> = BTreeMap::new();
    for ((v, size), h) in &share {
        by_value.entry(v).or_default().push((*size, h));
    }
    let size_conflicts = by_value
        .into_iter()
        .filter(|(_, sizes)| sizes.len() > 1)
        .map(|(v, mut sizes)| {
            sizes.sort_by_key(|(s, _)| *s);
            let files = sizes
                .iter()
                .flat_map(|(size, h)| {
                    h.paths.iter().map(|(&i, p)| SizedFile {
                        image: name(i),
                        path: p.to_string(),
                        size: *size,
                    })
                })
                .collect();
            SizeConflict {
                fingerprint: show_fingerprint(v),
                files,
            }
        })
        .collect();

    Report {
        images,
        set,
        top_shared,
        size_conflicts,
        images_without_fingerprints: scans
            .iter()
            .filter(|s| !s.has_fingerprints)
            .map(|s| s.path.clone())
            .collect(),
        unusable_fingerprints: scans.iter().flat_map(|s| s.unusable.clone()).collect(),
        fingerprint_mismatches: mismatches,
        hashed,
        not_hashed: scans
            .iter()
            .flat_map(|s| {
                s.files.iter().filter(|f| f.too_large).map(|f| SizedFile {
                    image: s.path.clone(),
                    path: f.path.clone(),
                    size: f.size,
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, fp: Option<&[u8]>, digest: Option<u8>) -> ScannedFile {
        ScannedFile {
            path: path.into(),
            nid: 0,
            size,
            fingerprint: fp.map(<[u8]>::to_vec),
            digest: digest.map(|b| [b; 32]),
            too_large: false,
        }
    }

    fn image(path: &str, fps: bool, files: Vec<ScannedFile>) -> ImageScan {
        ImageScan {
            path: path.into(),
            block_size: 4096,
            has_fingerprints: fps,
            files,
            unusable: Vec::new(),
            hash_limit: 1 << 30,
        }
    }

    #[test]
    fn figures_of_two_images_and_one_without_fingerprints() {
        let a = image(
            "a",
            true,
            vec![
                file("/x", 5000, Some(b"X"), None),
                file("/y", 10, Some(b"Y"), None),
                file("/x2", 5000, Some(b"X"), None), // same content inside one image
                file("/e", 0, None, None),
            ],
        );
        let b = image(
            "b",
            true,
            vec![
                file("/x", 5000, Some(b"X"), None),
                file("/y", 11, Some(b"Y"), None), // same fingerprint, another size
            ],
        );
        // Same content as a's /x by hash, but no fingerprint: not shared now.
        let sha_x = [b"sha256:".as_slice(), &[7u8; 32]].concat();
        let mut c = image("c", false, vec![file("/x", 5000, None, Some(7))]);
        let mut a2 = a.clone();
        a2.files[0].fingerprint = Some(sha_x.clone());
        a2.files[2].fingerprint = Some(sha_x);
        c.files.push(file("/z", 1, None, Some(9)));
        let r = analyze(&[a2, b, c], 10);
        assert_eq!(r.images[0].files, 4);
        assert_eq!(r.images[0].bytes, 10010);
        assert_eq!(r.images[0].page_bytes, 8192 + 4096 + 8192);
        assert_eq!(r.images[0].shared_bytes, 0); // b's /x has another fingerprint
        assert_eq!(r.images[2].shared_bytes, 0);
        assert_eq!(r.images[2].shared_bytes_if_fingerprinted, 5000);
        assert_eq!(r.images[0].shared_bytes_if_fingerprinted, 10000);
        assert_eq!(r.set.page_cache_unshared, 20480 + 12288 + 12288);
        // Shared: sha_x once, Y@10, X@5000 (b), Y@11, c's two files per image.
        assert_eq!(
            r.set.page_cache_shared,
            8192 + 4096 + 8192 + 4096 + 8192 + 4096
        );
        assert_eq!(r.images_without_fingerprints, vec!["c".to_string()]);
        assert_eq!(r.size_conflicts.len(), 1);
        assert_eq!(r.size_conflicts[0].files.len(), 2);
        assert!(r.top_shared.is_empty());
        assert_eq!(r.hashed.files, 2);
    }

    #[test]
    fn shared_content_is_listed_largest_first_and_saving_follows() {
        let a = image(
            "a",
            true,
            vec![
                file("/big", 9000, Some(b"B"), None),
                file("/s", 100, Some(b"S"), None),
            ],
        );
        let b = image(
            "b",
            true,
            vec![
                file("/other/big", 9000, Some(b"B"), None),
                file("/s", 100, Some(b"S"), None),
                file("/own", 1, Some(b"O"), None),
            ],
        );
        let r = analyze(&[a, b], 1);
        assert_eq!(r.images[1].shared_bytes, 9100);
        assert_eq!(r.set.page_cache_unshared, 12288 * 2 + 4096 * 3);
        assert_eq!(r.set.page_cache_shared, 12288 + 4096 * 2);
        assert_eq!(r.set.saving_bytes, 12288 + 4096);
        assert_eq!(r.set.saving_percent, 44.44); // 16384 of 36864
        assert_eq!(r.top_shared.len(), 1);
        assert_eq!(r.top_shared[0].size, 9000);
        assert_eq!(r.top_shared[0].paths[1].path, "/other/big");
    }

    #[test]
    fn verify_mismatch_is_listed_and_not_shared() {
        let fp = [b"sha256:".as_slice(), &[1u8; 32]].concat();
        let a = image("a", true, vec![file("/f", 10, Some(&fp), Some(1))]);
        let b = image("b", true, vec![file("/f", 10, Some(&fp), Some(2))]);
        let r = analyze(&[a, b], 5);
        assert_eq!(r.fingerprint_mismatches.len(), 1);
        assert_eq!(r.fingerprint_mismatches[0].image, "b");
        assert_eq!(r.images[0].shared_bytes, 0);
        assert_eq!(r.set.page_cache_shared, 8192);
    }
}
