//! The demo's network part: two network namespaces joined by an emulated link
//! (labnode-netlab), `labnode net serve` in one and `labnode net bench` in the other (this
//! binary, run inside the namespaces as the net tests do), then the collectors run once
//! inside the client's namespace, which stands for the host's network.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use labnode_net::probe::BenchRecord;
use labnode_netlab::{End, Lab, Link, Spec};

use super::guard::{Ctl, DemoError, Proc};

/// The probe server's port inside the lab.
const PROBE_PORT: u16 = 9470;

/// The emulated link between the two namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkChoice {
    /// WAN-like: 100 Mbit/s, 40 ms RTT, 0.5% random loss each way (a TUN relay): a long,
    /// lossy path where the congestion control decides the throughput.
    Wan,
    /// A clean long path: 100 Mbit/s, 40 ms RTT, no random loss, a shallow bottleneck
    /// buffer (4 ms, a tenth of the path's bandwidth-delay product), as between CloudLab
    /// sites: where BBR helps without loss, and by how much.
    Clean,
    /// 1 Gbit/s veth with no added delay or loss (the c220g5's i350 port): CUBIC and BBR
    /// both fill it, and the tunnel's cost shows.
    Gbit,
}

impl LinkChoice {
    /// The lab of this link.
    pub fn spec(self, name: String, wireguard: bool) -> Spec {
        let relay = |loss| Link::Relay {
            rtt: Duration::from_millis(40),
            loss,
        };
        let (link, rate, queue_ms) = match self {
            LinkChoice::Wan => (relay(0.005), 100_000_000, 20),
            LinkChoice::Clean => (relay(0.0), 100_000_000, 4),
            LinkChoice::Gbit => (Link::Veth, 1_000_000_000, 20),
        };
        Spec {
            name,
            link,
            rate_bits: Some(rate),
            queue: Duration::from_millis(queue_ms),
            wireguard,
        }
    }

    /// Whether its relay needs `/dev/net/tun`.
    pub fn needs_tun(self) -> bool {
        matches!(self, LinkChoice::Wan | LinkChoice::Clean)
    }

    /// One line for the output and the report.
    pub fn describe(self) -> &'static str {
        match self {
            LinkChoice::Wan => {
                "a WAN-like link: 100 Mbit/s, 40 ms RTT, 0.5% random loss each way (a TUN relay between two network namespaces)"
            }
            LinkChoice::Clean => {
                "a clean long path: 100 Mbit/s, 40 ms RTT, no random loss, a shallow 4 ms bottleneck buffer (a TUN relay between two network namespaces)"
            }
            LinkChoice::Gbit => {
                "a 1 Gbit/s link with no added delay or loss (a tbf-shaped veth pair between two network namespaces)"
            }
        }
    }
}

/// One `net bench` run: a path, the TCP and QUIC congestion controls to test.
#[derive(Debug, Clone)]
pub struct Bench {
    /// `direct` or `wireguard`.
    pub path: &'static str,
    /// TCP congestion controls.
    pub tcp: &'static [&'static str],
    /// QUIC congestion controls.
    pub quic: &'static [&'static str],
}

impl Bench {
    fn runs(&self) -> usize {
        self.tcp.len() + self.quic.len()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tcp.is_empty() {
            parts.push(format!("TCP {}", self.tcp.join(", ")));
        }
        if !self.quic.is_empty() {
            parts.push(format!("QUIC {}", self.quic.join(", ")));
        }
        format!("{} over the {} path", parts.join(" and "), self.path)
    }
}

/// One side's network: its label, the congestion control its host runs, its benches.
#[derive(Debug, Clone)]
pub struct SidePlan {
    /// Snapshot label: `before` or `after`.
    pub label: &'static str,
    /// What the side stands for, for progress lines.
    pub title: &'static str,
    /// `net.ipv4.tcp_congestion_control` in both namespaces.
    pub congestion: &'static str,
    /// Whether the lab has a WireGuard tunnel.
    pub wireguard: bool,
    /// The benches, in order.
    pub benches: Vec<Bench>,
}

impl SidePlan {
    /// Test runs in all.
    pub fn runs(&self) -> usize {
        self.benches.iter().map(Bench::runs).sum()
    }
}

/// What the demo needs to run a side.
pub struct Env<'a> {
    /// Signals and progress.
    pub ctl: &'a Ctl,
    /// This binary.
    pub exe: &'a Path,
    /// The demo's temporary directory.
    pub tmp: &'a Path,
    /// The snapshot store.
    pub store: &'a Path,
    /// The shared token file.
    pub token: &'a Path,
    /// The link.
    pub link: LinkChoice,
    /// Seconds each test run sends for.
    pub duration: f64,
    /// Runs of each test, interleaved.
    pub repeat: u32,
}

/// What a side measured.
pub struct SideResult {
    /// What the collectors' run returned.
    pub collected: crate::cmd::collect::Collected,
    /// `Err(why)` when the namespace's default congestion control could not be set to the
    /// side's; its tests set theirs per socket all the same.
    pub in_force: Result<(), String>,
}

const CC_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Sets `net.ipv4.tcp_congestion_control` inside `netns`, where the kernel allows it: a
/// namespace's default must be one of the init namespace's
/// `net.ipv4.tcp_allowed_congestion_control` (EPERM otherwise), and the demo does not widen
/// that host-wide list. `Ok(Err(why))` when it stays the host's default.
fn set_default_congestion(netns: &str, cc: &str) -> Result<Result<(), String>, DemoError> {
    let r = labnode_netlab::within(netns, || {
        let now = std::fs::read_to_string(CC_SYSCTL).unwrap_or_default();
        if now.trim() == cc {
            return Ok(());
        }
        std::fs::write(CC_SYSCTL, cc).map_err(|e| (now.trim().to_owned(), e))
    })
    .map_err(|e| DemoError::Failed(e.to_string()))?;
    Ok(r.map_err(|(now, e)| {
        let allowed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
            .unwrap_or_default();
        if e.raw_os_error() == Some(libc::EPERM) {
            format!(
                "the namespaces kept the host's default congestion control, {now}, which the row \"TCP congestion control in force\" shows: a network namespace may default only to one the host allows (net.ipv4.tcp_allowed_congestion_control = {}), and the demo does not change that host-wide setting; every test set {cc} on its own sockets",
                allowed.trim()
            )
        } else {
            format!(
                "the namespaces kept the host's default congestion control, {now} ({cc}: {e}); every test set {cc} on its own sockets"
            )
        }
    }))
}

/// A probe server and its fingerprint.
struct Server {
    _proc: Proc,
    fingerprint: String,
}

/// Builds the lab, runs the side's benches, collects inside the client's namespace, and
/// takes the lab down again (also on error or signal).
pub fn run_side(
    env: &Env<'_>,
    plan: &SidePlan,
    lab_name: String,
    collect: impl FnOnce() -> Result<crate::cmd::collect::Collected, crate::exit::Failure>,
) -> Result<SideResult, DemoError> {
    let ctl = env.ctl;
    ctl.progress.step(&format!(
        "network {}: {} ({}{}) over {}",
        plan.label,
        plan.title,
        plan.congestion,
        if plan.wireguard {
            ", wireguard-go tunnel"
        } else {
            ", no tunnel"
        },
        env.link.describe()
    ));
    let lab = Lab::up(&env.link.spec(lab_name, plan.wireguard))
        .map_err(|e| DemoError::Failed(format!("building the {} lab: {e}", plan.label)))?;
    ctl.check()?;
    let (a, b) = (&lab.layout.a, &lab.layout.b);
    let in_force = set_default_congestion(&a.netns, plan.congestion)?;
    let mut servers: Vec<(&'static str, Ipv4Addr, Server)> = Vec::new();
    // Interleaved (each bench once, then again), so a drift of the host is spread over all.
    let rounds = (1..=env.repeat).flat_map(|round| plan.benches.iter().map(move |b| (round, b)));
    for (round, bench) in rounds {
        let (listen, client) = match bench.path {
            "wireguard" => match (b.wireguard_address, a.wireguard_address) {
                (Some(l), Some(c)) => (l, c),
                _ => {
                    return Err(DemoError::Failed(
                        "the lab has no WireGuard tunnel to bench through".into(),
                    ));
                }
            },
            _ => (b.address, a.address),
        };
        if !servers.iter().any(|(p, _, _)| *p == bench.path) {
            let s = serve(env, &lab, b, listen, client, bench.path)?;
            servers.push((bench.path, listen, s));
        }
        let fingerprint = servers
            .iter()
            .find(|(p, _, _)| *p == bench.path)
            .map(|(_, _, s)| s.fingerprint.clone())
            .unwrap_or_default();
        bench_once(env, &lab, a, plan, bench, round, listen, &fingerprint)?;
        ctl.check()?;
    }
    ctl.progress.live(&format!(
        "collecting inside {} (the {} host's network)",
        a.netns, plan.label
    ));
    let collected = labnode_netlab::within(&a.netns, collect)
        .map_err(|e| DemoError::Failed(e.to_string()))?
        .map_err(|f| {
            DemoError::Failed(format!("collecting the {} side: {}", plan.label, f.message))
        })?;
    ctl.progress
        .live(&format!("removing the {} lab", plan.label));
    drop(servers);
    drop(lab);
    Ok(SideResult {
        collected,
        in_force,
    })
}

/// Starts `net serve` in `b`'s namespace and reads its fingerprint.
fn serve(
    env: &Env<'_>,
    lab: &Lab,
    b: &End,
    listen: Ipv4Addr,
    client: Ipv4Addr,
    path: &str,
) -> Result<Server, DemoError> {
    let mut cmd = lab.command(b, &env.exe.to_string_lossy());
    cmd.args([
        "net",
        "serve",
        "--listen",
        &format!("{listen}:{PROBE_PORT}"),
        "--token-file",
        &env.token.to_string_lossy(),
        "--allow",
        &format!("{client}/32"),
    ])
    .stdout(Stdio::piped());
    let what = format!("labnode net serve in {} ({path} path)", b.netns);
    let mut p = Proc::spawn(
        cmd,
        &what,
        &env.tmp.join(format!("serve-{}-{path}.err", b.netns)),
    )?;
    let out = p
        .stdout()
        .ok_or_else(|| DemoError::Failed(format!("{what}: no standard output")))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(fp) = line.strip_prefix("fingerprint ") {
                let _ = tx.send(fp.trim().to_owned());
            }
        }
    });
    for _ in 0..300 {
        env.ctl.check()?;
        if let Ok(fp) = rx.recv_timeout(Duration::from_millis(50)) {
            return Ok(Server {
                _proc: p,
                fingerprint: fp,
            });
        }
        if !p.running() {
            return Err(DemoError::Failed(format!(
                "{what} exited{}",
                p.stderr_tail()
            )));
        }
    }
    Err(DemoError::Failed(format!(
        "{what} printed no fingerprint within 15 s{}",
        p.stderr_tail()
    )))
}

/// One `net bench` in `a`'s namespace (run `round` of `env.repeat`); its record is in the
/// store, its figures are shown.
#[allow(clippy::too_many_arguments)]
fn bench_once(
    env: &Env<'_>,
    lab: &Lab,
    a: &End,
    plan: &SidePlan,
    bench: &Bench,
    round: u32,
    peer: Ipv4Addr,
    fingerprint: &str,
) -> Result<(), DemoError> {
    let mut cmd = lab.command(a, &env.exe.to_string_lossy());
    let duration = format!("{}", env.duration);
    let peer = format!("{peer}:{PROBE_PORT}");
    let token = env.token.to_string_lossy();
    let store = env.store.to_string_lossy();
    let mut args: Vec<&str> = vec![
        "net",
        "bench",
        "--peer",
        &peer,
        "--token-file",
        &token,
        "--duration",
        &duration,
        "--path",
        bench.path,
        "--json",
        "--label",
        plan.label,
        "--out",
        &store,
    ];
    let tcp = bench.tcp.join(",");
    let quic = bench.quic.join(",");
    if !bench.tcp.is_empty() {
        args.extend(["--tcp", &tcp]);
    }
    if !bench.quic.is_empty() {
        args.extend(["--quic", &quic, "--fingerprint", fingerprint]);
    }
    cmd.args(&args).stdout(Stdio::piped());
    let what = format!("labnode net bench ({})", bench.describe());
    let err: PathBuf = env
        .tmp
        .join(format!("bench-{}-{}.err", plan.label, bench.path));
    let mut p = Proc::spawn(cmd, &what, &err)?;
    let mut stdout = p
        .stdout()
        .ok_or_else(|| DemoError::Failed(format!("{what}: no standard output")))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let expected = env.duration * bench.runs() as f64;
    let limit = Duration::from_secs_f64(expected + 30.0 * bench.runs() as f64);
    let title = format!("{}, run {round} of {}", bench.describe(), env.repeat);
    let mut shown = String::new();
    let status = p.wait(env.ctl, limit, |t| {
        let line = format!(
            "{title}: {:.0} s of about {:.0} s",
            t.as_secs_f64(),
            expected
        );
        if line != shown {
            env.ctl.progress.live(&line);
            shown = line;
        }
    })?;
    let json = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    if !status.success() {
        return Err(DemoError::Failed(format!(
            "{what} failed ({status}){}",
            p.stderr_tail()
        )));
    }
    let record: BenchRecord = serde_json::from_str(&json)
        .map_err(|e| DemoError::Failed(format!("{what} printed no result ({e}): {json:.200}")))?;
    for r in &record.runs {
        env.ctl.progress.step(&format!(
            "  {} {} over {} (run {round}): {:.1} Mbit/s, RTT {}",
            r.protocol,
            r.congestion,
            record.path,
            r.throughput_bits_per_second / 1e6,
            r.rtt_seconds
                .map_or("-".into(), |s| format!("{:.1} ms", s * 1e3))
        ));
    }
    Ok(())
}
