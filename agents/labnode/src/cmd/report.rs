//! `labnode report`: before and after, from snapshots or from Prometheus.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use labnode_report::input::{self, Side};
use labnode_report::output::{self, Format};
use labnode_report::prometheus::{self, Range};
use labnode_report::{Options, operator};

use crate::exit::Failure;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    labnode report --before before --after after --format md,html,json --out report/\n  \
    labnode report --before old.json --after snaps/ --operator before-values.yaml --claims\n  \
    labnode report --before baseline --after after --fail-on-regression 20%\n  \
    labnode report --prometheus http://127.0.0.1:9090 --instance c220g5 \\\n      \
    --before-range 2026-11-20T09:00:00Z..2026-11-20T10:00:00Z --after-range now-1h..now\n\n\
    Exit codes: 0 report written, 1 a failure while running or a regression past the gate,\n\
    2 bad arguments, unreadable or foreign snapshots, or a bad operator file.")]
pub struct ReportArgs {
    /// The old system: snapshot files, directories of them, or labels in the store
    /// (repeatable). Several snapshots are summarised: median, p95, n.
    #[arg(
        long,
        value_name = "FILE|DIR|LABEL",
        required_unless_present = "prometheus"
    )]
    before: Vec<String>,
    /// The new system, as for --before.
    #[arg(
        long,
        value_name = "FILE|DIR|LABEL",
        required_unless_present = "prometheus"
    )]
    after: Vec<String>,
    /// Snapshot store searched for labels. Default: the config's snapshot_dir.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Configuration file (YAML), for snapshot_dir.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Operator-entered values (YAML): numbers nobody can measure any more, shown as such.
    #[arg(long, value_name = "FILE")]
    operator: Option<PathBuf>,
    /// Output formats, comma-separated: md, html, json.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "md",
        value_name = "FORMATS"
    )]
    format: Vec<Format>,
    /// Directory to write report.md, report.html, report.json to. Without it, the one
    /// format asked for goes to standard output.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Show the original claims table's values beside the measured ones.
    #[arg(long)]
    claims: bool,
    /// Exit 1, naming every row, when a row got worse by more than this, e.g. 20%.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    fail_on_regression: Option<f64>,
    /// The report's title.
    #[arg(long, value_name = "TEXT")]
    title: Option<String>,
    /// Read both sides from this Prometheus server's HTTP API (http://HOST:PORT[/PREFIX]).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["before", "after"],
        requires_all = ["before_range", "after_range"]
    )]
    prometheus: Option<String>,
    /// The before range: T1..T2, each RFC 3339, Unix seconds, `now` or `now-DURATION`.
    #[arg(long, value_name = "T1..T2", value_parser = parse_range, requires = "prometheus")]
    before_range: Option<Range>,
    /// The after range, as for --before-range.
    #[arg(long, value_name = "T1..T2", value_parser = parse_range, requires = "prometheus")]
    after_range: Option<Range>,
    /// Only series with this `instance` label (one node of several).
    #[arg(long, value_name = "NAME", requires = "prometheus")]
    instance: Option<String>,
    /// Resolution of the Prometheus ranges. Default: the range / 250, at least 1s.
    #[arg(long, value_name = "DURATION", value_parser = parse_step, requires = "prometheus")]
    step: Option<Duration>,
    /// Timeout of each Prometheus request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_step)]
    timeout: Duration,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let n = s.trim().strip_suffix('%').unwrap_or(s.trim());
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v / 100.0),
        _ => Err(format!("`{s}` is not a percentage such as 20%")),
    }
}

fn parse_range(s: &str) -> Result<Range, String> {
    prometheus::parse_range(s, std::time::SystemTime::now()).map_err(|e| e.to_string())
}

fn parse_step(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a duration such as 15s or 1m"))
}

/// Runs `labnode report`.
pub fn run(args: ReportArgs) -> Result<(), Failure> {
    if args.out.is_none() && args.format.len() > 1 {
        return Err(Failure::usage(
            "--format with several formats writes several files: give --out DIR",
        ));
    }
    let operator = match &args.operator {
        Some(p) => operator::load(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => operator::Operator::default(),
    };
    let t0 = std::time::Instant::now();
    let (before, after) = match &args.prometheus {
        Some(url) => from_prometheus(&args, url)?,
        None => from_snapshots(&args)?,
    };
    let opts = Options {
        claims: args.claims,
        gate: args.fail_on_regression,
        title: args.title.clone(),
        setup: Vec::new(),
    };
    let t1 = std::time::Instant::now();
    let report = labnode_report::build(&before, &after, &operator, &opts);
    let t2 = std::time::Instant::now();
    tracing::debug!(
        "read {} + {} observations in {:?}, built the report in {:?}",
        before.observations.len(),
        after.observations.len(),
        t1 - t0,
        t2 - t1
    );
    match &args.out {
        Some(dir) => {
            let written = output::write_all(dir, &args.format, &report)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            for p in written {
                println!("{}", p.display());
            }
        }
        None => {
            let format = args.format.first().copied().unwrap_or(Format::Md);
            print!("{}", output::render(format, &report));
        }
    }
    for w in &report.warnings {
        eprintln!("labnode: warning: {w}");
    }
    if let Some(gate) = &report.gate {
        if !gate.regressions.is_empty() {
            let mut msg = format!("{}:", gate.headline());
            for r in &gate.regressions {
                msg.push_str(&format!(
                    "\n  {} ({}): {}, {}",
                    r.row,
                    r.title,
                    r.text,
                    r.worse_text()
                ));
            }
            return Err(Failure::runtime(msg));
        }
    }
    Ok(())
}

fn from_snapshots(args: &ReportArgs) -> Result<(Side, Side), Failure> {
    let store = match &args.store {
        Some(s) => s.clone(),
        None => crate::cmd::config::load_config(args.config.as_ref())?.snapshot_dir(),
    };
    sides_from_store(&args.before, &args.after, &store)
}

/// Reads both sides: snapshot files, directories, or labels in `store` (`labnode report`,
/// and `labnode demo`'s labels `before` and `after`).
pub fn sides_from_store(
    before: &[String],
    after: &[String],
    store: &std::path::Path,
) -> Result<(Side, Side), Failure> {
    let files = |names: &[String], flag: &str| {
        input::resolve(names, store).map_err(|e| Failure::usage(format!("--{flag}: {e}")))
    };
    let wanted = vec![
        (before.to_vec(), files(before, "before")?),
        (after.to_vec(), files(after, "after")?),
    ];
    let mut sides = input::read_sides(wanted).map_err(|e| Failure::usage(e.to_string()))?;
    for (side, (names, flag)) in sides.iter().zip([(before, "before"), (after, "after")]) {
        if side.observations.is_empty() {
            return Err(Failure::usage(format!(
                "--{flag}: no snapshot labelled {} in {}",
                names.join(", "),
                store.display()
            )));
        }
    }
    let after = sides.pop().unwrap_or_default();
    let before = sides.pop().unwrap_or_default();
    Ok((before, after))
}

fn from_prometheus(args: &ReportArgs, url: &str) -> Result<(Side, Side), Failure> {
    let (Some(b), Some(a)) = (args.before_range, args.after_range) else {
        return Err(Failure::usage(
            "--prometheus needs --before-range and --after-range",
        ));
    };
    let client = prometheus::Client::new(url, args.timeout, args.instance.clone())
        .map_err(|e| Failure::usage(e.to_string()))?;
    let get = |r: Range, flag: &str| {
        let side = flag.trim_end_matches("-range");
        // A remote Prometheus can take seconds: a live line on a terminal, none in CI logs.
        let progress = labnode_core::progress::Progress::detect();
        progress.live(&format!("labnode: reading the {side} range from {url}..."));
        let read = client.side(r, args.step);
        progress.clear();
        read.map_err(|e| match e {
            prometheus::PromError::Empty { .. } => Failure::runtime(format!("--{flag}: {e}")),
            e => Failure::runtime(e.to_string()),
        })
    };
    Ok((get(b, "before-range")?, get(a, "after-range")?))
}
