//! WireGuard devices and peers, read without spawning `wg`: over generic netlink from the
//! kernel module ([`netlink`]) or from wireguard-go's UAPI socket ([`uapi`]).

pub mod netlink;
pub mod uapi;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Where a device's state was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kernel module, over generic netlink.
    Netlink,
    /// A userspace implementation's UAPI socket (wireguard-go, boringtun).
    Uapi,
}

impl Source {
    /// The label value: `netlink` or `uapi`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Netlink => "netlink",
            Source::Uapi => "uapi",
        }
    }
}

/// One WireGuard interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Interface name.
    pub name: String,
    /// UDP port it listens on.
    pub listen_port: Option<u16>,
    /// Its peers.
    pub peers: Vec<Peer>,
    /// How it was read.
    pub source: Source,
}

/// One peer of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// Where its packets last came from, or where it was configured to be.
    pub endpoint: Option<SocketAddr>,
    /// Wall-clock time of the latest handshake; `None` if it never shook hands.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// How many allowed-IP ranges route to it.
    pub allowed_ips: usize,
    /// Persistent keepalive interval, when set.
    pub persistent_keepalive: Option<u16>,
}

impl Peer {
    /// A peer with this key and nothing else known yet.
    pub fn new(public_key: [u8; 32]) -> Self {
        Peer {
            public_key,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            allowed_ips: 0,
            persistent_keepalive: None,
        }
    }

    /// The key as `wg` prints it (standard base64), the `peer` label value.
    pub fn key_base64(&self) -> String {
        base64(&self.public_key)
    }
}

/// A handshake time from seconds and nanoseconds since the epoch; zero means never.
pub fn handshake_time(sec: i64, nsec: i64) -> Option<SystemTime> {
    if sec <= 0 && nsec <= 0 {
        return None;
    }
    let nsec = u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0);
    let sec = u64::try_from(sec).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(sec, nsec))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes 64 hex digits (the UAPI's key format).
pub fn key_from_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        key[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        // A WireGuard key is 44 characters ending in one '='.
        let k = base64(&[0xff; 32]);
        assert_eq!(k.len(), 44);
        assert!(k.ends_with("/8="), "{k}");
    }

    #[test]
    fn hex_keys() {
        let k = key_from_hex(&"0a".repeat(32)).expect("hex");
        assert_eq!(k, [10; 32]);
        assert!(key_from_hex("zz").is_none());
        assert!(key_from_hex(&"g0".repeat(32)).is_none());
    }

    #[test]
    fn zero_handshake_is_never() {
        assert_eq!(handshake_time(0, 0), None);
        assert_eq!(
            handshake_time(10, 5),
            Some(SystemTime::UNIX_EPOCH + Duration::new(10, 5))
        );
    }
}
