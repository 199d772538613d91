//! `labnode net serve|bench`: the probe of `labnode_netprobe`.

use crate::cmd::config::load_config;
use crate::exit::Failure;

/// `labnode net ...`.
pub fn net(cmd: labnode_netprobe::cli::NetCommand) -> Result<(), Failure> {
    let cfg = load_config(cmd.config())?;
    labnode_netprobe::cli::run(cmd, cfg.snapshot_dir()).map_err(|e| Failure {
        code: e.code,
        message: e.message,
    })
}
