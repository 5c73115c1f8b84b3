//! The node daemon's control protocol: one JSON object per line each way, one request
//! and one reply per connection.
//!
//! # Contract
//!
//! * A request is at most [`MAX_REQUEST`] bytes up to its newline; a longer, cut or
//!   malformed one is answered with an error naming what is wrong, never a panic.
//! * The domain id travels only here (hex in `domain`), never in a command line, an
//!   argument vector or a log line: [`Request`]'s `Debug` hides it.
//! * Replies are `{"ok": true, ...}` or `{"ok": false, "error": "MESSAGE"}`; the
//!   message is complete as shown (it names the image or mount point).

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest request line accepted (options and paths are short; a flood is not).
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Mount `image` on `mountpoint` (both absolute) with `-o` lists `options`;
    /// `domain` is the client's `ISHARE_DOMAIN_ID` (hex), used when the lists name
    /// no domain id.
    Mount {
        /// The image.
        image: PathBuf,
        /// Where.
        mountpoint: PathBuf,
        /// The `-o` lists, as given.
        #[serde(default)]
        options: Vec<String>,
        /// The client's domain id from its environment, hex.
        #[serde(default)]
        domain: Option<String>,
    },
    /// Unmount the daemon's mount on `mountpoint` and wait for its session to end;
    /// `lazy` detaches a busy mount instead of failing.
    Unmount {
        /// The mount point (absolute).
        mountpoint: PathBuf,
        /// `MNT_DETACH`.
        #[serde(default)]
        lazy: bool,
    },
    /// The daemon's mounts.
    List {},
    /// Unmount every mount (lazily) and exit: `ishare daemon --stop`. (SIGTERM stops
    /// the daemon but keeps the mounts the fd holder holds, for the next daemon.)
    Stop {},
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Mount {
                image,
                mountpoint,
                options,
                domain,
            } => f
                .debug_struct("Mount")
                .field("image", image)
                .field("mountpoint", mountpoint)
                .field("options", &options.len())
                .field("domain", &domain.as_ref().map(|_| "<secret>"))
                .finish(),
            Request::Unmount { mountpoint, lazy } => f
                .debug_struct("Unmount")
                .field("mountpoint", mountpoint)
                .field("lazy", lazy)
                .finish(),
            Request::List {} => f.write_str("List"),
            Request::Stop {} => f.write_str("Stop"),
        }
    }
}

/// One mount, as `ishare mounts` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountInfo {
    /// The image file.
    pub image: PathBuf,
    /// The mount point.
    pub mountpoint: PathBuf,
    /// How files are served: `passthrough`, `daemon` (the daemon reads store
    /// objects), `unshared`, `kernel` (the kernel's own EROFS).
    pub mode: String,
    /// The mode in words, as the log says it.
    pub detail: String,
    /// Regular files served from a shared object so far.
    pub shared_files: u64,
    /// Their bytes.
    pub shared_bytes: u64,
    /// The preparation ahead (`prepare=mount`): `queued`, `running`, `done` or
    /// `stopped`; empty (and left out) without one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prepare: String,
    /// Files it found ready, verified or copied so far.
    #[serde(default)]
    pub prepared_files: u64,
}

/// A reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Whether the request was done.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `Mount`: the mount, as listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountInfo>,
    /// `List`: every mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<MountInfo>>,
    /// `List`: the daemon's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Reply {
    /// Done, nothing to say.
    pub fn done() -> Reply {
        Reply {
            ok: true,
            error: None,
            mount: None,
            mounts: None,
            pid: None,
        }
    }

    /// Not done, because of `msg`.
    pub fn failed(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
            ..Reply::done()
        }
    }
}

/// Writes `msg` as one line.
pub fn send<T: Serialize>(mut w: impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Reads one line of at most [`MAX_REQUEST`] bytes and parses it; the error says what
/// was wrong with it (in `InvalidData`).
pub fn receive<T: for<'de> Deserialize<'de>>(r: impl BufRead) -> io::Result<T> {
    let mut line = Vec::new();
    let n = r
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)?;
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    if n == 0 {
        return Err(bad("empty request (the connection closed)".into()));
    }
    if line.last() != Some(&b'\n') {
        return Err(bad(if n > MAX_REQUEST {
            format!("request longer than {MAX_REQUEST} bytes")
        } else {
            "request cut short (no newline)".into()
        }));
    }
    let parsed = serde_json::from_slice(&line).map_err(|e| bad(format!("malformed request: {e}")));
    line.fill(0);
    parsed
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The bytes of a hex string, `None` if it is not one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_hide_the_domain() {
        let r = Request::Mount {
            image: "/a.erofs".into(),
            mountpoint: "/m".into(),
            options: vec!["inode_share".into()],
            domain: Some(hex(b"s3cret")),
        };
        let mut buf = Vec::new();
        send(&mut buf, &r).unwrap();
        assert_eq!(receive::<Request>(&buf[..]).unwrap(), r);
        assert!(!format!("{r:?}").contains(&hex(b"s3cret")));
        assert_eq!(unhex(&hex(b"\x00\xffab")).unwrap(), b"\x00\xffab");
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }

    #[test]
    fn bad_requests_are_named() {
        for (input, says) in [
            (&b""[..], "empty"),
            (b"{\"op\":\"list\"}", "cut short"),
            (b"{\"op\":\"format_disk\"}\n", "malformed"),
            (b"{\"op\":\"list\",\"x\":1}\n", "malformed"),
            (b"\xff\xfe\n", "malformed"),
        ] {
            let e = receive::<Request>(input).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let long = vec![b' '; MAX_REQUEST + 10];
        let e = receive::<Request>(&long[..]).unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
    }
}
