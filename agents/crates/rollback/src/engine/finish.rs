//! Ending a run: the record to the store, the marker and the GC root gone, the guard
//! stopped; or, for a run not healthy yet, the marker kept for the next attempt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use labnode_core::host;
use labnode_core::snapshot::{RecordKind, Snapshot, Store};

use super::{Engine, RunError};
use crate::record::Recorded;
use crate::state::{self, Marker, RecoveryState};

impl Engine<'_> {
    /// Ends a run that is healthy: the record goes to the store (once: a record with the
    /// run's id already there is not written again), then the marker and the GC root go and
    /// the guard is stopped. A store that cannot be written undoes nothing: the record is
    /// kept in the state directory and the error returned after the marker is gone.
    /// `may_be_written`: an earlier process may have written it already (its marker was
    /// at the `record` step): the store is searched for it first.
    pub fn finish<T: Recorded>(
        &self,
        m: &mut Marker,
        record: &T,
        may_be_written: bool,
    ) -> Result<PathBuf, RunError> {
        m.step = Some("record".into());
        m.draft = serde_json::to_value(record).ok();
        self.state.write_marker(m)?;
        self.step(m, "record");
        let found = if may_be_written {
            find_record(&m.out, T::KIND, &m.id, m.started_unix)
        } else {
            None
        };
        let result = match found {
            Some(p) => Ok(p),
            None => self.write_record(&m.out, &m.label, record),
        };
        let result = result.map_err(|why| {
            let kept = self.state.path().join(format!("unsaved-{}.json", m.id));
            let _ = std::fs::write(&kept, serde_json::to_vec_pretty(record).unwrap_or_default());
            tracing::error!(
                "cannot write the record to {}: {why}; kept in {}",
                m.out.display(),
                kept.display()
            );
            RunError::Snapshot {
                dir: m.out.clone(),
                why,
                kept,
            }
        });
        self.state.clear_marker()?;
        self.drop_known_good();
        // The guard may be this very process (`--guard`); stopping it is tidy, not needed.
        if let Some(unit) = m
            .guard_unit
            .as_deref()
            .filter(|_| !std::env::args().any(|a| a == "--guard"))
        {
            if let Some(sd) = self.systemd_reachable() {
                let _ = sd.stop(unit);
            }
        }
        result
    }

    /// A record of a run refused before it changed anything (no marker to clear).
    pub fn record_refusal<T: Recorded>(&self, record: &T) -> Result<PathBuf, RunError> {
        self.write_record(&self.ctx.out, &self.ctx.label, record)
            .map_err(|why| RunError::Snapshot {
                dir: self.ctx.out.clone(),
                why,
                kept: PathBuf::new(),
            })
    }

    fn write_record<T: Recorded>(
        &self,
        out: &Path,
        label: &str,
        record: &T,
    ) -> Result<PathBuf, String> {
        let mut snap =
            Snapshot::new(label, host::facts(&self.ctx.host_paths)).map_err(|e| e.to_string())?;
        snap.add_metrics(T::SOURCE, &record.samples());
        snap.add_record(T::KIND, record)
            .map_err(|e| e.to_string())?;
        Store::new(out).write(&snap).map_err(|e| e.to_string())
    }

    /// A run that is not healthy yet: the marker stays with the draft record and the
    /// recovery's state, and the next attempt waits for `retry_interval` (doubling to 64
    /// times it).
    pub fn not_yet<T: Recorded>(
        &self,
        m: &mut Marker,
        record: &T,
        why: &str,
    ) -> Result<(), RunError> {
        let now = state::now_unix();
        let attempts = m.recovery.as_ref().map_or(0, |r| r.attempts) + 1;
        let wait =
            self.ctx.cfg.retry_interval().as_secs_f64() * f64::from(1u32 << (attempts - 1).min(6));
        m.recovery = Some(RecoveryState {
            attempts,
            failing_since_unix: m.recovery.as_ref().map_or(now, |r| r.failing_since_unix),
            last_error: why.to_owned(),
            next_unix: now + wait,
        });
        m.draft = serde_json::to_value(record).ok();
        m.step = None;
        self.state.write_marker(m)?;
        tracing::error!(
            "recovery attempt {attempts} did not end healthy: {why}; the marker stays in {} and the next attempt is in {wait:.1}s",
            self.state.path().display()
        );
        Ok(())
    }
}

/// The snapshot holding the record of `kind` with run id `id`, if the store has one. Only
/// files written since the run started are read.
fn find_record(out: &Path, kind: RecordKind, id: &str, since_unix: f64) -> Option<PathBuf> {
    let since = std::time::UNIX_EPOCH + Duration::from_secs_f64((since_unix - 1.0).max(0.0));
    std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .find_map(|e| {
            let snap = Snapshot::read(&e.path()).ok()?;
            snap.records
                .iter()
                .any(|r| {
                    r.kind == kind.as_str() && r.data.get("id").and_then(|v| v.as_str()) == Some(id)
                })
                .then(|| e.path())
        })
}
