//! The `net_bench` record `labnode net bench` writes to the snapshot store, and the
//! `labnode_net_probe_*` series made from it (by the bench for its snapshot's samples, and
//! by the collector for the newest result of each path, protocol and congestion control).

use std::collections::BTreeMap;

use labnode_core::{Metrics, Unit};
use serde::{Deserialize, Serialize};

/// The record kind in the snapshot store.
pub const RECORD_KIND: labnode_core::snapshot::RecordKind =
    labnode_core::snapshot::RecordKind::NetBench;

/// One `labnode net bench` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchRecord {
    /// `--path`: the network path the bench ran over, e.g. `direct` or `wireguard`.
    pub path: String,
    /// The server's address.
    pub peer: String,
    /// Parallel streams of every run.
    pub streams: u32,
    /// Seconds each run sent for.
    pub duration_seconds: f64,
    /// One entry per protocol and congestion control, in the order they ran.
    pub runs: Vec<RunResult>,
}

/// One protocol and congestion control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    /// `tcp` or `quic`.
    pub protocol: String,
    /// `cubic`, `bbr`, or another TCP congestion control of the sender's kernel.
    pub congestion: String,
    /// Goodput the server received over the run, bits per second, all streams.
    pub throughput_bits_per_second: f64,
    /// Bytes the server received.
    pub bytes: u64,
    /// Seconds from the server's first received byte to its last.
    pub seconds: f64,
    /// Mean smoothed RTT under load: `TCP_INFO` (TCP) or quinn's estimate (QUIC).
    pub rtt_seconds: Option<f64>,
    /// The lowest RTT seen during the run.
    pub min_rtt_seconds: Option<f64>,
    /// Segments (TCP) or packets (QUIC) the sender sent again.
    pub retransmitted: u64,
    /// CPU seconds the client's sending threads used.
    pub client_cpu_seconds: f64,
    /// CPU seconds the server's receiving threads used.
    pub server_cpu_seconds: f64,
    /// Whether UDP generic segmentation offload was on (QUIC only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gso: Option<bool>,
    /// Whether the congestion controller is experimental upstream (quinn's BBR).
    #[serde(default)]
    pub experimental: bool,
}

impl RunResult {
    /// CPU seconds per gigabit moved at one end; absent when nothing moved.
    pub fn cpu_seconds_per_gigabit(&self, cpu_seconds: f64) -> Option<f64> {
        let gbit = self.bytes as f64 * 8.0 / 1e9;
        (gbit > 0.0).then(|| cpu_seconds / gbit)
    }
}

/// The names of the probe series (the metric contract's `net bench` rows).
pub mod names {
    /// Goodput over the run.
    pub const THROUGHPUT: &str = "labnode_net_probe_throughput_bytes_per_second";
    /// Mean RTT under load.
    pub const RTT: &str = "labnode_net_probe_rtt_seconds";
    /// Retransmitted segments or packets.
    pub const RETRANSMITTED: &str = "labnode_net_probe_retransmitted_segments";
    /// CPU cost per Gbit, per end.
    pub const CPU_PER_GBIT: &str = "labnode_net_probe_cpu_seconds_per_gigabit";
    /// When the run's snapshot was taken.
    pub const TIMESTAMP: &str = "labnode_net_probe_timestamp_seconds";
}

/// Adds the series of one run on `path`; `taken_at` (seconds since the epoch) adds the
/// timestamp series the collector exports so a stale result shows as stale.
pub fn add_run_metrics(m: &mut Metrics, path: &str, run: &RunResult, taken_at: Option<f64>) {
    let l = [
        ("protocol", run.protocol.as_str()),
        ("congestion", run.congestion.as_str()),
        ("path", path),
    ];
    m.gauge(
        names::THROUGHPUT,
        "Goodput of the last net bench run over all streams, as the server received it.",
        Unit::BytesPerSecond,
    )
    .push(&l, run.throughput_bits_per_second / 8.0);
    if let Some(rtt) = run.rtt_seconds {
        m.gauge(
            names::RTT,
            "Mean smoothed RTT under load during the last net bench run (TCP_INFO for TCP, quinn's estimate for QUIC).",
            Unit::Seconds,
        )
        .push(&l, rtt);
    }
    m.gauge(
        names::RETRANSMITTED,
        "Segments (TCP) or packets (QUIC) the sender sent again during the last net bench run.",
        Unit::Count,
    )
    .push(&l, run.retransmitted as f64);
    for (end, cpu) in [
        ("client", run.client_cpu_seconds),
        ("server", run.server_cpu_seconds),
    ] {
        if let Some(v) = run.cpu_seconds_per_gigabit(cpu) {
            m.gauge(
                names::CPU_PER_GBIT,
                "CPU seconds per gigabit moved in the last net bench run, per end.",
                Unit::Seconds,
            )
            .push(&[l[0], l[1], l[2], ("end", end)], v);
        }
    }
    if let Some(t) = taken_at {
        m.gauge(
            names::TIMESTAMP,
            "When the last net bench run of this protocol, congestion control and path was taken.",
            Unit::Timestamp,
        )
        .push(&l, t);
    }
}

/// The series of one bench's runs (its snapshot's samples).
pub fn record_metrics(rec: &BenchRecord) -> Metrics {
    let mut m = Metrics::new();
    for run in &rec.runs {
        add_run_metrics(&mut m, &rec.path, run, None);
    }
    m
}

/// The newest run of each path, protocol and congestion control among `records` (oldest
/// first, with when each was taken), as series.
pub fn latest_metrics<'a>(records: impl IntoIterator<Item = (f64, &'a BenchRecord)>) -> Metrics {
    let mut newest: BTreeMap<(&str, &str, &str), (f64, &RunResult)> = BTreeMap::new();
    for (taken, rec) in records {
        for run in &rec.runs {
            newest.insert((&rec.path, &run.protocol, &run.congestion), (taken, run));
        }
    }
    let mut m = Metrics::new();
    for ((path, _, _), (taken, run)) in newest {
        add_run_metrics(&mut m, path, run, Some(taken));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(protocol: &str, cc: &str, bps: f64) -> RunResult {
        RunResult {
            protocol: protocol.into(),
            congestion: cc.into(),
            throughput_bits_per_second: bps,
            bytes: (bps / 8.0 * 2.0) as u64,
            seconds: 2.0,
            rtt_seconds: Some(0.04),
            min_rtt_seconds: Some(0.04),
            retransmitted: 3,
            client_cpu_seconds: 0.5,
            server_cpu_seconds: 0.25,
            gso: None,
            experimental: false,
        }
    }

    fn rec(path: &str, runs: Vec<RunResult>) -> BenchRecord {
        BenchRecord {
            path: path.into(),
            peer: "10.0.0.2:9470".into(),
            streams: 1,
            duration_seconds: 2.0,
            runs,
        }
    }

    #[test]
    fn newest_run_per_path_protocol_and_congestion_wins() {
        let a = rec(
            "direct",
            vec![run("tcp", "cubic", 1e9), run("tcp", "bbr", 2e9)],
        );
        let b = rec("direct", vec![run("tcp", "cubic", 5e8)]);
        let c = rec("wireguard", vec![run("tcp", "bbr", 3e8)]);
        let m = latest_metrics([(1.0, &a), (2.0, &b), (3.0, &c)]);
        m.validate().expect("valid");
        let tput = m
            .families()
            .iter()
            .find(|f| f.name == names::THROUGHPUT)
            .expect("family");
        let get = |p: &str, cc: &str| {
            tput.series
                .iter()
                .find(|s| {
                    s.labels.contains(&("path".into(), p.into()))
                        && s.labels.contains(&("congestion".into(), cc.into()))
                })
                .map(|s| s.value)
        };
        // Exported in bytes per second, the base unit.
        assert_eq!(
            get("direct", "cubic"),
            Some(5e8 / 8.0),
            "the newer cubic run replaces the older"
        );
        assert_eq!(
            get("direct", "bbr"),
            Some(2e9 / 8.0),
            "an older run of another controller stays"
        );
        assert_eq!(get("wireguard", "bbr"), Some(3e8 / 8.0));
        let cpu = m
            .families()
            .iter()
            .find(|f| f.name == names::CPU_PER_GBIT)
            .expect("cpu");
        assert_eq!(cpu.series.len(), 6);
        // 2 Gbit moved in the wireguard run (3e8 b/s for 2 s = 0.6 Gbit): 0.5 s / 0.6.
        let s = cpu
            .series
            .iter()
            .find(|s| {
                s.labels.contains(&("path".into(), "wireguard".into()))
                    && s.labels.contains(&("end".into(), "client".into()))
            })
            .expect("series");
        assert!((s.value - 0.5 / 0.6).abs() < 1e-9, "{}", s.value);
    }

    #[test]
    fn records_round_trip_and_refuse_unknown_fields() {
        let r = rec("direct", vec![run("quic", "bbr", 1.0)]);
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(
            serde_json::from_value::<BenchRecord>(v.clone()).expect("back"),
            r
        );
        let mut bad = v;
        bad["surprise"] = 1.into();
        assert!(serde_json::from_value::<BenchRecord>(bad).is_err());
    }

    #[test]
    fn nothing_moved_means_no_cpu_per_gigabit() {
        let mut r = run("tcp", "cubic", 0.0);
        r.bytes = 0;
        r.rtt_seconds = None;
        let m = record_metrics(&rec("direct", vec![r]));
        assert!(
            m.families()
                .iter()
                .all(|f| f.name != names::CPU_PER_GBIT && f.name != names::RTT)
        );
    }
}
