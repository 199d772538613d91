//! Facts about the host a snapshot was taken on, read from procfs and the filesystem.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the host's facts are read from; tests and containers point these elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// procfs mount, normally `/proc`.
    pub proc: PathBuf,
    /// The configuration directory, normally `/etc`.
    pub etc: PathBuf,
    /// The running NixOS system, normally `/run/current-system`.
    pub current_system: PathBuf,
    /// The system booted last, normally `/run/booted-system`.
    pub booted_system: PathBuf,
    /// The NixOS system profile, normally `/nix/var/nix/profiles/system`.
    pub system_profile: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: "/proc".into(),
            etc: "/etc".into(),
            current_system: "/run/current-system".into(),
            booted_system: "/run/booted-system".into(),
            system_profile: "/nix/var/nix/profiles/system".into(),
        }
    }
}

/// What the running NixOS system is, when the host runs NixOS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NixosFacts {
    /// Generation number of the running system in the system profile, when it is one.
    pub generation: Option<u64>,
    /// Store path of the running system.
    pub system_path: String,
    /// Store path of the booted system, when known.
    pub booted_system_path: Option<String>,
    /// The flake revision the system was built from (`/etc/labnode/flake-revision`).
    pub flake_revision: Option<String>,
}

/// Host facts recorded in every snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// Kernel release, e.g. `6.12.41`.
    pub kernel_release: String,
    /// Operating system, from os-release `PRETTY_NAME`.
    pub os: Option<String>,
    /// os-release `ID`, e.g. `debian` or `nixos`.
    pub os_id: Option<String>,
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Total memory in bytes.
    pub memory_total_bytes: Option<u64>,
    /// Boot time, seconds since the epoch.
    pub boot_timestamp_seconds: Option<f64>,
    /// The NixOS system, when the host runs NixOS.
    pub nixos: Option<NixosFacts>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Parses os-release text into `(key, value)` pairs with quotes removed.
pub fn os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

/// Reads os-release from `etc` (then `/usr/lib/os-release` beside it).
pub fn read_os_release(etc: &Path) -> Vec<(String, String)> {
    let etc_file = etc.join("os-release");
    let text = std::fs::read_to_string(&etc_file)
        .or_else(|_| std::fs::read_to_string(etc.join("../usr/lib/os-release")))
        .unwrap_or_default();
    os_release(&text)
}

/// Finds the running NixOS system and its generation, or `None` off NixOS.
pub fn nixos(paths: &HostPaths) -> Option<NixosFacts> {
    let current = std::fs::canonicalize(&paths.current_system).ok()?;
    let booted = std::fs::canonicalize(&paths.booted_system).ok();
    Some(NixosFacts {
        generation: generation_of(&paths.system_profile, &current),
        system_path: current.display().to_string(),
        booted_system_path: booted.map(|b| b.display().to_string()),
        flake_revision: read_trim(&paths.etc.join("labnode/flake-revision")),
    })
}

/// The number N of the `PROFILE-N-link` generation that points at `target`.
pub fn generation_of(profile: &Path, target: &Path) -> Option<u64> {
    let dir = profile.parent()?;
    let base = profile.file_name()?.to_str()?;
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.strip_suffix("-link"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if std::fs::canonicalize(entry.path()).ok().as_deref() == Some(target) {
            // Several generations can share a store path; the newest is the one in use.
            best = best.max(Some(n));
        }
    }
    best
}

/// Gathers the host facts.
pub fn facts(paths: &HostPaths) -> HostFacts {
    let proc = &paths.proc;
    let cpuinfo = std::fs::read_to_string(proc.join("cpuinfo")).unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let cpu_count = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let meminfo = std::fs::read_to_string(proc.join("meminfo")).unwrap_or_default();
    let memory_total_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
    let boot_timestamp_seconds = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok());
    let osr = read_os_release(&paths.etc);
    let get = |k: &str| osr.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    HostFacts {
        hostname: read_trim(&proc.join("sys/kernel/hostname")).unwrap_or_else(|| "unknown".into()),
        kernel_release: read_trim(&proc.join("sys/kernel/osrelease"))
            .unwrap_or_else(|| "unknown".into()),
        os: get("PRETTY_NAME"),
        os_id: get("ID"),
        cpu_model,
        cpu_count,
        memory_total_bytes,
        boot_timestamp_seconds,
        nixos: nixos(paths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn finds_the_generation_the_running_system_is() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = t.path().join("store");
        for s in ["a-system", "b-system"] {
            std::fs::create_dir_all(store.join(s)).expect("mkdir");
        }
        let profiles = t.path().join("profiles");
        std::fs::create_dir(&profiles).expect("mkdir");
        symlink(store.join("a-system"), profiles.join("system-1-link")).expect("link");
        symlink(store.join("b-system"), profiles.join("system-2-link")).expect("link");
        symlink(store.join("a-system"), profiles.join("system-3-link")).expect("link");
        symlink("system-3-link", profiles.join("system")).expect("link");
        symlink(store.join("b-system"), t.path().join("current")).expect("link");
        let paths = HostPaths {
            current_system: t.path().join("current"),
            booted_system: t.path().join("booted-missing"),
            system_profile: profiles.join("system"),
            etc: t.path().join("etc"),
            ..HostPaths::default()
        };
        let n = nixos(&paths).expect("nixos facts");
        assert_eq!(n.generation, Some(2));
        assert!(n.system_path.ends_with("b-system"));
        assert_eq!(n.booted_system_path, None);
        let a = std::fs::canonicalize(store.join("a-system")).expect("canon");
        assert_eq!(generation_of(&profiles.join("system"), &a), Some(3));
    }

    #[test]
    fn no_current_system_means_not_nixos() {
        let paths = HostPaths {
            current_system: "/nonexistent/current-system".into(),
            ..HostPaths::default()
        };
        assert_eq!(nixos(&paths), None);
    }

    #[test]
    fn os_release_quotes_are_removed() {
        let r = os_release("NAME=\"NixOS\"\nID=nixos\nPRETTY_NAME=\"NixOS 25.11 (Xantusia)\"\n");
        assert!(r.contains(&("ID".into(), "nixos".into())));
        assert!(r.contains(&("PRETTY_NAME".into(), "NixOS 25.11 (Xantusia)".into())));
    }
}
