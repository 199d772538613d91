//! A TCP data stream of a test: it claims its stream, counts what arrives until the client
//! closes it or the test's deadline, and sends its [`StreamDone`] to the control connection.

use std::io::{BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Server;
use super::accept::Pending;
use super::hello::{Timed, refuse};
use super::slots::StreamDone;
use crate::sys;

impl Server {
    /// Receives data stream `stream` of test `test_id` from `ip`; the address's pending
    /// place is given back once the stream is claimed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn data(
        &self,
        mut conn: TcpStream,
        mut r: BufReader<Timed>,
        pending: Pending,
        peer: SocketAddr,
        ip: IpAddr,
        test_id: &str,
        stream: u32,
    ) {
        let hold = match self.claim(test_id, ip, stream) {
            Ok(h) => h,
            Err(why) => return refuse(&mut conn, peer, &why),
        };
        drop(pending);
        let deadline = hold.slot.deadline;
        let cpu0 = sys::thread_cpu();
        let mut buf = vec![0u8; 256 * 1024];
        let mut d = StreamDone {
            bytes: 0,
            first: None,
            last: None,
            cpu: Duration::ZERO,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "data stream {stream} from {peer} still open at the test's deadline; closed"
                );
                let _ = conn.shutdown(std::net::Shutdown::Both);
                break;
            }
            // The socket waits no longer than the deadline (r reads a clone of conn).
            let _ = conn.set_read_timeout(Some(left));
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = Instant::now();
                    d.first.get_or_insert(now);
                    d.last = Some(now);
                    d.bytes += n as u64;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!("data stream {stream} from {peer}: {e}");
                    break;
                }
            }
        }
        d.cpu = sys::thread_cpu().saturating_sub(cpu0);
        let _ = hold.slot.done.send(d);
        drop(hold);
    }
}
