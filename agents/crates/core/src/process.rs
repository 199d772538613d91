//! The agent's own footprint, in the standard `process_*` names, read from `/proc/self`.

use std::sync::OnceLock;

use crate::metrics::{Metrics, Unit};

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    })
}

fn page_size() -> f64 {
    static PAGE: OnceLock<f64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as f64 } else { 4096.0 }
    })
}

/// CPU seconds (user + system) and resident bytes of this process, from `/proc/self/stat`.
pub fn cpu_and_rss() -> Option<(f64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22, rss 24.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let start: f64 = f.get(19)?.parse().ok()?;
    let rss: f64 = f.get(21)?.parse().ok()?;
    Some((
        (utime + stime) / clock_ticks(),
        rss * page_size(),
        start / clock_ticks(),
    ))
}

fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Adds `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_start_time_seconds` and `process_open_fds` for this process.
pub fn self_metrics(m: &mut Metrics) {
    if let Some((cpu, rss, start)) = cpu_and_rss() {
        m.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Unit::Seconds,
        )
        .push(&[], cpu);
        m.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Unit::Bytes,
        )
        .push(&[], rss);
        if let Some(boot) = boot_time() {
            m.gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Unit::Timestamp,
            )
            .push(&[], boot + start);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        m.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            Unit::Count,
        )
        .push(&[], dir.count() as f64);
    }
}
