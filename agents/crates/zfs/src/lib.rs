//! The `zfs` collector and the ZFS rollback drill.
//!
//! Pools, vdevs, datasets and snapshots are read in-process through the installed libzfs
//! (our own bindings, `labnode-zfs-sys`, generated at build time); the ARC from
//! `/proc/spl/kstat/zfs/arcstats`; the newest `zfs_drill` record per dataset from the
//! snapshot store. Snapshot enumeration, the expensive part, runs on its own slower
//! interval in the background (so a big pool cannot make a run overrun its deadline) and
//! its cost is a metric. Built without the `libzfs` feature (the static
//! binary for hosts without libzfs), the collector exports the ARC and drill records only.
//!
//! [`ZfsCollector`] implements `labnode_core::Collector`; [`Config`] is its `collectors.zfs`
//! section; [`run_drill`] is `labnode drill zfs`. Used by the `labnode` binary.

pub mod arc;
pub mod drill;
#[cfg(feature = "libzfs")]
pub mod enumeration;
pub mod export;
#[cfg(feature = "libzfs")]
pub mod libzfs;
pub mod model;
#[cfg(feature = "libzfs")]
pub mod run_drill;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labnode_core::config::{Interval, Period, Schedule, SectionError};
use labnode_core::snapshot::{RecordIndex, Store};
use labnode_core::{CollectError, Metrics, Polled, Timing};

/// Where the ARC kstats are by default.
pub const DEFAULT_KSTAT_DIR: &str = "/proc/spl/kstat/zfs";

labnode_core::collector_config! {
    /// Configuration of the `zfs` collector (the `collectors.zfs` section): pools, datasets and
    /// the ARC are polled every 15s by default, each run within 10s. A snapshot enumeration
    /// runs in the background and is waited for until half of the deadline has passed.
    pub struct Config {
        defaults: interval Duration::from_secs(15), deadline Duration::from_secs(10);
        /// How often snapshots are enumerated (default 5m; at least the interval).
        pub snapshot_interval: Option<Interval>,
        /// Where the ARC kstats are (default /proc/spl/kstat/zfs).
        pub kstat_dir: Option<PathBuf>,
    }
    impl Schedule {
        /// Snapshots are enumerated at most once per run.
        fn check_relations(&self) -> Result<(), SectionError> {
            if self
                .snapshot_interval
                .is_some_and(|s| s.get() < self.interval())
            {
                return Err(SectionError {
                    key: "snapshot_interval",
                    message: "snapshots are enumerated at most once per run: snapshot_interval must not be shorter than interval".into(),
                });
            }
            Ok(())
        }
    }
}

impl Config {
    /// How often snapshots are enumerated (never more often than the poll interval).
    pub fn snapshot_interval(&self) -> Duration {
        self.snapshot_interval
            .map_or(Duration::from_secs(300), Period::get)
            .max(self.interval())
    }
}

#[derive(Debug)]
struct State {
    /// The runs' libzfs handle, kept while there are pools; closed when a run finds none or
    /// fails, so an idle agent does not hold `/dev/zfs` open (and pin the zfs module).
    #[cfg(feature = "libzfs")]
    lib: Option<libzfs::LibZfs>,
    #[cfg(feature = "libzfs")]
    snapshots: enumeration::Enumerations,
    records: Option<RecordIndex>,
}

/// The `zfs` collector.
#[derive(Debug)]
#[cfg_attr(not(feature = "libzfs"), allow(dead_code))]
pub struct ZfsCollector {
    timing: Timing,
    kstat_dir: PathBuf,
    state: Mutex<State>,
}

#[cfg_attr(not(feature = "libzfs"), allow(unused_imports))]
use labnode_core::sys::unix_now;

impl ZfsCollector {
    /// A collector with the given configuration; drill records are read from the snapshot
    /// store in `snapshot_dir`.
    pub fn new(cfg: &Config, snapshot_dir: Option<PathBuf>) -> Self {
        ZfsCollector {
            timing: Timing::of(cfg),
            kstat_dir: cfg
                .kstat_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_KSTAT_DIR.into()),
            state: Mutex::new(State {
                #[cfg(feature = "libzfs")]
                lib: None,
                #[cfg(feature = "libzfs")]
                snapshots: enumeration::Enumerations::new(cfg.snapshot_interval()),
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

    /// Pools, datasets and the snapshot summaries. The snapshot enumeration runs in the
    /// background (see [`enumeration`]); this run waits for one in flight only until half
    /// its deadline has passed since `run_started`, so it never overruns because of it.
    #[cfg(feature = "libzfs")]
    fn collect_libzfs(
        &self,
        state: &mut State,
        m: &mut Metrics,
        run_started: Instant,
    ) -> Result<(), CollectError> {
        if state.lib.is_none() {
            state.lib = Some(libzfs::LibZfs::open_loaded()?);
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
        if pools.is_empty() {
            // Nothing to watch: close /dev/zfs so the module can be unloaded under us.
            state.lib = None;
        }
        export::pools(m, &pools);
        export::datasets(m, &datasets);
        let enums = &mut state.snapshots;
        enums.poll(Instant::now());
        if enums.due() && !datasets.is_empty() {
            let names: Vec<String> = datasets.iter().map(|d| d.name.clone()).collect();
            enums.start(move || enumerate(names));
        }
        enums.poll(run_started + self.timing.deadline / 2);
        enums.export(m);
        if let Some(last) = enums.last() {
            export::snapshots(m, &last.summaries, &datasets, unix_now());
        }
        Ok(())
    }
}

/// Test-only: seconds every snapshot enumeration waits before it starts, to make it slower
/// than a run's deadline without creating thousands of snapshots (the ZFS test VM cannot
/// create them in the test's time). Never set in production.
pub const TEST_ENUMERATION_DELAY_ENV: &str = "LABNODE_ZFS_TEST_ENUMERATION_DELAY";

/// One snapshot enumeration of `datasets`, on its own libzfs handle (closed at the end).
#[cfg(feature = "libzfs")]
fn enumerate(datasets: Vec<String>) -> enumeration::Outcome {
    if let Ok(v) = std::env::var(TEST_ENUMERATION_DELAY_ENV) {
        match v
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        {
            Some(d) => std::thread::sleep(d),
            None => tracing::warn!(
                "{TEST_ENUMERATION_DELAY_ENV}={v:?} is not a number of seconds; ignored"
            ),
        }
    }
    let lib = libzfs::LibZfs::open_loaded().map_err(|e| e.to_string())?;
    let mut summaries = Vec::with_capacity(datasets.len());
    for d in &datasets {
        match lib.snapshot_summary(d) {
            Ok(s) => summaries.push(s),
            // Destroyed (or its pool exported) since it was listed: it has no series.
            Err(e) => {
                tracing::info!(dataset = %d, "cannot enumerate the snapshots of {d}, left out: {e}")
            }
        }
    }
    Ok(summaries)
}

impl Polled for ZfsCollector {
    const NAME: &'static str = "zfs";
    fn timing(&self) -> Timing {
        self.timing
    }
    fn poll(&self) -> Result<Metrics, CollectError> {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut m = Metrics::new();
        #[cfg(feature = "libzfs")]
        self.collect_libzfs(&mut state, &mut m, started)?;
        #[cfg(not(feature = "libzfs"))]
        let _ = started;
        arc::read(&self.kstat_dir)?.export(&mut m);
        Self::drill_records(&mut state, &mut m);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labnode_core::Collector;

    #[test]
    fn config_defaults_and_snapshot_interval_floor() {
        let c = Config::default();
        assert!(c.enabled());
        assert_eq!(c.interval(), Duration::from_secs(15));
        assert_eq!(c.snapshot_interval(), Duration::from_secs(300));
        let c = Config {
            interval: Some(Period(Duration::from_secs(600))),
            ..Config::default()
        };
        assert_eq!(c.snapshot_interval(), Duration::from_secs(600));
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
