//! Failed token proofs, per address: after [`FREE_FAILURES`] failures in a row, an address
//! waits before its next test request is even challenged, twice as long after each further
//! failure (at most [`MAX_WAIT`]). A proof that succeeds forgets the address. An
//! allowlisted peer without the token so cannot keep the server busy with challenges.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Server;

/// Failures in a row an address may have without waiting.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Addresses remembered at most; the oldest entries go first.
const REMEMBERED: usize = 4096;

/// Failures in a row and when the last one was, per address.
#[derive(Debug, Default)]
pub(super) struct Failures(Mutex<HashMap<IpAddr, (u32, Instant)>>);

/// How long an address with `n` failures in a row waits after its last one.
fn wait_after(n: u32) -> Duration {
    if n < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doubled = 1u64.checked_shl(n - FREE_FAILURES).unwrap_or(u64::MAX);
    Duration::from_secs(doubled).min(MAX_WAIT)
}

impl Server {
    /// Why `ip` may not try the token now, if it may not.
    pub(super) fn throttled(&self, ip: IpAddr) -> Option<String> {
        let m = self.failures.0.lock().unwrap_or_else(|p| p.into_inner());
        let (n, last) = *m.get(&ip)?;
        let left = wait_after(n).saturating_sub(last.elapsed());
        (!left.is_zero()).then(|| {
            format!(
                "{n} failed token attempts from {ip}; try again in {:.0} s",
                left.as_secs_f64().ceil()
            )
        })
    }

    /// Notes a failed proof from `ip`.
    pub(super) fn failed(&self, ip: IpAddr) {
        let mut m = self.failures.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= REMEMBERED && !m.contains_key(&ip) {
            // Forget whoever has not failed for longest.
            if let Some(oldest) = m.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                m.remove(&oldest);
            }
        }
        let e = m.entry(ip).or_insert((0, Instant::now()));
        e.0 = e.0.saturating_add(1);
        e.1 = Instant::now();
    }

    /// Forgets `ip`'s failures: it proved the token.
    pub(super) fn proven(&self, ip: IpAddr) {
        let mut m = self.failures.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        assert_eq!(wait_after(0), Duration::ZERO);
        assert_eq!(wait_after(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(wait_after(FREE_FAILURES), Duration::from_secs(1));
        assert_eq!(wait_after(FREE_FAILURES + 2), Duration::from_secs(4));
        assert_eq!(wait_after(FREE_FAILURES + 40), MAX_WAIT);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }
}
