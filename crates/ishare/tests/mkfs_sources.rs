//! `ishare mkfs` sources and codecs beyond a directory or one tar:
//!
//! - `--oci`: a local OCI image layout (made with umoci; a directory, or a tar archive
//!   of it) becomes the tree its layers give applied in order, which is what
//!   `umoci unpack` gives (whiteouts and opaque directories resolved); gzip, zstd and
//!   plain layers; `layer=`, `blob=`, `platform=` and `SOURCE:REF` pick what to build;
//!   broken and hostile layouts fail with an error naming the file;
//! - `-z libdeflate[,level]` and LZMA's `lc=`/`lp=`/`pb=`: the kernel reads the
//!   images, and they are at most 1.01× the size of mkfs.erofs 1.9.4's.
//!
//! Every image is mounted by the host kernel, passes `fsck.erofs --xattr-inode-digest`
//! 1.9.4 and `ishare fsck`. Needs root, umoci, zstd, GNU tar and erofs-utils 1.9.4
//! (scripts/install-deps.sh).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ishare_testkit::containerd::OciLayout;
use ishare_testkit::mounts::LoopMount;
use ishare_testkit::snapshot::{CompareOpts, Tree, snapshot};
use ishare_testkit::tools::{fsck_194, mkfs_194, require_root, run, try_run};
use sha2::Digest;

fn ishare() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ishare"))
}

/// `ishare mkfs ARGS`; panics with its output on failure.
fn mkfs(args: &[&str]) {
    try_run(ishare().arg("mkfs").arg("--quiet").args(args))
        .unwrap_or_else(|e| panic!("ishare mkfs {args:?}: {e}"));
}

/// `ishare mkfs ARGS`, which must fail; its standard error.
fn mkfs_fails(args: &[&str]) -> String {
    let out = ishare().arg("mkfs").args(args).output().unwrap();
    assert!(!out.status.success(), "ishare mkfs {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the kernel shows of `image`.
fn mounted(image: &Path) -> Tree {
    let m = LoopMount::new(image).unwrap_or_else(|e| panic!("mounting {}: {e}", image.display()));
    snapshot(m.path())
}

/// fsck.erofs 1.9.4 (digests checked) and `ishare fsck` accept `image`.
fn fsck_ok(image: &Path) {
    try_run(
        Command::new(fsck_194())
            .arg("--xattr-inode-digest")
            .arg(image),
    )
    .unwrap();
    try_run(ishare().arg("fsck").arg(image)).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The directory `umoci unpack` makes of `layout:name` in `dir`.
fn unpack_dir(layout: &Path, name: &str, dir: &Path) -> PathBuf {
    let bundle = dir.join(format!("bundle-{name}"));
    if !bundle.exists() {
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{name}", layout.display()))
            .arg(&bundle));
    }
    bundle.join("rootfs")
}

/// What `umoci unpack` makes of `layout:name`: the reference tree.
fn unpacked(layout: &Path, name: &str, dir: &Path) -> Tree {
    snapshot(&unpack_dir(layout, name, dir))
}

fn assert_same(what: &str, ours: &Tree, want: &Tree) {
    ishare_testkit::assert_trees_eq(
        &format!("ishare mkfs --oci ({what})"),
        ours,
        "umoci unpack",
        want,
        &CompareOpts::ALL,
    );
}

/// A tar archive at `out` of `dir`'s content, made with GNU tar (whiteout files kept
/// as they are).
fn tar_of(dir: &Path, out: &Path) {
    run(Command::new("tar")
        .args(["--format=pax", "--numeric-owner", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg("."));
}

/// An image `name` of four layers: files, links and xattrs; deletions (umoci writes
/// whiteouts) and replacements of a file by a directory and back; then a layer added
/// as a tar with an opaque directory marker.
fn layered_image(layout: &OciLayout, name: &str, tmp: &Path) {
    use std::os::unix::fs::symlink;
    layout.image(
        name,
        &[
            &|r: &Path| {
                for d in ["etc", "usr/lib", "var/cache/x", "opq/sub", "swap"] {
                    fs::create_dir_all(r.join(d)).unwrap();
                }
                fs::write(r.join("etc/conf"), b"one\n").unwrap();
                fs::write(r.join("usr/lib/big"), "line of text\n".repeat(5000)).unwrap();
                fs::write(r.join("var/cache/x/gone"), b"deleted later").unwrap();
                fs::write(r.join("opq/old"), b"hidden by the opaque marker").unwrap();
                fs::write(r.join("opq/sub/deep"), b"also hidden").unwrap();
                fs::write(r.join("swap/f"), b"a file in a directory").unwrap();
                fs::write(r.join("tofile"), b"x").unwrap();
                let mut rng = ishare_testkit::rng::Rng::new(3);
                for i in 0..60 {
                    fs::write(r.join(format!("usr/lib/t{i}")), rng.text(20_000)).unwrap();
                }
                fs::hard_link(r.join("etc/conf"), r.join("etc/conf.link")).unwrap();
                symlink("../usr/lib/big", r.join("etc/big")).unwrap();
                rustix::fs::setxattr(
                    r.join("etc/conf").as_path(),
                    "user.note",
                    b"v1",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap();
            },
            &|r: &Path| {
                fs::remove_dir_all(r.join("var/cache/x")).unwrap();
                fs::write(r.join("etc/conf"), b"two\n").unwrap();
                fs::remove_dir_all(r.join("swap")).unwrap();
                fs::write(r.join("swap"), b"now a file").unwrap();
                fs::remove_file(r.join("tofile")).unwrap();
                fs::create_dir(r.join("tofile")).unwrap();
                fs::write(r.join("tofile/inside"), b"y").unwrap();
            },
            &|r: &Path| {
                fs::remove_file(r.join("etc/big")).unwrap();
                fs::write(r.join("usr/lib/new"), b"added in layer 3").unwrap();
            },
        ],
    );
    // Layer 4: `opq` opaque (its lower entries go), one new file in it, and a
    // whiteout of a file whose parent this layer does not list.
    let l4 = tmp.join(format!("l4-{name}"));
    fs::create_dir_all(l4.join("opq")).unwrap();
    fs::create_dir_all(l4.join("usr/lib")).unwrap();
    fs::write(l4.join("opq/.wh..wh..opq"), b"").unwrap();
    fs::write(l4.join("opq/fresh"), b"new in the opaque dir").unwrap();
    fs::write(l4.join("usr/lib/.wh.new"), b"").unwrap();
    let tar = tmp.join(format!("l4-{name}.tar"));
    tar_of(&l4, &tar);
    layout.add_tar_layer(name, &tar);
}

/// The image's layers, applied in order, from the layout directory and from an
/// archive of it: the tree `umoci unpack` gives, every field and link count.
#[test]
fn oci_layers_applied_in_order() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let layout = OciLayout::init(&dir);
    layered_image(&layout, "app", tmp.path());
    let want = unpacked(&dir, "app", tmp.path());
    // The opaque marker and whiteouts were resolved by umoci as expected.
    assert!(want.entries.keys().any(|p| p.as_slice() == b"opq/fresh"));
    assert!(!want.entries.keys().any(|p| p.starts_with(b"opq/old")));

    let img = tmp.path().join("app.erofs");
    mkfs(&["--oci", s(&img), &format!("{}:app", dir.display())]);
    assert_same("layout directory", &mounted(&img), &want);
    fsck_ok(&img);

    // The same from a tar archive of the layout.
    let archive = tmp.path().join("layout.tar");
    layout.archive(&archive);
    let img2 = tmp.path().join("app2.erofs");
    mkfs(&["--oci", s(&img2), &format!("{}:app", archive.display())]);
    assert_same("layout archive", &mounted(&img2), &want);
    // No larger than mkfs.erofs 1.9.4's image of the unpacked tree (which has no
    // --oci here), fingerprints in both.
    let rootfs = unpack_dir(&dir, "app", tmp.path());
    let theirs = tmp.path().join("theirs.erofs");
    for z in [None, Some("-zlz4hc")] {
        let mut args = vec!["-T0", "-Uclear"];
        args.extend(z);
        mkfs(
            &[
                &args[..],
                &["--oci", s(&img), &format!("{}:app", dir.display())],
            ]
            .concat(),
        );
        run(Command::new(mkfs_194())
            .args(["--quiet", "--xattr-inode-digest"])
            .args(&args)
            .arg(&theirs)
            .arg(&rootfs));
        let (a, b) = (
            fs::metadata(&img).unwrap().len(),
            fs::metadata(&theirs).unwrap().len(),
        );
        eprintln!("--oci {z:?}: ishare {a} bytes, mkfs.erofs 1.9.4 of the unpacked tree {b}");
        assert!(a * 100 <= b * 101, "{z:?}: {a} > 1.01 × {b}");
        fsck_ok(&img);
    }
    // Reproducible: the same image from either form.
    mkfs(&[
        "--oci",
        "-T0",
        "-Uclear",
        s(&img),
        &format!("{}:app", dir.display()),
    ]);
    mkfs(&[
        "--oci",
        "-T0",
        "-Uclear",
        s(&img2),
        &format!("{}:app", archive.display()),
    ]);
    assert_eq!(fs::read(&img).unwrap(), fs::read(&img2).unwrap());
}

/// The digest and size of a blob, after writing it into the layout.
fn put_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len() as u64)
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The manifest descriptor of `name` in the layout's index.json.
fn manifest_of(layout: &Path, name: &str) -> serde_json::Value {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap()
        .clone()
}

/// Writes `index.json` listing `manifests`.
fn write_index(layout: &Path, manifests: Vec<serde_json::Value>) {
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// Layers recompressed with zstd and left uncompressed read as gzip ones do;
/// `layer=N` and `blob=DIGEST` build one layer; a multi-platform index is followed
/// to the manifest of the platform asked for (the host's by default).
#[test]
fn oci_codecs_and_selection() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let layout = OciLayout::init(&dir);
    layered_image(&layout, "app", tmp.path());
    layout.image(
        "small",
        &[&|r: &Path| fs::write(r.join("only"), b"small").unwrap()],
    );
    let want = unpacked(&dir, "app", tmp.path());
    let app = manifest_of(&dir, "app");
    let small = manifest_of(&dir, "small");

    // A copy of the app image whose layers are zstd, plain, gzip, plain.
    let mut m = read_json(&blob(&dir, app["digest"].as_str().unwrap()));
    for (i, layer) in m["layers"].as_array_mut().unwrap().iter_mut().enumerate() {
        let gz = blob(&dir, layer["digest"].as_str().unwrap());
        let plain = run(Command::new("gzip").arg("-dc").arg(&gz)).stdout;
        let (data, mt) = match i % 4 {
            0 => {
                let z = tmp.path().join("layer.zst");
                fs::write(tmp.path().join("layer.tar"), &plain).unwrap();
                run(Command::new("zstd")
                    .args(["-q", "-f", "-o"])
                    .arg(&z)
                    .arg(tmp.path().join("layer.tar")));
                (
                    fs::read(&z).unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                )
            }
            1 | 3 => (plain, "application/vnd.oci.image.layer.v1.tar"),
            _ => continue,
        };
        let (digest, size) = put_blob(&dir, &data);
        layer["digest"] = digest.into();
        layer["size"] = size.into();
        layer["mediaType"] = mt.into();
    }
    let (mdigest, msize) = put_blob(&dir, &serde_json::to_vec(&m).unwrap());
    let mut recoded = app.clone();
    recoded["digest"] = mdigest.clone().into();
    recoded["size"] = msize.into();
    recoded["annotations"]["org.opencontainers.image.ref.name"] = "recoded".into();
    recoded["annotations"]["io.containerd.image.name"] = "example.com/app:v1".into();
    let img = tmp.path().join("img.erofs");
    let mut manifests = vec![app.clone(), small.clone(), recoded.clone()];
    write_index(&dir, manifests.clone());
    mkfs(&["--oci", s(&img), &format!("{}:recoded", dir.display())]);
    assert_same("zstd and plain layers", &mounted(&img), &want);
    fsck_ok(&img);
    // containerd's full image name works as REF too, `:` and `/` included.
    mkfs(&[
        "--oci",
        s(&img),
        &format!("{}:example.com/app:v1", dir.display()),
    ]);
    assert_same("containerd image name", &mounted(&img), &want);

    // One layer: layer=0 is the first layer's tree, as its tar alone gives it;
    // blob= names the same layer.
    let layer0 = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    mkfs(&[
        "--oci=layer=0",
        s(&img),
        &format!("{}:recoded", dir.display()),
    ]);
    let first = mounted(&img);
    let img_tar = tmp.path().join("tar.erofs");
    mkfs(&["--tar=f", s(&img_tar), s(&blob(&dir, &layer0))]);
    ishare_testkit::assert_trees_eq(
        "--oci=layer=0",
        &first,
        "--tar=f of layer 0",
        &mounted(&img_tar),
        &CompareOpts::ALL,
    );
    mkfs(&[
        &format!("--oci=f,blob={layer0}"),
        s(&img),
        &format!("{}:recoded", dir.display()),
    ]);
    ishare_testkit::assert_trees_eq(
        "--oci=blob=",
        &mounted(&img),
        "--oci=layer=0",
        &first,
        &CompareOpts::ALL,
    );
    // A tar index of the plain layer 3 (`--oci=i`; with --aufs its whiteouts become
    // overlayfs ones), mounted with the tar as device.
    let layer1 = blob(&dir, m["layers"][3]["digest"].as_str().unwrap());
    let idx = tmp.path().join("idx.erofs");
    mkfs(&[
        "--oci=i,layer=3",
        "--aufs",
        s(&idx),
        &format!("{}:recoded", dir.display()),
    ]);
    let ref_idx = tmp.path().join("ref.erofs");
    mkfs(&["--tar=i", "--aufs", s(&ref_idx), s(&layer1)]);
    {
        use ishare_testkit::mounts::ErofsMount;
        let a = ErofsMount::new(&idx, std::slice::from_ref(&layer1));
        let b = ErofsMount::new(&ref_idx, std::slice::from_ref(&layer1));
        ishare_testkit::assert_trees_eq(
            "--oci=i,layer=3",
            &snapshot(a.path()),
            "--tar=i of layer 3",
            &snapshot(b.path()),
            &CompareOpts::ALL,
        );
    }
    // The gzip layer 2 indexed through its zinfo (`--oci=i --gzinfo`, as
    // erofs-utils): mounted over the decompressed layer, the same tree as --tar=f.
    let gz2 = blob(&dir, m["layers"][2]["digest"].as_str().unwrap());
    let plain2 = tmp.path().join("layer2.tar");
    fs::write(
        &plain2,
        run(Command::new("gzip").arg("-dc").arg(&gz2)).stdout,
    )
    .unwrap();
    let zinfo = tmp.path().join("layer2.zinfo");
    mkfs(&[
        "--oci=i,layer=2",
        &format!("--gzinfo={}", s(&zinfo)),
        s(&idx),
        &format!("{}:recoded", dir.display()),
    ]);
    assert!(fs::metadata(&zinfo).unwrap().len() > 12);
    mkfs(&["--tar=f", s(&img_tar), s(&plain2)]);
    {
        use ishare_testkit::mounts::ErofsMount;
        let a = ErofsMount::new(&idx, std::slice::from_ref(&plain2));
        ishare_testkit::assert_trees_eq(
            "--oci=i,layer=2 --gzinfo",
            &snapshot(a.path()),
            "--tar=f of layer 2",
            &mounted(&img_tar),
            &CompareOpts::ALL,
        );
    }
    let e = mkfs_fails(&["--oci=i", s(&idx), &format!("{}:recoded", dir.display())]);
    assert!(e.contains("layer=N or blob=DIGEST"), "{e}");

    // A multi-platform image: a nested index with app for linux/amd64 and small for
    // linux/arm64/v8, named "multi".
    let with_platform = |d: &serde_json::Value, arch: &str, variant: Option<&str>| {
        let mut d = d.clone();
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            d["platform"]["variant"] = v.into();
        }
        d
    };
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [with_platform(&app, "amd64", None), with_platform(&small, "arm64", Some("v8"))],
    });
    let (ndigest, nsize) = put_blob(&dir, &serde_json::to_vec(&nested).unwrap());
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": ndigest,
        "size": nsize,
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }));
    write_index(&dir, manifests);
    let multi = format!("{}:multi", dir.display());
    mkfs(&["--oci=platform=linux/arm64", s(&img), &multi]);
    let t = mounted(&img);
    assert!(t.entries.keys().any(|p| p.as_slice() == b"only"));
    assert!(!t.entries.keys().any(|p| p.starts_with(b"usr")));
    if std::env::consts::ARCH == "x86_64" {
        mkfs(&["--oci", s(&img), &multi]);
        assert_same(
            "host platform of a multi-platform image",
            &mounted(&img),
            &want,
        );
    }
    // A single image whose index gives no platform: its config says.
    let e = mkfs_fails(&[
        "--oci=platform=linux/s390x",
        s(&img),
        &format!("{}:small", dir.display()),
    ]);
    assert!(e.contains("not linux/s390x"), "{e}");
    let e = mkfs_fails(&["--oci=platform=linux/s390x", s(&img), &multi]);
    assert!(
        e.contains("linux/s390x") && e.contains("linux/arm64/v8"),
        "{e}"
    );
    // Several images and no REF: the error lists the references.
    let e = mkfs_fails(&["--oci", s(&img), s(&dir)]);
    assert!(e.contains("SOURCE:REF") && e.contains("recoded"), "{e}");
    let e = mkfs_fails(&["--oci", s(&img), &format!("{}:nope", dir.display())]);
    assert!(e.contains("\"nope\"") && e.contains("small"), "{e}");
}

/// Broken and hostile layouts fail with an error naming the file at fault, and
/// leave no image behind; registries are refused.
#[test]
fn oci_bad_input() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let layout = OciLayout::init(&dir);
    layout.image("a", &[&|r: &Path| fs::write(r.join("f"), b"data").unwrap()]);
    let img = tmp.path().join("out.erofs");
    let src = format!("{}:a", dir.display());
    let manifest = manifest_of(&dir, "a");
    let m = read_json(&blob(&dir, manifest["digest"].as_str().unwrap()));
    let layer = blob(&dir, m["layers"][0]["digest"].as_str().unwrap());
    let good = fs::read(&layer).unwrap();

    let check = |args: &[&str], want: &[&str]| {
        let e = mkfs_fails(args);
        for w in want {
            assert!(e.contains(w), "{args:?}: {w:?} not in {e}");
        }
        assert!(!img.exists(), "{args:?} left an image");
    };
    // A missing layer blob, then a corrupt one.
    fs::remove_file(&layer).unwrap();
    check(&["--oci", s(&img), &src], &[s(&layer), "missing blob"]);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 9] ^= 0xff;
    fs::write(&layer, &bad).unwrap();
    check(&["--oci", s(&img), &src], &[s(&layer), "digest"]);
    fs::write(&layer, &good).unwrap();
    mkfs(&["--oci", s(&img), &src]);
    fs::remove_file(&img).unwrap();

    // A hostile layer: a path leaving the root (a valid blob with that content).
    let evil = tmp.path().join("evil");
    fs::create_dir(&evil).unwrap();
    let evil_tar = tmp.path().join("evil.tar");
    run(Command::new("tar")
        .args(["-C"])
        .arg(&evil)
        .args(["-cf"])
        .arg(&evil_tar)
        .args(["--transform", "s,^,../../,", "-P", "."]));
    // GNU tar strips leading ../ unless -P; make sure the entry really escapes.
    let listing = run(Command::new("tar").arg("-tPf").arg(&evil_tar)).stdout;
    assert!(String::from_utf8_lossy(&listing).contains("../"));
    let (d, size) = put_blob(&dir, &fs::read(&evil_tar).unwrap());
    let mut m2 = m.clone();
    m2["layers"][0]["digest"] = d.clone().into();
    m2["layers"][0]["size"] = size.into();
    m2["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
    let (md, ms) = put_blob(&dir, &serde_json::to_vec(&m2).unwrap());
    let mut desc = manifest.clone();
    desc["digest"] = md.into();
    desc["size"] = ms.into();
    write_index(&dir, vec![desc.clone()]);
    check(&["--oci", s(&img), s(&dir)], &[s(&blob(&dir, &d)), ".."]);

    // A descriptor whose digest would lead out of blobs/.
    let mut hostile = desc.clone();
    hostile["digest"] = "sha256:../../../../etc/passwd".into();
    write_index(&dir, vec![hostile]);
    check(&["--oci", s(&img), s(&dir)], &[s(&dir), "malformed digest"]);
    // index.json that is not JSON; no oci-layout file.
    fs::write(dir.join("index.json"), b"{not json").unwrap();
    check(&["--oci", s(&img), s(&dir)], &[s(&dir), "index.json"]);
    fs::remove_file(dir.join("oci-layout")).unwrap();
    check(&["--oci", s(&img), s(&dir)], &[s(&dir), "oci-layout"]);
    // Not a layout at all, and not a tar archive either.
    let junk = tmp.path().join("junk");
    fs::write(&junk, b"junk junk junk").unwrap();
    check(&["--oci", s(&img), s(&junk)], &[s(&junk)]);
    // Registries: refused, saying so.
    check(
        &["--oci", s(&img), "docker.io/library/alpine:latest"],
        &["registry is not supported"],
    );
    check(
        &["--oci=username=u,password=p", s(&img), s(&dir)],
        &["registry is not supported"],
    );
    check(
        &["--oci", "--tar=f", s(&img), s(&dir)],
        &["cannot be combined"],
    );
    check(&["--oci=layer=0,blob=abc", s(&img), s(&dir)], &["together"]);
}

/// A source with compressible and incompressible files.
fn compressible_source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let mut rng = ishare_testkit::rng::Rng::new(7);
    for i in 0..24 {
        let mut text = rng.text(20_000 + i * 7_001);
        if i % 5 == 0 {
            text.extend(rng.bytes(9_000));
        }
        ishare_testkit::tree::write_file(&src, &format!("d{}/f{i}", i % 3), &text);
    }
    ishare_testkit::tree::write_file(&src, "empty", b"");
    ishare_testkit::tree::write_file(&src, "small", b"tiny");
    src
}

/// `-z libdeflate` at its default, lowest and highest levels and LZMA with `lc=`,
/// `lp=`, `pb=`: the kernel shows the source; the images are at most 1.01× the size
/// of mkfs.erofs 1.9.4's with the same option; bad parameters are refused.
#[test]
fn libdeflate_and_lzma_parameters() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = compressible_source(tmp.path());
    let want = snapshot(&src);
    let ours = tmp.path().join("ours.erofs");
    let theirs = tmp.path().join("theirs.erofs");
    for z in [
        "libdeflate",
        "libdeflate,0",
        "libdeflate,level=12",
        "lzma,lc=0,lp=2,pb=0",
        "lzma,level=6,lc=4,pb=4",
        "lzma,lp=4,lc=0",
    ] {
        let zarg = format!("-z{z}");
        mkfs(&[&zarg, "-T0", "-Uclear", s(&ours), s(&src)]);
        run(Command::new(mkfs_194())
            .args([&zarg, "--quiet", "-T0", "-Uclear"])
            .arg(&theirs)
            .arg(&src));
        ishare_testkit::assert_trees_eq(
            &format!("ishare -z{z}"),
            &mounted(&ours),
            "source",
            &want,
            &CompareOpts {
                ignore_mtime: true,
                ..CompareOpts::EXACT
            },
        );
        fsck_ok(&ours);
        let (a, b) = (
            fs::metadata(&ours).unwrap().len(),
            fs::metadata(&theirs).unwrap().len(),
        );
        eprintln!("-z{z}: ishare {a} bytes, mkfs.erofs 1.9.4 {b} bytes");
        assert!(a * 100 <= b * 101, "-z{z}: {a} > 1.01 × {b}");
    }
    for (z, want) in [
        ("lzma,lc=3,lp=2", "lc + lp"),
        ("lzma,pb=5", "0 to 4"),
        ("lzma,lc=-1", "lc=-1"),
        ("lz4,lc=1", "unknown option"),
        ("libdeflate,13", "0-12"),
    ] {
        let e = mkfs_fails(&[&format!("-z{z}"), s(&ours), s(&src)]);
        assert!(e.contains(want), "-z{z}: {e}");
    }
}

/// `--vmdk-desc`: the descriptor erofs-utils writes for a tar index (the image then
/// the tar as flat extents, CID from the UUID, IDE geometry), with ishare's own
/// image and tar sizes; and for a directory build, the image alone.
#[test]
fn vmdk_descriptor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = compressible_source(tmp.path());
    let tarball = tmp.path().join("l.tar");
    tar_of(&src, &tarball);
    let uuid = "01020304-0506-0708-090a-0b0c0d0e0f10";
    let (ours, theirs) = (tmp.path().join("ours.vmdk"), tmp.path().join("theirs.vmdk"));
    let (img, ref_img) = (tmp.path().join("i.erofs"), tmp.path().join("r.erofs"));
    for (tar, extra) in [(true, Some(&tarball)), (false, None)] {
        let source = if tar { &tarball } else { &src };
        let mode: &[&str] = if tar { &["--tar=i"] } else { &[] };
        let mut args: Vec<String> = mode.iter().map(|s| s.to_string()).collect();
        args.extend(["-U".into(), uuid.into(), "-T0".into()]);
        mkfs(
            &[
                args.iter().map(String::as_str).collect::<Vec<_>>(),
                vec![&format!("--vmdk-desc={}", s(&ours)), s(&img), s(source)],
            ]
            .concat(),
        );
        run(Command::new(mkfs_194())
            .arg("--quiet")
            .args(&args)
            .arg(format!("--vmdk-desc={}", s(&theirs)))
            .arg(&ref_img)
            .arg(source));
        let sectors = |p: &Path| fs::metadata(p).unwrap().len().div_ceil(512);
        let extents = |d: &str| -> Vec<String> {
            d.lines()
                .filter(|l| l.starts_with("RW "))
                .map(str::to_owned)
                .collect()
        };
        let (o, t) = (
            fs::read_to_string(&ours).unwrap(),
            fs::read_to_string(&theirs).unwrap(),
        );
        let mut want = vec![format!("RW {} FLAT \"{}\" 0", sectors(&img), s(&img))];
        if let Some(x) = extra {
            want.push(format!("RW {} FLAT \"{}\" 0", sectors(x), s(x)));
        }
        assert_eq!(extents(&o), want);
        assert_eq!(extents(&t).len(), want.len(), "{t}");
        // Everything but the extents and the geometry (which follows the sizes) is
        // erofs-utils' text, CID included.
        let rest = |d: &str| -> Vec<String> {
            d.lines()
                .filter(|l| !l.starts_with("RW ") && !l.contains("cylinders"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(rest(&o), rest(&t));
        assert!(o.contains("CID=10000000\n"), "{o}");
        let total: u64 = want
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(o.contains(&format!("cylinders = \"{}\"", total.div_ceil(16 * 63))));
    }
    let e = mkfs_fails(&["--tar=i", "--vmdk-desc=x.vmdk", s(&img)]);
    assert!(e.contains("standard input"), "{e}");
}

/// `--gzinfo=X`: the SOCI zinfo of a gzip tar is byte for byte erofs-utils' (the
/// same checkpoints, offsets, bits and windows); with it `--tar=i` indexes a gzip
/// tar, and the index mounted over the decompressed tar shows the tar's tree.
#[test]
fn gzinfo_like_erofs_utils() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut rng = ishare_testkit::rng::Rng::new(11);
    for i in 0..14 {
        let mut data = rng.text(700_000);
        data.extend(rng.bytes(300_000));
        ishare_testkit::tree::write_file(&src, &format!("d/f{i}"), &data);
    }
    let tarball = tmp.path().join("l.tar");
    tar_of(&src, &tarball);
    run(Command::new("gzip").arg("-k").arg(&tarball));
    let gz = tmp.path().join("l.tar.gz");
    let (ours, theirs) = (
        tmp.path().join("ours.zinfo"),
        tmp.path().join("theirs.zinfo"),
    );
    let img = tmp.path().join("f.erofs");
    mkfs(&[
        "--tar=f",
        &format!("--gzinfo={}", s(&ours)),
        s(&img),
        s(&gz),
    ]);
    run(Command::new(mkfs_194())
        .args(["--quiet", "--tar=f"])
        .arg(format!("--gzinfo={}", s(&theirs)))
        .arg(tmp.path().join("ref.erofs"))
        .arg(&gz));
    let (o, t) = (fs::read(&ours).unwrap(), fs::read(&theirs).unwrap());
    let checkpoints = u32::from_le_bytes(o[..4].try_into().unwrap());
    assert!(checkpoints >= 3, "{checkpoints} checkpoints");
    assert_eq!(o.len(), 12 + checkpoints as usize * (17 + 32768));
    assert!(o == t, "zinfo differs from erofs-utils'");
    fsck_ok(&img);

    // A tar index of the gzip tar, through the zinfo's view: the decompressed tar is
    // its device.
    let idx = tmp.path().join("i.erofs");
    mkfs(&[
        "--tar=i",
        &format!("--gzinfo={}", s(&ours)),
        s(&idx),
        s(&gz),
    ]);
    assert!(fs::read(&ours).unwrap() == t);
    {
        use ishare_testkit::mounts::ErofsMount;
        let m = ErofsMount::new(&idx, std::slice::from_ref(&tarball));
        ishare_testkit::assert_trees_eq(
            "--tar=i --gzinfo of l.tar.gz, device=l.tar",
            &snapshot(m.path()),
            "--tar=f of l.tar.gz",
            &mounted(&img),
            &CompareOpts::ALL,
        );
    }
    let e = mkfs_fails(&["--tar=f", "--gzinfo=x", s(&img), s(&tarball)]);
    assert!(e.contains(s(&tarball)) && e.contains("gzip"), "{e}");
    let e = mkfs_fails(&["--gzinfo=x", s(&img), s(&src)]);
    assert!(e.contains("needs --tar"), "{e}");
}

/// The lines of a block map: (first block, blocks, tar offset, zeroed tail).
fn map_lines(p: &Path) -> Vec<(u64, u64, u64, u64)> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() == 3 || f.len() == 4, "bad map line {l:?}");
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
            let zeroed = f.get(3).map_or(0, |z| z.parse().unwrap());
            (hex(f[0]), hex(f[1]), hex(f[2]), zeroed)
        })
        .collect()
}

/// `--tar=i,MAPFILE`: every regular file's data has whole image blocks, listed with
/// its tar offset as erofs-utils lists them (the same files and offsets; blocks may
/// be in another order), and the image holds that data (the kernel shows the tar's
/// tree); `--tar=f,MAPFILE` leaves the map empty, as erofs-utils does.
#[test]
fn tar_block_map() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = compressible_source(tmp.path());
    let tarball = tmp.path().join("l.tar");
    tar_of(&src, &tarball);
    let tar = fs::read(&tarball).unwrap();
    let (img, ref_img) = (tmp.path().join("i.erofs"), tmp.path().join("r.erofs"));
    let (map, ref_map) = (tmp.path().join("ours.map"), tmp.path().join("theirs.map"));
    mkfs(&[&format!("--tar=i,{}", s(&map)), s(&img), s(&tarball)]);
    run(Command::new(mkfs_194())
        .args(["--quiet", &format!("--tar=i,{}", s(&ref_map))])
        .arg(&ref_img)
        .arg(&tarball));
    let (ours, theirs) = (map_lines(&map), map_lines(&ref_map));
    let key = |v: &[(u64, u64, u64, u64)]| {
        let mut k: Vec<(u64, u64, u64)> = v.iter().map(|l| (l.2, l.1, l.3)).collect();
        k.sort();
        k
    };
    assert!(!ours.is_empty());
    assert_eq!(key(&ours), key(&theirs));
    // The mapped blocks hold the tar's bytes, then zeros.
    let image = fs::read(&img).unwrap();
    for &(blk, n, off, zeroed) in &ours {
        let (at, len) = ((blk * 4096) as usize, (n * 4096 - zeroed) as usize);
        assert!(image[at..at + len] == tar[off as usize..off as usize + len]);
        assert!(
            image[at + len..at + (n * 4096) as usize]
                .iter()
                .all(|&b| b == 0)
        );
    }
    let full = tmp.path().join("f.erofs");
    let fmap = tmp.path().join("f.map");
    mkfs(&[&format!("--tar=f,{}", s(&fmap)), s(&full), s(&tarball)]);
    assert_eq!(fs::read(&fmap).unwrap(), b"");
    ishare_testkit::assert_trees_eq(
        "--tar=i,MAP",
        &mounted(&img),
        "--tar=f",
        &mounted(&full),
        &CompareOpts::ALL,
    );
    fsck_ok(&img);
    let e = mkfs_fails(&[
        &format!("--tar=i,{}", s(&map)),
        "-zlz4",
        s(&img),
        s(&tarball),
    ]);
    assert!(e.contains("-z"), "{e}");
}
