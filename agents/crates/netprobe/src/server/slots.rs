//! A test's place: its [`Slot`] in the table of running tests, the data streams it claimed,
//! and the [`Hold`]s that keep it there until the control connection and every stream end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::Server;
use crate::wire::Reply;

/// What one data stream delivered.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamDone {
    pub(super) bytes: u64,
    pub(super) first: Option<Instant>,
    pub(super) last: Option<Instant>,
    pub(super) cpu: Duration,
}

impl StreamDone {
    /// The figures of all of a test's streams, as the answer to its client.
    pub(super) fn merge(all: &[StreamDone]) -> Reply {
        let bytes = all.iter().map(|s| s.bytes).sum();
        let first = all.iter().filter_map(|s| s.first).min();
        let last = all.iter().filter_map(|s| s.last).max();
        let seconds = match (first, last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Reply::Result {
            bytes,
            seconds,
            cpu_seconds: all.iter().map(|s| s.cpu.as_secs_f64()).sum(),
        }
    }
}

/// A running test: whose it is, its streams, its deadline and where they report.
pub(super) struct Slot {
    pub(super) peer: IpAddr,
    pub(super) streams: u32,
    /// Accepted + duration + drain: data streams are closed then.
    pub(super) deadline: Instant,
    pub(super) state: Mutex<SlotState>,
    pub(super) done: mpsc::Sender<StreamDone>,
}

/// What changes while a test runs.
pub(super) struct SlotState {
    /// Which of the test's streams a data connection has claimed.
    pub(super) claimed: Vec<bool>,
    /// The control connection, data streams and QUIC endpoint still running.
    pub(super) holders: usize,
    /// The control connection ended: no stream may join.
    pub(super) closed: bool,
}

/// The running tests by id.
pub(super) type Tests = Arc<Mutex<HashMap<String, Arc<Slot>>>>;

/// One holder of a test's place; the test leaves the table when the last one is dropped.
pub(super) struct Hold {
    pub(super) tests: Tests,
    pub(super) id: String,
    pub(super) slot: Arc<Slot>,
    /// Held by the control connection (whose end closes the test to new streams).
    pub(super) control: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        st.holders = st.holders.saturating_sub(1);
        st.closed |= self.control;
        if st.holders == 0 {
            tests.remove(&self.id);
        }
    }
}

impl Server {
    /// Claims `stream` of test `test_id` for a data connection from `ip`.
    pub(super) fn claim(&self, test_id: &str, ip: IpAddr, stream: u32) -> Result<Hold, String> {
        let tests = self.tests.lock().unwrap_or_else(|p| p.into_inner());
        let slot = tests
            .get(test_id)
            .cloned()
            .ok_or("no such test (it ended, or the id is wrong)")?;
        if slot.peer != ip {
            return Err("this test belongs to another client".into());
        }
        let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed || Instant::now() >= slot.deadline {
            return Err("this test has ended".into());
        }
        match st.claimed.get_mut(stream as usize) {
            Some(c) if !*c => *c = true,
            _ => {
                return Err(format!(
                    "stream {stream} is taken or out of range (0..{})",
                    slot.streams
                ));
            }
        }
        st.holders += 1;
        drop(st);
        Ok(Hold {
            tests: Arc::clone(&self.tests),
            id: test_id.to_owned(),
            slot,
            control: false,
        })
    }
}
