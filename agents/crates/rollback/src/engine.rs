//! The engine every node change runs on: one method per phase of a switch (flip the
//! profile, activate, let systemd settle, wait for the gates, make it the boot default),
//! the recovery that restores a known-good generation, and the invariant that decides when
//! a run is over.
//!
//! The invariant: a run's marker goes only when the running system, the system profile and
//! the boot loader's default name one known-good generation whose gates are green. Until
//! then whoever finds the marker (the run's systemd guard, the boot unit, the next
//! labnode) finishes the run, and a recovery that does not get there is tried again with
//! backoff (`labnode_rollback_recovery_failed` says so meanwhile). The known-good generation
//! is made the boot default even while its gates are red: it is what the host must boot.
//! The entry points are [`crate::drill()`], [`crate::safe_switch()`] and [`crate::recover()`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labnode_core::host::{self, HostPaths};
use labnode_core::snapshot::{Snapshot, Store};

use crate::activation::{self, Runner};
use crate::config::{Arm, Config};
use crate::gates::{self, Gate, GatesResult};
use crate::profile::{self, NixEnv, ProfileError};
use crate::progress::{Progress, secs};
use crate::record::{DRILL_KIND, Phases, Recorded, SAFE_SWITCH_KIND, Switch};
use crate::state::{self, Lock, Marker, MarkerKind, Point, RecoveryState, StateDir, StateError};
use crate::systemd::Systemd;
use labnode_core::snapshot::RecordKind;

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
    /// The result could not be stored (the run itself is over: nothing was undone).
    #[error("cannot write the record to {dir}: {why}; it is kept in {kept}")]
    Snapshot {
        /// The store.
        dir: PathBuf,
        /// Why.
        why: String,
        /// Where the record was written instead.
        kept: PathBuf,
    },
}

/// Where a run's interruptions come from (the process's deferred signals in production).
pub type InterruptSource = fn() -> Option<libc::c_int>;

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
    /// The signal that interrupted the run, if one did.
    pub interrupted: InterruptSource,
    /// How long to wait for another run's lock before refusing (0: refuse at once).
    pub lock_wait: Duration,
}

impl Context {
    /// A context with the process's signals as interruptions and no lock wait.
    pub fn new(cfg: Config, out: PathBuf, label: &str) -> Self {
        Context {
            cfg,
            config_file: None,
            out,
            label: label.to_owned(),
            host_paths: HostPaths::default(),
            progress: Progress::detect(),
            interrupted: crate::signals::pending,
            lock_wait: Duration::ZERO,
        }
    }
}

/// What recovery did with an unfinished run.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The marker it found.
    pub marker: Marker,
    /// Why the run was unfinished.
    pub reason: String,
    /// Whether the host ended on the known-good generation (the marker is gone).
    pub settled: bool,
    /// Whether it also ended with every gate green there.
    pub healthy: bool,
    /// The snapshot with the result (none while the recovery is not over).
    pub snapshot: Option<PathBuf>,
    /// What happened, in a line.
    pub summary: String,
}

/// Where a restore (or a confirmed switch) left the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// On the generation, every gate green.
    Green,
    /// On the generation (profile, running system and boot default), but a gate stayed red.
    Red(String),
    /// Not known to be on the generation: the run is not over.
    NotRestored(String),
}

impl Health {
    /// The invariant holds: the run can end (on the generation, every gate green).
    pub fn settled(&self) -> bool {
        self.green()
    }

    /// On the generation with every gate green.
    pub fn green(&self) -> bool {
        *self == Health::Green
    }

    /// What is wrong, if anything.
    pub fn why(&self) -> Option<&str> {
        match self {
            Health::Green => None,
            Health::Red(w) | Health::NotRestored(w) => Some(w),
        }
    }
}

/// How to flip the profile.
#[derive(Debug, Clone)]
pub(crate) enum Flip {
    /// `nix-env --rollback`.
    Rollback,
    /// `nix-env --switch-generation N`.
    Generation(u64),
    /// `nix-env --set PATH` (a new generation).
    Set(PathBuf),
    /// The profile is already there.
    None,
}

/// One switch to run.
pub(crate) struct Plan<'p> {
    pub direction: &'p str,
    pub flip: Flip,
    pub target: &'p Path,
    /// A bound on the gates from the end of settling (safe-switch's confirm timeout).
    pub gate_deadline: Option<Duration>,
    /// Make it the boot default once every gate is green.
    pub boot: bool,
    /// A forward switch stops at a signal (after the step in progress) and fails; a
    /// recovery never does.
    pub interruptible: bool,
}

pub(crate) struct Engine<'a> {
    pub ctx: &'a Context,
    pub gates: Vec<Gate>,
    nix: NixEnv,
    env: gates::Env,
    pub state: StateDir,
    runner: Runner,
    wrapper: PathBuf,
    unit_env: Vec<String>,
    seq: std::sync::atomic::AtomicU32,
}

impl<'a> Engine<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        let cfg = &ctx.cfg;
        let addr = cfg.systemd_address();
        let runner =
            if cfg.arm() != Arm::None && Systemd::connect(&addr, Duration::from_secs(1)).is_ok() {
                Runner::Systemd(addr.clone())
            } else {
                Runner::Process
            };
        Engine {
            ctx,
            gates: gates::from_config(cfg),
            nix: NixEnv {
                program: cfg.nix_env(),
                profile: cfg.profile(),
            },
            env: gates::Env { systemd: addr },
            state: StateDir::new(cfg.state_dir()),
            runner,
            wrapper: std::env::current_exe().unwrap_or_else(|_| "labnode".into()),
            unit_env: std::env::vars()
                .filter(|(k, _)| {
                    k == "PATH"
                        || k == "LOCALE_ARCHIVE"
                        || k.starts_with("NIX")
                        || k.starts_with("LABNODE_")
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            seq: std::sync::atomic::AtomicU32::new(0),
        }
    }

    pub fn profile(&self) -> Result<profile::State, ProfileError> {
        profile::read(&self.ctx.cfg.profile())
    }

    fn interrupted(&self) -> Option<libc::c_int> {
        (self.ctx.interrupted)()
    }

    /// Takes the run lock, waiting up to the context's `lock_wait` for another run.
    pub fn lock(&self, what: &str) -> Result<Lock, RunError> {
        if self.ctx.lock_wait.is_zero() {
            return Ok(Lock::acquire(self.state.path(), what)?);
        }
        let end = Instant::now() + self.ctx.lock_wait;
        match Lock::wait(self.state.path(), what, Duration::from_millis(100), || {
            Instant::now() >= end
        })? {
            Some(l) => Ok(l),
            None => Ok(Lock::acquire(self.state.path(), what)?),
        }
    }

    /// The running system's store path, which must be the profile's current generation.
    pub fn check_running(&self, st: &profile::State) -> Result<(), RunError> {
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
                 or roll the profile to what runs first, or the run would end on a generation \
                 that never ran",
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
        // The guard keeps trying (with backoff) until the host is healthy: nobody else
        // would before the next boot or the next run.
        let mut argv = vec![
            self.wrapper.display().to_string(),
            "safe-switch".into(),
            "--recover".into(),
            "--retry".into(),
            "--guard".into(),
            marker.id.clone(),
        ];
        if let Some(c) = &self.ctx.config_file {
            let c = std::path::absolute(c).unwrap_or_else(|_| c.clone());
            argv.push("--config".into());
            argv.push(c.display().to_string());
        }
        sd.start_transient_service(
            &unit,
            "labnode: finishes or rolls back an unconfirmed switch if labnode dies",
            &argv,
            &self.unit_env,
            crate::systemd::KillMode::MainProcess,
        )
        .map_err(|e| RunError::Refused(format!("cannot arm the rollback guard: {e}")))?;
        Ok(Some(unit))
    }

    /// Arms the guard of a new run (`require`: refuse without one unless `arm: none`), then
    /// writes its marker (the known-good system's GC root with it). In that order: a labnode
    /// killed between the two leaves no marker that nobody watches (the guard waits for the
    /// marker while labnode lives, and ends when labnode dies before writing it, nothing
    /// having changed). Nothing has changed yet if this fails.
    pub fn begin(
        &self,
        kind: MarkerKind,
        from: Point,
        to: Point,
        budget: Duration,
        require: bool,
    ) -> Result<Marker, RunError> {
        let started_unix = state::now_unix();
        let mut marker = Marker {
            kind,
            id: state::new_id(),
            pid: std::process::id(),
            pid_start: state::start_time(std::process::id()),
            boot_id: state::boot_id(),
            started_unix,
            profile: self.ctx.cfg.profile(),
            boot_default: Some(from.store_path.clone()),
            from,
            to,
            phase: "armed".into(),
            step: None,
            deadline_unix: started_unix + budget.as_secs_f64(),
            guard_unit: None,
            out: self.ctx.out.clone(),
            label: self.ctx.label.clone(),
            activation: None,
            recovery: None,
            draft: None,
        };
        marker.guard_unit = self.arm(&marker, require)?;
        self.keep_known_good(&marker.from.store_path);
        if let Err(e) = self.state.write_marker(&marker) {
            // The guard sees this labnode end without a marker and ends too.
            self.drop_known_good();
            return Err(e.into());
        }
        Ok(marker)
    }

    /// A GC root on the known-good system, for as long as the run is unfinished.
    fn keep_known_good(&self, store_path: &Path) {
        let root = self.ctx.cfg.gc_root();
        let tmp = root.with_extension("tmp");
        let done = root
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(store_path, &tmp)
            })
            .and_then(|()| std::fs::rename(&tmp, &root));
        if let Err(e) = done {
            tracing::warn!(
                "cannot keep a GC root on the known-good system at {}: {e}",
                root.display()
            );
        }
    }

    fn drop_known_good(&self) {
        let root = self.ctx.cfg.gc_root();
        if let Err(e) = std::fs::remove_file(&root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove the GC root {}: {e}", root.display());
            }
        }
    }

    /// The time a phase may need: `activations` activations, settling, the longest gate
    /// (or `confirm`), plus a margin. A guard takes over only after it.
    pub fn budget(&self, activations: u32, confirm: Option<Duration>) -> Duration {
        let cfg = &self.ctx.cfg;
        let gate_max = self
            .gates
            .iter()
            .map(|g| g.timeout)
            .max()
            .unwrap_or_default();
        let gate = confirm.map_or(gate_max, |c| c.min(gate_max).max(Duration::ZERO));
        cfg.activation_timeout() * activations.max(1)
            + cfg.settle_timeout()
            + gate
            + Duration::from_secs(30)
    }

    /// Enters `phase`: the marker says so, and the guard's deadline covers it.
    pub fn phase(&self, m: &mut Marker, phase: &str, budget: Duration) -> Result<(), RunError> {
        m.phase = phase.to_owned();
        m.step = None;
        m.deadline_unix = state::now_unix() + budget.as_secs_f64();
        self.state.write_marker(m)?;
        Ok(())
    }

    /// Enters a step of the current phase (written to the marker), and holds there while a
    /// test asks it to (`LABNODE_TEST_HOLD_AT=phase.step,...`: the fault tests' way to
    /// stop a run at a known point; never set in production).
    pub fn step(&self, m: &mut Marker, step: &str) {
        m.step = Some(step.to_owned());
        if let Err(e) = self.state.write_marker(m) {
            tracing::warn!("cannot record the step {step} in the marker: {e}");
        }
        let Ok(points) = std::env::var("LABNODE_TEST_HOLD_AT") else {
            return;
        };
        let here = format!("{}.{step}", m.phase);
        if !points.split(',').any(|p| p == here) {
            return;
        }
        let hold = self.state.path().join("hold");
        if std::fs::write(&hold, format!("{here} {}\n", std::process::id())).is_ok() {
            while hold.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn flip(&self, flip: &Flip) -> Result<Option<Duration>, ProfileError> {
        match flip {
            Flip::Rollback => self.nix.rollback().map(Some),
            Flip::Generation(n) => self.nix.switch_generation(*n).map(Some),
            Flip::Set(p) => self.nix.set(p).map(Some),
            Flip::None => Ok(None),
        }
    }

    /// One switch: flip, activate (`test`), settle, gates, and (`plan.boot`) `boot`.
    pub fn switch(&self, m: &mut Marker, plan: Plan<'_>) -> Switch {
        let sw = self.switch_steps(m, &plan);
        if let Some(e) = &sw.error {
            tracing::warn!("{} to {}: {e}", plan.direction, plan.target.display());
        }
        sw
    }

    fn switch_steps(&self, m: &mut Marker, plan: &Plan<'_>) -> Switch {
        let start = Instant::now();
        let mut sw = Switch {
            direction: plan.direction.to_owned(),
            from_generation: self.profile().ok().map(|s| s.current),
            to_generation: None,
            to_store_path: plan.target.to_owned(),
            phases: Phases::default(),
            recovery_seconds: None,
            success: false,
            error: None,
            settle_skipped: None,
            activation_output: Vec::new(),
            gates: Vec::new(),
            boot_error: None,
            lock_wait_seconds: None,
        };
        let stop = |sw: &mut Switch| -> bool {
            match self.interrupted().filter(|_| plan.interruptible) {
                Some(sig) => {
                    sw.error = Some(crate::signals::reason(sig));
                    true
                }
                None => false,
            }
        };
        self.step(m, "flip");
        if let Err(e) = self.flip_step(&mut sw, plan, start) {
            sw.error = Some(e);
            return sw;
        }
        if stop(&mut sw) {
            return sw;
        }
        self.step(m, "activate");
        if let Err(e) = self.activate_step(m, &mut sw, plan.target, "test") {
            sw.error = Some(e);
            return sw;
        }
        if stop(&mut sw) {
            return sw;
        }
        self.step(m, "settle");
        if let Err(e) = self.settle_step(&mut sw, plan.direction) {
            sw.error = Some(e);
            return sw;
        }
        if stop(&mut sw) {
            return sw;
        }
        self.step(m, "gates");
        self.gates_step(&mut sw, plan, start);
        if stop(&mut sw) {
            sw.success = false;
            return sw;
        }
        // A forward switch with a red gate goes no further; a restore makes its generation
        // the boot default even then: it is what the host must boot, red or green.
        if !sw.success && plan.interruptible {
            return sw;
        }
        if plan.boot {
            self.step(m, "boot");
            self.boot_step(m, &mut sw, plan);
            if stop(&mut sw) {
                sw.success = false;
            }
        }
        sw
    }

    fn flip_step(&self, sw: &mut Switch, plan: &Plan<'_>, start: Instant) -> Result<(), String> {
        let p = self.ctx.progress;
        let what = match &plan.flip {
            Flip::Rollback => "nix-env --rollback".to_owned(),
            Flip::Generation(n) => format!("nix-env --switch-generation {n}"),
            Flip::Set(_) => "nix-env --set".to_owned(),
            Flip::None => "the profile is already there".to_owned(),
        };
        if self.flip(&plan.flip).map_err(|e| e.to_string())?.is_some() {
            sw.phases.profile_flip = Some(start.elapsed().as_secs_f64());
        }
        let st = self.profile().map_err(|e| format!("after `{what}`: {e}"))?;
        let cur = st.current();
        sw.to_generation = Some(st.current);
        if cur.map(|g| g.store_path.as_path()) != Some(plan.target) {
            return Err(format!(
                "after `{what}` the profile is on generation {} ({}), not on {}",
                st.current,
                cur.map_or("?".into(), |g| g.store_path.display().to_string()),
                plan.target.display()
            ));
        }
        p.step(&format!(
            "{}: {what}: generation {} ({})",
            plan.direction,
            st.current,
            secs(start.elapsed())
        ));
        Ok(())
    }

    /// Runs one activation to its end, recording it in the marker while it runs.
    fn activate(
        &self,
        m: &mut Marker,
        target: &Path,
        action: &str,
    ) -> Result<activation::Activated, activation::ActivationError> {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let req = activation::Request {
            system: target,
            action,
            timeout: self.ctx.cfg.activation_timeout(),
            dir: &self.state.path().join("activations"),
            name: format!("{}-{n}-{action}", m.id),
            switch_lock: &self.ctx.cfg.switch_lock(),
            wrapper: &self.wrapper,
            env: &self.unit_env,
        };
        prune_logs(req.dir, 64);
        let state = &self.state;
        activation::run(&self.runner, &req, |h| {
            m.activation = Some(h.clone());
            if let Err(e) = state.write_marker(m) {
                tracing::warn!("cannot record the activation in the marker: {e}");
            }
        })
    }

    fn activate_step(
        &self,
        m: &mut Marker,
        sw: &mut Switch,
        target: &Path,
        action: &str,
    ) -> Result<(), String> {
        let p = self.ctx.progress;
        p.live(&format!(
            "{}: switch-to-configuration {action} ...",
            sw.direction
        ));
        let t0 = Instant::now();
        match self.activate(m, target, action) {
            Ok(a) => {
                sw.phases.activation = Some(a.took.as_secs_f64());
                if !a.waited.is_zero() {
                    sw.lock_wait_seconds = Some(a.waited.as_secs_f64());
                }
                p.step(&format!(
                    "{}: switch-to-configuration {action} ({})",
                    sw.direction,
                    secs(a.took)
                ));
                Ok(())
            }
            Err(e) => {
                sw.phases.activation = Some(t0.elapsed().as_secs_f64());
                sw.activation_output = e.output().to_vec();
                p.step(&format!(
                    "{}: activation FAILED ({})",
                    sw.direction,
                    secs(t0.elapsed())
                ));
                Err(format!("activation failed: {e}"))
            }
        }
    }

    fn settle_step(&self, sw: &mut Switch, direction: &str) -> Result<(), String> {
        let p = self.ctx.progress;
        let cfg = &self.ctx.cfg;
        let settle_start = Instant::now();
        let Some(sd) = self.systemd_reachable() else {
            sw.settle_skipped = Some("systemd is not reachable here".into());
            return Ok(());
        };
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
                    p.step(&format!(
                        "{direction}: units settled ({:.3}s)",
                        settle_start.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
                Ok(j) if Instant::now() >= end => {
                    return Err(format!(
                        "units did not settle: {} jobs still queued after {} (first: {} {})",
                        j.len(),
                        secs(cfg.settle_timeout()),
                        j[0].job_type,
                        j[0].unit
                    ));
                }
                Ok(j) => p.live(&format!("{direction}: {} systemd jobs queued ...", j.len())),
                Err(e) => {
                    sw.settle_skipped = Some(format!("systemd stopped answering: {e}"));
                    return Ok(());
                }
            }
            std::thread::sleep(interval);
        }
    }

    fn gates_step(&self, sw: &mut Switch, plan: &Plan<'_>, start: Instant) {
        let p = self.ctx.progress;
        let gates_start = Instant::now();
        let live = Mutex::new(Vec::new());
        let interruptible = plan.interruptible;
        let source = self.ctx.interrupted;
        let stop = move || interruptible && source().is_some();
        let result: GatesResult = std::thread::scope(|s| {
            let h = s.spawn(|| {
                gates::run(
                    &self.gates,
                    &self.env,
                    start,
                    plan.gate_deadline.map(|d| gates_start + d),
                    &live,
                    &stop,
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
                            "{}: gates {green}/{} green{red} {}",
                            plan.direction,
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
                    "{}: every gate green; recovery {}",
                    plan.direction,
                    secs(recovery)
                ));
            }
            None => {
                sw.error = Some(format!("gates stayed red: {}", result.red().join("; ")));
                p.step(&format!(
                    "{}: gates RED ({})",
                    plan.direction,
                    secs(gates_start.elapsed())
                ));
            }
        }
    }

    /// `switch-to-configuration boot` once every gate is green. Until it succeeds the boot
    /// loader's default is unknown (the marker says so). A failure fails a forward switch
    /// (which is then rolled back) and is reported by a recovery, whose generation keeps
    /// running: it never undoes the reactivation.
    fn boot_step(&self, m: &mut Marker, sw: &mut Switch, plan: &Plan<'_>) {
        let p = self.ctx.progress;
        p.live(&format!(
            "{}: switch-to-configuration boot ...",
            plan.direction
        ));
        m.boot_default = None;
        if let Err(e) = self.state.write_marker(m) {
            tracing::warn!("cannot record the boot step in the marker: {e}");
        }
        let t0 = Instant::now();
        match self.activate(m, plan.target, "boot") {
            Ok(a) => {
                sw.phases.boot_default = Some(a.took.as_secs_f64());
                m.boot_default = Some(plan.target.to_owned());
                if let Err(e) = self.state.write_marker(m) {
                    tracing::warn!("cannot record the boot default in the marker: {e}");
                }
                p.step(&format!(
                    "{}: switch-to-configuration boot: the boot default ({})",
                    plan.direction,
                    secs(a.took)
                ));
            }
            Err(err) => {
                sw.phases.boot_default = Some(t0.elapsed().as_secs_f64());
                sw.activation_output = err.output().to_vec();
                sw.boot_error = Some(err.to_string());
                tracing::error!(
                    "{}: making {} the boot default failed: {err}",
                    plan.direction,
                    plan.target.display()
                );
                if plan.interruptible {
                    sw.success = false;
                    sw.error = Some(format!(
                        "every gate was green, but making it the boot default failed: {err}"
                    ));
                }
                p.step(&format!(
                    "{}: switch-to-configuration boot FAILED ({})",
                    plan.direction,
                    secs(t0.elapsed())
                ));
            }
        }
    }

    /// Waits for the activation the marker names, if it still runs (another labnode's, or
    /// this run's before a crash), up to its bound; then stops it. Nothing is activated
    /// while another activation runs.
    fn take_over_activation(&self, m: &Marker) {
        let Some(h) = &m.activation else { return };
        let runner = match &h.unit {
            Some(_) => Runner::Systemd(self.env.systemd.clone()),
            None => Runner::Process,
        };
        if !activation::running(&runner, h) {
            return;
        }
        let bound =
            state::instant_of(h.started_unix + self.ctx.cfg.activation_timeout().as_secs_f64());
        self.ctx.progress.step(&format!(
            "waiting for the activation in flight ({} {}) to end",
            h.system.display(),
            h.action
        ));
        tracing::info!(
            "waiting for the activation in flight ({} {}) to end before recovering",
            h.system.display(),
            h.action
        );
        if let activation::Ended::Late = activation::wait(&runner, h, None, bound) {
            tracing::warn!("the activation in flight ran past its bound: stopping it");
            activation::stop(&runner, h);
        }
    }

    /// Restores `known`: waits for an activation in flight, then does what is missing
    /// (flip the profile, reactivate with `test` and wait for the gates, make it the boot
    /// default). Returns the switch and where it left the host.
    pub fn restore(&self, m: &mut Marker, direction: &str, known: &Point) -> (Switch, Health) {
        self.take_over_activation(m);
        let flip = match self.profile() {
            Ok(st)
                if st
                    .current()
                    .is_some_and(|g| g.store_path == known.store_path) =>
            {
                Flip::None
            }
            Ok(st) => match known
                .generation
                .filter(|n| st.get(*n).is_some_and(|g| g.store_path == known.store_path))
            {
                Some(n) => Flip::Generation(n),
                None => Flip::Set(known.store_path.clone()),
            },
            Err(_) => Flip::Set(known.store_path.clone()),
        };
        let boot = self.ctx.cfg.sets_boot_default()
            && m.boot_default.as_deref() != Some(known.store_path.as_path());
        let sw = self.switch(
            m,
            Plan {
                direction,
                flip,
                target: &known.store_path,
                gate_deadline: None,
                boot,
                interruptible: false,
            },
        );
        let healthy = self.invariant(m, &known.store_path, &sw);
        (sw, healthy)
    }

    /// The invariant: the running system, the profile and the boot default are `known`
    /// (and its activation ran); then whether its gates were green.
    pub fn invariant(&self, m: &Marker, known: &Path, sw: &Switch) -> Health {
        let mut wrong = Vec::new();
        // Only the gates' verdict leaves the host on `known`; an activation that failed, a
        // flip that did not happen or an interruption may not have.
        let gates_red = !sw.gates.is_empty() && sw.gates.iter().any(|g| !g.passed);
        let red = match (&sw.error, sw.success) {
            (_, true) => None,
            (Some(e), false) if gates_red => Some(e.clone()),
            (e, false) => {
                wrong.push(e.clone().unwrap_or_else(|| "the switch did not end".into()));
                None
            }
        };
        match self.profile() {
            Ok(st) if st.current().is_some_and(|g| g.store_path == known) => {}
            Ok(st) => wrong.push(format!("the profile is on generation {}", st.current)),
            Err(e) => wrong.push(e.to_string()),
        }
        let running = profile::resolve(&self.ctx.cfg.current_system());
        if running.as_deref() != Some(known) {
            wrong.push(format!(
                "{} runs",
                running.map_or("nothing known".into(), |r| r.display().to_string())
            ));
        }
        if self.ctx.cfg.sets_boot_default() && m.boot_default.as_deref() != Some(known) {
            wrong.push(match &sw.boot_error {
                Some(e) => format!("the boot default could not be set: {e}"),
                None => "the boot default is not known to be it".into(),
            });
        }
        match (wrong.is_empty(), red) {
            (true, None) => Health::Green,
            (true, Some(red)) => Health::Red(format!("on {}, but {red}", known.display())),
            (false, _) => Health::NotRestored(format!(
                "not restored to {}: {}",
                known.display(),
                wrong.join("; ")
            )),
        }
    }

    /// Ends a run that is healthy: the record goes to the store (once: a record with the
    /// run's id already there is not written again), then the marker and the GC root go and
    /// the guard is stopped. A store that cannot be written undoes nothing: the record is
    /// kept in the state directory and the error returned after the marker is gone.
    /// `may_be_written`: an earlier process may have written it already (its marker was
    /// at the `record` step): the store is searched for it first.
    pub fn finish<T: Recorded>(
        &self,
        m: &mut Marker,
        record: &T,
        may_be_written: bool,
    ) -> Result<PathBuf, RunError> {
        m.step = Some("record".into());
        m.draft = serde_json::to_value(record).ok();
        self.state.write_marker(m)?;
        self.step(m, "record");
        let found = if may_be_written {
            find_record(&m.out, T::KIND, &m.id, m.started_unix)
        } else {
            None
        };
        let result = match found {
            Some(p) => Ok(p),
            None => self.write_record(&m.out, &m.label, record),
        };
        let result = result.map_err(|why| {
            let kept = self.state.path().join(format!("unsaved-{}.json", m.id));
            let _ = std::fs::write(&kept, serde_json::to_vec_pretty(record).unwrap_or_default());
            tracing::error!(
                "cannot write the record to {}: {why}; kept in {}",
                m.out.display(),
                kept.display()
            );
            RunError::Snapshot {
                dir: m.out.clone(),
                why,
                kept,
            }
        });
        self.state.clear_marker()?;
        self.drop_known_good();
        // The guard may be this very process (`--guard`); stopping it is tidy, not needed.
        if let Some(unit) = m
            .guard_unit
            .as_deref()
            .filter(|_| !std::env::args().any(|a| a == "--guard"))
        {
            if let Some(sd) = self.systemd_reachable() {
                let _ = sd.stop(unit);
            }
        }
        result
    }

    /// A record of a run refused before it changed anything (no marker to clear).
    pub fn record_refusal<T: Recorded>(&self, record: &T) -> Result<PathBuf, RunError> {
        self.write_record(&self.ctx.out, &self.ctx.label, record)
            .map_err(|why| RunError::Snapshot {
                dir: self.ctx.out.clone(),
                why,
                kept: PathBuf::new(),
            })
    }

    fn write_record<T: Recorded>(
        &self,
        out: &Path,
        label: &str,
        record: &T,
    ) -> Result<PathBuf, String> {
        let mut snap =
            Snapshot::new(label, host::facts(&self.ctx.host_paths)).map_err(|e| e.to_string())?;
        snap.add_metrics(T::SOURCE, &record.samples());
        snap.add_record(T::KIND, record)
            .map_err(|e| e.to_string())?;
        Store::new(out).write(&snap).map_err(|e| e.to_string())
    }

    /// A run that is not healthy yet: the marker stays with the draft record and the
    /// recovery's state, and the next attempt waits for `retry_interval` (doubling to 64
    /// times it).
    pub fn not_yet<T: Recorded>(
        &self,
        m: &mut Marker,
        record: &T,
        why: &str,
    ) -> Result<(), RunError> {
        let now = state::now_unix();
        let attempts = m.recovery.as_ref().map_or(0, |r| r.attempts) + 1;
        let wait =
            self.ctx.cfg.retry_interval().as_secs_f64() * f64::from(1u32 << (attempts - 1).min(6));
        m.recovery = Some(RecoveryState {
            attempts,
            failing_since_unix: m.recovery.as_ref().map_or(now, |r| r.failing_since_unix),
            last_error: why.to_owned(),
            next_unix: now + wait,
        });
        m.draft = serde_json::to_value(record).ok();
        m.step = None;
        self.state.write_marker(m)?;
        tracing::error!(
            "recovery attempt {attempts} did not end healthy: {why}; the marker stays in {} and the next attempt is in {wait:.1}s",
            self.state.path().display()
        );
        Ok(())
    }
}

/// Keeps the newest `keep` activation logs and status files of `dir`.
fn prune_logs(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep * 2 {
        return;
    }
    files.sort();
    for (_, p) in &files[..files.len() - keep * 2] {
        let _ = std::fs::remove_file(p);
    }
}

/// The snapshot holding the record of `kind` with run id `id`, if the store has one. Only
/// files written since the run started are read.
fn find_record(out: &Path, kind: RecordKind, id: &str, since_unix: f64) -> Option<PathBuf> {
    let since = std::time::UNIX_EPOCH + Duration::from_secs_f64((since_unix - 1.0).max(0.0));
    std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .find_map(|e| {
            let snap = Snapshot::read(&e.path()).ok()?;
            snap.records
                .iter()
                .any(|r| {
                    r.kind == kind.as_str() && r.data.get("id").and_then(|v| v.as_str()) == Some(id)
                })
                .then(|| e.path())
        })
}

/// The record kind a marker's run writes.
pub fn kind_of(m: &Marker) -> RecordKind {
    match m.kind {
        MarkerKind::RollbackDrill => DRILL_KIND,
        MarkerKind::SafeSwitch => SAFE_SWITCH_KIND,
    }
}
