//! `labnode config check`, and loading the configuration file every command reads.

use std::path::PathBuf;

use crate::config::Config;
use crate::exit::Failure;

/// The configuration at `path`, or the defaults without one.
pub fn load_config(path: Option<&PathBuf>) -> Result<Config, Failure> {
    match path {
        Some(p) => Config::load(p).map_err(|e| Failure::usage(e.to_string())),
        None => Ok(Config::default()),
    }
}

/// `labnode config check FILE`.
pub fn config_check(file: PathBuf) -> Result<(), Failure> {
    let cfg = Config::load(&file).map_err(|e| Failure::usage(e.to_string()))?;
    println!(
        "{}: ok (listen {}, snapshots in {}, collectors: {})",
        file.display(),
        cfg.listen(),
        cfg.snapshot_dir().display(),
        cfg.enabled().join(", ")
    );
    Ok(())
}
