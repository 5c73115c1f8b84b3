//! The holder's messages: one JSON object per `SOCK_SEQPACKET` message, a descriptor
//! attached with `SCM_RIGHTS` where the message carries a connection.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use super::HeldMount;

/// The longest message (a record is a few hundred bytes; options are short).
pub(super) const MAX_MESSAGE: usize = 64 * 1024;

/// A request or a reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Msg {
    /// Hold this mount (its connection attached); replaces an entry of the same mount.
    Put {
        /// The record.
        mount: HeldMount,
    },
    /// The mount ended: drop its entry.
    Drop {
        /// Its mount id.
        mount_id: u64,
    },
    /// The daemon registered backing file `id` for node `nid` of the mount (`None`: it
    /// closed it). Not answered (sent before the open is answered: it must be cheap).
    Backing {
        /// The mount.
        mount_id: u64,
        /// The node (NID-based node id of the image).
        nid: u64,
        /// The kernel's backing id.
        id: Option<u32>,
    },
    /// The sender serves the held mounts and says when one ends (`Drop`) for as long
    /// as it stays connected.
    Serving {},
    /// Send every held mount (each `Held` followed by its `Backing` registrations).
    Take {},
    /// One held mount (its connection attached), in answer to `Take`.
    Held {
        /// The record.
        mount: HeldMount,
    },
    /// Done.
    Done {},
    /// Not done, because of `error`.
    Failed {
        /// Why.
        error: String,
    },
}

/// Sends `msg` on `sock`, with `fd` attached.
pub(super) fn send(sock: BorrowedFd, msg: &Msg, fd: Option<BorrowedFd>) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("no room for a descriptor"));
        }
    }
    loop {
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(&body)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and its descriptor; `None` when the peer closed. With
/// `dontwait`, `WouldBlock` when nothing is queued.
pub(super) fn receive(
    sock: BorrowedFd,
    dontwait: bool,
) -> io::Result<Option<(Msg, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = if dontwait {
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
    } else {
        RecvFlags::CMSG_CLOEXEC
    };
    let got = loop {
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut buf)], &mut control, flags) {
            Ok(r) => break r,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                // The first is the one; any other closes here.
                if fd.is_none() {
                    fd = Some(f);
                }
            }
        }
    }
    if got.bytes == 0 && fd.is_none() {
        return Ok(None);
    }
    if got.flags.contains(ReturnFlags::TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message longer than {MAX_MESSAGE} bytes"),
        ));
    }
    let msg = serde_json::from_slice(&buf[..got.bytes]).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed message: {e}"),
        )
    });
    buf.fill(0);
    Ok(Some((msg?, fd)))
}
