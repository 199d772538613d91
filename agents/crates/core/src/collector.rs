//! The collector trait every labnode collector implements, and [`Polled`], the short way
//! to implement it from a name and a [`Timing`].

use std::time::Duration;

use crate::config::Schedule;
use crate::metrics::Metrics;

/// The error type a collector returns: any error, with its context in the message.
pub type CollectError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A source of metrics, polled in the background on its own interval.
///
/// `collect` runs on a blocking thread; it may take time, block on I/O or fail. A run that
/// errors, panics, overruns `deadline` or returns invalid metrics marks the collector down
/// and drops its series; the other collectors and `/metrics` are not affected.
pub trait Collector: Send + Sync + 'static {
    /// Short name, `[a-z0-9_]+`, used as the `collector` label and in `--collector NAME`.
    fn name(&self) -> &str;
    /// How often to collect.
    fn interval(&self) -> Duration;
    /// How long one collection may take before it counts as failed.
    fn deadline(&self) -> Duration;
    /// Reads the source once.
    fn collect(&self) -> Result<Metrics, CollectError>;
}

/// How often a collector runs and how long one run may take, as its section sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often to collect.
    pub interval: Duration,
    /// How long one collection may take before it counts as failed.
    pub deadline: Duration,
}

impl Timing {
    /// The interval and deadline in force for `section` (its defaults where none is given).
    pub fn of<S: Schedule>(section: &S) -> Self {
        Timing {
            interval: section.interval(),
            deadline: section.deadline(),
        }
    }
}

/// A collector with a fixed name and a [`Timing`]: implementing this implements
/// [`Collector`], so each collector writes only its name and its run.
pub trait Polled: Send + Sync + 'static {
    /// The collector's name (see [`Collector::name`]).
    const NAME: &'static str;
    /// Its interval and deadline.
    fn timing(&self) -> Timing;
    /// Reads the source once (see [`Collector::collect`]).
    fn poll(&self) -> Result<Metrics, CollectError>;
}

impl<T: Polled> Collector for T {
    fn name(&self) -> &str {
        T::NAME
    }
    fn interval(&self) -> Duration {
        self.timing().interval
    }
    fn deadline(&self) -> Duration {
        self.timing().deadline
    }
    fn collect(&self) -> Result<Metrics, CollectError> {
        self.poll()
    }
}
