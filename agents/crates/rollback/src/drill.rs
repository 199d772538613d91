//! `labnode drill rollback`: rolls the host back one generation exactly as `nixos-rebuild
//! switch --rollback` would (profile, activation, boot default), measures every phase until
//! every gate is green, and rolls forward again the same way. An interrupted drill (a
//! signal, labnode's death, a reboot) is rolled forward by whoever finds its marker.

use std::time::{Duration, Instant};

use crate::config::Arm;
use crate::engine::{Context, Engine, Flip, Plan, Recovered, RunError};
use crate::profile::{self, Generation};
use crate::record::{DrillRecord, Overhead, process_cpu_seconds};
use crate::recover::start_run;
use crate::state::{self, MarkerKind, Point};

/// A finished drill.
#[derive(Debug, Clone)]
pub struct DrillDone {
    /// The record written.
    pub record: DrillRecord,
    /// The snapshot file (none while the roll forward has not ended healthy: the marker
    /// stays and the guard, the boot unit or the next run finishes it).
    pub snapshot: Option<std::path::PathBuf>,
    /// What an interrupted run found at the start was finished first.
    pub recovered_first: Option<Recovered>,
}

/// What `drill` did.
#[derive(Debug, Clone)]
pub enum DrillOutcome {
    /// Without `yes`: the plan, as text; nothing changed.
    Planned(String),
    /// The drill ran (successfully or not: see its record).
    Done(Box<DrillDone>),
}

/// The plan of a drill (nothing changes), or the drill itself (`yes`).
pub fn drill(ctx: &Context, yes: bool) -> Result<DrillOutcome, RunError> {
    let e = Engine::new(ctx);
    let st = e.profile()?;
    let pending = e.state.has_marker();
    if !yes {
        return Ok(DrillOutcome::Planned(plan(&e, &st, pending)));
    }
    let (lock, recovered_first) = start_run(&e, "labnode drill rollback")?;
    let st = e.profile()?;
    let Some(prev) = st.previous().cloned() else {
        let why = format!(
            "{} has no generation older than the current one ({}): there is nothing to roll back to",
            st.profile.display(),
            st.current
        );
        // Recorded, so that a host that cannot roll back shows up: a failed drill, counted
        // as refused (outside the success rate).
        let now = state::now_unix();
        let record = DrillRecord {
            id: state::new_id(),
            profile: st.profile.clone(),
            started_unix: now,
            finished_unix: now,
            start_generation: Some(st.current),
            start_store_path: st
                .current()
                .map(|g| g.store_path.clone())
                .unwrap_or_default(),
            previous_generation: None,
            directions: Vec::new(),
            success: false,
            ended_on_generation: Some(st.current),
            ended_on_start: false,
            interrupted: None,
            error: Some(format!("refused: no previous generation ({why})")),
            refused: true,
            overhead: Overhead::default(),
        };
        e.record_refusal(&record)?;
        return Err(RunError::Refused(why));
    };
    e.check_running(&st)?;
    let start_gen: Generation = st
        .current()
        .cloned()
        .ok_or_else(|| RunError::Refused("the profile's current generation vanished".into()))?;
    let start_point = Point {
        generation: Some(start_gen.number),
        store_path: start_gen.store_path.clone(),
    };
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let boots = ctx.cfg.sets_boot_default();
    let budget = e.budget(2, None);
    let mut m = e.begin(
        MarkerKind::RollbackDrill,
        start_point.clone(),
        Point {
            generation: Some(prev.number),
            store_path: prev.store_path.clone(),
        },
        budget * 2,
        false,
    )?;
    let started_unix = m.started_unix;
    e.phase(&mut m, "rollback", budget * 2)?;
    let back = e.switch(
        &mut m,
        Plan {
            direction: "rollback",
            flip: Flip::Rollback,
            target: &prev.store_path,
            gate_deadline: None,
            boot: boots,
            interruptible: true,
        },
    );
    // Whatever happened, go back to where the drill started.
    e.phase(&mut m, "rollforward", budget)?;
    let (forward, health) = e.restore(&mut m, "rollforward", &start_point);
    let end = e.profile()?;
    let interrupted = (ctx.interrupted)().map(crate::signals::reason);
    let success = back.success && health.green() && interrupted.is_none();
    let error = if success {
        None
    } else {
        let mut why = Vec::new();
        if let Some(e) = &back.error {
            why.push(format!("rollback: {e}"));
        }
        if let Some(e) = health.why() {
            why.push(format!("rollforward: {e}"));
        } else if let Some(e) = &forward.error {
            why.push(format!("rollforward: {e}"));
        }
        Some(why.join("; "))
    };
    let record = DrillRecord {
        id: m.id.clone(),
        profile: st.profile.clone(),
        started_unix,
        finished_unix: state::now_unix(),
        start_generation: Some(start_gen.number),
        start_store_path: start_gen.store_path.clone(),
        previous_generation: Some(prev.number),
        directions: vec![back, forward],
        success,
        ended_on_generation: Some(end.current),
        ended_on_start: health.settled(),
        interrupted,
        error,
        refused: false,
        overhead: Overhead::since(cpu0, t0),
    };
    let snapshot = if health.settled() {
        e.phase(&mut m, "done", budget)?;
        Some(e.finish(&mut m, &record, false)?)
    } else {
        e.not_yet(&mut m, &record, health.why().unwrap_or_default())?;
        None
    };
    drop(lock);
    Ok(DrillOutcome::Done(Box::new(DrillDone {
        record,
        snapshot,
        recovered_first,
    })))
}

fn plan(e: &Engine<'_>, st: &profile::State, pending: bool) -> String {
    let cfg = &e.ctx.cfg;
    let mut s = String::new();
    let gen_line = |g: Option<&Generation>| match g {
        Some(g) => format!(
            "{} ({}, made {})",
            g.number,
            g.store_path.display(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs_f64(g.created_unix.max(0.0))
            )
        ),
        None => "none".into(),
    };
    s.push_str(&format!(
        "rollback drill plan for {} (nothing is changed without --yes)\n",
        st.profile.display()
    ));
    s.push_str(&format!(
        "  current generation:  {}\n",
        gen_line(st.current())
    ));
    s.push_str(&format!(
        "  previous generation: {}\n",
        gen_line(st.previous())
    ));
    let running = profile::resolve(&cfg.current_system());
    s.push_str(&format!(
        "  running system:      {}\n",
        running.as_deref().map_or(
            format!("unknown ({} missing)", cfg.current_system().display()),
            |r| r.display().to_string()
        )
    ));
    if pending {
        s.push_str(&format!(
            "  an unfinished drill or switch is marked in {}: it is finished first\n",
            e.state.path().display()
        ));
    }
    let action = "test";
    let boot = if cfg.sets_boot_default() {
        "; then `boot` (the boot default)"
    } else {
        ""
    };
    match st.previous() {
        None => s.push_str("  nothing to roll back to: the drill would refuse\n"),
        Some(prev) => {
            s.push_str(&format!(
                "  1. rollback:    nix-env --profile {} --rollback; {}/bin/switch-to-configuration {action}; wait for systemd's job queue; every gate green{boot}\n",
                st.profile.display(),
                prev.store_path.display()
            ));
            s.push_str(&format!(
                "  2. rollforward: nix-env --profile {} --switch-generation {}; {}/bin/switch-to-configuration {action}; the same waits{boot}\n",
                st.profile.display(),
                st.current,
                st.current().map_or(String::new(), |g| g.store_path.display().to_string())
            ));
        }
    }
    if e.gates.is_empty() {
        s.push_str("  gates: none configured (recovery ends when systemd's job queue is empty)\n");
    } else {
        s.push_str("  gates (each polled until green or its timeout):\n");
        for g in &e.gates {
            s.push_str(&format!(
                "    - {}: {} (every {}ms, timeout {}s)\n",
                g.name,
                g.check.describe(),
                g.interval.as_millis(),
                g.timeout.as_secs_f64()
            ));
        }
    }
    s.push_str(&format!(
        "  bounds: activation {}s, settling {}s; guard: {}\n  result: a snapshot labelled {:?} in {}\n",
        cfg.activation_timeout().as_secs(),
        cfg.settle_timeout().as_secs(),
        match cfg.arm() {
            Arm::None => "none (the marker and the next start)",
            Arm::Systemd => "a transient systemd service (required)",
            Arm::Auto => "a transient systemd service when systemd runs",
        },
        e.ctx.label,
        e.ctx.out.display()
    ));
    s.push_str("Run again with --yes to drill.\n");
    s
}
