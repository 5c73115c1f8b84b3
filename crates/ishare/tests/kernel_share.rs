//! EROFS page cache sharing (`inode_share`) measured in Debian sid's Linux 7.2 under QEMU.
//!
//! Run alone (as root, after `scripts/install-deps.sh`; about a minute on 2 cores, TCG):
//!
//!     cargo test -p ishare --test kernel_share -- --nocapture
//!
//! Four images are built with erofs-utils 1.9.4: two with `--xattr-inode-digest` holding the
//! same 32 MiB pseudo-random file at different paths (next to different other files), and the
//! same two trees without fingerprints. One VM boot runs every scenario of [`scenarios`] (see
//! `vm/share.rs`: mount two images, drop caches, read file 1, read file 2, measure the growth
//! of `Cached:` for each read, unmount); each test below checks one fact about the
//! measurements. `--nocapture` prints the table of measurements.
//!
//! The images come from [`build_images`], which takes the mkfs as a closure: a later test can
//! pass `ishare mkfs` instead of mkfs.erofs and reuse `vm::share::measure` unchanged.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use ishare_testkit::rng::Rng;
use ishare_testkit::tree::write_file;
use ishare_testkit::vm::share::{Image, Measured, Method, Scenario, ShareImages, ShareRun};
use sha2::{Digest, Sha256};

/// Size of the file both images hold.
const BIG: u64 = 32 << 20;
/// Where it is in each image.
const PATH_A: &str = "usr/lib/libbig.so.1";
const PATH_B: &str = "opt/other/copy-of-libbig";

const KIB_PER_MIB: i64 = 1024;
/// A read that fills the cache must add at least this much (the file is 32 MiB)...
const FULL_MIN_KIB: i64 = 28 * KIB_PER_MIB;
/// ... and at most this much (file data, plus directory and inode blocks, plus noise).
const FULL_MAX_KIB: i64 = 40 * KIB_PER_MIB;
/// A read served from another image's cached copy adds less than this.
const SHARED_MAX_KIB: i64 = 4 * KIB_PER_MIB;

const SHARE_D1: &str = "inode_share,domain_id=d1";
const SHARE_D2: &str = "inode_share,domain_id=d2";

/// Every scenario, in boot order. The first one is also where the checksums are taken.
fn scenarios() -> Vec<Scenario> {
    use Image::*;
    use Method::*;
    let s = |name, first, second, methods| Scenario {
        name,
        first,
        second,
        methods,
    };
    vec![
        s(
            "same_domain_read",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D1),
            (Read, Read),
        ),
        s(
            "other_domain_read",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D2),
            (Read, Read),
        ),
        s(
            "no_inode_share_read",
            (DigestA, ""),
            (DigestB, ""),
            (Read, Read),
        ),
        s(
            "same_domain_mmap",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D1),
            (Mmap, Mmap),
        ),
        s(
            "same_domain_read_mmap",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D1),
            (Read, Mmap),
        ),
        s(
            "same_domain_sendfile",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D1),
            (Sendfile, Sendfile),
        ),
        s(
            "same_domain_cat",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D1),
            (BusyboxCat, BusyboxCat),
        ),
        s(
            "same_domain_splice",
            (DigestA, SHARE_D1),
            (DigestB, SHARE_D1),
            (Splice, Splice),
        ),
        s(
            "no_digest_read",
            (PlainA, SHARE_D1),
            (PlainB, SHARE_D1),
            (Read, Read),
        ),
    ]
}

/// Builds the four images of [`ShareImages`] in `dir` with `mkfs(source, image, digest)`,
/// which must give the image page cache share fingerprints when `digest` is true.
/// Returns the images and the SHA-256 of the shared file.
fn build_images(dir: &Path, mkfs: &dyn Fn(&Path, &Path, bool)) -> (ShareImages, String) {
    let big = Rng::new(0x1234_5678_9abc_def0).bytes(BIG as usize);
    let src_a = dir.join("src_a");
    let src_b = dir.join("src_b");
    write_file(&src_a, PATH_A, &big);
    write_file(&src_a, "etc/a-only.conf", b"image a\n");
    write_file(&src_a, "usr/lib/liba.so", &Rng::new(1).bytes(300 << 10));
    write_file(&src_b, "etc/b-only.conf", b"image b, different\n");
    write_file(&src_b, "opt/other/libb.so", &Rng::new(2).bytes(700 << 10));
    write_file(&src_b, "opt/zz-first-is-not-big", &Rng::new(3).bytes(5000));
    write_file(&src_b, PATH_B, &big);

    let img = |name: &str| dir.join(name);
    let images = ShareImages {
        digest_a: img("digest_a.erofs"),
        digest_b: img("digest_b.erofs"),
        plain_a: img("plain_a.erofs"),
        plain_b: img("plain_b.erofs"),
        path_a: PATH_A.to_owned(),
        path_b: PATH_B.to_owned(),
    };
    mkfs(&src_a, &images.digest_a, true);
    mkfs(&src_b, &images.digest_b, true);
    mkfs(&src_a, &images.plain_a, false);
    mkfs(&src_b, &images.plain_b, false);
    (images, hex(&Sha256::digest(&big)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// mkfs.erofs 1.9.4, with `--xattr-inode-digest` (default name `erofs.fingerprint.v1`) when
/// `digest`.
fn mkfs_erofs_194(src: &Path, image: &Path, digest: bool) {
    let mut cmd = Command::new(ishare_testkit::tools::mkfs_194());
    if digest {
        cmd.arg("--xattr-inode-digest");
    }
    cmd.arg(image).arg(src);
    ishare_testkit::tools::run(&mut cmd);
}

struct Shared {
    run: ShareRun,
    big_sha256: String,
}

impl Shared {
    /// Whether the guest kernel logged a line containing `needle`.
    fn logged(&self, needle: &str) -> bool {
        self.run.vm.dmesg.iter().any(|l| l.contains(needle))
    }
}

/// `ishare mkfs` (fingerprints are its default).
fn ishare_mkfs(src: &Path, image: &Path, digest: bool) {
    let mut cmd = Command::new(ishare_testkit::ishare_bin!());
    cmd.arg("mkfs").arg("--quiet");
    if !digest {
        cmd.arg("--no-xattr-inode-digest");
    }
    cmd.arg(image).arg(src);
    ishare_testkit::tools::run(&mut cmd);
}

/// Image a from `ishare mkfs`, image b from mkfs.erofs 1.9.4: they must share with each
/// other exactly as two images of one tool do.
fn mixed_mkfs(src: &Path, image: &Path, digest: bool) {
    let name = image.file_name().unwrap().to_string_lossy();
    if name.ends_with("_a.erofs") {
        ishare_mkfs(src, image, digest)
    } else {
        mkfs_erofs_194(src, image, digest)
    }
}

/// Builds `image` from `source`, with fingerprints when the flag is set.
type MkfsFn = dyn Fn(&Path, &Path, bool);

/// Which tool builds the images of a run.
#[derive(Clone, Copy, Debug)]
enum Builder {
    ErofsUtils,
    Ishare,
    Mixed,
}

/// The scenarios repeated for images from `ishare mkfs` (the read paths are the kernel's,
/// already covered with erofs-utils images).
const BUILDER_SCENARIOS: &[&str] = &["same_domain_read", "other_domain_read", "no_digest_read"];

/// Builds the images and boots once per builder; every test reads the same run.
fn shared_run() -> &'static Shared {
    run_for(Builder::ErofsUtils)
}

fn run_for(builder: Builder) -> &'static Shared {
    static RUNS: [OnceLock<Result<Shared, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (mkfs, scenarios): (&MkfsFn, Vec<Scenario>) = match builder {
        Builder::ErofsUtils => (&mkfs_erofs_194, scenarios()),
        Builder::Ishare | Builder::Mixed => (
            if matches!(builder, Builder::Ishare) {
                &ishare_mkfs
            } else {
                &mixed_mkfs
            },
            scenarios()
                .into_iter()
                .filter(|s| BUILDER_SCENARIOS.contains(&s.name))
                .collect(),
        ),
    };
    let r = RUNS[builder as usize].get_or_init(|| {
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("ishare-kernel-share-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let (images, big_sha256) = build_images(dir.path(), mkfs);
        let t_images = t0.elapsed();
        let run = ishare_testkit::vm::share::measure(&images, &scenarios)
            .map_err(|e| format!("{e:#}"))?;
        eprintln!(
            "{builder:?} images, Linux {} under QEMU: images built in {:.1?}, boot {:.1?}, \
             VM total {:.1?}, all {:.1?}\n{}",
            run.vm.kernel_version,
            t_images,
            run.vm.boot_time,
            run.vm.total_time,
            t0.elapsed(),
            run.table()
        );
        // Statics are never dropped: remove the images now rather than leave them in /tmp.
        drop(dir);
        Ok(Shared { run, big_sha256 })
    });
    match r {
        Ok(s) => s,
        Err(e) => panic!("the Linux 7.2 VM run ({builder:?} images) failed: {e}"),
    }
}

fn describe(s: &Shared) -> String {
    format!(
        "\nmeasured (growth of Cached:):\n{}guest dmesg (erofs):\n{}",
        s.run.table(),
        s.run
            .vm
            .dmesg
            .iter()
            .filter(|l| l.contains("erofs") || l.contains("EROFS"))
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    )
}

fn is_full(kib: i64) -> bool {
    (FULL_MIN_KIB..=FULL_MAX_KIB).contains(&kib)
}

fn is_shared(kib: i64) -> bool {
    kib < SHARED_MAX_KIB
}

/// Asserts: the first read fills the cache; the second is shared (or not).
fn assert_pattern(name: &str, second_shared: bool, fact: &str) {
    assert_pattern_for(Builder::ErofsUtils, name, second_shared, fact)
}

fn assert_pattern_for(builder: Builder, name: &str, second_shared: bool, fact: &str) {
    let s = run_for(builder);
    let m: &Measured = s.run.get(name);
    let ok = is_full(m.first_kib)
        && if second_shared {
            is_shared(m.second_kib)
        } else {
            is_full(m.second_kib)
        };
    assert!(
        ok,
        "{fact}: expected the first read to add {}..{} MiB and the second {}, got +{:.1} MiB \
         then +{:.1} MiB{}",
        FULL_MIN_KIB / KIB_PER_MIB,
        FULL_MAX_KIB / KIB_PER_MIB,
        if second_shared {
            format!("< {} MiB (shared)", SHARED_MAX_KIB / KIB_PER_MIB)
        } else {
            format!(
                "{}..{} MiB again (not shared)",
                FULL_MIN_KIB / KIB_PER_MIB,
                FULL_MAX_KIB / KIB_PER_MIB
            )
        },
        m.first_kib as f64 / 1024.0,
        m.second_kib as f64 / 1024.0,
        describe(s)
    );
}

#[test]
fn read_shares_within_a_domain() {
    assert_pattern(
        "same_domain_read",
        true,
        "read(2) of the same file in two images mounted with inode_share,domain_id=d1 shares \
         the page cache",
    );
    let s = shared_run();
    assert!(
        s.logged("EXPERIMENTAL EROFS page cache share support in use"),
        "Linux 7.2 did not log that page cache share is in use{}",
        describe(s)
    );
}

#[test]
fn shared_reads_return_the_right_bytes() {
    let s = shared_run();
    let (a, b) = &s.run.sha256_shared;
    assert_eq!(
        (a.as_str(), b.as_str()),
        (s.big_sha256.as_str(), s.big_sha256.as_str()),
        "sha256sum of the shared file through image a and image b (in the VM) must equal the \
         source's"
    );
}

#[test]
fn different_domains_do_not_share() {
    assert_pattern(
        "other_domain_read",
        false,
        "the same file in images mounted with domain_id=d1 and domain_id=d2 is cached twice",
    );
}

#[test]
fn without_inode_share_nothing_is_shared() {
    assert_pattern(
        "no_inode_share_read",
        false,
        "images with fingerprints mounted without inode_share are cached per image (control)",
    );
}

#[test]
fn mmap_shares_within_a_domain() {
    assert_pattern(
        "same_domain_mmap",
        true,
        "mmap of the same file in two images in one domain shares the page cache",
    );
    assert_pattern(
        "same_domain_read_mmap",
        true,
        "read(2) through image a, then mmap through image b, in one domain: shared",
    );
}

/// Linux 7.2 routes splice_read to `filemap_splice_read` on the opened (real) inode's own
/// mapping, so sendfile/splice fill a per-image cache (Part 5 of the format notes). If this
/// fails because the second read is now shared, a newer kernel forwards splice to the shared
/// inode: update this test and the notes.
#[test]
fn sendfile_and_splice_do_not_share_on_linux_7_2() {
    assert_pattern(
        "same_domain_sendfile",
        false,
        "Linux 7.2 does NOT share the page cache on the sendfile(2) path (splice_read uses the \
         real inode's mapping)",
    );
    assert_pattern(
        "same_domain_cat",
        false,
        "Linux 7.2 does NOT share the page cache for busybox cat (sendfile)",
    );
    assert_pattern(
        "same_domain_splice",
        false,
        "Linux 7.2 does NOT share the page cache on the splice(2) path",
    );
}

#[test]
fn image_without_fingerprints_mounts_unshared() {
    assert_pattern(
        "no_digest_read",
        false,
        "images without --xattr-inode-digest mount with inode_share,domain_id=d1 but are not \
         shared",
    );
    let s = shared_run();
    assert!(
        s.logged("Turning off inode_share"),
        "Linux 7.2 did not log that it turned off inode_share for an image without \
         fingerprints{}",
        describe(s)
    );
}

#[test]
fn ishare_mkfs_images_share_within_a_domain_only() {
    let b = Builder::Ishare;
    assert_pattern_for(
        b,
        "same_domain_read",
        true,
        "two `ishare mkfs` images, one domain: shared",
    );
    assert_pattern_for(
        b,
        "other_domain_read",
        false,
        "two `ishare mkfs` images, two domains: not shared",
    );
    assert_pattern_for(
        b,
        "no_digest_read",
        false,
        "`ishare mkfs --no-xattr-inode-digest` images: not shared",
    );
    let s = run_for(b);
    let (x, y) = &s.run.sha256_shared;
    assert_eq!(
        (x, y),
        (&s.big_sha256, &s.big_sha256),
        "shared bytes through `ishare mkfs` images"
    );
}

#[test]
fn ishare_mkfs_image_shares_with_an_erofs_utils_image() {
    let b = Builder::Mixed;
    assert_pattern_for(
        b,
        "same_domain_read",
        true,
        "an `ishare mkfs` image and a mkfs.erofs 1.9.4 image, one domain: shared",
    );
    assert_pattern_for(
        b,
        "other_domain_read",
        false,
        "the same two images, two domains: not shared",
    );
}
