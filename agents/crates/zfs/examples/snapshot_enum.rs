//! Times one snapshot enumeration over every file system, in-process through libzfs, in
//! the mode named on the command line, for `bench/zfs-snapshots`:
//!
//! - `summary`: what the collector does (names and creation txgs only, then the creation
//!   time of each dataset's oldest and newest snapshot);
//! - `full`: every snapshot's properties fetched, as `zfs list -o name,creation` does, to
//!   show what skipping them saves;
//! - `exec CMD ARG...`: runs a command (the `zfs list` reference, a whole `labnode
//!   collect`) and times it the same way, counting the lines it prints.
//!
//! Prints `MODE<TAB>COUNT<TAB>SECONDS`.

use std::process::ExitCode;
use std::time::Instant;

use labnode_zfs::libzfs::LibZfs;

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "summary".into());
    if mode == "exec" {
        return exec(std::env::args().skip(2).collect());
    }
    let lib = match LibZfs::open() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("snapshot_enum: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let datasets = match lib.datasets() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("snapshot_enum: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut count = 0u64;
    for d in &datasets {
        let n = match mode.as_str() {
            "full" => lib.snapshots_full(&d.name).map(|v| v.len() as u64),
            "summary" => lib.snapshot_summary(&d.name).map(|s| s.count),
            other => {
                eprintln!("snapshot_enum: unknown mode {other:?} (summary or full)");
                return ExitCode::from(2);
            }
        };
        match n {
            Ok(n) => count += n,
            Err(e) => {
                eprintln!("snapshot_enum: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{mode}\t{count}\t{:.6}", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

fn exec(argv: Vec<String>) -> ExitCode {
    let Some((cmd, args)) = argv.split_first() else {
        eprintln!("snapshot_enum: exec needs a command");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let out = match std::process::Command::new(cmd).args(args).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("snapshot_enum: cannot run {cmd}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let took = start.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "snapshot_enum: {cmd} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return ExitCode::FAILURE;
    }
    let lines = out.stdout.iter().filter(|b| **b == b'\n').count();
    println!("exec\t{lines}\t{took:.6}");
    ExitCode::SUCCESS
}
