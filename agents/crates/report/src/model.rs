//! The report's data: every catalog row summarised on both sides and compared. JSON
//! ([`crate::schema`]) is this structure serialised; Markdown and HTML render it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{Claim, Direction, Display, MinEffect, Summary};
use crate::eval::Context;
use crate::format::{self, Bound, Verdict};
use crate::input::{HostSummary, Source};
#[cfg(doc)]
use crate::schema::REPORT_SCHEMA;

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
    /// Moved, but within the noise or under the row's minimum effect.
    pub within_noise: usize,
    /// Moved, but with too few runs on a side to judge.
    pub not_judged: usize,
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
    /// The smallest change the row judges.
    pub min_effect: MinEffect,
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
    /// The 95% interval of `value`, with two or more observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
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

/// A 95% percentile-bootstrap interval of a cell's central value.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Of what: `median`, or `share` for rates.
    pub of: &'static str,
    /// Resampled over what: `runs`, `drills`, `switches`, `snapshots`, or `points` (the
    /// steps of a Prometheus range).
    pub over: &'static str,
    /// Resamples drawn.
    pub resamples: usize,
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
    /// How the noise rule read a numeric change, on rows that are judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<Noise>,
}

/// The noise rule's inputs and its reading ([`crate::judge`]): a change is better or worse
/// only with at least [`MIN_RUNS`](crate::judge::MIN_RUNS) values a side, at least the
/// row's minimum effect, and beyond the noise (the 95% intervals apart).
#[derive(Debug, Clone, Serialize)]
pub struct Noise {
    /// What the medians alone say: `better` or `worse`.
    pub medians_say: Verdict,
    /// Values per side; null for an operator-entered value, which is taken as exact.
    pub n: [Option<usize>; 2],
    /// Whether the two 95% intervals overlap (an exact value's interval is itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals_overlap: Option<bool>,
    /// Two-sided Mann-Whitney U p-value, when both sides are measured (shown, not deciding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mann_whitney_p: Option<f64>,
    /// The change's size in the terms of the row's minimum effect (a fraction, or points;
    /// null when infinite, from 0).
    pub effect: Option<f64>,
    /// Why the verdict is what it is.
    pub why: String,
    /// The same, a few words for a table cell: "within noise", "not judged (n=1)".
    pub short: String,
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
    /// Rows that got worse (by their central values) but passed, and why.
    pub passed: Vec<Passed>,
}

/// A row that got worse (by its central values) that the gate let through, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Passed {
    /// Row id.
    pub row: &'static str,
    /// Row title.
    pub title: &'static str,
    /// The change in words.
    pub text: String,
    /// Why it passed: within noise, not judged, or under the threshold.
    pub why: String,
}

/// A row that got worse beyond the noise by more than the threshold, or a yes/no row that
/// got worse at all.
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
    /// Why it failed.
    pub why: String,
}

impl Gate {
    /// "2 rows got worse beyond the noise by more than 20%".
    pub fn headline(&self) -> String {
        let n = self.regressions.len();
        format!(
            "{n} row{} got worse beyond the noise by more than {}",
            if n == 1 { "" } else { "s" },
            format::percent(self.threshold)
        )
    }
}
