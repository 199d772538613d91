//! Turning both sides and the operator's values into the [`Report`]: the rows by group,
//! the counts, each side's provenance, the rollback waterfall and the gate.

use crate::catalog::{CATALOG, Display, ROLLBACK_DIRECTIONS, ROLLBACK_PHASES, Row};
use crate::eval::{Context, Which};
use crate::format::{self, Verdict};
use crate::input::{Observation, Side};
use crate::model::{
    Cell, Change, Counts, Gate, GroupOut, Passed, Phase, Regression, Report, RowOut, SideInfo,
    Waterfall,
};
use crate::operator::Operator;
use crate::rows::{build_row, quantile};
use crate::schema::REPORT_SCHEMA;
use labnode_core::snapshot::RecordKind;

/// What the caller decides.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Show the original claims beside the measurements.
    pub claims: bool,
    /// Fail rows that got worse by more than this fraction (0.2 is 20%).
    pub gate: Option<f64>,
    /// The report's title.
    pub title: Option<String>,
    /// How the comparison was set up, a sentence each (shown under the title), e.g. what
    /// `labnode demo` emulated.
    pub setup: Vec<String>,
}

/// Builds the report.
pub fn build(before: &Side, after: &Side, operator: &Operator, opts: &Options) -> Report {
    let mut warnings = Vec::new();
    for (which, side) in [(Which::Before, before), (Which::After, after)] {
        if side.operator_samples > 0 {
            warnings.push(format!(
                "{}: {} operator-entered samples in snapshots were not used as measurements; enter such values with --operator FILE",
                which.as_str(),
                side.operator_samples
            ));
        }
    }
    let mut counts = Counts::default();
    let mut regressions = Vec::new();
    let mut passed = Vec::new();
    let ctx = [Context::of(before), Context::of(after)];
    let groups = CATALOG
        .iter()
        .map(|g| GroupOut {
            id: g.id,
            title: g.title,
            claims_source: g.claims_source,
            rows: g
                .rows
                .iter()
                .map(|r| {
                    let out = build_row(r, [before, after], &ctx, operator, opts, &mut warnings);
                    count(&mut counts, &out);
                    if let (Some(gate), Some(c)) = (opts.gate, &out.change) {
                        gate_row(r, c, gate, &mut regressions, &mut passed);
                    }
                    out
                })
                .collect(),
        })
        .collect();
    Report {
        schema: REPORT_SCHEMA,
        labnode_version: env!("CARGO_PKG_VERSION"),
        title: opts
            .title
            .clone()
            .unwrap_or_else(|| "labnode: before and after".into()),
        setup: opts.setup.clone(),
        before: side_info(before, &ctx[0]),
        after: side_info(after, &ctx[1]),
        summary: counts,
        groups,
        waterfall: waterfall(before, after),
        gate: opts.gate.map(|threshold| Gate {
            threshold,
            regressions,
            passed,
        }),
        warnings,
    }
}

/// The gate's reading of one row, by the same rule as its verdict: a row fails when it is
/// worse beyond the noise by more than the threshold; a lost yes (a yes/no row getting
/// worse) fails at any threshold, since the gate must not let a lost property through.
/// A row whose central values got worse and that passes says why.
fn gate_row(
    r: &'static Row,
    c: &Change,
    gate: f64,
    regressions: &mut Vec<Regression>,
    passed: &mut Vec<Passed>,
) {
    let lost_yes = r.display == Display::YesNo && c.verdict == Verdict::Worse;
    let by = |w: f64| {
        if w.is_finite() {
            format!("{} worse", format::percent(w))
        } else {
            "worse from 0".to_owned()
        }
    };
    let beyond = c.noise.as_ref().map_or("", |n| n.why.as_str());
    if lost_yes {
        regressions.push(Regression {
            row: r.id,
            title: r.title,
            worse_by: None,
            text: c.text.clone(),
            why: "a yes/no row lost its yes: a regression at any threshold".into(),
        });
        return;
    }
    let Some(w) = c.worse_by else { return };
    if c.verdict == Verdict::Worse && w > gate {
        regressions.push(Regression {
            row: r.id,
            title: r.title,
            worse_by: Some(w).filter(|w| w.is_finite()),
            text: c.text.clone(),
            why: format!(
                "{}, over the {} threshold, and {beyond}",
                by(w),
                format::percent(gate)
            ),
        });
        return;
    }
    let why = match c.verdict {
        Verdict::Worse => format!("{}, within the {} threshold", by(w), format::percent(gate)),
        _ => format!("{}, but {beyond}", by(w)),
    };
    passed.push(Passed {
        row: r.id,
        title: r.title,
        text: c.text.clone(),
        why,
    });
}

fn count(c: &mut Counts, r: &RowOut) {
    c.rows += 1;
    for cell in [&r.before, &r.after] {
        match cell {
            Cell::OperatorEntered(_) => c.operator_entered += 1,
            Cell::NotMeasured { .. } => c.not_measured += 1,
            Cell::Measured(_) => {}
        }
    }
    if let Some(ch) = &r.change {
        c.compared += 1;
        match ch.verdict {
            Verdict::Better => c.better += 1,
            Verdict::Worse => c.worse += 1,
            Verdict::Unchanged => c.unchanged += 1,
            Verdict::Changed => c.changed += 1,
            Verdict::Undetermined => c.undetermined += 1,
            Verdict::WithinNoise => c.within_noise += 1,
            Verdict::NotJudged => c.not_judged += 1,
        }
    }
}

fn side_info(side: &Side, ctx: &Context) -> SideInfo {
    let rfc = |t: f64| {
        let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
        humantime::format_rfc3339_seconds(st).to_string()
    };
    let span = side.span();
    SideInfo {
        sources: side.sources.clone(),
        observations: side.observations.len(),
        kinds: side
            .count_records()
            .into_iter()
            .map(|(k, n)| (if k.is_empty() { "collect".into() } else { k }, n))
            .collect(),
        from: span.map(|s| rfc(s.0)),
        to: span.map(|s| rfc(s.1)),
        host: side.host.clone(),
        source: side.source,
        deployed: ctx.clone(),
    }
}

fn waterfall(before: &Side, after: &Side) -> Vec<Waterfall> {
    ROLLBACK_DIRECTIONS
        .iter()
        .map(|dir| {
            let per_side = |side: &Side| {
                let drills: Vec<&Observation> = side
                    .observations
                    .iter()
                    .filter(|o| o.records.contains(&RecordKind::RollbackDrill))
                    .collect();
                let med = |metric: &str, phase: Option<&str>| {
                    let mut v: Vec<f64> = drills
                        .iter()
                        .filter_map(|o| {
                            o.metric(metric)
                                .iter()
                                .find(|s| {
                                    s.label("direction") == Some(dir)
                                        && phase.is_none_or(|p| s.label("phase") == Some(p))
                                })
                                .map(|s| s.value)
                        })
                        .filter(|v| v.is_finite())
                        .collect();
                    v.sort_by(f64::total_cmp);
                    (!v.is_empty()).then(|| quantile(&v, 0.5))
                };
                let phases: Vec<Option<f64>> = ROLLBACK_PHASES
                    .iter()
                    .map(|p| med("labnode_rollback_phase_seconds", Some(p)))
                    .collect();
                let total = med("labnode_rollback_recovery_seconds", None);
                let n = drills
                    .iter()
                    .filter(|o| {
                        o.metric("labnode_rollback_phase_seconds")
                            .iter()
                            .any(|s| s.label("direction") == Some(dir))
                    })
                    .count();
                (phases, total, n)
            };
            let (bp, bt, bn) = per_side(before);
            let (ap, at, an) = per_side(after);
            Waterfall {
                direction: dir,
                phases: ROLLBACK_PHASES
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Phase {
                        phase: p,
                        before: bp[i],
                        after: ap[i],
                    })
                    .collect(),
                before_total: bt,
                after_total: at,
                before_n: bn,
                after_n: an,
            }
        })
        .collect()
}
