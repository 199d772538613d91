//! labnode's core: the collector trait, the background scheduler ("hub"), the Prometheus
//! exposition over HTTP, YAML configuration with located errors, host facts and
//! crash-safe snapshots.

pub mod collector;
pub mod config;
pub mod host;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod process;
pub mod snapshot;

pub use collector::{CollectError, Collector};
pub use hub::Hub;
pub use metrics::{Kind, Metrics, Unit};
