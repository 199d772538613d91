//! The engine every node change runs on: one method per phase of a switch (flip the
//! profile, activate, let systemd settle, wait for the gates, make it the boot default),
//! the recovery that restores a known-good generation, and the invariant that decides when
//! a run is over. Here the types and the run's bookkeeping (lock, phase, step); the phases
//! in `begin.rs` (arm, marker), `switch.rs`, `restore.rs` and `finish.rs` (record, marker).
//!
//! The invariant: a run's marker goes only when the running system, the system profile and
//! the boot loader's default name one known-good generation whose gates are green. Until
//! then whoever finds the marker (the run's systemd guard, the boot unit, the next
//! labnode) finishes the run, and a recovery that does not get there is tried again with
//! backoff (`labnode_rollback_recovery_failed` says so meanwhile). The known-good generation
//! is made the boot default even while its gates are red: it is what the host must boot.
//! The entry points are [`crate::drill()`], [`crate::safe_switch()`] and [`crate::recover()`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labnode_core::host::HostPaths;
use labnode_core::snapshot::RecordKind;

use crate::activation::Runner;
use crate::config::{Arm, Config};
use crate::gates::{self, Gate};
use crate::profile::{self, NixEnv, ProfileError};
use crate::progress::Progress;
use crate::record::{DRILL_KIND, SAFE_SWITCH_KIND};
use crate::state::{self, Lock, Marker, MarkerKind, StateDir, StateError};
use crate::systemd::Systemd;

mod begin;
mod finish;
mod restore;
mod switch;

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
}

/// The record kind a marker's run writes.
pub fn kind_of(m: &Marker) -> RecordKind {
    match m.kind {
        MarkerKind::RollbackDrill => DRILL_KIND,
        MarkerKind::SafeSwitch => SAFE_SWITCH_KIND,
    }
}
