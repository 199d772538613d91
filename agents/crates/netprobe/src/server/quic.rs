//! A QUIC test: a UDP socket of the allowed range, an endpoint on a thread of its own that
//! only the test's client may use, its streams counted until they end or the deadline.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::Server;
use super::slots::{Hold, StreamDone};
use crate::access::canonical;
use crate::{quic, sys};

/// A UDP socket on `ip` for one QUIC test: the first free port of `range`, or an ephemeral
/// port without one.
pub fn bind_quic(ip: IpAddr, range: Option<(u16, u16)>) -> std::io::Result<UdpSocket> {
    let Some((first, last)) = range else {
        return UdpSocket::bind(SocketAddr::new(ip, 0));
    };
    for port in first..=last {
        match UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every UDP port of {first}-{last} on {ip} is in use"),
    ))
}

impl Server {
    /// Binds the test's UDP socket and serves it on a thread of its own, which holds the
    /// test's place until the connection ends or the deadline; the thread sends one
    /// [`StreamDone`] for the whole connection.
    pub(super) fn start_quic(
        &self,
        peer: IpAddr,
        id: &str,
        congestion: &str,
        streams: u32,
        hold: Hold,
        tx: mpsc::Sender<StreamDone>,
    ) -> Result<u16, String> {
        let sock = bind_quic(self.settings.listen.ip(), self.settings.quic_ports)
            .map_err(|e| e.to_string())?;
        let port = sock.local_addr().map_err(|e| e.to_string())?.port();
        let cfg = quic::server_config(&self.settings.identity, congestion, streams)?;
        let id = id.to_owned();
        let deadline = tokio::time::Instant::from_std(hold.slot.deadline);
        std::thread::Builder::new()
            .name("probe-quic".into())
            .spawn(move || {
                let _hold = hold;
                let cpu0 = sys::thread_cpu();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::warn!("QUIC runtime: {e}"),
                };
                let result = rt.block_on(async move {
                    let ep = quinn::Endpoint::new(
                        quinn::EndpointConfig::default(),
                        Some(cfg),
                        sock,
                        Arc::new(quinn::TokioRuntime),
                    )
                    .map_err(|e| e.to_string())?;
                    let r = tokio::time::timeout_at(deadline, quic_receive(&ep, peer, id, streams))
                        .await;
                    if r.is_err() {
                        // Tell the client, rather than leave it to its idle timeout.
                        ep.close(2u32.into(), b"the test's deadline passed");
                        let _ =
                            tokio::time::timeout(Duration::from_millis(500), ep.wait_idle()).await;
                    }
                    r.map_err(|_| "still open at the deadline; closed".to_owned())?
                });
                // The endpoint and its socket go with the runtime, before the place is freed.
                drop(rt);
                match result {
                    Ok(mut d) => {
                        d.cpu = sys::thread_cpu().saturating_sub(cpu0);
                        let _ = tx.send(d);
                    }
                    Err(e) => tracing::warn!("QUIC test from {peer}: {e}"),
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(port)
    }
}

/// Completes one handshake and reads the test id from the connection's control stream;
/// the connection (and the control stream's send side, kept open for the test) if it is `id`.
async fn presents_id(
    incoming: quinn::Incoming,
    id: String,
) -> Result<(quinn::Connection, quinn::SendStream), String> {
    let conn = incoming.await.map_err(|e| format!("handshake: {e}"))?;
    let (send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| format!("no control stream: {e}"))?;
    let mut line = vec![0u8; id.len() + 1];
    recv.read_exact(&mut line)
        .await
        .map_err(|e| format!("reading the test id: {e}"))?;
    if line[..id.len()] != *id.as_bytes() || line[id.len()] != b'\n' {
        conn.close(1u32.into(), b"wrong test id");
        return Err("wrong test id on the QUIC connection".into());
    }
    Ok((conn, send))
}

/// Accepts the test's client (anyone else is refused), checks the test id on its control
/// stream and counts what its `streams` streams deliver until they end.
async fn quic_receive(
    ep: &quinn::Endpoint,
    peer: IpAddr,
    id: String,
    streams: u32,
) -> Result<StreamDone, String> {
    // Candidates run side by side, so one that stalls (a client gone after its first
    // packet, or one that never presents the id) holds up no other; the first to present
    // the test id on its control stream is the test's. An address not yet validated is
    // sent a Retry first: a client must prove it receives at its address before the server
    // does any handshake work for it, so forged sources cost nothing.
    let mut candidates = tokio::task::JoinSet::new();
    let (conn, _control) = loop {
        tokio::select! {
            incoming = ep.accept() => {
                let incoming = incoming.ok_or("the endpoint closed")?;
                if canonical(incoming.remote_address().ip()) != peer {
                    tracing::warn!(
                        "QUIC: refused {}: not the client of this test",
                        incoming.remote_address()
                    );
                    incoming.refuse();
                    continue;
                }
                if !incoming.remote_address_validated() && incoming.may_retry() {
                    if let Err(e) = incoming.retry() {
                        tracing::debug!("QUIC retry to {peer}: {e}");
                    }
                    continue;
                }
                candidates.spawn(presents_id(incoming, id.clone()));
            }
            Some(done) = candidates.join_next(), if !candidates.is_empty() => match done {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => tracing::warn!("QUIC connection from {peer}: {e}"),
                Err(e) => tracing::warn!("QUIC connection from {peer}: {e}"),
            },
        }
    };
    // The others (stalled, or late duplicates) are dropped with the set.
    drop(candidates);
    tracing::debug!("QUIC: {peer} presented the test id");
    let total = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new((None::<Instant>, None::<Instant>)));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut rs = conn
            .accept_uni()
            .await
            .map_err(|e| format!("waiting for a stream: {e}"))?;
        let (total, span) = (Arc::clone(&total), Arc::clone(&span));
        tasks.push(tokio::spawn(async move {
            loop {
                let chunk = match rs.read_chunk(usize::MAX, false).await {
                    Ok(Some(c)) => c,
                    // The client resets its streams at the deadline: that is the end.
                    Ok(None) | Err(quinn::ReadError::Reset(_)) => break,
                    Err(e) => return Err(e.to_string()),
                };
                let now = Instant::now();
                total.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                let mut s = span.lock().unwrap_or_else(|p| p.into_inner());
                s.0.get_or_insert(now);
                s.1 = Some(now);
            }
            Ok::<(), String>(())
        }));
    }
    tracing::debug!("QUIC: {peer} opened {streams} streams");
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    tracing::debug!("QUIC: {peer}'s streams ended");
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    let (first, last) = *span.lock().unwrap_or_else(|p| p.into_inner());
    Ok(StreamDone {
        bytes: total.load(Ordering::Relaxed),
        first,
        last,
        cpu: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_sockets_stay_in_their_range() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        // Find three consecutive free ports, then hold the first.
        let base = (20_000..60_000)
            .step_by(7)
            .find(|&p| (p..p + 3).all(|q| UdpSocket::bind(SocketAddr::new(ip, q)).is_ok()))
            .expect("three free ports");
        let held = UdpSocket::bind(SocketAddr::new(ip, base)).expect("hold the first");
        let s = bind_quic(ip, Some((base, base + 2))).expect("a port in range");
        assert_eq!(
            s.local_addr().expect("addr").port(),
            base + 1,
            "the busy first port is skipped"
        );
        let t = bind_quic(ip, Some((base, base + 2))).expect("the last one");
        assert_eq!(t.local_addr().expect("addr").port(), base + 2);
        let e = bind_quic(ip, Some((base, base + 2))).expect_err("all busy");
        assert!(
            e.to_string().contains(&format!("{base}-{}", base + 2)),
            "{e}"
        );
        drop((held, s, t));
        assert_ne!(
            bind_quic(ip, None)
                .expect("ephemeral")
                .local_addr()
                .expect("addr")
                .port(),
            0
        );
    }
}
