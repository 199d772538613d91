//! The `gpu` gate: enough GPUs answer through NVML, and none is lost.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Checker, GateCheck};

/// Where the `gpu` gate looks for NVML when no library is configured: the loader's search
/// path, then the NixOS driver location (the gpu collector's search too; a test in the
/// binary, which has both, keeps them equal).
pub const NVML_LIBRARIES: [&str; 2] = [
    "libnvidia-ml.so.1",
    "/run/opengl-driver/lib/libnvidia-ml.so.1",
];

/// `gpu`: at least `devices` GPUs answer through NVML, and none is lost.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// At least this many GPUs answer (default 1).
    pub devices: Option<u32>,
    /// The NVML library (default: as the gpu collector looks for it).
    pub library: Option<PathBuf>,
}

impl Gpu {
    /// The minimum count.
    fn devices(&self) -> u32 {
        self.devices.unwrap_or(1)
    }

    /// The libraries to try, in order.
    fn libraries(&self) -> Vec<PathBuf> {
        match &self.library {
            Some(l) => vec![l.clone()],
            None => NVML_LIBRARIES.iter().map(PathBuf::from).collect(),
        }
    }
}

impl GateCheck for Gpu {
    fn describe(&self) -> String {
        format!("at least {} GPU(s) answer through NVML", self.devices())
    }

    fn validate(&self) -> Result<(), String> {
        if self.devices == Some(0) {
            return Err("devices must be at least 1".into());
        }
        Ok(())
    }

    fn check(&self, _: &mut Checker, _since: SystemTime, _bound: Duration) -> Result<(), String> {
        let devices = self.devices();
        let mut tried = Vec::new();
        for lib in self.libraries() {
            let nvml = match nvml_wrapper::Nvml::builder()
                .lib_path(lib.as_os_str())
                .init()
            {
                Ok(n) => n,
                Err(e) => {
                    tried.push(format!("{}: {e}", lib.display()));
                    continue;
                }
            };
            let count = nvml
                .device_count()
                .map_err(|e| format!("NVML device count: {e}"))?;
            let mut bad = Vec::new();
            for i in 0..count {
                if let Err(e) = nvml.device_by_index(i).and_then(|d| d.name()) {
                    bad.push(format!("GPU {i}: {e}"));
                }
            }
            if !bad.is_empty() {
                return Err(bad.join(", "));
            }
            if count < devices {
                return Err(format!("NVML sees {count} GPU(s), want at least {devices}"));
            }
            return Ok(());
        }
        Err(format!("cannot initialise NVML: {}", tried.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::check;
    use super::*;

    #[test]
    fn missing_nvml() {
        let e = check(&Check::Gpu(Gpu {
            devices: Some(1),
            library: Some("/nonexistent/libnvidia-ml.so.1".into()),
        }))
        .expect_err("no NVML");
        assert!(
            e.starts_with("cannot initialise NVML: /nonexistent/libnvidia-ml.so.1"),
            "{e}"
        );
    }
}
