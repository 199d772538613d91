//! The noise rule on whole reports: one run a side is never a verdict; two sides drawn
//! from the same noisy distribution are within noise on every row; a shift larger than the
//! noise is judged.
//!
//! The noisy sides are made here from the `after` fixtures: six copies of each snapshot
//! per side, every measured gauge (times, rates of data, sizes, power, shares) multiplied
//! by its own factor drawn uniformly from 1 ± 30% (the same-distribution pair: enough to
//! move medians past the minimum effect) or 1 ± 10% (the shifted pair).
//! `LABNODE_BLESS=1` rewrites the golden Markdown of the same-distribution pair.

use std::path::Path;

use labnode_report::catalog::{self, Direction, Display};
use labnode_report::format::Verdict;
use labnode_report::input::{self, Side};
use labnode_report::operator::Operator;
use labnode_report::output::{Format, render};
use labnode_report::report::{Options, Report};
use serde_json::Value;

/// Copies per snapshot and side.
const COPIES: usize = 6;

/// Units whose gauges carry measurement noise (counts, flags and infos do not).
const NOISY_UNITS: &[&str] = &["seconds", "bytes_per_second", "bytes", "watts", "ratio"];

/// A deterministic stream of uniform numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes `COPIES` noisy copies of every `after` fixture into `dir`, each noisy value
/// multiplied by `shift` and by a factor drawn uniformly from `1 ± spread`, and reads them
/// as one side.
fn noisy_side(dir: &Path, seed: u64, shift: f64, spread: f64) -> Side {
    std::fs::create_dir_all(dir).expect("dir");
    let mut rng = Lcg(seed);
    let mut fixtures: Vec<_> = std::fs::read_dir("tests/fixtures/after")
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    fixtures.sort();
    for (i, f) in fixtures.iter().enumerate() {
        let text = std::fs::read_to_string(f).expect("fixture");
        for k in 0..COPIES {
            let mut s: Value = serde_json::from_str(&text).expect("fixture json");
            // Distinct instants a millisecond apart, so no copy stands for another.
            let t = s["taken_at_unix"].as_f64().expect("time") + (k as f64) * 0.001;
            s["taken_at_unix"] = t.into();
            for x in s["samples"].as_array_mut().expect("samples") {
                let noisy = x["kind"] == "gauge"
                    && NOISY_UNITS.iter().any(|u| x["unit"] == *u)
                    && x["value"].as_f64().is_some_and(|v| v > 0.0);
                if noisy {
                    let v = x["value"].as_f64().expect("value");
                    let mut v = v * shift * (1.0 - spread + 2.0 * spread * rng.next());
                    if x["unit"] == "ratio" {
                        v = v.min(1.0);
                    }
                    x["value"] = v.into();
                }
            }
            let name = format!("{i:02}-{k}.json");
            std::fs::write(dir.join(name), s.to_string()).expect("write");
        }
    }
    let arg = dir.to_str().expect("utf-8 path").to_owned();
    let files = input::resolve(std::slice::from_ref(&arg), dir).expect("resolve");
    input::read_snapshots(vec![arg], &files).expect("read")
}

fn one(path: &str) -> Side {
    let files = input::resolve(&[path.to_owned()], Path::new("tests/fixtures")).expect("resolve");
    input::read_snapshots(vec![path.to_owned()], &files).expect("read")
}

/// Rows the noise rule applies to: numeric, judged by a direction, not yes/no.
fn judged_kind(id: &str) -> bool {
    let row = catalog::find(id).expect("catalog row");
    row.direction != Direction::Neutral && !matches!(row.display, Display::YesNo | Display::Text)
}

fn verdicts(r: &Report) -> Vec<(&'static str, Verdict)> {
    r.groups
        .iter()
        .flat_map(|g| &g.rows)
        .filter(|row| judged_kind(row.id))
        .filter_map(|row| row.change.as_ref().map(|c| (row.id, c.verdict)))
        .collect()
}

#[test]
fn one_run_a_side_is_never_better_or_worse() {
    // One network bench and one drill per side, from two releases that differ.
    for (b, a) in [
        (
            "tests/fixtures/after/20261124T173000.660Z-after.json",
            "tests/fixtures/candidate/20261125T173000.520Z-candidate.json",
        ),
        (
            "tests/fixtures/after/20261124T153000.730Z-after.json",
            "tests/fixtures/candidate/20261125T153000.610Z-candidate.json",
        ),
    ] {
        let r = labnode_report::build(&one(b), &one(a), &Operator::default(), &Options::default());
        let v = verdicts(&r);
        assert!(
            v.iter().any(|(_, v)| *v == Verdict::NotJudged),
            "{b} against {a}: something moved: {v:?}"
        );
        for (id, verdict) in v {
            assert!(
                !matches!(verdict, Verdict::Better | Verdict::Worse),
                "{id}: {verdict:?} from one run a side"
            );
        }
    }
}

#[test]
fn the_same_distribution_on_both_sides_is_within_noise() {
    let t = tempfile::tempdir().expect("tempdir");
    let before = noisy_side(&t.path().join("before"), 1, 1.0, 0.3);
    let after = noisy_side(&t.path().join("after"), 2, 1.0, 0.3);
    let r = labnode_report::build(&before, &after, &Operator::default(), &Options::default());
    let v = verdicts(&r);
    if std::env::var_os("LABNODE_NOISE_DEBUG").is_some() {
        eprintln!("{}", render(Format::Json, &r));
    }
    let within = v.iter().filter(|(_, v)| *v == Verdict::WithinNoise).count();
    assert!(
        within >= 10,
        "the noise moved the medians of many rows: {v:?}"
    );
    // Rows the noise moved past their minimum effect, that only the intervals hold back.
    let by_intervals = r
        .groups
        .iter()
        .flat_map(|g| &g.rows)
        .filter_map(|row| row.change.as_ref()?.noise.as_ref())
        .filter(|n| n.intervals_overlap == Some(true))
        .count();
    assert!(by_intervals >= 3, "{by_intervals}: {v:?}");
    for (id, verdict) in &v {
        assert!(
            matches!(verdict, Verdict::WithinNoise | Verdict::Unchanged),
            "{id}: {verdict:?} between two samples of one distribution"
        );
    }
    let md = render(Format::Md, &r)
        .replace(env!("CARGO_PKG_VERSION"), "VERSION")
        .replace(t.path().to_str().expect("utf-8 path"), "TMP");
    let path = Path::new("tests/golden/noise.md");
    if std::env::var_os("LABNODE_BLESS").is_some() {
        std::fs::write(path, &md).expect("bless");
    } else {
        let want = std::fs::read_to_string(path).expect("tests/golden/noise.md (LABNODE_BLESS=1)");
        assert!(
            want == md,
            "{} differs (LABNODE_BLESS=1 rewrites it)",
            path.display()
        );
    }
}

#[test]
fn a_shift_beyond_the_noise_is_judged() {
    let t = tempfile::tempdir().expect("tempdir");
    let before = noisy_side(&t.path().join("before"), 1, 1.0, 0.1);
    // Every noisy value 1.6 times larger: times and overheads worse, rates of data better.
    let after = noisy_side(&t.path().join("after"), 2, 1.6, 0.1);
    let r = labnode_report::build(&before, &after, &Operator::default(), &Options::default());
    let v = verdicts(&r);
    let judged = v
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Better | Verdict::Worse))
        .count();
    assert!(judged >= 10, "{v:?}");
    for row in r.groups.iter().flat_map(|g| &g.rows) {
        let Some(c) = row.change.as_ref().filter(|_| judged_kind(row.id)) else {
            continue;
        };
        // A 60% shift is far beyond 10% noise and any minimum effect: a row it leaves
        // within noise is one whose own runs spread wider than that (the age of the newest
        // snapshot, taken at different points of the snapshot cycle), or a ratio of two
        // shifted gauges, where the shift cancels; never for want of runs.
        match c.verdict {
            Verdict::Better | Verdict::Worse | Verdict::Unchanged => {}
            Verdict::WithinNoise => {
                let n = c.noise.as_ref().expect("noise");
                // Under the minimum effect (5%, 1 pp), which a 60% shift of a row's own
                // values would pass.
                let cancelled = n.intervals_overlap.is_none() && n.why.contains("minimum effect");
                assert!(
                    n.intervals_overlap == Some(true) || cancelled,
                    "{}: {}",
                    row.id,
                    n.why
                );
            }
            other => panic!("{}: {other:?} after a 60% shift", row.id),
        }
    }
    let row = |id: &str| {
        v.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{id}"))
    };
    assert_eq!(row("rollback_time"), Verdict::Worse);
    assert_eq!(row("rto_zfs"), Verdict::Worse);
    assert_eq!(row("net_deployed"), Verdict::Better);
    assert_eq!(row("net_rtt_loaded"), Verdict::Worse);
}
