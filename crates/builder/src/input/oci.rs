//! OCI image input (`mkfs.erofs --oci`): finds an image's layers in a local OCI
//! image layout (a directory with `oci-layout`, `index.json` and `blobs/`, or a tar
//! archive of one), which the tar input then applies in order.
//!
//! The image is picked as container tools pick it: `SOURCE:REF` names it by its
//! `org.opencontainers.image.ref.name` annotation (needed when the index holds
//! several), nested indexes (multi-platform images) are followed and the manifest
//! for the wanted platform (the host's unless given) is taken. Every blob read is
//! checked against its descriptor's digest and size, and blob paths are made only
//! from well-formed digests, so a hostile layout cannot point outside itself.
//! Registries are not contacted: remote images are not supported.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest as _;

use super::tar::Layer;
use crate::error::{Error, Result};

/// Largest JSON document (index or manifest) read.
const MAX_JSON: u64 = 16 << 20;
/// How deep indexes may nest.
const MAX_NESTING: usize = 8;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's full image name annotation (`ctr images export`).
const CONTAINERD_NAME: &str = "io.containerd.image.name";

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Which layers of the image to build from (`--oci=layer=N` / `blob=DIGEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciLayer {
    /// The layer at this index of the manifest (0 = lowest).
    Index(usize),
    /// The layer with this digest (`sha256:...`).
    Blob(String),
}

/// A local OCI image to build from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    /// The layout directory or archive, optionally followed by `:REF`.
    pub path: PathBuf,
    /// `os/arch[/variant]`; `None` = the host's.
    pub platform: Option<String>,
    /// One layer only; `None` = all of them, applied in order.
    pub layer: Option<OciLayer>,
}

/// The layers found, and the unpacked archive they live in (if any).
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The layout as named in messages.
    pub(crate) name: PathBuf,
    pub(crate) layers: Vec<Layer>,
    /// The unpacked archive, removed when the build is over.
    pub(crate) unpacked: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    fn spec(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// Does `want` (`os/arch[/variant]`) describe this platform? A wanted
    /// platform without a variant takes any.
    fn matches(&self, want: &str) -> bool {
        let mut w = want.split('/');
        let (os, arch, variant) = (w.next(), w.next(), w.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The host's platform as OCI spells it.
fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        a => a,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

fn err(path: &Path, what: impl Into<String>) -> Error {
    Error::Oci {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Finds the layers of `src`; an archive is unpacked into a temporary directory
/// in `work_dir`.
pub(crate) fn resolve(src: &OciSource, work_dir: &Path) -> Result<Resolved> {
    let (path, reference) = split_reference(&src.path)?;
    let (root, unpacked) = if path.is_dir() {
        (path.clone(), None)
    } else {
        let dir = tempfile::Builder::new()
            .prefix(".oci-layout-")
            .tempdir_in(work_dir)
            .map_err(|e| Error::io(work_dir, "create a temporary directory in", e))?;
        unpack(&path, dir.path())?;
        (dir.path().to_path_buf(), Some(dir))
    };
    let layout = Layout {
        root: &root,
        name: &path,
    };
    layout.check_version()?;
    let manifest = layout.pick_manifest(reference.as_deref(), src.platform.as_deref())?;
    let m: Manifest = layout.json(&manifest, "image manifest")?;
    // A platform asked for, and an index that did not say: the image config does.
    if let (Some(want), None, Some(config)) = (&src.platform, &manifest.platform, &m.config) {
        let p: Platform = layout.json(config, "image config")?;
        if !p.matches(want) {
            return Err(err(
                &path,
                format!("the image is for platform {}, not {want}", p.spec()),
            ));
        }
    }
    let mut descs = m.layers;
    for (i, d) in descs.iter().enumerate() {
        if !LAYER_TYPES.contains(&d.media_type.as_str()) {
            return Err(err(
                &path,
                format!(
                    "layer {i} ({}) has media type {:?}, not a tar layer ishare can read \
                     (plain, gzip or zstd)",
                    d.digest, d.media_type
                ),
            ));
        }
    }
    match &src.layer {
        None => {}
        Some(OciLayer::Index(i)) => {
            if *i >= descs.len() {
                return Err(err(
                    &path,
                    format!(
                        "layer={i}: the image has {} layer(s) (0 to {})",
                        descs.len(),
                        descs.len().saturating_sub(1)
                    ),
                ));
            }
            descs = vec![descs.swap_remove(*i)];
        }
        Some(OciLayer::Blob(b)) => {
            let want = if b.contains(':') {
                b.clone()
            } else {
                format!("sha256:{b}")
            };
            let Some(d) = descs.iter().find(|d| d.digest == want) else {
                return Err(err(
                    &path,
                    format!("blob={b}: no layer of the image has it"),
                ));
            };
            descs = vec![d.clone()];
        }
    }
    let mut layers = Vec::with_capacity(descs.len());
    for d in &descs {
        let blob = layout.blob_path(d)?;
        layout.verify(&blob, d)?;
        layers.push(Layer { path: blob });
    }
    Ok(Resolved {
        name: path,
        layers,
        unpacked,
    })
}

/// `PATH` or `PATH:REF`: the whole string if it exists, else split at the first `:`
/// after which the rest names something that exists (REF may itself hold `:` and
/// `/`, as containerd's full image names do).
fn split_reference(p: &Path) -> Result<(PathBuf, Option<String>)> {
    if p.exists() {
        return Ok((p.to_path_buf(), None));
    }
    let s = p.to_string_lossy();
    for (i, _) in s.match_indices(':') {
        let (path, r) = (&s[..i], &s[i + 1..]);
        if !path.is_empty() && !r.is_empty() && Path::new(path).exists() {
            return Ok((PathBuf::from(path), Some(r.to_owned())));
        }
    }
    Err(err(
        p,
        "no such OCI image layout: give a local layout directory or a tar archive of \
         one, optionally followed by :REF (pulling from a registry is not supported)",
    ))
}

/// Copies the layout files of the archive `archive` (maybe gzip- or
/// zstd-compressed) into `dir`; other members are left out, so that no name in
/// the archive can write outside `dir`.
fn unpack(archive: &Path, dir: &Path) -> Result<()> {
    let mut f = File::open(archive).map_err(|e| Error::io(archive, "open", e))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(|e| Error::io(archive, "read", e))?;
    let f = File::open(archive).map_err(|e| Error::io(archive, "open", e))?;
    let input: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(f)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(
            zstd::stream::read::Decoder::new(f).map_err(|e| Error::io(archive, "read", e))?,
        ),
        _ => Box::new(f),
    };
    let bad = |e: io::Error| {
        err(
            archive,
            format!("not an OCI image layout directory nor a readable tar archive of one: {e}"),
        )
    };
    let mut a = ::tar::Archive::new(input);
    for entry in a.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type() != ::tar::EntryType::Regular {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let mut name: &[u8] = &raw;
        while let Some(rest) = name.strip_prefix(b"./") {
            name = rest;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let keep = match name {
            "oci-layout" | "index.json" => true,
            _ => name
                .strip_prefix("blobs/")
                .and_then(|b| b.split_once('/'))
                .is_some_and(|(alg, hex)| digest_ok(&format!("{alg}:{hex}"))),
        };
        if !keep {
            continue;
        }
        let to = dir.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create", e))?;
        }
        let mut out = File::create(&to).map_err(|e| Error::io(&to, "create", e))?;
        io::copy(&mut entry, &mut out).map_err(|e| {
            err(
                archive,
                format!("member {name}: cannot copy it to {}: {e}", to.display()),
            )
        })?;
    }
    Ok(())
}

/// `sha256:` and 64 lowercase hex digits, or `sha512:` and 128.
fn digest_ok(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A layout on disk, and how messages name it.
struct Layout<'a> {
    root: &'a Path,
    name: &'a Path,
}

impl Layout<'_> {
    /// `oci-layout` must be there and say version 1.x.
    fn check_version(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let p = self.root.join("oci-layout");
        let text = std::fs::read(&p).map_err(|e| {
            err(
                self.name,
                format!("not an OCI image layout: cannot read its oci-layout file: {e}"),
            )
        })?;
        let v: Version = serde_json::from_slice(&text)
            .map_err(|e| err(self.name, format!("oci-layout: not valid: {e}")))?;
        if !v.version.starts_with("1.") {
            return Err(err(
                self.name,
                format!(
                    "oci-layout: image layout version {} (ishare reads 1.x)",
                    v.version
                ),
            ));
        }
        Ok(())
    }

    /// The manifest to build from: by reference, through nested indexes, then by
    /// platform.
    fn pick_manifest(&self, reference: Option<&str>, platform: Option<&str>) -> Result<Descriptor> {
        let p = self.root.join("index.json");
        let text = read_limited(&p, MAX_JSON)
            .map_err(|e| err(self.name, format!("index.json: cannot read it: {e}")))?;
        let index: Index = serde_json::from_slice(&text).map_err(|e| {
            err(
                self.name,
                format!("index.json: not a valid image index: {e}"),
            )
        })?;
        let mut cands = index.manifests;
        if let Some(r) = reference {
            let names = |d: &Descriptor| {
                [REF_NAME, CONTAINERD_NAME]
                    .into_iter()
                    .filter_map(|k| d.annotations.get(k).cloned())
                    .collect::<Vec<_>>()
            };
            let all: Vec<String> = cands.iter().flat_map(names).collect();
            cands.retain(|d| names(d).iter().any(|n| n == r));
            if cands.is_empty() {
                return Err(err(
                    self.name,
                    format!(
                        "index.json names no image {r:?} (it has: {})",
                        list_or_none(&all)
                    ),
                ));
            }
        }
        // Several images, not all told apart by platform (a flat multi-platform
        // index): which one is the user's to say.
        if cands.len() > 1 && cands.iter().any(|d| d.platform.is_none()) {
            let refs: Vec<String> = cands
                .iter()
                .filter_map(|d| d.annotations.get(REF_NAME).cloned())
                .collect();
            return Err(err(
                self.name,
                format!(
                    "index.json lists {} images: name one as SOURCE:REF (its references: {})",
                    cands.len(),
                    list_or_none(&refs)
                ),
            ));
        }
        // Follow nested indexes (a multi-platform image) down to manifests.
        for _ in 0..MAX_NESTING {
            if !cands.iter().any(|d| self.is_index(d)) {
                break;
            }
            let mut next = Vec::new();
            for d in cands {
                if self.is_index(&d) {
                    let i: Index = self.json(&d, "image index")?;
                    next.extend(i.manifests);
                } else {
                    next.push(d);
                }
            }
            cands = next;
        }
        cands
            .retain(|d| d.media_type.is_empty() || MANIFEST_TYPES.contains(&d.media_type.as_str()));
        if cands.len() == 1 && platform.is_none() {
            return Ok(cands.remove(0));
        }
        let want = platform.map_or_else(host_platform, str::to_owned);
        let platforms: Vec<String> = cands
            .iter()
            .filter_map(|d| d.platform.as_ref().map(Platform::spec))
            .collect();
        let mut hits: Vec<Descriptor> = cands
            .iter()
            .filter(|d| match &d.platform {
                Some(p) => p.matches(&want),
                // A lone manifest without a platform is taken as it is.
                None => cands.len() == 1,
            })
            .cloned()
            .collect();
        match hits.len() {
            1 => Ok(hits.remove(0)),
            0 if cands.is_empty() => Err(err(self.name, "index.json lists no image manifest")),
            0 => Err(err(
                self.name,
                format!(
                    "no image for platform {want} (it has: {}); choose one with --oci=platform=OS/ARCH",
                    list_or_none(&platforms)
                ),
            )),
            n => Err(err(
                self.name,
                format!(
                    "{n} images match platform {want}: name one as SOURCE:REF \
                     (the layout's references: {})",
                    list_or_none(
                        &hits
                            .iter()
                            .filter_map(|d| d.annotations.get(REF_NAME).cloned())
                            .collect::<Vec<_>>()
                    )
                ),
            )),
        }
    }

    fn is_index(&self, d: &Descriptor) -> bool {
        INDEX_TYPES.contains(&d.media_type.as_str())
    }

    /// Where the blob of `d` is; its digest must be well-formed.
    fn blob_path(&self, d: &Descriptor) -> Result<PathBuf> {
        if !digest_ok(&d.digest) {
            return Err(err(
                self.name,
                format!("descriptor with a malformed digest {:?}", d.digest),
            ));
        }
        let (alg, hex) = d.digest.split_once(':').expect("digest_ok checked");
        let p = self.root.join("blobs").join(alg).join(hex);
        if !p.is_file() {
            return Err(err(
                &self.shown(&p),
                format!("missing blob {} (the layout is incomplete)", d.digest),
            ));
        }
        Ok(p)
    }

    /// `p` as the user knows it: inside the archive, named after the archive.
    fn shown(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(self.root) {
            Ok(rel) if self.root != self.name => self.name.join(rel),
            _ => p.to_path_buf(),
        }
    }

    /// Checks the blob's size and digest against its descriptor.
    fn verify(&self, blob: &Path, d: &Descriptor) -> Result<()> {
        let shown = self.shown(blob);
        let mut f = File::open(blob).map_err(|e| Error::io(&shown, "open", e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io(&shown, "stat", e))?
            .len();
        if len != d.size {
            return Err(err(
                &shown,
                format!("is {len} bytes, its descriptor says {}: corrupt", d.size),
            ));
        }
        let got = hash(&mut f, d.digest.starts_with("sha512:"))
            .map_err(|e| Error::io(&shown, "read", e))?;
        if got != d.digest {
            return Err(err(
                &shown,
                format!("its content has digest {got}, not {}: corrupt", d.digest),
            ));
        }
        Ok(())
    }

    /// Reads, checks and parses the JSON blob of `d`.
    fn json<T: for<'de> Deserialize<'de>>(&self, d: &Descriptor, what: &str) -> Result<T> {
        let p = self.blob_path(d)?;
        if d.size > MAX_JSON {
            return Err(err(
                &self.shown(&p),
                format!(
                    "{what} of {} bytes is larger than the {MAX_JSON} accepted",
                    d.size
                ),
            ));
        }
        self.verify(&p, d)?;
        let text = std::fs::read(&p).map_err(|e| Error::io(self.shown(&p), "read", e))?;
        serde_json::from_slice(&text)
            .map_err(|e| err(&self.shown(&p), format!("not a valid {what}: {e}")))
    }
}

fn read_limited(p: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(p)?.take(max + 1).read_to_end(&mut v)?;
    if v.len() as u64 > max {
        return Err(io::Error::other(format!(
            "larger than the {max} bytes accepted"
        )));
    }
    Ok(v)
}

/// `sha256:HEX` (or `sha512:HEX`) of everything `r` reads.
fn hash(r: &mut impl Read, sha512: bool) -> io::Result<String> {
    fn run<D: sha2::Digest>(r: &mut impl Read, mut h: D) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(h.finalize().to_vec()),
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    let (alg, bytes) = match sha512 {
        true => ("sha512", run(r, sha2::Sha512::new())?),
        false => ("sha256", run(r, sha2::Sha256::new())?),
    };
    Ok(format!("{alg}:{}", hex::encode(bytes)))
}

fn list_or_none(v: &[String]) -> String {
    match v.is_empty() {
        true => "none".into(),
        false => v.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_platforms() {
        assert!(digest_ok(&format!("sha256:{}", "a".repeat(64))));
        assert!(!digest_ok(&format!("sha256:{}", "A".repeat(64))));
        assert!(!digest_ok("sha256:../../etc/passwd"));
        assert!(!digest_ok(&format!("md5:{}", "a".repeat(32))));
        let p = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert!(p.matches("linux/arm64"));
        assert!(p.matches("linux/arm64/v8"));
        assert!(!p.matches("linux/arm64/v7"));
        assert!(!p.matches("linux/amd64"));
        assert_eq!(p.spec(), "linux/arm64/v8");
    }
}
