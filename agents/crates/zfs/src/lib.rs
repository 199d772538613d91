//! The `zfs` collector and the ZFS rollback drill.
//!
//! Pools, vdevs, datasets and snapshots are read in-process through the installed libzfs
//! (our own bindings, `labnode-zfs-sys`, generated at build time); the ARC from
//! `/proc/spl/kstat/zfs/arcstats`; the newest `zfs_drill` record per dataset from the
//! snapshot store. Snapshot enumeration, the expensive part, runs on its own slower
//! interval and its cost is a metric. Built without the `libzfs` feature (the static
//! binary for hosts without libzfs), the collector exports the ARC and drill records only.

pub mod arc;
pub mod drill;
pub mod export;
#[cfg(feature = "libzfs")]
pub mod libzfs;
pub mod model;
#[cfg(feature = "libzfs")]
pub mod run_drill;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use labnode_core::config::{Deadline, Interval, Period};
use labnode_core::snapshot::{RecordIndex, Store};
use labnode_core::{CollectError, Collector, Metrics, Unit};
use serde::Deserialize;

use crate::model::SnapshotSummary;

/// Where the ARC kstats are by default.
pub const DEFAULT_KSTAT_DIR: &str = "/proc/spl/kstat/zfs";

/// Configuration of the `zfs` collector (the `collectors.zfs` section).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Whether the collector runs (default true).
    pub enabled: Option<bool>,
    /// Poll interval for pools, datasets and the ARC (default 15s).
    pub interval: Option<Interval>,
    /// Deadline of one run, snapshot enumeration included (default 10s).
    pub deadline: Option<Deadline>,
    /// How often snapshots are enumerated (default 5m; at least the interval).
    pub snapshot_interval: Option<Interval>,
    /// Where the ARC kstats are (default /proc/spl/kstat/zfs).
    pub kstat_dir: Option<PathBuf>,
}

impl Config {
    /// Whether the collector is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.interval.map_or(Duration::from_secs(15), Period::get)
    }
    /// The deadline of one run.
    pub fn deadline(&self) -> Duration {
        self.deadline.map_or(Duration::from_secs(10), Period::get)
    }
    /// How often snapshots are enumerated.
    pub fn snapshot_interval(&self) -> Duration {
        self.snapshot_interval
            .map_or(Duration::from_secs(300), Period::get)
    }
}

/// The last snapshot enumeration.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "libzfs"), allow(dead_code))]
struct SnapshotCache {
    done_at: Option<Instant>,
    done_at_unix: f64,
    duration: Duration,
    snapshots: u64,
    runs: u64,
    summaries: Vec<SnapshotSummary>,
}

#[derive(Debug)]
struct State {
    #[cfg(feature = "libzfs")]
    lib: Option<libzfs::LibZfs>,
    snapshots: SnapshotCache,
    records: Option<RecordIndex>,
}

/// The `zfs` collector.
#[derive(Debug)]
#[cfg_attr(not(feature = "libzfs"), allow(dead_code))]
pub struct ZfsCollector {
    interval: Duration,
    deadline: Duration,
    snapshot_interval: Duration,
    kstat_dir: PathBuf,
    state: Mutex<State>,
}

#[cfg_attr(not(feature = "libzfs"), allow(dead_code))]
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ZfsCollector {
    /// A collector with the given configuration; drill records are read from the snapshot
    /// store in `snapshot_dir`.
    pub fn new(cfg: &Config, snapshot_dir: Option<PathBuf>) -> Self {
        ZfsCollector {
            interval: cfg.interval(),
            deadline: cfg.deadline(),
            snapshot_interval: cfg.snapshot_interval().max(cfg.interval()),
            kstat_dir: cfg
                .kstat_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_KSTAT_DIR.into()),
            state: Mutex::new(State {
                #[cfg(feature = "libzfs")]
                lib: None,
                snapshots: SnapshotCache::default(),
                records: snapshot_dir.map(|d| RecordIndex::new(Store::new(d), drill::RECORD_KIND)),
            }),
        }
    }

    fn drill_records(state: &mut State, m: &mut Metrics) {
        let Some(index) = state.records.as_mut() else {
            return;
        };
        if let Err(e) = index.refresh() {
            tracing::warn!("cannot read the snapshot store for zfs_drill records: {e}");
            return;
        }
        for e in index.errors() {
            tracing::debug!("skipping an unreadable snapshot: {e}");
        }
        let (newest, bad) = drill::newest_per_dataset(index.records().map(|r| &r.data));
        for b in bad {
            tracing::warn!("a zfs_drill record does not parse: {b}");
        }
        for d in newest {
            d.export(m);
        }
    }

    fn snapshot_cost(cache: &SnapshotCache, m: &mut Metrics) {
        if cache.runs == 0 {
            return;
        }
        m.gauge(
            "labnode_zfs_snapshot_enumeration_duration_seconds",
            "How long the last snapshot enumeration took (in-process through libzfs).",
            Unit::Seconds,
        )
        .push(&[], cache.duration.as_secs_f64());
        m.gauge(
            "labnode_zfs_snapshot_enumeration_timestamp_seconds",
            "When the last snapshot enumeration finished: snapshot counts and ages are as of then.",
            Unit::Timestamp,
        )
        .push(&[], cache.done_at_unix);
        m.gauge(
            "labnode_zfs_snapshot_enumerated",
            "Snapshots the last enumeration visited, over all datasets.",
            Unit::Count,
        )
        .push(&[], cache.snapshots as f64);
        m.counter(
            "labnode_zfs_snapshot_enumerations_total",
            "Snapshot enumerations run since the agent started.",
            Unit::Count,
        )
        .push(&[], cache.runs as f64);
    }

    #[cfg(feature = "libzfs")]
    fn collect_libzfs(&self, state: &mut State, m: &mut Metrics) -> Result<(), CollectError> {
        if state.lib.is_none() {
            state.lib = Some(libzfs::LibZfs::open()?);
        }
        let Some(lib) = state.lib.as_ref() else {
            return Ok(());
        };
        let read = lib.pools().and_then(|p| Ok((p, lib.datasets()?)));
        let (pools, datasets) = match read {
            Ok(v) => v,
            Err(e) => {
                // Open libzfs afresh next time (the module may have been reloaded).
                state.lib = None;
                return Err(e.into());
            }
        };
        export::pools(m, &pools);
        export::datasets(m, &datasets);
        let due = state
            .snapshots
            .done_at
            .is_none_or(|t| t.elapsed() >= self.snapshot_interval);
        if due {
            let started = Instant::now();
            let mut summaries = Vec::with_capacity(datasets.len());
            for d in &datasets {
                match lib.snapshot_summary(&d.name) {
                    Ok(s) => summaries.push(s),
                    // Destroyed since it was listed: it simply has no series.
                    Err(e) => tracing::debug!("{e}"),
                }
            }
            let c = &mut state.snapshots;
            c.duration = started.elapsed();
            c.done_at = Some(Instant::now());
            c.done_at_unix = unix_now();
            c.snapshots = summaries.iter().map(|s| s.count).sum();
            c.runs += 1;
            c.summaries = summaries;
        }
        export::snapshots(m, &state.snapshots.summaries, &datasets, unix_now());
        Ok(())
    }
}

impl Collector for ZfsCollector {
    fn name(&self) -> &str {
        "zfs"
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    fn deadline(&self) -> Duration {
        self.deadline
    }
    fn collect(&self) -> Result<Metrics, CollectError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut m = Metrics::new();
        #[cfg(feature = "libzfs")]
        self.collect_libzfs(&mut state, &mut m)?;
        arc::read(&self.kstat_dir)?.export(&mut m);
        Self::snapshot_cost(&state.snapshots, &mut m);
        Self::drill_records(&mut state, &mut m);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_snapshot_interval_floor() {
        let c = Config::default();
        assert!(c.enabled());
        assert_eq!(c.interval(), Duration::from_secs(15));
        assert_eq!(c.snapshot_interval(), Duration::from_secs(300));
        let z = ZfsCollector::new(
            &Config {
                interval: Some(Period(Duration::from_secs(600))),
                ..Config::default()
            },
            None,
        );
        assert_eq!(z.snapshot_interval, Duration::from_secs(600));
    }

    #[cfg(not(feature = "libzfs"))]
    #[test]
    fn without_libzfs_arc_and_drill_records_are_exported() {
        use labnode_core::host::{self, HostPaths};
        use labnode_core::snapshot::Snapshot;
        let dir = tempfile::tempdir().expect("tempdir");
        let kstat = dir.path().join("kstat");
        std::fs::create_dir_all(&kstat).expect("mkdir");
        std::fs::write(
            kstat.join("arcstats"),
            "x\nname type data\nhits 4 3\nmisses 4 1\nc 4 10\nc_min 4 1\nc_max 4 20\nsize 4 5\n",
        )
        .expect("write");
        let store = dir.path().join("store");
        let mut snap =
            Snapshot::new("drill", host::facts(&HostPaths::default())).expect("snapshot");
        let result = drill::DrillResult {
            dataset: "tank/scratch".into(),
            snapshot: "tank/scratch@labnode-drill-1".into(),
            started_at_unix: 1.0,
            files: 1,
            bytes: 1,
            deleted: 0,
            overwritten: 0,
            added: 0,
            phases: Default::default(),
            recovery_seconds: Some(0.5),
            verified: 1,
            mismatched: vec![],
            manifest_sha256: String::new(),
            success: true,
            error: None,
        };
        snap.add_record(drill::RECORD_KIND, &result)
            .expect("record");
        Store::new(&store).write(&snap).expect("write");
        let c = ZfsCollector::new(
            &Config {
                kstat_dir: Some(kstat),
                ..Config::default()
            },
            Some(store),
        );
        let m = c.collect().expect("collects");
        m.validate().expect("valid");
        let names: Vec<&str> = m.families().iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"labnode_zfs_arc_size_bytes"), "{names:?}");
        assert!(names.contains(&"labnode_zfs_drill_success"), "{names:?}");
    }

    #[test]
    fn a_missing_kstat_dir_is_a_clear_error() {
        let c = ZfsCollector::new(
            &Config {
                kstat_dir: Some("/nonexistent/kstat".into()),
                ..Config::default()
            },
            None,
        );
        let e = c.collect().expect_err("no zfs here").to_string();
        // With libzfs the first failure is libzfs_init's (no /dev/zfs on this host);
        // without it, the kstat read names the file.
        assert!(
            e.contains("libzfs") || e.contains("/nonexistent/kstat/arcstats"),
            "{e}"
        );
    }
}
