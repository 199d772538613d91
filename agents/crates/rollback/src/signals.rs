//! SIGINT, SIGTERM and SIGHUP during a run that changes the node: noted, never fatal.
//!
//! Dying in the middle of an activation is what strands a node, so a run installs
//! [`Interrupts`] before it changes anything: a signal is only recorded, the step in
//! progress finishes, and the run then rolls back to the known-good generation by itself.
//! SIGKILL cannot be caught; the systemd guard or the boot unit finishes that case.

use std::sync::atomic::{AtomicI32, Ordering};

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe. The first signal is the one reported.
    let _ = PENDING.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// The signals a run defers: an interrupt (Ctrl-C), a stop request, a lost terminal.
pub const DEFERRED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// While installed, SIGINT, SIGTERM and SIGHUP are noted instead of ending the process.
#[derive(Debug)]
pub struct Interrupts(());

impl Interrupts {
    /// Installs the handlers (for the rest of the process: a run is the process's last act).
    pub fn install() -> Interrupts {
        for sig in DEFERRED {
            // SAFETY: a zeroed sigaction with a handler that only stores an atomic is valid;
            // SA_RESTART keeps blocking calls of other threads from failing with EINTR.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = note as *const () as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        Interrupts(())
    }
}

/// The first deferred signal received, if any.
pub fn pending() -> Option<libc::c_int> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
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

/// The reason a run gives when a signal made it roll back.
pub fn reason(signal: libc::c_int) -> String {
    format!(
        "interrupted by {} (the step in progress was finished first)",
        name(signal)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_signal_is_noted_not_fatal() {
        let _i = Interrupts::install();
        assert_eq!(pending(), None);
        // SAFETY: raising a signal whose handler only stores an atomic.
        unsafe {
            libc::raise(libc::SIGHUP);
            libc::raise(libc::SIGINT);
        }
        // Still running; the first one is kept.
        assert_eq!(pending(), Some(libc::SIGHUP));
        assert_eq!(name(libc::SIGHUP), "SIGHUP");
    }
}
