//! `labnode safe-switch --to SYSTEM`: activates a new generation behind the health gates
//! and rolls back by itself when they stay red, activation fails, a signal interrupts it,
//! labnode dies (its systemd guard) or the host reboots first (the boot unit).
//!
//! The new generation is activated with `switch-to-configuration test` and becomes the
//! boot default (`boot`) only once every gate is green, so a reboot before that boots the
//! old one. The nightly upgrade runs through here too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::activation;
use crate::engine::{Context, Engine, Flip, Health, Plan, Recovered, RunError};
use crate::record::{Outcome, Overhead, SafeSwitchRecord, process_cpu_seconds};
use crate::recover::start_run;
use crate::state::{self, MarkerKind, Point};

/// A finished safe switch.
#[derive(Debug, Clone)]
pub struct SwitchDone {
    /// The record written.
    pub record: SafeSwitchRecord,
    /// The snapshot file (none while a rollback has not ended healthy: the marker stays
    /// and the guard, the boot unit or the next run finishes it).
    pub snapshot: Option<PathBuf>,
    /// What an interrupted run found at the start was finished first.
    pub recovered_first: Option<Recovered>,
}

/// A safe switch to `to`, confirmed within `confirm_timeout`.
pub fn safe_switch(
    ctx: &Context,
    to: &Path,
    confirm_timeout: Duration,
) -> Result<SwitchDone, RunError> {
    let e = Engine::new(ctx);
    let to = std::fs::canonicalize(to)
        .map_err(|err| RunError::Usage(format!("--to {}: {err}", to.display())))?;
    if !activation::has_script(&to) {
        return Err(RunError::Usage(format!(
            "--to {}: has no executable bin/switch-to-configuration: not a NixOS system closure",
            to.display()
        )));
    }
    let (lock, recovered_first) = start_run(&e, "labnode safe-switch")?;
    let st = e.profile()?;
    e.check_running(&st)?;
    let from = st
        .current()
        .cloned()
        .ok_or_else(|| RunError::Refused("the profile's current generation vanished".into()))?;
    if from.store_path == to {
        return Err(RunError::Refused(format!(
            "{} is already the current generation {}",
            to.display(),
            from.number
        )));
    }
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let boots = ctx.cfg.sets_boot_default();
    let switch_budget = e.budget(2, Some(confirm_timeout));
    let from_point = Point {
        generation: Some(from.number),
        store_path: from.store_path.clone(),
    };
    let mut m = e.begin(
        MarkerKind::SafeSwitch,
        from_point.clone(),
        Point {
            generation: None,
            store_path: to.clone(),
        },
        switch_budget,
        true,
    )?;
    let started_unix = m.started_unix;
    e.phase(&mut m, "switch", switch_budget)?;
    let sw = e.switch(
        &mut m,
        Plan {
            direction: "switch",
            flip: Flip::Set(to.clone()),
            target: &to,
            gate_deadline: Some(confirm_timeout),
            boot: boots,
            interruptible: true,
        },
    );
    if let Some(n) = sw.to_generation.filter(|n| *n != from.number) {
        m.to.generation = Some(n);
    }
    let mut record = SafeSwitchRecord {
        id: m.id.clone(),
        profile: st.profile.clone(),
        started_unix,
        finished_unix: state::now_unix(),
        from_generation: Some(from.number),
        from_store_path: from.store_path.clone(),
        to_generation: m.to.generation,
        to_store_path: to.clone(),
        outcome: Outcome::Confirmed,
        reason: None,
        detect_seconds: None,
        recover_seconds: None,
        switch: Some(sw.clone()),
        rollback: None,
        healthy: true,
        ended_on_generation: None,
        overhead: Overhead::default(),
    };
    // Every gate green, the boot default set, and what runs is what the profile says.
    let confirmed = if sw.success {
        e.invariant(&m, &to, &sw)
    } else {
        Health::NotRestored(String::new())
    };
    let health = if confirmed.green() {
        // The new generation is the known-good one now: a crash from here on finishes the
        // switch instead of undoing it.
        m.from = Point {
            generation: m.to.generation,
            store_path: to.clone(),
        };
        Health::Green
    } else {
        let detected = Instant::now();
        let detect_seconds = t0.elapsed().as_secs_f64();
        let reason = match (&sw.error, confirmed.why()) {
            (Some(err), _) => err.clone(),
            (None, Some(why)) if !why.is_empty() => why.to_owned(),
            _ => "the switch failed".into(),
        };
        ctx.progress.step(&format!(
            "switch failed after {detect_seconds:.3}s: {reason}; rolling back to generation {}",
            from.number
        ));
        e.phase(&mut m, "rollback", e.budget(2, None))?;
        let (back, health) = e.restore(&mut m, "rollback", &from_point);
        record.outcome = Outcome::RolledBack;
        record.reason = Some(reason);
        record.detect_seconds = Some(detect_seconds);
        record.recover_seconds = health.green().then(|| detected.elapsed().as_secs_f64());
        record.healthy = health.green();
        record.rollback = Some(back);
        health
    };
    record.finished_unix = state::now_unix();
    record.ended_on_generation = e.profile().ok().map(|s| s.current);
    record.overhead = Overhead::since(cpu0, t0);
    let snapshot = if health.settled() {
        e.phase(&mut m, "done", e.budget(2, None))?;
        Some(e.finish(&mut m, &record, false)?)
    } else {
        e.not_yet(&mut m, &record, health.why().unwrap_or_default())?;
        None
    };
    drop(lock);
    Ok(SwitchDone {
        record,
        snapshot,
        recovered_first,
    })
}
