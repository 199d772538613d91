//! labnode's before/after report: a catalog of rows (the original claims table, measured), read from
//! snapshots or from Prometheus, summarised per side (median, p95, n), compared, gated on
//! regressions, and written as Markdown, self-contained HTML with inline SVG, and JSON.

pub mod catalog;
pub mod eval;
pub mod format;
pub mod html;
pub mod input;
pub mod markdown;
pub mod operator;
pub mod output;
pub mod prometheus;
pub mod report;

pub use report::{Options, Report, build};
