//! The `labnode net serve` and `labnode net bench` subcommands.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use labnode_core::host::{self, HostPaths};
use labnode_core::snapshot::{self, Snapshot, Store};
use labnode_net::probe::{self, BenchRecord, RunResult};

use crate::access::{self, Token};
use crate::client::{self, BenchError, Plan};
use crate::quic::{self, Identity};
use crate::server::{Server, Settings};

/// `labnode net ...`.
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Serve throughput tests to allowed clients that present the token. Prints the QUIC
    /// certificate's SHA-256 fingerprint for `net bench --fingerprint`.
    Serve(ServeArgs),
    /// Measure throughput, RTT under load, retransmits and CPU per gigabit against a
    /// `net serve`, for each TCP and QUIC congestion control asked for; prints a table (or
    /// JSON) and writes one snapshot with a `net_bench` record.
    Bench(BenchArgs),
}

impl NetCommand {
    /// The `--config` file, if the subcommand takes one.
    pub fn config(&self) -> Option<&PathBuf> {
        match self {
            NetCommand::Serve(_) => None,
            NetCommand::Bench(b) => b.config.as_ref(),
        }
    }
}

/// `labnode net serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (TCP; QUIC tests get UDP ports on the same address). Bind the
    /// WireGuard or lab address, not 0.0.0.0, unless every network there is trusted.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// File holding the shared token (at least 16 bytes, one line).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Clients allowed to run tests: addresses or CIDR ranges, comma-separated, repeatable.
    #[arg(long, value_name = "CIDR[,CIDR...]", required = true)]
    pub allow: Vec<String>,
    /// The longest test accepted, in seconds (above 0, at most 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub max_duration: f64,
    /// Tests that may run at once; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_tests: usize,
    /// Streams one test may use.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_streams: u32,
    /// Keep the QUIC certificate in DIR (cert.der, key.der), so its fingerprint survives
    /// restarts. Default: a new certificate at every start.
    #[arg(long, value_name = "DIR")]
    pub identity: Option<PathBuf>,
    /// UDP ports QUIC tests may use, e.g. 9472-9479, so a firewall can open exactly these
    /// (at least --max-tests of them). Default: any ephemeral port.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    pub quic_ports: Option<(u16, u16)>,
}

/// `FIRST-LAST` (or one port), both 1..65535, FIRST <= LAST.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
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

/// `labnode net bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The `net serve` to test against, e.g. 10.0.0.2:9470.
    #[arg(long, value_name = "ADDR")]
    pub peer: SocketAddr,
    /// File holding the shared token.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// TCP congestion controls to test, set per socket (default cubic,bbr when neither
    /// --tcp nor --quic is given).
    #[arg(long, value_name = "CC[,CC...]", value_delimiter = ',')]
    pub tcp: Vec<String>,
    /// QUIC congestion controls to test (cubic, bbr, newreno); needs --fingerprint.
    #[arg(long, value_name = "CC[,CC...]", value_delimiter = ',')]
    pub quic: Vec<String>,
    /// Parallel streams (TCP connections, or QUIC streams on one connection).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub streams: u32,
    /// Seconds each test sends for (above 0, at most 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub duration: f64,
    /// The server certificate's SHA-256 fingerprint, as `net serve` printed it.
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// Name of the network path, e.g. direct or wireguard (the `path` label).
    #[arg(long, value_name = "NAME", default_value = "direct")]
    pub path: String,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Label of the snapshot.
    #[arg(long, value_name = "NAME", default_value = "net-bench")]
    pub label: String,
    /// Snapshot directory; default: the config's snapshot_dir.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Configuration file (YAML), for snapshot_dir.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A failure and its exit code (2: bad arguments, 1: failed while running).
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: u8,
    /// The message.
    pub message: String,
}

fn usage(m: impl Into<String>) -> CliError {
    CliError {
        code: 2,
        message: m.into(),
    }
}
fn runtime(m: impl Into<String>) -> CliError {
    CliError {
        code: 1,
        message: m.into(),
    }
}

/// Runs a `net` subcommand; `snapshot_dir` is the configured store.
pub fn run(cmd: NetCommand, snapshot_dir: PathBuf) -> Result<(), CliError> {
    match cmd {
        NetCommand::Serve(a) => serve(a),
        NetCommand::Bench(a) => bench(a, snapshot_dir),
    }
}

fn serve(a: ServeArgs) -> Result<(), CliError> {
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

fn check_names(list: &[String], flag: &str) -> Result<(), CliError> {
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

/// Prints a progress line on a terminal, nothing otherwise.
struct ProgressLine {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    fn start(title: String, total: Duration, bytes: client::Progress) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let on =
            std::io::stderr().is_terminal() && std::env::var("CI").map_or(true, |v| v != "true");
        let handle = on.then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut last = (Instant::now(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let el = start.elapsed().min(total);
                    let b = bytes.load(Ordering::Relaxed);
                    let rate =
                        (b - last.1) as f64 * 8.0 / last.0.elapsed().as_secs_f64().max(1e-3) / 1e6;
                    last = (Instant::now(), b);
                    let frac = el.as_secs_f64() / total.as_secs_f64().max(1e-3);
                    let filled = (frac * 30.0) as usize;
                    eprint!(
                        "\r  {title:<11} [{}{}] {:>5.1}/{:.0} s {:>9.1} Mbit/s ",
                        "#".repeat(filled.min(30)),
                        ".".repeat(30 - filled.min(30)),
                        el.as_secs_f64(),
                        total.as_secs_f64(),
                        rate
                    );
                }
                eprint!("\r{}\r", " ".repeat(80));
            })
        });
        ProgressLine { stop, handle }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn bench(a: BenchArgs, default_dir: PathBuf) -> Result<(), CliError> {
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
    let dir = a.out.clone().unwrap_or(default_dir);
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
        let line = ProgressLine::start(
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
