//! Running a generation's `bin/switch-to-configuration ACTION` so that it never depends on
//! labnode staying alive.
//!
//! The script runs under a small wrapper (`labnode internal activation`, [`wrapper_main`])
//! that appends its output to a log file in the state directory, copies it to its own
//! stdout (the journal, under systemd) and writes the exit status to a status file. With
//! systemd the wrapper is a transient unit of its own, as nixos-rebuild runs
//! switch-to-configuration; without it, a process in a session of its own. Either way its
//! output never goes to a pipe that dies with labnode, and whoever takes over (the guard,
//! the boot unit, the next labnode) finds the unit or process in the marker
//! ([`Handle`]) and waits for it, or stops it, before it activates anything itself.
//!
//! Before starting, [`run`] waits for the switch-to-configuration lock to be free and for
//! no `nixos-rebuild-switch-to-configuration*` unit to be active; an activation that fails
//! with "Could not acquire lock" is tried again, never counted as a failed activation.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use labnode_core::hub::fmt_duration;
use serde::{Deserialize, Serialize};

use crate::config::SystemdAddress;
use crate::systemd::Systemd;

mod wrapper;

use wrapper::Follow;
pub use wrapper::{read_status, tail, wrapper_main};

/// Lines of output kept for the record.
/// What switch-to-configuration prints when another activation holds its lock.
pub const LOCK_BUSY: &str = "Could not acquire lock";
/// Units nixos-rebuild runs switch-to-configuration in (26.05 adds a suffix).
pub const NIXOS_REBUILD_UNIT: &str = "nixos-rebuild-switch-to-configuration";

/// How an activation ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The generation has no activation script.
    #[error("{0} does not exist or is not executable: not a NixOS system closure")]
    Missing(PathBuf),
    /// It could not be started.
    #[error("cannot start {program} {action}: {why}")]
    Start {
        /// The script.
        program: PathBuf,
        /// The action.
        action: String,
        /// Why.
        why: String,
    },
    /// It exited non-zero or was killed by a signal.
    #[error("{program} {action} exited with {status} after {took}{tail}", took = fmt_duration(*.took), tail = fmt_tail(.output))]
    Failed {
        /// The script.
        program: PathBuf,
        /// The action.
        action: String,
        /// Its exit status, as written.
        status: String,
        /// How long it ran.
        took: Duration,
        /// The end of its output.
        output: Vec<String>,
    },
    /// It ran past its bound and was stopped.
    #[error("{program} {action} still ran after {took} and was stopped{tail}", took = fmt_duration(*.took), tail = fmt_tail(.output))]
    Timeout {
        /// The script.
        program: PathBuf,
        /// The action.
        action: String,
        /// The bound.
        took: Duration,
        /// The end of its output.
        output: Vec<String>,
    },
    /// Another activation (a hand-run nixos-rebuild, an earlier one) kept the
    /// switch-to-configuration lock for the whole bound.
    #[error("{program} {action}: another activation held the switch-to-configuration lock ({what}) for {took}", took = fmt_duration(*.took))]
    Busy {
        /// The script.
        program: PathBuf,
        /// The action.
        action: String,
        /// Who held it.
        what: String,
        /// How long labnode waited.
        took: Duration,
    },
}

fn fmt_tail(lines: &[String]) -> String {
    match lines.len() {
        0 => String::new(),
        _ => format!(
            "; its last output: {}",
            lines[lines.len().saturating_sub(5)..].join(" | ")
        ),
    }
}

impl ActivationError {
    /// The end of the script's output, when it ran.
    pub fn output(&self) -> &[String] {
        match self {
            ActivationError::Failed { output, .. } | ActivationError::Timeout { output, .. } => {
                output
            }
            _ => &[],
        }
    }
}

/// A finished, successful activation.
#[derive(Debug, Clone)]
pub struct Activated {
    /// How long the script ran (the last attempt; waits for the lock excluded).
    pub took: Duration,
    /// How long labnode waited for another activation's lock first.
    pub waited: Duration,
    /// The end of its output.
    pub output: Vec<String>,
}

/// The activation script of a system closure.
pub fn script_of(system: &Path) -> PathBuf {
    system.join("bin/switch-to-configuration")
}

/// Whether `system` carries an executable activation script.
pub fn has_script(system: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(script_of(system))
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An activation in flight, as the marker keeps it: enough for another process to find it,
/// wait for it or stop it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handle {
    /// The generation.
    pub system: PathBuf,
    /// The action.
    pub action: String,
    /// The transient unit it runs in (systemd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The wrapper's pid (no systemd): the leader of its own session and process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The wrapper's start time (`/proc/PID/stat` field 22), against pid reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The boot it runs in: a pid means nothing after a reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Its output.
    pub log: PathBuf,
    /// Its exit status, once it has ended.
    pub status: PathBuf,
    /// When it started, seconds since the epoch.
    pub started_unix: f64,
}

/// What the wrapper writes when the script ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When it ended.
    pub finished_unix: f64,
}

impl Status {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status: {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "an unknown status".into(),
        }
    }
}

/// How activations are started.
#[derive(Debug, Clone)]
pub enum Runner {
    /// A transient unit of the systemd manager reached at this address.
    Systemd(SystemdAddress),
    /// A process in a session of its own (no systemd: scratch profiles, the demo).
    Process,
}

/// What to activate.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The generation.
    pub system: &'a Path,
    /// `test`, `boot` or `switch`.
    pub action: &'a str,
    /// Bound of the whole activation, waits for the lock included.
    pub timeout: Duration,
    /// Where logs and status files go.
    pub dir: &'a Path,
    /// A name unique to this activation (`<run id>-<n>-<action>`): the unit's and the
    /// files'.
    pub name: String,
    /// The switch-to-configuration lock.
    pub switch_lock: &'a Path,
    /// The labnode program whose `internal activation` runs the script.
    pub wrapper: &'a Path,
    /// Environment of the unit (`KEY=value`).
    pub env: &'a [String],
}

/// Runs the activation to its end: waits for the switch to be free, starts the script,
/// calls `started` with its handle (the marker records it before anything runs long),
/// waits for its status, and tries again while another activation holds the lock.
pub fn run(
    runner: &Runner,
    req: &Request<'_>,
    mut started: impl FnMut(&Handle),
) -> Result<Activated, ActivationError> {
    let program = script_of(req.system);
    if !has_script(req.system) {
        return Err(ActivationError::Missing(program));
    }
    let start = Instant::now();
    let end = start + req.timeout;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if let Err(what) = wait_until_free(runner, req.switch_lock, end) {
            return Err(ActivationError::Busy {
                program,
                action: req.action.to_owned(),
                what,
                took: start.elapsed(),
            });
        }
        let name = if attempt == 1 {
            req.name.clone()
        } else {
            format!("{}-a{attempt}", req.name)
        };
        let (handle, child) = spawn(runner, req, &name).map_err(|why| ActivationError::Start {
            program: program.clone(),
            action: req.action.to_owned(),
            why,
        })?;
        started(&handle);
        let t0 = Instant::now();
        let ended = wait(runner, &handle, child, end);
        let output = tail(&handle.log);
        match ended {
            Ended::Status(s) if s.success() => {
                return Ok(Activated {
                    took: t0.elapsed(),
                    waited: t0.duration_since(start),
                    output,
                });
            }
            Ended::Status(s)
                if s.code == Some(1)
                    && output.iter().any(|l| l.contains(LOCK_BUSY))
                    && Instant::now() + backoff < end =>
            {
                tracing::info!(
                    "switch-to-configuration {} found its lock held by another activation; trying again in {}",
                    req.action,
                    fmt_duration(backoff)
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Ended::Status(s) => {
                return Err(ActivationError::Failed {
                    program,
                    action: req.action.to_owned(),
                    status: s.describe(),
                    took: t0.elapsed(),
                    output,
                });
            }
            Ended::Vanished(why) => {
                return Err(ActivationError::Failed {
                    program,
                    action: req.action.to_owned(),
                    status: why,
                    took: t0.elapsed(),
                    output,
                });
            }
            Ended::Late => {
                stop(runner, &handle);
                return Err(ActivationError::Timeout {
                    program,
                    action: req.action.to_owned(),
                    took: start.elapsed(),
                    output: tail(&handle.log),
                });
            }
        }
    }
}

/// How waiting ended.
#[derive(Debug)]
pub enum Ended {
    /// The wrapper wrote the script's status.
    Status(Status),
    /// The unit or process is gone without a status (killed with its wrapper).
    Vanished(String),
    /// Still running at the deadline.
    Late,
}

/// Waits for `handle`'s activation (not necessarily this process's) to end, until `end`.
/// The log is followed into this process's own log meanwhile.
pub fn wait(runner: &Runner, handle: &Handle, mut child: Option<Child>, end: Instant) -> Ended {
    let mut follow = Follow::new(&handle.log);
    let sd = match runner {
        Runner::Systemd(addr) => Systemd::connect(addr, Duration::from_secs(2)).ok(),
        Runner::Process => None,
    };
    loop {
        follow.poll();
        if let Some(s) = read_status(&handle.status) {
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
            follow.poll();
            return Ended::Status(s);
        }
        if let Some(why) = gone(handle, sd.as_ref(), child.as_mut()) {
            // The wrapper writes the status before it exits: read once more, then it
            // ended without one.
            if let Some(s) = read_status(&handle.status) {
                return Ended::Status(s);
            }
            return Ended::Vanished(why);
        }
        if Instant::now() >= end {
            return Ended::Late;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the activation of `handle` has ended, with or without a status (a takeover's
/// question before it activates anything). `None`: still running.
pub fn running(runner: &Runner, handle: &Handle) -> bool {
    if read_status(&handle.status).is_some() {
        return false;
    }
    let sd = match runner {
        Runner::Systemd(addr) => Systemd::connect(addr, Duration::from_secs(2)).ok(),
        Runner::Process => None,
    };
    gone(handle, sd.as_ref(), None).is_none()
}

/// Stops the activation of `handle` (its unit, or its process group).
pub fn stop(runner: &Runner, handle: &Handle) {
    if let (Some(unit), Runner::Systemd(addr)) = (&handle.unit, runner) {
        if let Ok(sd) = Systemd::connect(addr, Duration::from_secs(2)) {
            if let Err(e) = sd.stop(unit) {
                tracing::warn!("cannot stop {unit}: {e}");
            }
        }
    }
    if let Some(pid) = handle.pid.filter(|_| same_process(handle)) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill has no memory-safety preconditions; -pid is the wrapper's own
            // process group (it is a session leader), checked against pid reuse above.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

fn same_process(handle: &Handle) -> bool {
    let Some(pid) = handle.pid else { return false };
    if handle.boot_id.is_some() && handle.boot_id != crate::state::boot_id() {
        return false;
    }
    crate::state::start_time(pid).is_some() && crate::state::start_time(pid) == handle.pid_start
}

/// `Some(why)` once the activation of `handle` is no longer running.
fn gone(handle: &Handle, sd: Option<&Systemd>, child: Option<&mut Child>) -> Option<String> {
    if let Some(c) = child {
        return match c.try_wait() {
            Ok(Some(s)) => Some(format!("its wrapper ended with {}", describe(s))),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for its wrapper: {e}")),
        };
    }
    if let Some(unit) = &handle.unit {
        let sd = sd?;
        return match sd.units(std::slice::from_ref(unit)) {
            // The active state decides: a daemon-reload can leave a running transient unit
            // `not-found` (its file gone) while its process runs on.
            Ok(u) => match u.first() {
                None => Some(format!("{unit} is gone")),
                Some(u)
                    if u.job_id == 0
                        && matches!(u.active_state.as_str(), "inactive" | "failed") =>
                {
                    Some(format!("{unit} is {}", u.active_state))
                }
                Some(_) => None,
            },
            // Not knowing is not an end: the next poll asks again.
            Err(_) => None,
        };
    }
    if handle.pid.is_some() {
        return (!same_process(handle)).then(|| "its wrapper process is gone".to_owned());
    }
    Some("it has neither a unit nor a process".into())
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown status".into(),
    }
}

fn spawn(
    runner: &Runner,
    req: &Request<'_>,
    name: &str,
) -> Result<(Handle, Option<Child>), String> {
    std::fs::create_dir_all(req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    let log = req.dir.join(format!("{name}.log"));
    let status = req.dir.join(format!("{name}.status"));
    let _ = std::fs::remove_file(&status);
    let argv: Vec<String> = vec![
        req.wrapper.display().to_string(),
        "internal".into(),
        "activation".into(),
        "--log".into(),
        log.display().to_string(),
        "--status".into(),
        status.display().to_string(),
        "--".into(),
        script_of(req.system).display().to_string(),
        req.action.to_owned(),
    ];
    let mut handle = Handle {
        system: req.system.to_owned(),
        action: req.action.to_owned(),
        unit: None,
        pid: None,
        pid_start: None,
        boot_id: crate::state::boot_id(),
        log,
        status,
        started_unix: crate::state::now_unix(),
    };
    match runner {
        Runner::Systemd(addr) => {
            let unit = format!("labnode-activation-{name}.service");
            let sd = Systemd::connect(addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
            sd.start_transient_service(
                &unit,
                &format!(
                    "labnode: switch-to-configuration {} of {}",
                    req.action,
                    req.system.display()
                ),
                &argv,
                req.env,
                crate::systemd::KillMode::ControlGroup,
            )
            .map_err(|e| e.to_string())?;
            handle.unit = Some(unit);
            Ok((handle, None))
        }
        Runner::Process => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: setsid is async-signal-safe; it makes the wrapper the leader of a
            // session and process group of its own, so a terminal's SIGINT or SIGHUP never
            // reaches it and labnode's death leaves it running.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(|e| format!("{}: {e}", argv[0]))?;
            handle.pid = Some(child.id());
            handle.pid_start = crate::state::start_time(child.id());
            Ok((handle, Some(child)))
        }
    }
}

/// Waits until no other activation runs: the switch-to-configuration lock is free and no
/// nixos-rebuild unit is active. `Err(who)` if that did not happen by `end`.
fn wait_until_free(runner: &Runner, lock: &Path, end: Instant) -> Result<(), String> {
    let mut said = false;
    loop {
        let busy = lock_holder(lock).or_else(|| match runner {
            Runner::Systemd(addr) => nixos_rebuild_running(addr),
            Runner::Process => None,
        });
        let Some(who) = busy else { return Ok(()) };
        if Instant::now() >= end {
            return Err(who);
        }
        if !said {
            tracing::info!("waiting for another activation to end: {who}");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `Some(what)` while another process holds the switch-to-configuration lock.
pub fn lock_holder(lock: &Path) -> Option<String> {
    // Read-only and never created: a missing lock file is a free lock.
    let f = File::open(lock).ok()?;
    if labnode_core::sys::try_lock_exclusive(&f).ok()? {
        // Released at once, before labnode's own activation takes it.
        labnode_core::sys::unlock(&f);
        return None;
    }
    Some(format!("{} is held", lock.display()))
}

/// `Some(unit)` while a unit of nixos-rebuild's activation is active.
fn nixos_rebuild_running(addr: &SystemdAddress) -> Option<String> {
    let sd = Systemd::connect(addr, Duration::from_secs(2)).ok()?;
    let units = sd
        .units_in_state(&["active", "activating", "deactivating", "reloading"])
        .ok()?;
    units
        .into_iter()
        .find(|u| u.name.starts_with(NIXOS_REBUILD_UNIT) && u.name.ends_with(".service"))
        .map(|u| format!("{} is {}", u.name, u.active_state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_held_lock_is_seen_and_a_missing_one_is_free() {
        let d = tempfile::tempdir().expect("tempdir");
        let lock = d.path().join("switch-to-configuration.lock");
        assert_eq!(lock_holder(&lock), None);
        let f = File::create(&lock).expect("create");
        assert_eq!(lock_holder(&lock), None);
        // SAFETY: flock on an open descriptor.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        // flock locks belong to the open file description: a second open conflicts.
        assert!(lock_holder(&lock).is_some());
        drop(f);
        // Other tests of this binary spawn processes meanwhile: a child between fork and
        // exec holds a copy of every descriptor (O_CLOEXEC closes it only at exec), so the
        // lock can outlive `drop` by that long. It must be free once they have exec'd.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while lock_holder(&lock).is_some() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lock_holder(&lock), None);
    }

    #[test]
    fn a_store_path_without_a_script_is_not_a_system() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = tempfile::tempdir().expect("tempdir");
        let req = Request {
            system: t.path(),
            action: "test",
            timeout: Duration::from_secs(1),
            dir: d.path(),
            name: "x".into(),
            switch_lock: &d.path().join("lock"),
            wrapper: Path::new("/nonexistent/labnode"),
            env: &[],
        };
        let e = run(&Runner::Process, &req, |_| {}).expect_err("missing");
        assert!(e.to_string().contains("not a NixOS system closure"), "{e}");
    }
}
