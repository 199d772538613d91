//! The prose both renders share: what a side observed, when and on what system, and the
//! notes under a group (operator sources, why cells are not measured).

use crate::catalog::{MinEffect, Wording};
use crate::input::Source;
use crate::model::{Cell, SideInfo};
use labnode_core::snapshot::RecordKind;

/// What a record kind is called, for `n` of them.
/// `collect` counts observations without a record.
pub fn kind_name(kind: &str, n: usize) -> String {
    match RecordKind::parse(kind) {
        Some(k) => format!("{n} {}", k.noun(n)),
        None => format!("{n} {kind}"),
    }
}

/// "2026-11-20 09:00–09:20 UTC" from two RFC 3339 times.
pub fn span(info: &SideInfo) -> String {
    let (Some(from), Some(to)) = (&info.from, &info.to) else {
        return String::new();
    };
    // Minutes, or seconds when both ends fall in the same minute.
    let same_minute = from.get(..16).is_some() && from.get(..16) == to.get(..16);
    let split = |t: &str| {
        let t = t.trim_end_matches('Z');
        let (d, h) = t.split_once('T').unwrap_or((t, ""));
        let h = if same_minute {
            h
        } else {
            h.get(..5).unwrap_or(h)
        };
        (d.to_owned(), h.to_owned())
    };
    let ((d0, h0), (d1, h1)) = (split(from), split(to));
    if from == to {
        format!("{d0} {h0} UTC")
    } else if d0 == d1 {
        format!("{d0} {h0}–{h1} UTC")
    } else {
        format!("{d0} {h0} – {d1} {h1} UTC")
    }
}

/// One line about the system a side ran: OS, kernel, NixOS generation and flake.
pub fn system_line(info: &SideInfo) -> Vec<String> {
    let h = &info.host;
    let mut parts = Vec::new();
    if !h.os.is_empty() {
        parts.push(h.os.join(" / "));
    }
    if !h.kernels.is_empty() {
        parts.push(format!("kernel {}", h.kernels.join(", ")));
    }
    if !h.nixos_generations.is_empty() {
        let g: Vec<String> = h.nixos_generations.iter().map(|g| g.to_string()).collect();
        parts.push(format!(
            "generation{} {}",
            if g.len() == 1 { "" } else { "s" },
            g.join(", ")
        ));
    }
    if !h.flake_revisions.is_empty() {
        let r: Vec<String> = h
            .flake_revisions
            .iter()
            .map(|r| r.get(..12).unwrap_or(r).to_owned())
            .collect();
        parts.push(format!("flake {}", r.join(", ")));
    }
    parts
}

/// "17 snapshots: 3 collect, 5 rollback drills, ..."
pub fn observed(info: &SideInfo) -> String {
    let kinds: Vec<String> = info.kinds.iter().map(|(k, n)| kind_name(k, *n)).collect();
    let noun = info.source.noun(info.observations);
    if info.source == Source::Prometheus {
        format!("{} {noun}", info.observations)
    } else {
        format!("{} {noun} ({})", info.observations, kinds.join(", "))
    }
}

/// A note under a group's table: an operator's source, or why cells are not measured
/// (rows that share a reason share a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Operator-entered (else not measured).
    pub operator: bool,
    /// The rows' short names.
    pub rows: Vec<&'static str>,
    /// "before", "after" or "before and after".
    pub sides: String,
    /// `file:line:column` of an operator value.
    pub at: Option<String>,
    /// The operator's note, or why nothing was measured.
    pub text: String,
}

/// The notes of a group's rows.
pub fn notes(g: &crate::model::GroupOut) -> Vec<Note> {
    let mut out: Vec<Note> = Vec::new();
    let mut missing: Vec<(String, &'static str, &'static str)> = Vec::new();
    for row in &g.rows {
        for (side, c) in [("before", &row.before), ("after", &row.after)] {
            match c {
                Cell::OperatorEntered(o) => out.push(Note {
                    operator: true,
                    rows: vec![row.short],
                    sides: side.to_owned(),
                    at: Some(o.at.clone()),
                    text: o.note.clone(),
                }),
                Cell::NotMeasured { why } => missing.push((why.clone(), side, row.short)),
                Cell::Measured(_) => {}
            }
        }
    }
    let mut lines: Vec<Note> = Vec::new();
    for (why, side, short) in missing {
        match lines.iter_mut().find(|n| n.text == why && n.sides == side) {
            Some(n) => n.rows.push(short),
            None => lines.push(Note {
                operator: false,
                rows: vec![short],
                sides: side.to_owned(),
                at: None,
                text: why,
            }),
        }
    }
    // The same rows missing on both sides for the same reason: one line.
    let mut merged: Vec<Note> = Vec::new();
    for n in lines {
        if let Some(m) = merged
            .iter_mut()
            .find(|m| m.text == n.text && m.rows == n.rows && m.sides != n.sides)
        {
            m.sides = "before and after".into();
        } else {
            merged.push(n);
        }
    }
    out.extend(merged);
    out
}

/// How cells are summarised and when a change is a verdict, for the legend of both renders.
pub fn noise_rule() -> String {
    format!(
        "Each cell is the median of that side's runs, snapshots or Prometheus steps (for rates, \
         the share), with n and a 95% interval: a percentile bootstrap of the median (or share) \
         over those values, {} resamples. A change is called better or worse only when each \
         side has at least {} values, the change is at least the row's minimum effect ({} by \
         default, {} for shares), and it is beyond the noise: the two intervals do not \
         overlap. The two-sided Mann-Whitney U p-value is shown beside it, but does not decide \
         alone: at 5% on each of some forty rows it would call about two of them changed \
         between identical setups. Otherwise a change is within noise (≈) or not judged (○). \
         An operator-entered value is taken as exact. Yes/no rows keep their own rule: a lost \
         yes is always worse. Steps of a Prometheus range are not independent, so their \
         intervals are narrower than the truth.",
        crate::stats::RESAMPLES,
        crate::judge::MIN_RUNS,
        MinEffect::for_wording(Wording::Percent).text(),
        MinEffect::for_wording(Wording::Points).text(),
    )
}

/// The counts of the verdicts other than better and worse, e.g. "3 within noise, 2 not
/// judged (fewer than 3 values a side)", or empty.
pub fn undecided(within_noise: usize, not_judged: usize) -> Vec<String> {
    let mut v = Vec::new();
    if within_noise > 0 {
        v.push(format!("{within_noise} within noise"));
    }
    if not_judged > 0 {
        v.push(format!(
            "{not_judged} not judged (fewer than {} values a side)",
            crate::judge::MIN_RUNS
        ));
    }
    v
}
