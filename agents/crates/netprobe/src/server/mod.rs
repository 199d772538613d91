//! `labnode net serve`: receives tests from allowed clients that prove the token, one at a
//! time per client connection, at most `max_tests` at once, each at most `max_duration` long.
//!
//! A connection from outside the allowlist is closed right after `accept`, before it costs
//! a thread or counts against any cap. Every other connection gets its own thread, so one
//! slow client cannot stall the others; each source address may have at most a few
//! connections that have not sent their request yet, and one that does not send it within
//! [`HELLO_TIMEOUT`] is dropped. A test holds its place among the `max_tests` until its
//! control connection and every data stream it claimed have ended, and no later than its
//! deadline: accepted + duration + drain, when its data streams are closed.
//! TCP data streams arrive on the listening port; a QUIC test gets its own endpoint on a
//! UDP port of the listening address, which only the client that asked for the test may use.
//!
//! The parts: `accept` (the accept loop: the allowlist and the connection caps), `hello`
//! (the request line and the token's challenge), `slots` (a test's place among the
//! `max_tests` and the streams it claimed), `control` (a test's control connection), `tcp`
//! (a TCP data stream), `quic` (a QUIC test's endpoint) and `throttle` (an address that
//! keeps failing the token waits longer and longer).

mod accept;
mod control;
mod hello;
mod quic;
mod slots;
mod tcp;
mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access::{Cidr, Token};
use crate::quic::Identity;

pub use quic::bind_quic;
use slots::Tests;
pub use throttle::{FREE_FAILURES, MAX_WAIT};

/// How long a new connection has to send its request (and a test's, its answer to the
/// challenge).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time after a test's duration for its data to drain; the stream is closed then.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long the control connection waits for the data streams' figures after the deadline.
const GRACE: Duration = Duration::from_secs(1);

/// Server settings.
#[derive(Debug)]
pub struct Settings {
    /// Where to listen (TCP); QUIC tests bind UDP on the same address.
    pub listen: SocketAddr,
    /// The shared token.
    pub token: Token,
    /// Clients that may connect.
    pub allow: Vec<Cidr>,
    /// The longest test accepted.
    pub max_duration: Duration,
    /// Tests running at once.
    pub max_tests: usize,
    /// Streams per test.
    pub max_streams: u32,
    /// The QUIC certificate.
    pub identity: Identity,
    /// UDP ports QUIC tests may use (inclusive), so a firewall can open exactly these;
    /// `None`: any ephemeral port.
    pub quic_ports: Option<(u16, u16)>,
    /// Time after a test's duration before its data streams are closed ([`DRAIN`]).
    pub drain: Duration,
}

/// A running server.
pub struct Server {
    settings: Settings,
    tests: Tests,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    connections: AtomicUsize,
    started: Instant,
    /// Second (since `started`) of the last turned-away warning, so a flood logs little.
    last_warning: AtomicU64,
    /// Failed token proofs per address (`throttle`).
    failures: throttle::Failures,
}

impl Server {
    /// A server with these settings (nothing is bound yet).
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Server {
            settings,
            tests: Arc::new(Mutex::new(HashMap::new())),
            pending: Arc::new(Mutex::new(HashMap::new())),
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            last_warning: AtomicU64::new(u64::MAX),
            failures: throttle::Failures::default(),
        })
    }
}
