//! The ZFS rollback drill: write a known data set into a scratch dataset, snapshot it,
//! damage it (delete, overwrite, add), roll back, and verify every file by SHA-256, timing
//! each phase. Its result is a `zfs_drill` record in the snapshot store; the collector
//! exports the newest one per dataset.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use labnode_core::{Metrics, Unit};
use serde::{Deserialize, Serialize};

use crate::model::{DatasetInfo, PROP_PROTECTED, PROP_SCRATCH};

/// The record kind drills write and the collector reads.
pub const RECORD_KIND: labnode_core::snapshot::RecordKind =
    labnode_core::snapshot::RecordKind::ZfsDrill;

/// The phases, in order.
pub const PHASES: [&str; 5] = ["write", "snapshot", "damage", "rollback", "verify"];

/// One drill's result, as stored in the snapshot's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillResult {
    /// The dataset drilled, `pool/fs`.
    pub dataset: String,
    /// The snapshot the drill took and rolled back to (destroyed afterwards).
    pub snapshot: String,
    /// When the drill started, seconds since the epoch.
    pub started_at_unix: f64,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files deleted by the damage phase.
    pub deleted: u64,
    /// Files overwritten by the damage phase.
    pub overwritten: u64,
    /// Files added by the damage phase (must be gone after the rollback).
    pub added: u64,
    /// Seconds per phase, for the phases that ran.
    pub phases: BTreeMap<String, f64>,
    /// Rollback plus verify: the time to a verified recovery.
    pub recovery_seconds: Option<f64>,
    /// Files whose content matched after the rollback.
    pub verified: u64,
    /// Files missing or different after the rollback, and files that should not be there.
    pub mismatched: Vec<String>,
    /// SHA-256 over the sorted `name  sha256` lines of the data set.
    pub manifest_sha256: String,
    /// Whether every file came back byte for byte.
    pub success: bool,
    /// Why the drill failed, when it failed before verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DrillResult {
    /// The drill's samples: the contract's `labnode_zfs_drill_*` families.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        self.export(&mut m);
        m
    }

    /// Adds this result's series to `m`.
    pub fn export(&self, m: &mut Metrics) {
        let ds = self.dataset.as_str();
        let f = m.gauge(
            "labnode_zfs_drill_phase_seconds",
            "Time the last ZFS drill of the dataset spent in each phase (write, snapshot, damage, rollback, verify).",
            Unit::Seconds,
        );
        for phase in PHASES {
            if let Some(s) = self.phases.get(phase) {
                f.push(&[("dataset", ds), ("phase", phase)], *s);
            }
        }
        if let Some(r) = self.recovery_seconds {
            m.gauge(
                "labnode_zfs_drill_recovery_seconds",
                "Rollback plus verify in the last ZFS drill of the dataset: the time to a verified recovery.",
                Unit::Seconds,
            )
            .push(&[("dataset", ds)], r);
        }
        m.gauge(
            "labnode_zfs_drill_success",
            "1 if every file of the last ZFS drill came back byte for byte, 0 if not.",
            Unit::Info,
        )
        .push(&[("dataset", ds)], if self.success { 1.0 } else { 0.0 });
        m.gauge(
            "labnode_zfs_drill_timestamp_seconds",
            "When the last ZFS drill of the dataset started.",
            Unit::Timestamp,
        )
        .push(&[("dataset", ds)], self.started_at_unix);
        m.gauge(
            "labnode_zfs_drill_files",
            "Files the last ZFS drill of the dataset wrote and verified.",
            Unit::Count,
        )
        .push(&[("dataset", ds)], self.files as f64);
    }
}

/// The newest result per dataset among stored records (as `RecordIndex` yields them,
/// oldest first), skipping records that do not parse (reported back by name).
pub fn newest_per_dataset<'a>(
    records: impl Iterator<Item = &'a serde_json::Value>,
) -> (Vec<DrillResult>, Vec<String>) {
    let mut newest: BTreeMap<String, DrillResult> = BTreeMap::new();
    let mut bad = Vec::new();
    for r in records {
        match serde_json::from_value::<DrillResult>(r.clone()) {
            Ok(d) => {
                newest.insert(d.dataset.clone(), d);
            }
            Err(e) => bad.push(e.to_string()),
        }
    }
    (newest.into_values().collect(), bad)
}

/// A small deterministic generator for the drill's data (xorshift64*): the same seed
/// always gives the same bytes, so a data set is described by its size and seed.
pub struct DataGen(u64);

impl DataGen {
    /// A generator for file number `n`.
    pub fn for_file(n: u64) -> Self {
        DataGen(0x9E37_79B9_7F4A_7C15 ^ (n.wrapping_add(1)).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf`: even-numbered files get compressible text (log-like lines), odd ones
    /// random bytes, so the drill exercises both what compression shrinks and what it cannot.
    pub fn fill(&mut self, compressible: bool, buf: &mut [u8]) {
        if compressible {
            let mut i = 0;
            while i < buf.len() {
                let line = format!(
                    "2026-01-01T00:00:{:02}Z labnode drill record {:016x} status=ok\n",
                    self.next() % 60,
                    self.next() % 4096
                );
                let n = line.len().min(buf.len() - i);
                buf[i..i + n].copy_from_slice(&line.as_bytes()[..n]);
                i += n;
            }
        } else {
            for chunk in buf.chunks_mut(8) {
                let v = self.next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
    }
}

/// Seconds of a duration, for the record.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Times `f` and stores its duration under `phase`.
pub fn timed<T>(phases: &mut BTreeMap<String, f64>, phase: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    phases.insert(phase.to_owned(), secs(t.elapsed()));
    out
}

/// Why a dataset may not be drilled, from its properties alone (nothing was touched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The dataset, or an ancestor, is protected: its snapshots are what the RPO alerts
    /// watch, and the drill destroys snapshots.
    #[error(
        "it is protected ({PROP_PROTECTED}=on, set on {set_on}); a dataset made for the drill is never protected"
    )]
    Protected {
        /// The dataset that sets the property.
        set_on: String,
    },
    /// `labnode:scratch` is not `on`.
    #[error(
        "the drill destroys the contents of the dataset it runs on, so it needs the user property {PROP_SCRATCH}=on set on the dataset itself (it has {0}); mark a dataset made for this: zfs set {PROP_SCRATCH}=on DATASET"
    )]
    NotScratch(String),
    /// `labnode:scratch=on` comes from an ancestor, not the dataset itself.
    #[error(
        "{PROP_SCRATCH}=on is inherited from {from}, not set on the dataset itself: a child of a scratch dataset is not scratch unless marked (zfs set {PROP_SCRATCH}=on DATASET)"
    )]
    Inherited {
        /// The ancestor that sets it.
        from: String,
    },
}

/// Whether `info` may be drilled: never when it is protected (set here or inherited),
/// only when `labnode:scratch=on` is set on the dataset itself.
pub fn refusal(info: &DatasetInfo) -> Option<Refusal> {
    if let Some(p) = info.protected.as_ref().filter(|p| p.is_on()) {
        return Some(Refusal::Protected {
            set_on: p.set_on.clone(),
        });
    }
    match &info.scratch {
        Some(s) if s.is_on() && s.set_on == info.name => None,
        Some(s) if s.is_on() => Some(Refusal::Inherited {
            from: s.set_on.clone(),
        }),
        Some(s) => Some(Refusal::NotScratch(format!("{PROP_SCRATCH}={}", s.value))),
        None => Some(Refusal::NotScratch("no value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ds: &str, t: f64, ok: bool) -> DrillResult {
        DrillResult {
            dataset: ds.into(),
            snapshot: format!("{ds}@labnode-drill-1"),
            started_at_unix: t,
            files: 4,
            bytes: 4096,
            deleted: 1,
            overwritten: 1,
            added: 1,
            phases: PHASES.iter().map(|p| ((*p).to_owned(), 0.5)).collect(),
            recovery_seconds: Some(1.0),
            verified: 4,
            mismatched: vec![],
            manifest_sha256: "00".into(),
            success: ok,
            error: None,
        }
    }

    #[test]
    fn metrics_follow_the_contract() {
        let m = result("tank/scratch", 10.0, true).metrics();
        m.validate().expect("valid");
        let names: Vec<&str> = m.families().iter().map(|f| f.name.as_str()).collect();
        for want in [
            "labnode_zfs_drill_phase_seconds",
            "labnode_zfs_drill_recovery_seconds",
            "labnode_zfs_drill_success",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(m.families()[0].series.len(), 5);
    }

    #[test]
    fn newest_record_per_dataset_wins_and_bad_ones_are_reported() {
        let values = [
            serde_json::to_value(result("tank/a", 1.0, false)).expect("json"),
            serde_json::to_value(result("tank/b", 2.0, true)).expect("json"),
            serde_json::to_value(result("tank/a", 3.0, true)).expect("json"),
            serde_json::json!({"dataset": 5}),
        ];
        let (newest, bad) = newest_per_dataset(values.iter());
        assert_eq!(newest.len(), 2);
        assert!(newest.iter().all(|d| d.success));
        assert_eq!(newest[0].started_at_unix, 3.0);
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn data_is_deterministic_and_differs_per_file() {
        let (mut a, mut b, mut c) = (vec![0u8; 999], vec![0u8; 999], vec![0u8; 999]);
        DataGen::for_file(1).fill(false, &mut a);
        DataGen::for_file(1).fill(false, &mut b);
        DataGen::for_file(2).fill(false, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        DataGen::for_file(0).fill(true, &mut a);
        assert!(a.starts_with(b"2026-01-01T00:00:"));
    }

    fn info(
        name: &str,
        scratch: Option<(&str, &str)>,
        protected: Option<(&str, &str)>,
    ) -> DatasetInfo {
        let prop = |(value, set_on): (&str, &str)| crate::model::UserProp {
            value: value.into(),
            set_on: set_on.into(),
        };
        DatasetInfo {
            name: name.into(),
            kind: crate::model::DatasetKind::Filesystem,
            used: 0,
            available: 0,
            referenced: 0,
            logical_used: 0,
            compress_ratio_percent: 100,
            protected: protected.map(prop),
            scratch: scratch.map(prop),
            mountpoint: Some(format!("/{name}")),
        }
    }

    #[test]
    fn only_a_dataset_marked_scratch_itself_and_not_protected_is_drilled() {
        let ds = "tank/scratch";
        assert_eq!(refusal(&info(ds, Some(("on", ds)), None)), None);
        // Inherited from the parent: refused, naming it.
        let child = "tank/scratch/child";
        assert_eq!(
            refusal(&info(child, Some(("on", ds)), None)),
            Some(Refusal::Inherited { from: ds.into() })
        );
        // Received is not local either.
        assert!(matches!(
            refusal(&info(ds, Some(("on", "$recvd")), None)),
            Some(Refusal::Inherited { .. })
        ));
        assert!(matches!(
            refusal(&info(ds, Some(("off", ds)), None)),
            Some(Refusal::NotScratch(v)) if v.ends_with("=off")
        ));
        assert!(matches!(
            refusal(&info(ds, None, None)),
            Some(Refusal::NotScratch(_))
        ));
        // Protected wins over scratch, set here or inherited.
        for set_on in [ds, "tank"] {
            assert_eq!(
                refusal(&info(ds, Some(("on", ds)), Some(("on", set_on)))),
                Some(Refusal::Protected {
                    set_on: set_on.into()
                })
            );
        }
        assert_eq!(
            refusal(&info(ds, Some(("on", ds)), Some(("off", ds)))),
            None
        );
    }
}
