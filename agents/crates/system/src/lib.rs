//! The `system` collector: CPU utilization per mode, load, memory, swap, uptime, boot
//! time, kernel and OS, and the running NixOS generation, read straight from procfs (no
//! subprocesses).
//!
//! [`SystemCollector`] implements `labnode_core::Collector`; [`Config`] is its
//! `collectors.system` section. The parsers ([`parse_stat`], [`parse_meminfo`],
//! [`utilization`]) are public for tests. Used by the `labnode` binary's collector
//! registry, on every host (the static "before" binary has only this one and the ARC).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labnode_core::config::Period;
use labnode_core::host::{self, HostPaths};
use labnode_core::sys::{FileError, read_file};
use labnode_core::{CollectError, Metrics, Polled, Timing, Unit};

labnode_core::collector_config! {
    /// Configuration of the `system` collector (the `collectors.system` section): polled every
    /// 15s by default, each run within 5s.
    pub struct Config {
        defaults: interval Duration::from_secs(15), deadline Duration::from_secs(5);
        /// Window over which the first CPU utilization is measured (default 250ms); later
        /// runs use the time since the previous run.
        pub cpu_window: Option<Period<10, 10_000>>,
        /// procfs mount (default `/proc`).
        pub proc_root: Option<PathBuf>,
        /// Configuration directory with `os-release` (default `/etc`).
        pub etc_root: Option<PathBuf>,
        /// The running NixOS system (default `/run/current-system`).
        pub current_system: Option<PathBuf>,
        /// The booted NixOS system (default `/run/booted-system`).
        pub booted_system: Option<PathBuf>,
        /// The NixOS system profile (default `/nix/var/nix/profiles/system`).
        pub system_profile: Option<PathBuf>,
    }
}

impl Config {
    /// The paths facts are read from.
    pub fn paths(&self) -> HostPaths {
        let d = HostPaths::default();
        HostPaths {
            proc: self.proc_root.clone().unwrap_or(d.proc),
            etc: self.etc_root.clone().unwrap_or(d.etc),
            current_system: self.current_system.clone().unwrap_or(d.current_system),
            booted_system: self.booted_system.clone().unwrap_or(d.booted_system),
            system_profile: self.system_profile.clone().unwrap_or(d.system_profile),
        }
    }
}

/// What can go wrong reading the system's state: a procfs file could not be read or parsed.
pub type SystemError = FileError;

/// CPU time per mode, summed over all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTimes {
    /// Ticks per mode, in [`MODES`] order.
    pub ticks: [u64; 8],
}

/// The CPU modes of `/proc/stat`, in its column order (guest time is already in user).
pub const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Parsed `/proc/stat`: aggregate CPU times, online CPU count and boot time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// Aggregate CPU line.
    pub cpu: CpuTimes,
    /// Number of `cpuN` lines.
    pub cpus: usize,
    /// `btime`, seconds since the epoch.
    pub boot_time: Option<u64>,
}

/// Parses `/proc/stat` text.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let mut cpu = None;
    let mut cpus = 0;
    let mut boot_time = None;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("cpu") => {
                let mut t = CpuTimes::default();
                for slot in &mut t.ticks {
                    *slot = f.next()?.parse().ok()?;
                }
                cpu = Some(t);
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            Some("btime") => boot_time = f.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    Some(Stat {
        cpu: cpu?,
        cpus,
        boot_time,
    })
}

/// Parses `/proc/meminfo` into `(key, bytes)` pairs.
pub fn parse_meminfo(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut parts = v.split_ascii_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            let mult = match parts.next() {
                Some("kB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            Some((k.trim().to_owned(), n * mult))
        })
        .collect()
}

/// Utilization ratio per mode between two readings; `None` when no time passed.
pub fn utilization(prev: &CpuTimes, now: &CpuTimes) -> Option<[f64; 8]> {
    let deltas: Vec<u64> = prev
        .ticks
        .iter()
        .zip(now.ticks.iter())
        .map(|(a, b)| b.saturating_sub(*a))
        .collect();
    let total: u64 = deltas.iter().sum();
    if total == 0 {
        return None;
    }
    let mut out = [0.0; 8];
    for (o, d) in out.iter_mut().zip(deltas) {
        *o = d as f64 / total as f64;
    }
    Some(out)
}

/// The `system` collector.
#[derive(Debug)]
pub struct SystemCollector {
    paths: HostPaths,
    timing: Timing,
    first_window: Duration,
    ticks_per_second: f64,
    previous: Mutex<Option<(CpuTimes, Instant)>>,
}

impl SystemCollector {
    /// A collector with the given configuration.
    pub fn new(cfg: &Config) -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        SystemCollector {
            paths: cfg.paths(),
            timing: Timing::of(cfg),
            first_window: cfg
                .cpu_window
                .map_or(Duration::from_millis(250), Period::get),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            previous: Mutex::new(None),
        }
    }

    fn read(&self, rel: &str) -> Result<String, SystemError> {
        read_file(&self.paths.proc.join(rel))
    }

    fn stat(&self) -> Result<Stat, SystemError> {
        let text = self.read("stat")?;
        parse_stat(&text).ok_or_else(|| SystemError::Parse {
            path: self.paths.proc.join("stat"),
            what: "no aggregate `cpu` line with 8 numeric columns".into(),
        })
    }

    fn collect_cpu(&self, m: &mut Metrics) -> Result<Stat, SystemError> {
        let mut stat = self.stat()?;
        let now = Instant::now();
        let prev = *self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let (before, since) = match prev {
            Some(p) => p,
            None => {
                // First run: measure over a short window instead of since boot.
                let first = (stat.cpu, now);
                std::thread::sleep(self.first_window);
                stat = self.stat()?;
                first
            }
        };
        let taken = Instant::now();
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some((stat.cpu, taken));

        let secs = m.counter(
            "labnode_system_cpu_seconds_total",
            "CPU time spent in each mode, summed over all CPUs.",
            Unit::Seconds,
        );
        for (mode, t) in MODES.iter().zip(stat.cpu.ticks) {
            secs.push(&[("mode", mode)], t as f64 / self.ticks_per_second);
        }
        if let Some(ratios) = utilization(&before.ticks.into(), &stat.cpu) {
            let u = m.gauge(
                "labnode_system_cpu_utilization_ratio",
                "Share of CPU time spent in each mode over the last window, all CPUs together.",
                Unit::Ratio,
            );
            for (mode, r) in MODES.iter().zip(ratios) {
                u.push(&[("mode", mode)], r);
            }
            m.gauge(
                "labnode_system_cpu_utilization_window_seconds",
                "Length of the window the utilization ratios cover.",
                Unit::Seconds,
            )
            .push(&[], taken.duration_since(since).as_secs_f64());
        }
        m.gauge("labnode_system_cpus", "Online logical CPUs.", Unit::Count)
            .push(&[], stat.cpus as f64);
        Ok(stat)
    }

    fn collect_memory(&self, m: &mut Metrics) -> Result<(), SystemError> {
        let text = self.read("meminfo")?;
        let mem = parse_meminfo(&text);
        let get = |k: &str| mem.iter().find(|(key, _)| key == k).map(|(_, v)| *v as f64);
        let missing = |k: &str| SystemError::Parse {
            path: self.paths.proc.join("meminfo"),
            what: format!("no {k} line"),
        };
        let total = get("MemTotal").ok_or_else(|| missing("MemTotal"))?;
        let available = get("MemAvailable").ok_or_else(|| missing("MemAvailable"))?;
        m.gauge(
            "labnode_system_memory_total_bytes",
            "Usable RAM.",
            Unit::Bytes,
        )
        .push(&[], total);
        m.gauge(
            "labnode_system_memory_available_bytes",
            "RAM available for new work without swapping (MemAvailable). ZFS ARC counts as used.",
            Unit::Bytes,
        )
        .push(&[], available);
        m.gauge(
            "labnode_system_memory_used_bytes",
            "RAM in use: total minus available.",
            Unit::Bytes,
        )
        .push(&[], (total - available).max(0.0));
        if let (Some(st), Some(sf)) = (get("SwapTotal"), get("SwapFree")) {
            m.gauge(
                "labnode_system_swap_total_bytes",
                "Swap space.",
                Unit::Bytes,
            )
            .push(&[], st);
            m.gauge(
                "labnode_system_swap_used_bytes",
                "Swap space in use.",
                Unit::Bytes,
            )
            .push(&[], (st - sf).max(0.0));
        }
        Ok(())
    }

    fn collect_load_uptime(&self, m: &mut Metrics, stat: &Stat) -> Result<(), SystemError> {
        let text = self.read("loadavg")?;
        let loads: Vec<f64> = text
            .split_ascii_whitespace()
            .take(3)
            .filter_map(|v| v.parse().ok())
            .collect();
        let [l1, l5, l15] = loads[..] else {
            return Err(SystemError::Parse {
                path: self.paths.proc.join("loadavg"),
                what: format!("expected three load averages, got {text:?}"),
            });
        };
        for (name, v, window) in [
            ("labnode_system_load1", l1, "1"),
            ("labnode_system_load5", l5, "5"),
            ("labnode_system_load15", l15, "15"),
        ] {
            m.gauge(
                name,
                &format!("Load average over {window} minute(s)."),
                Unit::Count,
            )
            .push(&[], v);
        }
        let up = self.read("uptime")?;
        let uptime: f64 = up
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| SystemError::Parse {
                path: self.paths.proc.join("uptime"),
                what: format!("no uptime in {up:?}"),
            })?;
        m.gauge(
            "labnode_system_uptime_seconds",
            "Time since boot.",
            Unit::Seconds,
        )
        .push(&[], uptime);
        if let Some(bt) = stat.boot_time {
            m.gauge(
                "labnode_system_boot_timestamp_seconds",
                "When the host booted, seconds since the epoch.",
                Unit::Timestamp,
            )
            .push(&[], bt as f64);
        }
        Ok(())
    }

    fn collect_identity(&self, m: &mut Metrics) -> Result<(), SystemError> {
        let release = self.read("sys/kernel/osrelease")?;
        let version = self.read("sys/kernel/version").unwrap_or_default();
        m.gauge(
            "labnode_system_kernel_info",
            "The running kernel; the value is always 1.",
            Unit::Info,
        )
        .push(
            &[("release", release.trim()), ("version", version.trim())],
            1.0,
        );
        let osr = host::read_os_release(&self.paths.etc);
        if !osr.is_empty() {
            let get = |k: &str| {
                osr.iter()
                    .find(|(key, _)| key == k)
                    .map_or("", |(_, v)| v.as_str())
            };
            m.gauge(
                "labnode_system_os_info",
                "The operating system, from os-release; the value is always 1.",
                Unit::Info,
            )
            .push(
                &[
                    ("id", get("ID")),
                    ("version_id", get("VERSION_ID")),
                    ("pretty_name", get("PRETTY_NAME")),
                ],
                1.0,
            );
        }
        if let Some(n) = host::nixos(&self.paths) {
            if let Some(g) = n.generation {
                m.gauge(
                    "labnode_system_nixos_generation",
                    "Generation number of the running NixOS system in the system profile.",
                    Unit::Count,
                )
                .push(&[], g as f64);
            }
            m.gauge(
                "labnode_system_nixos_system_info",
                "The running NixOS system's store path, the booted one, and the flake revision; always 1.",
                Unit::Info,
            )
            .push(
                &[
                    ("store_path", n.system_path.as_str()),
                    ("booted_store_path", n.booted_system_path.as_deref().unwrap_or("")),
                    ("flake_revision", n.flake_revision.as_deref().unwrap_or("")),
                ],
                1.0,
            );
        }
        Ok(())
    }
}

impl From<[u64; 8]> for CpuTimes {
    fn from(ticks: [u64; 8]) -> Self {
        CpuTimes { ticks }
    }
}

impl Polled for SystemCollector {
    const NAME: &'static str = "system";
    fn timing(&self) -> Timing {
        self.timing
    }
    fn poll(&self) -> Result<Metrics, CollectError> {
        let mut m = Metrics::new();
        let stat = self.collect_cpu(&mut m)?;
        self.collect_memory(&mut m)?;
        self.collect_load_uptime(&mut m, &stat)?;
        self.collect_identity(&mut m)?;
        Ok(m)
    }
}

/// The procfs root in use, for messages.
pub fn proc_root(cfg: &Config) -> PathBuf {
    cfg.proc_root
        .clone()
        .unwrap_or_else(|| Path::new("/proc").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use labnode_core::Collector;

    const STAT: &str = "cpu  100 5 50 800 10 1 2 0 0 0\ncpu0 50 2 25 400 5 1 1 0 0 0\ncpu1 50 3 25 400 5 0 1 0 0 0\nintr 1\nbtime 1700000000\n";

    #[test]
    fn parses_proc_stat() {
        let s = parse_stat(STAT).expect("parses");
        assert_eq!(s.cpu.ticks, [100, 5, 50, 800, 10, 1, 2, 0]);
        assert_eq!(s.cpus, 2);
        assert_eq!(s.boot_time, Some(1_700_000_000));
        assert!(parse_stat("cpu 1 2\n").is_none());
    }

    #[test]
    fn utilization_sums_to_one() {
        let a = CpuTimes {
            ticks: [100, 0, 50, 800, 0, 0, 0, 0],
        };
        let b = CpuTimes {
            ticks: [130, 0, 60, 860, 0, 0, 0, 0],
        };
        let u = utilization(&a, &b).expect("time passed");
        assert!((u.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((u[0] - 0.3).abs() < 1e-9);
        assert!((u[3] - 0.6).abs() < 1e-9);
        assert!(utilization(&a, &a).is_none());
    }

    #[test]
    fn parses_meminfo_in_bytes() {
        let m = parse_meminfo(
            "MemTotal:       16384 kB\nMemAvailable:    8192 kB\nHugePages_Total:       0\n",
        );
        assert_eq!(m[0], ("MemTotal".into(), 16384 * 1024));
        assert_eq!(m[2], ("HugePages_Total".into(), 0));
    }

    fn fake_proc(dir: &Path, meminfo: &str) {
        std::fs::create_dir_all(dir.join("sys/kernel")).expect("mkdir");
        std::fs::write(dir.join("stat"), STAT).expect("write");
        std::fs::write(dir.join("meminfo"), meminfo).expect("write");
        std::fs::write(dir.join("loadavg"), "0.50 0.25 0.10 1/100 42\n").expect("write");
        std::fs::write(dir.join("uptime"), "1234.5 2000.0\n").expect("write");
        std::fs::write(dir.join("sys/kernel/osrelease"), "6.12.0\n").expect("write");
    }

    #[test]
    fn collects_from_a_proc_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_proc(
            t.path(),
            "MemTotal: 1000 kB\nMemAvailable: 400 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        );
        let c = SystemCollector::new(&Config {
            proc_root: Some(t.path().into()),
            etc_root: Some(t.path().join("etc")),
            current_system: Some(t.path().join("no-system")),
            cpu_window: Some(Period(Duration::from_millis(10))),
            ..Config::default()
        });
        let m = c.collect().expect("collects");
        m.validate().expect("valid");
        let value = |name: &str| {
            m.families()
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.series[0].value)
        };
        assert_eq!(
            value("labnode_system_memory_used_bytes"),
            Some(600.0 * 1024.0)
        );
        assert_eq!(value("labnode_system_load5"), Some(0.25));
        assert_eq!(value("labnode_system_uptime_seconds"), Some(1234.5));
        assert_eq!(value("labnode_system_cpus"), Some(2.0));
        assert_eq!(value("labnode_system_nixos_generation"), None);
        // The fake /proc/stat does not move, so there is no utilization to report.
        assert_eq!(value("labnode_system_cpu_utilization_ratio"), None);
    }

    #[test]
    fn a_broken_proc_file_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_proc(t.path(), "MemTotal: 1000 kB\n");
        let c = SystemCollector::new(&Config {
            proc_root: Some(t.path().into()),
            cpu_window: Some(Period(Duration::from_millis(10))),
            ..Config::default()
        });
        let e = c.collect().expect_err("no MemAvailable").to_string();
        assert!(e.contains("meminfo") && e.contains("MemAvailable"), "{e}");
    }

    #[test]
    fn reads_the_real_proc() {
        let c = SystemCollector::new(&Config {
            cpu_window: Some(Period(Duration::from_millis(50))),
            ..Config::default()
        });
        let m = c.collect().expect("real /proc");
        m.validate().expect("valid");
        assert!(m.series_count() > 20);
    }
}
