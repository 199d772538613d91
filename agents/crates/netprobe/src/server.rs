//! `labnode net serve`: receives tests from allowed clients with the token, one at a time
//! per client connection, at most `max_tests` at once, each at most `max_duration` long.
//!
//! Every connection gets its own thread, so one slow or hostile client cannot stall the
//! others; a connection that does not send its request within [`HELLO_TIMEOUT`] is dropped.
//! TCP data streams arrive on the listening port; a QUIC test gets its own endpoint on an
//! ephemeral UDP port of the listening address, which only the client that asked for the
//! test may use.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::access::{Cidr, Token, canonical};
use crate::quic::{self, Identity};
use crate::sys;
use crate::wire::{self, Hello, Reply};

/// How long a new connection has to send its first line.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time after the test's duration for the data to drain.
const DRAIN: Duration = Duration::from_secs(20);

/// Server settings.
#[derive(Debug)]
pub struct Settings {
    /// Where to listen (TCP); QUIC tests bind UDP on the same address.
    pub listen: SocketAddr,
    /// The shared token.
    pub token: Token,
    /// Clients that may connect.
    pub allow: Vec<Cidr>,
    /// The longest test accepted.
    pub max_duration: Duration,
    /// Tests running at once.
    pub max_tests: usize,
    /// Streams per test.
    pub max_streams: u32,
    /// The QUIC certificate.
    pub identity: Identity,
    /// UDP ports QUIC tests may use (inclusive), so a firewall can open exactly these;
    /// `None`: any ephemeral port.
    pub quic_ports: Option<(u16, u16)>,
}

/// A UDP socket on `ip` for one QUIC test: the first free port of `range`, or an ephemeral
/// port without one.
pub fn bind_quic(ip: IpAddr, range: Option<(u16, u16)>) -> std::io::Result<UdpSocket> {
    let Some((first, last)) = range else {
        return UdpSocket::bind(SocketAddr::new(ip, 0));
    };
    for port in first..=last {
        match UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every UDP port of {first}-{last} on {ip} is in use"),
    ))
}

/// What one data stream delivered.
#[derive(Debug, Clone, Copy)]
struct StreamDone {
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    cpu: Duration,
}

impl StreamDone {
    fn merge(all: &[StreamDone]) -> Reply {
        let bytes = all.iter().map(|s| s.bytes).sum();
        let first = all.iter().filter_map(|s| s.first).min();
        let last = all.iter().filter_map(|s| s.last).max();
        let seconds = match (first, last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Reply::Result {
            bytes,
            seconds,
            cpu_seconds: all.iter().map(|s| s.cpu.as_secs_f64()).sum(),
        }
    }
}

struct Slot {
    peer: IpAddr,
    streams: u32,
    claimed: Mutex<Vec<bool>>,
    done: mpsc::Sender<StreamDone>,
}

/// A running server.
pub struct Server {
    settings: Settings,
    tests: Mutex<HashMap<String, Arc<Slot>>>,
    connections: AtomicUsize,
}

/// Removes a test from the table when its control connection ends, however it ends.
struct Registered<'a> {
    server: &'a Server,
    id: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.server
            .tests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn refuse(conn: &mut TcpStream, peer: SocketAddr, why: &str) {
    tracing::warn!("refused {peer}: {why}");
    let _ = wire::write_msg(
        conn,
        &Reply::Refused {
            error: why.to_owned(),
        },
    );
    // Drain what the client sent, so closing does not reset the connection before the
    // client has read why.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024;
    while left > 0 {
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n.min(left),
        }
    }
}

fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // SystemRandom reads getrandom(2); it fails only without a kernel entropy source.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_ne_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn valid_congestion(s: &str) -> bool {
    (1..16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Server {
    /// A server with these settings (nothing is bound yet).
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Server {
            settings,
            tests: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
        })
    }

    fn max_connections(&self) -> usize {
        self.settings.max_tests * (self.settings.max_streams as usize + 1) + 16
    }

    /// Accepts connections on `listener` until the process ends.
    pub fn run(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (conn, peer) = match listener.accept() {
                Ok(c) => c,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    tracing::warn!("accept: {e}; pausing");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e),
            };
            if self.connections.fetch_add(1, Ordering::SeqCst) >= self.max_connections() {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("refused {peer}: too many connections");
                continue; // dropped: closes the connection
            }
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("probe-conn".into())
                .spawn(move || {
                    me.handle(conn, peer);
                    me.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("cannot start a thread for {peer}: {e}");
            }
        }
    }

    fn handle(&self, mut conn: TcpStream, peer: SocketAddr) {
        let ip = canonical(peer.ip());
        let _ = conn.set_read_timeout(Some(HELLO_TIMEOUT));
        let _ = conn.set_write_timeout(Some(HELLO_TIMEOUT));
        if !self.settings.allow.iter().any(|c| c.contains(ip)) {
            refuse(
                &mut conn,
                peer,
                &format!("{ip} is not in this server's allowlist"),
            );
            return;
        }
        let Ok(read_half) = conn.try_clone() else {
            return;
        };
        let mut r = BufReader::with_capacity(256 * 1024, read_half);
        let hello = match wire::read_line(&mut r)
            .map_err(|e| e.to_string())
            .and_then(|l| serde_json::from_str::<Hello>(&l).map_err(|e| e.to_string()))
        {
            Ok(h) => h,
            Err(e) => {
                refuse(&mut conn, peer, &format!("malformed request: {e}"));
                return;
            }
        };
        match hello {
            Hello::Test {
                version,
                token,
                protocol,
                congestion,
                streams,
                duration_ms,
            } => {
                if version != wire::PROTOCOL {
                    refuse(
                        &mut conn,
                        peer,
                        &format!(
                            "protocol {version:?} is not {:?}; use the same labnode version on both ends",
                            wire::PROTOCOL
                        ),
                    );
                } else if !self.settings.token.matches(token.as_bytes()) {
                    refuse(&mut conn, peer, "wrong token");
                } else {
                    self.control(conn, peer, ip, &protocol, &congestion, streams, duration_ms);
                }
            }
            Hello::Data { test_id, stream } => self.data(conn, r, peer, ip, &test_id, stream),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn control(
        &self,
        mut conn: TcpStream,
        peer: SocketAddr,
        ip: IpAddr,
        protocol: &str,
        congestion: &str,
        streams: u32,
        duration_ms: u64,
    ) {
        let s = &self.settings;
        let duration = Duration::from_millis(duration_ms);
        let problem = if protocol != "tcp" && protocol != "quic" {
            Some(format!(
                "malformed request: protocol {protocol:?} is neither tcp nor quic"
            ))
        } else if !valid_congestion(congestion) {
            Some(format!(
                "malformed request: congestion control {congestion:?} is not a name"
            ))
        } else if streams == 0 || streams > s.max_streams {
            Some(format!(
                "{streams} streams asked, this server allows 1 to {}",
                s.max_streams
            ))
        } else if duration.is_zero() || duration > s.max_duration {
            Some(format!(
                "a {:.1} s test asked, this server allows up to {:.1} s",
                duration.as_secs_f64(),
                s.max_duration.as_secs_f64()
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            refuse(&mut conn, peer, &p);
            return;
        }
        let (tx, rx) = mpsc::channel();
        let id = random_id();
        {
            let mut tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
            if tests.len() >= s.max_tests {
                drop(tests);
                refuse(
                    &mut conn,
                    peer,
                    &format!(
                        "busy: {} tests are running, the cap is {}; try again later",
                        s.max_tests, s.max_tests
                    ),
                );
                return;
            }
            tests.insert(
                id.clone(),
                Arc::new(Slot {
                    peer: ip,
                    streams,
                    claimed: Mutex::new(vec![false; streams as usize]),
                    done: tx.clone(),
                }),
            );
        }
        let _registered = Registered {
            server: self,
            id: id.clone(),
        };
        tracing::info!(
            "test from {peer}: {protocol}/{congestion}, {streams} streams, {:.1} s",
            duration.as_secs_f64()
        );
        let quic_port = if protocol == "quic" {
            match self.start_quic(ip, &id, congestion, streams, duration, tx) {
                Ok(p) => Some(p),
                Err(e) => {
                    refuse(
                        &mut conn,
                        peer,
                        &format!("cannot start the QUIC endpoint: {e}"),
                    );
                    return;
                }
            }
        } else {
            drop(tx);
            None
        };
        if wire::write_msg(
            &mut conn,
            &Reply::Accepted {
                test_id: id.clone(),
                quic_port,
            },
        )
        .is_err()
        {
            return;
        }
        let deadline = Instant::now() + duration + DRAIN;
        let want = if protocol == "quic" {
            1
        } else {
            streams as usize
        };
        let mut done = Vec::new();
        while done.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(d) => done.push(d),
                Err(_) => break,
            }
        }
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        let reply = if done.len() == want {
            StreamDone::merge(&done)
        } else {
            Reply::Refused {
                error: format!("only {} of {want} streams finished in time", done.len()),
            }
        };
        if let Reply::Result { bytes, seconds, .. } = &reply {
            tracing::info!(
                "test from {peer} done: {bytes} bytes in {seconds:.2} s ({:.1} Mbit/s)",
                *bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6
            );
        }
        let _ = wire::write_msg(&mut conn, &reply);
    }

    fn data(
        &self,
        mut conn: TcpStream,
        mut r: BufReader<TcpStream>,
        peer: SocketAddr,
        ip: IpAddr,
        test_id: &str,
        stream: u32,
    ) {
        let slot = self
            .tests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(test_id)
            .cloned();
        let Some(slot) = slot else {
            refuse(
                &mut conn,
                peer,
                "no such test (it ended, or the id is wrong)",
            );
            return;
        };
        if slot.peer != ip {
            refuse(&mut conn, peer, "this test belongs to another client");
            return;
        }
        {
            let mut claimed = slot.claimed.lock().unwrap_or_else(|p| p.into_inner());
            match claimed.get_mut(stream as usize) {
                Some(c) if !*c => *c = true,
                _ => {
                    drop(claimed);
                    refuse(
                        &mut conn,
                        peer,
                        &format!(
                            "stream {stream} is taken or out of range (0..{})",
                            slot.streams
                        ),
                    );
                    return;
                }
            }
        }
        let _ = conn.set_read_timeout(Some(self.settings.max_duration + DRAIN));
        let cpu0 = sys::thread_cpu();
        let mut buf = vec![0u8; 256 * 1024];
        let mut d = StreamDone {
            bytes: 0,
            first: None,
            last: None,
            cpu: Duration::ZERO,
        };
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = Instant::now();
                    d.first.get_or_insert(now);
                    d.last = Some(now);
                    d.bytes += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("data stream {stream} from {peer}: {e}");
                    break;
                }
            }
        }
        d.cpu = sys::thread_cpu().saturating_sub(cpu0);
        let _ = slot.done.send(d);
    }

    /// Binds the test's UDP socket and serves it on a thread of its own; the thread sends
    /// one [`StreamDone`] for the whole connection.
    fn start_quic(
        &self,
        peer: IpAddr,
        id: &str,
        congestion: &str,
        streams: u32,
        duration: Duration,
        tx: mpsc::Sender<StreamDone>,
    ) -> Result<u16, String> {
        let sock = bind_quic(self.settings.listen.ip(), self.settings.quic_ports)
            .map_err(|e| e.to_string())?;
        let port = sock.local_addr().map_err(|e| e.to_string())?.port();
        let cfg = quic::server_config(&self.settings.identity, congestion, streams)?;
        let id = id.to_owned();
        std::thread::Builder::new()
            .name("probe-quic".into())
            .spawn(move || {
                let cpu0 = sys::thread_cpu();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::warn!("QUIC runtime: {e}"),
                };
                let result = rt.block_on(async move {
                    tokio::time::timeout(
                        duration + DRAIN,
                        quic_receive(sock, cfg, peer, id, streams),
                    )
                    .await
                });
                match result {
                    Ok(Ok(mut d)) => {
                        d.cpu = sys::thread_cpu().saturating_sub(cpu0);
                        let _ = tx.send(d);
                    }
                    Ok(Err(e)) => tracing::warn!("QUIC test from {peer}: {e}"),
                    Err(_) => tracing::warn!("QUIC test from {peer}: timed out"),
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(port)
    }
}

async fn quic_receive(
    sock: UdpSocket,
    cfg: quinn::ServerConfig,
    peer: IpAddr,
    id: String,
    streams: u32,
) -> Result<StreamDone, String> {
    let ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        sock,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| e.to_string())?;
    let conn = loop {
        let incoming = ep.accept().await.ok_or("the endpoint closed")?;
        if canonical(incoming.remote_address().ip()) != peer {
            tracing::warn!(
                "QUIC: refused {}: not the client of this test",
                incoming.remote_address()
            );
            incoming.refuse();
            continue;
        }
        match incoming.await {
            Ok(c) => break c,
            Err(e) => tracing::warn!("QUIC handshake from {peer}: {e}"),
        }
    };
    let (_send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| format!("no control stream: {e}"))?;
    let mut line = vec![0u8; id.len() + 1];
    recv.read_exact(&mut line)
        .await
        .map_err(|e| format!("reading the test id: {e}"))?;
    if line[..id.len()] != *id.as_bytes() || line[id.len()] != b'\n' {
        conn.close(1u32.into(), b"wrong test id");
        return Err("wrong test id on the QUIC connection".into());
    }
    tracing::debug!("QUIC: {peer} presented the test id");
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let span = Arc::new(Mutex::new((None::<Instant>, None::<Instant>)));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut rs = conn
            .accept_uni()
            .await
            .map_err(|e| format!("waiting for a stream: {e}"))?;
        let (total, span) = (Arc::clone(&total), Arc::clone(&span));
        tasks.push(tokio::spawn(async move {
            loop {
                let chunk = match rs.read_chunk(usize::MAX, false).await {
                    Ok(Some(c)) => c,
                    // The client resets its streams at the deadline: that is the end.
                    Ok(None) | Err(quinn::ReadError::Reset(_)) => break,
                    Err(e) => return Err(e.to_string()),
                };
                let now = Instant::now();
                total.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                let mut s = span.lock().unwrap_or_else(|p| p.into_inner());
                s.0.get_or_insert(now);
                s.1 = Some(now);
            }
            Ok::<(), String>(())
        }));
    }
    tracing::debug!("QUIC: {peer} opened {streams} streams");
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    tracing::debug!("QUIC: {peer}'s streams ended");
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    let (first, last) = *span.lock().unwrap_or_else(|p| p.into_inner());
    Ok(StreamDone {
        bytes: total.load(Ordering::Relaxed),
        first,
        last,
        cpu: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_sockets_stay_in_their_range() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        // Find three consecutive free ports, then hold the first.
        let base = (20_000..60_000)
            .step_by(7)
            .find(|&p| (p..p + 3).all(|q| UdpSocket::bind(SocketAddr::new(ip, q)).is_ok()))
            .expect("three free ports");
        let held = UdpSocket::bind(SocketAddr::new(ip, base)).expect("hold the first");
        let s = bind_quic(ip, Some((base, base + 2))).expect("a port in range");
        assert_eq!(
            s.local_addr().expect("addr").port(),
            base + 1,
            "the busy first port is skipped"
        );
        let t = bind_quic(ip, Some((base, base + 2))).expect("the last one");
        assert_eq!(t.local_addr().expect("addr").port(), base + 2);
        let e = bind_quic(ip, Some((base, base + 2))).expect_err("all busy");
        assert!(
            e.to_string().contains(&format!("{base}-{}", base + 2)),
            "{e}"
        );
        drop((held, s, t));
        assert_ne!(
            bind_quic(ip, None)
                .expect("ephemeral")
                .local_addr()
                .expect("addr")
                .port(),
            0
        );
    }
}
