//! The `gpu` collector: NVML in-process through nvml-wrapper, loaded at run time, sampled
//! in the background.
//!
//! Fields a GPU does not support are absent (never a sentinel or a zero) and
//! `labnode_gpu_field_supported` says which; a GPU that falls off the bus is reported lost
//! while the others keep being collected; NVML is re-initialised with backoff when it cannot
//! be loaded or a GPU was lost (a driver reload). Snapshot means cover the sampling window.
//!
//! [`GpuCollector`] implements `labnode_core::Collector`; [`Config`] is its `collectors.gpu`
//! section; [`GpuError`] says why a run failed. Used by the `labnode` binary's registry and
//! by the rollback crate's `nvml` gate. The tests load a simulated NVML
//! (`tests/fake-nvml`) at the C boundary; everything above it is this code.

mod device;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use labnode_core::config::{Period, SectionError};
use labnode_core::hub::fmt_duration;
use labnode_core::{CollectError, Metrics, Polled, Timing, Unit};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use crate::device::{integrate, unix_micros};

/// Where NVML is looked for when no library is configured: the loader's search path
/// first, then the NixOS driver location.
pub const DEFAULT_LIBRARIES: [&str; 2] = [
    "libnvidia-ml.so.1",
    "/run/opengl-driver/lib/libnvidia-ml.so.1",
];

labnode_core::collector_config! {
    /// Configuration of the `gpu` collector (the `collectors.gpu` section): sampled every 1s by
    /// default, each sampling run within 1s.
    pub struct Config {
        defaults: interval Duration::from_secs(1), deadline Duration::from_secs(1);
        /// NVML library to load instead of the default search.
        pub library: Option<PathBuf>,
        /// Window the first run samples over for its means (default 500ms); later runs
        /// cover the time since the previous run.
        pub window: Option<Period<50, 60_000>>,
    }
    impl Schedule {
        /// The first run samples for the window, inside its deadline.
        fn check_relations(&self) -> Result<(), SectionError> {
            let window = self.window.map_or(Duration::from_millis(500), |w| w.get());
            if window >= self.deadline() {
                return Err(SectionError {
                    key: if self.window.is_some() {
                        "window"
                    } else {
                        "deadline"
                    },
                    message: format!(
                        "the first run samples for the window ({window:?}), which must be shorter than the deadline ({:?})",
                        self.deadline()
                    ),
                });
            }
            Ok(())
        }
    }
}

/// Why the collector could not sample.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No NVML library could be loaded or initialised: returned by the failed attempt
    /// and, unchanged, by every run until the next one (so the reason stays the same
    /// while the failure does, and is logged once).
    #[error("cannot initialise NVML: {tried}")]
    Init {
        /// Each library tried and why it failed.
        tried: String,
    },
    /// NVML answered, but not to the device count.
    #[error("NVML device count: {0}")]
    Count(NvmlError),
}

/// Throttle reason bits (NVML `nvmlClocksThrottleReason*`) and their label values.
pub const THROTTLE_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// What the collector remembers about one GPU between runs.
#[derive(Debug, Default)]
struct GpuMemory {
    uuid: String,
    /// Integral of sampled power since the agent started.
    energy_joules: f64,
    last_power: Option<(Instant, f64)>,
    /// Where the mean power's window starts: (when, integrated energy then).
    integrated_from: Option<(Instant, f64)>,
    /// Where the mean power's window starts: (when, NVML's energy counter then).
    nvml_from: Option<(Instant, f64)>,
    last_sample_ts: Option<u64>,
    last_mem_sample_ts: Option<u64>,
    warned: Vec<String>,
}

#[derive(Debug)]
struct State {
    nvml: Option<Nvml>,
    next_init: Instant,
    backoff: Duration,
    last_error: String,
    gpus: HashMap<u32, GpuMemory>,
    lost: BTreeMap<u32, String>,
    /// Where the current window starts: the previous run's reading, or the first run's
    /// sampling start; the wall clock in microseconds (NVML sample timestamps) beside it.
    window_from: Option<(Instant, u64)>,
    reinit_at: Option<Instant>,
    /// Why NVML is initialised again at the next attempt, for the log.
    reinit_why: Option<&'static str>,
}

/// The `gpu` collector.
#[derive(Debug)]
pub struct GpuCollector {
    libraries: Vec<PathBuf>,
    timing: Timing,
    window: Duration,
    calls: AtomicU64,
    state: Mutex<State>,
}

impl GpuCollector {
    /// A collector with the given configuration.
    pub fn new(cfg: &Config) -> Self {
        let libraries = match &cfg.library {
            Some(p) => vec![p.clone()],
            None => DEFAULT_LIBRARIES.iter().map(PathBuf::from).collect(),
        };
        GpuCollector {
            libraries,
            timing: Timing::of(cfg),
            window: cfg.window.map_or(Duration::from_millis(500), Period::get),
            calls: AtomicU64::new(0),
            state: Mutex::new(State {
                nvml: None,
                next_init: Instant::now(),
                backoff: Duration::from_secs(1),
                last_error: String::new(),
                gpus: HashMap::new(),
                lost: BTreeMap::new(),
                window_from: None,
                reinit_at: None,
                reinit_why: None,
            }),
        }
    }

    fn init(&self, st: &mut State) -> Result<(), GpuError> {
        let now = Instant::now();
        if now < st.next_init {
            return Err(GpuError::Init {
                tried: st.last_error.clone(),
            });
        }
        let mut tried = Vec::new();
        for lib in &self.libraries {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match Nvml::builder().lib_path(OsStr::new(lib)).init() {
                Ok(n) => {
                    if let Some(why) = st.reinit_why.take() {
                        tracing::info!("NVML re-initialised from {} after {why}", lib.display());
                    } else if !st.last_error.is_empty() {
                        tracing::info!("NVML initialised from {}", lib.display());
                    }
                    st.nvml = Some(n);
                    st.backoff = Duration::from_secs(1);
                    st.last_error.clear();
                    return Ok(());
                }
                Err(e) => tried.push(format!("{}: {e}", lib.display())),
            }
        }
        let retry_in = st.backoff;
        st.next_init = now + retry_in;
        st.backoff = (st.backoff * 2).min(Duration::from_secs(60));
        st.last_error = tried.join("; ");
        tracing::debug!(
            "next NVML initialisation attempt in {}",
            fmt_duration(retry_in)
        );
        Err(GpuError::Init {
            tried: st.last_error.clone(),
        })
    }

    /// Reads the power of every GPU `steps` times over the window, integrating it into
    /// energy, and marks where the window starts (power, NVML's energy counter, the
    /// wall clock NVML's utilization samples are newer than); used by the first run.
    fn sample_window(&self, nvml: &Nvml, st: &mut State, count: u32) {
        let steps = (self.window.as_millis() / 100).clamp(1, 600) as u32;
        let step = self.window / steps;
        st.window_from = Some((Instant::now(), unix_micros()));
        for i in 0..=steps {
            for idx in 0..count {
                self.calls.fetch_add(2, Ordering::Relaxed);
                let Ok(d) = nvml.device_by_index(idx) else {
                    continue;
                };
                let mem = st.gpus.entry(idx).or_default();
                if let Ok(mw) = d.power_usage() {
                    let at = Instant::now();
                    integrate(mem, f64::from(mw) / 1000.0, at);
                    if i == 0 {
                        mem.integrated_from = Some((at, mem.energy_joules));
                    }
                }
                if i == 0 {
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mj) = d.total_energy_consumption() {
                        mem.nvml_from = Some((Instant::now(), mj as f64 / 1000.0));
                    }
                }
            }
            if i < steps {
                std::thread::sleep(step);
            }
        }
    }
}

impl Polled for GpuCollector {
    const NAME: &'static str = "gpu";
    fn timing(&self) -> Timing {
        self.timing
    }
    fn poll(&self) -> Result<Metrics, CollectError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        if st.reinit_at.is_some_and(|t| Instant::now() >= t) {
            // A GPU was lost: start NVML afresh, as after a driver reload.
            st.nvml = None;
            st.reinit_at = None;
            st.reinit_why = Some("a lost GPU");
        }
        if st.nvml.is_none() {
            self.init(st)?;
        }
        let Some(nvml) = st.nvml.take() else {
            return Err("NVML is not initialised".into());
        };
        match self.collect_with(&nvml, st) {
            Ok((m, lost_any)) => {
                if !lost_any {
                    st.backoff = Duration::from_secs(1);
                } else if st.reinit_at.is_none() {
                    st.reinit_at = Some(Instant::now() + st.backoff);
                    st.backoff = (st.backoff * 2).min(Duration::from_secs(300));
                }
                st.nvml = Some(nvml);
                Ok(m)
            }
            // NVML itself failed (driver unloaded, library mismatch): drop it; the next
            // run initialises it again.
            Err(e) => Err(e),
        }
    }
}

impl GpuCollector {
    fn collect_with(&self, nvml: &Nvml, st: &mut State) -> Result<(Metrics, bool), CollectError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let count = nvml.device_count().map_err(GpuError::Count)?;
        if st.window_from.is_none() {
            self.sample_window(nvml, st, count);
        }
        // This run's window ends here; the next one starts here.
        let now = (Instant::now(), unix_micros());
        let window = st
            .window_from
            .map_or(Duration::ZERO, |(t, _)| now.0.duration_since(t));

        let mut m = Metrics::new();
        self.calls.fetch_add(2, Ordering::Relaxed);
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let cuda = nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default();
        m.gauge(
            "labnode_gpu_driver_info",
            "NVIDIA driver and CUDA versions; always 1.",
            Unit::Info,
        )
        .push(&[("driver_version", &driver), ("cuda_version", &cuda)], 1.0);
        m.gauge("labnode_gpu_devices", "GPUs NVML reports.", Unit::Count)
            .push(&[], f64::from(count));
        m.gauge(
            "labnode_gpu_window_seconds",
            "Length of the window the means (utilization, power) cover.",
            Unit::Seconds,
        )
        .push(&[], window.as_secs_f64());

        let mut supported = Vec::new();
        let mut reinit = false;
        for idx in 0..count {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let device = match nvml.device_by_index(idx) {
                Ok(d) => d,
                Err(NvmlError::GpuLost) => {
                    self.mark_lost(st, idx);
                    reinit = true;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(gpu = idx, "cannot get a handle: {e}");
                    continue;
                }
            };
            let r = self.collect_device(&device, idx, (&driver, &cuda), st, &mut m);
            if r.lost {
                self.mark_lost(st, idx);
                reinit = true;
                continue;
            }
            st.lost.remove(&idx);
            let mem = st.gpus.entry(idx).or_default();
            for w in r.warnings {
                if !mem.warned.contains(&w) {
                    tracing::warn!(gpu = idx, "NVML call failed: {w}");
                    mem.warned.push(w);
                }
            }
            supported.push((idx, mem.uuid.clone(), r.supported));
        }
        let f = m.gauge(
            "labnode_gpu_field_supported",
            "Whether the GPU supports a field (1) or not (0); unsupported fields are absent.",
            Unit::Info,
        );
        for (idx, uuid, fields) in &supported {
            let gpu = idx.to_string();
            for (field, ok) in fields {
                f.push(
                    &[("gpu", &gpu), ("uuid", uuid), ("field", field)],
                    if *ok { 1.0 } else { 0.0 },
                );
            }
        }
        let f = m.gauge(
            "labnode_gpu_lost",
            "A GPU that fell off the bus (NVML GPU_IS_LOST); its other series are dropped.",
            Unit::Info,
        );
        for (idx, uuid) in &st.lost {
            f.push(&[("gpu", &idx.to_string()), ("uuid", uuid)], 1.0);
        }
        st.window_from = Some(now);
        m.counter(
            "labnode_gpu_nvml_calls_total",
            "NVML calls the collector made since the agent started.",
            Unit::Count,
        )
        .push(&[], self.calls.load(Ordering::Relaxed) as f64);
        Ok((m, reinit))
    }

    fn mark_lost(&self, st: &mut State, idx: u32) {
        let uuid = st
            .gpus
            .get(&idx)
            .map(|g| g.uuid.clone())
            .unwrap_or_default();
        if st.lost.insert(idx, uuid.clone()).is_none() {
            tracing::error!(gpu = idx, %uuid, "GPU fell off the bus (GPU_IS_LOST); NVML will be re-initialised");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labnode_core::Collector;

    #[test]
    fn missing_library_is_an_error_naming_it_and_backs_off() {
        let c = GpuCollector::new(&Config {
            library: Some("/nonexistent/libnvidia-ml.so.1".into()),
            ..Config::default()
        });
        let e = c.collect().expect_err("no NVML here").to_string();
        assert!(e.contains("/nonexistent/libnvidia-ml.so.1"), "{e}");
        let calls = c.calls.load(Ordering::Relaxed);
        // Within the backoff: no new attempt, and the very same reason, so the hub logs
        // the failure once.
        let again = c.collect().expect_err("still none").to_string();
        assert_eq!(again, e);
        assert_eq!(c.calls.load(Ordering::Relaxed), calls);
        // The next attempt fails the same way: still the same reason.
        c.state.lock().expect("state").next_init = Instant::now();
        let retried = c.collect().expect_err("still none").to_string();
        assert_eq!(retried, e);
        assert_eq!(c.calls.load(Ordering::Relaxed), calls + 1);
    }
}
