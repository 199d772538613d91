//! The report as Markdown that reads well on GitHub.

use std::fmt::Write;

use crate::explain::{noise_rule, notes, observed, span, system_line, undecided};
use crate::format::{self, Verdict};
use crate::model::{Cell, Report, SideInfo, Waterfall};

/// Names as inline code, "`a`, `b`" (a backtick in a name becomes a quote).
fn code_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.replace('`', "'")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes text for a Markdown table cell.
pub fn cell_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The glyph before a change.
pub fn glyph(v: Verdict, regression: bool) -> &'static str {
    match v {
        _ if regression => "❌ ",
        Verdict::Better => "✅ ",
        Verdict::Worse => "⚠️ ",
        Verdict::Unchanged => "= ",
        Verdict::Undetermined => "? ",
        Verdict::WithinNoise => "≈ ",
        Verdict::NotJudged => "○ ",
        Verdict::Changed => "",
    }
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Measured(m) => format!(
            "**{}**<br><sub>{}</sub>",
            cell_text(&m.display),
            cell_text(&m.spread)
        ),
        Cell::OperatorEntered(o) => {
            format!("{} †<br><sub>operator-entered</sub>", cell_text(&o.display))
        }
        Cell::NotMeasured { .. } => "<sub>not measured</sub>".into(),
    }
}

fn is_regression(r: &Report, id: &str) -> bool {
    r.gate
        .as_ref()
        .is_some_and(|g| g.regressions.iter().any(|x| x.row == id))
}

fn cells(n: usize) -> String {
    format!("{n} cell{}", if n == 1 { "" } else { "s" })
}

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let claims = r
        .groups
        .iter()
        .flat_map(|g| &g.rows)
        .any(|x| x.claimed.is_some());
    let _ = writeln!(o, "# {}\n", cell_text(&r.title));
    if !r.setup.is_empty() {
        // One quoted paragraph per sentence.
        let lines: Vec<String> = r
            .setup
            .iter()
            .map(|l| format!("> {}", cell_text(l)))
            .collect();
        let _ = writeln!(o, "{}\n", lines.join("\n>\n"));
    }
    let _ = writeln!(o, "| | Before | After |\n|:--|:--|:--|");
    let hosts = |i: &SideInfo| code_list(&i.host.hosts);
    let _ = writeln!(
        o,
        "| **Host** | {} | {} |",
        hosts(&r.before),
        hosts(&r.after)
    );
    let _ = writeln!(
        o,
        "| **System** | {} | {} |",
        cell_text(&system_line(&r.before).join(" · ")),
        cell_text(&system_line(&r.after).join(" · "))
    );
    let _ = writeln!(
        o,
        "| **Observed** | {}<br><sub>{}</sub> | {}<br><sub>{}</sub> |",
        cell_text(&observed(&r.before)),
        span(&r.before),
        cell_text(&observed(&r.after)),
        span(&r.after)
    );
    let src = |i: &SideInfo| code_list(&i.sources);
    let _ = writeln!(
        o,
        "| **Read from** | {} | {} |\n",
        src(&r.before),
        src(&r.after)
    );

    let s = &r.summary;
    let _ = writeln!(
        o,
        "**{} of {} rows compared: {} better, {} worse{}, {} unchanged, {} shown for context{}.** \
         {} operator-entered (†), {} not measured.\n",
        s.compared,
        s.rows,
        s.better,
        s.worse,
        undecided(s.within_noise, s.not_judged)
            .iter()
            .map(|x| format!(", {x}"))
            .collect::<String>(),
        s.unchanged,
        s.changed,
        if s.undetermined > 0 {
            format!(", {} undetermined", s.undetermined)
        } else {
            String::new()
        },
        cells(s.operator_entered),
        cells(s.not_measured)
    );
    if let Some(g) = &r.gate {
        let pct = format::percent(g.threshold);
        if g.regressions.is_empty() {
            let _ = writeln!(
                o,
                "**Regression gate: passed.** No row got worse beyond the noise by more than {pct}.\n"
            );
        } else {
            let _ = writeln!(o, "**Regression gate: failed.** {}:\n", g.headline());
            for x in &g.regressions {
                let _ = writeln!(
                    o,
                    "- ❌ **{}** (`{}`): {}: {}",
                    cell_text(x.title),
                    x.row,
                    cell_text(&x.text),
                    cell_text(&x.why)
                );
            }
            o.push('\n');
        }
        if !g.passed.is_empty() {
            let _ = writeln!(o, "Passed, though worse than before:\n");
            for x in &g.passed {
                let _ = writeln!(
                    o,
                    "- **{}** (`{}`): {}: {}",
                    cell_text(x.title),
                    x.row,
                    cell_text(&x.text),
                    cell_text(&x.why)
                );
            }
            o.push('\n');
        }
    }
    let _ = writeln!(
        o,
        "{} ✅ better · ⚠️ worse · ≈ within noise · ○ not judged · = unchanged · † entered by an \
         operator, not measured by labnode. Rows without a mark are shown for context.\n",
        cell_text(&noise_rule())
    );

    for g in &r.groups {
        let _ = writeln!(o, "## {}\n", cell_text(g.title));
        let _ = writeln!(
            o,
            "<sub>Original claims: {}</sub>\n",
            cell_text(g.claims_source)
        );
        if claims {
            let _ = writeln!(
                o,
                "| Metric | Before | After | Change | Originally claimed |\n|:--|--:|--:|:--|:--|"
            );
        } else {
            let _ = writeln!(o, "| Metric | Before | After | Change |\n|:--|--:|--:|:--|");
        }
        for row in &g.rows {
            let b = cell(&row.before);
            let a = cell(&row.after);
            let ch = match &row.change {
                Some(c) => {
                    let mut t = format!(
                        "{}{}",
                        glyph(c.verdict, is_regression(r, row.id)),
                        cell_text(&c.text)
                    );
                    if let Some(n) = &c.noise {
                        let _ = write!(t, "<br><sub>{}</sub>", cell_text(&n.short));
                    }
                    t
                }
                None => String::new(),
            };
            let _ = write!(o, "| {} | {b} | {a} | {ch} |", cell_text(row.title));
            if claims {
                match &row.claimed {
                    Some(c) => {
                        let _ = write!(
                            o,
                            " <sub>{} → {}: {}</sub> |",
                            cell_text(c.before),
                            cell_text(c.after),
                            cell_text(c.improvement)
                        );
                    }
                    None => o.push_str(" |"),
                }
            }
            o.push('\n');
        }
        o.push('\n');
        if g.id == "rollback" {
            for w in &r.waterfall {
                waterfall(&mut o, w);
            }
        }
        let notes = notes(g);
        if !notes.is_empty() {
            for n in notes {
                let rows = n
                    .rows
                    .iter()
                    .map(|r| format!("**{}**", cell_text(r)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let line = match &n.at {
                    Some(at) => format!(
                        "† {rows}, {}: operator-entered (`{}`): {}",
                        n.sides,
                        at.replace('`', "'"),
                        cell_text(&n.text)
                    ),
                    None => format!("{rows}, {}: not measured: {}", n.sides, cell_text(&n.text)),
                };
                let _ = writeln!(o, "- <sub>{line}</sub>");
            }
            o.push('\n');
        }
    }

    let _ = writeln!(o, "<details><summary>How each row is measured</summary>\n");
    for g in &r.groups {
        for row in &g.rows {
            let _ = writeln!(
                o,
                "- **{}** (`{}`): {}",
                cell_text(row.title),
                row.id,
                cell_text(&row.how)
            );
        }
    }
    let _ = writeln!(o, "\n</details>\n");
    if !r.warnings.is_empty() {
        let _ = writeln!(o, "**Warnings**\n");
        for w in &r.warnings {
            let _ = writeln!(o, "- {}", cell_text(w));
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "<sub>labnode {} · report schema {}</sub>",
        r.labnode_version, r.schema
    );
    o
}

fn waterfall(o: &mut String, w: &Waterfall) {
    if w.before_n == 0 && w.after_n == 0 {
        return;
    }
    let secs = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), format::duration);
    let drills = |n: usize| format!("{n} drill{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        o,
        "**{} phases**, medians (before: {}, after: {})\n",
        capitalise(w.direction),
        drills(w.before_n),
        drills(w.after_n)
    );
    let _ = writeln!(o, "| Phase | Before | After |\n|:--|--:|--:|");
    for p in &w.phases {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            p.phase.replace('_', " "),
            secs(p.before),
            secs(p.after)
        );
    }
    let _ = writeln!(
        o,
        "| **every gate green** | **{}** | **{}** |\n",
        secs(w.before_total),
        secs(w.after_total)
    );
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The original claims, as `docs/claims.md` shows them: per group of the catalog, where
/// the original table makes its claims and, per row that has one, the claim beside the
/// row that measures it. Generated from the catalog; a test keeps the file in step.
pub fn claims_document() -> String {
    let mut o = String::new();
    o.push_str(
        "# The original claims\n\n\
         labnode was asked to fill a before/after table whose cells were claims, not\n\
         measurements (\"Rollback Time: 30+ minutes → <5 minutes, 6x faster\"). These are the\n\
         claims of that table that `labnode report` measures, grouped as the report groups\n\
         them; `labnode report --claims` prints each one beside the measured value.\n\
         Rows without a claim are measured because the claim needs them (a rollback's\n\
         success rate needs the drills that fail). Claims about parts labnode does not run\n\
         (Cilium, vector databases, LLM serving, WebAssembly) are not in the report.\n\n\
         Generated from the report's catalog (`agents/crates/report/src/catalog/table.rs`); the\n\
         test `claims_document` fails when this file is stale\n\
         (`LABNODE_BLESS=1 cargo test -p labnode-report --test claims` rewrites it).\n",
    );
    for g in crate::catalog::CATALOG {
        let _ = write!(
            o,
            "\n## {}\n\nClaimed in: {}\n\n",
            cell_text(g.title),
            cell_text(g.claims_source)
        );
        o.push_str("| Row (`id`) | Claimed before | Claimed after | Claimed improvement |\n|:--|:--|:--|:--|\n");
        for r in g.rows {
            let (b, a, i) = r
                .claimed
                .map_or(("-", "-", "-"), |c| (c.before, c.after, c.improvement));
            let _ = writeln!(
                o,
                "| {} (`{}`) | {} | {} | {} |",
                cell_text(r.title),
                r.id,
                cell_text(b),
                cell_text(a),
                cell_text(i)
            );
        }
    }
    o
}
