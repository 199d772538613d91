//! The accept loop: a connection from outside the allowlist, from an address with too many
//! connections that sent no request yet, or past the connection cap is turned away at once
//! (no thread, no drain); every other one gets a thread of its own.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Server;
use crate::access::canonical;
use crate::wire::Reply;

/// Connections from one address that have not sent their request yet.
pub(super) struct Pending {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Pending {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Pending {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Server {
    fn max_connections(&self) -> usize {
        self.settings.max_tests * (self.settings.max_streams as usize + 1) + 16
    }

    /// Connections one address may have open before sending its request: enough for one
    /// test's control and data connections opened at once.
    fn max_pending_per_ip(&self) -> usize {
        self.settings.max_streams as usize + 2
    }

    /// Closes a connection at once: one refusal line if the socket takes it without
    /// waiting, no drain, no thread. Warns at most once a second.
    fn turn_away(&self, conn: TcpStream, peer: SocketAddr, why: &str) {
        let now = self.started.elapsed().as_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if last != now
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("turned away {peer}: {why} (further ones this second: debug log)");
        } else {
            tracing::debug!("turned away {peer}: {why}");
        }
        if conn.set_nonblocking(true).is_ok() {
            if let Ok(mut line) = serde_json::to_vec(&Reply::Refused {
                error: why.to_owned(),
            }) {
                line.push(b'\n');
                let _ = (&conn).write(&line);
            }
        }
    }

    /// Accepts connections on `listener` until the process ends.
    pub fn run(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (conn, peer) = match listener.accept() {
                Ok(c) => c,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    tracing::warn!("accept: {e}; pausing");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                // Only a listener that is not one ends the server; anything a peer or the
                // network can cause (ECONNABORTED, EPROTO, ENETDOWN, EPERM of a firewall,
                // EINTR) is that one connection's problem.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
                    ) =>
                {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    continue;
                }
            };
            let ip = canonical(peer.ip());
            if !self.settings.allow.iter().any(|c| c.contains(ip)) {
                self.turn_away(
                    conn,
                    peer,
                    &format!("{ip} is not in this server's allowlist"),
                );
                continue;
            }
            let Some(pending) = Pending::take(&self.pending, ip, self.max_pending_per_ip()) else {
                self.turn_away(
                    conn,
                    peer,
                    &format!("{ip} has too many connections that sent no request yet"),
                );
                continue;
            };
            if self.connections.fetch_add(1, Ordering::SeqCst) >= self.max_connections() {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                self.turn_away(conn, peer, "busy: too many connections; try again later");
                continue;
            }
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("probe-conn".into())
                .spawn(move || {
                    me.handle(conn, peer, pending);
                    me.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("cannot start a thread for {peer}: {e}");
            }
        }
    }
}
