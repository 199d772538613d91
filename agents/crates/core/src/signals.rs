//! Termination signals noted instead of fatal, for runs that must finish what they started.
//!
//! [`Noted::catch`] registers, through signal-hook, a handler that only records the first
//! signal in an atomic (async-signal-safe); the holder polls it between steps. A handler,
//! not a blocked mask: a mask is inherited by every thread and, through `exec`, by every
//! child, which could then no longer be stopped; a caught signal is reset to its default
//! action in a child at `exec`. signal-hook installs with `SA_RESTART`, so blocking calls
//! of other threads do not fail with `EINTR`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// SIGINT, SIGTERM and SIGHUP: an interrupt (Ctrl-C), a stop request, a lost terminal.
pub const TERMINATION: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The first of the caught signals that arrived and was not yet taken.
#[derive(Debug, Clone)]
pub struct Noted {
    first: Arc<AtomicI32>,
}

impl Noted {
    /// Catches `signals` from now on, for the whole process, also where they were ignored.
    pub fn catch(signals: &[libc::c_int]) -> io::Result<Noted> {
        let first = Arc::new(AtomicI32::new(0));
        for &sig in signals {
            let slot = Arc::clone(&first);
            // SAFETY: the action is one atomic compare-exchange, which is async-signal-safe
            // (no allocation, no lock). A later signal leaves the first in place.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    let _ = slot.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                })?;
            }
        }
        Ok(Noted { first })
    }

    /// The signal noted, if any, left in place.
    pub fn peek(&self) -> Option<libc::c_int> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Takes the signal noted, if any: the next call sees none until another arrives.
    pub fn take(&self) -> Option<libc::c_int> {
        match self.first.swap(0, Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

/// A signal's name, e.g. `SIGINT`.
pub fn name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGKILL => "SIGKILL".into(),
        s => format!("signal {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    #[test]
    fn the_first_signal_is_noted_not_fatal_and_children_start_clean() {
        let n = Noted::catch(&[libc::SIGUSR1, libc::SIGUSR2]).expect("catch");
        assert_eq!(n.peek(), None);
        // SAFETY: raising signals this process catches.
        unsafe {
            libc::raise(libc::SIGUSR2);
            libc::raise(libc::SIGUSR1);
        }
        assert_eq!(n.peek(), Some(libc::SIGUSR2), "the first is kept");
        assert_eq!(n.take(), Some(libc::SIGUSR2));
        assert_eq!(n.take(), None);
        // A child gets the default action back: SIGUSR1 ends it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGUSR1), "{status:?}");
        assert_eq!(name(libc::SIGHUP), "SIGHUP");
    }
}
