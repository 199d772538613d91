//! `labnode net serve|bench`: the flags into the options of `labnode_netprobe::run`.

use labnode_netprobe::run::{self, BenchOptions, RunError, ServeOptions};

use crate::cli::{NetBenchArgs, NetCommand, NetServeArgs};
use crate::cmd::config::load_config;
use crate::exit::Failure;

/// `labnode net ...`.
pub fn net(cmd: NetCommand) -> Result<(), Failure> {
    let cfg = load_config(cmd.config())?;
    match cmd {
        NetCommand::Serve(a) => run::serve(serve_options(a)),
        NetCommand::Bench(a) => {
            let dir = a.out.clone().unwrap_or_else(|| cfg.snapshot_dir());
            run::bench(bench_options(a), dir)
        }
    }
    .map_err(|e: RunError| Failure {
        code: e.code,
        message: e.message,
    })
}

fn serve_options(a: NetServeArgs) -> ServeOptions {
    ServeOptions {
        listen: a.listen,
        token_file: a.token_file,
        allow: a.allow,
        max_duration: a.max_duration,
        max_tests: a.max_tests,
        max_streams: a.max_streams,
        identity: a.identity,
        quic_ports: a.quic_ports,
    }
}

fn bench_options(a: NetBenchArgs) -> BenchOptions {
    BenchOptions {
        peer: a.peer,
        token_file: a.token_file,
        tcp: a.tcp,
        quic: a.quic,
        streams: a.streams,
        duration: a.duration,
        fingerprint: a.fingerprint,
        path: a.path,
        json: a.json,
        label: a.label,
    }
}
