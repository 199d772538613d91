//! `labnode net serve|bench`: an active probe that measures what a network path gives a
//! bulk sender: goodput, RTT under load, retransmissions and CPU per gigabit, for TCP with
//! the congestion control set per socket and for QUIC (quinn, CUBIC or its experimental
//! BBR), with results stored as `net_bench` records for the `net` collector and reports.

pub mod access;
pub mod cli;
pub mod client;
pub mod quic;
pub mod server;
pub mod sys;
pub mod wire;
