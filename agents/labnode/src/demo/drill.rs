//! The demo's rollback drill: a scratch Nix profile of two real generations (built offline
//! from `super::scratch`), whose activations each stop the other's service and
//! start their own, a small HTTP service (this binary's exporter) that answers only a few
//! seconds after it starts. The drill runs in-process with an HTTP health gate on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use labnode_rollback::Context;
use labnode_rollback::activation;
use labnode_rollback::gates::{self, Checker, Env as GateEnv};
use labnode_rollback::record::DrillRecord;

use super::scratch;

use super::guard::{Ctl, DemoError, Service};

/// How long the scratch service takes to answer after it starts: what a slow service
/// costs a rollback, and the floor of the measured recovery.
pub const START_DELAY: Duration = Duration::from_secs(2);

/// What the drill needs to know about the demo.
pub struct Env<'a> {
    /// Signals and progress.
    pub ctl: &'a Ctl,
    /// This binary (the scratch service).
    pub exe: &'a Path,
    /// The demo's temporary directory.
    pub tmp: &'a Path,
    /// The snapshot store.
    pub store: &'a Path,
}

/// A drill's result.
pub struct Drilled {
    /// The record written.
    pub record: DrillRecord,
    /// The generations built (left in the Nix store until `nix-collect-garbage`).
    pub store_paths: Vec<PathBuf>,
    /// The configuration it ran with: the store and the scratch profile, for the after
    /// side's collectors.
    pub config: crate::config::Config,
}

/// Single-quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The activation script of generation `n`: point the current-system link at itself, stop
/// the service the other generation started, start its own in a session of its own.
fn activation(env: &Env<'_>, n: u32, port: u16) -> String {
    let tmp = env.tmp.to_string_lossy();
    let web = format!("{tmp}/web");
    let service = format!(
        "sleep {}; exec {} serve --listen 127.0.0.1:{port} --collector system",
        START_DELAY.as_secs(),
        sh_quote(&env.exe.to_string_lossy())
    );
    format!(
        "set -e\n\
         ln -sfn \"$out\" {current}\n\
         mkdir -p {web}\n\
         if [ -f {pid} ]; then\n  \
           old=$(cat {pid}); kill -TERM \"-$old\" 2>/dev/null || true; i=0\n  \
           while [ $i -lt 100 ] && [ -e /proc/$old ] && ! grep -q '^State:.Z' /proc/$old/status 2>/dev/null; do sleep 0.05; i=$((i + 1)); done\n  \
           kill -KILL \"-$old\" 2>/dev/null || true; rm -f {pid}\n\
         fi\n\
         setsid sh -c {service} >>{log} 2>&1 </dev/null &\n\
         echo $! > {pid}\n\
         echo \"activated demo-web-v{n} ($1): its service answers on 127.0.0.1:{port} {delay} s after it starts\"\n",
        current = sh_quote(&format!("{tmp}/current-system")),
        web = sh_quote(&web),
        pid = sh_quote(&format!("{web}/pid")),
        log = sh_quote(&format!("{web}/log")),
        service = sh_quote(&service),
        delay = START_DELAY.as_secs(),
    )
}

/// The `rollback:` section the drill runs with (YAML, loaded like a configuration file).
pub fn config_yaml(tmp: &Path, store: &Path, port: u16) -> String {
    let t = tmp.display();
    format!(
        "# labnode demo: the rollback drill's configuration (generated)\n\
         snapshot_dir: {store}\n\
         rollback:\n  \
           profile: {t}/profiles/system\n  \
           current_system: {t}/current-system\n  \
           booted_system: {t}/booted-system\n  \
           state_dir: {t}/state\n  \
           arm: none\n  \
           activation_timeout: 30s\n  \
           settle_timeout: 10s\n  \
           gate_timeout: 20s\n  \
           gates:\n    \
             - name: web\n      \
               http: {{url: \"http://127.0.0.1:{port}/healthz\", body_contains: \"system\"}}\n",
        store = store.display(),
    )
}

fn free_port() -> Result<u16, DemoError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::Failed(format!("no free port on 127.0.0.1: {e}")))
}

/// Builds the scratch profile, starts its current generation, drills, and leaves the
/// service to `service` (stopped when the demo ends).
pub fn run(env: &Env<'_>, service: &mut Option<Service>) -> Result<Drilled, DemoError> {
    let ctl = env.ctl;
    let port = free_port()?;
    ctl.progress.step(&format!(
        "rollback: building a scratch Nix profile of 2 generations, each starting an HTTP service on 127.0.0.1:{port} that answers {} s after it starts",
        START_DELAY.as_secs()
    ));
    let specs: Vec<scratch::Spec> = (1..=2)
        .map(|n| scratch::Spec {
            name: format!("demo-web-v{n}"),
            activate: activation(env, n, port),
        })
        .collect();
    // The machine's settings, then what scratch generations need offline and without build
    // users, and no build logs left under /nix/var/log.
    let nix_config = format!(
        "{}\n{}\nkeep-build-log = false",
        std::env::var("NIX_CONFIG").unwrap_or_default(),
        scratch::OFFLINE_NIX_CONFIG
    );
    let paths = scratch::build(
        Path::new("nix-build"),
        &env.tmp.join("nix"),
        &specs,
        Some(&nix_config),
    )
    .map_err(|e| DemoError::Failed(format!("building the scratch generations: {e}")))?;
    ctl.check()?;
    let profile = env.tmp.join("profiles/system");
    scratch::profile(Path::new("nix-env"), &profile, &paths)
        .map_err(|e| DemoError::Failed(format!("making the scratch profile: {e}")))?;
    *service = Some(Service {
        pid_file: env.tmp.join("web/pid"),
    });
    let current = &paths[paths.len() - 1];
    let started = std::process::Command::new(activation::script_of(current))
        .arg("switch")
        .status()
        .map_err(|e| DemoError::Failed(format!("starting generation 2: {e}")))?;
    if !started.success() {
        return Err(DemoError::Failed(format!(
            "starting generation 2: its switch-to-configuration exited with {started}"
        )));
    }
    let cfg_path = env.tmp.join("drill.yaml");
    std::fs::write(&cfg_path, config_yaml(env.tmp, env.store, port))
        .map_err(|e| DemoError::Failed(format!("{}: {e}", cfg_path.display())))?;
    let config = crate::config::Config::load(&cfg_path)
        .map_err(|e| DemoError::Failed(format!("the demo's drill configuration: {e}")))?;
    let rb = config.rollback.clone().unwrap_or_default();
    // The drill starts from a healthy host: generation 2 runs and every gate is green.
    ctl.progress
        .live("waiting for generation 2's service to answer");
    let mut checker = Checker::new(GateEnv {
        systemd: rb.systemd_address(),
    });
    let start = Instant::now();
    for gate in gates::from_config(&rb) {
        loop {
            ctl.check()?;
            match checker.check(&gate.check, SystemTime::now(), Duration::from_secs(1)) {
                Ok(()) => break,
                Err(why) if start.elapsed() > START_DELAY + gate.timeout => {
                    return Err(DemoError::Failed(format!(
                        "generation 2 never turned gate {} green ({}): {why}",
                        gate.name,
                        gate.check.describe()
                    )));
                }
                Err(_) => ctl.sleep(gate.interval)?,
            }
        }
    }
    let ctx = Context {
        cfg: rb,
        config_file: Some(cfg_path),
        out: env.store.to_owned(),
        label: "after".into(),
        host_paths: labnode_core::host::HostPaths::default(),
        progress: ctl.progress,
        interrupted: labnode_rollback::signals::pending,
        lock_wait: Duration::ZERO,
    };
    ctl.progress
        .step("rollback: drilling (generation 2 -> 1 -> 2, until the service answers each time)");
    let done = match labnode_rollback::drill(&ctx, true) {
        Ok(labnode_rollback::DrillOutcome::Done(done)) => done,
        Ok(labnode_rollback::DrillOutcome::Planned(_)) => {
            return Err(DemoError::Failed("the drill only printed its plan".into()));
        }
        Err(e) => return Err(DemoError::Failed(format!("the rollback drill: {e}"))),
    };
    Ok(Drilled {
        record: done.record,
        store_paths: paths,
        config,
    })
}
