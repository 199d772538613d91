//! The `tcp` gate: a TCP connection to an address succeeds.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Checker, GateCheck};

/// `tcp`: a connection to this `HOST:PORT` succeeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Tcp(pub String);

impl GateCheck for Tcp {
    fn describe(&self) -> String {
        format!("TCP connect to {}", self.0)
    }

    fn validate(&self) -> Result<(), String> {
        let a = &self.0;
        if a.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
            && a.parse::<SocketAddr>().is_err()
        {
            return Err(format!("{a:?} is not HOST:PORT"));
        }
        Ok(())
    }

    fn check(&self, _: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        let addr = &self.0;
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .collect();
        let mut last = format!("{addr}: no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, bound) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::{check, serve};
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn open_and_closed_ports() {
        let url = serve(200, "version gen-2\n".into());
        let addr = url.trim_start_matches("http://").to_owned();
        check(&Check::Tcp(Tcp(addr.clone()))).expect("open port");
        let closed = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let e = check(&Check::Tcp(Tcp(closed.to_string()))).expect_err("closed");
        assert!(e.contains("refused"), "{e}");
    }
}
