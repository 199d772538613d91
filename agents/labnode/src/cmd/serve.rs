//! `labnode serve`: the collectors in the background, `/metrics` and `/healthz`.

use std::time::Duration;

use labnode_core::{Hub, http, hub};

use crate::cli::ServeArgs;
use crate::cmd::config::load_config;
use crate::exit::Failure;

/// A current-thread runtime for the collectors and the server.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
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

/// Raises the soft descriptor limit to the hard one (at most 65,536): a unit's default soft
/// limit (1,024) is what a flood of connections exhausts first; `http.max_connections`
/// bounds the rest.
fn raise_descriptor_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max.min(65_536)
        {
            r.rlim_cur = r.rlim_max.min(65_536);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                tracing::warn!(
                    "cannot raise the descriptor limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// `labnode serve`.
pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    let cfg = load_config(args.config.path.as_ref())?;
    let collectors = cfg.build(&args.collectors).map_err(Failure::usage)?;
    let listen = args.listen.unwrap_or_else(|| cfg.listen());
    let names: Vec<String> = collectors.iter().map(|c| c.name().to_owned()).collect();
    raise_descriptor_limit();
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
        http::serve(listener, hub, cfg.http_limits(), shutdown_signal())
            .await
            .map_err(|e| Failure::runtime(format!("server failed: {e}")))
    });
    // A collector stuck in a system call must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}
