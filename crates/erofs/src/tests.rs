//! Unit tests on images built byte by byte: the smallest valid image (a root
//! directory with one inline file) and table-driven superblock rejections.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::format::*;
use crate::{ErrorKind, Image, superblock_checksum};

const BS: usize = 4096;

/// Builds: block 0 = superblock, block 1 = metadata (root dir NID 0 with an inline
/// directory holding ".", ".." and "f"; "f" at NID 3, a FLAT_INLINE file "hi\n").
fn tiny_image(edit: impl FnOnce(&mut SuperBlock)) -> Vec<u8> {
    let mut img = vec![0u8; 2 * BS];
    // Every field not named is zero.
    let mut sb = SuperBlock {
        magic: U32::new(SUPER_MAGIC_V1),
        feature_compat: U32::new(FEATURE_COMPAT_SB_CHKSUM),
        blkszbits: 12,
        inos: U64::new(2),
        epoch: U64::new(1_700_000_000),
        fixed_nsec: U32::new(5),
        blocks_lo: U32::new(2),
        meta_blkaddr: U32::new(1),
        volume_name: *b"tiny\0\0\0\0\0\0\0\0\0\0\0\0",
        ..SuperBlock::new_zeroed()
    };
    edit(&mut sb);
    // Directory data: 3 dirents then names ".", "..", "f".
    let mut dir = Vec::new();
    let names: [(&[u8], u64, u8); 3] = [
        (b".", 0, FT_DIR),
        (b"..", 0, FT_DIR),
        (b"f", 3, FT_REG_FILE),
    ];
    let mut nameoff = 3 * 12;
    for (n, nid, t) in names {
        let de = Dirent {
            nid: U64::new(nid),
            nameoff: U16::new(nameoff),
            file_type: t,
            reserved: 0,
        };
        dir.extend_from_slice(de.as_bytes());
        nameoff += n.len() as u16;
    }
    for (n, _, _) in names {
        dir.extend_from_slice(n);
    }
    let inode = |mode: u16, size: u32, nlink: u16, mtime: u32| InodeCompact {
        i_format: U16::new(INODE_FLAT_INLINE << I_DATALAYOUT_BIT),
        i_xattr_icount: U16::new(0),
        i_mode: U16::new(mode),
        i_nb: U16::new(nlink),
        i_size: U32::new(size),
        i_mtime: U32::new(mtime),
        i_u: U32::new(0),
        i_ino: U32::new(1),
        i_uid: U16::new(1000),
        i_gid: U16::new(100),
        i_reserved: U32::new(0),
    };
    let root = inode(S_IFDIR | 0o755, dir.len() as u32, 2, 7);
    let meta = BS;
    img[meta..meta + 32].copy_from_slice(root.as_bytes());
    img[meta + 32..meta + 32 + dir.len()].copy_from_slice(&dir);
    let file = inode(S_IFREG | 0o644, 3, 1, 9);
    img[meta + 96..meta + 128].copy_from_slice(file.as_bytes());
    img[meta + 128..meta + 131].copy_from_slice(b"hi\n");
    let sb_off = SUPER_OFFSET as usize;
    img[sb_off..sb_off + size_of::<SuperBlock>()].copy_from_slice(sb.as_bytes());
    if sb.feature_compat.get() & FEATURE_COMPAT_SB_CHKSUM != 0 {
        // (None for block sizes larger than this image: those cases fail earlier.)
        if let Some(c) = superblock_checksum(&img, sb.blkszbits) {
            img[sb_off + 4..sb_off + 8].copy_from_slice(&c.to_le_bytes());
        }
    }
    img
}

fn open(img: Vec<u8>) -> crate::Result<Image> {
    Image::from_source("tiny.img", Box::new(img), Vec::new())
}

#[test]
fn tiny_image_reads() {
    let img = open(tiny_image(|_| {})).unwrap();
    let root = img.root().unwrap();
    assert!(root.is_dir());
    assert_eq!((root.uid, root.gid, root.nlink), (1000, 100, 2));
    // Compact inode time = epoch + i_mtime, nsec = fixed_nsec.
    assert_eq!((root.mtime, root.mtime_nsec), (1_700_000_007, 5));
    let names: Vec<_> = img
        .read_dir(&root)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [&b"."[..], b"..", b"f"]);
    let f = img.lookup_path(b"/f").unwrap();
    assert_eq!(img.read_to_vec(&f).unwrap(), b"hi\n");
    assert!(img.lookup(&root, b"g").unwrap().is_none());
    assert!(img.lookup(&root, b"e").unwrap().is_none());
    let r = img.check(&Default::default()).unwrap();
    assert_eq!((r.inodes, r.files, r.file_bytes), (2, 1, 3));
    assert_eq!(img.superblock().volume_name(), b"tiny");
}

/// The walk's steps, in both orders: the root's Enter, its one entry, and (depth
/// first) the root's Leave.
#[test]
fn walk_steps() {
    use crate::{Reached, WalkOrder, WalkStep};
    let img = open(tiny_image(|_| {})).unwrap();
    for order in [WalkOrder::DepthFirst, WalkOrder::DirectoryByDirectory] {
        let steps: Vec<String> = img
            .walk(img.root().unwrap(), order)
            .map(|s| match s.unwrap() {
                WalkStep::Enter(d) => format!("enter {}", String::from_utf8_lossy(&d.path)),
                WalkStep::Entry(e) => {
                    assert_eq!(
                        (e.parent, e.reached, e.name()),
                        (0, Reached::First, &b"f"[..])
                    );
                    assert!(e.cycle_error().is_none());
                    format!("{} nid {}", e.path_str(), e.inode.nid)
                }
                WalkStep::Leave(d) => format!("leave {}", String::from_utf8_lossy(&d.path)),
            })
            .collect();
        let mut want = vec!["enter /", "/f nid 3"];
        if order == WalkOrder::DepthFirst {
            want.push("leave /");
        }
        assert_eq!(steps, want, "{order:?}");
    }
}

#[test]
fn superblock_rejections() {
    type Edit = fn(&mut SuperBlock);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "bad magic",
            |sb| sb.magic = U32::new(0x1234_5678),
            "bad magic",
        ),
        ("small block", |sb| sb.blkszbits = 8, "block size"),
        ("huge block", |sb| sb.blkszbits = 17, "block size"),
        (
            "unknown incompat",
            |sb| sb.feature_incompat = U32::new(0x400),
            "0x400",
        ),
        ("dirblkbits", |sb| sb.dirblkbits = 1, "dirblkbits"),
        (
            "ishare id",
            |sb| {
                sb.feature_compat =
                    U32::new(FEATURE_COMPAT_SB_CHKSUM | FEATURE_COMPAT_ISHARE_XATTRS);
                sb.ishare_xattr_prefix_id = 0;
            },
            "invalid ishare xattr prefix id 0",
        ),
        ("extslots", |sb| sb.sb_extslots = 255, "superblock size"),
    ];
    for (what, edit, needle) in cases {
        let err = open(tiny_image(edit)).expect_err(what);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{what}: {msg}");
        assert!(msg.starts_with("tiny.img: "), "{what}: {msg}");
    }
}

#[test]
fn checksum_mismatch_is_refused() {
    let mut raw = tiny_image(|_| {});
    raw[SUPER_OFFSET as usize + 0x40] ^= 1; // volume name, covered by the CRC
    let err = open(raw).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // Without SB_CHKSUM the same edit is accepted.
    let mut raw = tiny_image(|sb| sb.feature_compat = U32::new(0));
    raw[SUPER_OFFSET as usize + 0x40] ^= 1;
    open(raw).unwrap();
}

#[test]
fn truncation_never_panics() {
    let full = tiny_image(|_| {});
    for len in 0..full.len() {
        let res = open(full[..len].to_vec()).and_then(|img| img.check(&Default::default()));
        if len < BS + 131 {
            let err = res.expect_err("truncated image accepted");
            assert!(
                err.is_corruption() || matches!(err.kind(), ErrorKind::Truncated { .. }),
                "{len}: {err}"
            );
        }
    }
}

#[test]
fn dev_numbers_round_trip() {
    for (ma, mi) in [(0, 0), (5, 7), (259, 1_048_575), (4095, 255), (8, 256)] {
        assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
    }
}

#[test]
fn xattr_names_split() {
    use crate::split_xattr_name;
    assert_eq!(split_xattr_name(b"user.a"), (XATTR_INDEX_USER, &b"a"[..]));
    assert_eq!(
        split_xattr_name(b"system.posix_acl_access"),
        (XATTR_INDEX_POSIX_ACL_ACCESS, &b""[..])
    );
    assert_eq!(
        split_xattr_name(b"system.posix_acl_accessX"),
        (XATTR_INDEX_NONE, &b"system.posix_acl_accessX"[..])
    );
    assert_eq!(
        split_xattr_name(b"erofs.fingerprint.v1"),
        (XATTR_INDEX_NONE, &b"erofs.fingerprint.v1"[..])
    );
    assert_eq!(xattr_ibody_size(0), 0);
    assert_eq!(xattr_ibody_size(1), 12);
    assert_eq!(xattr_ibody_size(3), 20);
}
