//! The systemd gates: units `active`, no unit `failed`, an empty job queue. They share the
//! checker's connection to the manager.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Checker, GateCheck};

/// `systemd_active`: these units are `active`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct SystemdActive(pub Vec<String>);

impl GateCheck for SystemdActive {
    fn describe(&self) -> String {
        format!("systemd units active: {}", self.0.join(", "))
    }

    fn validate(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("list at least one unit".into());
        }
        if let Some(bad) = self.0.iter().find(|u| !u.contains('.')) {
            return Err(format!("{bad:?} is not a unit name (e.g. sshd.service)"));
        }
        Ok(())
    }

    fn needs_systemd(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        let units = &self.0;
        cx.with_systemd(bound, |sd, _| {
            let got = sd.units(units).map_err(|e| e.to_string())?;
            let not: Vec<String> = got
                .iter()
                .filter(|u| u.active_state != "active")
                .map(|u| {
                    if u.load_state == "loaded" {
                        format!("{} is {} ({})", u.name, u.active_state, u.sub_state)
                    } else {
                        format!("{} is {}", u.name, u.load_state)
                    }
                })
                .collect();
            let missing: Vec<&String> = units
                .iter()
                .filter(|u| !got.iter().any(|g| &g.name == *u))
                .collect();
            if !missing.is_empty() {
                Err(format!("systemd does not report {missing:?}"))
            } else if not.is_empty() {
                Ok(())
            } else {
                Err(not.join(", "))
            }
        })
    }
}

/// `systemd_no_failed`: no unit is `failed`, except those ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdNoFailed {
    /// Units whose failure does not count.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl GateCheck for SystemdNoFailed {
    fn describe(&self) -> String {
        if self.ignore.is_empty() {
            "no failed systemd units".into()
        } else {
            format!(
                "no failed systemd units (ignoring {})",
                self.ignore.join(", ")
            )
        }
    }

    fn needs_systemd(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        cx.with_systemd(bound, |sd, _| {
            let failed: Vec<String> = sd
                .units_in_state(&["failed"])
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|u| u.name)
                .filter(|n| !self.ignore.contains(n))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("failed units: {}", failed.join(", ")))
            }
        })
    }
}

/// `systemd_jobs_empty`: systemd's job queue is empty (an empty mapping, `{}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdJobsEmpty {}

impl GateCheck for SystemdJobsEmpty {
    fn describe(&self) -> String {
        "systemd job queue empty".into()
    }

    fn needs_systemd(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        cx.with_systemd(bound, |sd, own_units| {
            let all = sd.jobs().map_err(|e| e.to_string())?;
            let jobs = crate::systemd::unsettled(&all, own_units);
            if jobs.is_empty() {
                Ok(())
            } else {
                let shown: Vec<String> = jobs
                    .iter()
                    .take(5)
                    .map(|j| format!("{} {} ({})", j.job_type, j.unit, j.state))
                    .collect();
                Err(format!("{} jobs queued: {}", jobs.len(), shown.join(", ")))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::check;
    use super::*;

    #[test]
    fn missing_systemd() {
        let e = check(&Check::SystemdJobsEmpty(SystemdJobsEmpty {})).expect_err("no systemd");
        assert!(
            e.contains("cannot reach systemd at /nonexistent/private"),
            "{e}"
        );
    }
}
