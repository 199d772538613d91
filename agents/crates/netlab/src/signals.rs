//! Termination signals as events, so a lab is torn down however its holder is asked to stop.
//!
//! [`Signals::catch`] installs a handler for SIGINT, SIGTERM and SIGHUP that only notes the
//! signal, so it no longer kills the process; the holder then waits for one
//! ([`Signals::wait`]) or polls between steps ([`Signals::pending`]) and drops its
//! [`crate::Lab`], which removes everything. A handler, not a blocked signal mask: a mask is
//! inherited by every thread and, through `exec`, by every child process, which could then
//! no longer be stopped with SIGTERM; a caught signal is reset to its default action in a
//! child at `exec`.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The first signal noted and not yet taken (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: libc::c_int) {
    // Async-signal-safe: one atomic operation. A second signal before the first is taken
    // leaves the first.
    let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// The caught set: SIGINT, SIGTERM and SIGHUP.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    _caught: (),
}

impl Signals {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on, for the whole process (also where
    /// they were ignored: a holder must always be able to clean up). Interrupted system
    /// calls are restarted (`SA_RESTART`).
    pub fn catch() -> std::io::Result<Self> {
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&raw mut sa.sa_mask);
                if libc::sigaction(s, &raw const sa, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(Signals { _caught: () })
    }

    /// Waits for one of the signals and returns its number.
    pub fn wait(&self) -> i32 {
        loop {
            if let Some(s) = self.pending() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes the signal that arrived, if one did, without waiting.
    pub fn pending(&self) -> Option<i32> {
        match PENDING.swap(0, Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_signal_is_noted_not_fatal_and_children_start_clean() {
        let s = Signals::catch().expect("catch");
        assert_eq!(s.pending(), None);
        // SAFETY: signalling this process with a caught signal.
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        assert_eq!(s.wait(), libc::SIGHUP);
        assert_eq!(s.pending(), None);
        // A child gets the default action back: SIGTERM ends it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}
