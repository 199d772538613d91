//! The kernel module's interface: generic netlink family `wireguard`, command
//! `WG_CMD_GET_DEVICE` (include/uapi/linux/wireguard.h), read with plain sockets.
//!
//! Message building and parsing are pure functions over bytes, tested on messages laid out
//! as the kernel lays them out; [`Client`] only moves those bytes through the socket.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use super::{Device, Peer, Source, handshake_time};
use crate::netlink::{self, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, attrs, put_attr};

const GENL_HDRLEN: usize = 4;

/// A generic netlink message: netlink header, `genlmsghdr` (`cmd`, `version`) and attributes.
pub fn request(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    netlink::request(family, flags, seq, [cmd, version, 0, 0], attrs)
}
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// `WG_CMD_GET_DEVICE`.
pub const WG_CMD_GET_DEVICE: u8 = 0;
/// `WG_GENL_VERSION`.
pub const WG_GENL_VERSION: u8 = 1;
/// Device attributes (`enum wgdevice_attribute`).
pub mod device_attr {
    /// `WGDEVICE_A_IFINDEX` (u32).
    pub const IFINDEX: u16 = 1;
    /// `WGDEVICE_A_IFNAME` (string).
    pub const IFNAME: u16 = 2;
    /// `WGDEVICE_A_LISTEN_PORT` (u16).
    pub const LISTEN_PORT: u16 = 6;
    /// `WGDEVICE_A_PEERS` (nested).
    pub const PEERS: u16 = 8;
}
/// Peer attributes (`enum wgpeer_attribute`).
pub mod peer_attr {
    /// `WGPEER_A_PUBLIC_KEY` (32 bytes).
    pub const PUBLIC_KEY: u16 = 1;
    /// `WGPEER_A_ENDPOINT` (`sockaddr_in` or `sockaddr_in6`).
    pub const ENDPOINT: u16 = 4;
    /// `WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL` (u16).
    pub const PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
    /// `WGPEER_A_LAST_HANDSHAKE_TIME` (`struct __kernel_timespec`).
    pub const LAST_HANDSHAKE_TIME: u16 = 6;
    /// `WGPEER_A_RX_BYTES` (u64).
    pub const RX_BYTES: u16 = 7;
    /// `WGPEER_A_TX_BYTES` (u64).
    pub const TX_BYTES: u16 = 8;
    /// `WGPEER_A_ALLOWEDIPS` (nested).
    pub const ALLOWEDIPS: u16 = 9;
}

fn u16_of(p: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(p.get(..2)?.try_into().ok()?))
}
fn u64_of(p: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(p.get(..8)?.try_into().ok()?))
}
fn i64_of(p: &[u8]) -> Option<i64> {
    Some(i64::from_ne_bytes(p.get(..8)?.try_into().ok()?))
}

/// Decodes a `sockaddr_in` / `sockaddr_in6` as the kernel writes it.
pub fn sockaddr(p: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16_of(p)?);
    let port = u16::from_be_bytes(p.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = p.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(p.get(4..8)?.try_into().ok()?);
            let a: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(p.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// The family id in the answer to `CTRL_CMD_GETFAMILY` (the payload after the netlink
/// header).
pub fn family_id(payload: &[u8]) -> Result<u16, NetlinkError> {
    let a = attrs(payload.get(GENL_HDRLEN..).unwrap_or_default())?;
    a.iter()
        .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, p)| u16_of(p))
        .ok_or_else(|| NetlinkError::Malformed("no CTRL_ATTR_FAMILY_ID".into()))
}

/// Adds the device and peers of one `WG_CMD_GET_DEVICE` answer (the payload after the
/// netlink header) to `dev`. A large device comes in several messages, and a peer with many
/// allowed IPs is continued in the next message under the same public key.
pub fn add_device_message(dev: &mut Device, payload: &[u8]) -> Result<(), NetlinkError> {
    let bad = |what: &str| NetlinkError::Malformed(what.to_owned());
    for (kind, p) in attrs(payload.get(GENL_HDRLEN..).unwrap_or_default())? {
        match kind {
            device_attr::LISTEN_PORT => dev.listen_port = u16_of(p).filter(|&v| v > 0),
            device_attr::PEERS => {
                for (_, peer) in attrs(p)? {
                    let mut key = None;
                    let mut out = Peer::new([0; 32]);
                    let mut hs = None;
                    for (pk, pp) in attrs(peer)? {
                        match pk {
                            peer_attr::PUBLIC_KEY => {
                                key = Some(
                                    <[u8; 32]>::try_from(pp)
                                        .map_err(|_| bad("public key is not 32 bytes"))?,
                                )
                            }
                            peer_attr::ENDPOINT => out.endpoint = sockaddr(pp),
                            peer_attr::PERSISTENT_KEEPALIVE_INTERVAL => {
                                out.persistent_keepalive = u16_of(pp).filter(|&v| v > 0)
                            }
                            peer_attr::LAST_HANDSHAKE_TIME => {
                                let sec = i64_of(pp).ok_or_else(|| bad("short handshake time"))?;
                                let nsec = pp.get(8..).and_then(i64_of).unwrap_or(0);
                                hs = Some(handshake_time(sec, nsec));
                            }
                            peer_attr::RX_BYTES => {
                                out.rx_bytes = u64_of(pp).ok_or_else(|| bad("short rx_bytes"))?
                            }
                            peer_attr::TX_BYTES => {
                                out.tx_bytes = u64_of(pp).ok_or_else(|| bad("short tx_bytes"))?
                            }
                            peer_attr::ALLOWEDIPS => out.allowed_ips += attrs(pp)?.len(),
                            _ => {}
                        }
                    }
                    let key = key.ok_or_else(|| bad("a peer without a public key"))?;
                    match dev.peers.last_mut() {
                        // The continuation of the previous message's last peer.
                        Some(last) if last.public_key == key && hs.is_none() => {
                            last.allowed_ips += out.allowed_ips;
                        }
                        _ => {
                            out.public_key = key;
                            out.last_handshake = hs.flatten();
                            dev.peers.push(out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A generic netlink socket that reads WireGuard devices.
#[derive(Debug)]
pub struct Client(netlink::Client);

impl Client {
    /// Opens a generic netlink socket whose receives give up after `timeout`.
    pub fn open(timeout: Duration) -> Result<Self, NetlinkError> {
        netlink::Client::open(libc::NETLINK_GENERIC, timeout).map(Client)
    }

    /// The id of the `wireguard` family, or `None` when the kernel has no such family (no
    /// WireGuard module loaded).
    pub fn wireguard_family(&mut self) -> Result<Option<u16>, NetlinkError> {
        let mut a = Vec::new();
        put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"wireguard\0");
        let mut msg = request(
            GENL_ID_CTRL,
            NLM_F_REQUEST | NLM_F_ACK,
            0,
            CTRL_CMD_GETFAMILY,
            1,
            &a,
        );
        let mut id = None;
        match self
            .0
            .exchange("CTRL_CMD_GETFAMILY wireguard", &mut msg, |p| {
                id = Some(family_id(p)?);
                Ok(())
            }) {
            Ok(()) => Ok(id),
            Err(NetlinkError::Kernel { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads interface `name` with `WG_CMD_GET_DEVICE`.
    pub fn device(&mut self, family: u16, name: &str) -> Result<Device, NetlinkError> {
        let mut a = Vec::new();
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        put_attr(&mut a, device_attr::IFNAME, &ifname);
        let mut msg = request(
            family,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP,
            0,
            WG_CMD_GET_DEVICE,
            WG_GENL_VERSION,
            &a,
        );
        let mut dev = Device {
            name: name.to_owned(),
            listen_port: None,
            peers: Vec::new(),
            source: Source::Netlink,
        };
        self.0
            .exchange(&format!("WG_CMD_GET_DEVICE {name}"), &mut msg, |p| {
                add_device_message(&mut dev, p)
            })?;
        Ok(dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_DONE, NLMSG_ERROR, error_code, messages};
    use std::time::SystemTime;

    fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        put_attr(&mut b, kind | 0x8000, inner); // NLA_F_NESTED, as the kernel sets it
        b
    }

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut s = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        s.extend_from_slice(&port.to_be_bytes());
        s.extend_from_slice(&ip);
        s.extend_from_slice(&[0; 8]);
        s
    }

    fn sockaddr_in6(ip: [u8; 16], port: u16) -> Vec<u8> {
        let mut s = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        s.extend_from_slice(&port.to_be_bytes());
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&ip);
        s.extend_from_slice(&0u32.to_ne_bytes());
        s
    }

    fn allowed_ip(family: u16, addr: &[u8], cidr: u8) -> Vec<u8> {
        let mut a = Vec::new();
        put_attr(&mut a, 1, &family.to_ne_bytes()); // WGALLOWEDIP_A_FAMILY
        put_attr(&mut a, 2, addr); // WGALLOWEDIP_A_IPADDR
        put_attr(&mut a, 3, &[cidr]); // WGALLOWEDIP_A_CIDR_MASK
        a
    }

    fn peer(
        key: u8,
        hs: Option<(i64, i64)>,
        endpoint: Option<Vec<u8>>,
        ips: usize,
        rx: u64,
        tx: u64,
    ) -> Vec<u8> {
        let mut p = Vec::new();
        put_attr(&mut p, peer_attr::PUBLIC_KEY, &[key; 32]);
        put_attr(&mut p, 2, &[0; 32]); // WGPEER_A_PRESHARED_KEY
        if let Some(e) = endpoint {
            put_attr(&mut p, peer_attr::ENDPOINT, &e);
        }
        put_attr(
            &mut p,
            peer_attr::PERSISTENT_KEEPALIVE_INTERVAL,
            &25u16.to_ne_bytes(),
        );
        if let Some((s, ns)) = hs {
            let mut ts = s.to_ne_bytes().to_vec();
            ts.extend_from_slice(&ns.to_ne_bytes());
            put_attr(&mut p, peer_attr::LAST_HANDSHAKE_TIME, &ts);
            put_attr(&mut p, peer_attr::RX_BYTES, &rx.to_ne_bytes());
            put_attr(&mut p, peer_attr::TX_BYTES, &tx.to_ne_bytes());
            put_attr(&mut p, 10, &1u32.to_ne_bytes()); // WGPEER_A_PROTOCOL_VERSION
        }
        let mut list = Vec::new();
        for i in 0..ips {
            list.extend(nested(
                u16::try_from(i).expect("small"),
                &allowed_ip(libc::AF_INET as u16, &[10, 0, 0, i as u8], 32),
            ));
        }
        p.extend(nested(peer_attr::ALLOWEDIPS, &list));
        p
    }

    /// A whole `WG_CMD_GET_DEVICE` answer message, header included.
    fn device_message(family: u16, seq: u32, peers: &[Vec<u8>], listen: Option<u16>) -> Vec<u8> {
        let mut a = Vec::new();
        put_attr(&mut a, device_attr::IFINDEX, &7u32.to_ne_bytes());
        put_attr(&mut a, device_attr::IFNAME, b"wg0\0");
        if let Some(p) = listen {
            put_attr(&mut a, 3, &[1; 32]); // WGDEVICE_A_PRIVATE_KEY
            put_attr(&mut a, 4, &[2; 32]); // WGDEVICE_A_PUBLIC_KEY
            put_attr(&mut a, device_attr::LISTEN_PORT, &p.to_ne_bytes());
            put_attr(&mut a, 7, &0u32.to_ne_bytes()); // WGDEVICE_A_FWMARK
        }
        let mut list = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            list.extend(nested(u16::try_from(i).expect("small"), p));
        }
        a.extend(nested(device_attr::PEERS, &list));
        let mut m = request(
            family,
            2, /* NLM_F_MULTI */
            seq,
            WG_CMD_GET_DEVICE,
            WG_GENL_VERSION,
            &a,
        );
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m
    }

    #[test]
    fn requests_are_laid_out_as_the_kernel_expects() {
        let mut a = Vec::new();
        put_attr(&mut a, device_attr::IFNAME, b"wg0\0");
        assert_eq!(a.len(), 8);
        let m = request(
            0x1d,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP,
            9,
            WG_CMD_GET_DEVICE,
            1,
            &a,
        );
        assert_eq!(m.len(), 28);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().expect("4")), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().expect("2")), 0x1d);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().expect("2")), 0x305);
        assert_eq!(&m[16..20], &[0, 1, 0, 0]);
        assert_eq!(&m[24..28], b"wg0\0");
        // Odd-length payloads are padded to four bytes.
        let mut b = Vec::new();
        put_attr(&mut b, 2, b"wireguard\0");
        assert_eq!(b.len(), 16);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 14);
    }

    #[test]
    fn family_answer() {
        let mut a = Vec::new();
        put_attr(&mut a, CTRL_ATTR_FAMILY_ID, &0x22u16.to_ne_bytes());
        put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"wireguard\0");
        let m = request(GENL_ID_CTRL, 0, 1, 1, 2, &a);
        let msgs = messages(&m).expect("split");
        assert_eq!(family_id(msgs[0].payload).expect("id"), 0x22);
    }

    #[test]
    fn a_device_split_over_messages_with_a_continued_peer() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let v6 = sockaddr_in6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3], 51820);
        let first = device_message(
            0x22,
            5,
            &[
                peer(
                    0xaa,
                    Some((now - 30, 250)),
                    Some(sockaddr_in([192, 0, 2, 1], 51821)),
                    2,
                    1000,
                    2000,
                ),
                peer(0xbb, Some((0, 0)), Some(v6), 3, 0, 0),
            ],
            Some(51820),
        );
        // The kernel continues a peer whose allowed IPs did not fit: same key, only IPs.
        let mut cont = Vec::new();
        put_attr(&mut cont, peer_attr::PUBLIC_KEY, &[0xbb; 32]);
        let mut list = Vec::new();
        for i in 0..4u16 {
            list.extend(nested(i, &allowed_ip(libc::AF_INET6 as u16, &[0; 16], 128)));
        }
        cont.extend(nested(peer_attr::ALLOWEDIPS, &list));
        let second = device_message(0x22, 5, &[cont], None);
        let mut done = request(NLMSG_DONE, 2, 5, 0, 0, &[]);
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let mut datagram = first.clone();
        datagram.extend(&second);
        datagram.extend(&done);

        let msgs = messages(&datagram).expect("split");
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[2].kind, NLMSG_DONE);
        let mut dev = Device {
            name: "wg0".into(),
            listen_port: None,
            peers: vec![],
            source: Source::Netlink,
        };
        for m in &msgs[..2] {
            assert_eq!(m.kind, 0x22);
            add_device_message(&mut dev, m.payload).expect("parse");
        }
        assert_eq!(dev.listen_port, Some(51820));
        assert_eq!(dev.peers.len(), 2);
        let a = &dev.peers[0];
        assert_eq!(a.public_key, [0xaa; 32]);
        assert_eq!(a.endpoint, "192.0.2.1:51821".parse().ok());
        assert_eq!((a.rx_bytes, a.tx_bytes, a.allowed_ips), (1000, 2000, 2));
        assert_eq!(a.persistent_keepalive, Some(25));
        let age = SystemTime::now()
            .duration_since(a.last_handshake.expect("shook hands"))
            .expect("past");
        assert!((29..=31).contains(&age.as_secs()), "{age:?}");
        let b = &dev.peers[1];
        assert_eq!(b.last_handshake, None, "zero means never");
        assert_eq!(b.endpoint, "[fd00::3]:51820".parse().ok());
        assert_eq!(
            b.allowed_ips,
            3 + 4,
            "the continuation adds its allowed IPs"
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let m = device_message(0x22, 1, &[peer(1, Some((1, 0)), None, 1, 1, 1)], Some(1));
        // Every truncation of a valid message fails cleanly or parses a prefix.
        for cut in 0..m.len() {
            if let Ok(msgs) = messages(&m[..cut]) {
                for msg in msgs {
                    let mut d = Device {
                        name: "x".into(),
                        listen_port: None,
                        peers: vec![],
                        source: Source::Netlink,
                    };
                    let _ = add_device_message(&mut d, msg.payload);
                }
            }
        }
        assert!(attrs(&[200, 0, 1, 0]).is_err());
        let mut e = request(NLMSG_ERROR, 0, 1, 0, 0, &[]);
        e.truncate(16);
        e.extend_from_slice(&(-libc::ENODEV).to_ne_bytes());
        let msgs = messages(&e).expect("split");
        assert_eq!(error_code(msgs[0].payload).expect("code"), -libc::ENODEV);
    }

    #[test]
    fn the_running_kernel_answers_the_family_lookup() {
        // Real netlink: a kernel without the module says ENOENT, which is `None`.
        let mut c = Client::open(Duration::from_secs(2)).expect("socket");
        let id = c.wireguard_family().expect("lookup");
        if let Some(id) = id {
            assert!(id >= 0x10);
        }
    }
}
