//! One module per subcommand: parse its arguments' meaning, call the crate that does the
//! work, print the result.

pub mod collect;
pub mod config;
pub mod drill_zfs;
pub mod generate;
pub mod net;
pub mod report;
pub mod rollback;
pub mod serve;
