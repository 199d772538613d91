//! labnode's rollback drills and safe switches.
//!
//! A NixOS host keeps its systems as generations of the profile
//! `/nix/var/nix/profiles/system`. A *drill* rolls back one generation exactly as
//! `nixos-rebuild switch --rollback` does (`nix-env --rollback`, then the generation's
//! `bin/switch-to-configuration switch`), waits for systemd's job queue to drain and for
//! every health gate to pass, then rolls forward the same way, timing each phase. A *safe
//! switch* activates a new system behind the same gates and rolls back by itself when they
//! fail, when activation fails, when labnode dies (a transient systemd guard takes over) or
//! when the host reboots first (the boot unit `labnode safe-switch --recover` does).
//! Results go to the snapshot store; the `rollback` collector exports them.

pub mod activate;
pub mod collector;
pub mod config;
pub mod exposition;
pub mod gates;
pub mod profile;
pub mod progress;
pub mod record;
pub mod run;
pub mod scratch;
pub mod state;
pub mod systemd;

pub use collector::RollbackCollector;
pub use config::{CollectorConfig, Config};
