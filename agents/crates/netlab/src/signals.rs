//! Termination signals as events, so a lab is torn down however its holder is asked to stop.
//!
//! [`Signals::catch`] installs (through `labnode_core::signals`) a handler for SIGINT, SIGTERM
//! and SIGHUP that only notes the signal, so it no longer kills the process; the holder then waits for one
//! ([`Signals::wait`]) or polls between steps ([`Signals::pending`]) and drops its
//! [`crate::Lab`], which removes everything. A handler, not a blocked signal mask: a mask is
//! inherited by every thread and, through `exec`, by every child process, which could then
//! no longer be stopped with SIGTERM; a caught signal is reset to its default action in a
//! child at `exec`.

use std::time::Duration;

use labnode_core::signals::{Noted, TERMINATION};

/// The caught set: SIGINT, SIGTERM and SIGHUP.
#[derive(Debug, Clone)]
pub struct Signals {
    noted: Noted,
}

impl Signals {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on, for the whole process (also where
    /// they were ignored: a holder must always be able to clean up).
    pub fn catch() -> std::io::Result<Self> {
        Ok(Signals {
            noted: Noted::catch(&TERMINATION)?,
        })
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
        self.noted.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_noted_not_fatal_and_taken_once() {
        let s = Signals::catch().expect("catch");
        assert_eq!(s.pending(), None);
        // SAFETY: signalling this process with a caught signal.
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        assert_eq!(s.wait(), libc::SIGHUP);
        assert_eq!(s.pending(), None);
    }
}
