//! Termination signals as events, so a lab is torn down however its holder is asked to stop.
//!
//! [`Signals::block`] blocks SIGINT, SIGTERM and SIGHUP in the calling thread before any
//! other thread starts (threads inherit the mask), so they stay pending instead of killing
//! the process; the holder then waits for one ([`Signals::wait`]) or polls between steps
//! ([`Signals::pending`]) and drops its [`crate::Lab`], which removes everything.

/// The blocked set.
#[derive(Clone, Copy)]
pub struct Signals {
    set: libc::sigset_t,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals(SIGINT, SIGTERM, SIGHUP)")
    }
}

impl Signals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts later).
    pub fn block() -> std::io::Result<Self> {
        // SAFETY: sigset operations on a local, initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&raw mut set, s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(Signals { set })
        }
    }

    /// Waits for one of the signals and returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: set is a valid signal set; sig receives the number.
        unsafe { libc::sigwait(&raw const self.set, &raw mut sig) };
        sig
    }

    /// Takes a pending signal, if one arrived, without waiting.
    pub fn pending(&self) -> Option<i32> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: set and zero are valid; a null siginfo is allowed.
        let s = unsafe {
            libc::sigtimedwait(&raw const self.set, std::ptr::null_mut(), &raw const zero)
        };
        (s > 0).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sent_to_this_thread_is_seen_not_fatal() {
        // Run in a thread of its own so the mask does not leak into other tests.
        std::thread::spawn(|| {
            let s = Signals::block().expect("block");
            assert_eq!(s.pending(), None);
            // SAFETY: signalling the calling thread with a blocked signal.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
            assert_eq!(s.pending(), Some(libc::SIGHUP));
            assert_eq!(s.pending(), None);
        })
        .join()
        .expect("thread");
    }
}
