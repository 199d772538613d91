//! `labnode net serve|bench`: an active probe that measures what a network path gives a
//! bulk sender: goodput, RTT under load, retransmissions and CPU per gigabit, for TCP with
//! the congestion control set per socket and for QUIC (quinn, CUBIC or its experimental
//! BBR), with results stored as `net_bench` records for the `net` collector and reports.
//!
//! The parts: [`server`] (accepts only allowlisted clients, a token proven by HMAC over a
//! nonce, caps on duration, streams and tests), [`client`] (runs a [`client::Plan`]),
//! [`quic`], [`wire`] (the request and result lines), [`access`] (token and allowlist),
//! [`sys`] (socket options, congestion controls) and [`run`] (the two commands, from
//! plain [`run::ServeOptions`] and [`run::BenchOptions`]: checks, progress, the table).
//! Used by the `labnode` binary, which parses the flags (`net serve`, `net bench`), and by
//! `labnode demo`.

pub mod access;
pub mod client;
pub mod quic;
pub mod run;
pub mod server;
pub mod sys;
pub mod wire;
