//! The report as one self-contained HTML file: inline CSS and SVG, no script, no external
//! resource, laid out for the screen and for A4 paper.

use std::fmt::Write;

use crate::catalog::Display;
use crate::explain::{noise_rule, notes, observed, span, system_line, undecided};
use crate::format::{self, Verdict};
use crate::model::{Cell, GroupOut, Report, RowOut, SideInfo, Waterfall};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --soft:#f8fafc;
  --before:#94a3b8; --after:#2563eb; --good:#15803d; --good-bg:#dcfce7; --bad:#b91c1c;
  --bad-bg:#fee2e2; --op:#b45309; --op-bg:#fef3c7; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width: 1060px; margin: 0 auto; padding: 32px 28px 48px; }
header { border-bottom: 2px solid var(--ink); padding-bottom: 18px; margin-bottom: 8px; }
.kicker { text-transform: uppercase; letter-spacing: .12em; font-size: 11px; color: var(--muted); font-weight: 600; }
h1 { font-size: 28px; margin: 4px 0 16px; letter-spacing: -.01em; }
h2 { font-size: 19px; margin: 0; }
.setup { margin: -6px 0 16px; font-size: 13.5px; color: #334155; border-left: 3px solid var(--after); padding: 2px 0 2px 12px; }
.setup p { margin: 0 0 4px; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.side { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: var(--soft); }
.side h3 { margin: 0 0 6px; font-size: 12px; text-transform: uppercase; letter-spacing: .1em; display: flex; align-items: center; gap: 8px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; }
.side.before .swatch { background: var(--before); } .side.after .swatch { background: var(--after); }
.side dl { margin: 0; display: grid; grid-template-columns: 92px 1fr; gap: 3px 10px; font-size: 13px; }
.side dt { color: var(--muted); } .side dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .92em; }
.summary { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 16px; }
.chip { border-radius: 999px; padding: 3px 11px; font-size: 13px; font-weight: 600; border: 1px solid var(--line); background: #fff; }
.chip.good { background: var(--good-bg); color: var(--good); border-color: transparent; }
.chip.bad { background: var(--bad-bg); color: var(--bad); border-color: transparent; }
.chip.op { background: var(--op-bg); color: var(--op); border-color: transparent; }
.chip.zero { background: #fff; color: var(--muted); border-color: var(--line); font-weight: 500; }
.gate { margin-top: 14px; padding: 10px 14px; border-radius: 8px; font-weight: 600; }
.gate.pass { background: var(--good-bg); color: var(--good); }
.gate.fail { background: var(--bad-bg); color: var(--bad); }
.gate ul { margin: 6px 0 0; padding-left: 20px; font-weight: 400; }
.legend { color: var(--muted); font-size: 12.5px; margin: 14px 0 0; }
section.group { margin-top: 30px; }
.group-head { display: flex; align-items: baseline; justify-content: space-between; gap: 12px;
  border-bottom: 1px solid var(--line); padding-bottom: 6px; margin-bottom: 4px; break-after: avoid; }
.claims-source { color: var(--muted); font-size: 12px; text-align: right; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; table-layout: fixed; }
th { text-align: left; font-size: 11px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted);
  font-weight: 600; padding: 8px 10px 6px; border-bottom: 1px solid var(--line); }
th.num, td.num { text-align: right; }
td { padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
tr { break-inside: avoid; }
td.metric .id { color: var(--muted); font-size: 11px; }
.v { font-weight: 650; font-size: 15px; white-space: nowrap; }
.v.text { white-space: normal; font-size: 13.5px; }
.s { color: var(--muted); font-size: 11.5px; }
.badge { display: inline-block; border-radius: 4px; padding: 1px 6px; font-size: 11px; font-weight: 600; white-space: nowrap; }
.badge.op { background: var(--op-bg); color: var(--op); }
.nm { color: var(--muted); font-style: italic; font-size: 12.5px; }
.change .c { display: inline-block; max-width: 100%; border-radius: 5px; padding: 2px 8px; font-weight: 650; font-size: 13px; }
.c.better { background: var(--good-bg); color: var(--good); }
.c.worse { background: var(--bad-bg); color: var(--bad); }
.c.regression { background: var(--bad); color: #fff; }
.c.unchanged { background: var(--soft); color: var(--muted); border: 1px solid var(--line); }
.c.changed, .c.undetermined { color: var(--ink); border: 1px solid var(--line); }
.c.within-noise, .c.not-judged { color: var(--muted); border: 1px dashed var(--line); }
figure { margin: 14px 0 0; break-inside: avoid; }
figcaption { font-size: 12px; color: var(--muted); margin-bottom: 4px; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
.notes { margin: 10px 0 0; padding-left: 18px; color: var(--muted); font-size: 12px; }
.notes li { margin: 2px 0; }
.notes li.op { color: #78350f; }
.method { margin-top: 36px; border-top: 2px solid var(--ink); padding-top: 12px; }
.method dl { display: grid; grid-template-columns: 30% 1fr; gap: 6px 16px; font-size: 12.5px; margin: 10px 0 0; }
.method dt { font-weight: 600; } .method dd { margin: 0; color: #334155; overflow-wrap: anywhere; }
.warnings { margin-top: 20px; font-size: 12.5px; color: var(--op); }
footer { margin-top: 28px; color: var(--muted); font-size: 11.5px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 11px; }
  .page { max-width: none; padding: 0; }
  h1 { font-size: 22px; }
  section.group { margin-top: 18px; }
  td { padding: 5px 8px; } th { padding: 5px 8px; }
  .v { font-size: 12.5px; }
  .badge { font-size: 9.5px; padding: 0 4px; }
  a { color: inherit; text-decoration: none; }
}
@media (max-width: 720px) { .sides { grid-template-columns: 1fr; } table { table-layout: auto; } }
"#;

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let _ = writeln!(
        o,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<div class=\"page\">",
        esc(&r.title)
    );
    header(&mut o, r);
    o.push_str("<main>\n");
    for g in &r.groups {
        group(&mut o, r, g);
    }
    method(&mut o, r);
    if !r.warnings.is_empty() {
        o.push_str("<div class=\"warnings\"><strong>Warnings</strong><ul>");
        for w in &r.warnings {
            let _ = write!(o, "<li>{}</li>", esc(w));
        }
        o.push_str("</ul></div>\n");
    }
    let _ = writeln!(
        o,
        "</main>\n<footer>labnode {} · report schema {} · every value is measured by labnode unless marked operator-entered</footer>\n</div>\n</body>\n</html>",
        esc(r.labnode_version),
        esc(r.schema)
    );
    o
}

fn side_box(o: &mut String, class: &str, title: &str, i: &SideInfo) {
    let hosts = i.host.hosts.join(", ");
    let _ = writeln!(
        o,
        "<section class=\"side {class}\"><h3><span class=\"swatch\"></span>{title}</h3><dl>\
         <dt>Host</dt><dd><code>{}</code></dd>\
         <dt>System</dt><dd>{}</dd>\
         <dt>Observed</dt><dd>{}<br><span class=\"s\">{}</span></dd>\
         <dt>Read from</dt><dd>{}</dd></dl></section>",
        esc(&hosts),
        esc(&system_line(i).join(" · ")),
        esc(&observed(i)),
        esc(&span(i)),
        i.sources
            .iter()
            .map(|s| format!("<code>{}</code>", esc(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn zero(n: usize) -> &'static str {
    if n == 0 { " zero" } else { "" }
}

fn header(o: &mut String, r: &Report) {
    let _ = writeln!(
        o,
        "<header>\n<div class=\"kicker\">labnode report</div>\n<h1>{}</h1>",
        esc(&r.title)
    );
    if !r.setup.is_empty() {
        o.push_str("<div class=\"setup\">");
        for line in &r.setup {
            let _ = write!(o, "<p>{}</p>", esc(line));
        }
        o.push_str("</div>\n");
    }
    o.push_str("<div class=\"sides\">\n");
    side_box(o, "before", "Before", &r.before);
    side_box(o, "after", "After", &r.after);
    o.push_str("</div>\n<div class=\"summary\">");
    let s = &r.summary;
    let _ = write!(
        o,
        "<span class=\"chip\">{} of {} rows compared</span>\
         <span class=\"chip good{}\">{} better</span>\
         <span class=\"chip bad{}\">{} worse</span>\
         <span class=\"chip\">{} unchanged</span>\
         <span class=\"chip\">{} for context</span>",
        s.compared,
        s.rows,
        zero(s.better),
        s.better,
        zero(s.worse),
        s.worse,
        s.unchanged,
        s.changed
    );
    for x in undecided(s.within_noise, s.not_judged) {
        let _ = write!(o, "<span class=\"chip\">{}</span>", esc(&x));
    }
    if s.undetermined > 0 {
        let _ = write!(
            o,
            "<span class=\"chip\">{} undetermined</span>",
            s.undetermined
        );
    }
    let _ = writeln!(
        o,
        "<span class=\"chip op{}\">{} operator-entered</span><span class=\"chip\">{} not measured</span></div>",
        zero(s.operator_entered),
        s.operator_entered,
        s.not_measured
    );
    if let Some(g) = &r.gate {
        let pct = format::percent(g.threshold);
        let item = |o: &mut String, title: &str, row: &str, text: &str, why: &str| {
            let _ = write!(
                o,
                "<li><strong>{}</strong> (<code>{}</code>): {}: {}</li>",
                esc(title),
                esc(row),
                esc(text),
                esc(why)
            );
        };
        if g.regressions.is_empty() {
            let _ = write!(
                o,
                "<div class=\"gate pass\">Regression gate passed: no row got worse beyond the noise by more than {pct}."
            );
        } else {
            let _ = write!(
                o,
                "<div class=\"gate fail\">Regression gate failed: {}.<ul>",
                g.headline()
            );
            for x in &g.regressions {
                item(o, x.title, x.row, &x.text, &x.why);
            }
            o.push_str("</ul>");
        }
        if !g.passed.is_empty() {
            o.push_str("<div class=\"s\">Passed, though worse than before:</div><ul>");
            for x in &g.passed {
                item(o, x.title, x.row, &x.text, &x.why);
            }
            o.push_str("</ul>");
        }
        o.push_str("</div>\n");
    }
    let _ = writeln!(
        o,
        "<p class=\"legend\">{} Bars in the charts are scaled per row; the line across a bar is \
         its 95% interval. Hatched bars and the <span class=\"badge op\">operator-entered</span> \
         mark are values an operator entered, not measurements.</p>\n</header>",
        esc(&noise_rule())
    );
}

fn is_regression(r: &Report, id: &str) -> bool {
    r.gate
        .as_ref()
        .is_some_and(|g| g.regressions.iter().any(|x| x.row == id))
}

fn cell(o: &mut String, c: &Cell, row: &RowOut) {
    // Texts and long units may wrap; a number with a short unit stays on one line.
    let text_class = if matches!(row.display, Display::Text | Display::CpuPerGigabit) {
        " text"
    } else {
        ""
    };
    match c {
        Cell::Measured(m) => {
            let _ = write!(
                o,
                "<td class=\"num\"><div class=\"v{text_class}\">{}</div>{}</td>",
                esc(&m.display),
                m.spread
                    .split(" · ")
                    .map(|p| format!("<div class=\"s\">{}</div>", esc(p)))
                    .collect::<String>()
            );
        }
        Cell::OperatorEntered(e) => {
            let _ = write!(
                o,
                "<td class=\"num\" title=\"{}\"><div class=\"v\">{}</div><div><span class=\"badge op\">operator-entered</span></div></td>",
                esc(&e.note),
                esc(&e.display)
            );
        }
        Cell::NotMeasured { why } => {
            let _ = write!(
                o,
                "<td class=\"num\" title=\"{}\"><span class=\"nm\">not measured</span></td>",
                esc(why)
            );
        }
    }
}

fn group(o: &mut String, r: &Report, g: &GroupOut) {
    let claims = g.rows.iter().any(|x| x.claimed.is_some());
    let _ = writeln!(
        o,
        "<section class=\"group\" id=\"{}\">\n<div class=\"group-head\"><h2>{}</h2><div class=\"claims-source\">Original claims: {}</div></div>",
        esc(g.id),
        esc(g.title),
        esc(g.claims_source)
    );
    if claims {
        o.push_str("<table>\n<colgroup><col style=\"width:31%\"><col style=\"width:15%\"><col style=\"width:15%\"><col style=\"width:19%\"><col style=\"width:20%\"></colgroup>\n");
    } else {
        o.push_str("<table>\n<colgroup><col style=\"width:38%\"><col style=\"width:18%\"><col style=\"width:18%\"><col style=\"width:26%\"></colgroup>\n");
    }
    o.push_str("<thead><tr><th>Metric</th><th class=\"num\">Before</th><th class=\"num\">After</th><th>Change</th>");
    if claims {
        o.push_str("<th>Originally claimed</th>");
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for row in &g.rows {
        let _ = write!(
            o,
            "<tr id=\"row-{}\"><td class=\"metric\">{}<div class=\"id\"><code>{}</code></div></td>",
            esc(row.id),
            esc(row.title),
            esc(row.id)
        );
        cell(o, &row.before, row);
        cell(o, &row.after, row);
        o.push_str("<td class=\"change\">");
        if let Some(c) = &row.change {
            let class = if is_regression(r, row.id) {
                "regression"
            } else {
                match c.verdict {
                    Verdict::Better => "better",
                    Verdict::Worse => "worse",
                    Verdict::Unchanged => "unchanged",
                    Verdict::Changed => "changed",
                    Verdict::Undetermined => "undetermined",
                    Verdict::WithinNoise => "within-noise",
                    Verdict::NotJudged => "not-judged",
                }
            };
            let _ = write!(o, "<span class=\"c {class}\">{}</span>", esc(&c.text));
            if let Some(n) = &c.noise {
                let _ = write!(
                    o,
                    "<div class=\"s\" title=\"{}\">{}</div>",
                    esc(&n.why),
                    esc(&n.short)
                );
            }
        }
        o.push_str("</td>");
        if claims {
            match &row.claimed {
                Some(c) => {
                    let _ = write!(
                        o,
                        "<td class=\"s\">{} → {}<br>{}</td>",
                        esc(c.before),
                        esc(c.after),
                        esc(c.improvement)
                    );
                }
                None => o.push_str("<td></td>"),
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
    bars(o, g);
    if g.id == "rollback" {
        waterfalls(o, &r.waterfall);
    }
    let notes = notes(g);
    if !notes.is_empty() {
        o.push_str("<ul class=\"notes\">");
        for n in notes {
            let rows = n
                .rows
                .iter()
                .map(|r| format!("<strong>{}</strong>", esc(r)))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = match &n.at {
                Some(at) => write!(
                    o,
                    "<li class=\"op\">{rows}, {}: operator-entered at <code>{}</code>: {}</li>",
                    esc(&n.sides),
                    esc(at),
                    esc(&n.text)
                ),
                None => write!(
                    o,
                    "<li>{rows}, {}: not measured: {}</li>",
                    esc(&n.sides),
                    esc(&n.text)
                ),
            };
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");
}

/// A side's numeric value for a chart, and whether an operator entered it.
fn num(c: &Cell) -> Option<(f64, String, bool)> {
    match c {
        Cell::Measured(m) => m.value.as_f64().map(|v| (v, m.display.clone(), false)),
        Cell::OperatorEntered(e) => e.value.as_f64().map(|v| (v, e.display.clone(), true)),
        Cell::NotMeasured { .. } => None,
    }
}

/// A measured cell's 95% interval, for the line across its bar.
fn interval(c: &Cell) -> Option<(f64, f64)> {
    match c {
        Cell::Measured(m) => m.interval.as_ref().map(|i| (i.low, i.high)),
        _ => None,
    }
}

const W: f64 = 1000.0;
const LABEL_W: f64 = 200.0;
const BAR_H: f64 = 13.0;

fn bars(o: &mut String, g: &GroupOut) {
    let rows: Vec<&RowOut> = g
        .rows
        .iter()
        .filter(|r| r.display != Display::Text)
        .filter(|r| num(&r.before).is_some() && num(&r.after).is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    let row_h = 2.0 * BAR_H + 16.0;
    let h = rows.len() as f64 * row_h + 26.0;
    let plot = W - LABEL_W - 110.0;
    let _ = writeln!(
        o,
        "<figure><figcaption>{}: rows measured on both sides, each scaled to its larger value (percentages to 100%)</figcaption>\n\
         <svg class=\"chart bars\" data-group=\"{}\" data-rows=\"{}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{}: before and after\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <defs><pattern id=\"hatch-{}\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
         <rect width=\"6\" height=\"6\" fill=\"#fef3c7\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#b45309\" stroke-width=\"2.5\"/></pattern></defs>",
        esc(g.title),
        esc(g.id),
        rows.len(),
        esc(g.title),
        esc(g.id)
    );
    // Legend.
    let _ = writeln!(
        o,
        "<g font-size=\"11\" fill=\"#64748b\"><rect x=\"{LABEL_W}\" y=\"4\" width=\"10\" height=\"10\" rx=\"2\" fill=\"#94a3b8\"/>\
         <text x=\"{}\" y=\"13\">before</text><rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" rx=\"2\" fill=\"#2563eb\"/>\
         <text x=\"{}\" y=\"13\">after</text><rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" rx=\"2\" fill=\"url(#hatch-{})\"/>\
         <text x=\"{}\" y=\"13\">operator-entered</text></g>",
        LABEL_W + 14.0,
        LABEL_W + 70.0,
        LABEL_W + 84.0,
        LABEL_W + 130.0,
        esc(g.id),
        LABEL_W + 144.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y0 = 26.0 + i as f64 * row_h;
        let b = num(&r.before);
        let a = num(&r.after);
        let fixed_scale = matches!(r.display, Display::Percent | Display::YesNo);
        // The scale holds both values and both intervals.
        let reach = [&r.before, &r.after]
            .into_iter()
            .filter_map(interval)
            .map(|(lo, hi)| lo.abs().max(hi.abs()))
            .fold(0.0f64, f64::max);
        let max = if fixed_scale {
            1.0f64
                .max(b.as_ref().map_or(0.0, |x| x.0))
                .max(a.as_ref().map_or(0.0, |x| x.0))
        } else {
            b.as_ref()
                .map_or(0.0, |x| x.0.abs())
                .max(a.as_ref().map_or(0.0, |x| x.0.abs()))
                .max(reach)
        };
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" font-size=\"11.5\" fill=\"#0f172a\" text-anchor=\"end\">{}</text>",
            LABEL_W - 10.0,
            y0 + BAR_H + 4.0,
            esc(r.short)
        );
        o.push_str(&format!(
            "<line x1=\"{LABEL_W}\" y1=\"{}\" x2=\"{LABEL_W}\" y2=\"{}\" stroke=\"#cbd5e1\"/>\n",
            y0 - 2.0,
            y0 + 2.0 * BAR_H + 4.0
        ));
        let cells = [&r.before, &r.after];
        for (k, (side, v, color)) in [("before", &b, "#94a3b8"), ("after", &a, "#2563eb")]
            .into_iter()
            .enumerate()
        {
            let y = y0 + k as f64 * (BAR_H + 2.0);
            let x_of = |v: f64| {
                if max > 0.0 {
                    (v.abs() / max * plot).max(0.0)
                } else {
                    0.0
                }
            };
            match v {
                Some((v, shown, op)) => {
                    let w = x_of(*v);
                    // The interval's line, with a tick at each end; the value's label goes
                    // after whichever ends further right.
                    let ci = interval(cells[k]);
                    let right = ci.map_or(w, |(lo, hi)| w.max(x_of(lo)).max(x_of(hi)));
                    let fill = if *op {
                        format!("url(#hatch-{})", esc(g.id))
                    } else {
                        color.to_owned()
                    };
                    let _ = writeln!(
                        o,
                        "<rect class=\"bar\" data-row=\"{}\" data-side=\"{side}\" data-value=\"{v}\" x=\"{LABEL_W}\" y=\"{y}\" width=\"{w:.2}\" height=\"{BAR_H}\" rx=\"2\" fill=\"{fill}\"><title>{}, {side}: {}</title></rect>\
                         <text x=\"{:.2}\" y=\"{}\" font-size=\"11\" fill=\"#334155\">{}</text>",
                        esc(r.id),
                        esc(r.short),
                        esc(shown),
                        LABEL_W + right + 5.0,
                        y + BAR_H - 2.5,
                        esc(shown)
                    );
                    if let Some((lo, hi)) = ci {
                        let (x1, x2) = (LABEL_W + x_of(lo), LABEL_W + x_of(hi));
                        let (ym, yt, yb) = (y + BAR_H / 2.0, y + 2.0, y + BAR_H - 2.0);
                        let _ = writeln!(
                            o,
                            "<path class=\"interval\" data-row=\"{}\" data-side=\"{side}\" data-low=\"{lo}\" data-high=\"{hi}\" \
                             d=\"M{x1:.2} {yt} V{yb} M{x1:.2} {ym} H{x2:.2} M{x2:.2} {yt} V{yb}\" stroke=\"#0f172a\" stroke-width=\"1.3\" fill=\"none\">\
                             <title>95% interval: {}</title></path>",
                            esc(r.id),
                            esc(&format::range(r.display, lo, hi))
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        o,
                        "<text class=\"missing\" data-row=\"{}\" data-side=\"{side}\" x=\"{}\" y=\"{}\" font-size=\"11\" font-style=\"italic\" fill=\"#94a3b8\">{side}: not measured</text>",
                        esc(r.id),
                        LABEL_W + 5.0,
                        y + BAR_H - 2.5
                    );
                }
            }
        }
    }
    o.push_str("</svg></figure>\n");
}

/// Round tick spacing for an axis up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

const PHASE_COLORS: &[&str] = &["#1e3a8a", "#2563eb", "#60a5fa", "#93c5fd"];

fn waterfalls(o: &mut String, ws: &[Waterfall]) {
    // One scale for every waterfall, so directions and sides compare at a glance.
    let mut max: f64 = 0.0;
    let mut panels = Vec::new();
    for w in ws {
        for (side, n, total, phases) in [
            (
                "before",
                w.before_n,
                w.before_total,
                w.phases.iter().map(|p| p.before).collect::<Vec<_>>(),
            ),
            (
                "after",
                w.after_n,
                w.after_total,
                w.phases.iter().map(|p| p.after).collect::<Vec<_>>(),
            ),
        ] {
            if n == 0 {
                continue;
            }
            let sum: f64 = phases.iter().flatten().sum();
            max = max.max(sum).max(total.unwrap_or(0.0));
            panels.push((w.direction, side, n, total, phases));
        }
    }
    if panels.is_empty() || max <= 0.0 {
        return;
    }
    let names = &ws[0].phases;
    let row_h = 20.0;
    let panel_h = (names.len() as f64 + 1.0) * row_h + 30.0;
    let h = panels.len() as f64 * panel_h + 30.0;
    let plot = W - LABEL_W - 80.0;
    let step = tick_step(max);
    let scale = |v: f64| v / (step * (max / step).ceil()) * plot;
    let _ = writeln!(
        o,
        "<figure><figcaption>Rollback drill phases (medians): each phase starts where the one before ended; the last bar is the recovery time until every health gate is green</figcaption>\n\
         <svg class=\"chart waterfall\" data-panels=\"{}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"Rollback phases\" xmlns=\"http://www.w3.org/2000/svg\">",
        panels.len()
    );
    // Axis.
    let ay = panels.len() as f64 * panel_h + 4.0;
    let _ = write!(
        o,
        "<line x1=\"{LABEL_W}\" y1=\"{ay}\" x2=\"{}\" y2=\"{ay}\" stroke=\"#94a3b8\"/>",
        LABEL_W + plot
    );
    let ticks = (max / step).ceil() as usize;
    for k in 0..=ticks {
        let v = k as f64 * step;
        let x = LABEL_W + scale(v);
        let _ = write!(
            o,
            "<line x1=\"{x:.2}\" y1=\"10\" x2=\"{x:.2}\" y2=\"{ay}\" stroke=\"#e2e8f0\" stroke-dasharray=\"2 3\"/>\
             <text x=\"{x:.2}\" y=\"{}\" font-size=\"10.5\" fill=\"#64748b\" text-anchor=\"middle\">{}</text>",
            ay + 14.0,
            esc(&format::duration(v))
        );
    }
    for (pi, (dir, side, n, total, phases)) in panels.iter().enumerate() {
        let y0 = pi as f64 * panel_h;
        let _ = writeln!(
            o,
            "<text x=\"0\" y=\"{}\" font-size=\"12.5\" font-weight=\"600\" fill=\"#0f172a\">{}, {side} <tspan fill=\"#64748b\" font-weight=\"400\">(median of {n} drill{})</tspan></text>",
            y0 + 16.0,
            esc(&capitalise(dir)),
            if *n == 1 { "" } else { "s" }
        );
        let mut start = 0.0;
        for (i, (p, v)) in names.iter().zip(phases).enumerate() {
            let y = y0 + 24.0 + i as f64 * row_h;
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" font-size=\"11.5\" fill=\"#334155\" text-anchor=\"end\">{}</text>",
                LABEL_W - 10.0,
                y + 12.0,
                esc(&p.phase.replace('_', " "))
            );
            match v {
                Some(v) => {
                    let x = LABEL_W + scale(start);
                    let w = scale(*v).max(1.0);
                    let _ = writeln!(
                        o,
                        "<rect class=\"bar phase\" data-direction=\"{}\" data-side=\"{side}\" data-phase=\"{}\" data-value=\"{v}\" x=\"{x:.2}\" y=\"{y}\" width=\"{w:.2}\" height=\"14\" rx=\"2\" fill=\"{}\"><title>{}: {}</title></rect>\
                         <text x=\"{:.2}\" y=\"{}\" font-size=\"11\" fill=\"#334155\">{}</text>",
                        esc(dir),
                        esc(p.phase),
                        PHASE_COLORS[i % PHASE_COLORS.len()],
                        esc(p.phase),
                        esc(&format::duration(*v)),
                        x + w + 5.0,
                        y + 11.5,
                        esc(&format::duration(*v))
                    );
                    start += v;
                }
                None => {
                    // A phase missing before one that was timed was skipped (e.g. no
                    // systemd to settle), not unreached.
                    let skipped = phases[i + 1..].iter().any(Option::is_some);
                    let _ = writeln!(
                        o,
                        "<text class=\"missing\" x=\"{}\" y=\"{}\" font-size=\"11\" font-style=\"italic\" fill=\"#94a3b8\">{}</text>",
                        LABEL_W + scale(start) + 5.0,
                        y + 11.5,
                        if skipped { "skipped" } else { "not reached" }
                    );
                }
            }
        }
        let y = y0 + 24.0 + names.len() as f64 * row_h;
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" font-size=\"11.5\" font-weight=\"600\" fill=\"#0f172a\" text-anchor=\"end\">every gate green</text>",
            LABEL_W - 10.0,
            y + 12.0
        );
        match total {
            Some(t) => {
                let w = scale(*t).max(1.0);
                let _ = writeln!(
                    o,
                    "<rect class=\"bar total\" data-direction=\"{}\" data-side=\"{side}\" data-value=\"{t}\" x=\"{LABEL_W}\" y=\"{y}\" width=\"{w:.2}\" height=\"14\" rx=\"2\" fill=\"#0f172a\"><title>recovery: {}</title></rect>\
                     <text x=\"{:.2}\" y=\"{}\" font-size=\"11\" font-weight=\"600\" fill=\"#0f172a\">{}</text>",
                    esc(dir),
                    esc(&format::duration(*t)),
                    LABEL_W + w + 5.0,
                    y + 11.5,
                    esc(&format::duration(*t))
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "<text class=\"missing\" x=\"{}\" y=\"{}\" font-size=\"11\" font-style=\"italic\" fill=\"#94a3b8\">never</text>",
                    LABEL_W + 5.0,
                    y + 11.5
                );
            }
        }
    }
    o.push_str("\n</svg></figure>\n");
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn method(o: &mut String, r: &Report) {
    o.push_str("<section class=\"method\"><h2>How each row is measured</h2><dl>\n");
    for g in &r.groups {
        for row in &g.rows {
            let _ = writeln!(
                o,
                "<dt>{} <code class=\"s\">{}</code></dt><dd>{}</dd>",
                esc(row.title),
                esc(row.id),
                esc(&row.how)
            );
        }
    }
    o.push_str("</dl></section>\n");
}
