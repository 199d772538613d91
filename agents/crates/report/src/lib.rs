//! labnode's before/after report.
//!
//! A catalog of rows ([`catalog::CATALOG`], the original claims table, measured) is read
//! from snapshots or from Prometheus ([`input`], [`prometheus`]), evaluated per snapshot
//! ([`eval`]), summarised per side (median, p95, n), compared and gated on regressions
//! ([`mod@build`] makes the [`Report`] of [`model`] from [`Options`], a row at a time in
//! [`rows`], its words in [`describe`]), and written as Markdown ([`markdown`]),
//! self-contained HTML with inline SVG ([`html`]) and JSON ([`output`], [`schema`]
//! `labnode-report/3`). [`operator`] reads values an operator enters by hand for the
//! "before" side; [`mod@format`] words values and changes.
//!
//! Used by `labnode report` and `labnode demo`. The golden tests
//! (`tests/golden.rs`) pin every output format; the catalog test checks every series a
//! row reads against the metric contract, `docs/metrics.md`.

pub mod build;
pub mod catalog;
pub mod describe;
pub mod eval;
pub mod explain;
pub mod format;
pub mod html;
pub mod input;
pub mod judge;
pub mod markdown;
pub mod model;
pub mod operator;
pub mod output;
pub mod prometheus;
pub mod report;
pub mod rows;
pub mod schema;
pub mod stats;

pub use build::{Options, build};
pub use model::Report;
