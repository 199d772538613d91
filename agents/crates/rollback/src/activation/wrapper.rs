//! The wrapper that runs switch-to-configuration (`labnode internal activation`), and the
//! files it leaves for whoever waits: the log (its tail, followed as it grows) and the
//! exit status.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Status;

/// How many lines of the log an error shows.
const TAIL_LINES: usize = 30;

/// The status the wrapper wrote, once it has.
pub fn read_status(path: &Path) -> Option<Status> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The last lines of a log.
pub fn tail(log: &Path) -> Vec<String> {
    let Ok(f) = File::open(log) else {
        return Vec::new();
    };
    let mut t = VecDeque::new();
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
    t.into_iter().collect()
}

/// Follows a growing log into this process's own log.
pub(super) struct Follow {
    path: PathBuf,
    at: u64,
    partial: String,
}

impl Follow {
    pub(super) fn new(path: &Path) -> Self {
        Follow {
            path: path.to_owned(),
            at: 0,
            partial: String::new(),
        }
    }

    pub(super) fn poll(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.at)).is_err() {
            return;
        }
        let mut buf = String::new();
        if let Ok(n) = f.read_to_string(&mut buf) {
            self.at += n as u64;
            self.partial.push_str(&buf);
            while let Some(i) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=i).collect();
                tracing::debug!("activation: {}", line.trim_end());
            }
        }
    }
}

/// The wrapper (`labnode internal activation --log LOG --status STATUS -- PROGRAM ARGS...`):
/// runs the program with its output going to LOG and to this process's stdout, writes its
/// exit status to STATUS (atomically) and exits with it. It ignores SIGINT and SIGHUP, and
/// a stdout that fails (a restarted journal) only loses the copy, never the script.
pub fn wrapper_main(log: &Path, status: &Path, argv: &[String]) -> i32 {
    // Raw signal(2), not signal-hook: an ignored disposition is what the activation script
    // inherits through exec, which no handler can give it.
    // SAFETY: ignoring signals has no preconditions; SIGPIPE is ignored so a lost stdout
    // is an error on write, not a death.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let Some((program, args)) = argv.split_first() else {
        eprintln!("labnode internal activation: no program");
        return 2;
    };
    let mut out = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(log)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("labnode internal activation: {}: {e}", log.display());
            return 2;
        }
    };
    let (reader, writer) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("labnode internal activation: pipe: {e}");
            return 2;
        }
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("labnode internal activation: pipe: {e}");
            return 2;
        }
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "labnode: cannot run {program}: {e}");
            write_status(status, Some(127), None);
            return 127;
        }
    };
    // The Command keeps no copy of the write ends: the reader sees EOF once the script
    // and whatever it started have closed them. A daemon the script started may keep them
    // open: once the script itself has exited, reading stops when nothing more is there.
    let mut stdout = io::stdout();
    let mut reader = reader;
    let mut buf = [0u8; 8192];
    let mut exited = false;
    loop {
        if !readable(&reader, if exited { 0 } else { 100 }) {
            if exited {
                break;
            }
            exited = matches!(child.try_wait(), Ok(Some(_)));
            continue;
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                let _ = stdout.write_all(&buf[..n]);
                let _ = stdout.flush();
            }
        }
    }
    let _ = out.sync_all();
    match child.wait() {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            write_status(status, s.code(), s.signal());
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(e) => {
            let _ = writeln!(out, "labnode: cannot wait for {program}: {e}");
            write_status(status, None, None);
            1
        }
    }
}

/// Whether `f` has data (or EOF) within `ms` milliseconds.
fn readable(f: &File, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn write_status(path: &Path, code: Option<i32>, signal: Option<i32>) {
    let s = Status {
        code,
        signal,
        finished_unix: crate::state::now_unix(),
    };
    let Ok(bytes) = serde_json::to_vec(&s) else {
        return;
    };
    let tmp = path.with_extension("status.tmp");
    let ok = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = path.parent() {
            File::open(d)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = ok {
        eprintln!("labnode internal activation: {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::super::script_of;
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
    fn the_wrapper_writes_output_and_status() {
        let t = system("echo activating \"$1\"; echo warning >&2; exit 3");
        let d = tempfile::tempdir().expect("tempdir");
        let (log, status) = (d.path().join("a.log"), d.path().join("a.status"));
        let code = wrapper_main(
            &log,
            &status,
            &[script_of(t.path()).display().to_string(), "test".into()],
        );
        assert_eq!(code, 3);
        let lines = tail(&log);
        assert!(lines.contains(&"activating test".to_owned()), "{lines:?}");
        assert!(lines.contains(&"warning".to_owned()), "{lines:?}");
        assert_eq!(read_status(&status).and_then(|s| s.code), Some(3));
    }

    #[test]
    fn a_missing_program_is_status_127() {
        let d = tempfile::tempdir().expect("tempdir");
        let (log, status) = (d.path().join("a.log"), d.path().join("a.status"));
        assert_eq!(
            wrapper_main(&log, &status, &["/nonexistent/program".into()]),
            127
        );
        assert!(tail(&log)[0].contains("cannot run /nonexistent/program"));
    }
}
