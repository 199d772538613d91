//! `labnode collect`: every collector once, one snapshot.

use std::path::PathBuf;
use std::time::Duration;

use labnode_core::host;
use labnode_core::hub;
use labnode_core::snapshot::{self, Snapshot, Store};

use crate::cli::CollectArgs;
use crate::cmd::config::load_config;
use crate::cmd::serve::runtime;
use crate::config::Config;
use crate::exit::Failure;

/// `labnode collect`.
pub fn collect(args: CollectArgs) -> Result<(), Failure> {
    snapshot::check_label(&args.label).map_err(|e| Failure::usage(format!("--label: {e}")))?;
    let cfg = load_config(args.config.path.as_ref())?;
    let dir = args.out.dir.clone().unwrap_or_else(|| cfg.snapshot_dir());
    let c = collect_once(&cfg, &args.collectors, &args.label, &dir)?;
    for (name, why) in &c.down {
        eprintln!("labnode: collector {name} is down: {why}");
    }
    println!(
        "{} ({} samples, {}/{} collectors up)",
        c.path.display(),
        c.samples,
        c.total - c.down.len(),
        c.total
    );
    Ok(())
}

/// What one run of the collectors wrote.
pub struct Collected {
    /// The snapshot file.
    pub path: PathBuf,
    /// Samples in it.
    pub samples: usize,
    /// Collectors that ran.
    pub total: usize,
    /// Those that were down, with why.
    pub down: Vec<(String, String)>,
}

/// Runs the collectors of `cfg` (the named ones, or every enabled one) once and writes one
/// snapshot labelled `label` to `dir`: `labnode collect`, and each side of `labnode demo`.
pub fn collect_once(
    cfg: &Config,
    names: &[String],
    label: &str,
    dir: &std::path::Path,
) -> Result<Collected, Failure> {
    let collectors = cfg.build(names).map_err(Failure::usage)?;
    let host_paths = cfg.host_paths();
    let rt = runtime()?;
    let runs = rt.block_on(async {
        let handles: Vec<_> = collectors
            .iter()
            .map(|c| tokio::spawn(hub::run_once(c.clone())))
            .collect();
        let mut runs = Vec::new();
        for h in handles {
            match h.await {
                Ok((run, _)) => runs.push(run),
                Err(e) => tracing::error!("collector task failed: {e}"),
            }
        }
        runs
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    let snap = Snapshot::from_runs(label, host::facts(&host_paths), &runs)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let path = Store::new(dir)
        .write(&snap)
        .map_err(|e| Failure::runtime(format!("cannot write the snapshot: {e}")))?;
    Ok(Collected {
        path,
        samples: snap.samples.len(),
        total: runs.len(),
        down: runs
            .iter()
            .filter_map(|r| {
                r.failure
                    .as_ref()
                    .map(|(_, why)| (r.collector.to_string(), why.to_string()))
            })
            .collect(),
    })
}
