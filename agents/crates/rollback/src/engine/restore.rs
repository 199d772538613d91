//! Recovery: restoring a known-good generation (after any activation in flight), and the
//! invariant that decides whether a run is over.

use std::path::Path;

use super::{Engine, Flip, Health, Plan};
use crate::activation::{self, Runner};
use crate::profile;
use crate::record::Switch;
use crate::state::{self, Marker, Point};

impl Engine<'_> {
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
}
