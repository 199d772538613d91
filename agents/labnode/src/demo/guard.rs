//! What the demo makes and must take away again, and how it waits without missing a
//! signal: its child processes (each in its own process group, killed with it), the service
//! the scratch generations start, and its temporary directory.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use labnode_core::progress::Progress;
use labnode_netlab::Signals;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// SIGINT, SIGTERM or SIGHUP arrived.
    #[error("interrupted by {}", signal_name(*.0))]
    Interrupted(i32),
    /// This machine lacks what the demo needs; nothing was measured (exit 2).
    #[error("{0}")]
    CannotRun(String),
    /// A step failed while running (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// The name of a termination signal.
pub fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Signals and progress: what every step needs.
pub struct Ctl {
    signals: Signals,
    /// Progress lines (terminal only).
    pub progress: Progress,
}

impl Ctl {
    /// Catches the termination signals (call before anything is made) and detects whether
    /// progress is shown.
    pub fn new() -> Result<Ctl, DemoError> {
        let signals = Signals::catch()
            .map_err(|e| DemoError::Failed(format!("cannot catch SIGINT, SIGTERM, SIGHUP: {e}")))?;
        Ok(Ctl {
            signals,
            progress: Progress::detect(),
        })
    }

    /// `Err(Interrupted)` when a termination signal is pending.
    pub fn check(&self) -> Result<(), DemoError> {
        match self.signals.pending() {
            Some(s) => Err(DemoError::Interrupted(s)),
            None => Ok(()),
        }
    }

    /// Sleeps `d`, in short slices, returning early on a signal.
    pub fn sleep(&self, d: Duration) -> Result<(), DemoError> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// A child process in its own process group (so a terminal's Ctrl-C reaches labnode, which
/// stops it in order), killed if labnode dies (`PR_SET_PDEATHSIG`), and stopped with its
/// whole group when dropped.
pub struct Proc {
    child: Child,
    what: String,
    stderr: PathBuf,
    done: bool,
}

impl Proc {
    /// Starts `cmd`: stdin from /dev/null, stderr into the file `stderr`.
    pub fn spawn(mut cmd: Command, what: &str, stderr: &Path) -> Result<Proc, DemoError> {
        let err = std::fs::File::create(stderr)
            .map_err(|e| DemoError::Failed(format!("{}: {e}", stderr.display())))?;
        cmd.stdin(Stdio::null()).stderr(err).process_group(0);
        // SAFETY: prctl is async-signal-safe and touches nothing but the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| DemoError::Failed(format!("cannot start {what}: {e}")))?;
        Ok(Proc {
            child,
            what: what.to_owned(),
            stderr: stderr.to_owned(),
            done: false,
        })
    }

    /// The child's standard output, when it was piped.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        !self.done && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until it exits (at most `limit`), calling `tick` every 250 ms; a signal or the
    /// limit stops it.
    pub fn wait(
        &mut self,
        ctl: &Ctl,
        limit: Duration,
        mut tick: impl FnMut(Duration),
    ) -> Result<ExitStatus, DemoError> {
        let start = Instant::now();
        let mut last_tick = start;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| DemoError::Failed(format!("waiting for {}: {e}", self.what)))?
            {
                self.done = true;
                return Ok(status);
            }
            ctl.check()?;
            if start.elapsed() > limit {
                self.stop();
                return Err(DemoError::Failed(format!(
                    "{} still ran after {} s and was stopped{}",
                    self.what,
                    limit.as_secs(),
                    self.stderr_tail()
                )));
            }
            if last_tick.elapsed() >= Duration::from_millis(250) {
                last_tick = Instant::now();
                tick(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its standard error, as `: ...` (empty when it wrote none).
    pub fn stderr_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(4)
            .collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
    }

    /// SIGTERM to its process group, SIGKILL after 3 s (and to whatever of the group is
    /// left), reaped.
    pub fn stop(&mut self) {
        if self.done {
            return;
        }
        let pgid = i32::try_from(self.child.id()).unwrap_or(0);
        signal_group(pgid, libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_group(pgid, libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `sig` to process group `pgid`; whether it had a process.
fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill with a negative pid signals that process group; no memory involved.
    pgid > 1 && unsafe { libc::kill(-pgid, sig) } == 0
}

/// Whether process `pid` runs (exists and is not a zombie waiting for its parent).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // After "pid (comm) ": the state letter; comm may hold spaces and parentheses.
        s.rfind(')')
            .and_then(|i| s[i + 1..].trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Stops process group `pgid`, led by the process `pgid`: SIGTERM, then SIGKILL to what is
/// left if the leader still runs after 3 s. Whether the group had any process.
pub fn stop_group(pgid: i32) -> bool {
    if !signal_group(pgid, libc::SIGTERM) {
        return false;
    }
    let start = Instant::now();
    while running(pgid) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_group(pgid, libc::SIGKILL);
    true
}

/// The service the scratch generations start: each activation writes the process group
/// of the service it started to `pid_file`; dropping this stops whichever runs.
pub struct Service {
    /// Where the running service's process group is written.
    pub pid_file: PathBuf,
}

impl Service {
    /// Stops the running service, if there is one; whether there was.
    pub fn stop(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.pid_file) else {
            return false;
        };
        let _ = std::fs::remove_file(&self.pid_file);
        text.trim().parse::<i32>().is_ok_and(stop_group)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private temporary directory, removed with everything in it when dropped.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Makes `$TMPDIR/labnode-demo-<pid>` (mode 0700).
    pub fn new() -> Result<TempDir, DemoError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("labnode-demo-{}", std::process::id()));
        // A directory of a dead demo with the same pid is ours to reuse.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| DemoError::Failed(format!("{}: {e}", path.display())))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("labnode: cannot remove {}: {e}", self.path.display());
        }
    }
}
