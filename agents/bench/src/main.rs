//! `scrape-bench`: scrapes an exporter over plain HTTP/1.1 keep-alive connections, the way
//! Prometheus does, and prints one JSON object with latency percentiles, errors and, for a
//! given PID, the exporter's CPU seconds and resident memory.
//!
//! ```text
//! scrape-bench sequential URL COUNT [PID]
//! scrape-bench concurrent URL CLIENTS SECONDS [PID]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One keep-alive connection to the exporter.
struct Conn {
    host: String,
    path: String,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Ok(Conn {
            host: host.to_owned(),
            path: path.to_owned(),
            reader: None,
        })
    }

    /// One GET; returns the body length. Reconnects once if the server closed the socket.
    fn get(&mut self) -> Result<usize, String> {
        match self.try_get() {
            Ok(n) => Ok(n),
            Err(_) => {
                self.reader = None;
                self.try_get()
            }
        }
    }

    fn try_get(&mut self) -> Result<usize, String> {
        if self.reader.is_none() {
            let s = TcpStream::connect(&self.host).map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            self.reader = Some(BufReader::new(s));
        }
        let r = self.reader.as_mut().ok_or("no connection")?;
        let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.host);
        r.get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(format!("status line {:?}", line.trim()));
        }
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            let l = line.trim();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let n = if chunked {
            let mut total = 0;
            loop {
                line.clear();
                r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {:?}", line.trim()))?;
                let mut buf = vec![0; size + 2];
                r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
                if size == 0 {
                    break;
                }
                total += size;
            }
            total
        } else {
            let len = length.ok_or("neither content-length nor chunked")?;
            let mut buf = vec![0; len];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
            len
        };
        if close {
            self.reader = None;
        }
        Ok(n)
    }
}

/// CPU seconds (user + system) and resident bytes of `pid`.
fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = 100.0; // USER_HZ is 100 on every Linux ABI labnode runs on
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((cpu, rss_kb * 1024))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn progress(done: usize, total: usize, what: &str) {
    let p = labnode_core::progress::Progress::detect();
    p.count(what, done as u64, total as u64);
    if done == total {
        p.clear();
    }
}

fn summary(
    latencies_ms: &mut [f64],
    errors: usize,
    bytes: usize,
    extra: serde_json::Value,
) -> serde_json::Value {
    latencies_ms.sort_by(f64::total_cmp);
    let mut v = serde_json::json!({
        "requests": latencies_ms.len() + errors,
        "errors": errors,
        "p50_ms": percentile(latencies_ms, 50.0),
        "p99_ms": percentile(latencies_ms, 99.0),
        "max_ms": latencies_ms.last().copied().unwrap_or(0.0),
        "body_bytes": bytes,
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    v
}

fn sequential(url: &str, count: usize, pid: Option<u32>) -> Result<serde_json::Value, String> {
    let mut conn = Conn::new(url)?;
    let before = pid.and_then(usage);
    let mut lat = Vec::with_capacity(count);
    let (mut errors, mut bytes, mut first_error) = (0, 0, None);
    for i in 0..count {
        let t = Instant::now();
        match conn.get() {
            Ok(n) => {
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                bytes = n;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        if i % 50 == 49 || i + 1 == count {
            progress(i + 1, count, "scrapes");
        }
    }
    let after = pid.and_then(usage);
    let extra = match (before, after) {
        (Some((c0, _)), Some((c1, rss))) => serde_json::json!({
            "cpu_seconds": c1 - c0,
            "rss_bytes": rss,
            "first_error": first_error,
        }),
        _ => serde_json::json!({ "first_error": first_error }),
    };
    Ok(summary(&mut lat, errors, bytes, extra))
}

fn concurrent(
    url: &str,
    clients: usize,
    secs: u64,
    pid: Option<u32>,
) -> Result<serde_json::Value, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new((Vec::new(), 0usize, None::<String>)));
    let before = pid.and_then(usage);
    let mut threads = Vec::new();
    for _ in 0..clients {
        let mut conn = Conn::new(url)?;
        let stop = stop.clone();
        let results = results.clone();
        threads.push(std::thread::spawn(move || {
            let (mut lat, mut errors, mut first) = (Vec::new(), 0, None);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match conn.get() {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
            r.0.extend(lat);
            r.1 += errors;
            if r.2.is_none() {
                r.2 = first;
            }
        }));
    }
    for s in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        progress(s as usize + 1, secs as usize, "seconds");
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a client thread panicked")?;
    }
    let after = pid.and_then(usage);
    let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
    let errors = r.1;
    let first = r.2.take();
    let mut extra = serde_json::json!({
        "clients": clients,
        "seconds": secs,
        "first_error": first,
    });
    if let (Some((c0, _)), Some((c1, rss)), Some(o)) = (before, after, extra.as_object_mut()) {
        o.insert("cpu_seconds".into(), (c1 - c0).into());
        o.insert("rss_bytes".into(), rss.into());
    }
    Ok(summary(&mut r.0, errors, 0, extra))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok());
    let pid = |i: usize| args.get(i).and_then(|v| v.parse::<u32>().ok());
    let out = match (args.first().map(String::as_str), args.get(1)) {
        (Some("sequential"), Some(url)) => match num(2) {
            Some(n) => sequential(url, n as usize, pid(3)),
            None => Err("sequential URL COUNT [PID]".into()),
        },
        (Some("concurrent"), Some(url)) => match (num(2), num(3)) {
            (Some(c), Some(s)) => concurrent(url, c as usize, s, pid(4)),
            _ => Err("concurrent URL CLIENTS SECONDS [PID]".into()),
        },
        _ => Err(
            "usage: scrape-bench sequential URL COUNT [PID] | concurrent URL CLIENTS SECONDS [PID]"
                .into(),
        ),
    };
    match out {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scrape-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn rejects_non_http_urls() {
        assert!(Conn::new("https://x/metrics").is_err());
        let c = Conn::new("http://127.0.0.1:9/metrics").expect("parses");
        assert_eq!(
            (c.host.as_str(), c.path.as_str()),
            ("127.0.0.1:9", "/metrics")
        );
    }
}
