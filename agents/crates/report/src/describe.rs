//! A row in words: how its value comes about (the metric expression) and why a cell has
//! no value (what would measure it).

use crate::catalog::{
    self, Agg, Aspect, Direction, Display, Match, Measure, Row, Sel, Summary, Test,
};
use crate::eval::{Context, Which};
use crate::input::{Side, Source};
use labnode_core::snapshot::RecordKind;

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
pub(crate) fn deployed_text(ctx: &Context, m: &Measure) -> String {
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

/// Why a side has no value for the row, and what would measure it.
pub(crate) fn why_not(row: &Row, which: Which, ctx: &Context, side: &Side) -> String {
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

/// How the row's value comes about: its note, the metric expression and which way is
/// better.
pub(crate) fn how(row: &Row) -> String {
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
        if row.direction != Direction::Neutral && row.display != Display::YesNo {
            s.push_str(&format!(
                " Judged from a change of {} beyond the noise.",
                row.min_effect.text()
            ));
        }
    }
    s.trim().to_owned()
}

fn per(row: &Row) -> String {
    match row.event {
        Some(kind) => format!("{kind} record ({})", kind.writer()),
        None => "snapshot".into(),
    }
}
