//! What drills and safe switches write to the snapshot store (record kinds `rollback_drill`
//! and `safe_switch`) and the samples derived from them, the same for the snapshot and for
//! the `rollback` collector.

use std::path::PathBuf;

use labnode_core::snapshot::RecordKind;
use labnode_core::{Metrics, Unit};
use serde::{Deserialize, Serialize};

use crate::gates::GateOutcome;

/// Record kind of a drill.
pub const DRILL_KIND: RecordKind = RecordKind::RollbackDrill;
/// Record kind of a safe switch.
pub const SAFE_SWITCH_KIND: RecordKind = RecordKind::SafeSwitch;

/// The phases of one switch, seconds each; a phase that did not happen is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// `nix-env` flipping the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_flip: Option<f64>,
    /// `switch-to-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<f64>,
    /// From the end of activation until systemd's job queue is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_settled: Option<f64>,
    /// From then until every gate is green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates_green: Option<f64>,
    /// safe-switch only: `switch-to-configuration boot` once every gate was green, which
    /// makes the confirmed generation the boot loader's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_default: Option<f64>,
}

impl Phases {
    /// `(label, seconds)` for each phase that happened, in order.
    pub fn each(&self) -> Vec<(&'static str, f64)> {
        [
            ("profile_flip", self.profile_flip),
            ("activation", self.activation),
            ("units_settled", self.units_settled),
            ("gates_green", self.gates_green),
            ("boot_default", self.boot_default),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect()
    }
}

/// One switch from one generation to another, timed phase by phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// `rollback`, `rollforward` (drills), `switch` or `recover` (safe switches).
    pub direction: String,
    /// The generation it left.
    pub from_generation: Option<u64>,
    /// The generation it went to.
    pub to_generation: Option<u64>,
    /// The store path it went to.
    pub to_store_path: PathBuf,
    /// The phases.
    pub phases: Phases,
    /// From the start of the flip until every gate was green together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_seconds: Option<f64>,
    /// Whether it got there healthy.
    pub success: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why `units_settled` is absent, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_skipped: Option<String>,
    /// The end of the activation's output, when it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activation_output: Vec<String>,
    /// Each gate.
    pub gates: Vec<GateOutcome>,
    /// Why `switch-to-configuration boot` failed, when it did: the generation runs, the
    /// boot loader's default is not known to be it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_error: Option<String>,
    /// How long the activations waited for another activation's lock, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_seconds: Option<f64>,
}

/// labnode's own cost during a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// CPU seconds (user + system) of the labnode process itself, children excluded.
    pub cpu_seconds: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_seconds: f64,
}

impl Overhead {
    /// The cost since `cpu0` (this process's CPU seconds then) and `t0`.
    pub fn since(cpu0: f64, t0: std::time::Instant) -> Self {
        Overhead {
            cpu_seconds: process_cpu_seconds() - cpu0,
            wall_seconds: t0.elapsed().as_secs_f64(),
        }
    }
}

/// This process's CPU seconds (user + system, its threads included, children not).
pub fn process_cpu_seconds() -> f64 {
    labnode_core::process::cpu_and_rss().map_or(0.0, |(cpu, _, _)| cpu)
}

/// A result that goes to the snapshot store.
pub trait Recorded: Serialize {
    /// The record kind.
    const KIND: RecordKind;
    /// The samples' source.
    const SOURCE: &'static str;
    /// The samples.
    fn samples(&self) -> Metrics;
}

impl Recorded for DrillRecord {
    const KIND: RecordKind = DRILL_KIND;
    const SOURCE: &'static str = "drill rollback";
    fn samples(&self) -> Metrics {
        self.metrics()
    }
}

impl Recorded for SafeSwitchRecord {
    const KIND: RecordKind = SAFE_SWITCH_KIND;
    const SOURCE: &'static str = "safe-switch";
    fn samples(&self) -> Metrics {
        self.metrics()
    }
}

/// A rollback drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The run's id (its marker's): one record per run.
    #[serde(default)]
    pub id: String,
    /// The profile.
    pub profile: PathBuf,
    /// When it started, seconds since the epoch.
    pub started_unix: f64,
    /// When it ended.
    pub finished_unix: f64,
    /// The generation it started on (and must end on).
    pub start_generation: Option<u64>,
    /// Its store path.
    pub start_store_path: PathBuf,
    /// The generation it rolled back to.
    pub previous_generation: Option<u64>,
    /// Rollback, then roll forward (or the recovery of an interrupted drill).
    pub directions: Vec<Switch>,
    /// Whether both directions got back healthy.
    pub success: bool,
    /// The profile's generation at the end.
    pub ended_on_generation: Option<u64>,
    /// Whether the profile and the running system ended on the start generation (checked).
    pub ended_on_start: bool,
    /// Set when this drill was interrupted and finished by another labnode: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// Why it failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the drill was refused before changing anything (no previous generation):
    /// counted under `result="refused"`, outside the success rate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// labnode's own cost.
    #[serde(default)]
    pub overhead: Overhead,
}

/// How a safe switch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every gate green: kept.
    Confirmed,
    /// Rolled back to the previous generation.
    RolledBack,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

/// A safe switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafeSwitchRecord {
    /// The run's id (its marker's): one record per run.
    #[serde(default)]
    pub id: String,
    /// The profile.
    pub profile: PathBuf,
    /// When it started, seconds since the epoch.
    pub started_unix: f64,
    /// When it ended.
    pub finished_unix: f64,
    /// The generation it started from.
    pub from_generation: Option<u64>,
    /// Its store path.
    pub from_store_path: PathBuf,
    /// The new generation (absent if the profile flip failed).
    pub to_generation: Option<u64>,
    /// The store path switched to.
    pub to_store_path: PathBuf,
    /// Kept or rolled back.
    pub outcome: Outcome,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// From the start of the switch until the failure was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_seconds: Option<f64>,
    /// From detection until the previous generation's gates were all green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_seconds: Option<f64>,
    /// The switch to the new generation (phases known only if it was not interrupted).
    pub switch: Option<Switch>,
    /// The rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Switch>,
    /// Whether the host ended healthy on a known generation (the new one if confirmed).
    pub healthy: bool,
    /// The profile's generation at the end.
    pub ended_on_generation: Option<u64>,
    /// labnode's own cost.
    #[serde(default)]
    pub overhead: Overhead,
}

impl DrillRecord {
    /// The drill's samples, as in the metric contract.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        for d in &self.directions {
            let dir = d.direction.as_str();
            for (phase, v) in d.phases.each() {
                m.gauge(
                    "labnode_rollback_phase_seconds",
                    "Time spent in each phase of the last rollback drill.",
                    Unit::Seconds,
                )
                .push(&[("direction", dir), ("phase", phase)], v);
            }
            if let Some(r) = d.recovery_seconds {
                m.gauge(
                    "labnode_rollback_recovery_seconds",
                    "Last rollback drill: from the start of the switch until every gate was green.",
                    Unit::Seconds,
                )
                .push(&[("direction", dir)], r);
            }
            for g in &d.gates {
                if let Some(t) = g.first_pass_seconds {
                    m.gauge(
                        "labnode_rollback_gate_seconds",
                        "Last rollback drill: when each gate first passed, from the start of the switch.",
                        Unit::Seconds,
                    )
                    .push(&[("direction", dir), ("gate", g.name.as_str())], t);
                }
            }
            m.gauge(
                "labnode_rollback_success",
                "Last rollback drill: 1 if that direction recovered, 0 if not.",
                Unit::Info,
            )
            .push(&[("direction", dir)], f64::from(u8::from(d.success)));
        }
        m.gauge(
            "labnode_rollback_last_success",
            "1 if the last rollback drill passed, 0 if it failed.",
            Unit::Info,
        )
        .push(&[], f64::from(u8::from(self.success)));
        m.gauge(
            "labnode_rollback_last_drill_timestamp_seconds",
            "When the last rollback drill ended.",
            Unit::Timestamp,
        )
        .push(&[], self.finished_unix);
        m.gauge(
            "labnode_rollback_drill_cpu_seconds",
            "CPU time labnode itself used during the last rollback drill (children excluded).",
            Unit::Seconds,
        )
        .push(&[], self.overhead.cpu_seconds);
        m.gauge(
            "labnode_rollback_drill_boot_default_failed",
            "1 if making a generation the boot default failed in the last rollback drill.",
            Unit::Info,
        )
        .push(
            &[],
            f64::from(u8::from(
                self.directions.iter().any(|d| d.boot_error.is_some()),
            )),
        );
        m
    }
}

impl SafeSwitchRecord {
    /// The switch's samples, as in the metric contract.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        if let Some(d) = self.detect_seconds {
            m.gauge(
                "labnode_rollback_safe_switch_detect_seconds",
                "Last rolled-back safe switch: from its start until the failure was detected.",
                Unit::Seconds,
            )
            .push(&[], d);
        }
        if let Some(r) = self.recover_seconds {
            m.gauge(
                "labnode_rollback_safe_switch_recover_seconds",
                "Last rolled-back safe switch: from detection until the previous generation was healthy.",
                Unit::Seconds,
            )
            .push(&[], r);
        }
        m.gauge(
            "labnode_rollback_last_safe_switch_timestamp_seconds",
            "When the last safe switch ended.",
            Unit::Timestamp,
        )
        .push(&[], self.finished_unix);
        m.gauge(
            "labnode_rollback_last_safe_switch_healthy",
            "1 if the host ended the last safe switch healthy (on the new generation, or back on the old one).",
            Unit::Info,
        )
        .push(&[], f64::from(u8::from(self.healthy)));
        m.gauge(
            "labnode_rollback_safe_switch_boot_default_failed",
            "1 if making a generation the boot default failed in the last safe switch (its switch or its rollback).",
            Unit::Info,
        )
        .push(
            &[],
            f64::from(u8::from(
                self.switch
                    .iter()
                    .chain(self.rollback.iter())
                    .any(|s| s.boot_error.is_some()),
            )),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(direction: &str, success: bool) -> Switch {
        Switch {
            direction: direction.into(),
            from_generation: Some(2),
            to_generation: Some(1),
            to_store_path: "/nix/store/x".into(),
            phases: Phases {
                profile_flip: Some(0.03),
                activation: Some(0.2),
                units_settled: None,
                gates_green: Some(2.0),
                boot_default: None,
            },
            recovery_seconds: success.then_some(2.23),
            success,
            error: None,
            settle_skipped: Some("no systemd".into()),
            activation_output: vec![],
            boot_error: None,
            lock_wait_seconds: None,
            gates: vec![GateOutcome {
                name: "web".into(),
                kind: "http".into(),
                passed: success,
                first_pass_seconds: success.then_some(2.2),
                checks: 22,
                last_error: None,
                timeout_seconds: 10.0,
            }],
        }
    }

    #[test]
    fn drill_samples_follow_the_contract() {
        let r = DrillRecord {
            id: "1-2".into(),
            profile: "/p".into(),
            started_unix: 1.0,
            finished_unix: 5.0,
            start_generation: Some(2),
            start_store_path: "/nix/store/y".into(),
            previous_generation: Some(1),
            directions: vec![switch("rollback", false), switch("rollforward", true)],
            success: false,
            ended_on_generation: Some(2),
            ended_on_start: true,
            interrupted: None,
            error: Some("web red".into()),
            refused: false,
            overhead: Overhead::default(),
        };
        let m = r.metrics();
        m.validate().expect("valid");
        let mut text = String::new();
        m.encode_text(&mut text);
        assert!(
            text.contains(
                "labnode_rollback_phase_seconds{direction=\"rollback\",phase=\"activation\"} 0.2"
            ),
            "{text}"
        );
        assert!(
            !text.contains("units_settled"),
            "absent phases are absent: {text}"
        );
        assert!(
            text.contains("labnode_rollback_recovery_seconds{direction=\"rollforward\"} 2.23"),
            "{text}"
        );
        assert!(
            !text.contains("labnode_rollback_recovery_seconds{direction=\"rollback\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "labnode_rollback_gate_seconds{direction=\"rollforward\",gate=\"web\"} 2.2"
            ),
            "{text}"
        );
        assert!(
            text.contains("labnode_rollback_success{direction=\"rollback\"} 0"),
            "{text}"
        );
        assert!(text.contains("labnode_rollback_last_success 0"), "{text}");
        assert!(
            text.contains("labnode_rollback_drill_boot_default_failed 0"),
            "{text}"
        );
        let back: DrillRecord =
            serde_json::from_value(serde_json::to_value(&r).expect("json")).expect("parse");
        assert_eq!(back, r);
    }
}
