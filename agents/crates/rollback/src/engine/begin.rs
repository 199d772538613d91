//! Preparing a run: arming the guard, writing the marker, and the GC root that keeps the
//! known-good system while the run is unfinished.

use std::path::Path;
use std::time::Duration;

use super::{Engine, RunError};
use crate::config::Arm;
use crate::state::{self, Marker, MarkerKind, Point};
use crate::systemd::Systemd;

impl Engine<'_> {
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
    pub(super) fn keep_known_good(&self, store_path: &Path) {
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

    pub(super) fn drop_known_good(&self) {
        let root = self.ctx.cfg.gc_root();
        if let Err(e) = std::fs::remove_file(&root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove the GC root {}: {e}", root.display());
            }
        }
    }
}
