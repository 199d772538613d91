//! labnode's core: what every collector and the binary share.
//!
//! - [`Collector`] is what a collector implements: one run returns [`Metrics`] (families
//!   with their kind and unit, validated: names, `_total` on counters, no NaN, no duplicate
//!   series) or a [`CollectError`].
//! - [`Hub`] polls each collector in the background on its own interval with a deadline;
//!   a run that overruns is never doubled, a failed one is reported down with its reason,
//!   and `/metrics` ([`http`]) serves the last good results without waiting on anyone.
//! - [`config`] reads YAML with errors located at file, line, column and key; its
//!   [`config::Schedule`] trait holds each collector section's `enabled`, `interval` and
//!   `deadline`, their defaults and the section's own checks.
//! - [`progress`] is the one progress display (a terminal, never a CI log);
//!   [`signals`] notes termination signals instead of dying of them.
//! - [`snapshot`] writes and reads snapshots (samples and records) crash-safely, with
//!   [`files`] (a new file whole, a new directory durably);
//!   [`host`] the host facts a snapshot carries.
//!
//! Used by every collector crate, the report (snapshots) and the `labnode` binary.

pub mod collector;
pub mod config;
pub mod files;
pub mod host;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod process;
pub mod progress;
pub mod signals;
pub mod snapshot;
pub mod sys;

pub use collector::{CollectError, Collector, Polled, Timing};
pub use hub::Hub;
pub use metrics::{Kind, Metrics, Unit};
