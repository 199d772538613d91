//! Progress on a terminal; silence in CI logs and pipes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Where progress goes: stderr, only when it is a terminal and `CI` is not `true`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    tty: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::detect()
    }
}

impl Progress {
    /// Progress when stderr is a terminal and `CI` is not set to `true`.
    pub fn detect() -> Self {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        Progress {
            tty: !ci && std::io::stderr().is_terminal(),
        }
    }

    /// No progress at all.
    pub fn quiet() -> Self {
        Progress { tty: false }
    }

    /// A finished step, on its own line.
    pub fn step(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[K==> {msg}\n");
        }
    }

    /// A line that the next update replaces.
    pub fn live(&self, msg: &str) {
        if self.tty {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[K    {msg}");
            let _ = e.flush();
        }
    }

    /// Whether it shows anything.
    pub fn shown(&self) -> bool {
        self.tty
    }
}

/// Seconds with millisecond precision, for messages.
pub fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Seconds since `t`.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
