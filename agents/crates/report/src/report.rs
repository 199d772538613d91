//! The report itself: every catalog row summarised on both sides and compared. JSON is
//! this structure serialised; Markdown and HTML render it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{
    self, Agg, Aspect, CATALOG, Claim, Direction, Display, Match, Measure, ROLLBACK_DIRECTIONS,
    ROLLBACK_PHASES, Row, Sel, Summary, Test,
};
use crate::eval::{self, Context, Val, Which};
use crate::format::{self, Bound, Point, Verdict};
use crate::input::{HostSummary, Observation, Side, Source};
use crate::operator::{Entered, Operator};
use labnode_core::snapshot::RecordKind;

/// The JSON schema of this report.
pub const REPORT_SCHEMA: &str = "labnode-report/2";

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

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: &'static str,
    /// The labnode version that wrote it.
    pub labnode_version: &'static str,
    /// Title.
    pub title: String,
    /// How the comparison was set up (empty unless the caller said).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
    /// The before side: where it came from and what it holds.
    pub before: SideInfo,
    /// The after side.
    pub after: SideInfo,
    /// Counts over every row.
    pub summary: Counts,
    /// The rows, by group.
    pub groups: Vec<GroupOut>,
    /// Rollback phases, per direction, for the waterfall.
    pub waterfall: Vec<Waterfall>,
    /// The regression gate, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// Things the reader should know (operator values that measurements replaced, ...).
    pub warnings: Vec<String>,
}

/// One side's provenance.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    /// Where it came from.
    pub sources: Vec<String>,
    /// Snapshots (or Prometheus instants) read.
    pub observations: usize,
    /// What they were: `collect` and the record kinds, counted.
    pub kinds: BTreeMap<String, usize>,
    /// First observation, RFC 3339.
    pub from: Option<String>,
    /// Last observation, RFC 3339.
    pub to: Option<String>,
    /// The host.
    pub host: HostSummary,
    /// Where the observations came from.
    pub source: Source,
    /// What the host runs, for the rows "as deployed".
    pub deployed: Context,
}

/// Counts over the rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Rows in the catalog.
    pub rows: usize,
    /// Rows with a value on both sides.
    pub compared: usize,
    /// Better, by the row's direction.
    pub better: usize,
    /// Worse.
    pub worse: usize,
    /// Unchanged.
    pub unchanged: usize,
    /// Changed, on rows that are not judged.
    pub changed: usize,
    /// Undetermined (an operator's bound).
    pub undetermined: usize,
    /// Cells filled by an operator.
    pub operator_entered: usize,
    /// Cells with no value.
    pub not_measured: usize,
}

/// A group of rows.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOut {
    /// Stable id.
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// Where the original claims table makes these claims.
    pub claims_source: &'static str,
    /// The rows.
    pub rows: Vec<RowOut>,
}

/// One row: both cells and the change.
#[derive(Debug, Clone, Serialize)]
pub struct RowOut {
    /// Stable id.
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// Chart label.
    pub short: &'static str,
    /// How the value comes about.
    pub how: String,
    /// Base unit.
    pub unit: &'static str,
    /// How it is shown.
    pub display: Display,
    /// Which way is better.
    pub direction: Direction,
    /// How snapshots are summarised.
    pub summary: Summary,
    /// The before cell.
    pub before: Cell,
    /// The after cell.
    pub after: Cell,
    /// The change, when both sides have a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The original claim, with `--claims`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Claim>,
}

/// One side's value of a row, with where it came from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "provenance", rename_all = "snake_case")]
pub enum Cell {
    /// Measured by labnode.
    Measured(Measured),
    /// Entered by an operator.
    OperatorEntered(OperatorCell),
    /// No value.
    NotMeasured {
        /// Why, and what would measure it.
        why: String,
    },
}

/// A measured cell.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Observations with a value.
    pub n: usize,
    /// The central value: median, rate or the most frequent text.
    pub value: serde_json::Value,
    /// 95th percentile (median rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    /// Smallest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Observations that agree with `value` (rate and text rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agree: Option<usize>,
    /// Drill or probe results that gave no value (e.g. a drill that never recovered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without: Option<usize>,
    /// The value as shown.
    pub display: String,
    /// n and spread as shown, e.g. "median of 5 · p95 4.9 s".
    pub spread: String,
}

/// An operator-entered cell.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorCell {
    /// The value in the base unit (number) or the text.
    pub value: serde_json::Value,
    /// A bound on the true value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<Bound>,
    /// Where it comes from.
    pub note: String,
    /// `file:line:column`.
    pub at: String,
    /// The value as shown.
    pub display: String,
}

/// The change from before to after.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Better, worse, ...
    pub verdict: Verdict,
    /// The words, e.g. "6.2x faster".
    pub text: String,
    /// after / before, when both are numbers and before is not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// How much worse, as a fraction of before (rows that got worse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worse_by: Option<f64>,
    /// Both sides measured more than once and their ranges overlap: the change may be
    /// run-to-run noise.
    pub ranges_overlap: bool,
}

/// The rollback phases of one direction, medians per side.
#[derive(Debug, Clone, Serialize)]
pub struct Waterfall {
    /// `rollback` or `rollforward`.
    pub direction: &'static str,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Recovery time (every gate green), median per side.
    pub before_total: Option<f64>,
    /// Recovery time, after.
    pub after_total: Option<f64>,
    /// Drills on each side.
    pub before_n: usize,
    /// Drills after.
    pub after_n: usize,
}

/// One phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// The phase, e.g. `activation`.
    pub phase: &'static str,
    /// Median seconds before.
    pub before: Option<f64>,
    /// Median seconds after.
    pub after: Option<f64>,
}

/// The regression gate's result.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// The threshold, as a fraction.
    pub threshold: f64,
    /// Rows worse by more than it, and yes/no rows worse at all.
    pub regressions: Vec<Regression>,
}

/// A row that got worse by more than the threshold, or a yes/no row that got worse at all.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    /// Row id.
    pub row: &'static str,
    /// Row title.
    pub title: &'static str,
    /// How much worse, as a fraction (may be infinite from 0, serialised as null).
    pub worse_by: Option<f64>,
    /// The change in words.
    pub text: String,
}

impl Regression {
    /// "62.2% worse", or "from 0" when the before value was 0.
    pub fn worse_text(&self) -> String {
        self.worse_by.map_or_else(
            || "from 0".to_owned(),
            |w| format!("{} worse", format::percent(w)),
        )
    }
}

impl Gate {
    /// "2 rows got worse by more than 20%".
    pub fn headline(&self) -> String {
        let n = self.regressions.len();
        format!(
            "{n} row{} got worse by more than {}",
            if n == 1 { "" } else { "s" },
            format::percent(self.threshold)
        )
    }
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
                        // A lost yes (a yes/no row getting worse) is a regression at
                        // any threshold: the gate must not let a lost property through.
                        let lost_yes = r.display == Display::YesNo && c.verdict == Verdict::Worse;
                        if lost_yes || c.worse_by.is_some_and(|w| w > gate) {
                            regressions.push(Regression {
                                row: r.id,
                                title: r.title,
                                worse_by: c.worse_by.filter(|w| w.is_finite()),
                                text: c.text.clone(),
                            });
                        }
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
        }),
        warnings,
    }
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

fn build_row(
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
        before: b,
        after: a,
        change,
        claimed: row.claimed.filter(|_| opts.claims),
    }
}

/// A numeric summary of a cell for comparisons, with its spread for the overlap test.
#[derive(Debug, Clone, Copy)]
struct Num {
    point: Point,
    range: Option<(f64, f64)>,
}

type Built = (Cell, Option<Num>);

fn point_of_entered(e: &Entered) -> Option<Num> {
    match e.val {
        Val::Num(v) => Some(Num {
            point: Point { v, bound: e.bound },
            range: None,
        }),
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
            let (central, p95, agree, spread) = match row.summary {
                Summary::Rate => {
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
                }
                _ => {
                    let med = quantile(&v, 0.5);
                    let p95 = quantile(&v, 0.95);
                    let spread = if n == 1 {
                        format!("1 {what}")
                    } else if min == max {
                        format!("{n} {what}, all equal")
                    } else {
                        format!(
                            "median of {n} {what} · p95 {}",
                            format::value(row.display, p95)
                        )
                    };
                    (med, Some(p95), None, spread)
                }
            };
            (
                Cell::Measured(Measured {
                    n,
                    value: json_num(central),
                    p95,
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
                    range: (n > 1).then_some((min, max)),
                }),
            )
        }
        Got::Increase(total, n) => (
            Cell::Measured(Measured {
                n,
                value: json_num(total),
                p95: None,
                min: None,
                max: None,
                agree: None,
                without: None,
                display: format::value(row.display, total),
                spread: format!("increase over {n} {}", noun(row, side, n)),
            }),
            Some(Num {
                point: Point {
                    v: total,
                    bound: None,
                },
                range: None,
            }),
        ),
        Got::Nothing => (Cell::NotMeasured { why: String::new() }, None),
    }
}

/// Linear interpolation between closest ranks (sorted input).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn compare(row: &Row, before: &Built, after: &Built) -> Option<Change> {
    match (&before.1, &after.1) {
        (Some(x), Some(y)) => {
            let (verdict, text) =
                format::change(row.display, row.direction, row.wording, x.point, y.point);
            let worse_by = (verdict == Verdict::Worse)
                .then(|| format::worsening(row.direction, x.point.v, y.point.v))
                .flatten();
            let ranges_overlap = matches!(
                (x.range, y.range),
                (Some((a0, a1)), Some((b0, b1))) if a0 <= b1 && b0 <= a1
            ) && matches!(verdict, Verdict::Better | Verdict::Worse);
            Some(Change {
                verdict,
                text,
                ratio: (x.point.v != 0.0).then(|| y.point.v / x.point.v),
                worse_by,
                ranges_overlap,
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
                ranges_overlap: false,
            })
        }
    }
}

fn collector_of(metric: &str) -> Option<&'static str> {
    catalog::COLLECTORS.iter().copied().find(|c| {
        metric
            .strip_prefix("labnode_")
            .and_then(|m| m.strip_prefix(c))
            .is_some_and(|m| m.starts_with('_'))
    })
}

/// What the side runs, as far as the row selects on it: "bbr through wireguard",
/// "cubic, no tunnel", or "bbr" for a row that fixes the path itself.
fn deployed_text(ctx: &Context, m: &Measure) -> String {
    let cc = ctx.congestion.as_deref().unwrap_or("?");
    if !m.uses(Aspect::Path) {
        return cc.to_owned();
    }
    match ctx.path.as_deref() {
        Some("direct") => format!("{cc}, no tunnel"),
        Some(p) => format!("{cc} through {p}"),
        None => cc.to_owned(),
    }
}

/// What a side's network benches ran, e.g. "tcp cubic over direct, quic cubic over
/// direct" (from their goodput series).
fn benched(side: &Side) -> String {
    let mut ran: Vec<String> = Vec::new();
    for o in &side.observations {
        if !o.records.contains(&RecordKind::NetBench) {
            continue;
        }
        for s in o.metric("labnode_net_probe_throughput_bytes_per_second") {
            let l = |k| s.label(k).unwrap_or("?");
            ran.push(format!(
                "{} {} over {}",
                l("protocol"),
                l("congestion"),
                l("path")
            ));
        }
    }
    ran.sort();
    ran.dedup();
    ran.join(", ")
}

fn why_not(row: &Row, which: Which, ctx: &Context, side: &Side) -> String {
    if matches!(row.measure, Measure::OperatorOnly) {
        return "labnode cannot measure this: an operator enters it after review (--operator FILE)"
            .into();
    }
    let mut metrics = Vec::new();
    row.measure.metrics(&mut metrics);
    if metrics == ["up"] {
        return if side.source == Source::Prometheus {
            "Prometheus has no `up` series in this range".into()
        } else {
            "snapshots hold no scrape targets: read this from Prometheus (--prometheus)".into()
        };
    }
    let first = describe_sel_list(&row.measure, ctx);
    if let Some(kind) = row.event {
        let runs = side
            .observations
            .iter()
            .filter(|o| o.records.contains(&kind))
            .count();
        if runs == 0 {
            return format!(
                "no {kind} record: run `{} --label {}`",
                kind.writer(),
                which.as_str()
            );
        }
        if row.measure.uses_deployed() && (ctx.congestion.is_none() || ctx.path.is_none()) {
            return format!(
                "what the host runs is unknown ({}): snapshot the net collector beside the benches, or bench one congestion control",
                deployed_text(ctx, &row.measure)
            );
        }
        let ran = if kind == RecordKind::NetBench {
            format!(" (they measured {})", benched(side))
        } else {
            String::new()
        };
        return format!(
            "{runs} {kind} record{} but none measured {first}{ran}",
            if runs == 1 { "" } else { "s" }
        );
    }
    if let Some(c) = metrics.first().and_then(|m| collector_of(m)) {
        let downs: Vec<&String> = side
            .observations
            .iter()
            .flat_map(|o| o.down.iter())
            .filter(|(name, _)| name == c)
            .map(|(_, why)| why)
            .collect();
        if let Some(why) = downs.last() {
            // Only what ran the collector counts: a bench or drill snapshot runs none.
            let ran = side
                .observations
                .iter()
                .filter(|o| {
                    o.metric("labnode_collector_up")
                        .iter()
                        .any(|s| s.label("collector") == Some(c))
                })
                .count()
                .max(downs.len());
            return format!(
                "the {c} collector was down in {} of {ran} {} that ran it: {why}",
                downs.len(),
                side.source.noun(ran)
            );
        }
        let up = side.observations.iter().any(|o| {
            o.metric("labnode_collector_up")
                .iter()
                .any(|s| s.label("collector") == Some(c) && s.value == 1.0)
        });
        let prefix = format!("labnode_{c}_");
        let any = side
            .observations
            .iter()
            .any(|o| o.samples.iter().any(|s| s.metric.starts_with(&prefix)));
        if up {
            return format!(
                "the {c} collector ran but exported no {first}",
                first = describe_sel_list(&row.measure, ctx)
            );
        }
        if !any {
            return format!("no {} has series of the {c} collector", side.source.noun(1));
        }
    }
    format!("no {} has {first}", side.source.noun(1))
}

fn describe_sel_list(m: &Measure, ctx: &Context) -> String {
    match m {
        Measure::Value { sel, .. }
        | Measure::Fraction { sel, .. }
        | Measure::Coverage { sel, .. }
        | Measure::Flag { sel }
        | Measure::Label { sel, .. } => describe_sel(sel, Some(ctx)),
        Measure::Ratio { num, den, .. } => format!(
            "{} and {}",
            describe_sel(num, Some(ctx)),
            describe_sel(den, Some(ctx))
        ),
        Measure::Share { part, rest } => format!(
            "{} and {}",
            describe_sel(part, Some(ctx)),
            describe_sel(rest, Some(ctx))
        ),
        Measure::FirstOf(ms) => ms
            .iter()
            .map(|m| describe_sel_list(m, ctx))
            .collect::<Vec<_>>()
            .join(" or "),
        Measure::OperatorOnly => String::new(),
    }
}

/// A selector as PromQL-like text; `which` resolves per-side labels.
pub fn describe_sel(sel: &Sel, ctx: Option<&Context>) -> String {
    let mut parts = Vec::new();
    for (k, m) in sel.labels {
        parts.push(match m {
            Match::Is(v) => format!("{k}=\"{v}\""),
            Match::In(vs) => format!("{k}=~\"{}\"", vs.join("|")),
            Match::NotIn(vs) => format!("{k}!~\"{}\"", vs.join("|")),
            Match::NonEmpty => format!("{k}!=\"\""),
            Match::SameAs(other) => format!("{k}=<{other}>"),
            Match::Deployed(a) => {
                let v = match a {
                    Aspect::Congestion => ctx.and_then(|c| c.congestion.as_deref()),
                    Aspect::Path => ctx.and_then(|c| c.path.as_deref()),
                };
                match v {
                    Some(v) => format!("{k}=\"{v}\""),
                    None => format!("{k}=<deployed>"),
                }
            }
        });
    }
    let mut s = if parts.is_empty() {
        sel.metric.to_owned()
    } else {
        format!("{}{{{}}}", sel.metric, parts.join(","))
    };
    if let Some((m, on)) = sel.only_where {
        s.push_str(&format!(" where {m} == 1 on ({})", on.join(", ")));
    }
    s
}

fn describe(m: &Measure) -> String {
    let agg = |a: &Agg| match a {
        Agg::Sum => "sum",
        Agg::Mean => "mean",
        Agg::Max => "max",
        Agg::Min => "min",
    };
    match m {
        Measure::Value { sel, agg: a } => format!("{} of {}", agg(a), describe_sel(sel, None)),
        Measure::Ratio {
            num,
            den,
            on,
            complement,
        } => {
            let r = if on.is_empty() {
                format!(
                    "sum of {} / sum of {}",
                    describe_sel(num, None),
                    describe_sel(den, None)
                )
            } else {
                format!(
                    "mean of {} / {} paired on ({})",
                    describe_sel(num, None),
                    describe_sel(den, None),
                    on.join(", ")
                )
            };
            if *complement { format!("1 - ({r})") } else { r }
        }
        Measure::Share { part, rest } => {
            let (p, r) = (describe_sel(part, None), describe_sel(rest, None));
            format!("{p} / ({p} + {r})")
        }
        Measure::Fraction { sel, test, over } => {
            let t = match test {
                Test::Below(x) => format!("below {x}"),
                Test::Equals(x) => format!("equal to {x}"),
            };
            match over {
                None => format!("share of {} series {t}", describe_sel(sel, None)),
                Some((each, on)) => format!(
                    "share of {} series whose {} paired on ({}) is {t} (none: not)",
                    describe_sel(each, None),
                    describe_sel(sel, None),
                    on.join(", ")
                ),
            }
        }
        Measure::Coverage {
            sel,
            label,
            expected,
        } => format!(
            "distinct `{label}` of {} == 1, over {} expected",
            describe_sel(sel, None),
            expected.len()
        ),
        Measure::Flag { sel } => format!("{} == 1", describe_sel(sel, None)),
        Measure::Label { sel, label } => {
            format!("the `{label}` label of {} == 1", describe_sel(sel, None))
        }
        Measure::FirstOf(ms) => ms.iter().map(describe).collect::<Vec<_>>().join(", else "),
        Measure::OperatorOnly => "operator-entered only".into(),
    }
}

fn how(row: &Row) -> String {
    let mut s = String::new();
    if !row.note.is_empty() {
        s.push_str(row.note);
        s.push(' ');
    }
    if !matches!(row.measure, Measure::OperatorOnly) {
        match (row.summary, &row.measure) {
            (Summary::Increase, Measure::Value { sel, .. }) => s.push_str(&format!(
                "Per side: the increase of {}",
                describe_sel(sel, None)
            )),
            _ => s.push_str(&format!("Per {}: {}", per(row), describe(&row.measure))),
        }
        if let Some(z) = row.zero_when {
            s.push_str(&format!("; 0 where {z} is present but that is not"));
        }
        s.push('.');
        let dir = match row.direction {
            Direction::HigherIsBetter => " Higher is better.",
            Direction::LowerIsBetter => " Lower is better.",
            Direction::Neutral => " Shown for context, not judged.",
        };
        s.push_str(dir);
    }
    s.trim().to_owned()
}

fn per(row: &Row) -> String {
    match row.event {
        Some(kind) => format!("{kind} record ({})", kind.writer()),
        None => "snapshot".into(),
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
