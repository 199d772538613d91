//! Drills, safe switches and recovery: the same switch (flip the profile, activate, let
//! systemd settle, wait for every gate), timed phase by phase, behind the lock and the
//! marker.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labnode_core::host::{self, HostPaths};
use labnode_core::snapshot::{Snapshot, Store};

use crate::activate;
use crate::config::{Arm, Config};
use crate::gates::{self, Gate, GatesResult};
use crate::profile::{self, Generation, NixEnv, ProfileError};
use crate::progress::{Progress, secs};
use crate::record::{
    DrillRecord, Outcome, Overhead, Phases, Recorded, SafeSwitchRecord, Switch, process_cpu_seconds,
};
use crate::state::{self, Lock, Marker, MarkerKind, Point, StateDir, StateError};
use crate::systemd::Systemd;

/// Why a run did not happen or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Refused before changing anything.
    #[error("refusing: {0}")]
    Refused(String),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// The profile could not be read or flipped.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The lock or the marker.
    #[error(transparent)]
    State(#[from] StateError),
    /// The result could not be stored.
    #[error("cannot write the snapshot to {dir}: {why}")]
    Snapshot {
        /// The store.
        dir: PathBuf,
        /// Why.
        why: String,
    },
}

/// What a run needs besides the configuration.
#[derive(Debug, Clone)]
pub struct Context {
    /// The `rollback:` section.
    pub cfg: Config,
    /// The configuration file, handed to the guard.
    pub config_file: Option<PathBuf>,
    /// The snapshot store.
    pub out: PathBuf,
    /// The snapshot label.
    pub label: String,
    /// Where host facts come from.
    pub host_paths: HostPaths,
    /// Progress display.
    pub progress: Progress,
}

/// A finished drill.
#[derive(Debug, Clone)]
pub struct DrillDone {
    /// The record written.
    pub record: DrillRecord,
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// What an interrupted run found at the start was finished first.
    pub recovered_first: Option<Recovered>,
}

/// A finished safe switch.
#[derive(Debug, Clone)]
pub struct SwitchDone {
    /// The record written.
    pub record: SafeSwitchRecord,
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// What an interrupted run found at the start was finished first.
    pub recovered_first: Option<Recovered>,
}

/// What recovery did with an unfinished run.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The marker it found.
    pub marker: Marker,
    /// Why the run was unfinished.
    pub reason: String,
    /// Whether the host ended healthy on the known-good generation.
    pub healthy: bool,
    /// The snapshot with the result.
    pub snapshot: PathBuf,
    /// The finished drill, or switch, as recorded.
    pub summary: String,
}

struct Engine<'a> {
    ctx: &'a Context,
    gates: Vec<Gate>,
    nix: NixEnv,
    env: gates::Env,
    state: StateDir,
}

/// How to flip the profile.
enum Flip {
    Rollback,
    Generation(u64),
    Set(PathBuf),
}

impl<'a> Engine<'a> {
    fn new(ctx: &'a Context) -> Self {
        let cfg = &ctx.cfg;
        Engine {
            ctx,
            gates: gates::from_config(cfg),
            nix: NixEnv {
                program: cfg.nix_env(),
                profile: cfg.profile(),
            },
            env: gates::Env {
                systemd: cfg.systemd_address(),
            },
            state: StateDir::new(cfg.state_dir()),
        }
    }

    fn profile(&self) -> Result<profile::State, ProfileError> {
        profile::read(&self.ctx.cfg.profile())
    }

    /// The running system's store path, which must be the profile's current generation.
    fn check_running(&self, st: &profile::State) -> Result<(), RunError> {
        let link = self.ctx.cfg.current_system();
        let Some(running) = profile::resolve(&link) else {
            return Err(RunError::Refused(format!(
                "cannot tell what runs: {} does not exist (is this NixOS? set rollback.current_system)",
                link.display()
            )));
        };
        let cur = st
            .current()
            .map(|g| g.store_path.clone())
            .unwrap_or_default();
        if running != cur {
            let n = st
                .number_of(&running)
                .map_or("no generation of the profile".to_owned(), |n| {
                    format!("generation {n}")
                });
            return Err(RunError::Refused(format!(
                "the running system ({}, {n}) is not the profile's current generation {} ({}): \
                 a switch is half done or was made with `test`; finish it (switch-to-configuration) \
                 or roll the profile to what runs before drilling, or the drill would end on a \
                 generation that never ran",
                running.display(),
                st.current,
                cur.display()
            )));
        }
        Ok(())
    }

    fn systemd_reachable(&self) -> Option<Systemd> {
        Systemd::connect(&self.env.systemd, Duration::from_secs(1)).ok()
    }

    /// Starts the guard, as `arm` asks. `Ok(None)`: not armed (allowed).
    fn arm(&self, marker: &Marker, require: bool) -> Result<Option<String>, RunError> {
        let arm = self.ctx.cfg.arm();
        if arm == Arm::None {
            return Ok(None);
        }
        let sd = match Systemd::connect(&self.env.systemd, Duration::from_secs(2)) {
            Ok(sd) => sd,
            Err(e) if arm == Arm::Auto && !require => {
                tracing::info!("not armed by systemd ({e}); the marker alone guards this run");
                return Ok(None);
            }
            Err(e) => {
                return Err(RunError::Refused(format!(
                    "cannot arm the rollback guard: {e}. Without systemd, set `rollback.arm: none` \
                     to rely on the marker alone (the boot unit or the next labnode start finishes the job)"
                )));
            }
        };
        let unit = format!("labnode-rollback-guard-{}.service", marker.id);
        let exe = std::env::current_exe().map_err(|e| {
            RunError::Refused(format!("cannot find labnode's own path for the guard: {e}"))
        })?;
        let mut argv = vec![
            exe.display().to_string(),
            "safe-switch".into(),
            "--recover".into(),
            "--guard".into(),
            marker.id.clone(),
        ];
        if let Some(c) = &self.ctx.config_file {
            let c = std::path::absolute(c).unwrap_or_else(|_| c.clone());
            argv.push("--config".into());
            argv.push(c.display().to_string());
        }
        let env: Vec<String> = std::env::vars()
            .filter(|(k, _)| k == "PATH" || k.starts_with("NIX_") || k.starts_with("LABNODE_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        sd.start_transient_service(
            &unit,
            "labnode: finishes or rolls back an unconfirmed switch if labnode dies",
            &argv,
            &env,
        )
        .map_err(|e| RunError::Refused(format!("cannot arm the rollback guard: {e}")))?;
        Ok(Some(unit))
    }

    /// Writes the marker of a new run, then arms its guard (`require`: refuse without
    /// one unless `arm: none`). Nothing has changed yet if this fails.
    fn begin(
        &self,
        kind: MarkerKind,
        from: Point,
        to: Point,
        budget: f64,
        require: bool,
    ) -> Result<Marker, RunError> {
        let started_unix = state::now_unix();
        let mut marker = Marker {
            kind,
            id: state::new_id(),
            pid: std::process::id(),
            boot_id: state::boot_id(),
            started_unix,
            profile: self.ctx.cfg.profile(),
            from,
            to,
            phase: "armed".into(),
            deadline_unix: started_unix + budget,
            guard_unit: None,
            out: self.ctx.out.clone(),
            label: self.ctx.label.clone(),
        };
        self.state.write_marker(&marker)?;
        match self.arm(&marker, require) {
            Ok(unit) => {
                marker.guard_unit = unit;
                self.state.write_marker(&marker)?;
                Ok(marker)
            }
            Err(err) => {
                self.state.clear_marker()?;
                Err(err)
            }
        }
    }

    /// The time a run may need from now through `phases` switches, plus a margin: the guard
    /// takes over only after this.
    fn budget(&self, switches: u32, confirm: Option<Duration>) -> f64 {
        let cfg = &self.ctx.cfg;
        let gate_max = self
            .gates
            .iter()
            .map(|g| g.timeout)
            .max()
            .unwrap_or_default();
        let gate = confirm.map_or(gate_max, |c| c.min(gate_max).max(Duration::ZERO));
        let one = cfg.activation_timeout() + cfg.settle_timeout() + gate + Duration::from_secs(10);
        (one * switches).as_secs_f64() + 30.0
    }

    fn flip(&self, flip: &Flip) -> Result<Duration, ProfileError> {
        match flip {
            Flip::Rollback => self.nix.rollback(),
            Flip::Generation(n) => self.nix.switch_generation(*n),
            Flip::Set(p) => self.nix.set(p),
        }
    }

    /// One switch: flip, activate (`switch-to-configuration ACTION`), settle, gates.
    /// `gate_deadline`: a bound on the gates from the end of settling (safe-switch's
    /// confirm timeout).
    fn switch(
        &self,
        direction: &str,
        from: Option<u64>,
        flip: Flip,
        target: &Path,
        action: &str,
        gate_deadline: Option<Duration>,
    ) -> Switch {
        let sw = self.switch_inner(direction, from, flip, target, action, gate_deadline);
        if let Some(e) = &sw.error {
            tracing::warn!("{direction} to {}: {e}", target.display());
        }
        sw
    }

    fn switch_inner(
        &self,
        direction: &str,
        from: Option<u64>,
        flip: Flip,
        target: &Path,
        action: &str,
        gate_deadline: Option<Duration>,
    ) -> Switch {
        let p = self.ctx.progress;
        let start = Instant::now();
        let mut sw = Switch {
            direction: direction.to_owned(),
            from_generation: from,
            to_generation: None,
            to_store_path: target.to_owned(),
            phases: Phases::default(),
            recovery_seconds: None,
            success: false,
            error: None,
            settle_skipped: None,
            activation_output: Vec::new(),
            gates: Vec::new(),
        };
        // 1. The profile.
        let what = match &flip {
            Flip::Rollback => "nix-env --rollback".to_owned(),
            Flip::Generation(n) => format!("nix-env --switch-generation {n}"),
            Flip::Set(_) => "nix-env --set".to_owned(),
        };
        if let Err(e) = self.flip(&flip) {
            sw.error = Some(e.to_string());
            return sw;
        }
        sw.phases.profile_flip = Some(start.elapsed().as_secs_f64());
        match self.profile() {
            Ok(st) => {
                let cur = st.current();
                sw.to_generation = Some(st.current);
                if cur.map(|g| g.store_path.as_path()) != Some(target) {
                    sw.error = Some(format!(
                        "after `{what}` the profile is on generation {} ({}), not on {}",
                        st.current,
                        cur.map_or("?".into(), |g| g.store_path.display().to_string()),
                        target.display()
                    ));
                    return sw;
                }
            }
            Err(e) => {
                sw.error = Some(format!("after `{what}`: {e}"));
                return sw;
            }
        }
        p.step(&format!(
            "{direction}: {what}: generation {} ({})",
            sw.to_generation.unwrap_or(0),
            secs(start.elapsed())
        ));
        // 2. Activation.
        let cfg = &self.ctx.cfg;
        p.live(&format!(
            "{direction}: switch-to-configuration {action} ..."
        ));
        let act_start = Instant::now();
        match activate::run(target, action, cfg.activation_timeout()) {
            Ok(a) => {
                sw.phases.activation = Some(a.took.as_secs_f64());
                p.step(&format!(
                    "{direction}: switch-to-configuration {action} ({})",
                    secs(a.took)
                ));
            }
            Err(e) => {
                sw.phases.activation = Some(act_start.elapsed().as_secs_f64());
                sw.activation_output = e.output().to_vec();
                sw.error = Some(format!("activation failed: {e}"));
                p.step(&format!(
                    "{direction}: activation FAILED ({})",
                    secs(act_start.elapsed())
                ));
                return sw;
            }
        }
        // 3. systemd's job queue.
        let settle_start = Instant::now();
        match self.systemd_reachable() {
            None => sw.settle_skipped = Some("systemd is not reachable here".into()),
            Some(sd) => {
                let end = settle_start + cfg.settle_timeout();
                let interval = cfg
                    .poll_interval
                    .map_or(Duration::from_millis(100), |i| i.get());
                let own = crate::systemd::own_units();
                loop {
                    let all = sd.jobs();
                    match all.as_ref().map(|a| crate::systemd::unsettled(a, &own)) {
                        Ok(j) if j.is_empty() => {
                            sw.phases.units_settled = Some(settle_start.elapsed().as_secs_f64());
                            break;
                        }
                        Ok(j) if Instant::now() >= end => {
                            sw.error = Some(format!(
                                "units did not settle: {} jobs still queued after {} (first: {} {})",
                                j.len(),
                                secs(cfg.settle_timeout()),
                                j[0].job_type,
                                j[0].unit
                            ));
                            return sw;
                        }
                        Ok(j) => {
                            p.live(&format!("{direction}: {} systemd jobs queued ...", j.len()))
                        }
                        Err(e) => {
                            sw.settle_skipped = Some(format!("systemd stopped answering: {e}"));
                            break;
                        }
                    }
                    std::thread::sleep(interval);
                }
                if let Some(s) = sw.phases.units_settled {
                    p.step(&format!("{direction}: units settled ({s:.3}s)"));
                }
            }
        }
        // 4. Gates.
        let gates_start = Instant::now();
        let live = Mutex::new(Vec::new());
        let result: GatesResult = std::thread::scope(|s| {
            let h = s.spawn(|| {
                gates::run(
                    &self.gates,
                    &self.env,
                    start,
                    gate_deadline.map(|d| gates_start + d),
                    &live,
                )
            });
            if p.shown() {
                while !h.is_finished() {
                    if let Ok(l) = live.lock() {
                        let green = l.iter().filter(|g| g.green).count();
                        let red = l
                            .iter()
                            .find(|g| !g.green)
                            .map(|g| {
                                format!(
                                    " ({}: {})",
                                    g.name,
                                    g.error.as_deref().unwrap_or("checking")
                                )
                            })
                            .unwrap_or_default();
                        p.live(&format!(
                            "{direction}: gates {green}/{} green{red} {}",
                            l.len(),
                            secs(gates_start.elapsed())
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            h.join().unwrap_or(GatesResult {
                gates: Vec::new(),
                green_at: None,
            })
        });
        sw.gates = result.gates.clone();
        match result.green_at {
            Some(at) => {
                let recovery = at.max(gates_start.duration_since(start));
                sw.recovery_seconds = Some(recovery.as_secs_f64());
                sw.phases.gates_green = Some(
                    recovery
                        .saturating_sub(gates_start.duration_since(start))
                        .as_secs_f64(),
                );
                sw.success = true;
                p.step(&format!(
                    "{direction}: every gate green; recovery {}",
                    secs(recovery)
                ));
            }
            None => {
                sw.error = Some(format!("gates stayed red: {}", result.red().join("; ")));
                p.step(&format!(
                    "{direction}: gates RED ({})",
                    secs(gates_start.elapsed())
                ));
            }
        }
        sw
    }

    /// Stores the result, then removes the marker and stops the guard: the run is over.
    fn finish<T: Recorded>(
        &self,
        out: &Path,
        label: &str,
        record: &T,
        guard_unit: Option<&str>,
    ) -> Result<PathBuf, RunError> {
        let err = |why: String| RunError::Snapshot {
            dir: out.to_owned(),
            why,
        };
        let mut snap = Snapshot::new(label, host::facts(&self.ctx.host_paths))
            .map_err(|e| err(e.to_string()))?;
        snap.add_metrics(T::SOURCE, &record.samples());
        snap.add_record(T::KIND, record)
            .map_err(|e| err(e.to_string()))?;
        let path = Store::new(out)
            .write(&snap)
            .map_err(|e| err(e.to_string()))?;
        self.state.clear_marker()?;
        // The guard may be this very process (`--guard`); stopping it is tidy, not needed.
        if let Some(unit) = guard_unit.filter(|_| !std::env::args().any(|a| a == "--guard")) {
            if let Some(sd) = self.systemd_reachable() {
                let _ = sd.stop(unit);
            }
        }
        Ok(path)
    }

    /// Finishes whatever a marker left, with the lock held.
    fn recover_marker(
        &self,
        marker: &Marker,
        reason: String,
        detected: Instant,
        detected_unix: f64,
    ) -> Result<Recovered, RunError> {
        let p = self.ctx.progress;
        let cpu0 = process_cpu_seconds();
        let mut m = marker.clone();
        self.state.set_phase(&mut m, "recover")?;
        p.step(&format!(
            "recovering an unfinished {}: {reason}",
            match m.kind {
                MarkerKind::RollbackDrill => "rollback drill",
                MarkerKind::SafeSwitch => "safe switch",
            }
        ));
        let st = self.profile()?;
        let target = m.from.store_path.clone();
        let flip = match m
            .from
            .generation
            .filter(|n| st.get(*n).is_some_and(|g| g.store_path == target))
        {
            Some(n) => Flip::Generation(n),
            None => Flip::Set(target.clone()),
        };
        let direction = match m.kind {
            MarkerKind::RollbackDrill => "rollforward",
            MarkerKind::SafeSwitch => "recover",
        };
        let action = self.ctx.cfg.activation_action().as_str();
        let sw = self.switch(direction, Some(st.current), flip, &target, action, None);
        let healthy = sw.success;
        let end_unix = state::now_unix();
        let ended_on = self.profile().ok().map(|s| s.current);
        let running_ok =
            profile::resolve(&self.ctx.cfg.current_system()).as_deref() == Some(target.as_path());
        let overhead = Overhead::since(cpu0, detected);
        let (snapshot, summary) = match m.kind {
            MarkerKind::RollbackDrill => {
                let rec = DrillRecord {
                    profile: m.profile.clone(),
                    started_unix: m.started_unix,
                    finished_unix: end_unix,
                    start_generation: m.from.generation,
                    start_store_path: m.from.store_path.clone(),
                    previous_generation: m.to.generation,
                    success: false,
                    ended_on_generation: ended_on,
                    ended_on_start: healthy
                        && running_ok
                        && ended_on.is_some()
                        && ended_on == m.from.generation,
                    interrupted: Some(reason.clone()),
                    refused: false,
                    error: Some(format!(
                        "interrupted: {reason}; {}",
                        if healthy {
                            "restored the start generation".to_owned()
                        } else {
                            format!(
                                "restoring the start generation failed: {}",
                                sw.error.as_deref().unwrap_or("?")
                            )
                        }
                    )),
                    directions: vec![sw],
                    overhead,
                };
                let path = self.finish(&m.out, &m.label, &rec, m.guard_unit.as_deref())?;
                (path, rec.error.clone().unwrap_or_default())
            }
            MarkerKind::SafeSwitch => {
                let recover_seconds = sw
                    .recovery_seconds
                    .filter(|_| healthy)
                    .map(|_| detected.elapsed().as_secs_f64());
                let rec = SafeSwitchRecord {
                    profile: m.profile.clone(),
                    started_unix: m.started_unix,
                    finished_unix: end_unix,
                    from_generation: m.from.generation,
                    from_store_path: m.from.store_path.clone(),
                    to_generation: m.to.generation,
                    to_store_path: m.to.store_path.clone(),
                    outcome: Outcome::RolledBack,
                    reason: Some(reason.clone()),
                    detect_seconds: Some((detected_unix - m.started_unix).max(0.0)),
                    recover_seconds,
                    switch: None,
                    rollback: Some(sw),
                    healthy,
                    ended_on_generation: ended_on,
                    overhead,
                };
                let path = self.finish(&m.out, &m.label, &rec, m.guard_unit.as_deref())?;
                let summary = format!(
                    "rolled back to generation {}: {reason}{}",
                    m.from.generation.map_or("?".into(), |n| n.to_string()),
                    if healthy {
                        String::new()
                    } else {
                        " (but its gates stayed red)".into()
                    }
                );
                (path, summary)
            }
        };
        Ok(Recovered {
            marker: m,
            reason,
            healthy,
            snapshot,
            summary,
        })
    }

    /// With the lock held: finish a marker left by a labnode that is gone.
    fn recover_if_marked(&self, how: &str) -> Result<Option<Recovered>, RunError> {
        let Some(m) = self.state.marker()? else {
            return Ok(None);
        };
        let reason = interruption(&m, how);
        Ok(Some(self.recover_marker(
            &m,
            reason,
            Instant::now(),
            state::now_unix(),
        )?))
    }
}

/// Why a marker was left behind, as best this process can tell.
fn interruption(m: &Marker, how: &str) -> String {
    let rebooted = matches!((&m.boot_id, state::boot_id()), (Some(a), Some(b)) if *a != b);
    if rebooted {
        format!(
            "the host rebooted during its `{}` phase, before it was confirmed; found by {how}",
            m.phase
        )
    } else {
        format!(
            "labnode (pid {}) died during its `{}` phase; found by {how}",
            m.pid, m.phase
        )
    }
}

/// The plan of a drill, or the drill itself (`yes`).
pub fn drill(ctx: &Context, yes: bool) -> Result<Result<DrillDone, String>, RunError> {
    let e = Engine::new(ctx);
    let st = e.profile()?;
    let pending = e.state.has_marker();
    if !yes {
        return Ok(Err(plan(&e, &st, pending)));
    }
    let lock = Lock::acquire(e.state.path(), "labnode drill rollback")?;
    let recovered_first = e.recover_if_marked("`labnode drill rollback` at its start")?;
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
        e.finish(&ctx.out, &ctx.label, &record, None)?;
        return Err(RunError::Refused(why));
    };
    e.check_running(&st)?;
    let start_gen: Generation = st
        .current()
        .cloned()
        .ok_or_else(|| RunError::Refused("the profile's current generation vanished".into()))?;
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let mut marker = e.begin(
        MarkerKind::RollbackDrill,
        Point {
            generation: Some(start_gen.number),
            store_path: start_gen.store_path.clone(),
        },
        Point {
            generation: Some(prev.number),
            store_path: prev.store_path.clone(),
        },
        e.budget(2, None),
        false,
    )?;
    let started_unix = marker.started_unix;
    e.state.set_phase(&mut marker, "rollback")?;
    let action = ctx.cfg.activation_action().as_str();
    let back = e.switch(
        "rollback",
        Some(start_gen.number),
        Flip::Rollback,
        &prev.store_path,
        action,
        None,
    );
    // Whatever happened, go back to where the drill started.
    marker.deadline_unix = state::now_unix() + e.budget(1, None);
    e.state.set_phase(&mut marker, "rollforward")?;
    let now = e.profile()?;
    let flip = Flip::Generation(start_gen.number);
    let from = Some(now.current);
    let forward = e.switch(
        "rollforward",
        from,
        flip,
        &start_gen.store_path,
        action,
        None,
    );
    let end = e.profile()?;
    let running = profile::resolve(&ctx.cfg.current_system());
    let ended_on_start = end.current == start_gen.number
        && running.as_deref() == Some(start_gen.store_path.as_path());
    let success = back.success && forward.success && ended_on_start;
    let error = if success {
        None
    } else {
        let mut why = Vec::new();
        if let Some(e) = &back.error {
            why.push(format!("rollback: {e}"));
        }
        if let Some(e) = &forward.error {
            why.push(format!("rollforward: {e}"));
        }
        if !ended_on_start {
            why.push(format!(
                "the profile ended on generation {} and runs {}, not the start generation {}",
                end.current,
                running
                    .as_deref()
                    .map_or("nothing known".into(), |r| r.display().to_string()),
                start_gen.number
            ));
        }
        Some(why.join("; "))
    };
    let record = DrillRecord {
        profile: st.profile.clone(),
        started_unix,
        finished_unix: state::now_unix(),
        start_generation: Some(start_gen.number),
        start_store_path: start_gen.store_path.clone(),
        previous_generation: Some(prev.number),
        directions: vec![back, forward],
        success,
        ended_on_generation: Some(end.current),
        ended_on_start,
        interrupted: None,
        error,
        refused: false,
        overhead: Overhead::since(cpu0, t0),
    };
    let snapshot = e.finish(&ctx.out, &ctx.label, &record, marker.guard_unit.as_deref())?;
    drop(lock);
    Ok(Ok(DrillDone {
        record,
        snapshot,
        recovered_first,
    }))
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
    let action = cfg.activation_action().as_str();
    match st.previous() {
        None => s.push_str("  nothing to roll back to: the drill would refuse\n"),
        Some(prev) => {
            s.push_str(&format!(
                "  1. rollback:    nix-env --profile {} --rollback; {}/bin/switch-to-configuration {action}; wait for systemd's job queue; every gate green\n",
                st.profile.display(),
                prev.store_path.display()
            ));
            s.push_str(&format!(
                "  2. rollforward: nix-env --profile {} --switch-generation {}; {}/bin/switch-to-configuration {action}; the same waits\n",
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

/// A safe switch to `to`, confirmed within `confirm_timeout`.
pub fn safe_switch(
    ctx: &Context,
    to: &Path,
    confirm_timeout: Duration,
) -> Result<SwitchDone, RunError> {
    let e = Engine::new(ctx);
    let to = std::fs::canonicalize(to)
        .map_err(|err| RunError::Usage(format!("--to {}: {err}", to.display())))?;
    if !activate::has_script(&to) {
        return Err(RunError::Usage(format!(
            "--to {}: has no executable bin/switch-to-configuration: not a NixOS system closure",
            to.display()
        )));
    }
    let lock = Lock::acquire(e.state.path(), "labnode safe-switch")?;
    let recovered_first = e.recover_if_marked("`labnode safe-switch` at its start")?;
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
    let mut marker = e.begin(
        MarkerKind::SafeSwitch,
        Point {
            generation: Some(from.number),
            store_path: from.store_path.clone(),
        },
        Point {
            generation: None,
            store_path: to.clone(),
        },
        // One switch, then `switch-to-configuration boot`.
        e.budget(1, Some(confirm_timeout)) + ctx.cfg.activation_timeout().as_secs_f64(),
        true,
    )?;
    let started_unix = marker.started_unix;
    e.state.set_phase(&mut marker, "switch")?;
    // Confirmation runs the new generation with `test`: the boot loader's default stays the
    // old, known-good generation, so a reboot before confirmation boots that one by itself.
    let mut sw = e.switch(
        "switch",
        Some(from.number),
        Flip::Set(to.clone()),
        &to,
        "test",
        Some(confirm_timeout),
    );
    if sw.to_generation.is_some() {
        marker.to.generation = sw.to_generation.filter(|n| *n != from.number);
        let _ = e.state.write_marker(&marker);
    }
    if sw.success {
        // Every gate green: only now does the new generation become the boot default.
        e.state.set_phase(&mut marker, "boot")?;
        make_boot_default(ctx, &mut sw, &to);
    }
    let (outcome, reason, detect_seconds, recover_seconds, back) = if sw.success {
        (Outcome::Confirmed, None, None, None, None)
    } else {
        // Detected: roll back to `from`.
        let detected = Instant::now();
        let detect_seconds = t0.elapsed().as_secs_f64();
        let reason = sw
            .error
            .clone()
            .unwrap_or_else(|| "the switch failed".into());
        ctx.progress.step(&format!(
            "switch failed after {detect_seconds:.3}s: {reason}; rolling back to generation {}",
            from.number
        ));
        marker.deadline_unix = state::now_unix() + e.budget(1, None);
        e.state.set_phase(&mut marker, "rollback")?;
        let now = e.profile()?;
        // If the flip itself failed the profile never moved; switching to `from` then only
        // activates what was there.
        let back = e.switch(
            "rollback",
            Some(now.current),
            Flip::Generation(from.number),
            &from.store_path,
            ctx.cfg.activation_action().as_str(),
            None,
        );
        let recover = back.success.then(|| detected.elapsed().as_secs_f64());
        (
            Outcome::RolledBack,
            Some(reason),
            Some(detect_seconds),
            recover,
            Some(back),
        )
    };
    let record = SafeSwitchRecord {
        profile: st.profile.clone(),
        started_unix,
        finished_unix: state::now_unix(),
        from_generation: Some(from.number),
        from_store_path: from.store_path.clone(),
        to_generation: marker.to.generation,
        to_store_path: to.clone(),
        outcome,
        reason,
        detect_seconds,
        recover_seconds,
        healthy: back.as_ref().is_none_or(|b| b.success),
        switch: Some(sw),
        rollback: back,
        ended_on_generation: e.profile().ok().map(|s| s.current),
        overhead: Overhead::since(cpu0, t0),
    };
    let snapshot = e.finish(&ctx.out, &ctx.label, &record, marker.guard_unit.as_deref())?;
    drop(lock);
    Ok(SwitchDone {
        record,
        snapshot,
        recovered_first,
    })
}

/// After a confirmed switch: `switch-to-configuration boot` of `to` (the profile's current
/// generation) makes it the boot loader's default, timed as the `boot_default` phase. A
/// failure fails the switch, which is then rolled back.
fn make_boot_default(ctx: &Context, sw: &mut Switch, to: &Path) {
    let p = ctx.progress;
    p.live("switch: switch-to-configuration boot ...");
    let start = Instant::now();
    match activate::run(to, "boot", ctx.cfg.activation_timeout()) {
        Ok(a) => {
            sw.phases.boot_default = Some(a.took.as_secs_f64());
            p.step(&format!(
                "switch: switch-to-configuration boot: the boot default ({})",
                secs(a.took)
            ));
        }
        Err(err) => {
            sw.phases.boot_default = Some(start.elapsed().as_secs_f64());
            sw.activation_output = err.output().to_vec();
            sw.success = false;
            sw.error = Some(format!(
                "every gate was green, but making it the boot default failed: {err}"
            ));
            tracing::warn!("switch to {}: {err}", to.display());
            p.step(&format!(
                "switch: switch-to-configuration boot FAILED ({})",
                secs(start.elapsed())
            ));
        }
    }
}

/// `safe-switch --recover`: finishes (rolls back) an unfinished switch or drill. As a
/// guard (`guard_id`), waits for the labnode that armed it to finish or die first.
pub fn recover(ctx: &Context, guard_id: Option<&str>) -> Result<Option<Recovered>, RunError> {
    let e = Engine::new(ctx);
    let Some(id) = guard_id else {
        // At boot or by hand: the lock is free unless a labnode still runs.
        let _lock = Lock::acquire(e.state.path(), "labnode safe-switch --recover")?;
        return e.recover_if_marked("`labnode safe-switch --recover`");
    };
    let ours = |m: &Option<Marker>| m.as_ref().is_some_and(|m| m.id == id);
    let Some(first) = e.state.marker()?.filter(|m| m.id == id) else {
        return Ok(None);
    };
    let deadline = state::instant_of(first.deadline_unix);
    let mut done = false;
    let mut late = false;
    let got = Lock::wait(
        e.state.path(),
        "labnode rollback guard",
        Duration::from_millis(50),
        || {
            if !ours(&e.state.marker().unwrap_or(None)) {
                done = true;
                return true;
            }
            if Instant::now() >= deadline {
                late = true;
                return true;
            }
            false
        },
    )?;
    let detected = Instant::now();
    let detected_unix = state::now_unix();
    let lock = match got {
        Some(l) => l,
        None if done => return Ok(None),
        None => {
            // Past its deadline and still holding the lock: hung. Stop it, then take over.
            let m = e.state.marker()?.filter(|m| m.id == id);
            let Some(m) = m else { return Ok(None) };
            tracing::warn!(
                "labnode pid {} is past its deadline in phase {}; killing it",
                m.pid,
                m.phase
            );
            if state::alive(m.pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(m.pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let end = Instant::now() + Duration::from_secs(10);
            match Lock::wait(
                e.state.path(),
                "labnode rollback guard",
                Duration::from_millis(20),
                || Instant::now() >= end,
            )? {
                Some(l) => l,
                None => {
                    return Err(RunError::Refused(format!(
                        "labnode pid {} past its deadline still holds the lock after SIGKILL",
                        m.pid
                    )));
                }
            }
        }
    };
    let Some(m) = e.state.marker()?.filter(|m| m.id == id) else {
        return Ok(None);
    };
    let reason = if late {
        format!(
            "labnode (pid {}) was still in its `{}` phase at its deadline and was killed; found by its systemd guard",
            m.pid, m.phase
        )
    } else {
        interruption(&m, "its systemd guard")
    };
    let r = e.recover_marker(&m, reason, detected, detected_unix)?;
    drop(lock);
    Ok(Some(r))
}
