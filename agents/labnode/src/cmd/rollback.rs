//! `labnode drill rollback`, `labnode safe-switch` and `labnode gc`: the subcommands that
//! change the node. Their output never ends a run: a write to a terminal that hung up (or a
//! closed pipe) is dropped, and SIGINT, SIGTERM and SIGHUP are deferred until the step in
//! progress is done (the run then rolls back).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use labnode_core::progress::Progress;
use labnode_core::snapshot;
use labnode_rollback::gc::{GcPlan, gc};
use labnode_rollback::record::{DrillRecord, SafeSwitchRecord, Switch};
use labnode_rollback::signals::Interrupts;
use labnode_rollback::{Context, Recovered, RunError};

use crate::cli::{DrillRollbackArgs, GcArgs, NodeArgs, SafeSwitchArgs};
use crate::config::Config;
use crate::exit::Failure;

/// `println!` that drops what it cannot write instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The run's context from the flags every node-changing command shares; `--lock-wait`
/// defaults to `default_wait`.
fn context(
    node: NodeArgs,
    label: &str,
    out: Option<PathBuf>,
    default_wait: Duration,
) -> Result<Context, Failure> {
    let (config, profile) = (node.config.path.as_ref(), node.profile);
    snapshot::check_label(label).map_err(|e| Failure::usage(format!("--label: {e}")))?;
    let cfg: Config = crate::cmd::config::load_config(config)?;
    let mut rb = cfg.rollback.clone().unwrap_or_default();
    if let Some(p) = profile {
        let p = std::path::absolute(&p)
            .map_err(|e| Failure::usage(format!("--profile {}: {e}", p.display())))?;
        rb.profile = Some(p);
    }
    let host_paths = cfg.host_paths();
    Ok(Context {
        out: out.unwrap_or_else(|| cfg.snapshot_dir()),
        cfg: rb,
        config_file: config.cloned(),
        label: label.to_owned(),
        host_paths,
        progress: Progress::detect(),
        interrupted: labnode_rollback::signals::pending,
        lock_wait: node.lock_wait.unwrap_or(default_wait),
    })
}

fn failure(e: RunError) -> Failure {
    match e {
        RunError::Usage(m) => Failure::usage(m),
        other => Failure::runtime(other.to_string()),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}s"))
}

fn print_switches(switches: &[&Switch]) {
    out!(
        "  {:<12} {:>10} {:>11} {:>9} {:>10} {:>10}  result",
        "direction",
        "flip",
        "activation",
        "settled",
        "gates",
        "recovery"
    );
    for s in switches {
        out!(
            "  {:<12} {:>10} {:>11} {:>9} {:>10} {:>10}  {} (generation {} -> {})",
            s.direction,
            fmt_opt(s.phases.profile_flip),
            fmt_opt(s.phases.activation),
            fmt_opt(s.phases.units_settled),
            fmt_opt(s.phases.gates_green),
            fmt_opt(s.recovery_seconds),
            if s.success { "ok" } else { "FAILED" },
            s.from_generation.map_or("?".into(), |n| n.to_string()),
            s.to_generation.map_or("?".into(), |n| n.to_string()),
        );
    }
    for s in switches {
        for g in &s.gates {
            out!(
                "  {}: gate {} ({}) {} after {} checks",
                s.direction,
                g.name,
                g.kind,
                match g.first_pass_seconds {
                    Some(t) if g.passed => format!("green at {t:.3}s"),
                    Some(t) => format!(
                        "green at {t:.3}s, then red: {}",
                        g.last_error.as_deref().unwrap_or("?")
                    ),
                    None => format!("never green: {}", g.last_error.as_deref().unwrap_or("?")),
                },
                g.checks
            );
        }
        if let Some(e) = &s.error {
            out!("  {}: {e}", s.direction);
        }
        if let Some(why) = &s.settle_skipped {
            out!("  {}: units_settled not measured: {why}", s.direction);
        }
        if let Some(t) = s.phases.boot_default {
            out!(
                "  {}: made the boot default (switch-to-configuration boot) in {t:.3}s, after every gate was green",
                s.direction
            );
        }
    }
}

fn print_recovered(r: &Recovered) {
    out!(
        "finished an unfinished {} first: {} (snapshot {})",
        match r.marker.kind {
            labnode_rollback::state::MarkerKind::RollbackDrill => "rollback drill",
            labnode_rollback::state::MarkerKind::SafeSwitch => "safe switch",
        },
        r.summary,
        r.snapshot
            .as_ref()
            .map_or("none yet".into(), |p| p.display().to_string())
    );
}

fn print_drill(d: &DrillRecord) {
    out!(
        "rollback drill on {}: {}",
        d.profile.display(),
        if d.success { "success" } else { "FAILED" }
    );
    print_switches(&d.directions.iter().collect::<Vec<_>>());
    out!(
        "  ended on generation {}{}",
        d.ended_on_generation.map_or("?".into(), |n| n.to_string()),
        if d.ended_on_start {
            format!(
                " ({}), the generation it started from: verified (profile and running system)",
                d.start_store_path.display()
            )
        } else {
            format!(
                ", NOT the start generation {} ({})",
                d.start_generation.map_or("?".into(), |n| n.to_string()),
                d.start_store_path.display()
            )
        }
    );
    out!(
        "  labnode's own cost: {:.3} CPU seconds over {:.3}s",
        d.overhead.cpu_seconds,
        d.overhead.wall_seconds
    );
    if let Some(e) = &d.error {
        out!("  why it failed: {e}");
    }
}

fn print_switch(s: &SafeSwitchRecord) {
    out!(
        "safe switch to {}: {}",
        s.to_store_path.display(),
        match s.outcome {
            labnode_rollback::record::Outcome::Confirmed => "confirmed".to_owned(),
            labnode_rollback::record::Outcome::RolledBack => format!(
                "ROLLED BACK to generation {}",
                s.from_generation.map_or("?".into(), |n| n.to_string())
            ),
        }
    );
    let mut sw: Vec<&Switch> = Vec::new();
    sw.extend(s.switch.as_ref());
    sw.extend(s.rollback.as_ref());
    print_switches(&sw);
    if let Some(r) = &s.reason {
        out!("  why: {r}");
    }
    if let Some(d) = s.detect_seconds {
        out!(
            "  time to detect {d:.3}s, time to recover {}",
            fmt_opt(s.recover_seconds)
        );
    }
    out!(
        "  ended on generation {}, {}",
        s.ended_on_generation.map_or("?".into(), |n| n.to_string()),
        if s.healthy {
            "healthy"
        } else {
            "NOT healthy: every gate did not turn green"
        }
    );
}

fn snapshot_line(snapshot: Option<&PathBuf>, state_dir: &std::path::Path) {
    match snapshot {
        Some(p) => out!("  snapshot: {}", p.display()),
        None => out!(
            "  no record yet: the host is not healthy on the known-good generation; the marker stays in {} and the run's guard, the boot unit or `labnode safe-switch --recover --retry` tries again",
            state_dir.display()
        ),
    }
}

/// Defers SIGINT, SIGTERM and SIGHUP for a run that changes the node.
fn install_interrupts() -> Result<Interrupts, Failure> {
    Interrupts::install()
        .map_err(|e| Failure::runtime(format!("cannot catch SIGINT, SIGTERM and SIGHUP: {e}")))
}

/// `labnode drill rollback`.
pub fn drill(a: DrillRollbackArgs) -> Result<(), Failure> {
    let ctx = context(a.node, &a.label, a.out.dir, Duration::ZERO)?;
    let _interrupts = a.yes.then(install_interrupts).transpose()?;
    match labnode_rollback::drill(&ctx, a.yes).map_err(failure)? {
        labnode_rollback::DrillOutcome::Planned(plan) => {
            let _ = write!(std::io::stdout(), "{plan}");
            Ok(())
        }
        labnode_rollback::DrillOutcome::Done(done) => {
            if let Some(r) = &done.recovered_first {
                print_recovered(r);
            }
            print_drill(&done.record);
            snapshot_line(done.snapshot.as_ref(), &ctx.cfg.state_dir());
            if done.record.success {
                Ok(())
            } else {
                Err(Failure::runtime(format!(
                    "the rollback drill failed: {}",
                    done.record.error.as_deref().unwrap_or("see above")
                )))
            }
        }
    }
}

/// `labnode safe-switch`.
pub fn safe_switch(a: SafeSwitchArgs) -> Result<(), Failure> {
    let mut ctx = context(a.node, &a.label, a.out.dir, Duration::ZERO)?;
    let _interrupts = install_interrupts()?;
    if a.recover {
        if a.guard.is_some() {
            ctx.progress = Progress::quiet();
        }
        let retry = a.retry || a.guard.is_some();
        return match labnode_rollback::recover(&ctx, a.guard.as_deref(), retry).map_err(failure)? {
            None => {
                if a.guard.is_none() {
                    out!(
                        "nothing to recover: no unfinished switch or drill in {}",
                        ctx.cfg.state_dir().display()
                    );
                }
                Ok(())
            }
            Some(r) => {
                out!("{}", r.summary);
                snapshot_line(r.snapshot.as_ref(), &ctx.cfg.state_dir());
                if r.healthy {
                    Ok(())
                } else {
                    Err(Failure::runtime(format!(
                        "recovery did not end healthy: {}",
                        r.summary
                    )))
                }
            }
        };
    }
    let Some(to) = a.to else {
        return Err(Failure::usage("give --to STORE_PATH or --recover"));
    };
    let confirm = a
        .confirm_timeout
        .unwrap_or_else(|| ctx.cfg.confirm_timeout());
    let done = labnode_rollback::safe_switch(&ctx, &to, confirm).map_err(failure)?;
    if let Some(r) = &done.recovered_first {
        print_recovered(r);
    }
    print_switch(&done.record);
    snapshot_line(done.snapshot.as_ref(), &ctx.cfg.state_dir());
    match (done.record.outcome, done.snapshot.is_some()) {
        (labnode_rollback::record::Outcome::Confirmed, true) => Ok(()),
        (labnode_rollback::record::Outcome::RolledBack, _) | (_, false) => {
            Err(Failure::runtime(format!(
                "the switch to {} was rolled back: {}",
                done.record.to_store_path.display(),
                done.record.reason.as_deref().unwrap_or("see above")
            )))
        }
    }
}

/// `labnode gc`.
pub fn run_gc(a: GcArgs) -> Result<(), Failure> {
    let ctx = context(a.node, "gc", None, Duration::from_secs(6 * 3600))?;
    let plan = GcPlan {
        keep: a.keep_generations,
        older_than: a.delete_older_than,
        profiles_dir: None,
        nix_store: None,
        dry_run: a.dry_run,
    };
    let done = gc(&ctx, &plan).map_err(failure)?;
    let list = |v: &[u64]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
        }
    };
    out!(
        "{} system generations {}; kept {} (the newest {} whatever their age, younger ones, an unfinished run's)",
        if a.dry_run { "would delete" } else { "deleted" },
        list(&done.deleted),
        list(&done.kept),
        a.keep_generations
    );
    for p in &done.other_profiles {
        out!(
            "  {}: generations older than the period {}",
            p.display(),
            if a.dry_run { "would go" } else { "deleted" }
        );
    }
    if done.collected {
        out!("  the store was collected (nix-store --gc)");
    }
    Ok(())
}
