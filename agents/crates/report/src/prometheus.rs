//! Reading a side from Prometheus's HTTP API: every series the catalog reads, over a time
//! range, as observations at each step, so the same rows evaluate the same way as on
//! snapshots.
//!
//! A collector exports the newest drill or probe result as gauges, so the same result is
//! seen at every step until the next one. A record of the kind is put on the step where
//! that result first appears (its series changed), so a drill counts once.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::catalog;
use crate::input::{HostSummary, Interner, Name, Observation, Sample, Side, Source};
use labnode_core::snapshot::RecordKind;

/// A time range, seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Start.
    pub start: f64,
    /// End.
    pub end: f64,
}

/// What can go wrong talking to Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// A URL this client cannot use.
    #[error("--prometheus {url}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A range that cannot be read.
    #[error("`{text}` is not a time range T1..T2: {why}")]
    Range {
        /// The text.
        text: String,
        /// Why.
        why: String,
    },
    /// No connection.
    #[error("cannot reach Prometheus at {url}: {why}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// No answer in time.
    #[error("Prometheus at {url} did not answer within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// Prometheus refused the query.
    #[error("Prometheus at {url} answered {status}: {message}")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// An answer that is not the API's JSON.
    #[error("Prometheus at {url} answered something that is not its API's JSON: {why}")]
    Protocol {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// An answer larger than the client reads.
    #[error(
        "Prometheus at {url} answered more than {limit} bytes, the most labnode report reads: \
         narrow the range, take a longer --step or one --instance"
    )]
    TooLarge {
        /// The URL.
        url: String,
        /// The bound, in bytes.
        limit: u64,
    },
    /// No labnode series in the range.
    #[error("Prometheus has no series of the report's metrics in {range} (selector {selector})")]
    Empty {
        /// The range.
        range: String,
        /// The selector used.
        selector: String,
    },
}

fn rfc(t: f64) -> String {
    let st = UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Parses `T1..T2`; each time is RFC 3339, Unix seconds, `now` or `now-DURATION`.
pub fn parse_range(text: &str, now: SystemTime) -> Result<Range, PromError> {
    let err = |why: String| PromError::Range {
        text: text.to_owned(),
        why,
    };
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| err("no `..` between the two times".into()))?;
    let now_s = labnode_core::sys::unix_seconds(now);
    let time = |t: &str| -> Result<f64, PromError> {
        let t = t.trim();
        if t == "now" {
            return Ok(now_s);
        }
        if let Some(ago) = t.strip_prefix("now-") {
            let d = humantime::parse_duration(ago).map_err(|e| err(format!("`{t}`: {e}")))?;
            return Ok(now_s - d.as_secs_f64());
        }
        if let Ok(v) = t.parse::<f64>() {
            if v.is_finite() && v >= 0.0 {
                return Ok(v);
            }
        }
        humantime::parse_rfc3339_weak(t)
            .map(|st| {
                st.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            })
            .map_err(|_| {
                err(format!(
                    "`{t}` is not RFC 3339 (2026-11-24T14:00:00Z), Unix seconds, now or now-1h"
                ))
            })
    };
    let (start, end) = (time(a)?, time(b)?);
    if start >= end {
        return Err(err("the start is not before the end".into()));
    }
    Ok(Range { start, end })
}

/// A Prometheus HTTP API client for the report.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    timeout: Duration,
    instance: Option<String>,
    max_response: u64,
}

/// The most bytes one answer may hold: 11,000 steps of a few hundred series of the
/// catalog's metrics stay well below it; a misbehaving or hostile server cannot make the
/// report hold more.
pub const MAX_RESPONSE: u64 = 256 << 20;

impl Client {
    /// A client for `http://HOST[:PORT][/PREFIX]`; `instance` keeps only that node's series.
    pub fn new(url: &str, timeout: Duration, instance: Option<String>) -> Result<Self, PromError> {
        let bad = |why: &str| PromError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(bad(
                "https is not supported: reach Prometheus over WireGuard or an SSH tunnel (ssh -L 9090:127.0.0.1:9090 HOST) and use http://",
            ));
        } else {
            return Err(bad("expected http://HOST:PORT"));
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?;
                h.trim_start_matches('[').trim_end_matches(']')
            }
            _ => authority,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if let Some(i) = &instance {
            if i.contains(['"', '\\', '\n']) {
                return Err(bad(
                    "--instance must not contain quotes, backslashes or newlines",
                ));
            }
        }
        Ok(Client {
            url: url.trim_end_matches('/').to_owned(),
            timeout,
            instance,
            max_response: MAX_RESPONSE,
        })
    }

    /// The same client reading at most `bytes` of one answer.
    #[must_use]
    pub fn with_max_response(mut self, bytes: u64) -> Self {
        self.max_response = bytes;
        self
    }

    /// The selector for every metric the catalog reads.
    pub fn selector(&self) -> String {
        let names = catalog::metric_names().join("|");
        match &self.instance {
            Some(i) => format!("{{__name__=~\"{names}\",instance=\"{i}\"}}"),
            None => format!("{{__name__=~\"{names}\"}}"),
        }
    }

    /// Reads one side over `range`, one observation per `step` (default: range / 250, at
    /// least 1 s, and at most 11,000 points, Prometheus's limit).
    pub fn side(&self, range: Range, step: Option<Duration>) -> Result<Side, PromError> {
        let span = range.end - range.start;
        let step = step
            .map(|s| s.as_secs_f64())
            .unwrap_or((span / 250.0).max(1.0))
            .max(span / 11_000.0);
        let selector = self.selector();
        let json = self.post(
            "/api/v1/query_range",
            &[
                ("query", &selector),
                ("start", &fmt_time(range.start)),
                ("end", &fmt_time(range.end)),
                ("step", &fmt_time(step)),
            ],
        )?;
        let parsed: ApiResponse =
            serde_json::from_slice(&json).map_err(|e| PromError::Protocol {
                url: self.url.clone(),
                why: e.to_string(),
            })?;
        let result = match parsed {
            ApiResponse {
                status,
                data: Some(data),
                ..
            } if status == "success" => data.result,
            other => {
                return Err(PromError::Refused {
                    url: self.url.clone(),
                    status: 200,
                    message: other.error.unwrap_or_else(|| "no data".into()),
                });
            }
        };
        let source = format!(
            "{} {}..{} step {}",
            self.url,
            rfc(range.start),
            rfc(range.end),
            crate::format::duration(step)
        );
        let side = side_from_matrix(vec![source], result);
        if side.observations.is_empty() {
            return Err(PromError::Empty {
                range: format!("{}..{}", rfc(range.start), rfc(range.end)),
                selector,
            });
        }
        Ok(side)
    }

    /// POSTs the form to the API path, bounded by the client's timeout as a whole (the
    /// same ureq client the rollback gates use; no connection is kept).
    fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Vec<u8>, PromError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .timeout_global(Some(self.timeout))
            .build()
            .into();
        let failed = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => PromError::Timeout {
                url: self.url.clone(),
                after: self.timeout,
            },
            e => PromError::Connect {
                url: self.url.clone(),
                why: e.to_string(),
            },
        };
        let mut resp = agent
            .post(format!("{}{path}", self.url))
            .header(
                "User-Agent",
                concat!("labnode-report/", env!("CARGO_PKG_VERSION")),
            )
            .send_form(form.iter().copied())
            .map_err(failed)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(self.max_response)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => PromError::TooLarge {
                    url: self.url.clone(),
                    limit,
                },
                e => failed(e),
            })?;
        if status != 200 {
            let message = serde_json::from_slice::<ApiResponse>(&bytes)
                .ok()
                .and_then(|r| r.error)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(PromError::Refused {
                url: self.url.clone(),
                status,
                message,
            });
        }
        Ok(bytes)
    }
}

fn fmt_time(t: f64) -> String {
    format!("{t:.3}")
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(default)]
    result: Vec<ApiSeries>,
}

#[derive(Debug, Deserialize)]
struct ApiSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// The metric whose change marks a new result of each record kind.
const FINGERPRINTS: &[(RecordKind, &[&str])] = &[
    (
        RecordKind::RollbackDrill,
        &[
            "labnode_rollback_phase_seconds",
            "labnode_rollback_recovery_seconds",
        ],
    ),
    (
        RecordKind::SafeSwitch,
        &[
            "labnode_rollback_safe_switch_detect_seconds",
            "labnode_rollback_safe_switch_recover_seconds",
        ],
    ),
    (
        RecordKind::ZfsDrill,
        &[
            "labnode_zfs_drill_phase_seconds",
            "labnode_zfs_drill_recovery_seconds",
        ],
    ),
    (
        RecordKind::NetBench,
        &["labnode_net_probe_throughput_bytes_per_second"],
    ),
];

/// One series of a result: name, labels and the value's bits.
type Fingerprint = (Name, Vec<(Name, Name)>, u64);

fn side_from_matrix(sources: Vec<String>, result: Vec<ApiSeries>) -> Side {
    // Steps are exact multiples from the start, so a millisecond key lines series up.
    let mut at: BTreeMap<i64, Observation> = BTreeMap::new();
    let mut names = Interner::default();
    for series in result {
        let mut metric = None;
        let mut labels = Vec::with_capacity(series.metric.len());
        for (k, v) in series.metric {
            if k == "__name__" {
                metric = Some(names.get(&v));
            } else {
                labels.push((names.get(&k), names.get(&v)));
            }
        }
        let Some(metric) = metric else {
            continue;
        };
        for (t, v) in series.values {
            let Ok(value) = v.parse::<f64>() else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            at.entry((t * 1000.0).round() as i64)
                .or_insert_with(|| Observation::new(t))
                .samples
                .push(Sample {
                    metric: metric.clone(),
                    labels: labels.clone(),
                    value,
                });
        }
    }
    let mut observations: Vec<Observation> = at.into_values().collect();
    for o in &mut observations {
        o.index();
    }
    let mut host = HostSummary::default();
    for o in &mut observations {
        for s in &o.samples {
            match &*s.metric {
                "labnode_collector_up" if s.value == 0.0 => {
                    if let Some(c) = s.label("collector") {
                        o.down
                            .push((c.to_owned(), "labnode_collector_up was 0".to_owned()));
                    }
                }
                "labnode_system_os_info" => {
                    host.os.extend(s.label("pretty_name").map(str::to_owned))
                }
                "labnode_system_kernel_info" => {
                    host.kernels.extend(s.label("release").map(str::to_owned));
                }
                "labnode_system_nixos_generation" => host.nixos_generations.push(s.value as u64),
                "labnode_system_nixos_system_info" => host.flake_revisions.extend(
                    s.label("flake_revision")
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned),
                ),
                _ => {}
            }
            if let Some(i) = s.label("instance") {
                if s.metric.starts_with("labnode_") {
                    host.hosts.push(i.to_owned());
                }
            }
        }
        host.finish();
    }
    for (kind, metrics) in FINGERPRINTS {
        let mut last: Option<Vec<Fingerprint>> = None;
        for o in &mut observations {
            let mut fp: Vec<Fingerprint> = o
                .samples
                .iter()
                .filter(|s| metrics.contains(&&*s.metric))
                .map(|s| (s.metric.clone(), s.labels.clone(), s.value.to_bits()))
                .collect();
            if fp.is_empty() {
                continue;
            }
            fp.sort();
            if last.as_ref() != Some(&fp) {
                o.records.push((*kind).to_owned());
                last = Some(fp);
            }
        }
    }
    Side {
        sources,
        observations,
        host,
        operator_samples: 0,
        source: Source::Prometheus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(metric: &str, labels: &[(&str, &str)], values: &[(f64, &str)]) -> ApiSeries {
        let mut m: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        m.insert("__name__".into(), metric.into());
        ApiSeries {
            metric: m,
            values: values.iter().map(|(t, v)| (*t, (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn steps_become_observations_and_a_result_counts_once() {
        let side = side_from_matrix(
            vec!["prom".into()],
            vec![
                series(
                    "labnode_rollback_recovery_seconds",
                    &[("direction", "rollback"), ("instance", "n1")],
                    &[(10.0, "8.9"), (11.0, "8.9"), (12.0, "9.4"), (13.0, "9.4")],
                ),
                series(
                    "labnode_collector_up",
                    &[("collector", "gpu"), ("instance", "n1")],
                    &[(10.0, "0"), (11.0, "1"), (12.0, "1"), (13.0, "NaN")],
                ),
            ],
        );
        assert_eq!(side.observations.len(), 4);
        let with_record: Vec<f64> = side
            .observations
            .iter()
            .filter(|o| o.records.contains(&RecordKind::RollbackDrill))
            .map(|o| o.at)
            .collect();
        assert_eq!(with_record, [10.0, 12.0]);
        assert_eq!(side.observations[0].down.len(), 1);
        assert_eq!(side.observations[3].samples.len(), 1, "NaN is no value");
        assert_eq!(side.host.hosts, ["n1"]);
    }

    #[test]
    fn ranges() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let r = parse_range("now-1h..now", now).expect("relative");
        assert_eq!((r.start, r.end), (996_400.0, 1_000_000.0));
        let r = parse_range("2026-11-24T14:00:00Z..2026-11-24T15:00:00Z", now).expect("rfc3339");
        assert_eq!(r.end - r.start, 3600.0);
        let r = parse_range("100..200.5", now).expect("unix");
        assert_eq!((r.start, r.end), (100.0, 200.5));
        for bad in ["now", "200..100", "yesterday..now", "now-1x..now"] {
            assert!(parse_range(bad, now).is_err(), "{bad}");
        }
    }

    /// Serves one answer of `len` bytes (a JSON string that never ends) on a free port.
    fn endless_answer(len: usize) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{{\"status\":\"success\",\"data\":\""
                );
                let chunk = [b'a'; 65536];
                let mut sent = 0;
                while sent < len && s.write_all(&chunk).is_ok() {
                    sent += chunk.len();
                }
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn an_answer_past_the_bound_is_refused_and_says_so() {
        let url = endless_answer(8 << 20);
        let client = Client::new(&url, Duration::from_secs(10), None)
            .expect("url")
            .with_max_response(1 << 20);
        let range = Range {
            start: 1.0e9,
            end: 1.0e9 + 600.0,
        };
        let e = client.side(range, None).expect_err("8 MiB > 1 MiB");
        assert!(
            matches!(e, PromError::TooLarge { limit, .. } if limit == 1 << 20),
            "{e:?}"
        );
        assert!(e.to_string().contains("1048576 bytes"), "{e}");
    }

    #[test]
    fn urls() {
        let c =
            Client::new("http://127.0.0.1:9090/prom/", Duration::from_secs(1), None).expect("url");
        assert_eq!(c.url, "http://127.0.0.1:9090/prom");
        let c = Client::new("http://[::1]:9090", Duration::from_secs(1), None).expect("v6");
        assert_eq!(c.url, "http://[::1]:9090");
        let c = Client::new("http://prometheus", Duration::from_secs(1), None).expect("no port");
        assert_eq!(c.url, "http://prometheus");
        for bad in [
            "https://p:9090",
            "p:9090",
            "http://:9090",
            "http://u:p@h:1",
            "http://h:port",
        ] {
            assert!(
                Client::new(bad, Duration::from_secs(1), None).is_err(),
                "{bad}"
            );
        }
    }
}
