//! Snapshot enumeration in the background.
//!
//! Enumerating the snapshots of a big pool takes longer than a collector run may (10,000
//! snapshots: 12-17 s in the test VM against a 10 s deadline), and a run that overruns
//! loses every series, pool health included. So an enumeration runs on its own thread,
//! at most one at a time, started by a run when it is due; runs export the last finished
//! one and wait for one in flight only up to a bound their caller chooses (the collector:
//! half its deadline), so a small pool's enumeration still lands in the run that started it.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use labnode_core::{Metrics, Unit};

use crate::model::SnapshotSummary;
use crate::unix_now;

/// What an enumeration returns: one summary per dataset it could read, or why it failed.
pub type Outcome = Result<Vec<SnapshotSummary>, String>;

/// The last finished enumeration.
#[derive(Debug, Default)]
pub struct Finished {
    /// When it finished, in seconds since the epoch.
    pub done_at_unix: f64,
    /// What it cost (its own wall time, on its own thread).
    pub duration: Duration,
    /// Snapshots it visited, over all datasets.
    pub snapshots: u64,
    /// Per-dataset summaries.
    pub summaries: Vec<SnapshotSummary>,
}

#[derive(Debug)]
struct Job {
    started: Instant,
    rx: Receiver<(Outcome, Duration, f64)>,
}

/// Background snapshot enumerations: at most one in flight, the next due `interval` after
/// the last one ended (finished or failed).
#[derive(Debug)]
pub struct Enumerations {
    interval: Duration,
    job: Option<Job>,
    ended_at: Option<Instant>,
    last: Option<Finished>,
    runs: u64,
}

impl Enumerations {
    /// No enumeration yet; the first is due at once.
    pub fn new(interval: Duration) -> Self {
        Enumerations {
            interval,
            job: None,
            ended_at: None,
            last: None,
            runs: 0,
        }
    }

    /// Whether one is in flight.
    pub fn running(&self) -> bool {
        self.job.is_some()
    }

    /// Whether a new one should start: none in flight and the interval has passed since
    /// the last one ended.
    pub fn due(&self) -> bool {
        self.job.is_none() && self.ended_at.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// The last finished enumeration, if any.
    pub fn last(&self) -> Option<&Finished> {
        self.last.as_ref()
    }

    /// Starts `enumerate` on its own thread (the caller checks [`Self::due`]).
    pub fn start<F>(&mut self, enumerate: F)
    where
        F: FnOnce() -> Outcome + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let spawned = thread::Builder::new()
            .name("zfs-snapshots".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = enumerate();
                // The receiver is gone only if the collector was dropped: nobody to tell.
                let _ = tx.send((outcome, started.elapsed(), unix_now()));
            });
        match spawned {
            Ok(_) => {
                self.job = Some(Job {
                    started: Instant::now(),
                    rx,
                })
            }
            Err(e) => {
                tracing::warn!("cannot start a snapshot enumeration thread: {e}");
                self.ended_at = Some(Instant::now());
            }
        }
    }

    /// Takes the result of the enumeration in flight if it has finished, waiting for it
    /// until `until` at the latest (not at all if that has passed).
    pub fn poll(&mut self, until: Instant) {
        let Some(job) = &self.job else {
            return;
        };
        let wait = until.saturating_duration_since(Instant::now());
        let got = job.rx.recv_timeout(wait);
        match got {
            Err(RecvTimeoutError::Timeout) => return,
            Ok((Ok(summaries), duration, done_at_unix)) => {
                self.runs += 1;
                self.last = Some(Finished {
                    done_at_unix,
                    duration,
                    snapshots: summaries.iter().map(|s| s.count).sum(),
                    summaries,
                });
            }
            Ok((Err(why), _, _)) => tracing::warn!("snapshot enumeration failed: {why}"),
            Err(RecvTimeoutError::Disconnected) => {
                tracing::warn!("the snapshot enumeration thread ended without a result")
            }
        }
        self.job = None;
        self.ended_at = Some(Instant::now());
    }

    /// The enumeration families: the last one's cost, when it finished, what it visited,
    /// how many ran, and whether one is running now (and for how long).
    pub fn export(&self, m: &mut Metrics) {
        m.gauge(
            "labnode_zfs_snapshot_enumeration_running",
            "Snapshot enumerations in flight in the background (0 or 1).",
            Unit::Count,
        )
        .push(&[], if self.running() { 1.0 } else { 0.0 });
        if let Some(job) = &self.job {
            m.gauge(
                "labnode_zfs_snapshot_enumeration_running_seconds",
                "How long the snapshot enumeration in flight has been running.",
                Unit::Seconds,
            )
            .push(&[], job.started.elapsed().as_secs_f64());
        }
        m.counter(
            "labnode_zfs_snapshot_enumerations_total",
            "Snapshot enumerations finished since the agent started.",
            Unit::Count,
        )
        .push(&[], self.runs as f64);
        let Some(last) = &self.last else {
            return;
        };
        m.gauge(
            "labnode_zfs_snapshot_enumeration_duration_seconds",
            "How long the last snapshot enumeration took (in-process through libzfs, on its own thread).",
            Unit::Seconds,
        )
        .push(&[], last.duration.as_secs_f64());
        m.gauge(
            "labnode_zfs_snapshot_enumeration_timestamp_seconds",
            "When the last snapshot enumeration finished: snapshot counts and timestamps are as of then.",
            Unit::Timestamp,
        )
        .push(&[], last.done_at_unix);
        m.gauge(
            "labnode_zfs_snapshot_enumerated",
            "Snapshots the last enumeration visited, over all datasets.",
            Unit::Count,
        )
        .push(&[], last.snapshots as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn summary(dataset: &str, count: u64) -> SnapshotSummary {
        SnapshotSummary {
            dataset: dataset.into(),
            count,
            oldest: None,
            newest: None,
        }
    }

    fn value(m: &Metrics, name: &str) -> Option<f64> {
        m.value(name, &[])
    }

    #[test]
    fn a_quick_enumeration_lands_in_the_run_that_started_it() {
        let mut e = Enumerations::new(Duration::from_secs(300));
        assert!(e.due());
        e.start(|| Ok(vec![summary("tank/a", 3)]));
        e.poll(Instant::now() + Duration::from_secs(10));
        assert!(!e.running());
        assert_eq!(e.last().map(|l| l.snapshots), Some(3));
        assert!(!e.due(), "the next one waits for the interval");
        let mut m = Metrics::new();
        e.export(&mut m);
        m.validate().expect("valid");
        assert_eq!(value(&m, "labnode_zfs_snapshot_enumerated"), Some(3.0));
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_enumerations_total"),
            Some(1.0)
        );
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_enumeration_running"),
            Some(0.0)
        );
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_enumeration_running_seconds"),
            None
        );
    }

    #[test]
    fn a_slow_enumeration_is_waited_for_only_until_the_bound_and_never_doubled() {
        let mut e = Enumerations::new(Duration::ZERO);
        let started = Arc::new(AtomicU32::new(0));
        let (release, gate) = mpsc::channel::<()>();
        let s = started.clone();
        e.start(move || {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = gate.recv();
            Ok(vec![summary("tank/a", 10_000)])
        });
        let t = Instant::now();
        e.poll(t + Duration::from_millis(100));
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert!(e.running());
        assert!(!e.due(), "one in flight: no second");
        assert!(e.last().is_none());
        let mut m = Metrics::new();
        e.export(&mut m);
        m.validate().expect("valid");
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_enumeration_running"),
            Some(1.0)
        );
        assert!(value(&m, "labnode_zfs_snapshot_enumeration_running_seconds").is_some());
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_enumeration_duration_seconds"),
            None
        );
        release.send(()).expect("release");
        e.poll(Instant::now() + Duration::from_secs(10));
        assert_eq!(e.last().map(|l| l.snapshots), Some(10_000));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(e.due(), "interval 0: due again once it ended");
    }

    #[test]
    fn a_failed_or_panicked_enumeration_ends_and_keeps_the_last_result() {
        let mut e = Enumerations::new(Duration::ZERO);
        e.start(|| Ok(vec![summary("tank/a", 2)]));
        e.poll(Instant::now() + Duration::from_secs(10));
        e.start(|| Err("cannot open libzfs".into()));
        e.poll(Instant::now() + Duration::from_secs(10));
        assert!(!e.running());
        e.start(|| panic!("boom"));
        e.poll(Instant::now() + Duration::from_secs(10));
        assert!(!e.running());
        assert_eq!(e.last().map(|l| l.snapshots), Some(2));
    }
}
