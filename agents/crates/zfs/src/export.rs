//! Turns what was read from ZFS into labnode's metric families (the names the metric
//! contract, docs/metrics.md, fixes).

use labnode_core::{Metrics, Unit};

use crate::model::{DatasetInfo, PoolInfo, SnapshotSummary, UserProp};

/// The pool states `labnode_zfs_pool_state` always has a series for (0 or 1).
pub const POOL_STATES: [&str; 7] = [
    "online",
    "degraded",
    "faulted",
    "offline",
    "unavail",
    "removed",
    "suspended",
];

/// The vdev states `labnode_zfs_vdev_state` always has a series for.
pub const VDEV_STATES: [&str; 6] = [
    "online", "degraded", "faulted", "offline", "unavail", "removed",
];

/// One-hot series over `states`, plus the current state if it is none of them.
fn one_hot(
    m: &mut Metrics,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    states: &[&str],
    current: &str,
) {
    let f = m.gauge(name, help, Unit::Info);
    let mut with_state: Vec<(&str, &str)> = labels.to_vec();
    with_state.push(("state", ""));
    let last = with_state.len() - 1;
    for s in states {
        with_state[last].1 = s;
        f.push(&with_state, if *s == current { 1.0 } else { 0.0 });
    }
    if !states.contains(&current) {
        with_state[last].1 = current;
        f.push(&with_state, 1.0);
    }
}

/// Adds the pool and vdev families.
pub fn pools(m: &mut Metrics, pools: &[PoolInfo]) {
    for p in pools {
        let pool = [("pool", p.name.as_str())];
        one_hot(
            m,
            "labnode_zfs_pool_state",
            "Pool health: 1 for the current state (online, degraded, faulted, offline, unavail, removed, suspended), 0 for the others.",
            &pool,
            &POOL_STATES,
            &p.health,
        );
        let gauges = [
            (
                "labnode_zfs_pool_size_bytes",
                "Pool size (zpool get size).",
                Unit::Bytes,
                p.size.map(|v| v as f64),
            ),
            (
                "labnode_zfs_pool_allocated_bytes",
                "Space allocated in the pool (zpool get allocated).",
                Unit::Bytes,
                p.allocated.map(|v| v as f64),
            ),
            (
                "labnode_zfs_pool_free_bytes",
                "Free space in the pool (zpool get free).",
                Unit::Bytes,
                p.free.map(|v| v as f64),
            ),
            (
                "labnode_zfs_pool_capacity_ratio",
                "Share of the pool allocated (zpool get capacity, which ZFS rounds down to a percent).",
                Unit::Ratio,
                p.capacity_percent.map(|c| c as f64 / 100.0),
            ),
            (
                "labnode_zfs_pool_fragmentation_ratio",
                "Free-space fragmentation of the pool (zpool get fragmentation; absent where ZFS prints -).",
                Unit::Ratio,
                p.fragmentation_percent.map(|f| f as f64 / 100.0),
            ),
            (
                "labnode_zfs_pool_data_errors",
                "Files or objects with permanent data errors (the list zpool status -v prints).",
                Unit::Count,
                p.data_errors.map(|e| e as f64),
            ),
        ];
        for (name, help, unit, v) in gauges {
            if let Some(v) = v {
                m.gauge(name, help, unit).push(&pool, v);
            }
        }
        if let Some(s) = &p.scan {
            m.gauge(
                "labnode_zfs_pool_scan_state",
                "The pool's last scan: function (scrub, resilver, error_scrub) and state (scanning, finished, canceled); always 1.",
                Unit::Info,
            )
            .push(
                &[
                    ("pool", p.name.as_str()),
                    ("function", s.function),
                    ("state", s.state),
                ],
                1.0,
            );
            m.gauge(
                "labnode_zfs_pool_scan_start_timestamp_seconds",
                "When the pool's last scan (scrub or resilver) started.",
                Unit::Timestamp,
            )
            .push(&pool, s.start_time as f64);
            if s.state == "scanning" && s.to_examine > 0 {
                m.gauge(
                    "labnode_zfs_pool_scan_progress_ratio",
                    "Share of the running scan's data issued (checked) so far.",
                    Unit::Ratio,
                )
                .push(&pool, (s.issued as f64 / s.to_examine as f64).min(1.0));
            }
            let ends = [
                (
                    "scrub",
                    "labnode_zfs_pool_scrub_end_timestamp_seconds",
                    "When the last scrub finished (absent if the last scan was not a finished scrub).",
                ),
                (
                    "resilver",
                    "labnode_zfs_pool_resilver_end_timestamp_seconds",
                    "When the last resilver finished (absent if the last scan was not a finished resilver).",
                ),
            ];
            for (function, name, help) in ends {
                if s.function != function || s.state != "finished" {
                    continue;
                }
                m.gauge(name, help, Unit::Timestamp)
                    .push(&pool, s.end_time as f64);
                if function == "scrub" {
                    m.gauge(
                        "labnode_zfs_pool_scrub_errors",
                        "Errors the last finished scrub found.",
                        Unit::Count,
                    )
                    .push(&pool, s.errors as f64);
                }
            }
        }
        for v in &p.vdevs {
            let labels = [("pool", p.name.as_str()), ("vdev", v.name.as_str())];
            one_hot(
                m,
                "labnode_zfs_vdev_state",
                "Vdev state: 1 for the current one (online, degraded, faulted, offline, unavail, removed), 0 for the others.",
                &labels,
                &VDEV_STATES,
                &v.state,
            );
            let errors = m.counter(
                "labnode_zfs_vdev_errors_total",
                "I/O errors on the vdev since the pool was imported or last cleared, by type (read, write, checksum).",
                Unit::Count,
            );
            for (kind, n) in [
                ("read", v.read_errors),
                ("write", v.write_errors),
                ("checksum", v.checksum_errors),
            ] {
                errors.push(
                    &[
                        ("pool", p.name.as_str()),
                        ("vdev", v.name.as_str()),
                        ("type", kind),
                    ],
                    n as f64,
                );
            }
        }
    }
}

/// Adds the dataset families.
pub fn datasets(m: &mut Metrics, datasets: &[DatasetInfo]) {
    for d in datasets {
        let labels = [("pool", d.pool()), ("dataset", d.name.as_str())];
        let bytes = [
            (
                "labnode_zfs_dataset_used_bytes",
                "Space the dataset and its descendants use (zfs get used).",
                d.used,
            ),
            (
                "labnode_zfs_dataset_available_bytes",
                "Space available to the dataset (zfs get available).",
                d.available,
            ),
            (
                "labnode_zfs_dataset_referenced_bytes",
                "Data the dataset references (zfs get referenced).",
                d.referenced,
            ),
            (
                "labnode_zfs_dataset_logical_used_bytes",
                "Space used before compression (zfs get logicalused).",
                d.logical_used,
            ),
        ];
        for (name, help, v) in bytes {
            m.gauge(name, help, Unit::Bytes).push(&labels, v as f64);
        }
        m.gauge(
            "labnode_zfs_dataset_compress_ratio",
            "Compression ratio of the used space (zfs get compressratio: 2.15 means 2.15x).",
            Unit::Ratio,
        )
        .push(&labels, d.compress_ratio_percent as f64 / 100.0);
        m.gauge(
            "labnode_zfs_dataset_protected",
            "1 if the dataset has labnode:protected=on (under a snapshot policy; RPO alerting applies).",
            Unit::Info,
        )
        .push(&labels, if d.protected.as_ref().is_some_and(UserProp::is_on) { 1.0 } else { 0.0 });
    }
}

/// Adds the per-dataset snapshot families for the datasets in `present` (a dataset
/// destroyed since the enumeration loses its series), with ages as of `now_unix`.
pub fn snapshots(
    m: &mut Metrics,
    summaries: &[SnapshotSummary],
    present: &[DatasetInfo],
    now_unix: f64,
) {
    for s in summaries {
        let Some(d) = present.iter().find(|d| d.name == s.dataset) else {
            continue;
        };
        let labels = [("pool", d.pool()), ("dataset", s.dataset.as_str())];
        m.gauge(
            "labnode_zfs_snapshots",
            "Snapshots of the dataset (its own, not its children's).",
            Unit::Count,
        )
        .push(&labels, s.count as f64);
        if let Some((_, t)) = &s.newest {
            m.gauge(
                "labnode_zfs_snapshot_newest_timestamp_seconds",
                "Creation time of the dataset's newest snapshot.",
                Unit::Timestamp,
            )
            .push(&labels, *t as f64);
            m.gauge(
                "labnode_zfs_snapshot_newest_age_seconds",
                "Age of the dataset's newest snapshot: the recovery point objective actually met.",
                Unit::Seconds,
            )
            .push(&labels, (now_unix - *t as f64).max(0.0));
        }
        if let Some((_, t)) = &s.oldest {
            m.gauge(
                "labnode_zfs_snapshot_oldest_timestamp_seconds",
                "Creation time of the dataset's oldest snapshot.",
                Unit::Timestamp,
            )
            .push(&labels, *t as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DatasetKind, ScanInfo, VdevInfo};

    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        m.value(name, labels)
    }

    fn pool(health: &str) -> PoolInfo {
        PoolInfo {
            name: "tank".into(),
            health: health.into(),
            size: Some(1000),
            allocated: Some(250),
            free: Some(750),
            capacity_percent: Some(25),
            fragmentation_percent: None,
            data_errors: Some(2),
            scan: Some(ScanInfo {
                function: "scrub",
                state: "finished",
                start_time: 100,
                end_time: 160,
                to_examine: 10,
                examined: 10,
                issued: 10,
                errors: 3,
            }),
            vdevs: vec![VdevInfo {
                name: "mirror-0".into(),
                kind: "mirror".into(),
                state: "degraded".into(),
                read_errors: 1,
                write_errors: 0,
                checksum_errors: 7,
            }],
        }
    }

    #[test]
    fn pool_state_is_one_hot_and_unsupported_values_are_absent() {
        let mut m = Metrics::new();
        pools(&mut m, &[pool("degraded")]);
        m.validate().expect("valid");
        let st = "labnode_zfs_pool_state";
        assert_eq!(value(&m, st, &[("state", "degraded")]), Some(1.0));
        assert_eq!(value(&m, st, &[("state", "online")]), Some(0.0));
        assert_eq!(
            value(&m, "labnode_zfs_pool_capacity_ratio", &[]),
            Some(0.25)
        );
        assert_eq!(value(&m, "labnode_zfs_pool_fragmentation_ratio", &[]), None);
        assert_eq!(
            value(&m, "labnode_zfs_pool_scrub_end_timestamp_seconds", &[]),
            Some(160.0)
        );
        assert_eq!(value(&m, "labnode_zfs_pool_scrub_errors", &[]), Some(3.0));
        let e = "labnode_zfs_vdev_errors_total";
        assert_eq!(
            value(&m, e, &[("vdev", "mirror-0"), ("type", "checksum")]),
            Some(7.0)
        );
        assert_eq!(
            value(&m, "labnode_zfs_vdev_state", &[("state", "degraded")]),
            Some(1.0)
        );
    }

    #[test]
    fn an_unknown_state_gets_its_own_series() {
        let mut m = Metrics::new();
        pools(&mut m, &[pool("split")]);
        m.validate().expect("valid");
        assert_eq!(
            value(&m, "labnode_zfs_pool_state", &[("state", "split")]),
            Some(1.0)
        );
        let ones = m.families()[0]
            .series
            .iter()
            .filter(|s| s.value == 1.0)
            .count();
        assert_eq!(ones, 1);
    }

    #[test]
    fn a_running_scrub_has_progress_and_no_end() {
        let mut p = pool("online");
        if let Some(s) = p.scan.as_mut() {
            s.state = "scanning";
            s.issued = 4;
        }
        let mut m = Metrics::new();
        pools(&mut m, &[p]);
        assert_eq!(
            value(&m, "labnode_zfs_pool_scan_progress_ratio", &[]),
            Some(0.4)
        );
        assert_eq!(
            value(&m, "labnode_zfs_pool_scrub_end_timestamp_seconds", &[]),
            None
        );
    }

    fn ds(name: &str, protected: Option<&str>) -> DatasetInfo {
        DatasetInfo {
            name: name.into(),
            kind: DatasetKind::Filesystem,
            used: 10,
            available: 20,
            referenced: 30,
            logical_used: 40,
            compress_ratio_percent: 215,
            protected: protected.map(|v| UserProp {
                value: v.into(),
                set_on: name.into(),
            }),
            scratch: None,
            mountpoint: None,
        }
    }

    #[test]
    fn datasets_and_snapshots() {
        let present = [ds("tank/a", Some("on")), ds("tank/b", Some("off"))];
        let mut m = Metrics::new();
        datasets(&mut m, &present);
        let summaries = [
            SnapshotSummary {
                dataset: "tank/a".into(),
                count: 2,
                oldest: Some(("tank/a@1".into(), 100)),
                newest: Some(("tank/a@2".into(), 200)),
            },
            SnapshotSummary {
                dataset: "tank/b".into(),
                count: 0,
                oldest: None,
                newest: None,
            },
            SnapshotSummary {
                dataset: "tank/gone".into(),
                count: 5,
                oldest: None,
                newest: None,
            },
        ];
        snapshots(&mut m, &summaries, &present, 260.0);
        m.validate().expect("valid");
        let a = [("dataset", "tank/a")];
        assert_eq!(
            value(&m, "labnode_zfs_dataset_compress_ratio", &a),
            Some(2.15)
        );
        assert_eq!(value(&m, "labnode_zfs_dataset_protected", &a), Some(1.0));
        assert_eq!(
            value(
                &m,
                "labnode_zfs_dataset_protected",
                &[("dataset", "tank/b")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_newest_age_seconds", &a),
            Some(60.0)
        );
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_oldest_timestamp_seconds", &a),
            Some(100.0)
        );
        let b = [("dataset", "tank/b")];
        assert_eq!(value(&m, "labnode_zfs_snapshots", &b), Some(0.0));
        assert_eq!(
            value(&m, "labnode_zfs_snapshot_newest_age_seconds", &b),
            None
        );
        assert_eq!(
            value(&m, "labnode_zfs_snapshots", &[("dataset", "tank/gone")]),
            None
        );
    }
}
