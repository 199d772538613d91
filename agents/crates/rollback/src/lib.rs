//! labnode's rollback drills and safe switches: every path that changes the node.
//!
//! A NixOS host keeps its systems as generations of the profile
//! `/nix/var/nix/profiles/system`. A *drill* ([`drill()`]) rolls back one generation as
//! `nixos-rebuild switch --rollback` does and forward again, timing each phase until every
//! health gate is green. A *safe switch* ([`safe_switch()`]) activates a new system behind
//! the same gates and rolls back by itself when they fail, when activation fails, or when
//! a signal interrupts it. [`recover()`] finishes a run that did not: the systemd guard
//! runs it when labnode dies, the boot unit after a reboot.
//!
//! The crate's parts: [`engine`] (the phases, the recovery, the invariant that ends a run),
//! [`activation`] (switch-to-configuration in a unit or session of its own, never a child
//! that dies with labnode), [`state`] (the lock and the marker that outlives labnode and a
//! reboot), [`gates`], [`profile`], [`gc`] (garbage collection that keeps what a rollback
//! needs), [`record`] and the [`RollbackCollector`]. The `labnode` binary's
//! `drill rollback`, `safe-switch` and `gc` subcommands call the entry points; the
//! `rollback` collector exports the records and the marker.

pub mod activation;
pub mod collector;
pub mod config;
pub mod drill;
pub mod engine;
pub mod exposition;
pub mod gates;
pub mod gc;
pub mod profile;
pub mod progress;
pub mod record;
pub mod recover;
pub mod safe_switch;
pub mod signals;
pub mod state;
pub mod systemd;

pub use collector::RollbackCollector;
pub use config::{CollectorConfig, Config};
pub use drill::{DrillDone, DrillOutcome, drill};
pub use engine::{Context, Recovered, RunError};
pub use recover::recover;
pub use safe_switch::{SwitchDone, safe_switch};
