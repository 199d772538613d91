//! What `labnode net serve` and `labnode net bench` do, from plain options: check them,
//! run the server or the tests (progress on a terminal), print and store the results. The
//! `labnode` binary parses the flags into [`ServeOptions`] and [`BenchOptions`].

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use labnode_core::host::{self, HostPaths};
use labnode_core::progress::Progress;
use labnode_core::snapshot::{self, Snapshot, Store};
use labnode_net::probe::{self, BenchRecord, RunResult};

use crate::access::{self, Token};
use crate::client::{self, BenchError, Plan};
use crate::quic::{self, Identity};
use crate::server::{Server, Settings};

/// What `labnode net serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (TCP; QUIC tests get UDP ports on the same address).
    pub listen: SocketAddr,
    /// File holding the shared token (at least 16 bytes, one line).
    pub token_file: PathBuf,
    /// Clients allowed to run tests: addresses or CIDR ranges (an entry may list several,
    /// comma-separated).
    pub allow: Vec<String>,
    /// The longest test accepted, in seconds (above 0, at most 3600).
    pub max_duration: f64,
    /// Tests that may run at once; more are refused as busy.
    pub max_tests: usize,
    /// Streams one test may use (1 to 128).
    pub max_streams: u32,
    /// Directory keeping the QUIC certificate (cert.der, key.der); `None`: a new one.
    pub identity: Option<PathBuf>,
    /// UDP ports QUIC tests may use (inclusive); `None`: any ephemeral port.
    pub quic_ports: Option<(u16, u16)>,
}

/// `FIRST-LAST` (or one port), both 1..65535, FIRST <= LAST: the form of
/// [`ServeOptions::quic_ports`] on a command line.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1 to 65535)"))
    };
    let (first, last) = (port(a)?, port(b)?);
    if first > last {
        return Err(format!("{first}-{last}: the first port is above the last"));
    }
    Ok((first, last))
}

/// What `labnode net bench` runs with.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `net serve` to test against.
    pub peer: SocketAddr,
    /// File holding the shared token.
    pub token_file: PathBuf,
    /// TCP congestion controls to test (cubic and bbr when this and `quic` are empty).
    pub tcp: Vec<String>,
    /// QUIC congestion controls to test; needs `fingerprint`.
    pub quic: Vec<String>,
    /// Parallel streams (1 to 128).
    pub streams: u32,
    /// Seconds each test sends for (above 0, at most 3600).
    pub duration: f64,
    /// The server certificate's SHA-256 fingerprint, as `net serve` printed it.
    pub fingerprint: Option<String>,
    /// Name of the network path (the `path` label).
    pub path: String,
    /// Print the results as JSON instead of a table.
    pub json: bool,
    /// Label of the snapshot.
    pub label: String,
}

/// A failure and its exit code (2: bad arguments, 1: failed while running).
#[derive(Debug)]
pub struct RunError {
    /// The exit code.
    pub code: u8,
    /// The message.
    pub message: String,
}

fn usage(m: impl Into<String>) -> RunError {
    RunError {
        code: 2,
        message: m.into(),
    }
}
fn runtime(m: impl Into<String>) -> RunError {
    RunError {
        code: 1,
        message: m.into(),
    }
}

/// Checks `a`, prints the address, allowlist and fingerprint, and serves tests until the
/// process ends.
pub fn serve(a: ServeOptions) -> Result<(), RunError> {
    let token = Token::from_file(&a.token_file).map_err(usage)?;
    let allow = access::parse_allowlist(&a.allow).map_err(usage)?;
    if !(a.max_duration > 0.0 && a.max_duration <= 3600.0) {
        return Err(usage(
            "--max-duration: give more than 0 and at most 3600 seconds",
        ));
    }
    if a.max_tests == 0 || a.max_streams == 0 || a.max_streams > 128 {
        return Err(usage(
            "--max-tests must be at least 1 and --max-streams 1 to 128",
        ));
    }
    if let Some((first, last)) = a.quic_ports {
        if usize::from(last - first) + 1 < a.max_tests {
            return Err(usage(format!(
                "--quic-ports {first}-{last} has fewer ports than --max-tests ({})",
                a.max_tests
            )));
        }
    }
    let identity = match &a.identity {
        Some(d) => Identity::load_or_create(d),
        None => Identity::generate(),
    }
    .map_err(runtime)?;
    let listener = TcpListener::bind(a.listen)
        .map_err(|e| runtime(format!("cannot listen on {}: {e}", a.listen)))?;
    let local = listener.local_addr().map_err(|e| runtime(e.to_string()))?;
    match a.quic_ports {
        Some((first, last)) => println!(
            "listening on {local} (TCP; QUIC on UDP ports {first}-{last} of {})",
            local.ip()
        ),
        None => println!(
            "listening on {local} (TCP; QUIC on UDP ports of {})",
            local.ip()
        ),
    }
    println!(
        "allowing {}",
        allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("fingerprint {}", identity.fingerprint());
    let _ = std::io::stdout().flush();
    let server = Server::new(Settings {
        listen: local,
        token,
        allow,
        max_duration: Duration::from_secs_f64(a.max_duration),
        max_tests: a.max_tests,
        max_streams: a.max_streams,
        identity,
        quic_ports: a.quic_ports,
        drain: crate::server::DRAIN,
    });
    server
        .run(listener)
        .map_err(|e| runtime(format!("accepting on {local}: {e}")))
}

fn check_names(list: &[String], flag: &str) -> Result<(), RunError> {
    for n in list {
        if n.is_empty()
            || n.len() > 15
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(usage(format!(
                "{flag}: {n:?} is not a congestion control name"
            )));
        }
    }
    Ok(())
}

/// One test's live bar (`labnode_core::progress`: a terminal only, never a CI log): the
/// time sent of the test's duration and the rate, redrawn four times a second until dropped.
struct TestProgress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TestProgress {
    fn start(title: String, total: Duration, bytes: client::Progress) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let display = Progress::detect();
        let handle = display.shown().then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let what = format!("{title:<11}");
                let start = Instant::now();
                let mut last = (Instant::now(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let el = start.elapsed().min(total);
                    let b = bytes.load(Ordering::Relaxed);
                    let rate =
                        (b - last.1) as f64 * 8.0 / last.0.elapsed().as_secs_f64().max(1e-3) / 1e6;
                    last = (Instant::now(), b);
                    let detail = format!(
                        "{:>5.1}/{:.0} s {:>9.1} Mbit/s",
                        el.as_secs_f64(),
                        total.as_secs_f64(),
                        rate
                    );
                    display.bar(&what, el.as_secs_f64(), total.as_secs_f64(), &detail);
                }
                display.clear();
            })
        });
        TestProgress { stop, handle }
    }
}

impl Drop for TestProgress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Checks `a`, runs each test in turn and prints the results; writes one snapshot with the
/// `net_bench` record to the store `dir` when a test finished.
pub fn bench(a: BenchOptions, dir: PathBuf) -> Result<(), RunError> {
    snapshot::check_label(&a.label).map_err(|e| usage(format!("--label: {e}")))?;
    snapshot::check_label(&a.path).map_err(|_| {
        usage(format!(
            "--path {:?}: use letters, digits, '.', '_' or '-'",
            a.path
        ))
    })?;
    let token = Token::from_file(&a.token_file).map_err(usage)?;
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        return Err(usage(
            "--duration: give more than 0 and at most 3600 seconds",
        ));
    }
    if a.streams == 0 || a.streams > 128 {
        return Err(usage("--streams: give 1 to 128"));
    }
    let mut tcp = a.tcp.clone();
    if tcp.is_empty() && a.quic.is_empty() {
        tcp = vec!["cubic".into(), "bbr".into()];
    }
    check_names(&tcp, "--tcp")?;
    check_names(&a.quic, "--quic")?;
    let avail = crate::sys::available_congestion();
    for cc in &tcp {
        if !avail.is_empty() && !avail.contains(cc) {
            return Err(usage(format!(
                "--tcp {cc}: this kernel offers {}",
                avail.join(", ")
            )));
        }
    }
    for cc in &a.quic {
        quic::controller(cc).map_err(|e| usage(format!("--quic: {e}")))?;
    }
    let fingerprint = match (&a.fingerprint, a.quic.is_empty()) {
        (Some(f), _) => Some(quic::parse_fingerprint(f).map_err(usage)?),
        (None, false) => {
            return Err(usage(
                "--quic needs --fingerprint (the one `labnode net serve` printed)",
            ));
        }
        (None, true) => None,
    };
    let plan = Plan {
        peer: a.peer,
        token,
        streams: a.streams,
        duration: Duration::from_secs_f64(a.duration),
        fingerprint,
    };
    let jobs: Vec<(&str, &String)> = tcp
        .iter()
        .map(|c| ("tcp", c))
        .chain(a.quic.iter().map(|c| ("quic", c)))
        .collect();
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    let mut refused = false;
    for (protocol, cc) in jobs {
        let progress: client::Progress = Arc::new(AtomicU64::new(0));
        let line = TestProgress::start(
            format!("{protocol}/{cc}"),
            plan.duration,
            Arc::clone(&progress),
        );
        let r = if protocol == "tcp" {
            client::run_tcp(&plan, cc, &progress)
        } else {
            client::run_quic(&plan, cc, &progress)
        };
        drop(line);
        match r {
            Ok(run) => runs.push(run),
            Err(e) => {
                refused |= matches!(e, BenchError::Refused { .. });
                eprintln!("labnode: {protocol}/{cc}: {e}");
                errors.push(format!("{protocol}/{cc}"));
                if refused {
                    break; // a refusal (token, allowlist, caps) applies to every test
                }
            }
        }
    }
    let record = BenchRecord {
        path: a.path.clone(),
        peer: a.peer.to_string(),
        streams: a.streams,
        duration_seconds: a.duration,
        runs,
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).map_err(|e| runtime(e.to_string()))?
        );
    } else {
        print_table(&record);
    }
    if !record.runs.is_empty() {
        let mut snap = Snapshot::new(&a.label, host::facts(&HostPaths::default()))
            .map_err(|e| usage(e.to_string()))?;
        snap.add_metrics("net bench", &probe::record_metrics(&record));
        snap.add_record(probe::RECORD_KIND, &record)
            .map_err(|e| runtime(e.to_string()))?;
        let p = Store::new(&dir)
            .write(&snap)
            .map_err(|e| runtime(format!("cannot write the snapshot: {e}")))?;
        eprintln!("snapshot {}", p.display());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(runtime(format!(
            "{} of the tests failed: {}",
            errors.len(),
            errors.join(", ")
        )))
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{:.3}", s * 1e3))
}

/// The terminal table.
pub fn print_table(r: &BenchRecord) {
    println!(
        "net bench to {} over path {:?}: {} stream(s), {:.1} s each",
        r.peer, r.path, r.streams, r.duration_seconds
    );
    println!(
        "{:<8} {:<8} {:>12} {:>10} {:>10} {:>8} {:>12} {:>12} {:>5}",
        "protocol",
        "cc",
        "Mbit/s",
        "RTT ms",
        "min RTT",
        "retrans",
        "cli s/Gbit",
        "srv s/Gbit",
        "GSO"
    );
    for run in &r.runs {
        let cpu = |c| {
            run.cpu_seconds_per_gigabit(c)
                .map_or_else(|| "-".into(), |v| format!("{v:.3}"))
        };
        println!(
            "{:<8} {:<8} {:>12.1} {:>10} {:>10} {:>8} {:>12} {:>12} {:>5}{}",
            run.protocol,
            run.congestion,
            run.throughput_bits_per_second / 1e6,
            ms(run.rtt_seconds),
            ms(run.min_rtt_seconds),
            run.retransmitted,
            cpu(run.client_cpu_seconds),
            cpu(run.server_cpu_seconds),
            run.gso.map_or("-", |g| if g { "on" } else { "off" }),
            if run.experimental { "  *" } else { "" }
        );
    }
    if r.runs.iter().any(|x| x.experimental) {
        println!(
            "* quinn's BBR is experimental upstream (a 2021 port of quiche's BBRv1): read its figures with care."
        );
    }
    println!(
        "retrans: TCP segments retransmitted (TCP_INFO) or QUIC packets declared lost; CPU: sending/receiving threads only."
    );
}

/// Helper for callers that hold [`RunResult`]s: the figures as a one-line summary.
pub fn summary(run: &RunResult) -> String {
    format!(
        "{}/{}: {:.1} Mbit/s, RTT {} ms",
        run.protocol,
        run.congestion,
        run.throughput_bits_per_second / 1e6,
        ms(run.rtt_seconds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("9472-9479"), Ok((9472, 9479)));
        assert_eq!(parse_port_range("9472"), Ok((9472, 9472)));
        assert!(parse_port_range("9479-9472").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("9472-99999").is_err());
        assert!(parse_port_range("udp").is_err());
    }
}
