//! The probe end to end on loopback: a server thread, real TCP and QUIC clients, and the
//! refusals the server must give while it keeps serving.

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
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let identity = Identity::generate().expect("cert");
    let fp = identity.fingerprint();
    let server = Server::new(Settings {
        listen: addr,
        token: Token::new(TOKEN),
        allow: parse_allowlist(&[allow.to_owned()]).expect("allow"),
        max_duration: Duration::from_secs(5),
        max_tests: 2,
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
    client::run_tcp(&good, "cubic", &progress()).expect("served after the refusals");
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
