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

mod cli;
mod cmd;
mod collectors;
mod config;
mod demo;
mod exit;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, ConfigCommand, DrillCommand, InternalCommand};
use crate::exit::Failure;

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
        Command::Serve(a) => cmd::serve::serve(a),
        Command::Collect(a) => cmd::collect::collect(a),
        Command::Config(ConfigCommand::Check { file }) => cmd::config::config_check(file),
        Command::Report(a) => cmd::report::run(*a),
        Command::Net(c) => cmd::net::net(c),
        Command::Drill(DrillCommand::Rollback(a)) => cmd::rollback::drill(a),
        Command::SafeSwitch(a) => cmd::rollback::safe_switch(a),
        Command::Gc(a) => cmd::rollback::run_gc(a),
        Command::Internal(_) => Ok(()),
        Command::Generate(g) => cmd::generate::run(g, Cli::command()),
        Command::Drill(DrillCommand::Zfs(a)) => cmd::config::load_config(a.config.path.as_ref())
            .and_then(|cfg| {
                cmd::drill_zfs::run(a, cfg.snapshot_dir())
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
