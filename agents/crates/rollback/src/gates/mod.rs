//! Health gates: the gate model, built from the configuration, and the outcome types. Each
//! kind of gate is one file here, its configuration and its check one type ([`GateCheck`]);
//! `gate_kinds!` lists the kinds once. [`run`] polls them (the scheduler, `schedule.rs`).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Config, GateTimeout, PollInterval, SystemdAddress};
use crate::systemd::Systemd;

pub mod command;
pub mod gpu;
pub mod http;
pub mod prometheus;
mod schedule;
pub mod systemd;
pub mod tcp;
pub mod wireguard;
pub mod zfs;

pub use gpu::NVML_LIBRARIES;
pub use schedule::{Live, run};

/// A kind of gate: its configuration (what follows the kind's key in a gate of the YAML
/// file), and how it is described, validated and checked.
pub trait GateCheck {
    /// What it checks, in words, for plans and logs.
    fn describe(&self) -> String;

    /// What the types cannot check: why the configuration is wrong, if it is.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the check talks to systemd.
    fn needs_systemd(&self) -> bool {
        false
    }

    /// Checks once, within `bound`; `since` is when the gate started (older Prometheus
    /// scrapes do not count). `Err` says why the gate is red. `cx` keeps what can be kept
    /// between checks (the systemd connection).
    fn check(&self, cx: &mut Checker, since: SystemTime, bound: Duration) -> Result<(), String>;
}

/// Generates, from the one list of gate kinds, the [`Check`] enum with its dispatch to
/// [`GateCheck`], [`KINDS`], and [`GateConfig`] with one optional key per kind.
macro_rules! gate_kinds {
    ($( $(#[doc = $doc:literal])* $key:ident => $variant:ident($ty:ty), )*) => {
        /// What a gate checks: one variant per kind, holding the kind's configuration.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Check {
            $( $(#[doc = $doc])* $variant($ty), )*
        }

        impl Check {
            /// The check's kind, as in the configuration.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Check::$variant(_) => stringify!($key), )*
                }
            }

            /// The kind's behaviour.
            fn behaviour(&self) -> &dyn GateCheck {
                match self {
                    $( Check::$variant(c) => c, )*
                }
            }
        }

        /// Every gate kind, as the configuration spells it.
        pub const KINDS: &[&str] = &[$( stringify!($key), )*];

        /// One health gate: a name, its bounds, and exactly one check.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct GateConfig {
            /// The gate's name in results and metrics (default: the check's kind).
            pub name: Option<String>,
            /// How long it may stay red after the switch settles (default
            /// `rollback.gate_timeout`).
            pub timeout: Option<GateTimeout>,
            /// How often it is checked (default `rollback.poll_interval`).
            pub interval: Option<PollInterval>,
            $( $(#[doc = $doc])* pub $key: Option<$ty>, )*
        }

        impl GateConfig {
            /// The checks that are set, in the order of [`KINDS`].
            pub fn checks(&self) -> Vec<Check> {
                let mut checks = Vec::new();
                $(
                    if let Some(c) = &self.$key {
                        checks.push(Check::$variant(c.clone()));
                    }
                )*
                checks
            }
        }
    };
}

gate_kinds! {
    /// These systemd units are `active`.
    systemd_active => SystemdActive(systemd::SystemdActive),
    /// No systemd unit is `failed` (except those ignored).
    systemd_no_failed => SystemdNoFailed(systemd::SystemdNoFailed),
    /// systemd's job queue is empty.
    systemd_jobs_empty => SystemdJobsEmpty(systemd::SystemdJobsEmpty),
    /// A TCP connection to this address succeeds.
    tcp => Tcp(tcp::Tcp),
    /// An HTTP GET answers 2xx.
    http => Http(http::Http),
    /// A Prometheus server's targets are up, scraped after the switch.
    prometheus_targets => PrometheusTargets(prometheus::PrometheusTargets),
    /// A WireGuard peer's handshake is young, read from labnode's net exporter.
    wireguard => Wireguard(wireguard::Wireguard),
    /// ZFS pools are ONLINE, read from labnode's zfs exporter.
    zfs_pools => ZfsPools(zfs::ZfsPools),
    /// GPUs are visible through NVML.
    gpu => Gpu(gpu::Gpu),
    /// A command exits 0 (argv, no shell).
    command => Command(command::Command),
}

impl Check {
    /// What it checks, in words, for plans and logs.
    pub fn describe(&self) -> String {
        self.behaviour().describe()
    }

    /// Why its configuration is wrong, if it is.
    pub fn validate(&self) -> Result<(), String> {
        self.behaviour().validate()
    }

    /// Whether it talks to systemd.
    pub fn needs_systemd(&self) -> bool {
        self.behaviour().needs_systemd()
    }
}

impl GateConfig {
    /// The check keys that are set.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.checks().iter().map(Check::kind).collect()
    }

    /// The gate's name: the configured one, or the check's kind.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.kinds().first().copied().unwrap_or("gate").to_owned())
    }

    /// Whether the gate talks to systemd.
    pub fn needs_systemd(&self) -> bool {
        self.checks().iter().any(Check::needs_systemd)
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
    cfg.gates
        .iter()
        .map(|g| Gate {
            name: g.name(),
            timeout: cfg.timeout_of(g),
            interval: cfg.interval_of(g),
            // A checked configuration has exactly one; a gate with none runs an empty
            // command, which is red.
            check: g
                .checks()
                .into_iter()
                .next()
                .unwrap_or_else(|| Check::Command(command::Command::default())),
        })
        .collect()
}

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
        check.behaviour().check(self, since, bound)
    }

    /// Runs `f` on the systemd connection (made first if there is none) and labnode's own
    /// units; an error drops the connection, to reconnect next time (systemd may have
    /// been re-executed).
    pub fn with_systemd<T>(
        &mut self,
        bound: Duration,
        f: impl FnOnce(&Systemd, &[String]) -> Result<T, String>,
    ) -> Result<T, String> {
        if self.systemd.is_none() {
            match Systemd::connect(&self.env.systemd, bound) {
                Ok(sd) => self.systemd = Some(sd),
                Err(e) => return Err(e.to_string()),
            }
        }
        let r = match &self.systemd {
            Some(sd) => f(sd, &self.own_units),
            None => Err("no systemd connection".into()),
        };
        if r.is_err() {
            self.systemd = None;
        }
        r
    }
}

/// What the tests of every kind share: an environment without systemd, a small HTTP
/// server, one check.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// Gates whose systemd is nowhere.
    pub fn env() -> Env {
        Env {
            systemd: SystemdAddress::Private("/nonexistent/private".into()),
        }
    }

    /// Serves `body` with `status` to every connection, from a thread.
    pub fn serve(status: u16, body: String) -> String {
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

    /// One check, counting Prometheus scrapes of the last minute.
    pub fn check(c: &Check) -> Result<(), String> {
        Checker::new(env()).check(
            c,
            SystemTime::now() - Duration::from_secs(60),
            Duration::from_secs(2),
        )
    }
}
