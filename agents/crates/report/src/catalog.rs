//! The metric catalog's grammar: what a row of the report is, and how its measure reads
//! series. The rows themselves, as data, are in one place, `catalog/table.rs` ([`CATALOG`]).
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
    /// The smallest change the row calls better or worse, however clear of the noise.
    pub min_effect: MinEffect,
}

/// The smallest change a row judges: below it a change is "within noise" even when the
/// runs are far apart (a 1% throughput gain is not worth a word on a shared link).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum MinEffect {
    /// A fraction of the before value (0.05 is 5%).
    Relative(f64),
    /// Percentage points, for shares (1.0 is 1 pp).
    Points(f64),
}

impl MinEffect {
    /// The default for a row worded so: 1 pp for shares, 5% for everything else.
    pub const fn for_wording(w: Wording) -> Self {
        match w {
            Wording::Points => MinEffect::Points(1.0),
            _ => MinEffect::Relative(0.05),
        }
    }

    /// The size of the change from `x` to `y` in this effect's terms (a fraction, or
    /// points); infinite from 0 for a relative effect.
    pub fn size(self, x: f64, y: f64) -> f64 {
        match self {
            MinEffect::Relative(_) if x == 0.0 => f64::INFINITY,
            MinEffect::Relative(_) => (y - x).abs() / x.abs(),
            MinEffect::Points(_) => (y - x).abs() * 100.0,
        }
    }

    /// The threshold itself.
    pub fn threshold(self) -> f64 {
        match self {
            MinEffect::Relative(t) | MinEffect::Points(t) => t,
        }
    }

    /// "5%" or "1 pp".
    pub fn text(self) -> String {
        match self {
            MinEffect::Relative(t) => crate::format::percent(t),
            MinEffect::Points(p) => format!("{} pp", crate::format::sig(p, 3)),
        }
    }
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
    (display, direction, wording): (Display, Direction, Wording),
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
        min_effect: MinEffect::for_wording(wording),
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
    const fn min_effect(mut self, e: MinEffect) -> Self {
        self.min_effect = e;
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

/// The labnode collectors, in the registry's order: the keys of the registry's export,
/// `modules/collectors.json`, read at build time (`build.rs`). Monitoring coverage expects
/// each of them.
pub const COLLECTORS: &[&str] = include!(concat!(env!("OUT_DIR"), "/collectors.rs"));

/// The collectors in words, "system, gpu, zfs, net and rollback": a literal, for the
/// coverage row's title (`concat!`).
macro_rules! collectors_in_words {
    () => {
        include_str!(concat!(env!("OUT_DIR"), "/collectors-in-words.txt"))
    };
}

mod table;

pub use table::CATALOG;

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
    fn monitoring_coverage_expects_the_registry_s_collectors() {
        // COLLECTORS is the registry's export, read by build.rs (labnode's own tests check
        // it against the registry); the coverage row counts and names each of them.
        assert!(COLLECTORS.len() > 1, "{COLLECTORS:?}");
        let row = find("collectors_up").expect("the coverage row");
        assert!(
            matches!(row.measure, Measure::Coverage { expected, .. } if expected == COLLECTORS)
        );
        let (last, rest) = COLLECTORS.split_last().expect("collectors");
        let words = format!("{} and {last}", rest.join(", "));
        assert!(row.title.ends_with(&words), "{}", row.title);
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
