//! One GPU's reading: the NVML calls for each field (unsupported ones absent, a lost GPU
//! noticed), the window means and energy, and the per-GPU families they become.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use labnode_core::{Metrics, Unit};
use nvml_wrapper::Device;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, RetirementCause, Sampling, TemperatureSensor,
    TemperatureThreshold,
};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;

use crate::{GpuCollector, GpuMemory, State, THROTTLE_REASONS};

/// One GPU's reading, assembled from many NVML calls.
pub(super) struct Reader<'a> {
    calls: &'a AtomicU64,
    pub(super) supported: Vec<(&'static str, bool)>,
    pub(super) lost: bool,
    pub(super) warnings: Vec<String>,
}

impl Reader<'_> {
    /// Runs one NVML call: the value, or `None` when unsupported or failed (the GPU is
    /// marked lost on `GpuLost`).
    fn get<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce() -> Result<T, NvmlError>,
    ) -> Option<T> {
        if self.lost {
            return None;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        match f() {
            Ok(v) => {
                self.mark(field, true);
                Some(v)
            }
            Err(NvmlError::NotSupported) => {
                self.mark(field, false);
                None
            }
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(e) => {
                self.warnings.push(format!("{field}: {e}"));
                None
            }
        }
    }

    fn mark(&mut self, field: &'static str, ok: bool) {
        match self.supported.iter_mut().find(|(f, _)| *f == field) {
            Some(entry) => entry.1 |= ok,
            None => self.supported.push((field, ok)),
        }
    }
}

impl GpuCollector {
    pub(super) fn collect_device(
        &self,
        d: &Device<'_>,
        idx: u32,
        versions: (&str, &str),
        st: &mut State,
        m: &mut Metrics,
    ) -> Reader<'_> {
        let mut r = Reader {
            calls: &self.calls,
            supported: Vec::new(),
            lost: false,
            warnings: Vec::new(),
        };
        let uuid = match r.get("uuid", || d.uuid()) {
            Some(u) => u,
            None => {
                if !r.lost {
                    r.warnings.push("no UUID".into());
                }
                return r;
            }
        };
        let gpu = idx.to_string();
        let labels = [("gpu", gpu.as_str()), ("uuid", uuid.as_str())];
        // NVML's utilization samples newer than the window's start, for a GPU not read yet.
        let window_from_us = st.window_from.map(|(_, us)| us);
        let mem = st.gpus.entry(idx).or_default();
        if mem.uuid.is_empty() {
            // The first reading: keep what the first run's window sampled.
            mem.uuid = uuid.clone();
        } else if mem.uuid != uuid {
            // Another card at this index: start its state afresh.
            *mem = GpuMemory {
                uuid: uuid.clone(),
                ..GpuMemory::default()
            };
        }

        let name = r.get("name", || d.name()).unwrap_or_default();
        let bus = r
            .get("pci_info", || d.pci_info())
            .map(|p| p.bus_id)
            .unwrap_or_default();
        let persistence = r
            .get("persistence_mode", || d.is_in_persistent_mode())
            .map_or("", |p| if p { "enabled" } else { "disabled" });

        // Utilization: the mean of NVML's own samples within the window (newer than the
        // last one seen, or than the window's start) where the GPU keeps them, else the
        // current rates; also when no sample is new (NVML's NOT_FOUND).
        let mut util = None;
        let mut mem_util = None;
        let since = mem.last_sample_ts.or(window_from_us);
        if let Some(samples) = r.get("utilization_samples", || {
            new_samples(d, Sampling::GpuUtilization, since)
        }) {
            if let Some(last) = samples.iter().map(|s| s.timestamp).max() {
                mem.last_sample_ts = Some(last);
            }
            util = mean(samples.iter().map(|s| sample_value(&s.value)));
            let since = mem.last_mem_sample_ts.or(window_from_us);
            if let Some(samples) = r.get("memory_utilization_samples", || {
                new_samples(d, Sampling::MemoryUtilization, since)
            }) {
                if let Some(last) = samples.iter().map(|s| s.timestamp).max() {
                    mem.last_mem_sample_ts = Some(last);
                }
                mem_util = mean(samples.iter().map(|s| sample_value(&s.value)));
            }
        }
        if util.is_none() || mem_util.is_none() {
            if let Some(u) = r.get("utilization", || d.utilization_rates()) {
                util = util.or(Some(f64::from(u.gpu)));
                mem_util = mem_util.or(Some(f64::from(u.memory)));
            }
        }
        let memory = r.get("memory", || d.memory_info());
        let temp = r.get("temperature", || d.temperature(TemperatureSensor::Gpu));
        let slowdown = r.get("slowdown_temperature", || {
            d.temperature_threshold(TemperatureThreshold::Slowdown)
        });
        let shutdown = r.get("shutdown_temperature", || {
            d.temperature_threshold(TemperatureThreshold::Shutdown)
        });
        let power_w = r
            .get("power", || d.power_usage())
            .map(|mw| f64::from(mw) / 1000.0);
        let power_at = Instant::now();
        if let Some(p) = power_w {
            integrate(mem, p, power_at);
        }
        let limit_w = r
            .get("power_limit", || d.enforced_power_limit())
            .map(|mw| f64::from(mw) / 1000.0);
        let nvml_energy_j = r
            .get("energy_counter", || d.total_energy_consumption())
            .map(|mj| mj as f64 / 1000.0);
        let energy_at = Instant::now();
        let fan = r.get("fan_speed", || d.fan_speed(0));
        let sm_clock = r.get("sm_clock", || d.clock_info(Clock::SM));
        let mem_clock = r.get("memory_clock", || d.clock_info(Clock::Memory));
        let tx = r.get("pcie_throughput", || {
            d.pcie_throughput(PcieUtilCounter::Send)
        });
        let rx = r.get("pcie_throughput", || {
            d.pcie_throughput(PcieUtilCounter::Receive)
        });
        let link_gen = r.get("pcie_link", || d.current_pcie_link_gen());
        let link_width = r.get("pcie_link", || d.current_pcie_link_width());
        let pstate = r.get("performance_state", || d.performance_state());
        let throttle = r.get("throttle_reasons", || d.current_throttle_reasons());
        let mut ecc = Vec::new();
        for (kind, kind_label) in [
            (MemoryError::Corrected, "corrected"),
            (MemoryError::Uncorrected, "uncorrected"),
        ] {
            for (counter, counter_label) in [
                (EccCounter::Volatile, "volatile"),
                (EccCounter::Aggregate, "aggregate"),
            ] {
                if let Some(n) = r.get("ecc", || d.total_ecc_errors(kind, counter)) {
                    ecc.push((kind_label, counter_label, n));
                }
            }
        }
        let mut retired = Vec::new();
        for (cause, label) in [
            (
                RetirementCause::MultipleSingleBitEccErrors,
                "multiple_single_bit_ecc",
            ),
            (RetirementCause::DoubleBitEccError, "double_bit_ecc"),
        ] {
            if let Some(pages) = r.get("retired_pages", || d.retired_pages(cause)) {
                retired.push((label, pages.len()));
            }
        }
        let procs = r.get("compute_processes", || d.running_compute_processes());
        if r.lost {
            return r;
        }
        // Their memory, summed: only where NVML gives it for every process; a process it
        // cannot see into (NVML_VALUE_NOT_AVAILABLE) leaves the sum unknown, not smaller.
        let procs_memory = procs.as_ref().and_then(|p| {
            let used: Option<Vec<f64>> = p
                .iter()
                .map(|p| match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b as f64),
                    UsedGpuMemory::Unavailable => None,
                })
                .collect();
            r.mark("compute_processes_memory", used.is_some());
            used.map(|u| u.iter().sum())
        });

        // Energy: NVML's counter where the GPU has one, else the integral of power. Mean
        // power: the energy over the window, (E_end - E_start) / (t_end - t_start); the
        // current power where no window has started yet (a GPU that just appeared).
        let integrated_mean = power_w.and_then(|_| {
            let e = mem.energy_joules;
            let (t0, e0) = mem.integrated_from.replace((power_at, e))?;
            rate(e - e0, power_at.duration_since(t0))
        });
        let (energy, source, mean_power) = match (nvml_energy_j, power_w) {
            (Some(e), _) => {
                let mean = mem
                    .nvml_from
                    .replace((energy_at, e))
                    .and_then(|(t, e0)| rate(e - e0, energy_at.duration_since(t)))
                    .or(power_w);
                (Some(e), "nvml", mean)
            }
            (None, Some(p)) => (
                Some(mem.energy_joules),
                "integrated",
                integrated_mean.or(Some(p)),
            ),
            (None, None) => (None, "", None),
        };

        let ratio = |v: f64| (v / 100.0).clamp(0.0, 1.0);
        m.gauge(
            "labnode_gpu_info",
            "The GPU's identity; always 1.",
            Unit::Info,
        )
        .push(
            &[
                ("gpu", &gpu),
                ("uuid", &uuid),
                ("name", &name),
                ("pci_bus_id", &bus),
                ("persistence_mode", persistence),
                ("driver_version", versions.0),
                ("cuda_version", versions.1),
            ],
            1.0,
        );
        // One value per row of GAUGES, in its order (the type checks the count).
        let values: [Option<f64>; GAUGES.len()] = [
            util.map(ratio),
            mem_util.map(ratio),
            memory.as_ref().map(|mi| mi.used as f64),
            memory.as_ref().map(|mi| mi.total as f64),
            temp.map(f64::from),
            slowdown.map(f64::from),
            shutdown.map(f64::from),
            mean_power,
            limit_w,
            fan.map(|f| ratio(f64::from(f))),
            sm_clock.map(|c| f64::from(c) * 1e6),
            mem_clock.map(|c| f64::from(c) * 1e6),
            tx.map(|k| f64::from(k) * 1024.0),
            rx.map(|k| f64::from(k) * 1024.0),
            link_gen.map(f64::from),
            link_width.map(f64::from),
            pstate.map(|p| f64::from(p.as_c())),
            procs.as_ref().map(|p| p.len() as f64),
            procs_memory,
        ];
        for ((name, help, unit), v) in GAUGES.into_iter().zip(values) {
            if let Some(v) = v {
                m.gauge(name, help, unit).push(&labels, v);
            }
        }
        if let Some(e) = energy {
            m.counter(
                "labnode_gpu_energy_joules_total",
                "Energy used; source=nvml is the GPU's own counter, source=integrated the integral of sampled power.",
                Unit::Joules,
            )
            .push(&[("gpu", &gpu), ("uuid", &uuid), ("source", source)], e);
        }
        if let Some(t) = throttle {
            let f = m.gauge(
                "labnode_gpu_throttle_reason",
                "Active clock throttle reasons; one series per active reason, always 1.",
                Unit::Info,
            );
            for (bit, reason) in THROTTLE_REASONS {
                if t.bits() & bit != 0 {
                    f.push(&[("gpu", &gpu), ("uuid", &uuid), ("reason", reason)], 1.0);
                }
            }
        }
        if !ecc.is_empty() {
            let f = m.counter(
                "labnode_gpu_ecc_errors_total",
                "ECC memory errors; counter=volatile resets when the driver loads, aggregate persists.",
                Unit::Count,
            );
            for (kind, counter, n) in ecc {
                f.push(
                    &[
                        ("gpu", &gpu),
                        ("uuid", &uuid),
                        ("type", kind),
                        ("counter", counter),
                    ],
                    n as f64,
                );
            }
        }
        if !retired.is_empty() {
            let f = m.gauge(
                "labnode_gpu_retired_pages",
                "Device memory pages retired, by cause.",
                Unit::Count,
            );
            for (cause, n) in retired {
                f.push(
                    &[("gpu", &gpu), ("uuid", &uuid), ("cause", cause)],
                    n as f64,
                );
            }
        }
        r
    }
}

/// The per-GPU gauges that are absent where NVML has no value: name, help and unit, in
/// the order of the values `collect_device` gives them.
const GAUGES: [(&str, &str, Unit); 19] = [
    (
        "labnode_gpu_utilization_ratio",
        "Share of time a kernel ran on the GPU, mean over the window.",
        Unit::Ratio,
    ),
    (
        "labnode_gpu_memory_utilization_ratio",
        "Share of time device memory was read or written, mean over the window.",
        Unit::Ratio,
    ),
    (
        "labnode_gpu_memory_used_bytes",
        "Device memory in use.",
        Unit::Bytes,
    ),
    (
        "labnode_gpu_memory_total_bytes",
        "Device memory installed.",
        Unit::Bytes,
    ),
    (
        "labnode_gpu_temperature_celsius",
        "GPU core temperature.",
        Unit::Celsius,
    ),
    (
        "labnode_gpu_slowdown_temperature_celsius",
        "Temperature at which the GPU slows itself down.",
        Unit::Celsius,
    ),
    (
        "labnode_gpu_shutdown_temperature_celsius",
        "Temperature at which the GPU shuts down.",
        Unit::Celsius,
    ),
    (
        "labnode_gpu_power_watts",
        "Power draw, mean over the window.",
        Unit::Watts,
    ),
    (
        "labnode_gpu_power_limit_watts",
        "Enforced power limit.",
        Unit::Watts,
    ),
    (
        "labnode_gpu_fan_speed_ratio",
        "Fan speed as a share of its maximum.",
        Unit::Ratio,
    ),
    (
        "labnode_gpu_sm_clock_hertz",
        "Streaming multiprocessor clock.",
        Unit::Hertz,
    ),
    (
        "labnode_gpu_memory_clock_hertz",
        "Memory clock.",
        Unit::Hertz,
    ),
    (
        "labnode_gpu_pcie_tx_bytes_per_second",
        "PCIe transmit throughput.",
        Unit::BytesPerSecond,
    ),
    (
        "labnode_gpu_pcie_rx_bytes_per_second",
        "PCIe receive throughput.",
        Unit::BytesPerSecond,
    ),
    (
        "labnode_gpu_pcie_link_generation",
        "Current PCIe link generation.",
        Unit::Count,
    ),
    (
        "labnode_gpu_pcie_link_width",
        "Current PCIe link width (lanes).",
        Unit::Count,
    ),
    (
        "labnode_gpu_performance_state",
        "Performance state: 0 is the highest, 15 the lowest.",
        Unit::Count,
    ),
    (
        "labnode_gpu_compute_processes",
        "Processes with a compute context on the GPU.",
        Unit::Count,
    ),
    (
        "labnode_gpu_compute_processes_memory_bytes",
        "Device memory used by compute processes, summed; absent when NVML cannot give any one process's usage.",
        Unit::Bytes,
    ),
];

fn sample_value(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => f64::from(x),
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

fn rate(delta: f64, over: Duration) -> Option<f64> {
    let s = over.as_secs_f64();
    (s > 0.0 && delta >= 0.0).then(|| delta / s)
}

/// Adds the trapezoid between the last power reading and this one, taken at `at`, to the
/// energy total.
pub(super) fn integrate(mem: &mut GpuMemory, watts: f64, at: Instant) {
    if let Some((t, p)) = mem.last_power {
        mem.energy_joules += (p + watts) / 2.0 * at.duration_since(t).as_secs_f64();
    }
    mem.last_power = Some((at, watts));
}

/// NVML's samples newer than `since` (all it keeps with `None`); none when nothing is
/// newer (NVML's NOT_FOUND), so the caller falls back to the current rates.
fn new_samples(
    d: &Device<'_>,
    kind: Sampling,
    since: Option<u64>,
) -> Result<Vec<nvml_wrapper::struct_wrappers::device::Sample>, NvmlError> {
    match d.samples(kind, since) {
        Err(NvmlError::NotFound) => Ok(Vec::new()),
        other => other,
    }
}

/// Microseconds since the Unix epoch: the clock of NVML's sample timestamps.
pub(super) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_integration() {
        let mut m = GpuMemory {
            last_power: Some((Instant::now() - Duration::from_secs(2), 10.0)),
            ..GpuMemory::default()
        };
        integrate(&mut m, 30.0, Instant::now());
        assert!((m.energy_joules - 40.0).abs() < 0.1, "{}", m.energy_joules);
    }

    #[test]
    fn means_and_rates() {
        assert_eq!(mean([1.0, 2.0, 3.0].into_iter()), Some(2.0));
        assert_eq!(mean(std::iter::empty()), None);
        assert_eq!(rate(10.0, Duration::from_secs(2)), Some(5.0));
        assert_eq!(rate(-1.0, Duration::from_secs(2)), None);
        assert_eq!(rate(1.0, Duration::ZERO), None);
    }
}
