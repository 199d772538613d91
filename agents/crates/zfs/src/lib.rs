//! labnode's ZFS collector and drill.
#[cfg(feature = "libzfs")]
pub mod libzfs;
