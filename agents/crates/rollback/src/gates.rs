//! Health gates: each polled on its own thread until it passes or its time runs out, the
//! moment it first passed recorded; then one round of every gate at once confirms that
//! they are green together.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Config, GateConfig, SystemdAddress};
use crate::exposition;
use crate::systemd::Systemd;

/// The longest a single check may take, so a gate keeps polling at its pace.
const CHECK_BOUND: Duration = Duration::from_secs(2);

/// What a gate checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// These units are `active`.
    SystemdActive(Vec<String>),
    /// No unit is `failed`, except these.
    SystemdNoFailed(Vec<String>),
    /// The job queue is empty.
    SystemdJobsEmpty,
    /// A TCP connection succeeds.
    Tcp(String),
    /// GET answers 2xx (and the body contains a text).
    Http {
        /// URL.
        url: String,
        /// Text the body must contain.
        body_contains: Option<String>,
    },
    /// Every (selected) Prometheus target is up, scraped after the gate started.
    PrometheusTargets {
        /// Prometheus base URL.
        url: String,
        /// Jobs to look at (empty: all).
        jobs: Vec<String>,
    },
    /// WireGuard handshakes younger than `max_age`, from labnode's net exporter.
    Wireguard {
        /// `/metrics` URL.
        metrics: String,
        /// Interface.
        interface: String,
        /// One peer, or all of the interface.
        peer: Option<String>,
        /// Oldest acceptable handshake.
        max_age: Duration,
    },
    /// ZFS pools ONLINE, from labnode's zfs exporter.
    ZfsPools {
        /// `/metrics` URL.
        metrics: String,
        /// Pools (empty: every pool reported).
        pools: Vec<String>,
    },
    /// At least `devices` GPUs answer through NVML, and none is lost.
    Gpu {
        /// Minimum count.
        devices: u32,
        /// Libraries to try, in order.
        libraries: Vec<PathBuf>,
    },
    /// A command exits 0.
    Command(Vec<String>),
}

impl Check {
    /// The check's kind, as in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::SystemdActive(_) => "systemd_active",
            Check::SystemdNoFailed(_) => "systemd_no_failed",
            Check::SystemdJobsEmpty => "systemd_jobs_empty",
            Check::Tcp(_) => "tcp",
            Check::Http { .. } => "http",
            Check::PrometheusTargets { .. } => "prometheus_targets",
            Check::Wireguard { .. } => "wireguard",
            Check::ZfsPools { .. } => "zfs_pools",
            Check::Gpu { .. } => "gpu",
            Check::Command(_) => "command",
        }
    }

    /// What it checks, in words, for plans and logs.
    pub fn describe(&self) -> String {
        match self {
            Check::SystemdActive(u) => format!("systemd units active: {}", u.join(", ")),
            Check::SystemdNoFailed(i) if i.is_empty() => "no failed systemd units".into(),
            Check::SystemdNoFailed(i) => {
                format!("no failed systemd units (ignoring {})", i.join(", "))
            }
            Check::SystemdJobsEmpty => "systemd job queue empty".into(),
            Check::Tcp(a) => format!("TCP connect to {a}"),
            Check::Http {
                url,
                body_contains: None,
            } => format!("GET {url} answers 2xx"),
            Check::Http {
                url,
                body_contains: Some(b),
            } => {
                format!("GET {url} answers 2xx containing {b:?}")
            }
            Check::PrometheusTargets { url, jobs } if jobs.is_empty() => {
                format!("every target of {url} up")
            }
            Check::PrometheusTargets { url, jobs } => {
                format!("targets of {url} up (jobs {})", jobs.join(", "))
            }
            Check::Wireguard {
                interface,
                peer,
                max_age,
                ..
            } => format!(
                "WireGuard {interface} {} handshake younger than {}s",
                peer.as_deref()
                    .map_or("every peer's".to_owned(), |p| format!("peer {p}'s")),
                max_age.as_secs()
            ),
            Check::ZfsPools { pools, .. } if pools.is_empty() => "every ZFS pool ONLINE".into(),
            Check::ZfsPools { pools, .. } => format!("ZFS pools ONLINE: {}", pools.join(", ")),
            Check::Gpu { devices, .. } => format!("at least {devices} GPU(s) answer through NVML"),
            Check::Command(argv) => format!("`{}` exits 0", argv.join(" ")),
        }
    }
}

/// A gate ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Its name.
    pub name: String,
    /// How long it may stay red.
    pub timeout: Duration,
    /// How often it is checked.
    pub interval: Duration,
    /// What it checks.
    pub check: Check,
}

/// Builds the gates of a configuration.
pub fn from_config(cfg: &Config) -> Vec<Gate> {
    cfg.gates.iter().map(|g| gate(cfg, g)).collect()
}

fn gate(cfg: &Config, g: &GateConfig) -> Gate {
    let check = if let Some(u) = &g.systemd_active {
        Check::SystemdActive(u.clone())
    } else if let Some(f) = &g.systemd_no_failed {
        Check::SystemdNoFailed(f.ignore.clone())
    } else if g.systemd_jobs_empty.is_some() {
        Check::SystemdJobsEmpty
    } else if let Some(a) = &g.tcp {
        Check::Tcp(a.clone())
    } else if let Some(h) = &g.http {
        Check::Http {
            url: h.url.clone(),
            body_contains: h.body_contains.clone(),
        }
    } else if let Some(p) = &g.prometheus_targets {
        Check::PrometheusTargets {
            url: p.url.trim_end_matches('/').to_owned(),
            jobs: p.jobs.clone(),
        }
    } else if let Some(w) = &g.wireguard {
        Check::Wireguard {
            metrics: w.metrics.clone(),
            interface: w.interface.clone(),
            peer: w.peer.clone(),
            max_age: w.max_age.map_or(Duration::from_secs(180), |a| a.get()),
        }
    } else if let Some(z) = &g.zfs_pools {
        Check::ZfsPools {
            metrics: z.metrics.clone(),
            pools: z.pools.clone(),
        }
    } else if let Some(gpu) = &g.gpu {
        Check::Gpu {
            devices: gpu.devices.unwrap_or(1),
            libraries: match &gpu.library {
                Some(l) => vec![l.clone()],
                None => NVML_LIBRARIES.iter().map(PathBuf::from).collect(),
            },
        }
    } else {
        Check::Command(g.command.clone().unwrap_or_default())
    };
    Gate {
        name: g.name(),
        timeout: cfg.timeout_of(g),
        interval: cfg.interval_of(g),
        check,
    }
}

/// Where the `gpu` gate looks for NVML when no library is configured: the loader's search
/// path, then the NixOS driver location (the gpu collector's search too; a test in the
/// binary, which has both, keeps them equal).
pub const NVML_LIBRARIES: [&str; 2] = [
    "libnvidia-ml.so.1",
    "/run/opengl-driver/lib/libnvidia-ml.so.1",
];

/// How one gate went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateOutcome {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Whether it was green at the end.
    pub passed: bool,
    /// When it first passed, seconds from the start of the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_pass_seconds: Option<f64>,
    /// Checks made.
    pub checks: u32,
    /// Why it was red the last time it was red (or is still).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Its timeout, seconds.
    pub timeout_seconds: f64,
}

/// How a round of gates went.
#[derive(Debug, Clone, PartialEq)]
pub struct GatesResult {
    /// Each gate.
    pub gates: Vec<GateOutcome>,
    /// When every gate was green together, from the start of the switch.
    pub green_at: Option<Duration>,
}

impl GatesResult {
    /// The gates that ended red, with why.
    pub fn red(&self) -> Vec<String> {
        self.gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| {
                format!(
                    "{} ({}) red after {} checks: {}",
                    g.name,
                    g.kind,
                    g.checks,
                    g.last_error.as_deref().unwrap_or("no answer")
                )
            })
            .collect()
    }
}

/// Where systemd gates reach systemd.
#[derive(Debug, Clone)]
pub struct Env {
    /// The manager's address.
    pub systemd: SystemdAddress,
}

/// One gate's live state, shared with the progress display.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Gate name.
    pub name: String,
    /// Green now.
    pub green: bool,
    /// Last error.
    pub error: Option<String>,
}

/// Runs every gate until all are green together, or one runs out of time. Timings are from
/// `switch_start`; gate timeouts count from now and never reach past `deadline`.
/// `stop` ends the polling early (an interrupted run): the gates still red stay red.
pub fn run(
    gates: &[Gate],
    env: &Env,
    switch_start: Instant,
    deadline: Option<Instant>,
    live: &Mutex<Vec<Live>>,
    stop: &(dyn Fn() -> bool + Sync),
) -> GatesResult {
    let polling_since = SystemTime::now();
    let start = Instant::now();
    let mut outcomes: Vec<GateOutcome> = gates
        .iter()
        .map(|g| GateOutcome {
            name: g.name.clone(),
            kind: g.check.kind().to_owned(),
            passed: false,
            first_pass_seconds: None,
            checks: 0,
            last_error: None,
            timeout_seconds: g.timeout.as_secs_f64(),
        })
        .collect();
    if let Ok(mut l) = live.lock() {
        *l = gates
            .iter()
            .map(|g| Live {
                name: g.name.clone(),
                ..Live::default()
            })
            .collect();
    }
    let ends: Vec<Instant> = gates
        .iter()
        .map(|g| {
            let own = start + g.timeout;
            deadline.map_or(own, |d| own.min(d))
        })
        .collect();
    let mut green_since: Vec<Option<Instant>> = vec![None; gates.len()];
    loop {
        let pending: Vec<usize> = (0..gates.len())
            .filter(|i| green_since[*i].is_none())
            .collect();
        if pending.is_empty() {
            // Every gate has passed: once more, all at once.
            let mut checker = Checker::new(env.clone());
            let mut all = true;
            for (i, g) in gates.iter().enumerate() {
                outcomes[i].checks += 1;
                if let Err(e) = checker.check(&g.check, polling_since, CHECK_BOUND) {
                    all = false;
                    green_since[i] = None;
                    outcomes[i].last_error = Some(format!("red again after passing: {e}"));
                    set_live(live, i, false, Some(e));
                }
            }
            if all {
                let green_at = green_since
                    .iter()
                    .flatten()
                    .max()
                    .map(|t| t.duration_since(switch_start));
                for o in &mut outcomes {
                    o.passed = true;
                }
                return GatesResult {
                    gates: outcomes,
                    green_at: Some(green_at.unwrap_or_else(|| start.duration_since(switch_start))),
                };
            }
            continue;
        }
        let results: Vec<(usize, PollResult)> = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .iter()
                .map(|&i| {
                    let g = &gates[i];
                    let end = ends[i];
                    let env = env.clone();
                    (
                        i,
                        s.spawn(move || poll(g, &env, polling_since, end, live, i, stop)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| {
                    (
                        i,
                        h.join().unwrap_or(PollResult {
                            passed_at: None,
                            checks: 0,
                            last_error: Some("the gate's thread panicked".into()),
                        }),
                    )
                })
                .collect()
        });
        let mut timed_out = false;
        for (i, r) in results {
            outcomes[i].checks += r.checks;
            if r.last_error.is_some() {
                outcomes[i].last_error = r.last_error;
            }
            match r.passed_at {
                Some(t) => {
                    green_since[i] = Some(t);
                    if outcomes[i].first_pass_seconds.is_none() {
                        outcomes[i].first_pass_seconds =
                            Some(t.duration_since(switch_start).as_secs_f64());
                    }
                }
                None => timed_out = true,
            }
        }
        if timed_out {
            // The gates that passed earlier may have turned red since (a unit that was
            // active for a moment, then failed): the record says how they are now.
            let mut checker = Checker::new(env.clone());
            for (i, o) in outcomes.iter_mut().enumerate() {
                o.passed = green_since[i].is_some();
                if o.passed {
                    o.checks += 1;
                    if let Err(e) = checker.check(&gates[i].check, polling_since, CHECK_BOUND) {
                        o.passed = false;
                        o.last_error = Some(format!("red again after passing: {e}"));
                    }
                }
            }
            return GatesResult {
                gates: outcomes,
                green_at: None,
            };
        }
    }
}

fn set_live(live: &Mutex<Vec<Live>>, i: usize, green: bool, error: Option<String>) {
    if let Ok(mut l) = live.lock() {
        if let Some(g) = l.get_mut(i) {
            g.green = green;
            g.error = error;
        }
    }
}

struct PollResult {
    passed_at: Option<Instant>,
    checks: u32,
    last_error: Option<String>,
}

fn poll(
    g: &Gate,
    env: &Env,
    since: SystemTime,
    end: Instant,
    live: &Mutex<Vec<Live>>,
    i: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> PollResult {
    let mut checker = Checker::new(env.clone());
    let mut checks = 0;
    let mut last_error = None;
    loop {
        let at = Instant::now();
        let bound = end
            .saturating_duration_since(at)
            .clamp(Duration::from_millis(50), CHECK_BOUND);
        checks += 1;
        match checker.check(&g.check, since, bound) {
            Ok(()) => {
                set_live(live, i, true, None);
                return PollResult {
                    passed_at: Some(Instant::now()),
                    checks,
                    last_error,
                };
            }
            Err(e) => {
                set_live(live, i, false, Some(e.clone()));
                last_error = Some(e);
            }
        }
        let next = at + g.interval;
        if next >= end || stop() {
            return PollResult {
                passed_at: None,
                checks,
                last_error,
            };
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Runs checks, keeping what can be kept between them (the systemd connection).
pub struct Checker {
    env: Env,
    systemd: Option<Systemd>,
    own_units: Vec<String>,
}

impl Checker {
    /// A checker; nothing is connected until a check needs it.
    pub fn new(env: Env) -> Self {
        Checker {
            env,
            systemd: None,
            own_units: crate::systemd::own_units(),
        }
    }

    /// Checks once, within `bound`; `since` is when the gate started (older Prometheus
    /// scrapes do not count). `Err` says why the gate is red.
    pub fn check(
        &mut self,
        check: &Check,
        since: SystemTime,
        bound: Duration,
    ) -> Result<(), String> {
        match check {
            Check::SystemdActive(_) | Check::SystemdNoFailed(_) | Check::SystemdJobsEmpty => {
                let r = self.systemd_check(check, bound);
                if r.is_err() {
                    // Reconnect next time: systemd may have been re-executed.
                    self.systemd = None;
                }
                r
            }
            Check::Tcp(addr) => tcp(addr, bound),
            Check::Http { url, body_contains } => http(url, body_contains.as_deref(), bound),
            Check::PrometheusTargets { url, jobs } => prometheus_targets(url, jobs, since, bound),
            Check::Wireguard {
                metrics,
                interface,
                peer,
                max_age,
            } => wireguard(metrics, interface, peer.as_deref(), *max_age, bound),
            Check::ZfsPools { metrics, pools } => zfs_pools(metrics, pools, bound),
            Check::Gpu { devices, libraries } => gpu(*devices, libraries),
            Check::Command(argv) => command(argv, bound),
        }
    }

    fn systemd_check(&mut self, check: &Check, bound: Duration) -> Result<(), String> {
        if self.systemd.is_none() {
            self.systemd =
                Some(Systemd::connect(&self.env.systemd, bound).map_err(|e| e.to_string())?);
        }
        let Some(sd) = self.systemd.as_ref() else {
            return Err("no systemd connection".into());
        };
        match check {
            Check::SystemdActive(units) => {
                let got = sd.units(units).map_err(|e| e.to_string())?;
                let not: Vec<String> = got
                    .iter()
                    .filter(|u| u.active_state != "active")
                    .map(|u| {
                        if u.load_state == "loaded" {
                            format!("{} is {} ({})", u.name, u.active_state, u.sub_state)
                        } else {
                            format!("{} is {}", u.name, u.load_state)
                        }
                    })
                    .collect();
                let missing: Vec<&String> = units
                    .iter()
                    .filter(|u| !got.iter().any(|g| &g.name == *u))
                    .collect();
                if !missing.is_empty() {
                    Err(format!("systemd does not report {missing:?}"))
                } else if not.is_empty() {
                    Ok(())
                } else {
                    Err(not.join(", "))
                }
            }
            Check::SystemdNoFailed(ignore) => {
                let failed: Vec<String> = sd
                    .units_in_state(&["failed"])
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|u| u.name)
                    .filter(|n| !ignore.contains(n))
                    .collect();
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(format!("failed units: {}", failed.join(", ")))
                }
            }
            _ => {
                let all = sd.jobs().map_err(|e| e.to_string())?;
                let jobs = crate::systemd::unsettled(&all, &self.own_units);
                if jobs.is_empty() {
                    Ok(())
                } else {
                    let shown: Vec<String> = jobs
                        .iter()
                        .take(5)
                        .map(|j| format!("{} {} ({})", j.job_type, j.unit, j.state))
                        .collect();
                    Err(format!("{} jobs queued: {}", jobs.len(), shown.join(", ")))
                }
            }
        }
    }
}

fn tcp(addr: &str, bound: Duration) -> Result<(), String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .collect();
    let mut last = format!("{addr}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, bound) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

thread_local! {
    /// One HTTP agent per gate thread, kept between checks (no connection pooling: every
    /// check opens a fresh connection, so an old server process cannot answer for a new one).
    static AGENT: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
}

fn get(url: &str, bound: Duration) -> Result<(u16, String), String> {
    let resp = AGENT.with(|agent| {
        agent
            .get(url)
            .config()
            .timeout_global(Some(bound))
            .build()
            .call()
    });
    let mut resp = resp.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok((status, body))
}

fn http(url: &str, body_contains: Option<&str>, bound: Duration) -> Result<(), String> {
    let (status, body) = get(url, bound)?;
    if !(200..300).contains(&status) {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    match body_contains {
        Some(want) if !body.contains(want) => {
            let shown: String = body.chars().take(80).collect();
            Err(format!(
                "GET {url}: the body does not contain {want:?} (it starts {shown:?})"
            ))
        }
        _ => Ok(()),
    }
}

fn prometheus_targets(
    url: &str,
    jobs: &[String],
    since: SystemTime,
    bound: Duration,
) -> Result<(), String> {
    let api = format!("{url}/api/v1/targets?state=active");
    let (status, body) = get(&api, bound)?;
    if status != 200 {
        return Err(format!("GET {api}: HTTP {status}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET {api}: not JSON: {e}"))?;
    let targets = v["data"]["activeTargets"]
        .as_array()
        .ok_or_else(|| format!("GET {api}: no data.activeTargets"))?;
    let since = labnode_core::sys::unix_seconds(since);
    let mut seen = 0;
    let mut bad = Vec::new();
    for t in targets {
        let job = t["labels"]["job"].as_str().unwrap_or("");
        if !jobs.is_empty() && !jobs.iter().any(|j| j == job) {
            continue;
        }
        seen += 1;
        let instance = t["labels"]["instance"].as_str().unwrap_or("?");
        let health = t["health"].as_str().unwrap_or("unknown");
        let scraped = t["lastScrape"].as_str().and_then(exposition::parse_rfc3339);
        if health != "up" {
            let why = t["lastError"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or(health);
            bad.push(format!("{job}/{instance} {health}: {why}"));
        } else if scraped.is_none_or(|s| s < since) {
            bad.push(format!("{job}/{instance} not scraped since the switch"));
        }
    }
    if seen == 0 {
        return Err(if jobs.is_empty() {
            format!("{url} has no active targets")
        } else {
            format!("{url} has no active target of job {}", jobs.join(", "))
        });
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

fn scrape(url: &str, bound: Duration) -> Result<Vec<exposition::Line>, String> {
    let (status, body) = get(url, bound)?;
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    Ok(exposition::parse(&body))
}

fn wireguard(
    metrics: &str,
    interface: &str,
    peer: Option<&str>,
    max_age: Duration,
    bound: Duration,
) -> Result<(), String> {
    let lines = scrape(metrics, bound)?;
    let ages: Vec<(String, f64)> = lines
        .iter()
        .filter(|l| l.name == "labnode_net_wireguard_peer_handshake_age_seconds")
        .filter(|l| l.label("interface") == Some(interface))
        .filter(|l| peer.is_none_or(|p| l.label("peer") == Some(p)))
        .map(|l| (l.label("peer").unwrap_or("?").to_owned(), l.value))
        .collect();
    if ages.is_empty() {
        return Err(format!(
            "{metrics} has no labnode_net_wireguard_peer_handshake_age_seconds for {interface}{} (no handshake yet, or the net collector is not running)",
            peer.map(|p| format!(" peer {p}")).unwrap_or_default()
        ));
    }
    let old: Vec<String> = ages
        .iter()
        .filter(|(_, a)| a.is_nan() || *a > max_age.as_secs_f64())
        .map(|(p, a)| format!("peer {p} last handshake {a:.0}s ago"))
        .collect();
    if old.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{interface}: {} (max {}s)",
            old.join(", "),
            max_age.as_secs()
        ))
    }
}

fn zfs_pools(metrics: &str, pools: &[String], bound: Duration) -> Result<(), String> {
    let lines = scrape(metrics, bound)?;
    let states: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l.name == "labnode_zfs_pool_state" && l.value == 1.0)
        .filter_map(|l| Some((l.label("pool")?, l.label("state")?)))
        .collect();
    let want: Vec<&str> = if pools.is_empty() {
        let mut all: Vec<&str> = states.iter().map(|(p, _)| *p).collect();
        all.dedup();
        all
    } else {
        pools.iter().map(String::as_str).collect()
    };
    if want.is_empty() {
        return Err(format!(
            "{metrics} reports no ZFS pool (is the zfs collector running?)"
        ));
    }
    let bad: Vec<String> = want
        .iter()
        .filter_map(|p| match states.iter().find(|(q, _)| q == p) {
            Some((_, "online")) => None,
            Some((_, s)) => Some(format!("{p} is {}", s.to_uppercase())),
            None => Some(format!("{p} is not reported")),
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

fn gpu(devices: u32, libraries: &[PathBuf]) -> Result<(), String> {
    let mut tried = Vec::new();
    for lib in libraries {
        let nvml = match nvml_wrapper::Nvml::builder()
            .lib_path(lib.as_os_str())
            .init()
        {
            Ok(n) => n,
            Err(e) => {
                tried.push(format!("{}: {e}", lib.display()));
                continue;
            }
        };
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let mut bad = Vec::new();
        for i in 0..count {
            if let Err(e) = nvml.device_by_index(i).and_then(|d| d.name()) {
                bad.push(format!("GPU {i}: {e}"));
            }
        }
        if !bad.is_empty() {
            return Err(bad.join(", "));
        }
        if count < devices {
            return Err(format!("NVML sees {count} GPU(s), want at least {devices}"));
        }
        return Ok(());
    }
    Err(format!("cannot initialise NVML: {}", tried.join("; ")))
}

fn command(argv: &[String], bound: Duration) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let end = Instant::now() + bound;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.by_ref().take(4096).read_to_string(&mut err);
                }
                let last = err.lines().last().unwrap_or("").trim().to_owned();
                return Err(format!(
                    "{program} exited with {status}{}",
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ));
            }
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} still ran after {}ms", bound.as_millis()));
            }
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn env() -> Env {
        Env {
            systemd: SystemdAddress::Private("/nonexistent/private".into()),
        }
    }

    /// Serves `body` with `status` to every connection, from a thread.
    fn serve(status: u16, body: String) -> String {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    fn check(c: &Check) -> Result<(), String> {
        Checker::new(env()).check(
            c,
            SystemTime::now() - Duration::from_secs(60),
            Duration::from_secs(2),
        )
    }

    #[test]
    fn tcp_and_http() {
        let url = serve(200, "version gen-2\n".into());
        let addr = url.trim_start_matches("http://").to_owned();
        check(&Check::Tcp(addr.clone())).expect("open port");
        check(&Check::Http {
            url: format!("{url}/health"),
            body_contains: Some("gen-2".into()),
        })
        .expect("2xx with the text");
        let e = check(&Check::Http {
            url: format!("{url}/health"),
            body_contains: Some("gen-3".into()),
        })
        .expect_err("wrong version");
        assert!(e.contains("does not contain \"gen-3\""), "{e}");
        let bad = serve(503, "starting".into());
        let e = check(&Check::Http {
            url: bad,
            body_contains: None,
        })
        .expect_err("503");
        assert!(e.ends_with("HTTP 503"), "{e}");
        let closed = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let e = check(&Check::Tcp(closed.to_string())).expect_err("closed");
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn wireguard_and_zfs_read_the_exporters() {
        let url = serve(
            200,
            "labnode_net_wireguard_peer_handshake_age_seconds{interface=\"wg0\",peer=\"A=\"} 30\n\
             labnode_net_wireguard_peer_handshake_age_seconds{interface=\"wg0\",peer=\"B=\"} 400\n\
             labnode_zfs_pool_state{pool=\"tank\",state=\"online\"} 1\n\
             labnode_zfs_pool_state{pool=\"tank\",state=\"degraded\"} 0\n\
             labnode_zfs_pool_state{pool=\"scratch\",state=\"online\"} 0\n\
             labnode_zfs_pool_state{pool=\"scratch\",state=\"degraded\"} 1\n"
                .into(),
        );
        let wg = |peer: Option<&str>| Check::Wireguard {
            metrics: url.clone(),
            interface: "wg0".into(),
            peer: peer.map(Into::into),
            max_age: Duration::from_secs(180),
        };
        check(&wg(Some("A="))).expect("young");
        let e = check(&wg(None)).expect_err("B is old");
        assert!(e.contains("peer B= last handshake 400s ago"), "{e}");
        let e = check(&Check::Wireguard {
            metrics: url.clone(),
            interface: "wg1".into(),
            peer: None,
            max_age: Duration::from_secs(180),
        })
        .expect_err("no such interface");
        assert!(
            e.contains("no labnode_net_wireguard_peer_handshake_age_seconds for wg1"),
            "{e}"
        );
        let z = |pools: &[&str]| Check::ZfsPools {
            metrics: url.clone(),
            pools: pools.iter().map(|p| (*p).to_owned()).collect(),
        };
        check(&z(&["tank"])).expect("online");
        let e = check(&z(&[])).expect_err("scratch degraded");
        assert_eq!(e, "scratch is DEGRADED");
        let e = check(&z(&["tonk"])).expect_err("missing");
        assert_eq!(e, "tonk is not reported");
    }

    #[test]
    fn prometheus_targets_must_be_up_and_scraped_after_the_switch() {
        let now = SystemTime::now();
        let fmt = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let body = serde_json::json!({"status": "success", "data": {"activeTargets": [
            {"labels": {"job": "node", "instance": "a:1"}, "health": "up", "lastError": "", "lastScrape": fmt(now + Duration::from_secs(1))},
            {"labels": {"job": "labnode", "instance": "b:2"}, "health": "up", "lastError": "", "lastScrape": fmt(now - Duration::from_secs(5))},
            {"labels": {"job": "gpu", "instance": "c:3"}, "health": "down", "lastError": "connection refused", "lastScrape": fmt(now)}
        ]}});
        let url = serve(200, body.to_string());
        let c = |jobs: &[&str]| Check::PrometheusTargets {
            url: url.clone(),
            jobs: jobs.iter().map(|j| (*j).to_owned()).collect(),
        };
        let mut ch = Checker::new(env());
        ch.check(&c(&["node"]), now, Duration::from_secs(2))
            .expect("fresh and up");
        let e = ch
            .check(&c(&["labnode"]), now, Duration::from_secs(2))
            .expect_err("stale");
        assert!(e.contains("not scraped since the switch"), "{e}");
        let e = ch
            .check(&c(&[]), now, Duration::from_secs(2))
            .expect_err("gpu down");
        assert!(e.contains("gpu/c:3 down: connection refused"), "{e}");
        let e = ch
            .check(&c(&["nope"]), now, Duration::from_secs(2))
            .expect_err("none");
        assert!(e.contains("no active target of job nope"), "{e}");
    }

    #[test]
    fn commands_and_missing_systemd() {
        check(&Check::Command(vec!["true".into()])).expect("true");
        let e = check(&Check::Command(vec![
            "sh".into(),
            "-c".into(),
            "echo nope >&2; exit 3".into(),
        ]))
        .expect_err("exit 3");
        assert!(e.contains("exit status: 3: nope"), "{e}");
        let e = check(&Check::SystemdJobsEmpty).expect_err("no systemd");
        assert!(
            e.contains("cannot reach systemd at /nonexistent/private"),
            "{e}"
        );
        let e = check(&Check::Gpu {
            devices: 1,
            libraries: vec!["/nonexistent/libnvidia-ml.so.1".into()],
        })
        .expect_err("no NVML");
        assert!(
            e.starts_with("cannot initialise NVML: /nonexistent/libnvidia-ml.so.1"),
            "{e}"
        );
    }

    #[test]
    fn polling_records_the_first_pass_and_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let start = Instant::now();
        // The listener opens 400 ms in (later on a loaded builder: the test reads when).
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let l = TcpListener::bind(addr).expect("rebind");
            (l, start.elapsed().as_secs_f64())
        });
        let gates = vec![
            Gate {
                name: "late".into(),
                timeout: Duration::from_secs(5),
                interval: Duration::from_millis(20),
                check: Check::Tcp(addr.to_string()),
            },
            Gate {
                name: "always".into(),
                timeout: Duration::from_secs(5),
                interval: Duration::from_millis(20),
                check: Check::Command(vec!["true".into()]),
            },
        ];
        let live = Mutex::new(Vec::new());
        let r = run(&gates, &env(), start, None, &live, &|| false);
        let (_listener, opened) = opener.join().expect("opener");
        // Green once the late gate first passed: not before its port opened, and within a
        // few polls after (the bound leaves room for a loaded machine, not for a gate that
        // waited for its timeout).
        let green = r.green_at.expect("green").as_secs_f64();
        assert!(
            green >= opened && green < opened + 2.0,
            "green at {green}, port open at {opened}"
        );
        let late = &r.gates[0];
        assert!(late.passed && late.checks >= 2, "{late:?}");
        assert!(
            late.first_pass_seconds
                .is_some_and(|t| t >= opened && t <= green),
            "{late:?}, port open at {opened}"
        );
        assert!(
            r.gates[1].first_pass_seconds.is_some_and(|t| t < opened),
            "{:?}",
            r.gates[1]
        );

        let never = vec![Gate {
            name: "never".into(),
            timeout: Duration::from_millis(300),
            interval: Duration::from_millis(100),
            check: Command(vec!["false".into()]),
        }];
        let r = run(&never, &env(), Instant::now(), None, &live, &|| false);
        assert_eq!(r.green_at, None);
        assert!(!r.gates[0].passed);
        // One check every 100 ms for 300 ms: 3, fewer when a check is slow to run.
        let checks = r.gates[0].checks;
        assert!((1..=3).contains(&checks), "{checks} checks");
        assert_eq!(r.red().len(), 1);
        assert!(
            r.red()[0].starts_with(&format!(
                "never (command) red after {checks} checks: false exited"
            )),
            "{:?}",
            r.red()
        );
    }
    use Check::Command;
}
