//! The noise rule: when a numeric change is called better or worse.
//!
//! A change the medians show is a verdict only with at least [`MIN_RUNS`] values on each
//! measured side, when it is at least the row's minimum effect, and when it is beyond the
//! noise: the two 95% bootstrap intervals do not overlap. Otherwise it is "within noise"
//! or "not judged". An operator-entered value is taken as exact (its interval is itself).
//! Yes/no rows keep their own rule: a lost yes is always worse. The regression gate reads
//! the verdicts this rule gives.
//!
//! The two-sided Mann-Whitney U p-value is reported beside the intervals but does not make
//! a verdict alone: a report has some forty rows, and a 5% test on each calls about two of
//! them better or worse between two identical setups (the same-distribution test in
//! `tests/noise.rs` did exactly that), while two 95% intervals apart amount to about
//! p < 0.005 per row for similar spreads.

use crate::catalog::{Display, Row};
use crate::format::{self, Point, Verdict};
use crate::model::Noise;
use crate::stats;

/// Values a side needs before its change is judged.
pub const MIN_RUNS: usize = 3;

/// A side's number for a comparison: the central value and what it was made of.
#[derive(Debug, Clone)]
pub(crate) struct Num {
    /// The central value (and an operator's bound).
    pub point: Point,
    /// The values summarised, sorted (empty for an operator's value or a counter's increase).
    pub values: Vec<f64>,
    /// Their 95% interval, with two or more.
    pub interval: Option<(f64, f64)>,
    /// An operator-entered value: exact, no runs.
    pub exact: bool,
}

impl Num {
    /// An operator's value.
    pub fn exact(point: Point) -> Self {
        Num {
            point,
            values: Vec::new(),
            interval: None,
            exact: true,
        }
    }

    fn n(&self) -> Option<usize> {
        (!self.exact).then_some(self.values.len())
    }

    fn range(&self) -> Option<(f64, f64)> {
        if self.exact {
            Some((self.point.v, self.point.v))
        } else {
            self.interval
        }
    }
}

/// The verdict after the noise rule, given what the medians say (`medians`), and how the
/// rule read it (for rows it applies to: numeric, not yes/no, and moved).
pub(crate) fn judge(row: &Row, x: &Num, y: &Num, medians: Verdict) -> (Verdict, Option<Noise>) {
    if !matches!(medians, Verdict::Better | Verdict::Worse) || row.display == Display::YesNo {
        return (medians, None);
    }
    let n = [x.n(), y.n()];
    let size = row.min_effect.size(x.point.v, y.point.v);
    let effect = size.is_finite().then_some(size);
    let mut noise = Noise {
        medians_say: medians,
        n,
        intervals_overlap: None,
        mann_whitney_p: None,
        effect,
        why: String::new(),
        short: String::new(),
    };
    let fewest = n.iter().flatten().min().copied();
    if let Some(k) = fewest.filter(|k| *k < MIN_RUNS) {
        let counts = |i: usize| n[i].map_or("operator-entered".to_owned(), |k| format!("n={k}"));
        noise.why = format!(
            "not judged: {} before, {} after; a verdict needs at least {MIN_RUNS} a side",
            counts(0),
            counts(1)
        );
        noise.short = format!("changed, not judged (n={k})");
        return (Verdict::NotJudged, Some(noise));
    }
    let effect_text = match effect {
        Some(e) => match row.min_effect {
            crate::catalog::MinEffect::Relative(_) => format::percent(e),
            crate::catalog::MinEffect::Points(_) => format!("{} pp", format::sig(e, 2)),
        },
        None => "a change from 0".into(),
    };
    if size < row.min_effect.threshold() {
        noise.why = format!(
            "within noise: a change of {effect_text} is under the row's minimum effect of {}",
            row.min_effect.text()
        );
        noise.short = "within noise".into();
        return (Verdict::WithinNoise, Some(noise));
    }
    let overlap = match (x.range(), y.range()) {
        (Some((a0, a1)), Some((b0, b1))) => Some(a0 <= b1 && b0 <= a1),
        _ => None,
    };
    let p = (!x.exact && !y.exact)
        .then(|| stats::mann_whitney(&x.values, &y.values))
        .flatten();
    noise.intervals_overlap = overlap;
    noise.mann_whitney_p = p;
    let p_text = p.map_or(String::new(), |p| {
        format!(" (Mann-Whitney p = {})", format::sig(p, 2))
    });
    match overlap {
        Some(false) => {
            noise.why = format!("beyond noise: the 95% intervals do not overlap{p_text}");
            noise.short = "beyond noise: intervals apart".into();
            (medians, Some(noise))
        }
        Some(true) => {
            noise.why = format!("within noise: the 95% intervals overlap{p_text}");
            noise.short = "within noise".into();
            (Verdict::WithinNoise, Some(noise))
        }
        None => {
            noise.why = "not judged: one total a side, no runs to judge its noise by".into();
            noise.short = "changed, not judged (one total a side)".into();
            (Verdict::NotJudged, Some(noise))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CATALOG;

    fn row(id: &str) -> &'static Row {
        CATALOG
            .iter()
            .flat_map(|g| g.rows)
            .find(|r| r.id == id)
            .expect("row")
    }

    fn num(values: &[f64]) -> Num {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Num {
            point: Point {
                v: stats::quantile(&v, 0.5),
                bound: None,
            },
            interval: stats::bootstrap_interval(&v, stats::Statistic::Median),
            values: v,
            exact: false,
        }
    }

    #[test]
    fn one_run_a_side_is_never_a_verdict() {
        let r = row("net_deployed");
        let (v, n) = judge(r, &num(&[4.0e5]), &num(&[9.0e5]), Verdict::Better);
        assert_eq!(v, Verdict::NotJudged);
        assert_eq!(n.expect("noise").short, "changed, not judged (n=1)");
    }

    #[test]
    fn overlapping_runs_are_within_noise_and_a_clear_shift_is_judged() {
        let r = row("net_deployed");
        let a = num(&[4.0e5, 7.6e5, 5.1e5, 6.3e5, 4.4e5]);
        let b = num(&[4.2e5, 7.0e5, 5.6e5, 6.9e5, 4.9e5]);
        let (v, n) = judge(r, &a, &b, Verdict::Better);
        assert_eq!(v, Verdict::WithinNoise, "{n:?}");
        let far = num(&[9.0e5, 9.4e5, 9.1e5, 9.6e5, 9.2e5]);
        let (v, n) = judge(r, &a, &far, Verdict::Better);
        assert_eq!(v, Verdict::Better, "{n:?}");
        let n = n.expect("noise");
        assert_eq!(n.intervals_overlap, Some(false));
        assert!(n.mann_whitney_p.expect("p") < 0.05);
        // A rank test below 5% with overlapping intervals is not enough.
        let near = num(&[5.0e5, 5.2e5, 5.5e5, 5.8e5, 6.0e5, 5.6e5, 5.3e5, 5.9e5]);
        let up = num(&[5.6e5, 5.9e5, 6.2e5, 6.4e5, 6.1e5, 6.6e5, 5.8e5, 6.3e5]);
        let (v, n) = judge(r, &near, &up, Verdict::Better);
        let n = n.expect("noise");
        assert!(n.mann_whitney_p.expect("p") < 0.05, "{n:?}");
        assert_eq!(
            (v, n.intervals_overlap),
            (Verdict::WithinNoise, Some(true)),
            "{n:?}"
        );
    }

    #[test]
    fn a_small_effect_is_not_judged_however_clear() {
        // 2% apart, no noise at all: under the default 5%.
        let r = row("net_deployed");
        let (v, n) = judge(r, &num(&[100.0; 4]), &num(&[102.0; 4]), Verdict::Better);
        assert_eq!(v, Verdict::WithinNoise);
        assert!(n.expect("noise").why.contains("minimum effect of 5%"));
    }

    #[test]
    fn an_operators_value_is_exact_and_yes_no_rows_keep_their_rule() {
        let r = row("rollback_time");
        let claim = Num::exact(Point {
            v: 1800.0,
            bound: None,
        });
        let drills = num(&[20.0, 22.0, 25.0]);
        assert_eq!(
            judge(r, &claim, &drills, Verdict::Better).0,
            Verdict::Better
        );
        assert_eq!(
            judge(r, &claim, &num(&[20.0]), Verdict::Better).0,
            Verdict::NotJudged
        );
        let yes = row("nixos");
        let (v, n) = judge(yes, &num(&[1.0]), &num(&[0.0]), Verdict::Worse);
        assert_eq!(v, Verdict::Worse);
        assert!(n.is_none());
    }
}
