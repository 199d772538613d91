//! Running a generation's `bin/switch-to-configuration`, bounded in time, keeping the end
//! of its output for the record.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use labnode_core::hub::fmt_duration;

/// Lines of output kept for the record.
const TAIL_LINES: usize = 30;

/// How an activation ended.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The generation has no activation script.
    #[error("{0} does not exist or is not executable: not a NixOS system closure")]
    Missing(PathBuf),
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The script.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It exited non-zero or was killed by a signal.
    #[error("{program} {action} exited with {status} after {took}{tail}", took = fmt_duration(*.took), tail = fmt_tail(.output))]
    Failed {
        /// The script.
        program: PathBuf,
        /// The action.
        action: String,
        /// Its exit status.
        status: ExitStatus,
        /// How long it ran.
        took: Duration,
        /// The end of its output.
        output: Vec<String>,
    },
    /// It ran past its bound and was killed.
    #[error("{program} {action} still ran after {took} and was killed{tail}", took = fmt_duration(*.took), tail = fmt_tail(.output))]
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
    /// How long the script ran.
    pub took: Duration,
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

/// Runs `SYSTEM/bin/switch-to-configuration ACTION`, killing it (and its process group)
/// after `timeout`. Returns once the script exits, even if a daemon it started keeps its
/// output open.
pub fn run(system: &Path, action: &str, timeout: Duration) -> Result<Activated, ActivationError> {
    let program = script_of(system);
    if !has_script(system) {
        return Err(ActivationError::Missing(program));
    }
    let start = Instant::now();
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ActivationError::Spawn {
            program: program.clone(),
            source,
        })?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (eof_tx, eof_rx) = mpsc::channel();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        keep_tail(out, &tail, eof_tx.clone());
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        keep_tail(err, &tail, eof_tx);
        readers += 1;
    }
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(timeout);
    let took = start.elapsed();
    let output = |tail: &Arc<Mutex<VecDeque<String>>>, wait: Duration| {
        // The readers take in the last lines written before the exit: until both pipes
        // end, or for at most `wait` when a daemon the script started keeps them open.
        let end = Instant::now() + wait;
        for _ in 0..readers {
            if eof_rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .is_err()
            {
                break;
            }
        }
        tail.lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    };
    match status {
        // A success goes on to the gates soon: its output is for the debug log only.
        Ok(Ok(s)) if s.success() => Ok(Activated {
            took,
            output: output(&tail, Duration::from_millis(50)),
        }),
        Ok(Ok(status)) => Err(ActivationError::Failed {
            program,
            action: action.to_owned(),
            status,
            took,
            output: output(&tail, Duration::from_millis(200)),
        }),
        Ok(Err(source)) => Err(ActivationError::Spawn { program, source }),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; -pid is the script's group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(ActivationError::Timeout {
                program,
                action: action.to_owned(),
                took,
                output: output(&tail, Duration::from_millis(200)),
            })
        }
    }
}

fn keep_tail<R: Read + Send + 'static>(
    r: R,
    tail: &Arc<Mutex<VecDeque<String>>>,
    eof: mpsc::Sender<()>,
) {
    let tail = Arc::clone(tail);
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            tracing::debug!("activation: {line}");
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
        let _ = eof.send(());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    fn system(script: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("bin")).expect("mkdir");
        let p = t.path().join("bin/switch-to-configuration");
        // Written by another process: a file this test process had open for writing could
        // be inherited by a fork of a parallel test and make exec fail with ETXTBSY.
        let ok = Command::new("sh")
            .args([
                "-c",
                "printf '#!/bin/sh\\n%s\\n' \"$1\" > \"$2\" && chmod 755 \"$2\"",
                "sh",
                script,
            ])
            .arg(&p)
            .status()
            .expect("sh");
        assert!(ok.success());
        t
    }

    #[test]
    fn success_keeps_the_output() {
        let t = system("echo activating \"$1\"; echo warning >&2");
        let a = run(t.path(), "switch", Duration::from_secs(5)).expect("runs");
        assert!(
            a.output.contains(&"activating switch".to_owned()),
            "{:?}",
            a.output
        );
        assert!(a.output.contains(&"warning".to_owned()), "{:?}", a.output);
    }

    #[test]
    fn failure_names_the_status_and_the_output() {
        let t = system("echo 'unit foo.service failed'; exit 4");
        let e = run(t.path(), "switch", Duration::from_secs(5)).expect_err("fails");
        let s = e.to_string();
        assert!(s.contains("exit status: 4"), "{s}");
        assert!(s.contains("unit foo.service failed"), "{s}");
    }

    #[test]
    fn a_hung_script_is_killed_at_the_bound() {
        let t = system("sleep 30");
        let start = Instant::now();
        let e = run(t.path(), "switch", Duration::from_millis(300)).expect_err("times out");
        assert!(matches!(e, ActivationError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_daemon_holding_the_output_open_does_not_hold_the_activation() {
        let t = system("sleep 30 & echo started");
        let start = Instant::now();
        run(t.path(), "switch", Duration::from_secs(10)).expect("runs");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_store_path_without_a_script_is_not_a_system() {
        let t = tempfile::tempdir().expect("tempdir");
        let e = run(t.path(), "switch", Duration::from_secs(1)).expect_err("missing");
        assert!(e.to_string().contains("not a NixOS system closure"), "{e}");
    }
}
