//! A connection's first line: the request (a test, or a data stream of one), the token's
//! challenge for a test, and the refusal of whatever fails, with its reason.

use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::accept::Pending;
use super::{HELLO_TIMEOUT, Server};
use crate::access::canonical;
use crate::wire::{self, Hello, Reply};

/// How long a refusal drains what the peer still sends, in all.
const REFUSAL_DRAIN: Duration = Duration::from_millis(250);

/// A connection's read side under one deadline for everything read through it: each read
/// waits at most until the deadline, so a peer that trickles a byte at a time cannot
/// stretch a line past it. `None`: no deadline (the socket's own timeout applies).
pub(super) struct Timed {
    pub(super) s: TcpStream,
    pub(super) deadline: Option<Instant>,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.s.set_read_timeout(Some(left))?;
        }
        self.s.read(buf)
    }
}

/// Refuses an allowlisted peer: the reason, then a short drain (at most
/// [`REFUSAL_DRAIN`] and 64 KiB in all, however the peer trickles) so closing does not
/// reset the connection before the client has read why.
pub(super) fn refuse(conn: &mut TcpStream, peer: SocketAddr, why: &str) {
    tracing::warn!("refused {peer}: {why}");
    let _ = wire::write_msg(
        conn,
        &Reply::Refused {
            error: why.to_owned(),
        },
    );
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let Ok(s) = conn.try_clone() else { return };
    let mut drain = Timed {
        s,
        deadline: Some(Instant::now() + REFUSAL_DRAIN),
    };
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024;
    while left > 0 {
        match drain.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n.min(left),
        }
    }
}

/// 16 random bytes in hex: a challenge nonce or a test id.
pub(super) fn random_hex() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // SystemRandom reads getrandom(2); it fails only without a kernel entropy source.
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The request line parsed; a test request of another protocol version is named as such
/// (its fields may differ, so this is checked before the strict parse).
fn parse_request(line: &str) -> Result<Hello, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    if v.get("type").and_then(|t| t.as_str()) == Some("test") {
        let version = v.get("version").and_then(|x| x.as_str()).unwrap_or("");
        if version != wire::PROTOCOL {
            return Err(format!(
                "protocol {version:?} is not {:?}; use the same labnode version on both ends",
                wire::PROTOCOL
            ));
        }
    }
    serde_json::from_value(v).map_err(|e| format!("malformed request: {e}"))
}

impl Server {
    /// Serves one connection: reads its request, then runs it as a test's control
    /// connection or one of its data streams.
    pub(super) fn handle(&self, mut conn: TcpStream, peer: SocketAddr, pending: Pending) {
        let ip = canonical(peer.ip());
        let _ = conn.set_write_timeout(Some(HELLO_TIMEOUT));
        let Ok(read_half) = conn.try_clone() else {
            return;
        };
        // The whole request line within HELLO_TIMEOUT, however it is sent.
        let mut r = BufReader::with_capacity(
            256 * 1024,
            Timed {
                s: read_half,
                deadline: Some(Instant::now() + HELLO_TIMEOUT),
            },
        );
        let line = match wire::read_line(&mut r) {
            Ok(l) => l,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let why = format!("no request within {} s", HELLO_TIMEOUT.as_secs_f64());
                return refuse(&mut conn, peer, &why);
            }
            Err(e) => return refuse(&mut conn, peer, &format!("malformed request: {e}")),
        };
        let hello = match parse_request(&line) {
            Ok(h) => h,
            Err(e) => return refuse(&mut conn, peer, &e),
        };
        match hello {
            Hello::Test {
                version: _,
                protocol,
                congestion,
                streams,
                duration_ms,
            } => {
                if let Some(why) = self.throttled(ip) {
                    return refuse(&mut conn, peer, &why);
                }
                if let Err(why) = self.authenticate(&mut conn, &mut r, &line) {
                    self.failed(ip);
                    return refuse(&mut conn, peer, &why);
                }
                self.proven(ip);
                drop(pending);
                self.control(conn, peer, ip, &protocol, &congestion, streams, duration_ms);
            }
            Hello::Data { test_id, stream } => {
                // The address's pending place is kept until the test id is verified.
                r.get_mut().deadline = None;
                self.data(conn, r, pending, peer, ip, &test_id, stream);
            }
            Hello::Auth { .. } => refuse(
                &mut conn,
                peer,
                "malformed request: an answer without a challenge",
            ),
        }
    }

    /// Sends a fresh nonce and checks the client's HMAC of it and of `request`.
    fn authenticate(
        &self,
        conn: &mut TcpStream,
        r: &mut BufReader<Timed>,
        request: &str,
    ) -> Result<(), String> {
        let nonce = random_hex().ok_or("no random numbers for a challenge; try again")?;
        wire::write_msg(
            conn,
            &Reply::Challenge {
                nonce: nonce.clone(),
            },
        )
        .map_err(|e| format!("sending the challenge: {e}"))?;
        // The whole answer within HELLO_TIMEOUT of the challenge.
        r.get_mut().deadline = Some(Instant::now() + HELLO_TIMEOUT);
        let line = wire::read_line(r).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "no answer to the challenge within {} s",
                HELLO_TIMEOUT.as_secs_f64()
            ),
            _ => format!("malformed answer: {e}"),
        })?;
        match serde_json::from_str::<Hello>(&line) {
            Ok(Hello::Auth { mac }) => {
                if self
                    .settings
                    .token
                    .verify(nonce.as_bytes(), request.as_bytes(), &mac)
                {
                    Ok(())
                } else {
                    Err("wrong token".into())
                }
            }
            Ok(_) => Err("malformed answer: expected the answer to the challenge".into()),
            Err(e) => Err(format!("malformed answer: {e}")),
        }
    }
}
