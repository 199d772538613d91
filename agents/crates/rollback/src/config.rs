//! The `rollback:` section of the labnode configuration file and the `rollback` collector's
//! section (`collectors.rollback`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use labnode_core::config::{ConfigError, Period};
use serde::Deserialize;

pub use crate::gates::GateConfig;
use crate::gates::{Check, KINDS};

/// Default system profile.
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/system";
/// Default directory of the lock and of the markers of unfinished switches.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/labnode/safe-switch";
/// Default systemd socket: the manager's private socket, which needs no D-Bus daemon.
pub const DEFAULT_SYSTEMD_SOCKET: &str = "/run/systemd/private";

/// A gate's timeout: 100 ms to 1 hour.
pub type GateTimeout = Period<100, 3_600_000>;
/// A gate's poll interval: 10 ms to 1 minute.
pub type PollInterval = Period<10, 60_000>;
/// A bound on one phase (activation, settling): 1 s to 1 day.
pub type PhaseTimeout = Period<1_000, 86_400_000>;
/// A wait between recovery attempts: 100 ms to 1 hour.
pub type RetryInterval = Period<100, 3_600_000>;

/// The top-level `rollback:` section: the profile, the gates, and how switches are run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The system profile (default `/nix/var/nix/profiles/system`).
    pub profile: Option<PathBuf>,
    /// What runs now (default `/run/current-system`); activation points it at the new system.
    pub current_system: Option<PathBuf>,
    /// What was booted (default `/run/booted-system`).
    pub booted_system: Option<PathBuf>,
    /// Lock and markers of unfinished switches (default `/var/lib/labnode/safe-switch`).
    pub state_dir: Option<PathBuf>,
    /// The `nix-env` to run (default: `nix-env` from `PATH`).
    pub nix_env: Option<PathBuf>,
    /// `switch` (the default: the host has a boot loader; a generation is activated with
    /// `switch-to-configuration test` and made the boot default with `boot` once its gates
    /// are green) or `test` (no boot loader, as in VMs: `test` only).
    pub activation_action: Option<ActivationAction>,
    /// How long `switch-to-configuration` may run (default 10m).
    pub activation_timeout: Option<PhaseTimeout>,
    /// How long systemd's job queue may take to drain after activation (default 5m).
    pub settle_timeout: Option<PhaseTimeout>,
    /// `safe-switch`: how long every gate may take to turn green (default 2m).
    pub confirm_timeout: Option<PhaseTimeout>,
    /// Default poll interval of every gate (default 100ms).
    pub poll_interval: Option<PollInterval>,
    /// Default timeout of every gate (default 60s).
    pub gate_timeout: Option<GateTimeout>,
    /// How switches are armed against labnode dying: `auto` (systemd when it runs, the
    /// default), `systemd` (required) or `none` (the marker and the next start only).
    pub arm: Option<Arm>,
    /// The systemd manager's socket (default `/run/systemd/private`), or `bus` for the
    /// D-Bus system bus.
    pub systemd_socket: Option<String>,
    /// The lock switch-to-configuration takes (default
    /// `/run/nixos/switch-to-configuration.lock`): no activation starts while it is held.
    pub switch_lock: Option<PathBuf>,
    /// A GC root kept on the known-good system while a switch or drill is unfinished
    /// (default `/nix/var/nix/gcroots/labnode/known-good`).
    pub gc_root: Option<PathBuf>,
    /// How long a failed recovery waits before it is tried again (default 10s, doubling
    /// up to 10m).
    pub retry_interval: Option<RetryInterval>,
    /// The health gates, checked after every switch.
    #[serde(default)]
    pub gates: Vec<GateConfig>,
}

/// The argument to `switch-to-configuration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationAction {
    /// Activate now and make it the boot default (what `nixos-rebuild switch` does).
    Switch,
    /// Activate now only.
    Test,
}

impl ActivationAction {
    /// The argument as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationAction::Switch => "switch",
            ActivationAction::Test => "test",
        }
    }
}

/// How a switch is protected against labnode dying before it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// A systemd guard when systemd runs, else the marker alone.
    Auto,
    /// A systemd guard, required: refuse to switch without one.
    Systemd,
    /// The marker alone: the next `labnode` start or the boot unit finishes the job.
    None,
}

labnode_core::collector_config! {
    /// The `collectors.rollback` section.
    pub struct CollectorConfig {
        defaults: interval Duration::from_secs(15), deadline Duration::from_secs(5);
    }
}

/// Where the systemd manager is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemdAddress {
    /// A peer-to-peer connection to the manager's private socket.
    Private(PathBuf),
    /// The D-Bus system bus.
    Bus,
}

impl Config {
    /// The system profile.
    pub fn profile(&self) -> PathBuf {
        self.profile
            .clone()
            .unwrap_or_else(|| DEFAULT_PROFILE.into())
    }
    /// The running system's link.
    pub fn current_system(&self) -> PathBuf {
        self.current_system
            .clone()
            .unwrap_or_else(|| "/run/current-system".into())
    }
    /// The booted system's link.
    pub fn booted_system(&self) -> PathBuf {
        self.booted_system
            .clone()
            .unwrap_or_else(|| "/run/booted-system".into())
    }
    /// The lock and marker directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into())
    }
    /// The `nix-env` program.
    pub fn nix_env(&self) -> PathBuf {
        self.nix_env.clone().unwrap_or_else(|| "nix-env".into())
    }
    /// The activation action.
    pub fn activation_action(&self) -> ActivationAction {
        self.activation_action.unwrap_or(ActivationAction::Switch)
    }
    /// The activation bound.
    pub fn activation_timeout(&self) -> Duration {
        self.activation_timeout
            .map_or(Duration::from_secs(600), Period::get)
    }
    /// The settling bound.
    pub fn settle_timeout(&self) -> Duration {
        self.settle_timeout
            .map_or(Duration::from_secs(300), Period::get)
    }
    /// The confirmation bound of `safe-switch`.
    pub fn confirm_timeout(&self) -> Duration {
        self.confirm_timeout
            .map_or(Duration::from_secs(120), Period::get)
    }
    /// The switch-to-configuration lock.
    pub fn switch_lock(&self) -> PathBuf {
        self.switch_lock
            .clone()
            .unwrap_or_else(|| "/run/nixos/switch-to-configuration.lock".into())
    }
    /// The GC root on the known-good system.
    pub fn gc_root(&self) -> PathBuf {
        self.gc_root
            .clone()
            .unwrap_or_else(|| "/nix/var/nix/gcroots/labnode/known-good".into())
    }
    /// The first wait before a failed recovery is tried again.
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
            .map_or(Duration::from_secs(10), Period::get)
    }
    /// Whether the host has a boot loader to set: `switch` (the default) activates with
    /// `test`, then makes the generation the boot default (`boot`) once its gates are green.
    pub fn sets_boot_default(&self) -> bool {
        self.activation_action() == ActivationAction::Switch
    }
    /// The arming mode.
    pub fn arm(&self) -> Arm {
        self.arm.unwrap_or(Arm::Auto)
    }
    /// Where systemd is reached.
    pub fn systemd_address(&self) -> SystemdAddress {
        match self.systemd_socket.as_deref() {
            Some("bus") => SystemdAddress::Bus,
            Some(p) => SystemdAddress::Private(p.into()),
            None => SystemdAddress::Private(DEFAULT_SYSTEMD_SOCKET.into()),
        }
    }
    /// A gate's poll interval.
    pub fn interval_of(&self, g: &GateConfig) -> Duration {
        g.interval
            .or(self.poll_interval)
            .map_or(Duration::from_millis(100), Period::get)
    }
    /// A gate's timeout.
    pub fn timeout_of(&self, g: &GateConfig) -> Duration {
        g.timeout
            .or(self.gate_timeout)
            .map_or(Duration::from_secs(60), Period::get)
    }

    /// Checks what the types cannot; `key` is where the section sits (`rollback`), `path`
    /// and `text` the file, for located errors.
    pub fn check(&self, path: &Path, text: &str, key: &str) -> Result<(), ConfigError> {
        let at = |k: &str, msg: String| ConfigError::at_key(path, text, &format!("{key}.{k}"), msg);
        for (k, p) in [
            ("profile", &self.profile),
            ("current_system", &self.current_system),
            ("booted_system", &self.booted_system),
            ("state_dir", &self.state_dir),
            ("switch_lock", &self.switch_lock),
            ("gc_root", &self.gc_root),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(at(k, format!("{} is not an absolute path", p.display())));
                }
            }
        }
        if let Some(s) = &self.systemd_socket {
            if s != "bus" && !Path::new(s).is_absolute() {
                return Err(at(
                    "systemd_socket",
                    format!("{s} is neither `bus` nor an absolute socket path"),
                ));
            }
        }
        let mut names = BTreeSet::new();
        let positions = labnode_core::config::Positions::parse(text);
        for (i, g) in self.gates.iter().enumerate() {
            let gate_key = format!("gates[{i}]");
            // Located at the gate's `sub` key when given, else at the gate, else at `gates:`.
            let at_gate = |sub: Option<&str>, msg: String| {
                let mut err = at("gates", msg);
                let item = format!("{key}.{gate_key}");
                let found = sub
                    .and_then(|k| positions.key(&format!("{item}.{k}")))
                    .or_else(|| positions.key(&item));
                if let Some((line, column)) = found {
                    err.line = Some(line);
                    err.column = Some(column);
                }
                err
            };
            let kinds = g.kinds();
            if kinds.len() != 1 {
                return Err(ConfigError {
                    key: Some(format!("{key}.{gate_key}")),
                    ..at_gate(
                        None,
                        format!(
                            "gate {} must have exactly one check ({}); it has {}",
                            i + 1,
                            kinds_in_words(),
                            if kinds.is_empty() {
                                "none".to_owned()
                            } else {
                                kinds.join(", ")
                            }
                        ),
                    )
                });
            }
            let name = g.name();
            if !valid_gate_name(&name) {
                return Err(ConfigError {
                    key: Some(format!("{key}.{gate_key}.name")),
                    ..at_gate(
                        Some("name"),
                        format!("gate name {name:?}: use 1 to 64 letters, digits, '_', '-' or '.'"),
                    )
                });
            }
            if !names.insert(name.clone()) {
                return Err(ConfigError {
                    key: Some(format!("{key}.{gate_key}.name")),
                    ..at_gate(
                        Some("name"),
                        format!(
                            "two gates are named {name:?}; give each its own `name` (gate {})",
                            i + 1
                        ),
                    )
                });
            }
            if let Some(Err(e)) = g.checks().first().map(Check::validate) {
                return Err(ConfigError {
                    key: Some(format!("{key}.{gate_key}.{}", kinds[0])),
                    ..at_gate(Some(kinds[0]), format!("gate {name:?}: {e}"))
                });
            }
        }
        Ok(())
    }
}

/// The gate kinds, `a, b or c`.
fn kinds_in_words() -> String {
    match KINDS.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn valid_gate_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        rollback: Config,
    }

    fn check(text: &str) -> Result<Config, ConfigError> {
        let f: File = labnode_core::config::parse(text, Path::new("c.yaml"))?;
        f.rollback.check(Path::new("c.yaml"), text, "rollback")?;
        Ok(f.rollback)
    }

    #[test]
    fn a_full_section_parses_with_defaults_filled() {
        let c = check(
            "rollback:\n  profile: /nix/var/nix/profiles/system\n  gates:\n    - systemd_active: [sshd.service]\n    - tcp: 127.0.0.1:22\n      timeout: 5s\n    - name: web\n      http: {url: 'http://127.0.0.1:8080/', body_contains: v2}\n      interval: 50ms\n    - gpu: {devices: 1}\n",
        )
        .expect("valid");
        assert_eq!(c.gates.len(), 4);
        assert_eq!(c.gates[0].name(), "systemd_active");
        assert_eq!(c.gates[2].name(), "web");
        assert_eq!(c.timeout_of(&c.gates[1]), Duration::from_secs(5));
        assert_eq!(c.interval_of(&c.gates[2]), Duration::from_millis(50));
        assert_eq!(c.interval_of(&c.gates[0]), Duration::from_millis(100));
        assert_eq!(c.arm(), Arm::Auto);
        assert_eq!(
            c.systemd_address(),
            SystemdAddress::Private("/run/systemd/private".into())
        );
    }

    #[test]
    fn gate_mistakes_are_located() {
        let e =
            check("rollback:\n  gates:\n    - tcp: 127.0.0.1:22\n      http: {url: 'http://x/'}\n")
                .expect_err("two checks");
        assert!(e.message.contains("exactly one check"), "{e}");
        assert!(e.message.contains("tcp, http"), "{e}");
        assert_eq!(e.key.as_deref(), Some("rollback.gates[0]"));
        assert_eq!(
            (e.line, e.column),
            (Some(3), Some(7)),
            "the gate's own line: {e}"
        );

        let e = check("rollback:\n  gates:\n    - tcp: 127.0.0.1:22\n    - tcp: 127.0.0.1:23\n")
            .expect_err("same name");
        assert!(e.message.contains("two gates are named \"tcp\""), "{e}");
        assert_eq!(e.line, Some(4), "the second gate: {e}");

        let e = check(
            "rollback:\n  gates:\n  # a comment\n  - name: a\n    tcp: a:1\n  - name: b\n    timeout: 1s\n    http: {url: 'https://x/'}\n",
        )
        .expect_err("tls, in a sequence at the key's indentation");
        assert_eq!(e.key.as_deref(), Some("rollback.gates[1].http"));
        assert_eq!(
            (e.line, e.column),
            (Some(8), Some(5)),
            "the check's line: {e}"
        );

        let e = check("rollback:\n  gates: [{tcp: localhost}]\n").expect_err("flow style");
        assert_eq!(e.line, Some(2), "falls back to `gates:`: {e}");

        let e = check("rollback:\n  gates:\n    - http: {url: 'https://x/'}\n").expect_err("tls");
        assert!(e.message.contains("only http://"), "{e}");

        let e = check("rollback:\n  gates:\n    - tcp: localhost\n").expect_err("port");
        assert!(e.message.contains("HOST:PORT"), "{e}");

        let e = check("rollback:\n  gates:\n    - tpc: localhost:1\n").expect_err("typo");
        assert_eq!(e.key.as_deref(), Some("rollback.gates[0].tpc"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");

        let e = check("rollback:\n  gates:\n    - systemd_active: [sshd]\n").expect_err("unit");
        assert!(e.message.contains("not a unit name"), "{e}");

        let e = check("rollback:\n  gates:\n    - tcp: a:1\n      interval: 1ms\n")
            .expect_err("interval range");
        assert!(e.message.contains("out of range"), "{e}");

        let e = check("rollback:\n  state_dir: var/lib\n").expect_err("relative");
        assert_eq!(e.key.as_deref(), Some("rollback.state_dir"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn systemd_socket_can_be_the_bus() {
        let c = check("rollback:\n  systemd_socket: bus\n").expect("valid");
        assert_eq!(c.systemd_address(), SystemdAddress::Bus);
        check("rollback:\n  systemd_socket: run/x\n").expect_err("relative");
    }
}
