//! Netlink over plain sockets: message framing, attributes and a request/answer client,
//! shared by the WireGuard reader (generic netlink) and the firewall reader (nftables).
//!
//! Building and parsing are pure functions over bytes; [`Client`] only moves those bytes
//! through the socket.
//!
//! Hand-written because labnode only reads, three message types in all: the netlink-packet
//! crates model every message kind of every family, and their socket layer (netlink-proto,
//! rtnetlink) is async, where the collectors poll on plain threads.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What can go wrong over netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A socket call failed.
    #[error("netlink: {what}: {source}")]
    Io {
        /// The call.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The kernel answered with an error.
    #[error("netlink: {what}: {source}")]
    Kernel {
        /// The request.
        what: String,
        /// The errno the kernel returned.
        source: std::io::Error,
    },
    /// The answer could not be read.
    #[error("netlink: malformed answer: {0}")]
    Malformed(String),
}

impl NetlinkError {
    /// The errno of a kernel or socket error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Io { source, .. } | NetlinkError::Kernel { source, .. } => {
                source.raw_os_error()
            }
            NetlinkError::Malformed(_) => None,
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (header, payload, padding).
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// A netlink message of type `kind`: the header, a 4-byte family header (genetlink's
/// `cmd, version, reserved` or nfnetlink's `family, version, res_id`) and the attributes.
pub fn request(kind: u16, flags: u16, seq: u32, family_header: [u8; 4], attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + family_header.len() + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&family_header);
    m.extend_from_slice(attrs);
    m
}

/// The attributes in `buf`, as `(type without flag bits, payload)`.
pub fn attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, NetlinkError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(NetlinkError::Malformed(format!(
                "attribute {kind} claims {len} bytes, {} left",
                buf.len()
            )));
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// One netlink message: its type, and its payload after the netlink header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages.
pub fn messages(mut buf: &[u8]) -> Result<Vec<Message<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(NetlinkError::Malformed(format!(
                "message claims {len} bytes, {} left",
                buf.len()
            )));
        }
        out.push(Message {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// Decodes an `NLMSG_ERROR` payload: 0 is an acknowledgement, else the negative errno.
pub(crate) fn error_code(payload: &[u8]) -> Result<i32, NetlinkError> {
    Ok(i32::from_ne_bytes(
        payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| NetlinkError::Malformed("short NLMSG_ERROR".into()))?,
    ))
}

/// A netlink socket of one protocol.
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
    seq: u32,
}

impl Client {
    /// Opens a socket of `protocol` (e.g. `NETLINK_GENERIC`) whose receives give up after
    /// `timeout`.
    pub fn open(protocol: i32, timeout: Duration) -> Result<Self, NetlinkError> {
        let io = |what| move |source| NetlinkError::Io { what, source };
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io("socket")(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros().max(1)),
        };
        // SAFETY: tv is a valid timeval for the length given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io("SO_RCVTIMEO")(std::io::Error::last_os_error()));
        }
        Ok(Client { fd, seq: 1 })
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), NetlinkError> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and to are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NetlinkError::Io {
                what: "send",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Sends `msg` and feeds every answer message of its sequence number to `each`, until
    /// `NLMSG_DONE` or the acknowledgement.
    pub fn exchange(
        &mut self,
        what: &str,
        msg: &mut [u8],
        mut each: impl FnMut(&[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.send(msg)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(NetlinkError::Io {
                    what: "recv",
                    source: std::io::Error::last_os_error(),
                });
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                return Err(NetlinkError::Malformed("the socket closed".into()));
            }
            for m in messages(&buf[..n])? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = error_code(m.payload)?;
                        if code == 0 {
                            return Ok(());
                        }
                        return Err(NetlinkError::Kernel {
                            what: what.to_owned(),
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                    _ => each(m.payload)?,
                }
            }
        }
    }
}
