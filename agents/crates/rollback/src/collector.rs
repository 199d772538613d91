//! The `rollback` collector: the system profile's facts, live, and the newest drill and
//! safe-switch results from the snapshot store, with counters derived from every record
//! there (so the success rate is a query).

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use labnode_core::snapshot::{RecordIndex, Store};
use labnode_core::{CollectError, Metrics, Polled, Timing, Unit};

use crate::config::{CollectorConfig, Config};
use crate::profile::{self, ProfileError};
use crate::record::{DRILL_KIND, DrillRecord, Outcome, SAFE_SWITCH_KIND, SafeSwitchRecord};
use crate::state::StateDir;

/// The `rollback` collector.
#[derive(Debug)]
pub struct RollbackCollector {
    timing: Timing,
    profile: PathBuf,
    booted: PathBuf,
    state: StateDir,
    indexes: Mutex<(RecordIndex, RecordIndex)>,
}

impl RollbackCollector {
    /// A collector over the profile and state directory of `rollback` and the store `snapshots`.
    pub fn new(cfg: &CollectorConfig, rollback: &Config, snapshots: PathBuf) -> Self {
        let store = Store::new(snapshots);
        RollbackCollector {
            timing: Timing::of(cfg),
            profile: rollback.profile(),
            booted: rollback.booted_system(),
            state: StateDir::new(rollback.state_dir()),
            indexes: Mutex::new((
                RecordIndex::new(store.clone(), DRILL_KIND),
                RecordIndex::new(store, SAFE_SWITCH_KIND),
            )),
        }
    }

    fn profile_facts(&self, m: &mut Metrics) -> Result<(), CollectError> {
        let st = match profile::read(&self.profile) {
            Ok(st) => st,
            // No profile (not NixOS, e.g. the "before" host): no facts, not a failure.
            Err(ProfileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        m.gauge(
            "labnode_rollback_profile_generations",
            "Generations the system profile keeps (each one a rollback target).",
            Unit::Count,
        )
        .push(&[], st.generations.len() as f64);
        m.gauge(
            "labnode_rollback_profile_current_generation",
            "The system profile's current generation number.",
            Unit::Count,
        )
        .push(&[], st.current as f64);
        if let Some(g) = st.current() {
            m.gauge(
                "labnode_rollback_profile_current_generation_timestamp_seconds",
                "When the profile's current generation was made.",
                Unit::Timestamp,
            )
            .push(&[], g.created_unix);
        }
        if let Some(p) = st.previous() {
            m.gauge(
                "labnode_rollback_profile_previous_generation",
                "The generation a rollback would go to (absent: nothing to roll back to).",
                Unit::Count,
            )
            .push(&[], p.number as f64);
        }
        if let Some(n) = profile::resolve(&self.booted).and_then(|b| st.number_of(&b)) {
            m.gauge(
                "labnode_rollback_profile_booted_generation",
                "The generation the host booted (absent if it is not in the profile any more).",
                Unit::Count,
            )
            .push(&[], n as f64);
        }
        Ok(())
    }
}

impl Polled for RollbackCollector {
    const NAME: &'static str = "rollback";
    fn timing(&self) -> Timing {
        self.timing
    }
    fn poll(&self) -> Result<Metrics, CollectError> {
        let mut m = Metrics::new();
        self.profile_facts(&mut m)?;
        m.gauge(
            "labnode_rollback_pending_switch",
            "1 while a drill or safe switch is unfinished (its marker exists), 0 otherwise.",
            Unit::Info,
        )
        .push(&[], f64::from(u8::from(self.state.has_marker())));
        // A recovery that did not end healthy keeps the marker: the node may run a
        // known-good generation with an unknown boot default, or not run it at all.
        let recovery = match self.state.marker() {
            Ok(marker) => marker.and_then(|mk| mk.recovery),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        m.gauge(
            "labnode_rollback_recovery_failed",
            "1 while the recovery of an unfinished drill or safe switch has failed and is being retried, 0 otherwise.",
            Unit::Info,
        )
        .push(&[], f64::from(u8::from(recovery.is_some())));
        m.gauge(
            "labnode_rollback_recovery_attempts",
            "Failed recovery attempts of the unfinished drill or safe switch (0: none).",
            Unit::Count,
        )
        .push(
            &[],
            recovery.as_ref().map_or(0.0, |r| f64::from(r.attempts)),
        );
        if let Some(r) = &recovery {
            m.gauge(
                "labnode_rollback_recovery_failing_since_timestamp_seconds",
                "When the recovery of the unfinished run first failed.",
                Unit::Timestamp,
            )
            .push(&[], r.failing_since_unix);
        }

        let mut guard = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        let (drills, switches) = &mut *guard;
        drills.refresh()?;
        switches.refresh()?;
        for e in drills.errors() {
            tracing::warn!("snapshot store: {e}");
        }
        let (mut ok, mut failed, mut refused) = (0u64, 0u64, 0u64);
        let mut last_drill = None;
        for r in drills.records() {
            match serde_json::from_value::<DrillRecord>(r.data.clone()) {
                Ok(d) => {
                    if d.success {
                        ok += 1;
                    } else if d.refused {
                        refused += 1;
                    } else {
                        failed += 1;
                    }
                    last_drill = Some(d);
                }
                Err(e) => tracing::warn!(
                    "{}: a rollback_drill record that does not parse: {e}",
                    r.path.display()
                ),
            }
        }
        let drills_total = m.counter(
            "labnode_rollback_drills_total",
            "Rollback drills recorded in the snapshot store, by result (refused: nothing to roll back to).",
            Unit::Count,
        );
        drills_total.push(&[("result", "success")], ok as f64);
        drills_total.push(&[("result", "failure")], failed as f64);
        drills_total.push(&[("result", "refused")], refused as f64);

        let (mut confirmed, mut rolled_back) = (0u64, 0u64);
        let mut last_switch = None;
        for r in switches.records() {
            match serde_json::from_value::<SafeSwitchRecord>(r.data.clone()) {
                Ok(s) => {
                    match s.outcome {
                        Outcome::Confirmed => confirmed += 1,
                        Outcome::RolledBack => rolled_back += 1,
                    }
                    last_switch = Some(s);
                }
                Err(e) => tracing::warn!(
                    "{}: a safe_switch record that does not parse: {e}",
                    r.path.display()
                ),
            }
        }
        let switch_total = m.counter(
            "labnode_rollback_safe_switch_total",
            "Safe switches recorded in the snapshot store, by outcome.",
            Unit::Count,
        );
        switch_total.push(
            &[("outcome", Outcome::Confirmed.as_str())],
            confirmed as f64,
        );
        switch_total.push(
            &[("outcome", Outcome::RolledBack.as_str())],
            rolled_back as f64,
        );
        drop(guard);

        let mut add = |other: Metrics| {
            for f in other.families() {
                let fam = m.family(&f.name, &f.help, f.kind, f.unit);
                fam.series.extend(f.series.iter().cloned());
            }
        };
        if let Some(d) = last_drill {
            add(d.metrics());
        }
        if let Some(s) = last_switch {
            add(s.metrics());
        }
        Ok(m)
    }
}
