//! The collector registry: the one table of every collector this build knows.
//!
//! An entry names the collector (its key under `collectors:` in the configuration file,
//! its `--collector` value and its `collector` label), its configuration section's type
//! (whose [`Schedule`] impl holds its defaults and its own checks), the port the NixOS
//! agents module gives its service, and how it is built. The `Collectors` section of the
//! configuration file is generated from the same table, and `modules/collectors.json`
//! (which the agents module reads its default ports from) is its export, kept in step by
//! a test. Adding a collector is one line here, plus its crate and its tests.

use std::sync::Arc;

use labnode_core::Collector;
use labnode_core::config::{Schedule, SectionError};
use serde::Deserialize;

use crate::config::Config;

/// One collector of the [`REGISTRY`].
pub struct Entry {
    /// Its name.
    pub name: &'static str,
    /// The port the NixOS agents module gives its `labnode serve` by default.
    pub default_port: u16,
    /// Whether it runs under a configuration (default: yes).
    pub enabled: fn(&Config) -> bool,
    /// Its section's checks (`Schedule::check`), when the section is there.
    pub check: fn(&Config) -> Result<(), SectionError>,
    /// Builds it from a configuration.
    pub build: fn(&Config) -> Arc<dyn Collector>,
}

/// `registry! { name: SectionType, port N, |section, config| build; ... }`: the
/// `Collectors` section and the [`REGISTRY`] from one list.
macro_rules! registry {
    ($( $(#[$doc:meta])* $name:ident: $section:ty, port $port:literal, |$s:ident, $cfg:ident| $build:expr; )*) => {
        /// The `collectors` section: one key per collector of the [`REGISTRY`].
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Collectors {
            $( $(#[$doc])* pub $name: Option<$section>, )*
        }

        /// Every collector this build knows, in the order they run.
        pub static REGISTRY: &[Entry] = &[$(
            Entry {
                name: stringify!($name),
                default_port: $port,
                enabled: |c| c.collectors.$name.as_ref().is_none_or(|s| s.enabled()),
                check: |c| c.collectors.$name.as_ref().map_or(Ok(()), |s| s.check()),
                build: |$cfg| {
                    let $s = $cfg.collectors.$name.clone().unwrap_or_default();
                    Arc::new($build)
                },
            },
        )*];
    };
}

registry! {
    /// The `system` collector: CPU, memory, load, kernel, NixOS generation.
    system: labnode_system::Config, port 9466,
        |s, _c| labnode_system::SystemCollector::new(&s);
    /// The `gpu` collector: NVML.
    gpu: labnode_gpu::Config, port 9467,
        |s, _c| labnode_gpu::GpuCollector::new(&s);
    /// The `zfs` collector: pools, vdevs, datasets, snapshots, ARC, drill records.
    zfs: labnode_zfs::Config, port 9468,
        |s, c| labnode_zfs::ZfsCollector::new(&s, Some(c.snapshot_dir()));
    /// The `net` collector: congestion control, TCP, WireGuard, probe results.
    net: labnode_net::Config, port 9469,
        |s, c| labnode_net::NetCollector::new(&s, &c.snapshot_dir());
    /// The `rollback` collector: generations, drill and safe-switch records, the marker.
    rollback: labnode_rollback::CollectorConfig, port 9470,
        |s, c| labnode_rollback::RollbackCollector::new(&s, &c.rollback.clone().unwrap_or_default(), c.snapshot_dir());
}

/// The entry named `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// The names, in order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The export the NixOS agents module reads: `{"<name>": {"port": N}, ...}`, in order.
pub fn export_json() -> String {
    let body: Vec<String> = REGISTRY
        .iter()
        .map(|e| format!("  \"{}\": {{\"port\": {}}}", e.name, e.default_port))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_module_reads_this_table() {
        // modules/collectors.json is the registry's export; the agents module takes its
        // default ports from it. Read where cargo runs the test (a shared target
        // directory must not read another checkout's file).
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let path = std::path::Path::new(&dir).join("../../modules/collectors.json");
        let want = export_json();
        let got =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            got == want,
            "{} is not the registry's export (labnode generate collectors > modules/collectors.json):\n{want}",
            path.display()
        );
    }

    #[test]
    fn the_report_expects_every_collector() {
        // The report's monitoring coverage counts the collectors it expects.
        assert_eq!(labnode_report::catalog::COLLECTORS, names().as_slice());
    }

    #[test]
    fn the_gpu_gate_finds_nvml_where_the_collector_does() {
        assert_eq!(
            labnode_rollback::gates::NVML_LIBRARIES,
            labnode_gpu::DEFAULT_LIBRARIES
        );
    }

    #[test]
    fn names_and_ports_are_unique_and_the_first_is_the_default_listen() {
        for (i, e) in REGISTRY.iter().enumerate() {
            for o in &REGISTRY[i + 1..] {
                assert_ne!(e.name, o.name);
                assert_ne!(e.default_port, o.default_port, "{} and {}", e.name, o.name);
            }
        }
        assert_eq!(
            crate::config::DEFAULT_LISTEN,
            format!("127.0.0.1:{}", REGISTRY[0].default_port)
        );
        assert!(find("gpu").is_some() && find("nope").is_none());
    }
}
