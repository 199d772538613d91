//! The collector trait every labnode collector implements.

use std::time::Duration;

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
