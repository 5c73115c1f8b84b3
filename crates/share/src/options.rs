//! `ishare mount -o OPTIONS`: the kernel's EROFS option names where they exist
//! (`inode_share`, `domain_id=`, `device=`, `ro`), plus ours (`domain_id_file=`,
//! `store=`, `verify=`, `passthrough=`, `prepare=`, `allow_other`, `threads=`, `spin=`,
//! `log=`).

use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use crate::error::{Error, Result};

/// Where shared objects live unless `store=DIR` says otherwise. Everything in it can
/// be rebuilt from the images (a cache in the FHS sense), hence `/var/cache`.
pub const DEFAULT_STORE: &str = "/var/cache/ishare/store";

/// Environment variable that may hold the domain id instead of `-o domain_id=`, so the
/// id stays off command lines (which every user can read in `/proc/PID/cmdline`).
pub const DOMAIN_ID_ENV: &str = "ISHARE_DOMAIN_ID";

/// The trusted domain of `inode_share`. A secret: its `Debug` never shows it, and it
/// is wiped (best effort) when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DomainId(Vec<u8>);

impl DomainId {
    /// Wraps the id bytes.
    pub fn new(id: impl Into<Vec<u8>>) -> Self {
        DomainId(id.into())
    }

    /// The id bytes (used only as a hash key).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DomainId(<secret>)")
    }
}

impl Drop for DomainId {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// `passthrough=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// Use kernel FUSE passthrough when the kernel and our privileges allow it.
    Auto,
    /// Require passthrough; the mount fails without it.
    On,
    /// Never use passthrough: the daemon serves every read.
    Off,
}

/// `mode=`: who serves the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountBackend {
    /// The kernel's EROFS when it has `inode_share` and every fingerprint of the image
    /// is verified (node daemon only), else FUSE.
    Auto,
    /// Always FUSE.
    Fuse,
    /// The kernel's EROFS, or the mount fails saying why.
    Kernel,
}

/// Parsed mount options.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// `inode_share`: share the page cache of files with equal fingerprints.
    pub inode_share: bool,
    /// `domain_id=ID`: the trusted domain (required with `inode_share`).
    pub domain_id: Option<DomainId>,
    /// `device=PATH` (repeatable): extra devices in device table order.
    pub devices: Vec<PathBuf>,
    /// `store=DIR`.
    pub store: PathBuf,
    /// `verify=on|off`: check `sha256:` fingerprints against the content before sharing.
    pub verify: bool,
    /// `passthrough=auto|on|off`.
    pub passthrough: Passthrough,
    /// `mode=auto|fuse|kernel`.
    pub mode: MountBackend,
    /// `prepare=mount|open`: verify shared files and make their objects in the
    /// background from mount on (`mount`, the default), or at each file's first open.
    pub prepare_ahead: bool,
    /// `allow_other`: let every user access the mount (FUSE restricts it to the mounter
    /// otherwise).
    pub allow_other: bool,
    /// `threads=N`: FUSE worker threads (default 1).
    pub threads: usize,
    /// `spin=MICROSECONDS|auto`: how long a FUSE thread keeps asking for the next
    /// request before it sleeps (0: it sleeps at once). `None` is `auto` (the default):
    /// no spinning where the kernel wakes FUSE threads on the reader's CPU, else
    /// `DEFAULT_SPIN_US` (see `crate::wakeup`).
    pub spin_us: Option<u32>,
    /// `log=FILE`: where a detached daemon writes its log (default: syslog's `/dev/log`
    /// when present, else nowhere).
    pub log: Option<PathBuf>,
    /// `dev`/`nodev`, `suid`/`nosuid`, `exec`/`noexec`: as `mount -t erofs` (`dev`,
    /// `suid`, `exec`), except that `allow_other` makes `nodev,nosuid` the default:
    /// a mount every user may enter must not hand them a set-uid-root binary or a device
    /// node from the image unless the mounter asked for it (`suid`, `dev`).
    pub dev: bool,
    /// See `dev`.
    pub suid: bool,
    /// See `dev`.
    pub exec: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            inode_share: false,
            domain_id: None,
            devices: Vec::new(),
            store: PathBuf::from(DEFAULT_STORE),
            verify: true,
            passthrough: Passthrough::Auto,
            mode: MountBackend::Auto,
            prepare_ahead: true,
            allow_other: false,
            threads: default_threads(),
            spin_us: None,
            log: None,
            dev: true,
            suid: true,
            exec: true,
        }
    }
}

/// One FUSE thread per mount: a second one reading the same connection only adds
/// wake-ups to every request, and slow first opens run on the open pool (see
/// `crate::fs`), not on this thread.
fn default_threads() -> usize {
    1
}

/// How long a mount's FUSE thread keeps asking for the next request after one, in
/// microseconds, where the kernel does not wake it on the reader's CPU (`spin=auto`; see
/// `crate::wakeup`). A process opening file after file sends the next request a few
/// microseconds after the last answer: taken while the thread still asks, it costs no
/// wake-up of the thread (on this project's 2-vCPU virtual machine, whose idle CPUs
/// halt, one open and close 70–74 → 24–27 µs, reading the ten-image family warm
/// 11.6 → 8.2 s). The thread spins only while most requests come this soon (see the
/// vendored fuser's `Spin`): spinning after every request made 100 execs on one mount
/// 27% slower, the CPU taken from the processes between their opens; 200 µs read a
/// little faster (7.8 s) and exec'd slower (up to 1.2×).
pub const DEFAULT_SPIN_US: u32 = 50;
/// The largest `spin=`.
const MAX_SPIN_US: u32 = 100_000;

/// The warning for `domain_id=` given in `-o` lists that stood on a command line (which
/// every user can read in `/proc/PID/cmdline`); `None` when no list names it. Never
/// holds the id.
pub fn command_line_domain_warning<S: AsRef<str>>(lists: &[S]) -> Option<String> {
    let given = lists
        .iter()
        .flat_map(|l| l.as_ref().split(','))
        .any(|o| o.starts_with("domain_id="));
    given.then(|| {
        format!(
            "warning: domain_id= on a command line is readable by every user (/proc/PID/cmdline); \
             use -o domain_id_file=PATH (a root-only file) or {DOMAIN_ID_ENV} instead"
        )
    })
}

/// Reads the domain id from `domain_id_file=PATH`: a regular file (not a symlink: opened
/// with O_NOFOLLOW, then checked with fstat so nothing can swap it in between) owned by
/// root or by us, which neither group nor others may read or write, as a secret must be.
/// The content, less one trailing newline, is the id. Errors name the path, never the
/// content.
pub fn read_domain_id_file(path: &Path) -> Result<DomainId> {
    let why = |msg: &str| bad(format!("domain_id_file={}: {msg}", path.display()));
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => why("is a symbolic link (refused)"),
        e => why(&std::io::Error::from(e).to_string()),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| why(&std::io::Error::from(e).to_string()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(why("not a regular file"));
    }
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(why("not owned by root (refused: others could set the id)"));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(why(&format!(
            "mode {:04o}: group or others may read or write it (must be 0600 or 0400)",
            st.st_mode & 0o7777
        )));
    }
    let mut buf = Vec::new();
    // Bounded: an id is short; a huge file is a mistake, not an id.
    std::fs::File::from(fd)
        .take(4097)
        .read_to_end(&mut buf)
        .map_err(|e| why(&e.to_string()))?;
    if buf.len() > 4096 {
        buf.fill(0);
        return Err(why("longer than 4096 bytes"));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.is_empty() {
        return Err(why("empty"));
    }
    Ok(DomainId::new(buf))
}

/// The value of [`DOMAIN_ID_ENV`] in this process's environment.
pub fn domain_from_env() -> Option<Vec<u8>> {
    std::env::var_os(DOMAIN_ID_ENV).map(|v| v.as_bytes().to_vec())
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadOption(msg.into())
}

fn on_off(name: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "1" | "yes" | "true" => Ok(true),
        "off" | "0" | "no" | "false" => Ok(false),
        _ => Err(bad(format!("{name}={v}: expected on or off"))),
    }
}

impl MountOptions {
    /// Parses comma-separated option lists (each `-o` argument is one list).
    /// `env_domain` is the value of [`DOMAIN_ID_ENV`], used when no `domain_id=` is given.
    pub fn parse<S: AsRef<str>>(lists: &[S], env_domain: Option<Vec<u8>>) -> Result<Self> {
        let mut o = MountOptions::default();
        let (mut dev, mut suid) = (None, None);
        let mut id_file = None;
        for list in lists {
            for opt in list.as_ref().split(',').filter(|s| !s.is_empty()) {
                let (name, value) = match opt.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (opt, None),
                };
                let need = || value.ok_or_else(|| bad(format!("option {name} needs a value")));
                let flag = |v: Option<&str>| match v {
                    None => Ok(()),
                    Some(_) => Err(bad(format!("option {name} takes no value"))),
                };
                match name {
                    "inode_share" => {
                        flag(value)?;
                        o.inode_share = true;
                    }
                    "domain_id" => {
                        let v = need()?;
                        if v.is_empty() {
                            return Err(bad("domain_id must not be empty"));
                        }
                        o.domain_id = Some(DomainId::new(v.as_bytes()));
                    }
                    "domain_id_file" => {
                        let v = need()?;
                        if v.is_empty() {
                            return Err(bad("domain_id_file must not be empty"));
                        }
                        id_file = Some(PathBuf::from(v));
                    }
                    "device" => o.devices.push(PathBuf::from(need()?)),
                    "store" => {
                        let v = need()?;
                        if v.is_empty() {
                            return Err(bad("store must not be empty"));
                        }
                        o.store = PathBuf::from(v);
                    }
                    "verify" => o.verify = on_off(name, need()?)?,
                    "passthrough" => {
                        o.passthrough = match need()? {
                            "auto" => Passthrough::Auto,
                            "on" => Passthrough::On,
                            "off" => Passthrough::Off,
                            v => {
                                return Err(bad(format!(
                                    "passthrough={v}: expected auto, on or off"
                                )));
                            }
                        }
                    }
                    "mode" => {
                        o.mode = match need()? {
                            "auto" => MountBackend::Auto,
                            "fuse" => MountBackend::Fuse,
                            "kernel" => MountBackend::Kernel,
                            v => {
                                return Err(bad(format!(
                                    "mode={v}: expected auto, fuse or kernel"
                                )));
                            }
                        }
                    }
                    "prepare" => {
                        o.prepare_ahead = match need()? {
                            "mount" => true,
                            "open" => false,
                            v => return Err(bad(format!("prepare={v}: expected mount or open"))),
                        }
                    }
                    "allow_other" => {
                        flag(value)?;
                        o.allow_other = true;
                    }
                    "threads" => {
                        let v = need()?;
                        o.threads = v
                            .parse()
                            .ok()
                            .filter(|n| (1..=256).contains(n))
                            .ok_or_else(|| bad(format!("threads={v}: expected 1 to 256")))?;
                    }
                    "spin" => {
                        let v = need()?;
                        o.spin_us = if v == "auto" {
                            None
                        } else {
                            Some(v.parse().ok().filter(|n| *n <= MAX_SPIN_US).ok_or_else(
                                || {
                                    bad(format!(
                                        "spin={v}: expected auto or 0 to {MAX_SPIN_US} (microseconds)"
                                    ))
                                },
                            )?)
                        };
                    }
                    "log" => o.log = Some(PathBuf::from(need()?)),
                    "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" => {
                        flag(value)?;
                        let on = !name.starts_with("no");
                        match name.trim_start_matches("no") {
                            "dev" => dev = Some(on),
                            "suid" => suid = Some(on),
                            _ => o.exec = on,
                        }
                    }
                    // Accepted for compatibility with `mount -t erofs` option lists: EROFS
                    // is always read-only and always shows user xattrs and ACLs.
                    "ro" | "defaults" | "user_xattr" | "acl" | "noatime" | "relatime"
                    | "nodiratime" => flag(value)?,
                    // mount(8)'s and fstab's own options, which mount(8) passes on to
                    // helpers (mount.fuse3 ignores them too): they mean nothing to the mount.
                    "nofail" | "auto" | "noauto" | "user" | "nouser" | "users" | "owner"
                    | "group" | "_netdev" => flag(value)?,
                    _ if name.starts_with("x-") || name == "comment" => {}
                    "rw" => return Err(bad("EROFS images are read-only: rw is not possible")),
                    _ => return Err(bad(format!("unknown mount option {name:?}"))),
                }
            }
        }
        // Unset, they follow allow_other (see `dev`).
        o.dev = dev.unwrap_or(!o.allow_other);
        o.suid = suid.unwrap_or(!o.allow_other);
        if let Some(path) = id_file {
            if o.domain_id.is_some() {
                return Err(bad("domain_id= and domain_id_file= exclude each other"));
            }
            o.domain_id = Some(read_domain_id_file(&path)?);
        }
        if o.domain_id.is_none()
            && let Some(env) = env_domain.filter(|v| !v.is_empty())
        {
            o.domain_id = Some(DomainId::new(env));
        }
        // The kernel: "domain_id is needed when inode_ishare is on".
        if o.inode_share && o.domain_id.is_none() {
            return Err(bad(format!(
                "inode_share needs domain_id=ID (or {DOMAIN_ID_ENV} in the environment), as the kernel requires"
            )));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_and_own_options() {
        let o = MountOptions::parse(
            &[
                "ro,inode_share,domain_id=abc",
                "device=/a,device=/b,store=/s,verify=off,passthrough=off,allow_other,threads=3,prepare=open",
            ],
            None,
        )
        .unwrap();
        assert!(o.inode_share);
        assert_eq!(o.domain_id.as_ref().unwrap().expose(), b"abc");
        assert_eq!(o.devices, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.store, PathBuf::from("/s"));
        assert!(!o.verify);
        assert_eq!(o.passthrough, Passthrough::Off);
        assert_eq!(o.mode, MountBackend::Auto);
        assert!(!o.prepare_ahead);
        assert!(o.allow_other);
        assert_eq!(o.threads, 3);
        assert!(
            !format!("{o:?}").contains("abc"),
            "the domain id leaks through Debug"
        );
    }

    #[test]
    fn spin_is_microseconds_within_bounds() {
        let o = MountOptions::parse(&["ro"], None).unwrap();
        assert_eq!(o.spin_us, None);
        let o = MountOptions::parse(&["spin=0"], None).unwrap();
        assert_eq!(o.spin_us, Some(0));
        let o = MountOptions::parse(&["spin=1000"], None).unwrap();
        assert_eq!(o.spin_us, Some(1000));
        let o = MountOptions::parse(&["spin=1000", "spin=auto"], None).unwrap();
        assert_eq!(o.spin_us, None);
        for bad in ["spin=", "spin=-1", "spin=1ms", "spin=100001"] {
            let e = MountOptions::parse(&[bad], None).unwrap_err();
            assert!(e.to_string().contains("spin="), "{bad}: {e}");
        }
    }

    #[test]
    fn mode_picks_who_serves() {
        for (v, want) in [
            ("auto", MountBackend::Auto),
            ("fuse", MountBackend::Fuse),
            ("kernel", MountBackend::Kernel),
        ] {
            let o = MountOptions::parse(&[format!("mode={v}")], None).unwrap();
            assert_eq!(o.mode, want);
        }
    }

    #[test]
    fn inode_share_needs_domain_id() {
        let e = MountOptions::parse(&["inode_share"], None).unwrap_err();
        assert!(e.to_string().contains("domain_id"), "{e}");
        let o = MountOptions::parse(&["inode_share"], Some(b"env".to_vec())).unwrap();
        assert_eq!(o.domain_id.unwrap().expose(), b"env");
        assert!(MountOptions::parse(&["domain_id="], None).is_err());
    }

    #[test]
    fn fstab_options_are_accepted_and_mean_nothing() {
        let o = MountOptions::parse(
            &["nofail,noauto,_netdev,x-systemd.requires=a.service,comment=x,users"],
            None,
        )
        .unwrap();
        assert_eq!(
            format!("{o:?}"),
            format!("{:?}", MountOptions::parse(&["ro"], None).unwrap())
        );
        assert!(MountOptions::parse(&["nofail=1"], None).is_err());
        assert!(MountOptions::parse(&["nofile"], None).is_err());
    }

    #[test]
    fn allow_other_defaults_to_nosuid_nodev() {
        let o = MountOptions::parse(&["ro"], None).unwrap();
        assert!(o.suid && o.dev && o.exec);
        let o = MountOptions::parse(&["allow_other"], None).unwrap();
        assert!(!o.suid && !o.dev && o.exec);
        let o = MountOptions::parse(&["suid,allow_other,dev"], None).unwrap();
        assert!(o.suid && o.dev);
    }

    #[test]
    fn domain_id_file_rules() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("id");
        std::fs::write(&f, "fileid\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let opt = format!("inode_share,domain_id_file={}", f.display());
        let o = MountOptions::parse(&[&opt], Some(b"env".to_vec())).unwrap();
        assert_eq!(o.domain_id.unwrap().expose(), b"fileid");
        let both = format!("{opt},domain_id=x");
        assert!(MountOptions::parse(&[&both], None).is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = MountOptions::parse(&[&opt], None).unwrap_err();
        assert!(!e.to_string().contains("fileid"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let opt = format!("inode_share,domain_id_file={}", link.display());
        assert!(MountOptions::parse(&[&opt], None).is_err());
        assert!(
            command_line_domain_warning(&["ro,domain_id=s3cret"])
                .is_some_and(|w| !w.contains("s3cret"))
        );
        assert!(command_line_domain_warning(&[opt]).is_none());
    }

    #[test]
    fn refuses_bad_options() {
        for bad in [
            "rw",
            "bogus",
            "verify=maybe",
            "threads=0",
            "passthrough=x",
            "prepare=later",
            "mode=bogus",
            "mode",
            "inode_share=1",
        ] {
            assert!(MountOptions::parse(&[bad], None).is_err(), "{bad} accepted");
        }
    }
}
