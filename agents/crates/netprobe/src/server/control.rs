//! A test's control connection: the request checked against the caps, a place among the
//! `max_tests`, the QUIC endpoint for a QUIC test, then the data streams' merged figures as
//! the answer.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::hello::{random_hex, refuse};
use super::slots::{Hold, Slot, SlotState, StreamDone};
use super::{GRACE, Server};
use crate::wire::{self, Reply};

/// A congestion control name: 1 to 15 letters, digits or `_`.
fn valid_congestion(s: &str) -> bool {
    (1..16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Server {
    /// Runs the test a checked request asked for on its control connection.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn control(
        &self,
        mut conn: TcpStream,
        peer: SocketAddr,
        ip: IpAddr,
        protocol: &str,
        congestion: &str,
        streams: u32,
        duration_ms: u64,
    ) {
        let s = &self.settings;
        let duration = Duration::from_millis(duration_ms);
        let problem = if protocol != "tcp" && protocol != "quic" {
            Some(format!(
                "malformed request: protocol {protocol:?} is neither tcp nor quic"
            ))
        } else if !valid_congestion(congestion) {
            Some(format!(
                "malformed request: congestion control {congestion:?} is not a name"
            ))
        } else if streams == 0 || streams > s.max_streams {
            Some(format!(
                "{streams} streams asked, this server allows 1 to {}",
                s.max_streams
            ))
        } else if duration.is_zero() || duration > s.max_duration {
            Some(format!(
                "a {:.1} s test asked, this server allows up to {:.1} s",
                duration.as_secs_f64(),
                s.max_duration.as_secs_f64()
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            refuse(&mut conn, peer, &p);
            return;
        }
        let Some(id) = random_hex() else {
            refuse(
                &mut conn,
                peer,
                "no random numbers for a test id; try again",
            );
            return;
        };
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + duration + s.drain;
        let slot = Arc::new(Slot {
            peer: ip,
            streams,
            deadline,
            state: Mutex::new(SlotState {
                claimed: vec![false; streams as usize],
                holders: 1,
                closed: false,
            }),
            done: tx.clone(),
        });
        {
            let mut tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
            if tests.len() >= s.max_tests {
                drop(tests);
                refuse(
                    &mut conn,
                    peer,
                    &format!(
                        "busy: {} tests are running, the cap is {}; try again later",
                        s.max_tests, s.max_tests
                    ),
                );
                return;
            }
            tests.insert(id.clone(), Arc::clone(&slot));
        }
        let _hold = Hold {
            tests: Arc::clone(&self.tests),
            id: id.clone(),
            slot: Arc::clone(&slot),
            control: true,
        };
        tracing::info!(
            "test from {peer}: {protocol}/{congestion}, {streams} streams, {:.1} s",
            duration.as_secs_f64()
        );
        let quic_port = if protocol == "quic" {
            let hold = Hold {
                tests: Arc::clone(&self.tests),
                id: id.clone(),
                slot: Arc::clone(&slot),
                control: false,
            };
            slot.state.lock().unwrap_or_else(|p| p.into_inner()).holders += 1;
            match self.start_quic(ip, &id, congestion, streams, hold, tx) {
                Ok(p) => Some(p),
                Err(e) => {
                    refuse(
                        &mut conn,
                        peer,
                        &format!("cannot start the QUIC endpoint: {e}"),
                    );
                    return;
                }
            }
        } else {
            drop(tx);
            None
        };
        if wire::write_msg(
            &mut conn,
            &Reply::Accepted {
                test_id: id.clone(),
                quic_port,
            },
        )
        .is_err()
        {
            return;
        }
        let want = if protocol == "quic" {
            1
        } else {
            streams as usize
        };
        let mut done = Vec::new();
        while done.len() < want {
            let left = (deadline + GRACE).saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(d) => done.push(d),
                Err(_) => break,
            }
        }
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        let reply = if done.len() == want {
            StreamDone::merge(&done)
        } else {
            Reply::Refused {
                error: format!("only {} of {want} streams finished in time", done.len()),
            }
        };
        if let Reply::Result { bytes, seconds, .. } = &reply {
            tracing::info!(
                "test from {peer} done: {bytes} bytes in {seconds:.2} s ({:.1} Mbit/s)",
                *bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6
            );
        }
        let _ = wire::write_msg(&mut conn, &reply);
    }
}
