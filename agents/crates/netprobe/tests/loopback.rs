//! The probe end to end on loopback: a server thread, real TCP and QUIC clients, and the
//! refusals the server must give while it keeps serving: caps, streams, other clients
//! (from other 127.0.0.0/8 addresses), the hello timeout, the deadline, a flood.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use labnode_netprobe::access::{Token, parse_allowlist};
use labnode_netprobe::client::{self, BenchError, Plan};
use labnode_netprobe::quic::Identity;
use labnode_netprobe::server::{Server, Settings};

const TOKEN: &[u8] = b"a-token-of-at-least-16-bytes";

fn start(allow: &str) -> (SocketAddr, String) {
    start_with(allow, None)
}

fn start_with(allow: &str, quic_ports: Option<(u16, u16)>) -> (SocketAddr, String) {
    serve_with(allow, 2, 5.0, quic_ports)
}

/// A server on 127.0.0.1 with these caps, at most 4 streams a test, a 1 s drain.
fn serve_with(
    allow: &str,
    max_tests: usize,
    max_duration: f64,
    quic_ports: Option<(u16, u16)>,
) -> (SocketAddr, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let identity = Identity::generate().expect("cert");
    let fp = identity.fingerprint();
    let server = Server::new(Settings {
        listen: addr,
        token: Token::new(TOKEN),
        allow: parse_allowlist(&[allow.to_owned()]).expect("allow"),
        max_duration: Duration::from_secs_f64(max_duration),
        max_tests,
        max_streams: 4,
        identity,
        quic_ports,
        drain: Duration::from_secs(1),
    });
    std::thread::spawn(move || server.run(l));
    (addr, fp)
}

fn plan(addr: SocketAddr, fp: &str, token: &[u8], secs: f64) -> Plan {
    Plan {
        peer: addr,
        token: Token::new(token),
        streams: 2,
        duration: Duration::from_secs_f64(secs),
        fingerprint: Some(fp.to_owned()),
    }
}

fn progress() -> client::Progress {
    Arc::new(AtomicU64::new(0))
}

#[test]
fn tcp_and_quic_runs_measure_and_refusals_leave_the_server_serving() {
    let (addr, fp) = start("127.0.0.0/8");
    let good = plan(addr, &fp, TOKEN, 0.4);

    let r = client::run_tcp(&good, "reno", &progress()).expect("tcp run");
    assert_eq!(
        (r.protocol.as_str(), r.congestion.as_str()),
        ("tcp", "reno")
    );
    assert!(
        r.bytes > 0 && r.seconds > 0.0 && r.throughput_bits_per_second > 0.0,
        "{r:?}"
    );
    assert!(r.rtt_seconds.is_some_and(|x| x > 0.0), "{r:?}");
    assert!(
        r.client_cpu_seconds > 0.0 && r.server_cpu_seconds > 0.0,
        "{r:?}"
    );

    let q = client::run_quic(&good, "cubic", &progress()).expect("quic run");
    assert!(q.bytes > 0 && q.throughput_bits_per_second > 0.0, "{q:?}");
    assert!(q.gso.is_some() && !q.experimental, "{q:?}");
    let b = client::run_quic(&good, "bbr", &progress()).expect("quic bbr run");
    assert!(b.experimental, "quinn's BBR is flagged");

    // A wrong token.
    let bad = plan(addr, &fp, b"not-the-token-at-all-no", 0.2);
    match client::run_tcp(&bad, "reno", &progress()) {
        Err(BenchError::Refused { why, .. }) => assert_eq!(why, "wrong token"),
        other => panic!("wrong token: {other:?}"),
    }
    // Over the duration cap.
    let long = plan(addr, &fp, TOKEN, 30.0);
    match client::run_tcp(&long, "reno", &progress()) {
        Err(BenchError::Refused { why, .. }) => {
            assert!(why.contains("allows up to 5.0 s"), "{why}")
        }
        other => panic!("too long: {other:?}"),
    }
    // A wrong fingerprint: the QUIC handshake fails on the client, which says why.
    let pinned = plan(addr, &"00".repeat(32), TOKEN, 0.2);
    let e = client::run_quic(&pinned, "cubic", &progress())
        .expect_err("pinning")
        .to_string();
    assert!(
        e.contains("fingerprint") || e.contains("certificate"),
        "{e}"
    );
    // Malformed lines.
    for junk in [
        "GET / HTTP/1.1\r\n",
        "{\"type\":\"test\"}\n",
        "{\"type\":\"data\",\"test_id\":\"x\",\"stream\":0}\n",
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(junk.as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("answer");
        assert!(line.contains("\"refused\""), "{junk:?} got {line}");
    }
    // Still serving.
    // reno: the one congestion control every unprivileged process may pick (the build
    // sandbox's user on a host whose default is bbr may not pick cubic).
    client::run_tcp(&good, "reno", &progress()).expect("served after the refusals");
}

#[test]
fn quic_runs_through_a_fixed_port_range() {
    // A range a firewall could open; the test's endpoint must come from it.
    let ip: std::net::IpAddr = [127, 0, 0, 1].into();
    let free = (30_000..60_000)
        .step_by(11)
        .find(|&p| (p..p + 2).all(|q| std::net::UdpSocket::bind((ip, q)).is_ok()))
        .expect("two free UDP ports");
    let (addr, fp) = start_with("127.0.0.0/8", Some((free, free + 1)));
    let q = client::run_quic(&plan(addr, &fp, TOKEN, 0.3), "cubic", &progress())
        .expect("quic run through the range");
    assert!(q.bytes > 0, "{q:?}");
}

#[test]
fn clients_outside_the_allowlist_are_refused() {
    let (addr, fp) = start("10.0.0.0/8");
    match client::run_tcp(&plan(addr, &fp, TOKEN, 0.2), "reno", &progress()) {
        Err(BenchError::Refused { why, .. }) => {
            assert_eq!(why, "127.0.0.1 is not in this server's allowlist")
        }
        other => panic!("allowlist: {other:?}"),
    }
}

// ---- The refusals and caps, on the wire. ----

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::FromRawFd;
use std::time::Instant;

use labnode_netprobe::server::HELLO_TIMEOUT;
use labnode_netprobe::wire::{self, Hello, PROTOCOL, Reply};

fn serve(allow: &str, max_tests: usize, max_duration: f64) -> (SocketAddr, String) {
    serve_with(allow, max_tests, max_duration, None)
}

/// A TCP connection to `dst` from `src` (loopback answers on all of 127.0.0.0/8).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, owned by the TcpStream from here on; the addresses are valid
    // sockaddr_in values of the given length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let a = sin(src, 0);
        if libc::bind(fd, (&raw const a).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let b = sin(*dst.ip(), dst.port());
        if libc::connect(fd, (&raw const b).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

struct Conn {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(src: Ipv4Addr, addr: SocketAddr) -> Conn {
        let s = connect_from(src, addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        let r = BufReader::new(s.try_clone().expect("clone"));
        Conn { s, r }
    }
    fn send(&mut self, line: &str) {
        self.s
            .write_all(format!("{line}\n").as_bytes())
            .expect("send");
    }
    fn reply(&mut self) -> Reply {
        let line = wire::read_line(&mut self.r).expect("a reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
    /// The refusal's text; panics on anything else.
    fn refused(&mut self) -> String {
        match self.reply() {
            Reply::Refused { error } => error,
            other => panic!("want a refusal, got {other:?}"),
        }
    }
}

/// A test request answered with the token (or `token`): the server's last reply.
fn ask(src: Ipv4Addr, addr: SocketAddr, protocol: &str, streams: u32, ms: u64) -> (Conn, Reply) {
    let mut c = Conn::open(src, addr);
    let request = serde_json::to_string(&Hello::Test {
        version: PROTOCOL.into(),
        protocol: protocol.into(),
        congestion: "cubic".into(),
        streams,
        duration_ms: ms,
    })
    .expect("json");
    c.send(&request);
    let nonce = match c.reply() {
        Reply::Challenge { nonce } => nonce,
        other => return (c, other),
    };
    let mac = Token::new(TOKEN).sign(nonce.as_bytes(), request.as_bytes());
    c.send(&serde_json::to_string(&Hello::Auth { mac }).expect("json"));
    let r = c.reply();
    (c, r)
}

fn accepted(r: Reply) -> (String, Option<u16>) {
    match r {
        Reply::Accepted { test_id, quic_port } => (test_id, quic_port),
        other => panic!("want accepted, got {other:?}"),
    }
}

fn data_line(test_id: &str, stream: u32) -> String {
    serde_json::to_string(&Hello::Data {
        test_id: test_id.into(),
        stream,
    })
    .expect("json")
}

#[test]
fn a_stream_past_its_deadline_is_closed_and_the_test_holds_its_place_until_then() {
    // 1 s test, 1 s drain: the deadline is about 2 s after it was accepted.
    let (addr, _) = serve("127.0.0.0/8", 1, 2.0);
    let (mut ctl, r) = ask(HOME, addr, "tcp", 1, 1000);
    let (id, _) = accepted(r);
    let t0 = Instant::now();
    let mut data = Conn::open(HOME, addr);
    data.send(&data_line(&id, 0));
    data.s
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A client that keeps sending past its duration.
    let writer = std::thread::spawn(move || {
        let buf = vec![0u8; 64 * 1024];
        while t0.elapsed() < Duration::from_secs(10) {
            if data.s.write_all(&buf).is_err() {
                return t0.elapsed();
            }
        }
        t0.elapsed()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Past the test's duration, its stream still flows: the test still counts.
    let (_c, r) = ask(HOME, addr, "tcp", 1, 500);
    match r {
        Reply::Refused { error } => assert!(error.starts_with("busy:"), "{error}"),
        other => panic!("a second test while the first stream flows: {other:?}"),
    }
    let cut = writer.join().expect("writer");
    assert!(
        cut >= Duration::from_millis(1700) && cut <= Duration::from_millis(6000),
        "the stream was cut after {cut:?}, want about 2 s (duration + drain)"
    );
    match ctl.reply() {
        Reply::Result { bytes, .. } => assert!(bytes > 0),
        other => panic!("the first test's result: {other:?}"),
    }
    // The place is free again.
    std::thread::sleep(Duration::from_millis(200));
    let (_c, r) = ask(HOME, addr, "tcp", 1, 500);
    accepted(r);
}

#[test]
fn caps_streams_and_other_clients_are_refused_with_their_reason() {
    let (addr, _) = serve("127.0.0.0/8", 1, 5.0);
    // Over max-streams.
    let (_c, r) = ask(HOME, addr, "tcp", 5, 500);
    assert!(
        matches!(&r, Reply::Refused { error } if error == "5 streams asked, this server allows 1 to 4"),
        "{r:?}"
    );
    // An older client: told that the versions differ.
    let mut old = Conn::open(HOME, addr);
    old.send(r#"{"type":"test","version":"labnode-probe/1","token":"a-token-of-at-least-16-bytes","protocol":"tcp","congestion":"cubic","streams":1,"duration_ms":500}"#);
    let why = old.refused();
    assert!(
        why.contains("\"labnode-probe/1\" is not \"labnode-probe/2\""),
        "{why}"
    );
    // An answer for another request than the one sent: the token is not proven.
    let mut c = Conn::open(HOME, addr);
    c.send(&test_request(1, 500));
    let Reply::Challenge { nonce } = c.reply() else {
        panic!("no challenge")
    };
    let mac = Token::new(TOKEN).sign(nonce.as_bytes(), b"another request");
    c.send(&serde_json::to_string(&Hello::Auth { mac }).expect("json"));
    assert_eq!(c.refused(), "wrong token");

    // One test of 2 streams runs; a second test is busy.
    let (mut ctl, r) = ask(HOME, addr, "tcp", 2, 1500);
    let (id, _) = accepted(r);
    let (_c, r) = ask(HOME, addr, "tcp", 1, 500);
    assert!(
        matches!(&r, Reply::Refused { error } if error.starts_with("busy: 1 tests are running, the cap is 1")),
        "{r:?}"
    );
    let mut s0 = Conn::open(HOME, addr);
    s0.send(&data_line(&id, 0));
    s0.s.write_all(&[1u8; 1000]).expect("data");
    std::thread::sleep(Duration::from_millis(300));
    for (src, stream, want) in [
        (HOME, 0, "stream 0 is taken or out of range (0..2)"),
        (HOME, 7, "stream 7 is taken or out of range (0..2)"),
        (OTHER, 1, "this test belongs to another client"),
    ] {
        let mut c = Conn::open(src, addr);
        c.send(&data_line(&id, stream));
        assert_eq!(c.refused(), want, "stream {stream} from {src}");
    }
    // Stream 0 ends, stream 1 never came: the test says so.
    s0.s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(ctl.refused(), "only 1 of 2 streams finished in time");
}

#[test]
fn a_connection_that_sends_nothing_is_dropped_after_the_hello_timeout() {
    let (addr, _) = serve("127.0.0.0/8", 1, 5.0);
    let t0 = Instant::now();
    let mut c = Conn::open(HOME, addr);
    let why = c.refused();
    let waited = t0.elapsed();
    assert_eq!(why, "no request within 2 s");
    assert!(
        waited >= HELLO_TIMEOUT - Duration::from_millis(100)
            && waited <= HELLO_TIMEOUT + Duration::from_secs(1),
        "dropped after {waited:?}"
    );
    let mut rest = Vec::new();
    let _ = c.r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after the refusal");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A QUIC connection from `src` to the test endpoint on 127.0.0.1:`port` (call inside a
/// runtime; keep the endpoint while the connection is used).
fn quic_connect(src: Ipv4Addr, port: u16, fp: &str) -> (quinn::Endpoint, quinn::Connecting) {
    let mut ep = quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(src), 0)).expect("endpoint");
    ep.set_default_client_config(
        labnode_netprobe::quic::client_config(fp, "cubic", 1).expect("config"),
    );
    let connecting = ep
        .connect(
            SocketAddr::new(IpAddr::V4(HOME), port),
            labnode_netprobe::quic::SERVER_NAME,
        )
        .expect("connect");
    (ep, connecting)
}

#[test]
fn a_quic_endpoint_refuses_other_client_addresses() {
    let (addr, fp) = serve("127.0.0.0/8", 1, 5.0);
    let (_ctl, r) = ask(HOME, addr, "quic", 1, 1000);
    let (_, port) = accepted(r);
    let port = port.expect("a QUIC port");
    let e = runtime().block_on(async {
        let (_ep, connecting) = quic_connect(OTHER, port, &fp);
        tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .expect("an answer within 5 s")
            .expect_err("refused")
    });
    assert!(e.to_string().to_lowercase().contains("refuse"), "{e}");
}

#[test]
fn a_flood_from_outside_the_allowlist_does_not_starve_allowed_clients() {
    // 127.0.0.3 is allowed but only opens connections and sends nothing.
    let (addr, fp) = serve("127.0.0.1/32,127.0.0.3/32", 2, 5.0);
    let (stop, flood) = flood(4, move || {
        let opened = connect_from(OTHER, addr)
            .map(|mut s| {
                let _ = s.write_all(b"{\"type\":\"test\"}\n");
            })
            .is_ok();
        std::thread::sleep(Duration::from_millis(2));
        opened
    });
    // Idle allowed connections beyond max-streams + 2 are turned away at once.
    let idle_ip = Ipv4Addr::new(127, 0, 0, 3);
    let mut idle = Vec::new();
    let mut turned_away = 0;
    // A refusal is written at once; one that a loaded machine writes late is still read
    // before the held ones' hello timeout (2 s) could close them.
    let answered_by = Instant::now() + HELLO_TIMEOUT * 3 / 4;
    let mut refused = |c: &mut Conn, wait: Duration| {
        c.s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut line = String::new();
        let answered = c.r.read_line(&mut line).is_ok_and(|n| n > 0);
        if answered {
            assert!(
                line.contains("too many connections that sent no request yet"),
                "{line}"
            );
            turned_away += 1;
        }
        answered
    };
    for _ in 0..20 {
        let mut c = Conn::open(idle_ip, addr);
        if !refused(&mut c, Duration::from_millis(50)) {
            idle.push(c);
        }
    }
    idle.retain_mut(|c| !refused(c, answered_by.saturating_duration_since(Instant::now())));
    assert_eq!(
        (idle.len(), turned_away),
        (6, 14),
        "idle connections held, turned away"
    );
    // Meanwhile every request of an allowed client is served.
    let good = plan(addr, &fp, TOKEN, 0.1);
    let mut served = 0;
    for i in 0..10 {
        match client::run_tcp(&good, "reno", &progress()) {
            Ok(_) => served += 1,
            Err(e) => eprintln!("request {i}: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded: u32 = flood.into_iter().map(|t| t.join().expect("flood")).sum();
    assert!(flooded > 100, "the flood opened only {flooded} connections");
    assert_eq!(
        served, 10,
        "allowed requests served during a flood of {flooded}"
    );
}

#[test]
fn a_quic_test_sent_past_its_deadline_is_closed_and_holds_its_place_until_then() {
    let (addr, fp) = serve("127.0.0.0/8", 1, 2.0);
    let (mut ctl, r) = ask(HOME, addr, "quic", 1, 1000);
    let (id, port) = accepted(r);
    let port = port.expect("a QUIC port");
    let t0 = Instant::now();
    // A client that keeps sending past its duration.
    let sender = std::thread::spawn(move || {
        runtime().block_on(async {
            let (_ep, connecting) = quic_connect(HOME, port, &fp);
            let conn = connecting.await.expect("handshake");
            let (mut ctl, _r) = conn.open_bi().await.expect("control stream");
            ctl.write_all(format!("{id}\n").as_bytes())
                .await
                .expect("test id");
            let mut s = conn.open_uni().await.expect("stream");
            let buf = vec![0u8; 64 * 1024];
            while t0.elapsed() < Duration::from_secs(10) {
                if s.write_all(&buf).await.is_err() {
                    break;
                }
            }
            t0.elapsed()
        })
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (_c, r) = ask(HOME, addr, "tcp", 1, 500);
    assert!(
        matches!(&r, Reply::Refused { error } if error.starts_with("busy:")),
        "a second test while the QUIC test overruns: {r:?}"
    );
    let cut = sender.join().expect("sender");
    assert!(
        cut >= Duration::from_millis(1700) && cut <= Duration::from_millis(6000),
        "the QUIC connection was closed after {cut:?}, want about 2 s (duration + drain)"
    );
    assert_eq!(ctl.refused(), "only 0 of 1 streams finished in time");
    std::thread::sleep(Duration::from_millis(200));
    let (_c, r) = ask(HOME, addr, "tcp", 1, 500);
    accepted(r);
}

/// `n` threads running `each` over and over until the returned flag is set; each thread's
/// count of runs that returned true.
fn flood(
    n: usize,
    each: impl Fn() -> bool + Send + Sync + 'static,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<u32>>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let each = Arc::new(each);
    let threads = (0..n)
        .map(|_| {
            let (stop, each) = (Arc::clone(&stop), Arc::clone(&each));
            std::thread::spawn(move || {
                let mut runs = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    runs += u32::from(each());
                }
                runs
            })
        })
        .collect();
    (stop, threads)
}

/// A test request line.
fn test_request(streams: u32, duration_ms: u64) -> String {
    serde_json::to_string(&Hello::Test {
        version: PROTOCOL.into(),
        protocol: "tcp".into(),
        congestion: "cubic".into(),
        streams,
        duration_ms,
    })
    .expect("json")
}

/// Sends `bytes` one at a time, `every` apart, until the server closes the connection or
/// `within` passes; how long the server let it go on.
fn trickle(c: &mut Conn, bytes: &[u8], every: Duration, within: Duration) -> Duration {
    let t0 = Instant::now();
    for b in bytes.iter().cycle() {
        if t0.elapsed() > within || c.s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(every);
    }
    t0.elapsed()
}

#[test]
fn a_trickled_request_or_answer_does_not_stretch_the_hello_timeout() {
    let (addr, _) = serve("127.0.0.0/8", 1, 5.0);
    // A request line a byte every 300 ms: each read is well within 2 s, the line is not.
    let mut c = Conn::open(HOME, addr);
    let t0 = Instant::now();
    let writer = {
        let mut c2 = Conn {
            s: c.s.try_clone().expect("clone"),
            r: BufReader::new(c.s.try_clone().expect("clone")),
        };
        std::thread::spawn(move || {
            trickle(
                &mut c2,
                br#"{"type":"test","version":"x"}"#,
                Duration::from_millis(300),
                Duration::from_secs(10),
            )
        })
    };
    assert_eq!(c.refused(), "no request within 2 s");
    let waited = t0.elapsed();
    assert!(
        waited <= HELLO_TIMEOUT + Duration::from_secs(1),
        "a trickled request was refused after {waited:?}"
    );
    let _ = writer.join();
    // The answer to the challenge, trickled: the same.
    let mut c = Conn::open(HOME, addr);
    c.send(&test_request(1, 500));
    assert!(matches!(c.reply(), Reply::Challenge { .. }));
    let t0 = Instant::now();
    let mut c2 = Conn {
        s: c.s.try_clone().expect("clone"),
        r: BufReader::new(c.s.try_clone().expect("clone")),
    };
    let writer = std::thread::spawn(move || {
        trickle(
            &mut c2,
            br#"{"type":"auth","mac":"00"}"#,
            Duration::from_millis(300),
            Duration::from_secs(10),
        )
    });
    assert_eq!(c.refused(), "no answer to the challenge within 2 s");
    assert!(t0.elapsed() <= HELLO_TIMEOUT + Duration::from_secs(1));
    let _ = writer.join();
}

#[test]
fn a_refusal_drains_briefly_however_the_peer_trickles() {
    let (addr, _) = serve("127.0.0.0/8", 1, 5.0);
    let mut c = Conn::open(HOME, addr);
    c.send(&data_line("no-such-test", 0));
    assert_eq!(c.refused(), "no such test (it ended, or the id is wrong)");
    // The server has refused; it keeps reading what comes for a moment only.
    let lasted = trickle(
        &mut c,
        b"x",
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    assert!(
        lasted < Duration::from_secs(2),
        "the refused connection stayed open {lasted:?} while the peer trickled"
    );
}

#[test]
fn an_allowlisted_peer_without_the_token_cannot_fill_the_server() {
    // One test at a time, 4 streams: 21 connections at most.
    let (addr, _) = serve("127.0.0.0/8", 1, 5.0);
    // 127.0.0.3 keeps 30 connections open with made-up test ids, trickling after them; at
    // most 6 (the connections an address may have unproven) are held, the rest turned away.
    let (stop, flood) = flood(30, move || {
        let Ok(s) = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr) else {
            return false;
        };
        let mut c = Conn {
            r: BufReader::new(s.try_clone().expect("clone")),
            s,
        };
        let _ =
            c.s.write_all(format!("{}\n", data_line("made-up", 0)).as_bytes());
        trickle(
            &mut c,
            b"x",
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        true
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (_c, r) = ask(HOME, addr, "tcp", 1, 500);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    accepted(r);
    for f in flood {
        let _ = f.join();
    }
}

/// A test request answered with a wrong token.
fn ask_wrong(src: Ipv4Addr, addr: SocketAddr) -> Reply {
    let mut c = Conn::open(src, addr);
    let request = test_request(1, 500);
    c.send(&request);
    let nonce = match c.reply() {
        Reply::Challenge { nonce } => nonce,
        other => return other,
    };
    let mac = Token::new(b"not-the-token-but-16-bytes").sign(nonce.as_bytes(), request.as_bytes());
    c.send(&serde_json::to_string(&Hello::Auth { mac }).expect("json"));
    c.reply()
}

#[test]
fn failed_token_attempts_are_throttled_per_address() {
    use labnode_netprobe::server::FREE_FAILURES;
    let (addr, _) = serve("127.0.0.0/8", 2, 5.0);
    for _ in 0..FREE_FAILURES {
        let r = ask_wrong(OTHER, addr);
        assert!(
            matches!(&r, Reply::Refused { error } if error == "wrong token"),
            "{r:?}"
        );
    }
    // The next attempt is refused before any challenge, even with the right token.
    let t0 = Instant::now();
    let (_c, r) = ask(OTHER, addr, "tcp", 1, 500);
    assert!(
        matches!(&r, Reply::Refused { error }
            if error == "3 failed token attempts from 127.0.0.2; try again in 1 s"),
        "{r:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "throttled at once"
    );
    // Another address is not.
    let (c, r) = ask(HOME, addr, "tcp", 1, 200);
    accepted(r);
    drop(c);
    // After the wait, the right token is accepted and the count forgotten.
    std::thread::sleep(Duration::from_millis(1500));
    let (_c, r) = ask(OTHER, addr, "tcp", 1, 200);
    accepted(r);
}

#[test]
fn a_stalled_quic_client_does_not_hold_up_the_test() {
    let (addr, fp) = serve("127.0.0.0/8", 1, 5.0);
    let (mut ctl, r) = ask(HOME, addr, "quic", 1, 1000);
    let (id, port) = accepted(r);
    let port = port.expect("a QUIC port");
    // From the test's own address, a client that sends its first packets and then stops
    // (its runtime blocked): it never completes a handshake or presents the id.
    let fp2 = fp.clone();
    std::thread::spawn(move || {
        runtime().block_on(async {
            let (_ep, _connecting) = quic_connect(HOME, port, &fp2);
            tokio::time::sleep(Duration::from_millis(30)).await;
            std::thread::sleep(Duration::from_secs(20));
        });
    });
    std::thread::sleep(Duration::from_millis(100));
    // The real client, after it: its test runs.
    runtime().block_on(async {
        let (_ep, connecting) = quic_connect(HOME, port, &fp);
        let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
            .await
            .expect("a handshake within 3 s")
            .expect("handshake");
        let (mut c, _r) = conn.open_bi().await.expect("control stream");
        c.write_all(format!("{id}\n").as_bytes())
            .await
            .expect("test id");
        let mut s = conn.open_uni().await.expect("stream");
        s.write_all(&vec![1u8; 256 * 1024]).await.expect("data");
        s.finish().expect("finish");
        let _ = tokio::time::timeout(Duration::from_secs(3), conn.closed()).await;
    });
    match ctl.reply() {
        Reply::Result { bytes, .. } => assert_eq!(bytes, 256 * 1024),
        other => panic!("the test behind a stalled client: {other:?}"),
    }
}
