//! The state directory: a lock (so two drills or switches never overlap) and the marker of
//! an unfinished switch, which outlives labnode and a reboot.
//!
//! The lock is `flock(2)` on `STATE_DIR/lock`: the kernel drops it when its holder dies,
//! however it dies, so a stale lock cannot exist. The marker `STATE_DIR/pending.json` is
//! written (atomically, fsynced) before the profile is touched and removed only once the
//! profile is back on a known-good generation; whoever takes the lock and finds a marker
//! finishes the job.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The marker's file name in the state directory. modules/agents.nix conditions the boot
/// unit on it (`ConditionPathExists=STATE_DIR/pending.json`): keep the two in step (a test
/// checks).
pub const MARKER_FILE: &str = "pending.json";

/// Trouble with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Someone else holds the lock.
    #[error("another drill or switch holds {path}: {holder}")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote itself down.
        holder: String,
    },
    /// The marker cannot be read.
    #[error("{path}: not a valid marker: {why}")]
    BadMarker {
        /// The marker.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    labnode_core::sys::io_error_at(path, |path, source| StateError::Io { path, source })
}

/// Seconds since the epoch.
pub use labnode_core::sys::unix_now as now_unix;

/// This boot's id (`/proc/sys/kernel/random/boot_id`), to tell a reboot from a crash.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The held lock; dropped (or the process gone), it is free.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    fn open(dir: &Path) -> Result<(File, PathBuf), StateError> {
        // Durably: a marker written into a directory whose own name a crash loses is lost.
        labnode_core::files::create_dir_durably(dir, 0o700).map_err(io_err(dir))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok((file, path))
    }

    /// Takes the lock now, or says who holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Lock, StateError> {
        let (file, path) = Self::open(dir)?;
        if !try_flock(&file).map_err(io_err(&path))? {
            return Err(StateError::Held {
                holder: holder(&file),
                path,
            });
        }
        let mut lock = Lock { file, path };
        lock.write_holder(what)?;
        Ok(lock)
    }

    /// Waits for the lock until `give_up` returns true (checked every `every`); `None` if
    /// it gave up.
    pub fn wait(
        dir: &Path,
        what: &str,
        every: Duration,
        mut give_up: impl FnMut() -> bool,
    ) -> Result<Option<Lock>, StateError> {
        let (file, path) = Self::open(dir)?;
        loop {
            if try_flock(&file).map_err(io_err(&path))? {
                let mut lock = Lock { file, path };
                lock.write_holder(what)?;
                return Ok(Some(lock));
            }
            if give_up() {
                return Ok(None);
            }
            std::thread::sleep(every);
        }
    }

    fn write_holder(&mut self, what: &str) -> Result<(), StateError> {
        let text = format!(
            "pid {} ({what}) since {}\n",
            std::process::id(),
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        (|| {
            self.file.set_len(0)?;
            self.file.rewind()?;
            self.file.write_all(text.as_bytes())
        })()
        .map_err(io_err(&self.path))
    }
}

use labnode_core::sys::try_lock_exclusive as try_flock;

fn holder(f: &File) -> String {
    let mut s = String::new();
    let mut f = f;
    let _ = f.rewind();
    let _ = f.read_to_string(&mut s);
    match s.trim() {
        "" => "a process that has not said who it is yet".into(),
        t => t.to_owned(),
    }
}

/// What was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// A rollback drill: the profile must end on `from`.
    RollbackDrill,
    /// A safe switch to `to`: unconfirmed, it is rolled back to `from`.
    SafeSwitch,
}

/// A generation as the marker remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Its number, when it has one yet.
    pub generation: Option<u64>,
    /// Its store path.
    pub store_path: PathBuf,
}

/// The marker of an unfinished switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// What runs.
    pub kind: MarkerKind,
    /// A unique id of this run.
    pub id: String,
    /// The labnode process running it.
    pub pid: u32,
    /// The boot it started in.
    pub boot_id: Option<String>,
    /// When it started, seconds since the epoch.
    pub started_unix: f64,
    /// The profile.
    pub profile: PathBuf,
    /// The known-good generation to end on (drill) or go back to (switch).
    pub from: Point,
    /// Where it went.
    pub to: Point,
    /// What it was doing last: `armed`, `rollback`, `rollforward`, `switch`, `boot`, `recover`.
    pub phase: String,
    /// The step within the phase: `flip`, `activate`, `settle`, `gates`, `boot`, `record`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// After this, a guard may stop waiting for the process and take over.
    pub deadline_unix: f64,
    /// The systemd unit guarding it, if any.
    pub guard_unit: Option<String>,
    /// Where results go: the snapshot store and the label.
    pub out: PathBuf,
    /// The snapshot label.
    pub label: String,
    /// The labnode process's start time (`/proc/PID/stat`), so a reused pid is not it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The activation started last: whoever takes over waits for it (or stops it) first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<crate::activation::Handle>,
    /// The store path the boot loader boots, when known: the run's start assumes the known
    /// good one; a `boot` that has not succeeded leaves it unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_default: Option<PathBuf>,
    /// Recovery attempts that did not end healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryState>,
    /// The record as far as the run got, which whoever finishes the run completes: one
    /// record per run, however it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<serde_json::Value>,
}

/// Recovery attempts that failed: the marker stays, and the next attempt waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryState {
    /// Attempts so far.
    pub attempts: u32,
    /// When the first failed, seconds since the epoch.
    pub failing_since_unix: f64,
    /// Why the last one did not end healthy.
    pub last_error: String,
    /// Not before this is the next one tried.
    pub next_unix: f64,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The directory (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn marker_path(&self) -> PathBuf {
        self.dir.join(MARKER_FILE)
    }

    /// The marker, if there is one. Call with the lock held.
    pub fn marker(&self) -> Result<Option<Marker>, StateError> {
        let p = self.marker_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::BadMarker {
                    path: p,
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Writes the marker durably (replacing the previous one atomically).
    pub fn write_marker(&self, m: &Marker) -> Result<(), StateError> {
        labnode_core::files::create_dir_durably(&self.dir, 0o700).map_err(io_err(&self.dir))?;
        let p = self.marker_path();
        let tmp = self.dir.join(format!(".{MARKER_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| StateError::BadMarker {
            path: p.clone(),
            why: e.to_string(),
        })?;
        (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            File::open(&self.dir)?.sync_all()
        })()
        .map_err(io_err(&p))
    }

    /// Updates the marker's phase.
    pub fn set_phase(&self, m: &mut Marker, phase: &str) -> Result<(), StateError> {
        m.phase = phase.to_owned();
        self.write_marker(m)
    }

    /// Removes the marker durably.
    pub fn clear_marker(&self) -> Result<(), StateError> {
        let p = self.marker_path();
        match std::fs::remove_file(&p) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Whether a marker exists, without the lock (for the collector and for plans).
    pub fn has_marker(&self) -> bool {
        self.marker_path().exists()
    }
}

/// A short unique id: time and pid.
pub fn new_id() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", t.as_millis(), std::process::id())
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat` field 22):
/// with the boot id, it tells a process from a later one that reused its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after the
    // last ')' are plain; the start time is the 20th of them.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A process known by a pidfd: signals and waits reach it, or nothing (never a process
/// that reused its pid).
#[derive(Debug)]
pub struct Process {
    fd: std::os::fd::OwnedFd,
}

impl Process {
    /// The process `pid` if it still is the one that started at `start` in this boot.
    pub fn open(pid: u32, start: Option<u64>, boot: Option<&str>) -> Option<Process> {
        if boot.is_some() && boot.map(str::to_owned) != boot_id() {
            return None;
        }
        let raw_pid = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if fd < 0 {
            return None;
        }
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor was just returned by pidfd_open and is owned by no one else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // Checked after opening: from here on the pidfd names this process or none.
        if start.is_some() && start_time(pid) != start {
            return None;
        }
        Some(Process { fd })
    }

    /// Whether it has exited.
    pub fn exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a pidfd polls readable once the process has exited.
        unsafe { libc::poll(&mut p, 1, 0) > 0 }
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// An `Instant` for a wall-clock deadline.
pub fn instant_of(unix: f64) -> Instant {
    let left = unix - now_unix();
    if left > 0.0 {
        Instant::now() + Duration::from_secs_f64(left)
    } else {
        Instant::now()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_boot_unit_is_conditioned_on_this_marker() {
        // The NixOS module is outside the crate: checked where the repository is whole.
        let module = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../../modules/agents.nix");
        let Ok(text) = std::fs::read_to_string(&module) else {
            return;
        };
        let default = format!("or \"{}\"", crate::config::DEFAULT_STATE_DIR);
        let condition = format!("ConditionPathExists = \"${{stateDir}}/{MARKER_FILE}\"");
        assert!(
            text.contains(&default),
            "{}: no {default}",
            module.display()
        );
        assert!(
            text.contains(&condition),
            "{}: no {condition}",
            module.display()
        );
    }

    fn marker() -> Marker {
        test_marker()
    }

    /// A marker of this process, for tests.
    pub(crate) fn test_marker() -> Marker {
        Marker {
            kind: MarkerKind::SafeSwitch,
            id: new_id(),
            pid: std::process::id(),
            boot_id: boot_id(),
            started_unix: now_unix(),
            profile: "/nix/var/nix/profiles/system".into(),
            from: Point {
                generation: Some(4),
                store_path: "/nix/store/a".into(),
            },
            to: Point {
                generation: None,
                store_path: "/nix/store/b".into(),
            },
            phase: "armed".into(),
            deadline_unix: now_unix() + 60.0,
            guard_unit: None,
            out: "/var/lib/labnode/snapshots".into(),
            label: "safe-switch".into(),
            step: Some("gates".into()),
            pid_start: start_time(std::process::id()),
            activation: None,
            boot_default: Some("/nix/store/a".into()),
            recovery: None,
            draft: None,
        }
    }

    #[test]
    fn the_lock_is_exclusive_and_names_its_holder() {
        let t = tempfile::tempdir().expect("tempdir");
        let held = Lock::acquire(t.path(), "drill rollback").expect("free");
        // A second open file description conflicts even within one process.
        let e = Lock::acquire(t.path(), "safe-switch").expect_err("held");
        let s = e.to_string();
        assert!(
            s.contains(&format!("pid {} (drill rollback)", std::process::id())),
            "{s}"
        );
        let mut tries = 0;
        let got = Lock::wait(t.path(), "guard", Duration::from_millis(10), || {
            tries += 1;
            tries > 3
        })
        .expect("wait");
        assert!(got.is_none());
        drop(held);
        Lock::acquire(t.path(), "safe-switch").expect("free again");
    }

    #[test]
    fn the_marker_round_trips_and_goes_away() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = StateDir::new(t.path().join("state"));
        assert_eq!(s.marker().expect("read"), None);
        let mut m = marker();
        s.write_marker(&m).expect("write");
        assert!(s.has_marker());
        s.set_phase(&mut m, "confirm").expect("phase");
        assert_eq!(s.marker().expect("read"), Some(m));
        s.clear_marker().expect("clear");
        assert!(!s.has_marker());
        s.clear_marker().expect("clearing twice is fine");
        std::fs::write(t.path().join("state/pending.json"), "{").expect("write");
        let e = s.marker().expect_err("broken").to_string();
        assert!(e.contains("not a valid marker"), "{e}");
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn a_process_is_known_by_its_start_time() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        let p = Process::open(me, start, boot_id().as_deref()).expect("this process");
        assert!(!p.exited());
        // The same pid with another start time is another process: not opened.
        assert!(Process::open(me, start.map(|s| s + 1), None).is_none());
        assert!(Process::open(me, start, Some("another-boot")).is_none());
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        let p = Process::open(pid, start_time(pid), None).expect("child");
        child.wait().expect("wait");
        assert!(p.exited());
    }

    #[test]
    fn an_old_marker_without_the_new_fields_reads() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = StateDir::new(t.path());
        let mut v = serde_json::to_value(marker()).expect("json");
        for k in [
            "step",
            "pid_start",
            "activation",
            "boot_default",
            "recovery",
            "draft",
        ] {
            v.as_object_mut().expect("object").remove(k);
        }
        std::fs::write(t.path().join(MARKER_FILE), v.to_string()).expect("write");
        let m = s.marker().expect("read").expect("a marker");
        assert_eq!(m.activation, None);
        assert_eq!(m.boot_default, None);
    }
}
