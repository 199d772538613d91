//! `labnode drill zfs`: the ZFS rollback drill on a scratch dataset.

use std::path::PathBuf;

use crate::cli::DrillZfsArgs;

/// Runs the drill and stores its result; `Err((exit code, message))` on failure.
#[cfg(feature = "zfs")]
pub fn run(args: DrillZfsArgs, snapshot_dir: PathBuf) -> Result<(), (u8, String)> {
    use labnode_core::host::{self, HostPaths};
    use labnode_core::snapshot::{self, Snapshot, Store};
    use labnode_zfs::drill::RECORD_KIND;
    use labnode_zfs::run_drill::{self, DrillOptions};

    snapshot::check_label(&args.label).map_err(|e| (2, format!("--label: {e}")))?;
    let dir = args.out.dir.unwrap_or(snapshot_dir);
    let opts = DrillOptions {
        dataset: args.dataset,
        files: args.files,
        file_size: args.file_size,
        lock_dir: args.lock_dir,
        progress: labnode_core::progress::Progress::detect(),
    };
    let result =
        run_drill::run(&opts).map_err(|e| (if e.is_usage() { 2 } else { 1 }, e.to_string()))?;
    let mut snap = Snapshot::new(&args.label, host::facts(&HostPaths::default()))
        .map_err(|e| (2, e.to_string()))?;
    snap.add_metrics("drill_zfs", &result.metrics());
    snap.add_record(RECORD_KIND, &result)
        .map_err(|e| (1, format!("cannot record the result: {e}")))?;
    let path = Store::new(&dir)
        .write(&snap)
        .map_err(|e| (1, format!("cannot write the snapshot: {e}")))?;
    let phases: Vec<String> = labnode_zfs::drill::PHASES
        .iter()
        .filter_map(|p| result.phases.get(*p).map(|s| format!("{p} {s:.3}s")))
        .collect();
    println!(
        "{}: {} of {} files verified after rollback; {}; recovery {}",
        result.dataset,
        result.verified,
        result.files,
        phases.join(", "),
        result
            .recovery_seconds
            .map_or_else(|| "not reached".to_owned(), |r| format!("{r:.3}s"))
    );
    println!("{}", path.display());
    if result.success {
        return Ok(());
    }
    let why = result.error.clone().unwrap_or_else(|| {
        format!(
            "{} files did not come back: {}",
            result.mismatched.len(),
            result.mismatched.join("; ")
        )
    });
    Err((1, format!("the drill failed: {why}")))
}

/// Without libzfs there is no drill.
#[cfg(not(feature = "zfs"))]
pub fn run(_args: DrillZfsArgs, _snapshot_dir: PathBuf) -> Result<(), (u8, String)> {
    Err((
        2,
        "this labnode was built without the zfs feature (no libzfs): `drill zfs` is not available"
            .into(),
    ))
}
