//! `--vmdk-desc=X`: a VMDK descriptor ("twoGbMaxExtentFlat") that joins the image and
//! its extra devices (the tar of a `--tar=i` index) into one virtual disk, in the
//! layout erofs-utils writes: flat extents of at most 2 GiB each, in device order,
//! and an IDE geometry of 16 heads and 63 sectors per track.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Sectors of one extent line at most (2 GiB).
const MAX_EXTENT_SECTORS: u64 = 0x8000_0000 >> 9;
const HEADS: u64 = 16;
const SECTORS_PER_TRACK: u64 = 63;

/// The descriptor's text: `devices` are (name, size in 512-byte sectors), the image
/// first; the content ID is the XOR of the UUID's four 32-bit words.
pub fn descriptor(uuid: &[u8; 16], devices: &[(String, u64)]) -> String {
    let cid = uuid
        .chunks(4)
        .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
        .fold(0, |a, w| a ^ w);
    let mut s = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:x}\nparentCID=ffffffff\n\
         createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\n"
    );
    let mut total = 0;
    for (name, sectors) in devices {
        let (mut left, mut offset) = (*sectors, 0);
        while left > 0 {
            let n = left.min(MAX_EXTENT_SECTORS);
            let _ = writeln!(s, "RW {n} FLAT \"{name}\" {offset}");
            offset += n;
            left -= n;
        }
        total += sectors;
    }
    let _ = write!(
        s,
        "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{}\"\nddb.geometry.heads = \"{HEADS}\"\n\
         ddb.geometry.sectors = \"{SECTORS_PER_TRACK}\"\nddb.adapterType = \"ide\"\n",
        total.div_ceil(SECTORS_PER_TRACK * HEADS)
    );
    s
}

/// Writes the descriptor to `to`.
pub fn write(to: &Path, uuid: &[u8; 16], devices: &[(String, u64)]) -> Result<()> {
    std::fs::write(to, descriptor(uuid, devices))
        .with_context(|| format!("--vmdk-desc: writing {}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_split_at_two_gib() {
        let mut u = [0u8; 16];
        u[0] = 1;
        u[4] = 2;
        let d = descriptor(&u, &[("a.img".into(), 12), ("b.tar".into(), 5_000_000)]);
        assert!(d.contains("CID=3\n"), "{d}");
        assert!(d.contains("RW 12 FLAT \"a.img\" 0\n"));
        assert!(d.contains("RW 4194304 FLAT \"b.tar\" 0\nRW 805696 FLAT \"b.tar\" 4194304\n"));
        assert!(d.contains("cylinders = \"4961\""), "{d}");
    }
}
