//! One row of the report: what each side holds for it, the cells (measured, entered by
//! an operator or not measured) and the change between them.

use std::collections::BTreeMap;

use crate::build::Options;
use crate::catalog::{Display, Measure, Row, Summary};
use crate::describe::{deployed_text, how, why_not};
use crate::eval::{self, Context, Val, Which};
use crate::format::{self, Point, Verdict};
use crate::input::{Observation, Side, Source};
use crate::judge::{Num, judge};
use crate::model::{Cell, Change, Interval, Measured, OperatorCell, RowOut};
use crate::operator::{Entered, Operator};
use crate::stats::{self, Statistic};
use labnode_core::snapshot::RecordKind;

/// What one side holds for a row before it becomes a cell.
enum Got {
    Nums(Vec<f64>),
    Texts(Vec<String>),
    /// A counter's increase over the side, and how many observations held the counter.
    Increase(f64, usize),
    Nothing,
}

/// The row's values on one side, and how many drill or probe results gave none (a drill
/// that never recovered has no recovery time).
fn gather(row: &Row, ctx: &Context, side: &Side) -> (Got, usize) {
    if let (Summary::Increase, Measure::Value { sel, .. }) = (row.summary, &row.measure) {
        let got = eval::increase(sel, ctx, side, side.source == Source::Snapshots)
            .map_or(Got::Nothing, |(total, n)| Got::Increase(total, n));
        return (got, 0);
    }
    let mut nums = Vec::new();
    let mut texts = Vec::new();
    let mut without = 0;
    let runs: Vec<&Observation> = match row.event {
        Some(k) => side
            .observations
            .iter()
            .filter(|o| o.records.contains(&k))
            .collect(),
        None => Vec::new(),
    };
    for o in &side.observations {
        let v = eval::evaluate(row, ctx, o).or_else(|| eval::evaluate_paired(row, ctx, o, &runs));
        match v {
            Some(Val::Num(v)) if v.is_finite() => nums.push(v),
            Some(Val::Text(t)) => texts.push(t),
            _ => {
                if row.event.is_some_and(|k| o.records.contains(&k))
                    && measured_what_the_row_selects(row, ctx, o)
                {
                    without += 1;
                }
            }
        }
    }
    let got = if !texts.is_empty() {
        Got::Texts(texts)
    } else if !nums.is_empty() {
        Got::Nums(nums)
    } else {
        Got::Nothing
    };
    (got, without)
}

/// Whether a run of the row's record kind is about what the row reads, so that having no
/// value counts against it: every drill is (a drill that never recovered has no recovery
/// time), while a network bench measures some paths, protocols and congestion controls and
/// is about a row only if it holds a series the row selects.
fn measured_what_the_row_selects(row: &Row, ctx: &Context, o: &Observation) -> bool {
    if row.event != Some(RecordKind::NetBench) {
        return true;
    }
    let mut sels = Vec::new();
    row.measure.selectors(&mut sels);
    match &row.measure {
        // A ratio's run is about it when it holds the numerator (the denominator may come
        // from a paired run).
        Measure::Ratio { num, .. } => eval::selects(num, ctx, o),
        _ => sels.iter().any(|s| eval::selects(s, ctx, o)),
    }
}

/// The row's cells on both sides and the change; a value measured over an operator's
/// adds a warning.
pub(crate) fn build_row(
    row: &'static Row,
    sides: [&Side; 2],
    ctxs: &[Context; 2],
    operator: &Operator,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> RowOut {
    let cells = [Which::Before, Which::After].map(|which| {
        let i = match which {
            Which::Before => 0,
            Which::After => 1,
        };
        let (side, ctx) = (sides[i], &ctxs[i]);
        let entered = operator.side(which).get(row.id);
        let (got, without) = gather(row, ctx, side);
        match (got, entered) {
            (Got::Nothing, Some(e)) => (operator_cell(row, e), point_of_entered(e)),
            (Got::Nothing, None) => (
                Cell::NotMeasured {
                    why: why_not(row, which, ctx, side),
                },
                None,
            ),
            (got, e) => {
                if let Some(e) = e {
                    warnings.push(format!(
                        "{}: {} `{}` was measured, so the operator-entered value ({}) is not used",
                        e.at,
                        which.as_str(),
                        row.id,
                        entered_display(row, e)
                    ));
                }
                let (mut cell, num) = measured_cell(row, side, got);
                if let Cell::Measured(m) = &mut cell {
                    if row.measure.uses_deployed() {
                        m.spread
                            .push_str(&format!(" · {}", deployed_text(ctx, &row.measure)));
                    }
                    if without > 0 {
                        m.without = Some(without);
                        m.spread.push_str(&format!(
                            " · {without} more {} without a value",
                            noun(row, side, without)
                        ));
                    }
                }
                (cell, num)
            }
        }
    });
    let change = compare(row, &cells[0], &cells[1]);
    let [(b, _), (a, _)] = cells;
    RowOut {
        id: row.id,
        title: row.title,
        short: row.short,
        how: how(row),
        unit: row.unit.as_str(),
        display: row.display,
        direction: row.direction,
        summary: row.summary,
        min_effect: row.min_effect,
        before: b,
        after: a,
        change,
        claimed: row.claimed.filter(|_| opts.claims),
    }
}

type Built = (Cell, Option<Num>);

fn point_of_entered(e: &Entered) -> Option<Num> {
    match e.val {
        Val::Num(v) => Some(Num::exact(Point { v, bound: e.bound })),
        Val::Text(_) => None,
    }
}

fn entered_display(row: &Row, e: &Entered) -> String {
    match &e.val {
        Val::Num(v) => format::bounded(
            row.display,
            Point {
                v: *v,
                bound: e.bound,
            },
        ),
        Val::Text(t) => t.clone(),
    }
}

fn operator_cell(row: &Row, e: &Entered) -> Cell {
    Cell::OperatorEntered(OperatorCell {
        value: match &e.val {
            Val::Num(v) => json_num(*v),
            Val::Text(t) => serde_json::Value::String(t.clone()),
        },
        bound: e.bound,
        note: e.note.clone(),
        at: e.at.clone(),
        display: entered_display(row, e),
    })
}

fn json_num(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn noun(row: &Row, side: &Side, n: usize) -> &'static str {
    let one = n == 1;
    match row.event {
        Some(RecordKind::RollbackDrill | RecordKind::ZfsDrill) => {
            if one {
                "drill"
            } else {
                "drills"
            }
        }
        Some(RecordKind::SafeSwitch) => {
            if one {
                "switch"
            } else {
                "switches"
            }
        }
        Some(_) => {
            if one {
                "run"
            } else {
                "runs"
            }
        }
        None => side.source.noun(n),
    }
}

fn measured_cell(row: &Row, side: &Side, got: Got) -> Built {
    match got {
        Got::Texts(texts) => {
            let n = texts.len();
            let mut freq: BTreeMap<&str, usize> = BTreeMap::new();
            for t in &texts {
                *freq.entry(t).or_default() += 1;
            }
            // Most frequent; ties go to the newest.
            let mut best = texts[n - 1].as_str();
            for t in texts.iter().rev() {
                if freq[t.as_str()] > freq[best] {
                    best = t;
                }
            }
            let agree = freq[best];
            let what = noun(row, side, n);
            let spread = if agree == n {
                format!("{n} {what}")
            } else {
                format!("{agree} of {n} {what}")
            };
            (
                Cell::Measured(Measured {
                    n,
                    value: serde_json::Value::String(best.to_owned()),
                    p95: None,
                    interval: None,
                    min: None,
                    max: None,
                    agree: Some(agree),
                    without: None,
                    display: best.to_owned(),
                    spread,
                }),
                None,
            )
        }
        Got::Nums(mut v) => {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let (min, max) = (v[0], v[n - 1]);
            let what = noun(row, side, n);
            let rate = row.summary == Summary::Rate;
            let stat = if rate {
                Statistic::Mean
            } else {
                Statistic::Median
            };
            let interval = stats::bootstrap_interval(&v, stat);
            let (central, p95, agree, mut spread) = if rate {
                let mean = v.iter().sum::<f64>() / n as f64;
                let ones = v.iter().filter(|x| **x == 1.0).count();
                let binary = v.iter().all(|x| *x == 0.0 || *x == 1.0);
                let spread = if !binary {
                    format!("mean of {n} {what}")
                } else if row.display == Display::YesNo && (ones == 0 || ones == n) {
                    format!("{n} {what}")
                } else {
                    format!("{ones} of {n} {what}")
                };
                (mean, None, Some(ones), spread)
            } else {
                let med = quantile(&v, 0.5);
                let spread = match n {
                    1 => format!("1 {what}"),
                    _ if min == max => format!("{n} {what}, all equal"),
                    _ => format!("median of {n} {what}"),
                };
                (med, Some(quantile(&v, 0.95)), None, spread)
            };
            // The interval, where it says something: not for a yes/no row that never
            // varied, nor for values all equal.
            if let Some((lo, hi)) = interval.filter(|_| min != max) {
                spread.push_str(&format!(" · 95% CI {}", format::range(row.display, lo, hi)));
            }
            (
                Cell::Measured(Measured {
                    n,
                    value: json_num(central),
                    p95,
                    interval: interval.map(|(low, high)| Interval {
                        low,
                        high,
                        of: if rate { "share" } else { "median" },
                        over: noun(row, side, 2),
                        resamples: stats::RESAMPLES,
                    }),
                    min: Some(min),
                    max: Some(max),
                    agree,
                    without: None,
                    display: format::value(row.display, central),
                    spread,
                }),
                Some(Num {
                    point: Point {
                        v: central,
                        bound: None,
                    },
                    values: v,
                    interval,
                    exact: false,
                }),
            )
        }
        Got::Increase(total, n) => (
            Cell::Measured(Measured {
                n,
                value: json_num(total),
                p95: None,
                interval: None,
                min: None,
                max: None,
                agree: None,
                without: None,
                display: format::value(row.display, total),
                spread: format!("increase over {n} {}", noun(row, side, n)),
            }),
            // One total per side: no runs to judge its noise by.
            Some(Num {
                point: Point {
                    v: total,
                    bound: None,
                },
                values: Vec::new(),
                interval: None,
                exact: false,
            }),
        ),
        Got::Nothing => (Cell::NotMeasured { why: String::new() }, None),
    }
}

pub use crate::stats::quantile;

fn compare(row: &Row, before: &Built, after: &Built) -> Option<Change> {
    match (&before.1, &after.1) {
        (Some(x), Some(y)) => {
            let (medians, text) =
                format::change(row.display, row.direction, row.wording, x.point, y.point);
            // How much worse the medians are, whether or not that is beyond the noise (the
            // gate says why it let such a row through).
            let worse_by = (medians == Verdict::Worse)
                .then(|| format::worsening(row.direction, x.point.v, y.point.v))
                .flatten();
            let (verdict, noise) = judge(row, x, y, medians);
            Some(Change {
                verdict,
                text,
                ratio: (x.point.v != 0.0).then(|| y.point.v / x.point.v),
                worse_by,
                noise,
            })
        }
        _ => {
            // Text rows: a change of state.
            let text = |c: &Cell| match c {
                Cell::Measured(m) => m.value.as_str().map(str::to_owned),
                Cell::OperatorEntered(o) => o.value.as_str().map(str::to_owned),
                Cell::NotMeasured { .. } => None,
            };
            // Both texts are in the cells; the change only says whether they differ.
            let same = text(&before.0)? == text(&after.0)?;
            Some(Change {
                verdict: if same {
                    Verdict::Unchanged
                } else {
                    Verdict::Changed
                },
                text: if same { "unchanged" } else { "changed" }.into(),
                ratio: None,
                worse_by: None,
                noise: None,
            })
        }
    }
}
