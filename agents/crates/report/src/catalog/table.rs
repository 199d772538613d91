//! The catalog's data: every group and row of the report, in order, written in the
//! grammar of [`super`].

use super::*;
use labnode_core::snapshot::RecordKind;

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

/// How a row is shown and judged: its display, which way is better and how a change is
/// worded, for the kinds of row the catalog has more than one of.
type Shown = (Display, Direction, Wording);
/// A share where more is better, changes in points ("+45 pp").
const PERCENT_UP: Shown = (D::Percent, Higher, Wording::Points);
/// A share shown for context.
const PERCENT: Shown = (D::Percent, Neutral, Wording::Points);
/// A time where less is better, changes as factors ("6.2x faster").
const TIME_DOWN: Shown = (D::Duration, Lower, FASTER);
/// A size shown for context.
const BYTES: Shown = (D::Bytes, Neutral, Wording::Percent);
/// A property a host has or lacks, yes being better.
const YES_UP: Shown = (D::YesNo, Higher, Wording::State);
/// A goodput, more being better.
const BITRATE_UP: Shown = (D::BitRate, Higher, Wording::Percent);
/// A count where more is better, both values shown.
const COUNT_UP: Shown = (D::Count, Higher, Wording::FromTo);
/// A text value (a version, a name) shown for context.
const TEXT: Shown = (D::Text, Neutral, Wording::State);

/// A row of TCP goodput on the direct path, its congestion control matched by `$congestion`.
macro_rules! tcp_direct {
    ($id:literal, $title:literal, $short:literal, $congestion:expr) => {
        row(
            $id,
            $title,
            $short,
            value(
                "labnode_net_probe_throughput_bytes_per_second",
                &[
                    ("protocol", Is("tcp")),
                    ("congestion", $congestion),
                    ("path", Is("direct")),
                ],
                Agg::Mean,
            ),
            BITRATE_UP,
        )
        .event(RecordKind::NetBench)
    };
}

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
                YES_UP,
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
                YES_UP,
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
                COUNT_UP,
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
                TEXT,
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
                TEXT,
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
                TIME_DOWN,
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
                PERCENT_UP,
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
                TIME_DOWN,
            )
            .event(RecordKind::SafeSwitch)
            .note("From the start of a switch whose health gates fail until labnode safe-switch decides to roll back."),
            row(
                "safe_switch_recover",
                "Failed switch rolled back within",
                "Recover bad switch",
                value("labnode_rollback_safe_switch_recover_seconds", &[], Agg::Max),
                TIME_DOWN,
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
                TIME_DOWN,
            )
            .event(RecordKind::RollbackDrill)
            .claim("Hours / 4-8 hours (MTTR)", "Minutes / <1 hour", "4-8x faster"),
            row(
                "rto_zfs",
                "Dataset restore from a ZFS snapshot (rollback and verify)",
                "RTO ZFS",
                value("labnode_zfs_drill_recovery_seconds", &[], Agg::Max),
                TIME_DOWN,
            )
            .event(RecordKind::ZfsDrill)
            .claim("Hours", "Minutes (snapshots)", "Significant improvement"),
            row(
                "zfs_restore_verified",
                "Restored data identical byte for byte",
                "Restore verified",
                value("labnode_zfs_drill_success", &[], Agg::Min),
                PERCENT_UP,
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
                (D::Duration, Lower, Wording::FromTo),
            )
            .note("The data a failure would lose: the age of the newest snapshot of the protected dataset that has gone longest without one.")
            .claim("1 week", "1 hour (snapshots)", "168x better"),
            row(
                "protected_datasets",
                "Datasets under a snapshot policy",
                "Protected datasets",
                value("labnode_zfs_dataset_protected", &[], Agg::Sum),
                COUNT_UP,
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
                (D::Count, Higher, Wording::Percent),
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
                (D::Factor, Higher, Wording::Percent),
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
                BYTES,
            ),
            row(
                "storage_physical",
                "Physical space it takes",
                "Physical",
                value("labnode_zfs_dataset_used_bytes", ROOT_DATASET, Agg::Sum),
                BYTES,
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
                BITRATE_UP,
            )
            .event(RecordKind::NetBench)
            .claim("~800 Mbps", "~950 Mbps (QUIC + BBR)", "19% better"),
            tcp_direct!(
                "net_congestion",
                "TCP goodput with the host's congestion control, direct path (CUBIC against BBR)",
                "TCP CC as deployed",
                Deployed(Aspect::Congestion)
            )
            .note("The congestion control alone: each side's own, on the same kind of path, without a tunnel.")
            .claim("Baseline (CUBIC)", "+15-30% (high BDP)", "Faster"),
            tcp_direct!(
                "net_tcp_cubic",
                "TCP CUBIC goodput, direct path",
                "TCP CUBIC",
                Is("cubic")
            ),
            tcp_direct!(
                "net_tcp_bbr",
                "TCP BBR goodput, direct path",
                "TCP BBR",
                Is("bbr")
            ),
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
                (D::Factor, Neutral, Wording::Percent),
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
                (D::Percent, Lower, Wording::Points),
            )
            .event(RecordKind::NetBench)
            .note("1 minus the goodput through the tunnel over the goodput of the same protocol and congestion control on the direct path."),
            row(
                "net_rtt_loaded",
                "RTT under load, TCP as deployed",
                "RTT under load",
                value("labnode_net_probe_rtt_seconds", DEPLOYED_TCP, Agg::Mean),
                (D::Duration, Lower, LOWER),
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
                (D::Count, Neutral, Wording::Percent),
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
                (D::CpuPerGigabit, Lower, Wording::Percent),
            )
            .event(RecordKind::NetBench)
            // CPU time comes in scheduler ticks over runs of a few seconds: a few percent
            // is the clock's grain, not the sender.
            .min_effect(MinEffect::Relative(0.10)),
            row(
                "congestion_control",
                "TCP congestion control in force",
                "Congestion control",
                Measure::Label {
                    sel: sel("labnode_net_congestion_control_info", &[]),
                    label: "algorithm",
                },
                TEXT,
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
                COUNT_UP,
            ),
            row(
                "gpu_utilization",
                "GPU utilization (mean over GPUs)",
                "GPU utilization",
                value("labnode_gpu_utilization_ratio", &[], Agg::Mean),
                PERCENT,
            )
            .claim("0%", "~80% (SGLang)", "In production"),
            row(
                "gpu_memory",
                "GPU memory in use (all GPUs)",
                "GPU memory",
                value("labnode_gpu_memory_used_bytes", &[], Agg::Sum),
                BYTES,
            )
            .claim("N/A", "~6GB (7B model)", "Fits in 8GB"),
            row(
                "gpu_power",
                "GPU power draw (all GPUs)",
                "GPU power",
                value("labnode_gpu_power_watts", &[], Agg::Sum),
                (D::Watts, Neutral, Wording::Percent),
            )
            .note("Mean over each sampling window."),
            row(
                "gpu_energy",
                "GPU energy used over the side's window (all GPUs)",
                "GPU energy",
                value("labnode_gpu_energy_joules_total", &[], Agg::Sum),
                (D::Energy, Neutral, Wording::Percent),
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
                PERCENT,
            )
            .claim("~30% (idle)", "~80% (Ray)", "2.6x better"),
            row(
                "memory_used",
                "RAM in use (ZFS ARC counts as used)",
                "RAM used",
                value("labnode_system_memory_used_bytes", &[], Agg::Sum),
                BYTES,
            )
            .claim("~40GB (system)", "~110GB (ZFS ARC + apps)", "Better use of 128GB"),
            row(
                "arc_size",
                "ZFS ARC size",
                "ARC size",
                value("labnode_zfs_arc_size_bytes", &[], Agg::Sum),
                BYTES,
            ),
            row(
                "arc_hit_ratio",
                "ZFS ARC hit ratio since boot",
                "ARC hits",
                Measure::Share {
                    part: sel("labnode_zfs_arc_hits_total", &[]),
                    rest: sel("labnode_zfs_arc_misses_total", &[]),
                },
                PERCENT_UP,
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
                concat!("labnode collectors up, of ", collectors_in_words!()),
                "Collectors up",
                Measure::Coverage {
                    sel: sel("labnode_collector_up", &[]),
                    label: "collector",
                    expected: COLLECTORS,
                },
                PERCENT_UP,
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
                PERCENT_UP,
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
                PERCENT_UP,
            )
            .zero_when("labnode_net_congestion_control_info")
            .note("A peer that never shook hands has byte counters but no handshake age: it counts as down. 0% when the net collector ran and found no WireGuard peer.")
            .claim("No VPN", "WireGuard", "Secure"),
            row(
                "firewall_default_deny",
                "Firewall drops what no rule accepts",
                "Default deny",
                value("labnode_net_firewall_default_deny", &[], Agg::Min),
                YES_UP,
            )
            .rate()
            .claim("Basic firewall", "Cilium + WireGuard", "Comprehensive"),
            row(
                "secrets_outside_store",
                "Secrets kept out of the Nix store and out of the repository in clear",
                "Secrets",
                Measure::OperatorOnly,
                YES_UP,
            )
            .rate()
            .note("labnode cannot prove a negative about every file: an operator enters it after review (e.g. sops-nix secrets decrypted to /run/secrets only).")
            .claim("Manual", "sops-nix", "Proactive security"),
        ],
    },
];
