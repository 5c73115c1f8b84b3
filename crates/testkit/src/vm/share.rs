//! Page cache sharing scenarios for Linux 7.2's EROFS `inode_share`, independent of which
//! tool built the images: give [`ShareImages`] (paths of images built by mkfs.erofs, or later
//! by `ishare mkfs`) and a list of [`Scenario`]s to [`measure`], get the growth of `Cached:`
//! for each of two reads.
//!
//! Each scenario, in one boot, one after the other: drop caches, loop-mount two images with
//! their options, drop caches, read the big file of the first image with one method
//! (measured), read the big file of the second image with another (measured), unmount both.
//! Unmounting evicts the inodes, so nothing shared survives into the next scenario.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

use super::{Vm, VmOutput};

/// The images the scenarios mount. Every image holds the same big file (at `path_a` in the
/// `*_a` images, at `path_b` in the `*_b` ones) plus different other files.
#[derive(Debug, Clone)]
pub struct ShareImages {
    /// With page cache share fingerprints (`--xattr-inode-digest`).
    pub digest_a: PathBuf,
    pub digest_b: PathBuf,
    /// Without fingerprints (no COMPAT_ISHARE_XATTRS).
    pub plain_a: PathBuf,
    pub plain_b: PathBuf,
    /// Path of the big file inside the `*_a` / `*_b` images, relative to the root.
    pub path_a: String,
    pub path_b: String,
}

/// Which image a scenario mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    DigestA,
    DigestB,
    PlainA,
    PlainB,
}

impl Image {
    fn file_name(self) -> &'static str {
        match self {
            Image::DigestA => "digest_a.erofs",
            Image::DigestB => "digest_b.erofs",
            Image::PlainA => "plain_a.erofs",
            Image::PlainB => "plain_b.erofs",
        }
    }

    fn is_a(self) -> bool {
        matches!(self, Image::DigestA | Image::PlainA)
    }
}

/// How a big file is read inside the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// read(2) in 64 KiB chunks (memtool read).
    Read,
    /// mmap and touch every page (memtool mmap).
    Mmap,
    /// sendfile(2) to /dev/null (memtool sendfile).
    Sendfile,
    /// splice(2) into a pipe (memtool splice).
    Splice,
    /// busybox `cat FILE > /dev/null` (busybox cat uses sendfile).
    BusyboxCat,
}

impl Method {
    fn command(self, file: &str) -> String {
        match self {
            Method::Read => format!("memtool read {file}"),
            Method::Mmap => format!("memtool mmap {file}"),
            Method::Sendfile => format!("memtool sendfile {file}"),
            Method::Splice => format!("memtool splice {file}"),
            Method::BusyboxCat => format!("sh -c 'cat {file} > /dev/null'"),
        }
    }
}

/// One scenario: mount `first.0` with options `first.1`, `second.0` with `second.1`, read the
/// big file of the first with `methods.0`, then that of the second with `methods.1`.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// A short identifier (letters, digits, `_`), used in the VM's output.
    pub name: &'static str,
    pub first: (Image, &'static str),
    pub second: (Image, &'static str),
    pub methods: (Method, Method),
}

/// The growth of `Cached:` for the two reads of one scenario, in KiB.
#[derive(Debug, Clone)]
pub struct Measured {
    pub scenario: Scenario,
    pub first_kib: i64,
    pub second_kib: i64,
}

impl fmt::Display for Measured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scenario;
        write!(
            f,
            "{:<22} {:+6.1} MiB ({:+} KiB), then {:+6.1} MiB ({:+} KiB): \
             {:?}[{}] via {:?}, then {:?}[{}] via {:?}",
            s.name,
            self.first_kib as f64 / 1024.0,
            self.first_kib,
            self.second_kib as f64 / 1024.0,
            self.second_kib,
            s.first.0,
            s.first.1,
            s.methods.0,
            s.second.0,
            s.second.1,
            s.methods.1,
        )
    }
}

/// All the measurements of one boot.
#[derive(Debug, Clone)]
pub struct ShareRun {
    pub measured: Vec<Measured>,
    /// `sha256sum` (hex) of the big file read through the first and the second image while
    /// both are mounted with `inode_share` in one domain, after the first scenario's reads.
    pub sha256_shared: (String, String),
    pub vm: VmOutput,
}

impl ShareRun {
    pub fn get(&self, name: &str) -> &Measured {
        self.measured
            .iter()
            .find(|m| m.scenario.name == name)
            .unwrap_or_else(|| panic!("no scenario {name} was measured"))
    }

    /// One line per scenario, for messages.
    pub fn table(&self) -> String {
        self.measured.iter().map(|m| format!("  {m}\n")).collect()
    }
}

/// Boots once and measures every scenario in order. The first scenario must mount two
/// images sharing in one domain: the checksums in [`ShareRun::sha256_shared`] are taken there.
pub fn measure(images: &ShareImages, scenarios: &[Scenario]) -> Result<ShareRun> {
    let mut script = String::new();
    for (i, s) in scenarios.iter().enumerate() {
        ensure!(
            s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "scenario name {:?}: letters, digits and _ only",
            s.name
        );
        let file_of = |img: Image, dir: &str| {
            let rel = if img.is_a() {
                &images.path_a
            } else {
                &images.path_b
            };
            format!("{dir}/{}", rel.trim_start_matches('/'))
        };
        let (da, db) = (format!("/mnt/{}_1", s.name), format!("/mnt/{}_2", s.name));
        let (fa, fb) = (file_of(s.first.0, &da), file_of(s.second.0, &db));
        script.push_str(&format!(
            "drop_caches\n\
             mount_erofs {} {da} {}\n\
             mount_erofs {} {db} {}\n\
             drop_caches\n\
             measure {n}.first {}\n\
             measure {n}.second {}\n",
            s.first.0.file_name(),
            s.first.1,
            s.second.0.file_name(),
            s.second.1,
            s.methods.0.command(&fa),
            s.methods.1.command(&fb),
            n = s.name,
        ));
        if i == 0 {
            script.push_str(&format!(
                "result sha256.first $(sha256sum {fa} | cut -d' ' -f1)\n\
                 result sha256.second $(sha256sum {fb} | cut -d' ' -f1)\n"
            ));
        }
        script.push_str(&format!("umount_erofs {da}\numount_erofs {db}\n"));
    }

    let vm = Vm::new()
        .image(Image::DigestA.file_name(), &images.digest_a)
        .image(Image::DigestB.file_name(), &images.digest_b)
        .image(Image::PlainA.file_name(), &images.plain_a)
        .image(Image::PlainB.file_name(), &images.plain_b)
        .script(&script)
        .run()?;

    let num = |label: &str| -> Result<i64> {
        vm.value(label)
            .with_context(|| format!("no result {label} in the VM output"))?
            .parse::<i64>()
            .with_context(|| format!("result {label} is not a number"))
    };
    let mut measured = Vec::new();
    for s in scenarios {
        measured.push(Measured {
            scenario: s.clone(),
            first_kib: num(&format!("{}.first", s.name))?,
            second_kib: num(&format!("{}.second", s.name))?,
        });
    }
    let sha = |label: &str| -> Result<String> {
        Ok(vm
            .value(label)
            .with_context(|| format!("no result {label} in the VM output"))?
            .to_owned())
    };
    let sha256_shared = (sha("sha256.first")?, sha("sha256.second")?);
    Ok(ShareRun {
        measured,
        sha256_shared,
        vm,
    })
}
