//! Finishing a run that did not finish: `labnode safe-switch --recover`, run by the run's
//! systemd guard when labnode dies, by the boot unit after a reboot, by the next run that
//! finds the marker, or by hand. It restores the known-good generation and writes the run's
//! one record; a recovery that does not end healthy keeps the marker and, with `retry`, is
//! tried again with backoff until it does.

use std::time::{Duration, Instant};

use crate::engine::{Context, Engine, Health, Recovered, RunError};
use crate::record::{DrillRecord, Outcome, Overhead, SafeSwitchRecord, process_cpu_seconds};
use crate::state::{self, Lock, Marker, MarkerKind, Process};

/// Why a marker was left behind, as best this process can tell.
pub(crate) fn interruption(m: &Marker, how: &str) -> String {
    let rebooted = matches!((&m.boot_id, state::boot_id()), (Some(a), Some(b)) if *a != b);
    let at = match &m.step {
        Some(s) => format!("`{}` phase (step {s})", m.phase),
        None => format!("`{}` phase", m.phase),
    };
    let mut why = Vec::new();
    if rebooted {
        why.push(format!(
            "the host rebooted during its {at}, before it was finished"
        ));
    }
    match m.recovery.as_ref() {
        Some(r) => why.push(format!(
            "an earlier recovery did not end healthy ({} attempts; last: {})",
            r.attempts, r.last_error
        )),
        None if !rebooted => why.push(format!("labnode (pid {}) died during its {at}", m.pid)),
        None => {}
    }
    format!("{}; found by {how}", why.join("; "))
}

/// With the lock held: finishes what marker `m` left. The host ends on the marker's
/// known-good generation; the record is written once that holds.
pub(crate) fn recover_marker(
    e: &Engine<'_>,
    marker: &Marker,
    reason: String,
    detected: Instant,
    detected_unix: f64,
) -> Result<Recovered, RunError> {
    let p = e.ctx.progress;
    let cpu0 = process_cpu_seconds();
    let mut m = marker.clone();
    let done_before = m.phase == "done";
    let may_be_written = m.step.as_deref() == Some("record");
    p.step(&format!(
        "finishing an unfinished {}: {reason}",
        match m.kind {
            MarkerKind::RollbackDrill => "rollback drill",
            MarkerKind::SafeSwitch => "safe switch",
        }
    ));
    e.phase(&mut m, "recover", e.budget(2, None))?;
    let known = m.from.clone();
    let direction = match m.kind {
        MarkerKind::RollbackDrill => "rollforward",
        MarkerKind::SafeSwitch => "recover",
    };
    let (sw, health) = e.restore(&mut m, direction, &known);
    let end_unix = state::now_unix();
    let ended_on = e.profile().ok().map(|s| s.current);
    let overhead = Overhead::since(cpu0, detected);
    let healthy = health.green();
    let status = match &health {
        Health::Green => format!(
            "restored generation {}",
            known.generation.map_or("?".into(), |n| n.to_string())
        ),
        Health::Red(why) => format!("restored, but unhealthy: {why}"),
        Health::NotRestored(why) => format!("restoring failed: {why}"),
    };
    macro_rules! settle {
        ($rec:expr, $summary:expr) => {{
            let rec = $rec;
            if health.settled() {
                let path = e.finish(&mut m, &rec, may_be_written)?;
                Ok(Recovered {
                    marker: m,
                    reason,
                    settled: true,
                    healthy,
                    snapshot: Some(path),
                    summary: $summary,
                })
            } else {
                e.not_yet(&mut m, &rec, health.why().unwrap_or(""))?;
                Ok(Recovered {
                    marker: m,
                    reason,
                    settled: false,
                    healthy,
                    snapshot: None,
                    summary: format!("not recovered yet: {status}"),
                })
            }
        }};
    }
    match m.kind {
        MarkerKind::RollbackDrill => {
            let draft: Option<DrillRecord> =
                m.draft.clone().and_then(|d| serde_json::from_value(d).ok());
            let rec = match draft {
                Some(mut d) if done_before => {
                    d.finished_unix = d.finished_unix.max(m.started_unix);
                    d
                }
                draft => {
                    let mut d = draft.unwrap_or_else(|| DrillRecord {
                        id: m.id.clone(),
                        profile: m.profile.clone(),
                        started_unix: m.started_unix,
                        finished_unix: end_unix,
                        start_generation: m.from.generation,
                        start_store_path: m.from.store_path.clone(),
                        previous_generation: m.to.generation,
                        directions: Vec::new(),
                        success: false,
                        ended_on_generation: None,
                        ended_on_start: false,
                        interrupted: None,
                        error: None,
                        refused: false,
                        overhead: Overhead::default(),
                    });
                    d.finished_unix = end_unix;
                    // This roll forward stands for an earlier one that did not end healthy.
                    d.directions.retain(|x| x.direction != sw.direction);
                    d.directions.push(sw);
                    d.success = false;
                    d.ended_on_generation = ended_on;
                    d.ended_on_start = health.settled();
                    d.interrupted = Some(reason.clone());
                    d.error = Some(format!("interrupted: {reason}; {status}"));
                    d.overhead.cpu_seconds += overhead.cpu_seconds;
                    d.overhead.wall_seconds = end_unix - d.started_unix;
                    d
                }
            };
            let summary = rec
                .error
                .clone()
                .unwrap_or_else(|| "the drill's record was written".into());
            settle!(rec, summary)
        }
        MarkerKind::SafeSwitch => {
            let draft: Option<SafeSwitchRecord> =
                m.draft.clone().and_then(|d| serde_json::from_value(d).ok());
            let rec = match draft {
                Some(mut d) if done_before => {
                    d.finished_unix = d.finished_unix.max(m.started_unix);
                    d
                }
                draft => {
                    let mut d = draft.unwrap_or_else(|| SafeSwitchRecord {
                        id: m.id.clone(),
                        profile: m.profile.clone(),
                        started_unix: m.started_unix,
                        finished_unix: end_unix,
                        from_generation: m.from.generation,
                        from_store_path: m.from.store_path.clone(),
                        to_generation: m.to.generation,
                        to_store_path: m.to.store_path.clone(),
                        outcome: Outcome::RolledBack,
                        reason: None,
                        detect_seconds: None,
                        recover_seconds: None,
                        switch: None,
                        rollback: None,
                        healthy: false,
                        ended_on_generation: None,
                        overhead: Overhead::default(),
                    });
                    d.finished_unix = end_unix;
                    d.outcome = Outcome::RolledBack;
                    // Why it was rolled back, and what interrupted the rollback.
                    d.reason = Some(match d.reason.take() {
                        Some(first) => format!("{first}; then, rolling back: {reason}"),
                        None => reason.clone(),
                    });
                    if d.detect_seconds.is_none() {
                        d.detect_seconds = Some((detected_unix - m.started_unix).max(0.0));
                    }
                    d.recover_seconds = healthy.then(|| detected.elapsed().as_secs_f64());
                    d.rollback = Some(sw);
                    d.healthy = healthy;
                    d.ended_on_generation = ended_on;
                    d.overhead.cpu_seconds += overhead.cpu_seconds;
                    d.overhead.wall_seconds = end_unix - d.started_unix;
                    d
                }
            };
            let summary = match rec.outcome {
                Outcome::Confirmed => format!(
                    "finished the confirmed switch to {}: its record was written",
                    rec.to_store_path.display()
                ),
                Outcome::RolledBack => format!(
                    "rolled back to generation {}: {}",
                    rec.from_generation.map_or("?".into(), |n| n.to_string()),
                    rec.reason.as_deref().unwrap_or(&reason)
                ),
            };
            settle!(rec, summary)
        }
    }
}

/// A new run's start: takes the run lock for `what` (a command, e.g. `labnode safe-switch`)
/// and first finishes what an earlier run left; refuses while that one is not recovered.
pub(crate) fn start_run(e: &Engine<'_>, what: &str) -> Result<(Lock, Option<Recovered>), RunError> {
    let lock = e.lock(what)?;
    let first = recover_if_marked(e, &format!("`{what}` at its start"))?;
    if let Some(r) = first.as_ref().filter(|r| !r.settled) {
        return Err(RunError::Refused(format!(
            "an earlier run is not recovered yet, so nothing new starts: {}",
            r.summary
        )));
    }
    Ok((lock, first))
}

/// With the lock held: finishes a marker left by a labnode that is gone. `Ok(None)`: none.
pub(crate) fn recover_if_marked(e: &Engine<'_>, how: &str) -> Result<Option<Recovered>, RunError> {
    let Some(m) = e.state.marker()? else {
        return Ok(None);
    };
    let reason = interruption(&m, how);
    Ok(Some(recover_marker(
        e,
        &m,
        reason,
        Instant::now(),
        state::now_unix(),
    )?))
}

/// `safe-switch --recover`: finishes (rolls back) an unfinished switch or drill. As a guard
/// (`guard_id`), waits for the labnode that armed it to finish or die first, re-reading its
/// deadline as the run extends it. With `retry`, a recovery that does not end healthy is
/// tried again (the lock released between attempts) until it does or the marker goes.
pub fn recover(
    ctx: &Context,
    guard_id: Option<&str>,
    retry: bool,
) -> Result<Option<Recovered>, RunError> {
    let e = Engine::new(ctx);
    let mut how = "`labnode safe-switch --recover`";
    let mut late = None;
    let mut detected = None;
    if let Some(id) = guard_id {
        how = "its systemd guard";
        match watch(&e, id)? {
            Watch::Gone => return Ok(None),
            Watch::Died(at, at_unix) => detected = Some((at, at_unix)),
            Watch::Late(m) => {
                late = Some(m);
                detected = Some((Instant::now(), state::now_unix()));
            }
        }
    }
    loop {
        let lock = if guard_id.is_some() {
            // The labnode it guards is gone; wait for whoever else holds the lock (a hand
            // run of --recover) to finish.
            let Some(l) = Lock::wait(
                e.state.path(),
                "labnode rollback guard",
                Duration::from_millis(50),
                || false,
            )?
            else {
                continue;
            };
            l
        } else {
            e.lock("labnode safe-switch --recover")?
        };
        let Some(m) = e.state.marker()? else {
            return Ok(None);
        };
        if let Some(id) = guard_id {
            if m.id != id {
                return Ok(None);
            }
        }
        if let Some(r) = &m.recovery {
            let wait = r.next_unix - state::now_unix();
            if wait > 0.0 && retry {
                drop(lock);
                // Between attempts nothing is in progress: a stop request ends the wait
                // (the marker stays for the next one that finds it).
                let end = Instant::now() + Duration::from_secs_f64(wait.min(600.0));
                while Instant::now() < end {
                    if (ctx.interrupted)().is_some() {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
        }
        let reason = match late.take() {
            Some(l) => l,
            None => interruption(&m, how),
        };
        let (at, at_unix) = detected
            .take()
            .unwrap_or_else(|| (Instant::now(), state::now_unix()));
        let r = recover_marker(&e, &m, reason, at, at_unix)?;
        drop(lock);
        if r.settled || !retry {
            return Ok(Some(r));
        }
    }
}

#[derive(Debug)]
enum Watch {
    /// The run finished (its marker is gone or another run's).
    Gone,
    /// Its labnode died; when that was seen.
    Died(Instant, f64),
    /// Still running past its deadline: killed (the reason says so).
    Late(String),
}

/// The guard's wait: until the marker is gone, its labnode dies, or its deadline (read
/// again on every poll: each phase extends it) passes.
fn watch(e: &Engine<'_>, id: &str) -> Result<Watch, RunError> {
    let Some(first) = first_marker(e, id)? else {
        return Ok(Watch::Gone);
    };
    let proc = Process::open(first.pid, first.pid_start, first.boot_id.as_deref());
    loop {
        let Some(m) = e.state.marker()?.filter(|m| m.id == id) else {
            return Ok(Watch::Gone);
        };
        // Stopped while it only watches (its run ended and stops it, or by hand): nothing
        // to finish here.
        if (e.ctx.interrupted)().is_some() && proc.as_ref().is_some_and(|p| !p.exited()) {
            return Ok(Watch::Gone);
        }
        let dead = proc.as_ref().is_none_or(Process::exited);
        if dead {
            return Ok(Watch::Died(Instant::now(), state::now_unix()));
        }
        if state::now_unix() >= m.deadline_unix {
            tracing::warn!(
                "labnode pid {} is past its deadline in phase {}; killing it",
                m.pid,
                m.phase
            );
            if let Some(p) = &proc {
                let _ = p.signal(libc::SIGKILL);
                let end = Instant::now() + Duration::from_secs(10);
                while !p.exited() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            return Ok(Watch::Late(format!(
                "labnode (pid {}) was still in its `{}` phase at its deadline and was killed; found by its systemd guard",
                m.pid, m.phase
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The marker the guard `id` watches. A run arms its guard before it writes its marker, so
/// the guard may start first: it waits while the labnode that armed it (its pid is the id's
/// last part) lives. `None`: that labnode ended without writing it, nothing changed.
fn first_marker(e: &Engine<'_>, id: &str) -> Result<Option<Marker>, RunError> {
    let pid = id.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
    let proc = pid.and_then(|p| Process::open(p, None, None));
    loop {
        if let Some(m) = e.state.marker()?.filter(|m| m.id == id) {
            return Ok(Some(m));
        }
        if proc.as_ref().is_none_or(Process::exited) {
            // It may have written the marker just before it ended.
            return Ok(e.state.marker()?.filter(|m| m.id == id));
        }
        if (e.ctx.interrupted)().is_some() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A process to guard, and an engine whose state directory holds its marker.
    fn guarded(t: &std::path::Path, deadline: f64) -> (std::process::Child, Context, Marker) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let cfg = Config {
            state_dir: Some(t.join("state")),
            arm: Some(crate::config::Arm::None),
            ..Config::default()
        };
        let mut ctx = Context::new(cfg, t.join("snaps"), "test");
        // Not this process's signals: another test in this binary may have left one pending.
        ctx.interrupted = || None;
        let mut m = crate::state::tests::test_marker();
        m.pid = child.id();
        m.pid_start = state::start_time(child.id());
        m.deadline_unix = state::now_unix() + deadline;
        (child, ctx, m)
    }

    #[test]
    fn the_guard_follows_a_deadline_the_run_extends() {
        let t = tempfile::tempdir().expect("tempdir");
        let (mut child, ctx, mut m) = guarded(t.path(), 1.0);
        let e = Engine::new(&ctx);
        e.state.write_marker(&m).expect("marker");
        let id = m.id.clone();
        // The run enters new phases for 1.2 s, each pushing the deadline 1 s on, then dies at
        // 1.3 s: past the first deadline, before the last one.
        let writer = {
            let dir = t.path().join("state");
            std::thread::spawn(move || {
                let s = crate::state::StateDir::new(&dir);
                for _ in 0..12 {
                    std::thread::sleep(Duration::from_millis(100));
                    m.deadline_unix = state::now_unix() + 1.0;
                    s.write_marker(&m).expect("marker");
                }
            })
        };
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1300));
            let _ = child.kill();
            let _ = child.wait();
        });
        let w = watch(&e, &id).expect("watch");
        writer.join().expect("writer");
        killer.join().expect("killer");
        assert!(
            matches!(w, Watch::Died(..)),
            "a run whose phases extend its deadline was not let run: {w:?}"
        );
    }

    #[test]
    fn a_run_past_its_deadline_is_killed() {
        let t = tempfile::tempdir().expect("tempdir");
        let (mut child, ctx, m) = guarded(t.path(), 0.3);
        let e = Engine::new(&ctx);
        e.state.write_marker(&m).expect("marker");
        let w = watch(&e, &m.id).expect("watch");
        assert!(matches!(w, Watch::Late(_)), "{w:?}");
        // Killed by the guard: reaped here without a kill of our own.
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
