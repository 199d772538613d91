//! Metric families as collectors produce them, their validation and their text encoding.

use std::collections::HashSet;
use std::fmt;

use prometheus::proto;
use serde::{Deserialize, Serialize};

/// What kind of series a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A value that can go up and down.
    Gauge,
    /// A monotonically increasing total; its name ends in `_total`.
    Counter,
}

/// The unit of a family's values, in base units as Prometheus conventions want them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Seconds (durations and ages).
    Seconds,
    /// Seconds since the Unix epoch.
    Timestamp,
    /// A ratio between 0 and 1.
    Ratio,
    /// Degrees Celsius.
    Celsius,
    /// Watts.
    Watts,
    /// Joules.
    Joules,
    /// Hertz.
    Hertz,
    /// Bytes per second.
    BytesPerSecond,
    /// A plain count or number without unit.
    Count,
    /// An info or state series: the labels carry the information, the value is 0 or 1.
    Info,
}

impl Unit {
    /// The unit's name as written in snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Seconds => "seconds",
            Unit::Timestamp => "timestamp",
            Unit::Ratio => "ratio",
            Unit::Celsius => "celsius",
            Unit::Watts => "watts",
            Unit::Joules => "joules",
            Unit::Hertz => "hertz",
            Unit::BytesPerSecond => "bytes_per_second",
            Unit::Count => "count",
            Unit::Info => "info",
        }
    }
}

/// One series: its label pairs and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label pairs in the order the collector gave them.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A metric family: one name, one help text, one kind and unit, many series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name, e.g. `labnode_system_memory_total_bytes`.
    pub name: String,
    /// One line of help text.
    pub help: String,
    /// Gauge or counter.
    pub kind: Kind,
    /// The unit of every value.
    pub unit: Unit,
    /// The series.
    pub series: Vec<Series>,
}

impl Family {
    /// Adds a series with the given labels.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.series.push(Series {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        });
        self
    }
}

/// The families one collection produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    families: Vec<Family>,
}

impl Metrics {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a gauge family and returns it for series to be pushed.
    pub fn gauge(&mut self, name: &str, help: &str, unit: Unit) -> &mut Family {
        self.family(name, help, Kind::Gauge, unit)
    }

    /// Starts a counter family (the name must end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, unit: Unit) -> &mut Family {
        self.family(name, help, Kind::Counter, unit)
    }

    /// Starts a family of any kind, or returns the one of that name, kind and unit that was
    /// started before (so per-device loops can add their series to one family).
    pub fn family(&mut self, name: &str, help: &str, kind: Kind, unit: Unit) -> &mut Family {
        if let Some(i) = self
            .families
            .iter()
            .position(|f| f.name == name && f.kind == kind && f.unit == unit)
        {
            return &mut self.families[i];
        }
        self.families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            unit,
            series: Vec::new(),
        });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }

    /// The families in the order they were added.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// Number of series over all families.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }

    /// The value of the first series of the family `name` whose labels include every one of
    /// `labels` (any series matches `&[]`), or `None`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families
            .iter()
            .find(|f| f.name == name)?
            .series
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

    /// Drops families that ended up with no series.
    pub fn prune_empty(&mut self) {
        self.families.retain(|f| !f.series.is_empty());
    }

    /// Checks names, labels and values against the exposition format's rules and ours:
    /// valid names, counters ending in `_total` and never negative, no duplicate family or
    /// label set, no `NaN` or infinite values (absent values are left out, never faked).
    pub fn validate(&self) -> Result<(), InvalidMetrics> {
        let mut names = HashSet::new();
        for f in &self.families {
            let bad = |why: String| InvalidMetrics {
                metric: f.name.clone(),
                why,
            };
            if !valid_metric_name(&f.name) {
                return Err(bad("not a valid metric name".into()));
            }
            if !names.insert(f.name.as_str()) {
                return Err(bad("family appears twice".into()));
            }
            if f.kind == Kind::Counter && !f.name.ends_with("_total") {
                return Err(bad("counter name must end in _total".into()));
            }
            if f.help.contains('\n') {
                return Err(bad("help text has a line break".into()));
            }
            let mut seen = HashSet::new();
            for s in &f.series {
                let mut keys = HashSet::new();
                for (k, _) in &s.labels {
                    if !valid_label_name(k) {
                        return Err(bad(format!("label {k:?} is not a valid label name")));
                    }
                    if !keys.insert(k.as_str()) {
                        return Err(bad(format!("label {k:?} given twice")));
                    }
                }
                if !s.value.is_finite() {
                    return Err(bad(format!("value {} for {:?}", s.value, s.labels)));
                }
                if f.kind == Kind::Counter && s.value < 0.0 {
                    return Err(bad(format!("negative counter value {}", s.value)));
                }
                let mut key: Vec<&(String, String)> = s.labels.iter().collect();
                key.sort();
                if !seen.insert(key) {
                    return Err(bad(format!("duplicate series {:?}", s.labels)));
                }
            }
        }
        Ok(())
    }

    /// Encodes the families in the Prometheus text exposition format (0.0.4).
    pub fn encode_text(&self, out: &mut String) {
        let families: Vec<proto::MetricFamily> = self
            .families
            .iter()
            .filter(|f| !f.series.is_empty())
            .map(to_proto)
            .collect();
        // The encoder only fails on families without series, which were filtered out.
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, out) {
            tracing::error!("text encoding failed: {e}");
        }
    }
}

/// Why a collection's output was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetrics {
    /// The family at fault.
    pub metric: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for InvalidMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid metric {}: {}", self.metric, self.why)
    }
}

impl std::error::Error for InvalidMetrics {}

fn to_proto(f: &Family) -> proto::MetricFamily {
    let mut mf = proto::MetricFamily::default();
    mf.set_name(f.name.clone());
    mf.set_help(f.help.clone());
    mf.set_field_type(match f.kind {
        Kind::Gauge => proto::MetricType::GAUGE,
        Kind::Counter => proto::MetricType::COUNTER,
    });
    let metrics = f
        .series
        .iter()
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| {
                    let mut lp = proto::LabelPair::default();
                    lp.set_name(k.clone());
                    lp.set_value(v.clone());
                    lp
                })
                .collect();
            let mut m = proto::Metric::from_label(labels);
            match f.kind {
                Kind::Gauge => {
                    let mut g = proto::Gauge::default();
                    g.set_value(s.value);
                    m.set_gauge(g);
                }
                Kind::Counter => {
                    let mut c = proto::Counter::default();
                    c.set_value(s.value);
                    m.set_counter(c);
                }
            }
            m
        })
        .collect();
    mf.set_metric(metrics);
    mf
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*` and is not reserved (`__` prefix).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_gauges_and_counters_with_escaped_labels() {
        let mut m = Metrics::new();
        m.gauge("labnode_test_bytes", "Test bytes.", Unit::Bytes)
            .push(&[("path", "a\"b\\c\nd")], 1.5);
        m.counter("labnode_test_events_total", "Events.", Unit::Count)
            .push(&[], 3.0);
        m.validate().expect("valid");
        let mut out = String::new();
        m.encode_text(&mut out);
        assert!(out.contains("# TYPE labnode_test_bytes gauge\n"), "{out}");
        assert!(
            out.contains(r#"labnode_test_bytes{path="a\"b\\c\nd"} 1.5"#),
            "{out}"
        );
        assert!(out.contains("# TYPE labnode_test_events_total counter\n"));
        assert!(out.contains("labnode_test_events_total 3\n"), "{out}");
    }

    #[test]
    fn value_finds_the_first_series_with_the_labels() {
        let mut m = Metrics::new();
        m.gauge("labnode_test_ratio", "Test.", Unit::Ratio)
            .push(&[("a", "1"), ("b", "x")], 0.25)
            .push(&[("a", "2"), ("b", "x")], 0.5);
        assert_eq!(m.value("labnode_test_ratio", &[]), Some(0.25));
        assert_eq!(m.value("labnode_test_ratio", &[("a", "2")]), Some(0.5));
        assert_eq!(
            m.value("labnode_test_ratio", &[("b", "x"), ("a", "2")]),
            Some(0.5)
        );
        assert_eq!(m.value("labnode_test_ratio", &[("a", "3")]), None);
        assert_eq!(m.value("labnode_test_other", &[]), None);
    }

    #[test]
    fn rejects_what_prometheus_would_reject_or_misread() {
        let cases: Vec<(Metrics, &str)> = vec![
            {
                let mut m = Metrics::new();
                m.gauge("1bad", "", Unit::Count).push(&[], 1.0);
                (m, "valid metric name")
            },
            {
                let mut m = Metrics::new();
                m.counter("labnode_x", "", Unit::Count).push(&[], 1.0);
                (m, "_total")
            },
            {
                let mut m = Metrics::new();
                m.gauge("labnode_x", "", Unit::Count)
                    .push(&[("a", "1")], 1.0)
                    .push(&[("a", "1")], 2.0);
                (m, "duplicate series")
            },
            {
                let mut m = Metrics::new();
                m.gauge("labnode_x", "", Unit::Count).push(&[], f64::NAN);
                (m, "NaN")
            },
            {
                let mut m = Metrics::new();
                m.gauge("labnode_x", "", Unit::Count)
                    .push(&[("__a", "1")], 1.0);
                (m, "label")
            },
            {
                let mut m = Metrics::new();
                m.gauge("labnode_x", "", Unit::Count).push(&[], 1.0);
                m.counter("labnode_x", "", Unit::Count).push(&[], 1.0);
                (m, "twice")
            },
            {
                let mut m = Metrics::new();
                m.counter("labnode_x_total", "", Unit::Count)
                    .push(&[], -1.0);
                (m, "negative")
            },
        ];
        for (m, want) in cases {
            let err = m.validate().expect_err(want).to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn a_family_started_twice_is_one_family() {
        let mut m = Metrics::new();
        m.gauge("labnode_gpu_x", "X.", Unit::Count)
            .push(&[("gpu", "0")], 1.0);
        m.gauge("labnode_gpu_x", "X.", Unit::Count)
            .push(&[("gpu", "1")], 2.0);
        assert_eq!(m.families().len(), 1);
        assert_eq!(m.series_count(), 2);
        m.validate().expect("valid");
    }

    #[test]
    fn empty_families_are_not_encoded() {
        let mut m = Metrics::new();
        m.gauge("labnode_empty", "Nothing.", Unit::Count);
        m.prune_empty();
        assert!(m.families().is_empty());
    }
}
