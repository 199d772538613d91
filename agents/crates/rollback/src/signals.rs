//! SIGINT, SIGTERM and SIGHUP during a run that changes the node: noted, never fatal.
//!
//! Dying in the middle of an activation is what strands a node, so a run installs
//! [`Interrupts`] before it changes anything: a signal is only recorded, the step in
//! progress finishes, and the run then rolls back to the known-good generation by itself.
//! SIGKILL cannot be caught; the systemd guard or the boot unit finishes that case.

use std::sync::OnceLock;

use labnode_core::signals::Noted;
pub use labnode_core::signals::name;

static NOTED: OnceLock<Noted> = OnceLock::new();

/// The signals a run defers: an interrupt (Ctrl-C), a stop request, a lost terminal.
pub const DEFERRED: [libc::c_int; 3] = labnode_core::signals::TERMINATION;

/// While installed, SIGINT, SIGTERM and SIGHUP are noted instead of ending the process.
#[derive(Debug)]
pub struct Interrupts(());

impl Interrupts {
    /// Installs the handlers (for the rest of the process: a run is the process's last act).
    /// A second call keeps the first installation.
    pub fn install() -> std::io::Result<Interrupts> {
        if NOTED.get().is_none() {
            let noted = Noted::catch(&DEFERRED)?;
            let _ = NOTED.set(noted);
        }
        Ok(Interrupts(()))
    }
}

/// The first deferred signal received, if any.
pub fn pending() -> Option<libc::c_int> {
    NOTED.get().and_then(Noted::peek)
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
        let _i = Interrupts::install().expect("install");
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
