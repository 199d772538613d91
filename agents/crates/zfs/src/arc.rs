//! ARC statistics from `/proc/spl/kstat/zfs/arcstats` (a kstat text table: two header
//! lines, then `name type data` rows).

use std::collections::HashMap;
use std::path::Path;

use labnode_core::{Metrics, Unit};

/// What can go wrong reading arcstats.
#[derive(Debug, thiserror::Error)]
pub enum ArcError {
    /// The file could not be read (no ZFS module, or another kstat root).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A field labnode needs is missing or not a number.
    #[error("{path}: field {field} is missing or not a number")]
    Field {
        /// The file.
        path: String,
        /// The field.
        field: &'static str,
    },
}

/// The ARC figures labnode exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arc {
    /// Current size in bytes (`size`).
    pub size: u64,
    /// Target size (`c`).
    pub target: u64,
    /// Minimum target (`c_min`).
    pub min: u64,
    /// Maximum target (`c_max`).
    pub max: u64,
    /// Demand and prefetch hits since the module loaded (`hits`).
    pub hits: u64,
    /// Misses since the module loaded (`misses`).
    pub misses: u64,
}

/// Parses the text of an arcstats file (`path` is for messages).
pub fn parse(text: &str, path: &str) -> Result<Arc, ArcError> {
    let fields: HashMap<&str, u64> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, _kind, value) = (w.next()?, w.next()?, w.next()?);
            Some((name, value.parse().ok()?))
        })
        .collect();
    let get = |field: &'static str| {
        fields.get(field).copied().ok_or_else(|| ArcError::Field {
            path: path.to_owned(),
            field,
        })
    };
    Ok(Arc {
        size: get("size")?,
        target: get("c")?,
        min: get("c_min")?,
        max: get("c_max")?,
        hits: get("hits")?,
        misses: get("misses")?,
    })
}

/// Reads `dir/arcstats`.
pub fn read(dir: &Path) -> Result<Arc, ArcError> {
    let path = dir.join("arcstats");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| ArcError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

impl Arc {
    /// Adds the ARC families to `m`.
    pub fn export(&self, m: &mut Metrics) {
        let gauges = [
            ("labnode_zfs_arc_size_bytes", "Current ARC size.", self.size),
            (
                "labnode_zfs_arc_target_bytes",
                "ARC target size (c), what the ARC is adapting towards.",
                self.target,
            ),
            (
                "labnode_zfs_arc_min_bytes",
                "Minimum ARC target size (c_min).",
                self.min,
            ),
            (
                "labnode_zfs_arc_max_bytes",
                "Maximum ARC target size (c_max, zfs_arc_max).",
                self.max,
            ),
        ];
        for (name, help, v) in gauges {
            m.gauge(name, help, Unit::Bytes).push(&[], v as f64);
        }
        m.counter(
            "labnode_zfs_arc_hits_total",
            "ARC hits since the ZFS module loaded.",
            Unit::Count,
        )
        .push(&[], self.hits as f64);
        m.counter(
            "labnode_zfs_arc_misses_total",
            "ARC misses since the ZFS module loaded.",
            Unit::Count,
        )
        .push(&[], self.misses as f64);
        let accesses = self.hits + self.misses;
        if accesses > 0 {
            m.gauge(
                "labnode_zfs_arc_hit_ratio",
                "ARC hits over hits plus misses since the ZFS module loaded (arc_summary's cache hit ratio).",
                Unit::Ratio,
            )
            .push(&[], self.hits as f64 / accesses as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "9 1 0x01 147 39984 4046283071 1011112839318\n\
        name                            type data\n\
        hits                            4    300\n\
        iohits                          4    2\n\
        misses                          4    100\n\
        c                               4    1073741824\n\
        c_min                           4    33554432\n\
        c_max                           4    2147483648\n\
        size                            4    52428800\n";

    #[test]
    fn parses_the_kstat_table() {
        let a = parse(SAMPLE, "arcstats").expect("parses");
        assert_eq!(a.size, 52_428_800);
        assert_eq!((a.target, a.min, a.max), (1 << 30, 32 << 20, 2 << 30));
        assert_eq!((a.hits, a.misses), (300, 100));
        let mut m = Metrics::new();
        a.export(&mut m);
        m.validate().expect("valid");
        let ratio = m
            .families()
            .iter()
            .find(|f| f.name == "labnode_zfs_arc_hit_ratio")
            .map(|f| f.series[0].value);
        assert_eq!(ratio, Some(0.75));
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = parse("x\nname type data\nhits 4 1\n", "arcstats").expect_err("no size");
        assert!(e.to_string().contains("field size"), "{e}");
    }

    #[test]
    fn no_accesses_means_no_ratio() {
        let a = Arc {
            size: 1,
            target: 1,
            min: 1,
            max: 1,
            hits: 0,
            misses: 0,
        };
        let mut m = Metrics::new();
        a.export(&mut m);
        assert!(
            !m.families()
                .iter()
                .any(|f| f.name == "labnode_zfs_arc_hit_ratio")
        );
    }
}
