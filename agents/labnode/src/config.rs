//! The labnode configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use labnode_core::Collector;
use labnode_core::config::{self, ConfigError};
use serde::Deserialize;

use crate::collectors::{self, Collectors, REGISTRY};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9466";
/// Default snapshot directory.
pub const DEFAULT_SNAPSHOT_DIR: &str = "/var/lib/labnode/snapshots";

/// The whole file. Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address `labnode serve` listens on.
    pub listen: Option<SocketAddr>,
    /// Where `labnode collect` writes snapshots.
    pub snapshot_dir: Option<PathBuf>,
    /// Per-collector settings.
    #[serde(default)]
    pub collectors: Collectors,
    /// The system profile, health gates and bounds of `drill rollback` and `safe-switch`.
    pub rollback: Option<labnode_rollback::Config>,
    /// What clients may hold of `labnode serve`.
    pub http: Option<Http>,
}

/// The `http` section: the exporter's limits on its clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// A request's whole header must arrive within this (default 5s).
    pub header_timeout: Option<config::Period<100, 600_000>>,
    /// A connection quiet this long is closed (default 60s).
    pub idle_timeout: Option<config::Period<100, 3_600_000>>,
    /// Connections at most, 1 to 65536 (default 512); one more closes the longest-idle.
    pub max_connections: Option<usize>,
}

impl Config {
    /// Loads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (cfg, text): (Config, String) = config::load(path)?;
        cfg.check(path, &text)?;
        Ok(cfg)
    }

    /// Checks what the types alone cannot: relations between values.
    fn check(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        for entry in REGISTRY {
            (entry.check)(self).map_err(|e| {
                ConfigError::at_key(
                    path,
                    text,
                    &format!("collectors.{}.{}", entry.name, e.key),
                    e.message,
                )
            })?;
        }
        if let Some(r) = &self.rollback {
            r.check(path, text, "rollback")?;
        }
        if let Some(n) = self.http.as_ref().and_then(|h| h.max_connections) {
            if !(1..=65536).contains(&n) {
                return Err(ConfigError::at_key(
                    path,
                    text,
                    "http.max_connections",
                    format!("{n} is not between 1 and 65536"),
                ));
            }
        }
        if let Some(dir) = &self.snapshot_dir {
            if !dir.is_absolute() {
                return Err(ConfigError::at_key(
                    path,
                    text,
                    "snapshot_dir",
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        Ok(())
    }

    /// The exporter's limits on its clients, defaults filled in.
    pub fn http_limits(&self) -> labnode_core::http::Limits {
        let d = labnode_core::http::Limits::default();
        let h = self.http.clone().unwrap_or_default();
        labnode_core::http::Limits {
            header_timeout: h.header_timeout.map_or(d.header_timeout, |p| p.get()),
            idle_timeout: h.idle_timeout.map_or(d.idle_timeout, |p| p.get()),
            max_connections: h.max_connections.unwrap_or(d.max_connections),
        }
    }

    /// The listen address.
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9466)))
        })
    }

    /// Where the host facts of a snapshot are read (the system collector's roots).
    pub fn host_paths(&self) -> labnode_core::host::HostPaths {
        self.collectors
            .system
            .as_ref()
            .map(|s| s.paths())
            .unwrap_or_default()
    }

    /// The snapshot directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.snapshot_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_SNAPSHOT_DIR.into())
    }

    /// Names of the collectors enabled in this configuration.
    pub fn enabled(&self) -> Vec<&'static str> {
        REGISTRY
            .iter()
            .filter(|e| (e.enabled)(self))
            .map(|e| e.name)
            .collect()
    }

    /// Builds the named collectors (or every enabled one when `names` is empty).
    pub fn build(&self, names: &[String]) -> Result<Vec<Arc<dyn Collector>>, String> {
        let chosen: Vec<&str> = if names.is_empty() {
            self.enabled()
        } else {
            let mut v = Vec::new();
            for n in names {
                let Some(known) = collectors::find(n) else {
                    return Err(format!(
                        "unknown collector {n:?}; this build has: {}",
                        collectors::names().join(", ")
                    ));
                };
                if !v.contains(&known.name) {
                    v.push(known.name);
                }
            }
            v
        };
        Ok(chosen
            .into_iter()
            .filter_map(collectors::find)
            .map(|e| (e.build)(self))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labnode_core::config::Schedule;
    use std::time::Duration;

    fn check(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = config::parse(text, Path::new("labnode.yaml"))?;
        cfg.check(Path::new("labnode.yaml"), text)?;
        Ok(cfg)
    }

    #[test]
    fn a_nested_duplicate_is_located_at_its_second_occurrence() {
        let e = check(
            "collectors:\n  system:\n    interval: 1s\n  net: {}\n  system:\n    interval: 2s\n",
        )
        .expect_err("duplicate");
        assert_eq!((e.line, e.column), (Some(5), Some(3)), "{e}");
        assert_eq!(e.key.as_deref(), Some("collectors.system"), "{e}");
        assert!(e.message.contains("first at line 2"), "{e}");
    }

    #[test]
    fn a_given_deadline_is_checked_against_the_default_interval() {
        // The system collector's default interval is 15s.
        let e = check("collectors:\n  system:\n    deadline: 30s\n").expect_err("30s > 15s");
        assert_eq!(e.key.as_deref(), Some("collectors.system.deadline"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("15s"), "{}", e.message);
        let e = check("collectors:\n  zfs:\n    deadline: 1m\n").expect_err("1m > 15s");
        assert_eq!(e.key.as_deref(), Some("collectors.zfs.deadline"));
    }

    #[test]
    fn a_default_deadline_is_never_longer_than_the_interval() {
        let cfg = check("collectors:\n  system:\n    interval: 1s\n  zfs:\n    interval: 2s\n")
            .expect("interval alone is valid");
        let c = &cfg.collectors;
        let system = c.system.as_ref().map(|s| s.deadline());
        assert_eq!(system, Some(Duration::from_secs(1)));
        let zfs = c.zfs.as_ref().map(|z| z.deadline());
        assert_eq!(zfs, Some(Duration::from_secs(2)));
        // A longer interval keeps the default deadline.
        let cfg = check("collectors:\n  net:\n    interval: 1m\n").expect("valid");
        let net = cfg.collectors.net.as_ref().map(|n| n.deadline());
        assert_eq!(net, Some(Duration::from_secs(5)));
    }

    #[test]
    fn http_limits_are_checked_and_default() {
        let e = check("http:\n  max_connections: 0\n").expect_err("0 connections");
        assert_eq!(e.key.as_deref(), Some("http.max_connections"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
        let e = check("http:\n  idle_timeout: 2h\n").expect_err("over 1h");
        assert_eq!(e.key.as_deref(), Some("http.idle_timeout"), "{e}");
        let cfg = check("http:\n  header_timeout: 2s\n").expect("valid");
        let l = cfg.http_limits();
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(
            l.idle_timeout,
            labnode_core::http::Limits::default().idle_timeout
        );
    }

    #[test]
    fn defaults_bind_loopback() {
        let cfg = check("").expect("empty config is valid");
        assert!(cfg.listen().ip().is_loopback());
        // Every registered collector runs unless its section says otherwise.
        assert_eq!(cfg.enabled(), crate::collectors::names());
    }

    #[test]
    fn relations_are_checked_with_location() {
        let e = check("collectors:\n  system:\n    interval: 1s\n    deadline: 5s\n")
            .expect_err("deadline > interval");
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("collectors.system.deadline"));
        let e = check("snapshot_dir: snaps\n").expect_err("relative");
        assert_eq!((e.line, e.column), (Some(1), Some(1)));
    }

    #[test]
    fn gpu_window_must_fit_in_the_deadline() {
        let e =
            check("collectors:\n  gpu:\n    deadline: 1s\n    window: 2s\n").expect_err("window");
        assert_eq!(e.key.as_deref(), Some("collectors.gpu.window"));
        assert_eq!(e.line, Some(4));
        check("collectors:\n  gpu:\n    interval: 10s\n    deadline: 8s\n    window: 5s\n")
            .expect("fits");
    }

    #[test]
    fn zfs_snapshot_interval_is_checked() {
        let e = check("collectors:\n  zfs:\n    interval: 1m\n    snapshot_interval: 30s\n")
            .expect_err("shorter than the interval");
        assert_eq!(e.key.as_deref(), Some("collectors.zfs.snapshot_interval"));
        assert_eq!(e.line, Some(4));
        check("collectors:\n  zfs:\n    interval: 15s\n    snapshot_interval: 5m\n").expect("fine");
    }

    #[test]
    fn unknown_collector_section_is_an_error() {
        let e = check("collectors:\n  sytsem: {}\n").expect_err("typo");
        assert_eq!(e.key.as_deref(), Some("collectors.sytsem"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn disabled_and_unknown_collectors() {
        let all_off: String = crate::collectors::names()
            .iter()
            .map(|n| format!("  {n}:\n    enabled: false\n"))
            .collect();
        let cfg = check(&format!("collectors:\n{all_off}")).expect("valid");
        assert!(cfg.enabled().is_empty());
        assert!(cfg.build(&["gpux".into()]).is_err());
        assert_eq!(cfg.build(&["system".into()]).map(|v| v.len()), Ok(1));
    }
}
