//! Helper of `bench/report-speed`:
//!
//! - `report_bench generate DIR N`: writes N "before" and N "after" snapshots under
//!   DIR/before and DIR/after, cloned round-robin from the golden-test fixtures (a Debian
//!   host; the NixOS host with collect snapshots weighted four to one against drills and
//!   benches), timestamps a minute apart and measured gauges varied a little.
//! - `report_bench parse DIR...`: a peer: reads every snapshot file of the directories one
//!   after the other with the core's checking parser (`Snapshot::read`), nothing else.
//! - `report_bench read DIR...`: the other peer: reads them with the report's own reader
//!   (`input::read_snapshots`: one pass, the same threads), nothing else, so the report's
//!   time over this one is what summarising and rendering cost.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use labnode_core::Kind;
use labnode_core::snapshot::Snapshot;
use labnode_report::input;

fn fixtures(side: &str) -> Vec<PathBuf> {
    let dir = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures")
    .join(side);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn generate(dir: &Path, n: usize) -> Result<(), String> {
    for side in ["before", "after"] {
        let mut templates: Vec<Snapshot> = Vec::new();
        for f in fixtures(side) {
            let s = Snapshot::read(&f).map_err(|e| e.to_string())?;
            let weight = if s.records.is_empty() { 4 } else { 1 };
            for _ in 0..weight {
                templates.push(s.clone());
            }
        }
        if templates.is_empty() {
            return Err(format!("no fixtures for {side}"));
        }
        let out = dir.join(side);
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        for i in 0..n {
            let mut s = templates[i % templates.len()].clone();
            let jitter = 1.0 + 0.05 * (i as f64 * 0.7).sin();
            s.taken_at_unix += i as f64 * 60.0;
            for sample in &mut s.samples {
                if sample.kind == Kind::Gauge && sample.value.fract() != 0.0 {
                    sample.value *= jitter;
                }
            }
            let mut bytes = serde_json::to_vec_pretty(&s).map_err(|e| e.to_string())?;
            bytes.push(b'\n');
            let path = out.join(format!("{:06}-{side}.json", i));
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn parse(dirs: &[String]) -> Result<(), String> {
    let mut files = Vec::new();
    for d in dirs {
        let rd = std::fs::read_dir(d).map_err(|e| format!("{d}: {e}"))?;
        files.extend(rd.flatten().map(|e| e.path()));
    }
    files.sort();
    let start = Instant::now();
    let mut samples = 0;
    for f in &files {
        samples += Snapshot::read(f).map_err(|e| e.to_string())?.samples.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"files\": {}, \"samples\": {samples}, \"seconds\": {secs}}}",
        files.len()
    );
    Ok(())
}

fn read(dirs: &[String]) -> Result<(), String> {
    let files = input::resolve(dirs, Path::new(".")).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let side = input::read_snapshots(dirs.to_vec(), &files).map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let samples: usize = side.observations.iter().map(|o| o.samples.len()).sum();
    println!(
        "{{\"files\": {}, \"samples\": {samples}, \"seconds\": {secs}}}",
        side.observations.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("generate") if args.len() == 3 => match args[2].parse() {
            Ok(n) => generate(Path::new(&args[1]), n),
            Err(_) => Err(format!("not a count: {}", args[2])),
        },
        Some("parse") if args.len() > 1 => parse(&args[1..]),
        Some("read") if args.len() > 1 => read(&args[1..]),
        _ => Err(
            "usage: report_bench generate DIR N | report_bench parse DIR... | report_bench read DIR..."
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("report_bench: {e}");
            ExitCode::from(2)
        }
    }
}
