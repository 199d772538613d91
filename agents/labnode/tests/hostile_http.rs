//! `labnode serve` against hostile local clients: 2,000 connections that send half a request
//! header, 2,000 idle keep-alives and a few that trickle a header a byte at a time, against
//! a server started with the soft descriptor limit a systemd unit gets by default (1,024)
//! and a cap of 3,000 connections. A scrape must still be answered within 100 ms, the
//! oldest connections make room, and every held connection is closed within its timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HALF_SENT: usize = 2000;
const IDLE: usize = 2000;
/// The timeouts the test configures (short, so the test is).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn limits() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

/// This process needs a descriptor per held connection.
fn raise_own_limit() {
    let mut r = limits();
    let want = (HALF_SENT + IDLE + 512) as libc::rlim_t;
    assert!(
        r.rlim_max >= want,
        "the hard descriptor limit {} is below the {want} this test holds",
        r.rlim_max
    );
    r.rlim_cur = r.rlim_cur.max(want);
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

fn start(dir: &std::path::Path) -> (Server, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.join("labnode.yaml");
    std::fs::write(
        &config,
        format!(
            "snapshot_dir: {}\nhttp:\n  header_timeout: {}s\n  idle_timeout: {}s\n  max_connections: 3000\n",
            dir.display(),
            HEADER_TIMEOUT.as_secs(),
            IDLE_TIMEOUT.as_secs()
        ),
    )
    .expect("config");
    let hard = limits().rlim_max;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labnode"));
    cmd.args(["serve", "--collector", "system", "--listen"])
        .arg(addr.to_string())
        .arg("--config")
        .arg(&config)
        .env("LABNODE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; the child gets a unit's default soft limit.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server(cmd.spawn().expect("labnode serve starts"));
    let t0 = Instant::now();
    while scrape(addr, "/healthz").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "labnode serve never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

/// A whole request on a new connection; the response's status line and how long it took.
fn scrape(addr: SocketAddr, path: &str) -> std::io::Result<(String, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let took = t0.elapsed();
    let status = body.lines().next().unwrap_or_default().to_owned();
    Ok((status, took))
}

/// Whether the server closed `s` (reading what it still holds first).
fn closed(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Waits until every connection of `held` is closed, at most `within`; the ones still open.
fn open_after(held: &mut [TcpStream], within: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        let open = held.iter_mut().map(closed).filter(|c| !c).count();
        if open == 0 || t0.elapsed() > within {
            return open;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn half_sent_headers_and_idle_keep_alives_cannot_starve_a_scrape() {
    raise_own_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, addr) = start(dir.path());
    // A server that stops accepting fills the kernel's queue, and connecting then blocks:
    // give up on more after 20 refusals in a row.
    let mut refused = 0;
    let mut connect = || {
        if refused >= 20 {
            return None;
        }
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok();
        refused = if s.is_some() { 0 } else { refused + 1 };
        s
    };
    let mut half: Vec<TcpStream> = Vec::new();
    for _ in 0..HALF_SENT {
        if let Some(mut s) = connect() {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n");
            half.push(s);
        }
    }
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..IDLE {
        if let Some(mut s) = connect() {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            idle.push(s);
        }
    }
    let mut trickle: Vec<TcpStream> = (0..20).filter_map(|_| connect()).collect();
    let held_at_scrape = half.len() + idle.len() + trickle.len();
    assert!(
        held_at_scrape > 3000,
        "only {held_at_scrape} connections held"
    );
    // Let the server take in what the kernel queued, then scrape as Prometheus does.
    std::thread::sleep(Duration::from_millis(500));
    let (status, took) = scrape(addr, "/metrics").expect("the scrape is answered");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        took < Duration::from_millis(100),
        "the scrape took {took:?} with {held_at_scrape} hostile connections held"
    );
    // A byte every 200 ms does not extend the header deadline.
    let t0 = Instant::now();
    let request = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut sent = 0;
    while t0.elapsed() < HEADER_TIMEOUT + Duration::from_secs(1) {
        for s in &mut trickle {
            let _ = s.write_all(&request[sent % request.len()..][..1]);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = trickle.iter_mut().map(closed).filter(|c| !c).count();
    assert_eq!(
        open, 0,
        "{open} trickling headers still open after the header timeout"
    );
    // Every held connection is closed within its timeout (with a second of slack).
    let open = open_after(&mut half, HEADER_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        open, 0,
        "{open} half-sent requests still open after the header timeout"
    );
    let open = open_after(&mut idle, IDLE_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        open, 0,
        "{open} idle keep-alives still open after the idle timeout"
    );
    let (status, _) = scrape(addr, "/metrics").expect("still serving");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}
