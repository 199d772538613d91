//! The report under its first paths (`labnode_report::report::Report`): its data
//! ([`crate::model`]), its builder ([`crate::build()`]) and its schema ([`crate::schema`]).

pub use crate::build::{Options, build};
pub use crate::describe::describe_sel;
pub use crate::model::*;
pub use crate::rows::quantile;
pub use crate::schema::REPORT_SCHEMA;
