//! Golden tests: fixed snapshot sets in, exact Markdown and JSON out.
//!
//! The fixtures under `tests/fixtures` follow the metric contract
//! (`docs/metrics.md`): `before` is a plain Debian host (system collector only,
//! the gpu collector down); `after` is the NixOS host with every collector, rollback drills,
//! safe switches, ZFS drills and network benches; `candidate` is that host one release
//! later with some rows worse (a WireGuard peer that never shook hands, the firewall's
//! default deny lost); `edge` holds broken and empty inputs. The regression pair reversed
//! (`improvement`) shows the same rows getting better, and a side against itself every row
//! unchanged, so every wording is seen better, worse and unchanged.
//!
//! `LABNODE_BLESS=1 cargo test -p labnode-report --test golden` rewrites the golden files;
//! read the diff before committing it.

use std::collections::BTreeSet;
use std::path::Path;

use labnode_report::catalog::{self, Wording};
use labnode_report::format::Verdict;
use labnode_report::input::{self, Side};
use labnode_report::operator::{self, Operator};
use labnode_report::output::{Format, render};
use labnode_report::report::{Cell, Options, Report};

fn side(args: &[&str]) -> Side {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let files = input::resolve(&args, Path::new("tests/fixtures")).expect("resolve");
    input::read_snapshots(args, &files).expect("read")
}

fn report(before: &[&str], after: &[&str], op: Option<&str>, opts: Options) -> Report {
    let operator = op.map_or_else(Operator::default, |p| {
        operator::load(Path::new(p)).expect("operator file")
    });
    labnode_report::build(&side(before), &side(after), &operator, &opts)
}

/// Compares `text` with `tests/golden/NAME`, or rewrites it under LABNODE_BLESS=1.
fn golden(name: &str, text: &str) {
    let text = text.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    let path = Path::new("tests/golden").join(name);
    if std::env::var_os("LABNODE_BLESS").is_some() {
        std::fs::write(&path, &text).expect("bless");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LABNODE_BLESS=1 writes it)", path.display()));
    if want != text {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), text.lines().collect());
        let first = w
            .iter()
            .zip(&g)
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(g.len()));
        panic!(
            "{} differs from the output, first at line {}:\n want: {}\n  got: {}\n(LABNODE_BLESS=1 rewrites it; read the diff before committing)",
            path.display(),
            first + 1,
            w.get(first).unwrap_or(&"<end>"),
            g.get(first).unwrap_or(&"<end>")
        );
    }
}

fn debian_to_nixos() -> Report {
    report(
        &["tests/fixtures/before"],
        &["tests/fixtures/after"],
        Some("tests/fixtures/operator.yaml"),
        Options::default(),
    )
}

fn regression() -> Report {
    report(
        &["tests/fixtures/after"],
        &["tests/fixtures/candidate"],
        Some("tests/fixtures/operator-candidate.yaml"),
        Options {
            claims: true,
            gate: Some(0.2),
            title: Some("c220g5: release 43 against release 42".into()),
            setup: Vec::new(),
        },
    )
}

/// The regression pair reversed: the same rows getting better, in every wording.
fn improvement() -> Report {
    report(
        &["tests/fixtures/candidate"],
        &["tests/fixtures/after"],
        None,
        Options {
            gate: Some(0.2),
            title: Some("c220g5: release 42 against release 43".into()),
            ..Options::default()
        },
    )
}

/// One side against itself: every row it measures unchanged.
fn identical() -> Report {
    report(
        &["tests/fixtures/after"],
        &["tests/fixtures/after"],
        None,
        Options::default(),
    )
}

fn change_of<'a>(r: &'a Report, id: &str) -> &'a labnode_report::report::Change {
    r.groups
        .iter()
        .flat_map(|g| &g.rows)
        .find(|row| row.id == id)
        .and_then(|row| row.change.as_ref())
        .unwrap_or_else(|| panic!("{id}: no change"))
}

#[test]
fn debian_to_nixos_markdown_and_json() {
    let r = debian_to_nixos();
    golden("debian-to-nixos.md", &render(Format::Md, &r));
    golden("debian-to-nixos.json", &render(Format::Json, &r));
}

#[test]
fn regression_markdown_and_json() {
    let r = regression();
    golden("regression.md", &render(Format::Md, &r));
    golden("regression.json", &render(Format::Json, &r));
    let gate = r.gate.as_ref().expect("gate");
    let rows: Vec<&str> = gate.regressions.iter().map(|x| x.row).collect();
    assert_eq!(
        rows,
        [
            "rollback_time",
            "rto_nixos",
            "rpo",
            "net_deployed",
            "net_rtt_loaded",
            "net_cpu_per_gbit",
            "wireguard_up",
            "firewall_default_deny"
        ]
    );
    // The operator value for a measured row is not used, and says so.
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("after `rollback_success` was measured")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn improvement_markdown_and_the_better_wordings() {
    let r = improvement();
    golden("improvement.md", &render(Format::Md, &r));
    assert!(r.gate.as_ref().is_some_and(|g| g.regressions.is_empty()));
    // Lower is better, improving, in each wording such rows use.
    for (id, want) in [
        ("rollback_time", "1.6x faster"),
        ("net_rtt_loaded", "1.3x lower"),
        ("net_cpu_per_gbit", "-26%"),
        ("net_wireguard_cost", "-7.5 pp"),
        ("rpo", "3.31 h → 21.7 min"),
        ("firewall_default_deny", "no → yes"),
        ("wireguard_up", "+33 pp"),
    ] {
        let c = change_of(&r, id);
        assert_eq!(
            (c.verdict, c.text.as_str()),
            (Verdict::Better, want),
            "{id}"
        );
    }
}

#[test]
fn a_lost_yes_is_a_regression_at_any_threshold() {
    let c = change_of(&regression(), "firewall_default_deny").clone();
    assert_eq!((c.verdict, c.text.as_str()), (Verdict::Worse, "yes → no"));
    // Even with a threshold above the 100% a yes -> no amounts to.
    let r = report(
        &["tests/fixtures/after"],
        &["tests/fixtures/candidate"],
        None,
        Options {
            gate: Some(1.5),
            ..Options::default()
        },
    );
    let rows: Vec<&str> = r
        .gate
        .as_ref()
        .expect("gate")
        .regressions
        .iter()
        .map(|x| x.row)
        .collect();
    assert_eq!(rows, ["rpo", "firewall_default_deny"]);
}

#[test]
fn every_direction_and_wording_is_covered() {
    let mut seen_wording = BTreeSet::new();
    let mut seen_verdict = BTreeSet::new();
    let mut seen_direction = BTreeSet::new();
    let mut seen_wording_verdict = BTreeSet::new();
    for r in [debian_to_nixos(), regression(), improvement(), identical()] {
        for row in r.groups.iter().flat_map(|g| &g.rows) {
            let Some(c) = &row.change else { continue };
            let cat = catalog::find(row.id).expect("catalog row");
            let wording = match cat.wording {
                Wording::Factor { .. } => "factor",
                Wording::Percent => "percent",
                Wording::FromTo => "from-to",
                Wording::Points => "points",
                Wording::State => "state",
            };
            seen_wording.insert(wording);
            seen_wording_verdict.insert(format!("{wording}/{:?}", c.verdict));
            seen_verdict.insert(format!("{:?}", c.verdict));
            seen_direction.insert(format!("{:?}/{:?}", cat.direction, c.verdict));
        }
    }
    assert_eq!(
        seen_wording.into_iter().collect::<Vec<_>>(),
        ["factor", "from-to", "percent", "points", "state"]
    );
    for v in [
        Verdict::Better,
        Verdict::Worse,
        Verdict::Unchanged,
        Verdict::Changed,
        Verdict::Undetermined,
    ] {
        assert!(seen_verdict.contains(&format!("{v:?}")), "{v:?} never seen");
    }
    // Every wording getting better, worse and not changing: each can say "unchanged".
    for w in ["factor", "from-to", "percent", "points", "state"] {
        for v in [Verdict::Better, Verdict::Worse, Verdict::Unchanged] {
            let wv = format!("{w}/{v:?}");
            assert!(
                seen_wording_verdict.contains(&wv),
                "{wv} never seen: {seen_wording_verdict:?}"
            );
        }
    }
    for d in [
        "HigherIsBetter/Better",
        "HigherIsBetter/Worse",
        "HigherIsBetter/Unchanged",
        "LowerIsBetter/Better",
        "LowerIsBetter/Worse",
        "LowerIsBetter/Unchanged",
        "Neutral/Changed",
        "Neutral/Unchanged",
    ] {
        assert!(
            seen_direction.contains(d),
            "{d} never seen: {seen_direction:?}"
        );
    }
}

#[test]
fn missing_metrics_are_not_measured_never_a_crash() {
    let r = report(
        &["tests/fixtures/edge/empty.json"],
        &["tests/fixtures/edge/drill-only.json"],
        None,
        Options {
            gate: Some(0.2),
            ..Options::default()
        },
    );
    golden("missing.json", &render(Format::Json, &r));
    // Every format renders.
    for f in [Format::Md, Format::Html] {
        assert!(!render(f, &r).is_empty());
    }
    let measured: Vec<(&str, &str)> = r
        .groups
        .iter()
        .flat_map(|g| &g.rows)
        .flat_map(|row| {
            [("before", &row.before), ("after", &row.after)]
                .into_iter()
                .filter(|(_, c)| matches!(c, Cell::Measured(_)))
                .map(move |(side, _)| (row.id, side))
        })
        .collect();
    // The system collector was down: only the collector list and the one drill remain.
    assert_eq!(
        measured,
        [("rollback_success", "after"), ("collectors_up", "before")]
    );
    for row in r.groups.iter().flat_map(|g| &g.rows) {
        for c in [&row.before, &row.after] {
            if let Cell::NotMeasured { why } = c {
                assert!(!why.is_empty(), "{}: a reason", row.id);
            }
        }
    }
    assert!(r.gate.as_ref().is_some_and(|g| g.regressions.is_empty()));
}

#[test]
fn an_unknown_schema_version_is_refused() {
    let files = input::resolve(
        &["tests/fixtures/edge/schema-2.json".to_owned()],
        Path::new("tests/fixtures"),
    )
    .expect("resolve");
    let e = input::read_snapshots(vec![], &files)
        .expect_err("schema 2")
        .to_string();
    assert_eq!(
        e,
        "tests/fixtures/edge/schema-2.json: snapshot schema version 2, this labnode reads version 1"
    );
}

#[test]
fn labels_are_found_in_the_store_and_directories_read_whole() {
    let store = Path::new("tests/fixtures/candidate");
    let files = input::resolve(&["candidate".to_owned()], store).expect("label");
    assert_eq!(files.len(), 10);
    let e = input::resolve(&["nonesuch".to_owned()], store)
        .expect_err("unknown label")
        .to_string();
    assert!(
        e.starts_with("nonesuch: no such file or directory, and no snapshot labelled \"nonesuch\" in tests/fixtures/candidate"),
        "{e}"
    );
}

#[test]
fn text_from_files_is_escaped_in_html_and_markdown() {
    let t = tempfile::tempdir().expect("tempdir");
    let op = t.path().join("operator.yaml");
    std::fs::write(
        &op,
        "after:\n  secrets_outside_store:\n    value: yes\n    note: \"<script>alert(1)</script> | <img src=x onerror=alert(2)>\"\n",
    )
    .expect("write");
    let r = report(
        &["tests/fixtures/before"],
        &["tests/fixtures/after"],
        Some(op.to_str().expect("utf-8 path")),
        Options {
            title: Some("<b>title</b> | x".into()),
            setup: vec!["Set up <u>so</u> | y".into()],
            ..Options::default()
        },
    );
    let html = render(Format::Html, &r);
    assert!(html.contains("<div class=\"setup\"><p>Set up &lt;u&gt;so&lt;/u&gt; | y</p></div>"));
    assert!(!html.contains("<script"), "a script got through");
    assert!(!html.contains("<img"), "an element got through");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("<title>&lt;b&gt;title&lt;/b&gt; | x</title>"));
    let md = render(Format::Md, &r);
    assert!(!md.contains("<script") && !md.contains("<img"), "{md}");
    assert!(
        md.contains("&lt;script&gt;alert(1)&lt;/script&gt; \\| &lt;img"),
        "{md}"
    );
    assert!(md.starts_with(
        "# &lt;b&gt;title&lt;/b&gt; \\| x\n\n> Set up &lt;u&gt;so&lt;/u&gt; \\| y\n\n"
    ));
    assert_eq!(
        serde_json::to_value(&r).expect("json")["setup"],
        serde_json::json!(["Set up <u>so</u> | y"])
    );
}
