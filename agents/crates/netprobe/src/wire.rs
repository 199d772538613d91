//! The probe's control protocol: one JSON object per line, at most [`MAX_LINE`] bytes.
//!
//! A client opens a control connection and sends [`Hello::Test`]; the server answers
//! [`Reply::Challenge`] with a fresh nonce, the client proves it holds the token with
//! [`Hello::Auth`] (HMAC-SHA256 under the token of the nonce followed by the request line as
//! sent, so the token never crosses the network), and the server answers
//! [`Reply::Accepted`] (with a test id and, for QUIC, the UDP port of the test's endpoint)
//! or, at any step, [`Reply::Refused`] with the reason. TCP data connections start with
//! [`Hello::Data`] naming the test; QUIC connections send the test id on their first
//! stream. When the data has arrived, the server sends [`Reply::Result`] on the control
//! connection.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The protocol name and version in every test request.
pub const PROTOCOL: &str = "labnode-probe/2";
/// The longest line either side accepts.
pub const MAX_LINE: usize = 4096;

/// The first line of a connection to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hello {
    /// Start a test.
    Test {
        /// [`PROTOCOL`].
        version: String,
        /// `tcp` or `quic`.
        protocol: String,
        /// The sender's congestion control (for the server's log and result).
        congestion: String,
        /// Parallel streams.
        streams: u32,
        /// How long the client will send, in milliseconds.
        duration_ms: u64,
    },
    /// A TCP data connection of an accepted test.
    Data {
        /// The id from [`Reply::Accepted`].
        test_id: String,
        /// Which stream, from 0.
        stream: u32,
    },
    /// The answer to [`Reply::Challenge`].
    Auth {
        /// [`crate::access::Token::sign`] of the nonce and the request line, hex.
        mac: String,
    },
}

/// A line from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Prove the token: answer with [`Hello::Auth`].
    Challenge {
        /// A fresh random nonce, hex.
        nonce: String,
    },
    /// The test may start.
    Accepted {
        /// Secret id the data connections present.
        test_id: String,
        /// UDP port of the test's QUIC endpoint (QUIC tests only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quic_port: Option<u16>,
    },
    /// The request was refused; the server goes on serving others.
    Refused {
        /// Why.
        error: String,
    },
    /// What the server received.
    Result {
        /// Bytes over all streams.
        bytes: u64,
        /// Seconds from the first byte to the last.
        seconds: f64,
        /// CPU seconds the server's receiving threads used.
        cpu_seconds: f64,
    },
}

/// Reads one line of at most [`MAX_LINE`] bytes (without its newline).
pub fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut *r, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before a line arrived",
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no end of line within {MAX_LINE} bytes"),
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Writes `msg` as one line.
pub fn write_msg<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_are_bounded() {
        let h = Hello::Data {
            test_id: "ab".into(),
            stream: 2,
        };
        let mut v = Vec::new();
        write_msg(&mut v, &h).expect("write");
        assert_eq!(v, b"{\"type\":\"data\",\"test_id\":\"ab\",\"stream\":2}\n");
        let line = read_line(&mut &v[..]).expect("read");
        assert_eq!(serde_json::from_str::<Hello>(&line).expect("parse"), h);
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(
            read_line(&mut &long[..]).expect_err("long").kind(),
            std::io::ErrorKind::InvalidData
        );
        assert_eq!(
            read_line(&mut &b""[..]).expect_err("eof").kind(),
            std::io::ErrorKind::UnexpectedEof
        );
        assert!(
            serde_json::from_str::<Hello>(r#"{"type":"data","test_id":"a","stream":1,"x":1}"#)
                .is_err()
        );
    }
}
