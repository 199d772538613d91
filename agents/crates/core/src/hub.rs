//! The hub: runs every collector in the background on its own interval, keeps the last
//! good result of each, and renders `/metrics` from those results without waiting on any
//! collector.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};

use crate::collector::Collector;
use crate::metrics::{Metrics, Unit};
use crate::process;

/// Why a run failed; the value of the `reason` label on the failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// `collect` returned an error.
    Error,
    /// `collect` panicked.
    Panic,
    /// `collect` ran past its deadline (or a previous run is still stuck).
    Deadline,
    /// `collect` returned metrics that break the exposition rules.
    Invalid,
}

impl Failure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Panic => "panic",
            Failure::Deadline => "deadline",
            Failure::Invalid => "invalid",
        }
    }
    const ALL: [Failure; 4] = [
        Failure::Error,
        Failure::Panic,
        Failure::Deadline,
        Failure::Invalid,
    ];
}

/// The outcome of one collection, as kept by the hub and written into snapshots.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The collector's name.
    pub collector: String,
    /// The metrics, when the run succeeded.
    pub metrics: Option<Metrics>,
    /// How long the run took (up to the deadline when it overran).
    pub duration: Duration,
    /// Why it failed, when it did.
    pub failure: Option<(Failure, String)>,
}

#[derive(Debug, Default)]
struct Slot {
    interval: Option<f64>,
    ran: bool,
    up: bool,
    duration: f64,
    last_success: Option<f64>,
    failures: HashMap<Failure, u64>,
    reason: Option<String>,
    /// The last good result, already encoded.
    text: Arc<str>,
    families: Vec<String>,
}

/// Shared state between the collector tasks and the HTTP server.
#[derive(Debug, Default)]
pub struct Hub {
    slots: Mutex<Vec<(String, Slot)>>,
    /// Which collector owns which family name, so two collectors cannot export one family.
    owners: Mutex<HashMap<String, String>>,
}

/// Families the hub itself exports; collectors may not use these names.
const RESERVED_PREFIXES: [&str; 3] = ["labnode_collector_", "labnode_build_", "process_"];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the plain data inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

use crate::sys::unix_now;

impl Hub {
    /// A hub for the given collector names (in that order).
    pub fn new<I: IntoIterator<Item = String>>(names: I) -> Arc<Self> {
        let slots = names.into_iter().map(|n| (n, Slot::default())).collect();
        Arc::new(Hub {
            slots: Mutex::new(slots),
            owners: Mutex::new(HashMap::new()),
        })
    }

    /// A hub for these collectors, knowing their intervals (exported so staleness alerts
    /// can scale with each collector's own pace).
    pub fn for_collectors(collectors: &[Arc<dyn Collector>]) -> Arc<Self> {
        let slots = collectors
            .iter()
            .map(|c| {
                let slot = Slot {
                    interval: Some(c.interval().as_secs_f64()),
                    ..Slot::default()
                };
                (c.name().to_owned(), slot)
            })
            .collect();
        Arc::new(Hub {
            slots: Mutex::new(slots),
            owners: Mutex::new(HashMap::new()),
        })
    }

    /// Records a run's outcome: publishes its metrics or marks the collector down.
    pub fn record(&self, run: &RunResult) {
        let mut failure = run.failure.clone();
        let mut text = String::new();
        let mut families = Vec::new();
        if let (None, Some(m)) = (&failure, &run.metrics) {
            match self.check_ownership(&run.collector, m) {
                Ok(()) => {
                    m.encode_text(&mut text);
                    families = m.families().iter().map(|f| f.name.clone()).collect();
                }
                Err(why) => failure = Some((Failure::Invalid, why)),
            }
        }
        let mut slots = lock(&self.slots);
        let Some((_, slot)) = slots.iter_mut().find(|(n, _)| *n == run.collector) else {
            return;
        };
        slot.ran = true;
        slot.duration = run.duration.as_secs_f64();
        match failure {
            None => {
                if !slot.up && slot.reason.is_some() {
                    tracing::info!(collector = %run.collector, "collector recovered");
                }
                slot.up = true;
                slot.reason = None;
                slot.last_success = Some(unix_now());
                slot.text = text.into();
                slot.families = families;
            }
            Some((kind, why)) => {
                if slot.reason.as_deref() != Some(why.as_str()) {
                    tracing::warn!(collector = %run.collector, reason = kind.as_str(), "collector down: {why}");
                }
                slot.up = false;
                slot.reason = Some(why);
                *slot.failures.entry(kind).or_default() += 1;
                slot.text = Arc::from("");
            }
        }
    }

    fn check_ownership(&self, collector: &str, m: &Metrics) -> Result<(), String> {
        if let Err(e) = m.validate() {
            return Err(e.to_string());
        }
        let mut owners = lock(&self.owners);
        for f in m.families() {
            if RESERVED_PREFIXES.iter().any(|p| f.name.starts_with(p)) {
                return Err(format!(
                    "metric {} uses a name reserved for labnode itself",
                    f.name
                ));
            }
            if let Some(owner) = owners.get(&f.name) {
                if owner != collector {
                    return Err(format!(
                        "metric {} is already exported by collector {owner}",
                        f.name
                    ));
                }
            }
        }
        for f in m.families() {
            owners.insert(f.name.clone(), collector.to_owned());
        }
        Ok(())
    }

    /// The current state of each collector: name, up (`None` until its first run ends),
    /// and the reason when down.
    pub fn status(&self) -> Vec<(String, Option<bool>, Option<String>)> {
        lock(&self.slots)
            .iter()
            .map(|(n, s)| (n.clone(), s.ran.then_some(s.up), s.reason.clone()))
            .collect()
    }

    /// Renders the whole exposition: labnode's own families, then each collector's last
    /// good result. Never waits on a collector.
    pub fn render(&self) -> String {
        let mut own = Metrics::new();
        let texts: Vec<Arc<str>>;
        {
            let slots = lock(&self.slots);
            let up = own.gauge(
                "labnode_collector_up",
                "Whether the collector's last run succeeded (1) or failed (0).",
                Unit::Info,
            );
            // Until its first run ends a collector's state is unknown, so it has no series.
            for (n, s) in slots.iter().filter(|(_, s)| s.ran) {
                up.push(&[("collector", n)], if s.up { 1.0 } else { 0.0 });
            }
            let d = own.gauge(
                "labnode_collector_duration_seconds",
                "How long the collector's last run took.",
                Unit::Seconds,
            );
            for (n, s) in slots.iter().filter(|(_, s)| s.ran) {
                d.push(&[("collector", n)], s.duration);
            }
            let ts = own.gauge(
                "labnode_collector_last_success_timestamp_seconds",
                "When the collector last succeeded, in seconds since the epoch.",
                Unit::Timestamp,
            );
            for (n, s) in slots.iter() {
                if let Some(t) = s.last_success {
                    ts.push(&[("collector", n)], t);
                }
            }
            let iv = own.gauge(
                "labnode_collector_interval_seconds",
                "How often the collector is meant to run.",
                Unit::Seconds,
            );
            for (n, s) in slots.iter() {
                if let Some(i) = s.interval {
                    iv.push(&[("collector", n)], i);
                }
            }
            let fails = own.counter(
                "labnode_collector_failures_total",
                "Failed runs of the collector since the agent started, by reason.",
                Unit::Count,
            );
            for (n, s) in slots.iter() {
                for kind in Failure::ALL {
                    let v = s.failures.get(&kind).copied().unwrap_or(0);
                    fails.push(&[("collector", n), ("reason", kind.as_str())], v as f64);
                }
            }
            texts = slots.iter().map(|(_, s)| s.text.clone()).collect();
        }
        own.gauge(
            "labnode_build_info",
            "The labnode version that serves these metrics.",
            Unit::Info,
        )
        .push(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        process::self_metrics(&mut own);
        own.prune_empty();
        let mut out = String::with_capacity(8192);
        own.encode_text(&mut out);
        for t in texts {
            out.push_str(&t);
        }
        out
    }
}

/// Runs `collector` once on a blocking thread, enforcing its deadline.
///
/// Returns the result and, when the deadline passed, the handle of the run that is still
/// going so the caller does not start another one beside it.
pub async fn run_once(collector: Arc<dyn Collector>) -> (RunResult, Option<JoinHandle<RunResult>>) {
    let name = collector.name().to_owned();
    let deadline = collector.deadline();
    let start = Instant::now();
    let c = collector.clone();
    let mut handle = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = c.collect();
        let duration = started.elapsed();
        match out {
            Ok(mut m) => {
                m.prune_empty();
                RunResult {
                    collector: c.name().to_owned(),
                    metrics: Some(m),
                    duration,
                    failure: None,
                }
            }
            Err(e) => RunResult {
                collector: c.name().to_owned(),
                metrics: None,
                duration,
                failure: Some((Failure::Error, error_chain(e.as_ref()))),
            },
        }
    });
    match timeout(deadline, &mut handle).await {
        Ok(Ok(run)) => (run, None),
        Ok(Err(join)) => {
            let why = if join.is_panic() {
                let p = join.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                (Failure::Panic, format!("panicked: {msg}"))
            } else {
                (Failure::Error, "collection task was cancelled".into())
            };
            let run = RunResult {
                collector: name,
                metrics: None,
                duration: start.elapsed(),
                failure: Some(why),
            };
            (run, None)
        }
        Err(_) => {
            let run = RunResult {
                collector: name,
                metrics: None,
                duration: start.elapsed(),
                failure: Some((
                    Failure::Deadline,
                    format!("run exceeded its deadline of {}", fmt_duration(deadline)),
                )),
            };
            (run, Some(handle))
        }
    }
}

/// Runs one collector forever on its interval, recording every outcome in `hub`.
pub async fn run_forever(collector: Arc<dyn Collector>, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(collector.interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stuck: Option<(JoinHandle<RunResult>, Instant)> = None;
    loop {
        tick.tick().await;
        if let Some((h, since)) = &stuck {
            if !h.is_finished() {
                hub.record(&RunResult {
                    collector: collector.name().to_owned(),
                    metrics: None,
                    duration: since.elapsed(),
                    failure: Some((
                        Failure::Deadline,
                        format!(
                            "a run started {} ago has not returned; not starting another",
                            fmt_duration(since.elapsed())
                        ),
                    )),
                });
                continue;
            }
            stuck = None;
        }
        let started = Instant::now();
        let (run, still_running) = run_once(collector.clone()).await;
        hub.record(&run);
        if let Some(h) = still_running {
            stuck = Some((h, started));
        }
    }
}

/// Starts a background task per collector on the current runtime.
pub fn spawn_all(collectors: &[Arc<dyn Collector>], hub: &Arc<Hub>) -> Vec<JoinHandle<()>> {
    collectors
        .iter()
        .map(|c| tokio::spawn(run_forever(c.clone(), hub.clone())))
        .collect()
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// A duration the way a person writes it, to the millisecond: `250ms`, `5s`, `1.523s`,
/// `1m 30s`. labnode's one duration formatter for messages and progress.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    } else {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::CollectError;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Fake {
        name: &'static str,
        mode: &'static str,
        runs: AtomicU32,
    }

    impl Fake {
        fn boxed(name: &'static str, mode: &'static str) -> Arc<dyn Collector> {
            Arc::new(Fake {
                name,
                mode,
                runs: AtomicU32::new(0),
            })
        }
    }

    impl Collector for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn interval(&self) -> Duration {
            Duration::from_millis(50)
        }
        fn deadline(&self) -> Duration {
            Duration::from_millis(100)
        }
        fn collect(&self) -> Result<Metrics, CollectError> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            match self.mode {
                "error" => Err("device vanished".into()),
                "panic" => panic!("boom {n}"),
                "hang" => {
                    // Long against the 100 ms deadline, short enough for the test runtime to end.
                    std::thread::sleep(Duration::from_millis(1500));
                    Ok(Metrics::new())
                }
                "invalid" => {
                    let mut m = Metrics::new();
                    m.counter("labnode_invalid_count", "no suffix", Unit::Count)
                        .push(&[], 1.0);
                    Ok(m)
                }
                "steal" => {
                    let mut m = Metrics::new();
                    m.gauge("labnode_good_value", "taken", Unit::Count)
                        .push(&[], 1.0);
                    Ok(m)
                }
                _ => {
                    let mut m = Metrics::new();
                    m.gauge("labnode_good_value", "A value.", Unit::Count)
                        .push(&[], f64::from(n));
                    Ok(m)
                }
            }
        }
    }

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_collectors_are_down_and_the_good_one_keeps_serving() {
        let collectors = vec![
            Fake::boxed("good", "ok"),
            Fake::boxed("err", "error"),
            Fake::boxed("pan", "panic"),
            Fake::boxed("hang", "hang"),
            Fake::boxed("bad", "invalid"),
        ];
        let hub = Hub::for_collectors(&collectors);
        let tasks = spawn_all(&collectors, &hub);
        tokio::time::sleep(Duration::from_millis(600)).await;

        // A scrape reads the last results: it never waits for the collector that hangs for
        // 1.5 s (the bound is far below that and far above a loaded machine's render).
        let started = Instant::now();
        let text = hub.render();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "render waited {:?}",
            started.elapsed()
        );
        for t in &tasks {
            t.abort();
        }

        assert_eq!(
            line_value(&text, r#"labnode_collector_up{collector="good"}"#),
            Some(1.0)
        );
        for c in ["err", "pan", "hang", "bad"] {
            let up = format!(r#"labnode_collector_up{{collector="{c}"}}"#);
            assert_eq!(
                line_value(&text, &up),
                Some(0.0),
                "{c} should be down:\n{text}"
            );
        }
        // The good collector ran several times and its latest value is served.
        assert!(
            line_value(&text, "labnode_good_value").is_some_and(|v| v >= 3.0),
            "{text}"
        );
        assert!(!text.contains("labnode_invalid_count"));
        assert!(
            text.contains(r#"labnode_collector_failures_total{collector="pan",reason="panic"}"#)
        );
        let status = hub.status();
        let reason = |n: &str| {
            status
                .iter()
                .find(|(c, _, _)| c == n)
                .and_then(|(_, _, r)| r.clone())
                .unwrap_or_default()
        };
        assert!(reason("err").contains("device vanished"));
        assert!(reason("pan").contains("boom"));
        assert!(reason("hang").contains("deadline") || reason("hang").contains("not returned"));
        assert!(reason("bad").contains("_total"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_collector_runs_once_until_it_returns() {
        let hang = Arc::new(Fake {
            name: "hang",
            mode: "hang",
            runs: AtomicU32::new(0),
        });
        let dynamic: Arc<dyn Collector> = hang.clone();
        let hub = Hub::new(["hang".to_owned()]);
        let task = tokio::spawn(run_forever(dynamic, hub.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        task.abort();
        assert_eq!(hang.runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_family_cannot_be_exported_by_two_collectors() {
        let hub = Hub::new(["a".to_owned(), "b".to_owned()]);
        let mut m = Metrics::new();
        m.gauge("labnode_shared", "x", Unit::Count).push(&[], 1.0);
        let run = |c: &str| RunResult {
            collector: c.into(),
            metrics: Some(m.clone()),
            duration: Duration::ZERO,
            failure: None,
        };
        hub.record(&run("a"));
        hub.record(&run("b"));
        let status = hub.status();
        assert_eq!(status[0].1, Some(true));
        assert_eq!(status[1].1, Some(false));
        assert!(
            status[1]
                .2
                .as_deref()
                .unwrap_or("")
                .contains("already exported")
        );
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(1523)), "1.523s");
        assert_eq!(fmt_duration(Duration::from_millis(90_020)), "90.02s");
    }
}
