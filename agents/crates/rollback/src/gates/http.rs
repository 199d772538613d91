//! The `http` gate (a GET answers 2xx), and the HTTP client the gates that read an
//! exporter or Prometheus share.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Checker, GateCheck};
use crate::exposition;

/// `http`: a GET answers 2xx (and its body contains a text).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// `http://` URL to GET.
    pub url: String,
    /// Text the body must contain (e.g. the version the new generation serves).
    pub body_contains: Option<String>,
}

impl GateCheck for Http {
    fn describe(&self) -> String {
        match &self.body_contains {
            None => format!("GET {} answers 2xx", self.url),
            Some(b) => format!("GET {} answers 2xx containing {b:?}", self.url),
        }
    }

    fn validate(&self) -> Result<(), String> {
        http_url(&self.url)
    }

    fn check(&self, _: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        let url = &self.url;
        let (status, body) = get(url, bound)?;
        if !(200..300).contains(&status) {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        match self.body_contains.as_deref() {
            Some(want) if !body.contains(want) => {
                let shown: String = body.chars().take(80).collect();
                Err(format!(
                    "GET {url}: the body does not contain {want:?} (it starts {shown:?})"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Why `u` cannot be a gate's URL, if it cannot: only `http://` is supported.
pub(super) fn http_url(u: &str) -> Result<(), String> {
    if u.starts_with("http://") {
        Ok(())
    } else if u.starts_with("https://") {
        Err(format!(
            "{u}: only http:// is supported (health endpoints on loopback; this build has no TLS)"
        ))
    } else {
        Err(format!("{u:?} is not an http:// URL"))
    }
}

thread_local! {
    /// One HTTP agent per gate thread, kept between checks (no connection pooling: every
    /// check opens a fresh connection, so an old server process cannot answer for a new one).
    static AGENT: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
}

/// GETs `url` within `bound`: the status and the body.
pub(super) fn get(url: &str, bound: Duration) -> Result<(u16, String), String> {
    let resp = AGENT.with(|agent| {
        agent
            .get(url)
            .config()
            .timeout_global(Some(bound))
            .build()
            .call()
    });
    let mut resp = resp.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok((status, body))
}

/// Scrapes an exporter's `/metrics` within `bound`.
pub(super) fn scrape(url: &str, bound: Duration) -> Result<Vec<exposition::Line>, String> {
    let (status, body) = get(url, bound)?;
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    Ok(exposition::parse(&body))
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::{check, serve};
    use super::*;

    #[test]
    fn http_answers_2xx_with_the_text() {
        let url = serve(200, "version gen-2\n".into());
        check(&Check::Http(Http {
            url: format!("{url}/health"),
            body_contains: Some("gen-2".into()),
        }))
        .expect("2xx with the text");
        let e = check(&Check::Http(Http {
            url: format!("{url}/health"),
            body_contains: Some("gen-3".into()),
        }))
        .expect_err("wrong version");
        assert!(e.contains("does not contain \"gen-3\""), "{e}");
        let bad = serve(503, "starting".into());
        let e = check(&Check::Http(Http {
            url: bad,
            body_contains: None,
        }))
        .expect_err("503");
        assert!(e.ends_with("HTTP 503"), "{e}");
    }
}
