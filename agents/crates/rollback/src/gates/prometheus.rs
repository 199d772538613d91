//! The `prometheus_targets` gate: a Prometheus server's targets are up and were scraped
//! after the gate started.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::http::{get, http_url};
use super::{Checker, GateCheck};
use crate::exposition;

/// `prometheus_targets`: every (selected) target is up, scraped after the gate started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusTargets {
    /// The Prometheus server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// Only targets of these jobs (default: every active target).
    #[serde(default)]
    pub jobs: Vec<String>,
}

impl PrometheusTargets {
    /// The server's base URL, without a trailing `/`.
    fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

impl GateCheck for PrometheusTargets {
    fn describe(&self) -> String {
        let url = self.base();
        if self.jobs.is_empty() {
            format!("every target of {url} up")
        } else {
            format!("targets of {url} up (jobs {})", self.jobs.join(", "))
        }
    }

    fn validate(&self) -> Result<(), String> {
        http_url(&self.url)
    }

    fn check(&self, _: &mut Checker, since: SystemTime, bound: Duration) -> Result<(), String> {
        let (url, jobs) = (self.base(), &self.jobs);
        let api = format!("{url}/api/v1/targets?state=active");
        let (status, body) = get(&api, bound)?;
        if status != 200 {
            return Err(format!("GET {api}: HTTP {status}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {api}: not JSON: {e}"))?;
        let targets = v["data"]["activeTargets"]
            .as_array()
            .ok_or_else(|| format!("GET {api}: no data.activeTargets"))?;
        let since = labnode_core::sys::unix_seconds(since);
        let mut seen = 0;
        let mut bad = Vec::new();
        for t in targets {
            let job = t["labels"]["job"].as_str().unwrap_or("");
            if !jobs.is_empty() && !jobs.iter().any(|j| j == job) {
                continue;
            }
            seen += 1;
            let instance = t["labels"]["instance"].as_str().unwrap_or("?");
            let health = t["health"].as_str().unwrap_or("unknown");
            let scraped = t["lastScrape"].as_str().and_then(exposition::parse_rfc3339);
            if health != "up" {
                let why = t["lastError"]
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .unwrap_or(health);
                bad.push(format!("{job}/{instance} {health}: {why}"));
            } else if scraped.is_none_or(|s| s < since) {
                bad.push(format!("{job}/{instance} not scraped since the switch"));
            }
        }
        if seen == 0 {
            return Err(if jobs.is_empty() {
                format!("{url} has no active targets")
            } else {
                format!("{url} has no active target of job {}", jobs.join(", "))
            });
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{env, serve};
    use super::super::{Check, Checker};
    use super::*;

    #[test]
    fn prometheus_targets_must_be_up_and_scraped_after_the_switch() {
        let now = SystemTime::now();
        let fmt = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let body = serde_json::json!({"status": "success", "data": {"activeTargets": [
            {"labels": {"job": "node", "instance": "a:1"}, "health": "up", "lastError": "", "lastScrape": fmt(now + Duration::from_secs(1))},
            {"labels": {"job": "labnode", "instance": "b:2"}, "health": "up", "lastError": "", "lastScrape": fmt(now - Duration::from_secs(5))},
            {"labels": {"job": "gpu", "instance": "c:3"}, "health": "down", "lastError": "connection refused", "lastScrape": fmt(now)}
        ]}});
        let url = serve(200, body.to_string());
        let c = |jobs: &[&str]| {
            Check::PrometheusTargets(PrometheusTargets {
                url: url.clone(),
                jobs: jobs.iter().map(|j| (*j).to_owned()).collect(),
            })
        };
        let mut ch = Checker::new(env());
        ch.check(&c(&["node"]), now, Duration::from_secs(2))
            .expect("fresh and up");
        let e = ch
            .check(&c(&["labnode"]), now, Duration::from_secs(2))
            .expect_err("stale");
        assert!(e.contains("not scraped since the switch"), "{e}");
        let e = ch
            .check(&c(&[]), now, Duration::from_secs(2))
            .expect_err("gpu down");
        assert!(e.contains("gpu/c:3 down: connection refused"), "{e}");
        let e = ch
            .check(&c(&["nope"]), now, Duration::from_secs(2))
            .expect_err("none");
        assert!(e.contains("no active target of job nope"), "{e}");
    }
}
