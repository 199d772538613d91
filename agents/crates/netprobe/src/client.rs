//! `labnode net bench`: the sending side of one test (one protocol, one congestion control).

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use labnode_net::probe::RunResult;

use crate::access::Token;
use crate::quic;
use crate::sys;
use crate::wire::{self, Hello, Reply};

/// Size of each write: the same 128 KiB iperf3 uses for TCP.
pub const WRITE_SIZE: usize = 128 * 1024;
/// Unsent bytes a TCP socket may hold.
const NOTSENT_LOWAT: u32 = 1024 * 1024;

/// Why a test did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The server said no.
    #[error("the server {peer} refused the test: {why}")]
    Refused {
        /// The server.
        peer: SocketAddr,
        /// Its reason.
        why: String,
    },
    /// Network or protocol trouble.
    #[error("{what}: {why}")]
    Failed {
        /// What was being done.
        what: String,
        /// The error.
        why: String,
    },
}

fn failed(what: impl Into<String>) -> impl FnOnce(String) -> BenchError {
    let what = what.into();
    move |why| BenchError::Failed { what, why }
}

/// What every test of one bench shares.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server.
    pub peer: SocketAddr,
    /// The token.
    pub token: Token,
    /// Parallel streams.
    pub streams: u32,
    /// How long to send.
    pub duration: Duration,
    /// The pinned certificate fingerprint (QUIC).
    pub fingerprint: Option<String>,
}

/// Bytes sent so far by the running test, for a progress display.
pub type Progress = Arc<AtomicU64>;

struct Control {
    conn: TcpStream,
    reader: BufReader<TcpStream>,
    test_id: String,
    quic_port: Option<u16>,
}

fn open_control(plan: &Plan, protocol: &str, congestion: &str) -> Result<Control, BenchError> {
    let what = format!("connecting to {}", plan.peer);
    let mut conn = TcpStream::connect_timeout(&plan.peer, Duration::from_secs(10))
        .map_err(|e| failed(&what)(e.to_string()))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| failed(&what)(e.to_string()))?;
    let hello = Hello::Test {
        version: wire::PROTOCOL.into(),
        protocol: protocol.into(),
        congestion: congestion.into(),
        streams: plan.streams,
        duration_ms: u64::try_from(plan.duration.as_millis()).unwrap_or(u64::MAX),
    };
    let request = serde_json::to_string(&hello).map_err(|e| failed(&what)(e.to_string()))?;
    conn.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| failed(&what)(e.to_string()))?;
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| failed(&what)(e.to_string()))?);
    let nonce = match read_reply(&mut reader, plan)? {
        Reply::Challenge { nonce } => nonce,
        other => {
            return Err(failed("the server's answer")(format!(
                "unexpected {other:?}"
            )));
        }
    };
    let auth = Hello::Auth {
        mac: plan.token.sign(nonce.as_bytes(), request.as_bytes()),
    };
    wire::write_msg(&mut conn, &auth).map_err(|e| failed(&what)(e.to_string()))?;
    match read_reply(&mut reader, plan)? {
        Reply::Accepted { test_id, quic_port } => Ok(Control {
            conn,
            reader,
            test_id,
            quic_port,
        }),
        other => Err(failed("the server's answer")(format!(
            "unexpected {other:?}"
        ))),
    }
}

/// The server's next line; a refusal is an error.
fn read_reply(reader: &mut BufReader<TcpStream>, plan: &Plan) -> Result<Reply, BenchError> {
    let line = wire::read_line(reader)
        .map_err(|e| failed(format!("waiting for {}'s answer", plan.peer))(e.to_string()))?;
    match serde_json::from_str::<Reply>(&line) {
        Ok(Reply::Refused { error }) => Err(BenchError::Refused {
            peer: plan.peer,
            why: error,
        }),
        Ok(r) => Ok(r),
        Err(e) => Err(failed("the server's answer")(format!("{e}: {line:?}"))),
    }
}

fn wait_result(c: &mut Control, plan: &Plan) -> Result<(u64, f64, f64), BenchError> {
    c.conn
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| failed("control connection")(e.to_string()))?;
    let line = wire::read_line(&mut c.reader)
        .map_err(|e| failed(format!("waiting for {}'s result", plan.peer))(e.to_string()))?;
    match serde_json::from_str::<Reply>(&line) {
        Ok(Reply::Result {
            bytes,
            seconds,
            cpu_seconds,
        }) => Ok((bytes, seconds, cpu_seconds)),
        Ok(Reply::Refused { error }) => Err(BenchError::Refused {
            peer: plan.peer,
            why: error,
        }),
        Ok(other) => Err(failed("the server's result")(format!(
            "unexpected {other:?}"
        ))),
        Err(e) => Err(failed("the server's result")(format!("{e}: {line:?}"))),
    }
}

/// Per-stream figures from the sender.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    rtt_sum_us: f64,
    rtt_samples: u64,
    min_rtt_us: Option<u32>,
    retrans: u64,
    cpu: Duration,
}

fn tcp_stream(
    plan: &Plan,
    test_id: &str,
    stream: u32,
    congestion: &str,
    progress: &Progress,
) -> Result<Sent, String> {
    let mut s = TcpStream::connect_timeout(&plan.peer, Duration::from_secs(10))
        .map_err(|e| format!("connecting: {e}"))?;
    let cpu0 = sys::thread_cpu();
    sys::set_congestion(&s, congestion).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            format!(
                "this kernel has no TCP congestion control {congestion:?} (available: {})",
                sys::available_congestion().join(", ")
            )
        } else {
            format!("TCP_CONGESTION {congestion}: {e}")
        }
    })?;
    let got = sys::congestion(&s).map_err(|e| e.to_string())?;
    if got != congestion {
        return Err(format!("asked for {congestion}, the socket has {got}"));
    }
    // Bound what is queued but unsent, so the run ends about when the sender stops even on
    // a slow path (the socket buffer alone can hold seconds of a lossy WAN's data).
    sys::set_notsent_lowat(&s, NOTSENT_LOWAT).map_err(|e| format!("TCP_NOTSENT_LOWAT: {e}"))?;
    wire::write_msg(
        &mut s,
        &Hello::Data {
            test_id: test_id.into(),
            stream,
        },
    )
    .map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; WRITE_SIZE];
    let mut out = Sent::default();
    let start = Instant::now();
    let end = start + plan.duration;
    let mut next_sample = start + Duration::from_millis(100);
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_sample {
            if let Ok(i) = sys::tcp_info(&s) {
                out.rtt_sum_us += f64::from(i.rtt_us);
                out.rtt_samples += 1;
            }
            next_sample = now + Duration::from_millis(100);
        }
        s.write_all(&buf).map_err(|e| format!("sending: {e}"))?;
        progress.fetch_add(WRITE_SIZE as u64, Ordering::Relaxed);
    }
    let info = sys::tcp_info(&s).map_err(|e| e.to_string())?;
    out.retrans = u64::from(info.total_retrans);
    out.min_rtt_us = info.min_rtt_us;
    if out.rtt_samples == 0 {
        out.rtt_sum_us = f64::from(info.rtt_us);
        out.rtt_samples = 1;
    }
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    // The server closes once it has read everything: wait for that.
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut sink = [0u8; 1024];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    out.cpu = sys::thread_cpu().saturating_sub(cpu0);
    Ok(out)
}

fn result(
    protocol: &str,
    congestion: &str,
    server: (u64, f64, f64),
    sent: &[Sent],
    gso: Option<bool>,
) -> RunResult {
    let (bytes, seconds, server_cpu) = server;
    let samples: u64 = sent.iter().map(|s| s.rtt_samples).sum();
    let rtt = (samples > 0)
        .then(|| sent.iter().map(|s| s.rtt_sum_us).sum::<f64>() / samples as f64 / 1e6);
    RunResult {
        protocol: protocol.into(),
        congestion: congestion.into(),
        throughput_bits_per_second: if seconds > 0.0 {
            bytes as f64 * 8.0 / seconds
        } else {
            0.0
        },
        bytes,
        seconds,
        rtt_seconds: rtt,
        min_rtt_seconds: sent
            .iter()
            .filter_map(|s| s.min_rtt_us)
            .min()
            .map(|u| f64::from(u) / 1e6),
        retransmitted: sent.iter().map(|s| s.retrans).sum(),
        client_cpu_seconds: sent.iter().map(|s| s.cpu.as_secs_f64()).sum(),
        server_cpu_seconds: server_cpu,
        gso,
        experimental: protocol == "quic" && congestion == "bbr",
    }
}

/// Runs one TCP test: `plan.streams` connections with `congestion` set on each socket.
pub fn run_tcp(
    plan: &Plan,
    congestion: &str,
    progress: &Progress,
) -> Result<RunResult, BenchError> {
    let mut c = open_control(plan, "tcp", congestion)?;
    let handles: Vec<_> = (0..plan.streams)
        .map(|i| {
            let (plan, id, cc, p) = (
                plan.clone(),
                c.test_id.clone(),
                congestion.to_owned(),
                Arc::clone(progress),
            );
            std::thread::Builder::new()
                .name(format!("bench-tcp-{i}"))
                .spawn(move || tcp_stream(&plan, &id, i, &cc, &p))
        })
        .collect();
    let mut sent = Vec::new();
    let mut errors = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h
            .map_err(|e| e.to_string())
            .and_then(|h| h.join().map_err(|_| "panicked".to_owned()))
        {
            Ok(Ok(s)) => sent.push(s),
            Ok(Err(e)) | Err(e) => errors.push(format!("stream {i}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(failed(format!("tcp/{congestion} to {}", plan.peer))(
            errors.join("; "),
        ));
    }
    let server = wait_result(&mut c, plan)?;
    Ok(result("tcp", congestion, server, &sent, None))
}

/// Runs one QUIC test: one connection with `plan.streams` unidirectional streams.
pub fn run_quic(
    plan: &Plan,
    congestion: &str,
    progress: &Progress,
) -> Result<RunResult, BenchError> {
    let fp = plan.fingerprint.clone().ok_or_else(|| {
        failed("QUIC")("--fingerprint is needed to pin the server's certificate".into())
    })?;
    let cfg =
        quic::client_config(&fp, congestion, plan.streams).map_err(failed("QUIC configuration"))?;
    let mut c = open_control(plan, "quic", congestion)?;
    let port = c
        .quic_port
        .ok_or_else(|| failed("the server's answer")("no QUIC port".into()))?;
    let server_addr = SocketAddr::new(plan.peer.ip(), port);
    let (plan2, id, p) = (plan.clone(), c.test_id.clone(), Arc::clone(progress));
    let sender = std::thread::Builder::new()
        .name("bench-quic".into())
        .spawn(move || {
            let cpu0 = sys::thread_cpu();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let r = rt.block_on(quic_send(&plan2, cfg, server_addr, &id, &p));
            drop(rt);
            r.map(|(mut s, gso)| {
                s.cpu = sys::thread_cpu().saturating_sub(cpu0);
                (s, gso)
            })
        })
        .map_err(|e| failed("QUIC")(e.to_string()))?;
    let (sent, gso) = sender
        .join()
        .map_err(|_| failed("QUIC")("the sender panicked".into()))?
        .map_err(failed(format!("quic/{congestion} to {server_addr}")))?;
    let server = wait_result(&mut c, plan)?;
    Ok(result("quic", congestion, server, &[sent], Some(gso)))
}

async fn quic_send(
    plan: &Plan,
    cfg: quinn::ClientConfig,
    server: SocketAddr,
    id: &str,
    progress: &Progress,
) -> Result<(Sent, bool), String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let sock = UdpSocket::bind(bind).map_err(|e| format!("UDP socket: {e}"))?;
    let gso = quic::gso_enabled(&sock);
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        sock,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("QUIC endpoint: {e}"))?;
    ep.set_default_client_config(cfg);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        ep.connect(server, quic::SERVER_NAME)
            .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|_| "the QUIC handshake timed out".to_owned())?
    .map_err(|e| format!("QUIC handshake: {e}"))?;
    let (mut ctl, _ctl_recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    ctl.write_all(format!("{id}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let chunk = Bytes::from(vec![0x5au8; WRITE_SIZE]);
    let end = Instant::now() + plan.duration;
    let mut tasks = Vec::new();
    for _ in 0..plan.streams {
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        let (chunk, progress) = (chunk.clone(), Arc::clone(progress));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                // Whatever did not fit in the window in time is not waited for.
                match tokio::time::timeout_at(end.into(), s.write_chunk(chunk.clone())).await {
                    Ok(r) => r.map_err(|e| e.to_string())?,
                    Err(_) => break,
                }
                progress.fetch_add(WRITE_SIZE as u64, Ordering::Relaxed);
            }
            // Stop at the deadline: what quinn still buffers is abandoned rather than
            // drained, so a slow path does not stretch the run (the server counts what
            // arrived, as it does for TCP).
            s.reset(0u32.into()).map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }));
    }
    let mut out = Sent::default();
    let mut min_rtt: Option<Duration> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.tick().await;
    while Instant::now() < end {
        tick.tick().await;
        let rtt = conn.rtt();
        out.rtt_sum_us += rtt.as_micros() as f64;
        out.rtt_samples += 1;
        min_rtt = Some(min_rtt.map_or(rtt, |m| m.min(rtt)));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    // The server closes the connection once it has read every stream to its end.
    let closed = tokio::time::timeout(Duration::from_secs(60), conn.closed()).await;
    if closed.is_err() {
        return Err("the server did not confirm the data within 60 s".into());
    }
    out.retrans = conn.stats().path.lost_packets;
    out.min_rtt_us = min_rtt.map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    ep.close(0u32.into(), b"");
    Ok((out, gso))
}
