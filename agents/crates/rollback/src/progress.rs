//! Progress on a terminal; silence in CI logs and pipes: labnode's one display
//! ([`labnode_core::progress`]), re-exported where the rollback's callers have always found it.

pub use labnode_core::progress::Progress;
