//! `labnode`: the one binary of the labnode agents.
//!
//! Each subcommand is a thin layer over a crate: `serve` and `collect` build the collectors
//! of the registry ([`collectors`]) from the configuration file ([`config`]) and run them
//! on `labnode_core`'s hub; `report` calls `labnode_report`; `drill rollback`,
//! `safe-switch` and `gc` call `labnode_rollback`; `drill zfs` calls `labnode_zfs`;
//! `net serve|bench` call `labnode_netprobe`; `demo` composes them all over
//! `labnode_netlab`; `generate` writes man pages, completions and the registry's export.
//! Failures carry their exit code: 0 success, 1 a failure while running, 2 bad arguments
//! or configuration.

mod collectors;
mod config;
mod demo;
mod drill_zfs;
mod generate;
mod report_cmd;
mod rollback;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use labnode_core::host;
use labnode_core::snapshot::{self, Snapshot, Store};
use labnode_core::{Hub, http, hub};

use crate::config::Config;

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
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure this machine before and after, for real, with embedded defaults, and write
    /// the report: the network (CUBIC without a tunnel, then BBR through WireGuard) between
    /// two network namespaces over an emulated link, a rollback drill on a scratch Nix
    /// profile, every collector. About a minute; needs root; removes all it made.
    Demo(demo::DemoArgs),
    /// Run the Prometheus exporter: collectors poll in the background, /metrics serves
    /// their last results and never waits on one.
    Serve(ServeArgs),
    /// Run every enabled collector once and write one snapshot JSON file.
    Collect(CollectArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Compare a before and an after (snapshots or Prometheus ranges): Markdown, HTML, JSON.
    Report(Box<report_cmd::ReportArgs>),
    /// Active network probe: `net serve` on one end, `net bench` on the other.
    #[command(subcommand)]
    Net(labnode_netprobe::cli::NetCommand),
    /// Drills: measure a recovery by doing it, then put everything back.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Switch to a new system generation behind health gates; roll back by itself when a
    /// gate stays red, activation fails, labnode dies or the host reboots first.
    SafeSwitch(rollback::SafeSwitchArgs),
    /// Collect garbage without taking away what a rollback needs: keeps the newest N system
    /// generations whatever their age, behind the same lock as safe switches and drills.
    Gc(rollback::GcArgs),
    /// Generate man pages or shell completions.
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
    /// Internal: what labnode runs inside its own units and processes.
    #[command(subcommand, hide = true)]
    Internal(InternalCommand),
}

#[derive(Debug, Subcommand)]
enum InternalCommand {
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
enum DrillCommand {
    /// Roll the system profile back one generation and forward again, timing every phase
    /// until every health gate is green. Prints the plan unless --yes.
    Rollback(rollback::DrillRollbackArgs),
    /// Write a data set into a scratch dataset, snapshot, damage it, roll back and verify
    /// every file, timing each phase.
    Zfs(drill_zfs::DrillZfsArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (YAML). Without it, every collector runs with its defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run only this collector (repeatable). Default: every collector enabled in the config.
    #[arg(long = "collector", value_name = "NAME")]
    collectors: Vec<String>,
    /// Address to listen on; overrides the config. Default 127.0.0.1:9466.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct CollectArgs {
    /// Name of this snapshot, e.g. `before` or `after` (letters, digits, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    label: String,
    /// Directory to write to; overrides the config. Default /var/lib/labnode/snapshots.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Configuration file (YAML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run only this collector (repeatable).
    #[arg(long = "collector", value_name = "NAME")]
    collectors: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file without starting anything.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, Failure> {
    match path {
        Some(p) => Config::load(p).map_err(|e| Failure::usage(e.to_string())),
        None => Ok(Config::default()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .thread_name("labnode-collect")
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let cfg = load_config(args.config.as_ref())?;
    let collectors = cfg.build(&args.collectors).map_err(Failure::usage)?;
    let listen = args.listen.unwrap_or_else(|| cfg.listen());
    let names: Vec<String> = collectors.iter().map(|c| c.name().to_owned()).collect();
    let rt = runtime()?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {listen}: {e}")))?;
        let hub = Hub::for_collectors(&collectors);
        let _tasks = hub::spawn_all(&collectors, &hub);
        tracing::info!(
            "serving http://{}/metrics with collectors: {}",
            listener.local_addr().unwrap_or(listen),
            if names.is_empty() {
                "(none)".into()
            } else {
                names.join(", ")
            }
        );
        http::serve(listener, hub, shutdown_signal())
            .await
            .map_err(|e| Failure::runtime(format!("server failed: {e}")))
    });
    // A collector stuck in a system call must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

fn collect(args: CollectArgs) -> Result<(), Failure> {
    snapshot::check_label(&args.label).map_err(|e| Failure::usage(format!("--label: {e}")))?;
    let cfg = load_config(args.config.as_ref())?;
    let dir = args.out.clone().unwrap_or_else(|| cfg.snapshot_dir());
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
struct Collected {
    /// The snapshot file.
    path: PathBuf,
    /// Samples in it.
    samples: usize,
    /// Collectors that ran.
    total: usize,
    /// Those that were down, with why.
    down: Vec<(String, String)>,
}

/// Runs the collectors of `cfg` (the named ones, or every enabled one) once and writes one
/// snapshot labelled `label` to `dir`: `labnode collect`, and each side of `labnode demo`.
fn collect_once(
    cfg: &Config,
    names: &[String],
    label: &str,
    dir: &std::path::Path,
) -> Result<Collected, Failure> {
    let collectors = cfg.build(names).map_err(Failure::usage)?;
    let host_paths = cfg
        .collectors
        .system
        .as_ref()
        .map(|s| s.paths())
        .unwrap_or_default();
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

fn config_check(file: PathBuf) -> Result<(), Failure> {
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

fn net(cmd: labnode_netprobe::cli::NetCommand) -> Result<(), Failure> {
    let cfg = load_config(cmd.config())?;
    labnode_netprobe::cli::run(cmd, cfg.snapshot_dir()).map_err(|e| Failure {
        code: e.code,
        message: e.message,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABNODE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (a terminal that hung up) is dropped: reporting
        // it would write to the same stderr and panic mid-switch.
        .log_internal_errors(false)
        .init();
    if let Command::Internal(InternalCommand::Activation { log, status, argv }) = &cli.command {
        let code = labnode_rollback::activation::wrapper_main(log, status, argv);
        return ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1));
    }
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Serve(a) => serve(a),
        Command::Collect(a) => collect(a),
        Command::Config(ConfigCommand::Check { file }) => config_check(file),
        Command::Report(a) => report_cmd::run(*a),
        Command::Net(cmd) => net(cmd),
        Command::Drill(DrillCommand::Rollback(a)) => rollback::drill(a),
        Command::SafeSwitch(a) => rollback::safe_switch(a),
        Command::Gc(a) => rollback::run_gc(a),
        Command::Internal(_) => Ok(()),
        Command::Generate(g) => generate::run(g, Cli::command()),
        Command::Drill(DrillCommand::Zfs(a)) => load_config(a.config.as_ref()).and_then(|cfg| {
            drill_zfs::run(a, cfg.snapshot_dir())
                .map_err(|(code, message)| Failure { code, message })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "labnode: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
