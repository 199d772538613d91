//! Every clap type of the top level: the commands, and the arguments of `serve`,
//! `collect` and `config`. Each other subcommand's arguments live with its code under
//! `cmd/`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Measure a NixOS research node: export GPU, ZFS, network, rollback and system metrics
/// to Prometheus, save before/after snapshots, and compare them.
#[derive(Debug, Parser)]
#[command(name = "labnode", version)]
#[command(after_help = "Examples:\n  \
    sudo labnode demo                                # this machine before and after: the report\n  \
    labnode serve --config /etc/labnode/config.yaml  # Prometheus exporter on 127.0.0.1:9466\n  \
    labnode collect --label before --out snapshots   # one snapshot of this host\n  \
    labnode config check /etc/labnode/config.yaml    # validate a configuration file\n  \
    labnode generate man DIR                         # a man page per command\n  \
    labnode report --before before --after after     # the before/after table\n  \
    labnode drill rollback                           # the rollback drill's plan; --yes runs it\n  \
    sudo labnode safe-switch --to /nix/store/...     # switch behind health gates\n\n\
    Exit codes: 0 success, 1 failure while running, 2 bad arguments or configuration.\n\
    Logging: set LABNODE_LOG (e.g. LABNODE_LOG=debug).")]
pub struct Cli {
    #[command(subcommand)]
    /// The subcommand.
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure this machine before and after, for real, with embedded defaults, and write
    /// the report: the network (CUBIC without a tunnel, then BBR through WireGuard) between
    /// two network namespaces over an emulated link, a rollback drill on a scratch Nix
    /// profile, every collector. About a minute; needs root; removes all it made.
    Demo(crate::demo::DemoArgs),
    /// Run the Prometheus exporter: collectors poll in the background, /metrics serves
    /// their last results and never waits on one.
    Serve(ServeArgs),
    /// Run every enabled collector once and write one snapshot JSON file.
    Collect(CollectArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Compare a before and an after (snapshots or Prometheus ranges): Markdown, HTML, JSON.
    Report(Box<crate::cmd::report::ReportArgs>),
    /// Active network probe: `net serve` on one end, `net bench` on the other.
    #[command(subcommand)]
    Net(labnode_netprobe::cli::NetCommand),
    /// Drills: measure a recovery by doing it, then put everything back.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Switch to a new system generation behind health gates; roll back by itself when a
    /// gate stays red, activation fails, labnode dies or the host reboots first.
    SafeSwitch(crate::cmd::rollback::SafeSwitchArgs),
    /// Collect garbage without taking away what a rollback needs: keeps the newest N system
    /// generations whatever their age, behind the same lock as safe switches and drills.
    Gc(crate::cmd::rollback::GcArgs),
    /// Generate man pages or shell completions.
    #[command(subcommand)]
    Generate(crate::cmd::generate::GenerateCommand),
    /// Internal: what labnode runs inside its own units and processes.
    #[command(subcommand, hide = true)]
    Internal(InternalCommand),
}

#[derive(Debug, Subcommand)]
pub enum InternalCommand {
    /// Runs PROGRAM ARGS (a generation's switch-to-configuration), its output to LOG and
    /// stdout, its exit status to STATUS.
    Activation {
        /// The log file (appended to).
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        /// The status file (written when the program ends).
        #[arg(long, value_name = "FILE")]
        status: PathBuf,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Roll the system profile back one generation and forward again, timing every phase
    /// until every health gate is green. Prints the plan unless --yes.
    Rollback(crate::cmd::rollback::DrillRollbackArgs),
    /// Write a data set into a scratch dataset, snapshot, damage it, roll back and verify
    /// every file, timing each phase.
    Zfs(crate::cmd::drill_zfs::DrillZfsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML). Without it, every collector runs with its defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run only this collector (repeatable). Default: every collector enabled in the config.
    #[arg(long = "collector", value_name = "NAME")]
    pub collectors: Vec<String>,
    /// Address to listen on; overrides the config. Default 127.0.0.1:9466.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Name of this snapshot, e.g. `before` or `after` (letters, digits, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    pub label: String,
    /// Directory to write to; overrides the config. Default /var/lib/labnode/snapshots.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Configuration file (YAML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run only this collector (repeatable).
    #[arg(long = "collector", value_name = "NAME")]
    pub collectors: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without starting anything.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}
