//! The HTTP side of `labnode serve`: `/metrics`, `/healthz` and a landing page, within
//! [`Limits`] on what clients may hold (a whole-header deadline, an idle timeout, a
//! connection cap that closes the longest-idle connection first).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::hub::Hub;

/// The content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Answers one request from the hub's cached state.
pub fn handle(hub: &Hub, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => respond(StatusCode::OK, TEXT_FORMAT, hub.render()),
        "/healthz" => {
            let mut body = String::new();
            for (name, up, reason) in hub.status() {
                let state = match up {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "starting (first run not finished)",
                };
                body.push_str(&format!("{name}: {state}"));
                if let Some(r) = reason {
                    body.push_str(&format!(" ({r})"));
                }
                body.push('\n');
            }
            // The agent answering is what this checks; collector state is informational.
            respond(StatusCode::OK, "text/plain; charset=utf-8", body)
        }
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<!doctype html><title>labnode</title><h1>labnode</h1>\
             <p><a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">collector status</a></p>\n",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n",
        ),
    }
}

/// What a client may hold of `labnode serve`: a local user (or a broken scraper) must not
/// be able to take every descriptor, or the health gates that read this exporter would
/// fail and roll back a good system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's whole header must arrive within this (a byte at a time does not
    /// extend it).
    pub header_timeout: Duration,
    /// A connection that reads and writes nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Connections at most; one more closes the one idle the longest.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            // Longer than a 15 s or 30 s scrape interval, so Prometheus keeps its connection.
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// The open connections: when each last moved, and how to close it.
#[derive(Default)]
struct Open {
    next: u64,
    conns: HashMap<u64, (Arc<AtomicU64>, Arc<Notify>)>,
}

impl Open {
    /// Makes room for one more under `max`, closing the longest-idle, and registers it.
    fn admit(&mut self, max: usize, activity: Arc<AtomicU64>, close: Arc<Notify>) -> u64 {
        while self.conns.len() >= max.max(1) {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, (a, _))| a.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let Some(id) = oldest else { break };
            if let Some((_, n)) = self.conns.remove(&id) {
                n.notify_one();
            }
        }
        self.next += 1;
        self.conns.insert(self.next, (activity, close));
        self.next
    }
}

/// Milliseconds since `epoch`, for activity stamps.
fn stamp(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A stream that stamps every read and write that moved bytes.
struct Watched<S> {
    inner: S,
    epoch: Instant,
    activity: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.store(stamp(self.epoch), Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.store(stamp(self.epoch), Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `hub` on `listener` within `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let epoch = Instant::now();
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(AtomicU64::new(stamp(epoch)));
        let close = Arc::new(Notify::new());
        let id = match open.lock() {
            Ok(mut o) => o.admit(limits.max_connections, activity.clone(), close.clone()),
            Err(_) => continue,
        };
        let hub = hub.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = handle(&hub, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let io = Watched {
                inner: stream,
                epoch,
                activity: activity.clone(),
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let tick = (limits.idle_timeout / 4).max(Duration::from_millis(50));
            let idle_ms = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                        break;
                    }
                    () = close.notified() => {
                        tracing::debug!(%peer, "closed to make room for a new connection");
                        break;
                    }
                    () = tokio::time::sleep(tick) => {
                        let quiet = stamp(epoch).saturating_sub(activity.load(Ordering::Relaxed));
                        if quiet >= idle_ms {
                            tracing::debug!(%peer, "closed after {quiet} ms idle");
                            break;
                        }
                    }
                }
            }
            if let Ok(mut o) = open.lock() {
                o.conns.remove(&id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_closes_the_longest_idle() {
        let mut o = Open::default();
        let conn = |t: u64| (Arc::new(AtomicU64::new(t)), Arc::new(Notify::new()));
        let (a, an) = conn(10);
        let (b, _bn) = conn(5);
        let (c, _cn) = conn(20);
        let ida = o.admit(2, a, an.clone());
        let idb = o.admit(2, b.clone(), Arc::new(Notify::new()));
        // Full: the third closes b, idle since 5.
        let idc = o.admit(2, c, Arc::new(Notify::new()));
        assert!(o.conns.contains_key(&ida) && o.conns.contains_key(&idc));
        assert!(!o.conns.contains_key(&idb));
        assert_eq!(o.conns.len(), 2);
    }
}
