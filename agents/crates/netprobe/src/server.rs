//! `labnode net serve`: receives tests from allowed clients that prove the token, one at a
//! time per client connection, at most `max_tests` at once, each at most `max_duration` long.
//!
//! A connection from outside the allowlist is closed right after `accept`, before it costs
//! a thread or counts against any cap. Every other connection gets its own thread, so one
//! slow client cannot stall the others; each source address may have at most a few
//! connections that have not sent their request yet, and one that does not send it within
//! [`HELLO_TIMEOUT`] is dropped. A test holds its place among the `max_tests` until its
//! control connection and every data stream it claimed have ended, and no later than its
//! deadline: accepted + duration + drain, when its data streams are closed.
//! TCP data streams arrive on the listening port; a QUIC test gets its own endpoint on a
//! UDP port of the listening address, which only the client that asked for the test may use.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::access::{Cidr, Token, canonical};
use crate::quic::{self, Identity};
use crate::sys;
use crate::wire::{self, Hello, Reply};

/// How long a new connection has to send its request (and a test's, its answer to the
/// challenge).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time after a test's duration for its data to drain; the stream is closed then.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long the control connection waits for the data streams' figures after the deadline.
const GRACE: Duration = Duration::from_secs(1);

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
    /// Time after a test's duration before its data streams are closed ([`DRAIN`]).
    pub drain: Duration,
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
    /// Accepted + duration + drain: data streams are closed then.
    deadline: Instant,
    state: Mutex<SlotState>,
    done: mpsc::Sender<StreamDone>,
}

struct SlotState {
    claimed: Vec<bool>,
    /// The control connection, data streams and QUIC endpoint still running.
    holders: usize,
    /// The control connection ended: no stream may join.
    closed: bool,
}

type Tests = Arc<Mutex<HashMap<String, Arc<Slot>>>>;

/// One holder of a test's place; the test leaves the table when the last one is dropped.
struct Hold {
    tests: Tests,
    id: String,
    slot: Arc<Slot>,
    control: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        st.holders = st.holders.saturating_sub(1);
        st.closed |= self.control;
        if st.holders == 0 {
            tests.remove(&self.id);
        }
    }
}

/// Connections from one address that have not sent their request yet.
struct Pending {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Pending {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Pending {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A running server.
pub struct Server {
    settings: Settings,
    tests: Tests,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    connections: AtomicUsize,
    started: Instant,
    /// Second (since `started`) of the last turned-away warning, so a flood logs little.
    last_warning: AtomicU64,
}

/// Refuses an allowlisted peer: the reason, then a short drain so closing does not reset
/// the connection before the client has read why.
fn refuse(conn: &mut TcpStream, peer: SocketAddr, why: &str) {
    tracing::warn!("refused {peer}: {why}");
    let _ = wire::write_msg(
        conn,
        &Reply::Refused {
            error: why.to_owned(),
        },
    );
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(250)));
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024;
    while left > 0 {
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n.min(left),
        }
    }
}

fn random_hex() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // SystemRandom reads getrandom(2); it fails only without a kernel entropy source.
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn valid_congestion(s: &str) -> bool {
    (1..16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
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
    /// A server with these settings (nothing is bound yet).
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Server {
            settings,
            tests: Arc::new(Mutex::new(HashMap::new())),
            pending: Arc::new(Mutex::new(HashMap::new())),
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            last_warning: AtomicU64::new(u64::MAX),
        })
    }

    fn max_connections(&self) -> usize {
        self.settings.max_tests * (self.settings.max_streams as usize + 1) + 16
    }

    /// Connections one address may have open before sending its request: enough for one
    /// test's control and data connections opened at once.
    fn max_pending_per_ip(&self) -> usize {
        self.settings.max_streams as usize + 2
    }

    /// Closes a connection at once: one refusal line if the socket takes it without
    /// waiting, no drain, no thread. Warns at most once a second.
    fn turn_away(&self, conn: TcpStream, peer: SocketAddr, why: &str) {
        let now = self.started.elapsed().as_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if last != now
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("turned away {peer}: {why} (further ones this second: debug log)");
        } else {
            tracing::debug!("turned away {peer}: {why}");
        }
        if conn.set_nonblocking(true).is_ok() {
            if let Ok(mut line) = serde_json::to_vec(&Reply::Refused {
                error: why.to_owned(),
            }) {
                line.push(b'\n');
                let _ = (&conn).write(&line);
            }
        }
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
            let ip = canonical(peer.ip());
            if !self.settings.allow.iter().any(|c| c.contains(ip)) {
                self.turn_away(
                    conn,
                    peer,
                    &format!("{ip} is not in this server's allowlist"),
                );
                continue;
            }
            let Some(pending) = Pending::take(&self.pending, ip, self.max_pending_per_ip()) else {
                self.turn_away(
                    conn,
                    peer,
                    &format!("{ip} has too many connections that sent no request yet"),
                );
                continue;
            };
            if self.connections.fetch_add(1, Ordering::SeqCst) >= self.max_connections() {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                self.turn_away(conn, peer, "busy: too many connections; try again later");
                continue;
            }
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("probe-conn".into())
                .spawn(move || {
                    me.handle(conn, peer, pending);
                    me.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("cannot start a thread for {peer}: {e}");
            }
        }
    }

    fn handle(&self, mut conn: TcpStream, peer: SocketAddr, pending: Pending) {
        let ip = canonical(peer.ip());
        let _ = conn.set_read_timeout(Some(HELLO_TIMEOUT));
        let _ = conn.set_write_timeout(Some(HELLO_TIMEOUT));
        let Ok(read_half) = conn.try_clone() else {
            return;
        };
        let mut r = BufReader::with_capacity(256 * 1024, read_half);
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
                if let Err(why) = self.authenticate(&mut conn, &mut r, &line) {
                    return refuse(&mut conn, peer, &why);
                }
                drop(pending);
                self.control(conn, peer, ip, &protocol, &congestion, streams, duration_ms);
            }
            Hello::Data { test_id, stream } => {
                drop(pending);
                self.data(conn, r, peer, ip, &test_id, stream);
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
        r: &mut BufReader<TcpStream>,
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
        let Some(id) = random_hex() else {
            refuse(
                &mut conn,
                peer,
                "no random numbers for a test id; try again",
            );
            return;
        };
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + duration + s.drain;
        let slot = Arc::new(Slot {
            peer: ip,
            streams,
            deadline,
            state: Mutex::new(SlotState {
                claimed: vec![false; streams as usize],
                holders: 1,
                closed: false,
            }),
            done: tx.clone(),
        });
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
            tests.insert(id.clone(), Arc::clone(&slot));
        }
        let _hold = Hold {
            tests: Arc::clone(&self.tests),
            id: id.clone(),
            slot: Arc::clone(&slot),
            control: true,
        };
        tracing::info!(
            "test from {peer}: {protocol}/{congestion}, {streams} streams, {:.1} s",
            duration.as_secs_f64()
        );
        let quic_port = if protocol == "quic" {
            let hold = Hold {
                tests: Arc::clone(&self.tests),
                id: id.clone(),
                slot: Arc::clone(&slot),
                control: false,
            };
            slot.state.lock().unwrap_or_else(|p| p.into_inner()).holders += 1;
            match self.start_quic(ip, &id, congestion, streams, hold, tx) {
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
        let want = if protocol == "quic" {
            1
        } else {
            streams as usize
        };
        let mut done = Vec::new();
        while done.len() < want {
            let left = (deadline + GRACE).saturating_duration_since(Instant::now());
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

    /// Claims `stream` of test `test_id` for a data connection from `ip`.
    fn claim(&self, test_id: &str, ip: IpAddr, stream: u32) -> Result<Hold, String> {
        let tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
        let slot = tests
            .get(test_id)
            .cloned()
            .ok_or("no such test (it ended, or the id is wrong)")?;
        if slot.peer != ip {
            return Err("this test belongs to another client".into());
        }
        let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed || Instant::now() >= slot.deadline {
            return Err("this test has ended".into());
        }
        match st.claimed.get_mut(stream as usize) {
            Some(c) if !*c => *c = true,
            _ => {
                return Err(format!(
                    "stream {stream} is taken or out of range (0..{})",
                    slot.streams
                ));
            }
        }
        st.holders += 1;
        drop(st);
        Ok(Hold {
            tests: Arc::clone(&self.tests),
            id: test_id.to_owned(),
            slot,
            control: false,
        })
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
        let hold = match self.claim(test_id, ip, stream) {
            Ok(h) => h,
            Err(why) => return refuse(&mut conn, peer, &why),
        };
        let deadline = hold.slot.deadline;
        let cpu0 = sys::thread_cpu();
        let mut buf = vec![0u8; 256 * 1024];
        let mut d = StreamDone {
            bytes: 0,
            first: None,
            last: None,
            cpu: Duration::ZERO,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "data stream {stream} from {peer} still open at the test's deadline; closed"
                );
                let _ = conn.shutdown(std::net::Shutdown::Both);
                break;
            }
            // The socket waits no longer than the deadline (r reads a clone of conn).
            let _ = conn.set_read_timeout(Some(left));
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = Instant::now();
                    d.first.get_or_insert(now);
                    d.last = Some(now);
                    d.bytes += n as u64;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!("data stream {stream} from {peer}: {e}");
                    break;
                }
            }
        }
        d.cpu = sys::thread_cpu().saturating_sub(cpu0);
        let _ = hold.slot.done.send(d);
        drop(hold);
    }

    /// Binds the test's UDP socket and serves it on a thread of its own, which holds the
    /// test's place until the connection ends or the deadline; the thread sends one
    /// [`StreamDone`] for the whole connection.
    fn start_quic(
        &self,
        peer: IpAddr,
        id: &str,
        congestion: &str,
        streams: u32,
        hold: Hold,
        tx: mpsc::Sender<StreamDone>,
    ) -> Result<u16, String> {
        let sock = bind_quic(self.settings.listen.ip(), self.settings.quic_ports)
            .map_err(|e| e.to_string())?;
        let port = sock.local_addr().map_err(|e| e.to_string())?.port();
        let cfg = quic::server_config(&self.settings.identity, congestion, streams)?;
        let id = id.to_owned();
        let deadline = tokio::time::Instant::from_std(hold.slot.deadline);
        std::thread::Builder::new()
            .name("probe-quic".into())
            .spawn(move || {
                let _hold = hold;
                let cpu0 = sys::thread_cpu();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::warn!("QUIC runtime: {e}"),
                };
                let result = rt.block_on(async move {
                    let ep = quinn::Endpoint::new(
                        quinn::EndpointConfig::default(),
                        Some(cfg),
                        sock,
                        Arc::new(quinn::TokioRuntime),
                    )
                    .map_err(|e| e.to_string())?;
                    let r = tokio::time::timeout_at(deadline, quic_receive(&ep, peer, id, streams))
                        .await;
                    if r.is_err() {
                        // Tell the client, rather than leave it to its idle timeout.
                        ep.close(2u32.into(), b"the test's deadline passed");
                        let _ =
                            tokio::time::timeout(Duration::from_millis(500), ep.wait_idle()).await;
                    }
                    r.map_err(|_| "still open at the deadline; closed".to_owned())?
                });
                // The endpoint and its socket go with the runtime, before the place is freed.
                drop(rt);
                match result {
                    Ok(mut d) => {
                        d.cpu = sys::thread_cpu().saturating_sub(cpu0);
                        let _ = tx.send(d);
                    }
                    Err(e) => tracing::warn!("QUIC test from {peer}: {e}"),
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(port)
    }
}

async fn quic_receive(
    ep: &quinn::Endpoint,
    peer: IpAddr,
    id: String,
    streams: u32,
) -> Result<StreamDone, String> {
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
