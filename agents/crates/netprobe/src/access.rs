//! Who may run a test: a shared token, proven by HMAC-SHA256 over a server nonce (never
//! sent), and a client allowlist.

use std::net::IpAddr;
use std::path::Path;

/// The fewest bytes a token may have.
pub const MIN_TOKEN_LEN: usize = 16;

/// A token read from a file: the file's content without trailing whitespace.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads and checks the token file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let raw =
            std::fs::read(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        let t = Token::new(raw.trim_ascii_end());
        if t.0.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "--token-file {}: the token has {} bytes, at least {MIN_TOKEN_LEN} are needed",
                path.display(),
                t.0.len()
            ));
        }
        if t.0.iter().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "--token-file {}: the token must be one line of text",
                path.display()
            ));
        }
        Ok(t)
    }

    /// A token from bytes.
    pub fn new(bytes: &[u8]) -> Self {
        Token(bytes.to_vec())
    }

    fn key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0)
    }

    /// HMAC-SHA256 under this token of `nonce || message`, lowercase hex: a client's answer
    /// to the server's challenge, so the token itself never crosses the network.
    pub fn sign(&self, nonce: &[u8], message: &[u8]) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key());
        ctx.update(nonce);
        ctx.update(message);
        ctx.sign()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `mac` (hex) is [`Token::sign`] of `nonce || message`, compared in constant
    /// time (ring's `hmac::verify`).
    pub fn verify(&self, nonce: &[u8], message: &[u8], mac: &str) -> bool {
        let Some(tag) = unhex(mac) else {
            return false;
        };
        let mut data = Vec::with_capacity(nonce.len() + message.len());
        data.extend_from_slice(nonce);
        data.extend_from_slice(message);
        ring::hmac::verify(&self.key(), &data, &tag).is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Parses `--allow` values: comma-separated ranges, possibly given several times.
pub fn parse_allowlist(values: &[String]) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for v in values {
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(part.parse().map_err(|e| format!("--allow: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("--allow: give at least one client address or range".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(
            c.contains("::ffff:10.1.0.9".parse().expect("mapped")),
            "mapped v4"
        );
        let one: Cidr = "192.0.2.7".parse().expect("single");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("203.0.113.1".parse().expect("ip")));
        assert!(
            !all.contains("::1".parse().expect("ip")),
            "v4 ranges do not match v6"
        );
        let v6: Cidr = "fd00::/8".parse().expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "x/8", "fd00::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_allowlist(&["10.0.0.1, 10.0.0.2".into(), "fd00::/8".into()]).map(|v| v.len()),
            Ok(3)
        );
        assert!(parse_allowlist(&[]).is_err());
    }

    #[test]
    fn tokens() {
        let t = Token::new(b"0123456789abcdef");
        let mac = t.sign(b"nonce", b"request");
        assert_eq!(mac.len(), 64);
        assert!(t.verify(b"nonce", b"request", &mac));
        assert!(!t.verify(b"nonce2", b"request", &mac), "another nonce");
        assert!(!t.verify(b"nonce", b"request2", &mac), "another request");
        assert!(!Token::new(b"0123456789abcdeF").verify(b"nonce", b"request", &mac));
        assert!(!t.verify(b"nonce", b"request", &mac[..62]));
        assert!(!t.verify(b"nonce", b"request", ""));
        assert!(!t.verify(b"nonce", b"request", "zz"));
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("token");
        std::fs::write(&p, "short\n").expect("write");
        assert!(
            Token::from_file(&p)
                .expect_err("short")
                .contains("at least 16")
        );
        std::fs::write(&p, "0123456789abcdef\n").expect("write");
        let read = Token::from_file(&p).expect("ok");
        assert!(read.verify(b"n", b"m", &t.sign(b"n", b"m")));
        assert!(
            Token::from_file(&d.path().join("nope"))
                .expect_err("missing")
                .contains("nope")
        );
        assert_eq!(format!("{t:?}"), "Token(..)", "never printed");
    }
}
