//! `labnode report`: before and after, from snapshots or from Prometheus.

use labnode_report::input::{self, Side};
use labnode_report::output::{self, Format};
use labnode_report::prometheus::{self, Range};
use labnode_report::{Options, operator};

use crate::cli::ReportArgs;
use crate::exit::Failure;

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
        // Why each row whose medians got worse passed, then why any failed.
        for p in &gate.passed {
            eprintln!("labnode: gate: passed {} ({}): {}", p.row, p.text, p.why);
        }
        if !gate.regressions.is_empty() {
            let mut msg = format!("{}:", gate.headline());
            for r in &gate.regressions {
                msg.push_str(&format!(
                    "\n  {} ({}): {}: {}",
                    r.row, r.title, r.text, r.why
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
        None => crate::cmd::config::load_config(args.config.path.as_ref())?.snapshot_dir(),
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
