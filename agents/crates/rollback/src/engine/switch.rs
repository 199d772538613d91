//! One switch, a method per phase: flip the profile, activate (`test`), let systemd
//! settle, wait for the gates, make it the boot default (`boot`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Engine, Flip, Plan};
use crate::activation;
use crate::gates::{self, GatesResult};
use crate::profile::ProfileError;
use crate::record::{Phases, Switch};
use crate::state::Marker;
use labnode_core::hub::fmt_duration;

impl Engine<'_> {
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
            fmt_duration(start.elapsed())
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
                    fmt_duration(a.took)
                ));
                Ok(())
            }
            Err(e) => {
                sw.phases.activation = Some(t0.elapsed().as_secs_f64());
                sw.activation_output = e.output().to_vec();
                p.step(&format!(
                    "{}: activation FAILED ({})",
                    sw.direction,
                    fmt_duration(t0.elapsed())
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
                        fmt_duration(cfg.settle_timeout()),
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
                            fmt_duration(gates_start.elapsed())
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
                    fmt_duration(recovery)
                ));
            }
            None => {
                sw.error = Some(format!("gates stayed red: {}", result.red().join("; ")));
                p.step(&format!(
                    "{}: gates RED ({})",
                    plan.direction,
                    fmt_duration(gates_start.elapsed())
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
                    fmt_duration(a.took)
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
                    fmt_duration(t0.elapsed())
                ));
            }
        }
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
