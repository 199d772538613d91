//! The cross-platform userspace API of wireguard-go (and boringtun): a Unix socket at
//! `/var/run/wireguard/<interface>.sock` speaking `key=value` lines. `get=1` followed by an
//! empty line asks for the device; the answer ends with `errno=N` and an empty line.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Device, Peer, Source, handshake_time, key_from_hex};

/// What can go wrong talking to a UAPI socket.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// Connecting, writing or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The answer was not what the protocol says.
    #[error("{path}: {what}")]
    Protocol {
        /// The socket.
        path: String,
        /// What was wrong.
        what: String,
    },
}

/// The most lines an answer may have (a peer is about ten lines plus its allowed IPs).
const MAX_LINES: usize = 1_000_000;

/// Asks the socket at `path` for interface `name`'s state, waiting at most `timeout`.
pub fn get(path: &Path, name: &str, timeout: Duration) -> Result<Device, UapiError> {
    let p = path.display().to_string();
    let io = |source| UapiError::Io {
        path: p.clone(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(b"get=1\n\n").map_err(io)?;
    let mut lines = Vec::new();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            break;
        }
        lines.push(line.to_owned());
        if lines.len() > MAX_LINES {
            return Err(UapiError::Protocol {
                path: p,
                what: format!("more than {MAX_LINES} lines"),
            });
        }
    }
    parse(name, &lines.join("\n")).map_err(|what| UapiError::Protocol { path: p, what })
}

/// Parses the answer to `get=1` (without the final empty line).
pub fn parse(name: &str, text: &str) -> Result<Device, String> {
    let mut dev = Device {
        name: name.to_owned(),
        listen_port: None,
        peers: Vec::new(),
        source: Source::Uapi,
    };
    let mut hs = (0i64, 0i64);
    let mut errno = None;
    let finish = |peer: Option<&mut Peer>, hs: &mut (i64, i64)| {
        if let Some(p) = peer {
            p.last_handshake = handshake_time(hs.0, hs.1);
        }
        *hs = (0, 0);
    };
    for line in text.lines() {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} is not key=value"))?;
        let num = |v: &str| -> Result<i64, String> {
            v.parse().map_err(|_| format!("{k}={v}: not a number"))
        };
        match k {
            "public_key" => {
                finish(dev.peers.last_mut(), &mut hs);
                let key =
                    key_from_hex(v).ok_or_else(|| format!("public_key={v}: not 64 hex digits"))?;
                dev.peers.push(Peer::new(key));
            }
            "listen_port" => dev.listen_port = u16::try_from(num(v)?).ok(),
            "errno" => errno = Some(num(v)?),
            _ => {
                let Some(p) = dev.peers.last_mut() else {
                    continue; // device keys we do not export: private_key, fwmark
                };
                match k {
                    "endpoint" => {
                        p.endpoint = Some(
                            v.parse::<SocketAddr>()
                                .map_err(|_| format!("endpoint={v}: not an address:port"))?,
                        )
                    }
                    "last_handshake_time_sec" => hs.0 = num(v)?,
                    "last_handshake_time_nsec" => hs.1 = num(v)?,
                    "rx_bytes" => p.rx_bytes = u64::try_from(num(v)?).map_err(|e| e.to_string())?,
                    "tx_bytes" => p.tx_bytes = u64::try_from(num(v)?).map_err(|e| e.to_string())?,
                    "allowed_ip" => p.allowed_ips += 1,
                    "persistent_keepalive_interval" => {
                        p.persistent_keepalive = u16::try_from(num(v)?).ok().filter(|&s| s > 0)
                    }
                    _ => {} // preshared_key, protocol_version, and keys added later
                }
            }
        }
    }
    finish(dev.peers.last_mut(), &mut hs);
    match errno {
        Some(0) => Ok(dev),
        Some(e) => Err(format!("the device answered errno={e}")),
        None => Err("the answer has no errno line (truncated?)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn parses_a_wireguard_go_answer() {
        let text = format!(
            "private_key={k1}\nlisten_port=51820\npublic_key={k2}\npreshared_key={z}\nprotocol_version=1\nendpoint=10.9.0.2:51821\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500\ntx_bytes=1234\nrx_bytes=5678\npersistent_keepalive_interval=0\nallowed_ip=10.8.0.2/32\nallowed_ip=fd00::2/128\npublic_key={k3}\nendpoint=[fd00::3]:51820\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=25\nerrno=0",
            k1 = "11".repeat(32),
            k2 = "22".repeat(32),
            k3 = "33".repeat(32),
            z = "00".repeat(32),
        );
        let d = parse("wg0", &text).expect("parses");
        assert_eq!(d.listen_port, Some(51820));
        assert_eq!(d.source, Source::Uapi);
        assert_eq!(d.peers.len(), 2);
        let a = &d.peers[0];
        assert_eq!(a.public_key, [0x22; 32]);
        assert_eq!(a.endpoint, "10.9.0.2:51821".parse().ok());
        assert_eq!(
            a.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500))
        );
        assert_eq!((a.tx_bytes, a.rx_bytes, a.allowed_ips), (1234, 5678, 2));
        assert_eq!(a.persistent_keepalive, None);
        let b = &d.peers[1];
        assert_eq!(
            b.last_handshake, None,
            "a zero handshake is absent, not 1970"
        );
        assert_eq!(b.endpoint, "[fd00::3]:51820".parse().ok());
        assert_eq!(b.persistent_keepalive, Some(25));
    }

    #[test]
    fn errors_are_reported() {
        assert!(
            parse("wg0", "errno=1")
                .expect_err("errno")
                .contains("errno=1")
        );
        assert!(
            parse("wg0", "listen_port=1")
                .expect_err("no errno")
                .contains("errno")
        );
        assert!(
            parse("wg0", "public_key=xyz\nerrno=0")
                .expect_err("key")
                .contains("hex")
        );
        assert!(
            parse("wg0", "garbage\nerrno=0")
                .expect_err("line")
                .contains("key=value")
        );
    }

    #[test]
    fn talks_to_a_socket() {
        use std::io::Read;
        use std::os::unix::net::UnixListener;
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("wgt.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = [0u8; 7];
            s.read_exact(&mut req).expect("read");
            assert_eq!(&req, b"get=1\n\n");
            let answer = format!(
                "listen_port=7\npublic_key={}\nrx_bytes=9\nerrno=0\n\n",
                "ab".repeat(32)
            );
            s.write_all(answer.as_bytes()).expect("write");
        });
        let d = get(&path, "wgt", Duration::from_secs(5)).expect("get");
        server.join().expect("server");
        assert_eq!(d.listen_port, Some(7));
        assert_eq!(d.peers[0].rx_bytes, 9);
    }
}
