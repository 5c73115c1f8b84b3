//! `Image::nid_after`: following the inodes in their on-disk order from one inode to
//! the next reaches every inode of an uncompressed image that mkfs.erofs 1.9.4 wrote
//! (plain, inline tails, chunk maps and chunk indexes, 512-byte and 4 KiB blocks), so
//! reading files ahead in that order sees them all; compressed inodes give `None`.

use std::collections::BTreeSet;
use std::process::Command;

use ishare_erofs::{DataLayout, FileType, Image, WalkOrder, WalkStep};
use ishare_testkit::image::{build_seeds, open};
use ishare_testkit::tools::mkfs_194;
use ishare_testkit::tree::{Scale, compressible, reader_tree};

/// Every inode reachable from the root: (NID, layout, type).
fn inodes(img: &Image) -> Vec<(u64, DataLayout, FileType)> {
    let root = img.root().expect("root");
    let mut all = vec![(root.nid, root.layout, root.file_type)];
    for step in img.walk(root, WalkOrder::DepthFirst) {
        if let WalkStep::Entry(e) = step.expect("walk") {
            all.push((e.inode.nid, e.inode.layout, e.inode.file_type));
        }
    }
    all.sort_by_key(|a| a.0);
    all.dedup_by_key(|a| a.0);
    all
}

/// The NIDs visited going from `first` to the next inode on disk, over padding to the
/// next block where a slot holds no inode, up to `last`.
fn chain(img: &Image, first: u64, last: u64) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut nid = first;
    while nid <= last {
        nid = match img.inode(nid) {
            Ok(ino) => {
                seen.insert(nid);
                match img.nid_after(&ino) {
                    Some(next) => {
                        assert!(next > nid, "NID {nid}: next {next} is not past it");
                        next
                    }
                    None => img.nid_at_next_block(nid).expect("next block"),
                }
            }
            Err(_) => img.nid_at_next_block(nid).expect("next block"),
        };
    }
    seen
}

#[test]
fn the_inode_after_each_one_on_disk_reaches_them_all() {
    let specs: Vec<(&'static str, &[&str])> = vec![
        ("4k", &[]),
        ("512", &["-b512"]),
        ("chunk-map", &["--chunksize=8192"]),
        (
            "chunk-indexes",
            &["--chunksize=8192", "-Eforce-chunk-indexes"],
        ),
    ];
    let mkfs = specs
        .iter()
        .map(|(name, args)| {
            let mut cmd = Command::new(mkfs_194());
            cmd.args(["--quiet", "-T0", "--xattr-inode-digest"])
                .args(*args);
            (*name, cmd)
        })
        .collect();
    let mut tree = reader_tree();
    compressible(&mut tree, "z", 0xC0DE, Scale::Small);
    let mut lz4 = Command::new(mkfs_194());
    lz4.args(["--quiet", "-T0", "-zlz4"]);
    let mut seeds = build_seeds(&tree, mkfs);
    seeds.extend(build_seeds(&tree, vec![("lz4", lz4)]));
    for seed in seeds {
        let img = open(seed.name, seed.bytes).expect("open");
        let all = inodes(&img);
        let compressed = all.iter().filter(|a| {
            matches!(
                a.1,
                DataLayout::CompressedFull | DataLayout::CompressedCompact
            )
        });
        if seed.name == "lz4" {
            let mut n = 0;
            for a in compressed {
                n += 1;
                assert_eq!(img.nid_after(&img.inode(a.0).unwrap()), None);
            }
            assert!(n > 0, "the lz4 image has compressed inodes");
            continue;
        }
        assert_eq!(compressed.count(), 0, "{}", seed.name);
        let layouts: BTreeSet<_> = all.iter().map(|a| format!("{:?}", a.1)).collect();
        if seed.name.starts_with("chunk") {
            assert!(layouts.contains("ChunkBased"), "{}: {layouts:?}", seed.name);
        } else {
            assert!(layouts.contains("FlatInline"), "{}: {layouts:?}", seed.name);
        }
        let (first, last) = (all[0].0, all[all.len() - 1].0);
        let seen = chain(&img, first, last);
        let missed: Vec<_> = all.iter().filter(|a| !seen.contains(&a.0)).collect();
        assert!(
            missed.is_empty(),
            "{}: {} of {} inodes not reached: {missed:?}",
            seed.name,
            missed.len(),
            all.len()
        );
        // Nothing but inodes was taken for one.
        assert_eq!(seen.len(), all.len(), "{}: {seen:?}", seed.name);
    }
}
