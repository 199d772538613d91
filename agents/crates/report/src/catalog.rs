//! The metric catalog: every row of the report, as data, in one place.
//!
//! Each row names the series it reads (names and labels from the metric contract,
//! `docs/metrics.md`), how one snapshot's series become one value, the unit and how it is
//! shown, which direction is better, and how a change is worded. Groups follow the original claims table (the before/after table labnode was asked to fill, docs/claims.md).

use labnode_core::Unit;
use labnode_core::snapshot::RecordKind;

/// A group of rows: one section of the report.
#[derive(Debug)]
pub struct Group {
    /// Stable identifier, e.g. `rollback`.
    pub id: &'static str,
    /// Section title.
    pub title: &'static str,
    /// Where the original claims table makes these claims.
    pub claims_source: &'static str,
    /// The rows.
    pub rows: &'static [Row],
}

/// One row of the report.
#[derive(Debug)]
pub struct Row {
    /// Stable identifier (snake_case): the key in JSON, the operator file and the gate.
    pub id: &'static str,
    /// What the row shows, as a reader sees it.
    pub title: &'static str,
    /// A short label for charts.
    pub short: &'static str,
    /// How the value comes about, in a sentence (the metric expression is added to it).
    pub note: &'static str,
    /// How one snapshot's series become one value.
    pub measure: Measure,
    /// The base unit of the value.
    pub unit: Unit,
    /// How values are shown.
    pub display: Display,
    /// Which way is better.
    pub direction: Direction,
    /// How a change is worded.
    pub wording: Wording,
    /// How the values of several snapshots are summarised.
    pub summary: Summary,
    /// Only snapshots that hold a record of this kind count (drills and probes): the
    /// collectors export the newest record again, which must not count twice.
    pub event: Option<RecordKind>,
    /// When the measure finds nothing but a snapshot holds this metric, the value is 0
    /// (the collector ran and found none, e.g. no WireGuard peer).
    pub zero_when: Option<&'static str>,
    /// The original claim for this row, shown beside ours with `--claims`.
    pub claimed: Option<Claim>,
}

/// What the original claims table claimed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Claim {
    /// The claimed "before".
    pub before: &'static str,
    /// The claimed "after".
    pub after: &'static str,
    /// The claimed improvement.
    pub improvement: &'static str,
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More is better (throughput, success rate).
    HigherIsBetter,
    /// Less is better (times, ages, overheads).
    LowerIsBetter,
    /// Shown for context, never judged or gated (utilization, versions).
    Neutral,
}

/// How a change between two values is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    /// "6.2x faster" / "2.5x slower": the factor, with these words for better and worse.
    Factor {
        /// Word for the better direction, e.g. `faster`.
        better: &'static str,
        /// Word for the worse direction, e.g. `slower`.
        worse: &'static str,
    },
    /// "+19%" / "-12%": the relative change.
    Percent,
    /// "1 week → 1 h": both values, for changes of several orders of magnitude.
    FromTo,
    /// "+45 pp": percentage points, for rates and shares.
    Points,
    /// "no → yes", "cubic → bbr": a change of state.
    State,
}

/// How values of several snapshots become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Summary {
    /// Median, with p95 and the range beside it.
    Median,
    /// Mean of 0/1 outcomes: a rate (success rate, share of snapshots).
    Rate,
    /// The most frequent text value.
    Mode,
    /// A counter's increase over the side's window (see [`crate::eval::increase`]): one
    /// value per side, not one per observation.
    Increase,
}

/// How a value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Display {
    /// Seconds as "850 ms", "4.2 s", "12 min", "3.5 h", "2 days", "1 week".
    Duration,
    /// Bytes in IEC units: "7.4 GiB".
    Bytes,
    /// Bits per second in SI units: "956 Mbit/s".
    BitRate,
    /// A ratio 0..1 as a percentage: "80%".
    Percent,
    /// A ratio as a factor: "1.67x".
    Factor,
    /// Watts: "48.3 W".
    Watts,
    /// Energy, in joules, shown in watt-hours: "41.2 Wh".
    Energy,
    /// A plain number.
    Count,
    /// CPU seconds per gigabit moved.
    CpuPerGigabit,
    /// 1 or 0 as "yes" or "no".
    YesNo,
    /// A text value (a label's value).
    Text,
}

/// How one snapshot's samples become the row's value.
#[derive(Debug, Clone, Copy)]
pub enum Measure {
    /// The selected series, aggregated.
    Value {
        /// Which series.
        sel: Sel,
        /// How several series become one value.
        agg: Agg,
    },
    /// `num / den`: with `on` empty, the sums; otherwise the mean of the ratios of series
    /// pairs that agree on the `on` labels. `complement` gives `1 - ratio` (a cost).
    Ratio {
        /// Numerator series.
        num: Sel,
        /// Denominator series.
        den: Sel,
        /// Labels pairing numerator and denominator series.
        on: &'static [&'static str],
        /// Report `1 - ratio` instead.
        complement: bool,
    },
    /// `part / (part + rest)`, e.g. cache hits over hits and misses.
    Share {
        /// The part.
        part: Sel,
        /// The rest.
        rest: Sel,
    },
    /// The share of selected series whose value passes `test`.
    Fraction {
        /// Which series.
        sel: Sel,
        /// The test.
        test: Test,
        /// Count the series of this selector instead, each passing when a `sel` series
        /// paired with it on these labels passes `test`: one without such a series fails
        /// (e.g. a WireGuard peer with byte counters but no handshake age: never shook hands).
        over: Option<(Sel, &'static [&'static str])>,
    },
    /// Distinct values of `label` among selected series with value 1, over `expected`.
    Coverage {
        /// Which series.
        sel: Sel,
        /// The label counted.
        label: &'static str,
        /// The values expected.
        expected: &'static [&'static str],
    },
    /// 1 if a selected series has the value 1.
    Flag {
        /// Which series.
        sel: Sel,
    },
    /// The value of `label` on the selected series with the value 1 (an info series).
    Label {
        /// Which series.
        sel: Sel,
        /// The label shown.
        label: &'static str,
    },
    /// The first of these measures that finds a value (a drill snapshot's name first, the
    /// collector's name for the same result second).
    FirstOf(&'static [Measure]),
    /// labnode cannot measure this; only an operator-entered value can fill it.
    OperatorOnly,
}

/// A test on a series' value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// Less than.
    Below(f64),
    /// Equal.
    Equals(f64),
}

/// How several series become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Largest.
    Max,
    /// Smallest.
    Min,
}

/// A series selector: a metric name and label matchers.
#[derive(Debug, Clone, Copy)]
pub struct Sel {
    /// The metric name.
    pub metric: &'static str,
    /// Label matchers; labels not named are free.
    pub labels: &'static [(&'static str, Match)],
    /// Keep only series whose labels `on` equal those of a series of `metric` whose value
    /// is 1 (e.g. only protected datasets).
    pub only_where: Option<(&'static str, &'static [&'static str])>,
}

/// A label matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Equal to.
    Is(&'static str),
    /// One of.
    In(&'static [&'static str]),
    /// None of (an absent label matches).
    NotIn(&'static [&'static str]),
    /// Present and not empty.
    NonEmpty,
    /// Equal to another label of the same series.
    SameAs(&'static str),
    /// Equal to what the side's host runs: its congestion control, its path to peers.
    Deployed(Aspect),
}

/// What a host runs, as read from its own observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aspect {
    /// The TCP congestion control: the only one the side's benches ran, else the one in
    /// force (the net collector's `labnode_net_congestion_control_info`).
    Congestion,
    /// The path to peers: `wireguard` where the benches measured a tunnel, else `direct`.
    Path,
}

const fn sel(metric: &'static str, labels: &'static [(&'static str, Match)]) -> Sel {
    Sel {
        metric,
        labels,
        only_where: None,
    }
}

const fn value(
    metric: &'static str,
    labels: &'static [(&'static str, Match)],
    agg: Agg,
) -> Measure {
    Measure::Value {
        sel: sel(metric, labels),
        agg,
    }
}

const fn protected(metric: &'static str) -> Sel {
    Sel {
        metric,
        labels: &[],
        only_where: Some(("labnode_zfs_dataset_protected", &["pool", "dataset"])),
    }
}

/// A row with the common defaults: median summary, no event, no zero fallback, no claim.
const fn row(
    id: &'static str,
    title: &'static str,
    short: &'static str,
    measure: Measure,
    display: Display,
    direction: Direction,
    wording: Wording,
) -> Row {
    Row {
        id,
        title,
        short,
        note: "",
        measure,
        unit: base_unit(display),
        display,
        direction,
        wording,
        summary: Summary::Median,
        event: None,
        zero_when: None,
        claimed: None,
    }
}

const fn base_unit(d: Display) -> Unit {
    match d {
        Display::Duration | Display::CpuPerGigabit => Unit::Seconds,
        Display::Bytes => Unit::Bytes,
        Display::BitRate => Unit::BytesPerSecond,
        Display::Percent | Display::Factor => Unit::Ratio,
        Display::Watts => Unit::Watts,
        Display::Energy => Unit::Joules,
        Display::Count => Unit::Count,
        Display::YesNo | Display::Text => Unit::Info,
    }
}

impl Row {
    const fn note(mut self, note: &'static str) -> Self {
        self.note = note;
        self
    }
    const fn event(mut self, kind: RecordKind) -> Self {
        self.event = Some(kind);
        self
    }
    const fn rate(mut self) -> Self {
        self.summary = Summary::Rate;
        self
    }
    const fn increase(mut self) -> Self {
        self.summary = Summary::Increase;
        self
    }
    const fn mode(mut self) -> Self {
        self.summary = Summary::Mode;
        self
    }
    const fn zero_when(mut self, metric: &'static str) -> Self {
        self.zero_when = Some(metric);
        self
    }
    const fn claim(
        mut self,
        before: &'static str,
        after: &'static str,
        improvement: &'static str,
    ) -> Self {
        self.claimed = Some(Claim {
            before,
            after,
            improvement,
        });
        self
    }
}

use Direction::{HigherIsBetter as Higher, LowerIsBetter as Lower, Neutral};
use Display as D;
use Match::{Deployed, In, Is, NonEmpty, NotIn, SameAs};

const FASTER: Wording = Wording::Factor {
    better: "faster",
    worse: "slower",
};
const LOWER: Wording = Wording::Factor {
    better: "lower",
    worse: "higher",
};

/// The series of the TCP configuration each side's host runs: a stock host's CUBIC without
/// a tunnel, labnode's BBR through WireGuard, or the same on both sides when a release is
/// compared with the one before it.
const DEPLOYED_TCP: &[(&str, Match)] = &[
    ("protocol", Is("tcp")),
    ("congestion", Deployed(Aspect::Congestion)),
    ("path", Deployed(Aspect::Path)),
];
const ROOT_DATASET: &[(&str, Match)] = &[("dataset", SameAs("pool"))];

/// The labnode collectors, for monitoring coverage.
pub const COLLECTORS: &[&str] = &["system", "gpu", "zfs", "net", "rollback"];

/// Every group and row of the report, in order.
pub static CATALOG: &[Group] = &[
    Group {
        id: "configuration",
        title: "Configuration",
        claims_source: "Phase 0: Configuration Management; Metrics Summary: Reproducibility",
        rows: &[
            row(
                "nixos",
                "Declarative system (NixOS)",
                "NixOS",
                Measure::Flag {
                    sel: sel("labnode_system_os_info", &[("id", Is("nixos"))]),
                },
                D::YesNo,
                Higher,
                Wording::State,
            )
            .rate()
            .zero_when("labnode_system_os_info")
            .note("The running operating system is NixOS, built from a declarative configuration.")
            .claim(
                "Ad-hoc scripts, manual config",
                "Declarative NixOS config",
                "Reproducible",
            ),
            row(
                "flake_revision",
                "System built from a recorded flake revision",
                "Flake revision",
                Measure::Flag {
                    sel: sel(
                        "labnode_system_nixos_system_info",
                        &[("flake_revision", NonEmpty)],
                    ),
                },
                D::YesNo,
                Higher,
                Wording::State,
            )
            .rate()
            .zero_when("labnode_system_os_info")
            .note("The running system names the flake revision it was built from (/etc/labnode/flake-revision), so it can be rebuilt bit for bit.")
            .claim("0% reproducible", "100% (NixOS)", "0% → 100%"),
            row(
                "generations",
                "System generations a rollback can reach",
                "Generations",
                value("labnode_rollback_profile_generations", &[], Agg::Max),
                D::Count,
                Higher,
                Wording::FromTo,
            )
            .note("Generations of the system profile present on disk."),
            row(
                "os",
                "Operating system",
                "OS",
                Measure::Label {
                    sel: sel("labnode_system_os_info", &[]),
                    label: "pretty_name",
                },
                D::Text,
                Neutral,
                Wording::State,
            )
            .mode(),
            row(
                "kernel",
                "Kernel",
                "Kernel",
                Measure::Label {
                    sel: sel("labnode_system_kernel_info", &[]),
                    label: "release",
                },
                D::Text,
                Neutral,
                Wording::State,
            )
            .mode(),
        ],
    },
    Group {
        id: "rollback",
        title: "Rollback",
        claims_source: "Phase 0: Rollback Time; Operational Excellence: Rollback Success Rate",
        rows: &[
            row(
                "rollback_time",
                "Rollback: switch to the previous generation",
                "Rollback",
                value(
                    "labnode_rollback_phase_seconds",
                    &[
                        ("direction", Is("rollback")),
                        ("phase", In(&["profile_flip", "activation"])),
                    ],
                    Agg::Sum,
                ),
                D::Duration,
                Lower,
                FASTER,
            )
            .event(RecordKind::RollbackDrill)
            .note("Profile flip plus activation of the previous generation, per drill.")
            .claim(
                "30+ minutes (manual)",
                "<5 minutes (nixos-rebuild --rollback)",
                "6x faster",
            ),
            row(
                "rollback_success",
                "Rollback success rate",
                "Rollback success",
                Measure::FirstOf(&[
                    value(
                        "labnode_rollback_success",
                        &[("direction", Is("rollback"))],
                        Agg::Min,
                    ),
                    value("labnode_rollback_last_success", &[], Agg::Min),
                ]),
                D::Percent,
                Higher,
                Wording::Points,
            )
            .event(RecordKind::RollbackDrill)
            .rate()
            .note("Share of drills in which the previous generation came up with every health gate green.")
            .claim("~50% (manual)", "~95% (NixOS + ZFS)", "More reliable"),
            row(
                "safe_switch_detect",
                "Failed switch detected after",
                "Detect bad switch",
                value("labnode_rollback_safe_switch_detect_seconds", &[], Agg::Max),
                D::Duration,
                Lower,
                FASTER,
            )
            .event(RecordKind::SafeSwitch)
            .note("From the start of a switch whose health gates fail until labnode safe-switch decides to roll back."),
            row(
                "safe_switch_recover",
                "Failed switch rolled back within",
                "Recover bad switch",
                value("labnode_rollback_safe_switch_recover_seconds", &[], Agg::Max),
                D::Duration,
                Lower,
                FASTER,
            )
            .event(RecordKind::SafeSwitch)
            .note("From that decision until the previous generation is back with every gate green."),
        ],
    },
    Group {
        id: "recovery",
        title: "Recovery time (RTO)",
        claims_source: "Phase 3: Backup & Disaster Recovery, RTO; Operational Excellence: Downtime (MTTR)",
        rows: &[
            row(
                "rto_nixos",
                "System recovery by rollback, until every health gate is green",
                "RTO NixOS",
                value(
                    "labnode_rollback_recovery_seconds",
                    &[("direction", Is("rollback"))],
                    Agg::Max,
                ),
                D::Duration,
                Lower,
                FASTER,
            )
            .event(RecordKind::RollbackDrill)
            .claim("Hours / 4-8 hours (MTTR)", "Minutes / <1 hour", "4-8x faster"),
            row(
                "rto_zfs",
                "Dataset restore from a ZFS snapshot (rollback and verify)",
                "RTO ZFS",
                value("labnode_zfs_drill_recovery_seconds", &[], Agg::Max),
                D::Duration,
                Lower,
                FASTER,
            )
            .event(RecordKind::ZfsDrill)
            .claim("Hours", "Minutes (snapshots)", "Significant improvement"),
            row(
                "zfs_restore_verified",
                "Restored data identical byte for byte",
                "Restore verified",
                value("labnode_zfs_drill_success", &[], Agg::Min),
                D::Percent,
                Higher,
                Wording::Points,
            )
            .event(RecordKind::ZfsDrill)
            .rate()
            .claim("None (no restore tests)", "Monthly restore tests", "Reliable recovery"),
        ],
    },
    Group {
        id: "rpo",
        title: "Recovery point (RPO)",
        claims_source: "Phase 3: Backup & Disaster Recovery, RPO and Backup Frequency",
        rows: &[
            row(
                "rpo",
                "Newest snapshot age, worst protected dataset (RPO)",
                "RPO",
                Measure::Value {
                    sel: protected("labnode_zfs_snapshot_newest_age_seconds"),
                    agg: Agg::Max,
                },
                D::Duration,
                Lower,
                Wording::FromTo,
            )
            .note("The data a failure would lose: the age of the newest snapshot of the protected dataset that has gone longest without one.")
            .claim("1 week", "1 hour (snapshots)", "168x better"),
            row(
                "protected_datasets",
                "Datasets under a snapshot policy",
                "Protected datasets",
                value("labnode_zfs_dataset_protected", &[], Agg::Sum),
                D::Count,
                Higher,
                Wording::FromTo,
            )
            .claim("No snapshots, risky", "ZFS snapshots (hourly/daily)", "Data protection"),
            row(
                "snapshots_kept",
                "Snapshots kept of protected datasets",
                "Snapshots kept",
                Measure::Value {
                    sel: protected("labnode_zfs_snapshots"),
                    agg: Agg::Sum,
                },
                D::Count,
                Higher,
                Wording::Percent,
            )
            .claim("1 month", "90 days (daily) + 1 year (monthly)", "Better RPO/RTO"),
        ],
    },
    Group {
        id: "storage",
        title: "Storage efficiency",
        claims_source: "Overall: Hardware Utilization, Storage Efficiency",
        rows: &[
            row(
                "storage_ratio",
                "Logical bytes per physical byte (compression)",
                "Logical / physical",
                Measure::Ratio {
                    num: sel("labnode_zfs_dataset_logical_used_bytes", ROOT_DATASET),
                    den: sel("labnode_zfs_dataset_used_bytes", ROOT_DATASET),
                    on: &[],
                    complement: false,
                },
                D::Factor,
                Higher,
                Wording::Percent,
            )
            .note("Logical over physical bytes of each pool's root dataset (children included).")
            .claim("~20TB raw", "~12TB effective (compression)", "40% space savings"),
            row(
                "storage_logical",
                "Logical data stored",
                "Logical",
                value(
                    "labnode_zfs_dataset_logical_used_bytes",
                    ROOT_DATASET,
                    Agg::Sum,
                ),
                D::Bytes,
                Neutral,
                Wording::Percent,
            ),
            row(
                "storage_physical",
                "Physical space it takes",
                "Physical",
                value("labnode_zfs_dataset_used_bytes", ROOT_DATASET, Agg::Sum),
                D::Bytes,
                Neutral,
                Wording::Percent,
            ),
        ],
    },
    Group {
        id: "network",
        title: "Network",
        claims_source: "Phase 0: Networking; Phase 2: Network Optimization (BBR), QUIC/HTTP/3",
        rows: &[
            row(
                "net_deployed",
                "TCP goodput as deployed: the host's congestion control, through its tunnel if it has one",
                "TCP as deployed",
                value(
                    "labnode_net_probe_throughput_bytes_per_second",
                    DEPLOYED_TCP,
                    Agg::Mean,
                ),
                D::BitRate,
                Higher,
                Wording::Percent,
            )
            .event(RecordKind::NetBench)
            .claim("~800 Mbps", "~950 Mbps (QUIC + BBR)", "19% better"),
            row(
                "net_congestion",
                "TCP goodput with the host's congestion control, direct path (CUBIC against BBR)",
                "TCP CC as deployed",
                value(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[
                        ("protocol", Is("tcp")),
                        ("congestion", Deployed(Aspect::Congestion)),
                        ("path", Is("direct")),
                    ],
                    Agg::Mean,
                ),
                D::BitRate,
                Higher,
                Wording::Percent,
            )
            .event(RecordKind::NetBench)
            .note("The congestion control alone: each side's own, on the same kind of path, without a tunnel.")
            .claim("Baseline (CUBIC)", "+15-30% (high BDP)", "Faster"),
            row(
                "net_tcp_cubic",
                "TCP CUBIC goodput, direct path",
                "TCP CUBIC",
                value(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[
                        ("protocol", Is("tcp")),
                        ("congestion", Is("cubic")),
                        ("path", Is("direct")),
                    ],
                    Agg::Mean,
                ),
                D::BitRate,
                Higher,
                Wording::Percent,
            )
            .event(RecordKind::NetBench),
            row(
                "net_tcp_bbr",
                "TCP BBR goodput, direct path",
                "TCP BBR",
                value(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[
                        ("protocol", Is("tcp")),
                        ("congestion", Is("bbr")),
                        ("path", Is("direct")),
                    ],
                    Agg::Mean,
                ),
                D::BitRate,
                Higher,
                Wording::Percent,
            )
            .event(RecordKind::NetBench),
            row(
                "net_quic_vs_tcp",
                "QUIC goodput over TCP goodput, same congestion control, direct path",
                "QUIC / TCP",
                Measure::Ratio {
                    num: sel(
                        "labnode_net_probe_throughput_bytes_per_second",
                        &[("protocol", Is("quic")), ("path", Is("direct"))],
                    ),
                    den: sel(
                        "labnode_net_probe_throughput_bytes_per_second",
                        &[("protocol", Is("tcp")), ("path", Is("direct"))],
                    ),
                    on: &["congestion"],
                    complement: false,
                },
                D::Factor,
                Neutral,
                Wording::Percent,
            )
            .event(RecordKind::NetBench)
            .note("A comparison within each side, shown for context: it falls when TCP gets faster as much as when QUIC gets slower.")
            .claim("~800 Mbps (TCP)", "~950 Mbps (QUIC)", "~19% improvement"),
            row(
                "net_wireguard_cost",
                "Goodput lost to the WireGuard tunnel, against the direct path",
                "WireGuard cost",
                Measure::Ratio {
                    num: sel(
                        "labnode_net_probe_throughput_bytes_per_second",
                        &[("path", Is("wireguard"))],
                    ),
                    den: sel(
                        "labnode_net_probe_throughput_bytes_per_second",
                        &[("path", Is("direct"))],
                    ),
                    on: &["protocol", "congestion"],
                    complement: true,
                },
                D::Percent,
                Lower,
                Wording::Points,
            )
            .event(RecordKind::NetBench)
            .note("1 minus the goodput through the tunnel over the goodput of the same protocol and congestion control on the direct path."),
            row(
                "net_rtt_loaded",
                "RTT under load, TCP as deployed",
                "RTT under load",
                value("labnode_net_probe_rtt_seconds", DEPLOYED_TCP, Agg::Mean),
                D::Duration,
                Lower,
                LOWER,
            )
            .event(RecordKind::NetBench)
            .claim("Variable (CUBIC)", "More stable (BBR)", "Consistent"),
            row(
                "net_retransmits",
                "Segments retransmitted during the run, TCP as deployed",
                "Retransmits",
                value(
                    "labnode_net_probe_retransmitted_segments",
                    DEPLOYED_TCP,
                    Agg::Sum,
                ),
                D::Count,
                Neutral,
                Wording::Percent,
            )
            .event(RecordKind::NetBench)
            .note("A count, shown for context: it grows with the data sent, so on a lossy path a sender that moves more retransmits more at the same loss rate."),
            row(
                "net_cpu_per_gbit",
                "Sender CPU per gigabit, TCP as deployed",
                "CPU per Gbit",
                Measure::Value {
                    sel: Sel {
                        metric: "labnode_net_probe_cpu_seconds_per_gigabit",
                        labels: &[
                            ("protocol", Is("tcp")),
                            ("congestion", Deployed(Aspect::Congestion)),
                            ("path", Deployed(Aspect::Path)),
                            ("end", Is("client")),
                        ],
                        only_where: None,
                    },
                    agg: Agg::Mean,
                },
                D::CpuPerGigabit,
                Lower,
                Wording::Percent,
            )
            .event(RecordKind::NetBench),
            row(
                "congestion_control",
                "TCP congestion control in force",
                "Congestion control",
                Measure::Label {
                    sel: sel("labnode_net_congestion_control_info", &[]),
                    label: "algorithm",
                },
                D::Text,
                Neutral,
                Wording::State,
            )
            .mode(),
        ],
    },
    Group {
        id: "gpu",
        title: "GPU",
        claims_source: "Overall: Hardware Utilization, GPU Utilization; Phase 2: GPU Optimization",
        rows: &[
            row(
                "gpu_devices",
                "GPUs the driver sees",
                "GPUs",
                value("labnode_gpu_devices", &[], Agg::Max),
                D::Count,
                Higher,
                Wording::FromTo,
            ),
            row(
                "gpu_utilization",
                "GPU utilization (mean over GPUs)",
                "GPU utilization",
                value("labnode_gpu_utilization_ratio", &[], Agg::Mean),
                D::Percent,
                Neutral,
                Wording::Points,
            )
            .claim("0%", "~80% (SGLang)", "In production"),
            row(
                "gpu_memory",
                "GPU memory in use (all GPUs)",
                "GPU memory",
                value("labnode_gpu_memory_used_bytes", &[], Agg::Sum),
                D::Bytes,
                Neutral,
                Wording::Percent,
            )
            .claim("N/A", "~6GB (7B model)", "Fits in 8GB"),
            row(
                "gpu_power",
                "GPU power draw (all GPUs)",
                "GPU power",
                value("labnode_gpu_power_watts", &[], Agg::Sum),
                D::Watts,
                Neutral,
                Wording::Percent,
            )
            .note("Mean over each sampling window."),
            row(
                "gpu_energy",
                "GPU energy used over the side's window (all GPUs)",
                "GPU energy",
                value("labnode_gpu_energy_joules_total", &[], Agg::Sum),
                D::Energy,
                Neutral,
                Wording::Percent,
            )
            .increase()
            .note("The counter's increase, resets counted, summed over GPUs: from Prometheus over the range; from snapshots what they hold: the GPU's own counter (source nvml) from the first snapshot to the last, the integral of sampled power (source integrated, which each collect starts at 0) over each collect's sampling window, added up."),
        ],
    },
    Group {
        id: "cpu_memory",
        title: "CPU and memory",
        claims_source: "Overall: Hardware Utilization, CPU Utilization and RAM Utilization",
        rows: &[
            row(
                "cpu_busy",
                "CPU busy (all modes but idle and iowait)",
                "CPU busy",
                value(
                    "labnode_system_cpu_utilization_ratio",
                    &[("mode", NotIn(&["idle", "iowait"]))],
                    Agg::Sum,
                ),
                D::Percent,
                Neutral,
                Wording::Points,
            )
            .claim("~30% (idle)", "~80% (Ray)", "2.6x better"),
            row(
                "memory_used",
                "RAM in use (ZFS ARC counts as used)",
                "RAM used",
                value("labnode_system_memory_used_bytes", &[], Agg::Sum),
                D::Bytes,
                Neutral,
                Wording::Percent,
            )
            .claim("~40GB (system)", "~110GB (ZFS ARC + apps)", "Better use of 128GB"),
            row(
                "arc_size",
                "ZFS ARC size",
                "ARC size",
                value("labnode_zfs_arc_size_bytes", &[], Agg::Sum),
                D::Bytes,
                Neutral,
                Wording::Percent,
            ),
            row(
                "arc_hit_ratio",
                "ZFS ARC hit ratio since boot",
                "ARC hits",
                Measure::Share {
                    part: sel("labnode_zfs_arc_hits_total", &[]),
                    rest: sel("labnode_zfs_arc_misses_total", &[]),
                },
                D::Percent,
                Higher,
                Wording::Points,
            ),
        ],
    },
    Group {
        id: "monitoring",
        title: "Monitoring coverage",
        claims_source: "Phase 0: Monitoring; Operational Excellence: Observability",
        rows: &[
            row(
                "collectors_up",
                "labnode collectors up, of system, gpu, zfs, net and rollback",
                "Collectors up",
                Measure::Coverage {
                    sel: sel("labnode_collector_up", &[]),
                    label: "collector",
                    expected: COLLECTORS,
                },
                D::Percent,
                Higher,
                Wording::Points,
            )
            .claim("None or basic (10%)", "Prometheus + Grafana + Alertmanager (100%)", "Full observability"),
            row(
                "prometheus_targets_up",
                "Prometheus scrape targets up",
                "Targets up",
                Measure::Fraction {
                    sel: sel("up", &[]),
                    test: Test::Equals(1.0),
                    over: None,
                },
                D::Percent,
                Higher,
                Wording::Points,
            )
            .note("Read from Prometheus (`--prometheus`); a snapshot has no scrape targets."),
        ],
    },
    Group {
        id: "security",
        title: "Security posture",
        claims_source: "Phase 0: Networking, Security; Key Wins: Security Improvements",
        rows: &[
            row(
                "wireguard_up",
                "WireGuard peers with a handshake in the last 3 minutes",
                "WireGuard up",
                Measure::Fraction {
                    sel: sel("labnode_net_wireguard_peer_handshake_age_seconds", &[]),
                    test: Test::Below(180.0),
                    over: Some((
                        sel("labnode_net_wireguard_peer_transmit_bytes_total", &[]),
                        &["interface", "peer"],
                    )),
                },
                D::Percent,
                Higher,
                Wording::Points,
            )
            .zero_when("labnode_net_congestion_control_info")
            .note("A peer that never shook hands has byte counters but no handshake age: it counts as down. 0% when the net collector ran and found no WireGuard peer.")
            .claim("No VPN", "WireGuard", "Secure"),
            row(
                "firewall_default_deny",
                "Firewall drops what no rule accepts",
                "Default deny",
                value("labnode_net_firewall_default_deny", &[], Agg::Min),
                D::YesNo,
                Higher,
                Wording::State,
            )
            .rate()
            .claim("Basic firewall", "Cilium + WireGuard", "Comprehensive"),
            row(
                "secrets_outside_store",
                "Secrets kept out of the Nix store and out of the repository in clear",
                "Secrets",
                Measure::OperatorOnly,
                D::YesNo,
                Higher,
                Wording::State,
            )
            .rate()
            .note("labnode cannot prove a negative about every file: an operator enters it after review (e.g. sops-nix secrets decrypted to /run/secrets only).")
            .claim("Manual", "sops-nix", "Proactive security"),
        ],
    },
];

/// Every row, in report order, with its group.
pub fn rows() -> impl Iterator<Item = (&'static Group, &'static Row)> {
    CATALOG
        .iter()
        .flat_map(|g| g.rows.iter().map(move |r| (g, r)))
}

/// The row with this id.
pub fn find(id: &str) -> Option<&'static Row> {
    rows().map(|(_, r)| r).find(|r| r.id == id)
}

impl Measure {
    /// Every selector of the measure.
    pub fn selectors<'a>(&'a self, out: &mut Vec<&'a Sel>) {
        match self {
            Measure::Value { sel: s, .. }
            | Measure::Fraction {
                sel: s, over: None, ..
            }
            | Measure::Coverage { sel: s, .. }
            | Measure::Flag { sel: s }
            | Measure::Label { sel: s, .. } => out.push(s),
            Measure::Ratio { num, den, .. } => out.extend([num, den]),
            Measure::Fraction {
                sel: s,
                over: Some((o, _)),
                ..
            } => out.extend([s, o]),
            Measure::Share { part, rest } => out.extend([part, rest]),
            Measure::FirstOf(ms) => {
                for m in *ms {
                    m.selectors(out);
                }
            }
            Measure::OperatorOnly => {}
        }
    }

    /// Every metric name the measure reads.
    pub fn metrics(&self, out: &mut Vec<&'static str>) {
        let mut sels = Vec::new();
        self.selectors(&mut sels);
        for s in sels {
            out.push(s.metric);
            if let Some((m, _)) = s.only_where {
                out.push(m);
            }
        }
    }
}

impl Measure {
    /// Whether a selector depends on what the side's host runs.
    pub fn uses_deployed(&self) -> bool {
        self.uses(Aspect::Congestion) || self.uses(Aspect::Path)
    }

    /// Whether a selector depends on this aspect of what the side's host runs.
    pub fn uses(&self, aspect: Aspect) -> bool {
        let mut sels = Vec::new();
        self.selectors(&mut sels);
        sels.iter()
            .any(|s| s.labels.iter().any(|(_, m)| *m == Match::Deployed(aspect)))
    }
}

/// Every metric name the catalog reads, sorted, without duplicates.
pub fn metric_names() -> Vec<&'static str> {
    let mut out = Vec::new();
    for (_, r) in rows() {
        r.measure.metrics(&mut out);
        out.extend(r.zero_when);
    }
    out.extend(WATERFALL_METRICS);
    out.sort_unstable();
    out.dedup();
    out
}

/// The metrics the rollback waterfall reads.
pub const WATERFALL_METRICS: &[&str] = &[
    "labnode_rollback_phase_seconds",
    "labnode_rollback_recovery_seconds",
];

/// The rollback phases in the order they happen (the metric contract's `phase` values).
pub const ROLLBACK_PHASES: &[&str] =
    &["profile_flip", "activation", "units_settled", "gates_green"];

/// The drill directions.
pub const ROLLBACK_DIRECTIONS: &[&str] = &["rollback", "rollforward"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, r) in rows() {
            assert!(seen.insert(r.id), "duplicate row id {}", r.id);
            assert!(
                r.id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                r.id
            );
        }
        let mut groups = std::collections::BTreeSet::new();
        for g in CATALOG {
            assert!(groups.insert(g.id), "duplicate group id {}", g.id);
        }
    }

    #[test]
    fn summaries_fit_their_displays() {
        for (_, r) in rows() {
            match r.display {
                Display::Text => assert_eq!(r.summary, Summary::Mode, "{}", r.id),
                Display::YesNo => assert_eq!(r.summary, Summary::Rate, "{}", r.id),
                _ => assert_ne!(r.summary, Summary::Mode, "{}", r.id),
            }
            if r.wording == Wording::State {
                assert!(
                    matches!(r.display, Display::Text | Display::YesNo),
                    "{}",
                    r.id
                );
            }
        }
    }

    #[test]
    fn every_metric_is_in_the_contract() {
        // The metric contract (docs/metrics.md) lists every series of every collector; every
        // name the catalog reads must be in it. The package's source fileset carries the
        // file, so this runs in the Nix build as well.
        // Read where cargo runs the test, not where it was compiled: a target directory shared
        // by two checkouts must not read the other's file.
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let path = &format!("{dir}/../../../docs/metrics.md");
        let contract = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("the metric contract {path}: {e}"));
        let documented = |name: &str| {
            let quoted = format!("`{name}`");
            let braced = format!("`{name}{{");
            if contract.contains(&quoted) || contract.contains(&braced) {
                return true;
            }
            // `labnode_zfs_pool_{size,allocated,free}_bytes`-style families, and the
            // `labnode_gpu_memory_used_bytes`, `_memory_total_bytes` style: a suffix after a
            // full name of the same row replaces that name's tail.
            contract.lines().any(|line| {
                let mut full: Vec<String> = Vec::new();
                line.split('`').skip(1).step_by(2).any(|tok| {
                    let names = expand(tok);
                    if tok.starts_with('_') {
                        return full.iter().any(|f| {
                            f.match_indices('_').any(|(i, _)| {
                                names.iter().any(|n| format!("{}{n}", &f[..i]) == name)
                            })
                        });
                    }
                    if tok.starts_with("labnode_") {
                        full = names.clone();
                    }
                    names.iter().any(|n| n == name)
                })
            })
        };
        // The check can fail: a name in no table is caught.
        assert!(!documented("labnode_zfs_dataset_made_up_bytes"));
        assert!(documented("labnode_zfs_arc_hits_total"));
        assert!(documented("labnode_zfs_dataset_logical_used_bytes"));
        assert!(documented("labnode_gpu_memory_total_bytes"));
        assert!(!documented("labnode_gpu_total_bytes_memory"));
        for name in metric_names() {
            if name == "up" {
                continue; // Prometheus's own
            }
            assert!(documented(name), "{name} is in no metric table");
        }
    }

    /// `a_{b,c}_d` -> `a_b_d`, `a_c_d`; `a{labels}` -> `a`; `_x` suffix forms are left.
    fn expand(tok: &str) -> Vec<String> {
        let tok = tok.trim();
        match (tok.find('{'), tok.find('}')) {
            (Some(i), Some(j)) if i < j => {
                let inner = &tok[i + 1..j];
                if inner.contains('=') || inner.contains(',') && inner.contains(' ') {
                    return vec![tok[..i].to_owned()];
                }
                if tok[..i].ends_with('_') {
                    inner
                        .split(',')
                        .map(|p| format!("{}{}{}", &tok[..i], p, &tok[j + 1..]))
                        .collect()
                } else {
                    vec![tok[..i].to_owned()]
                }
            }
            _ => vec![tok.to_owned()],
        }
    }
}
