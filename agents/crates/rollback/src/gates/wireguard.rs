//! The `wireguard` gate: handshakes are young, read from labnode's net exporter.

use std::time::{Duration, SystemTime};

use labnode_core::config::Period;
use serde::Deserialize;

use super::http::{http_url, scrape};
use super::{Checker, GateCheck};

/// `wireguard`: the handshakes of an interface's peers (or of one) are younger than
/// `max_age`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wireguard {
    /// The `labnode serve --collector net` exporter's `/metrics` URL.
    pub metrics: String,
    /// The WireGuard interface, e.g. `wg0`.
    pub interface: String,
    /// Only this peer (public key); default every peer of the interface.
    pub peer: Option<String>,
    /// The oldest acceptable handshake (default 180s: WireGuard rekeys every 120 s).
    pub max_age: Option<Period<1_000, 86_400_000>>,
}

impl Wireguard {
    /// The oldest acceptable handshake.
    fn max_age(&self) -> Duration {
        self.max_age.map_or(Duration::from_secs(180), |a| a.get())
    }
}

impl GateCheck for Wireguard {
    fn describe(&self) -> String {
        format!(
            "WireGuard {} {} handshake younger than {}s",
            self.interface,
            self.peer
                .as_deref()
                .map_or("every peer's".to_owned(), |p| format!("peer {p}'s")),
            self.max_age().as_secs()
        )
    }

    fn validate(&self) -> Result<(), String> {
        http_url(&self.metrics)
    }

    fn check(&self, _: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        let (metrics, interface, peer) = (&self.metrics, &self.interface, self.peer.as_deref());
        let max_age = self.max_age();
        let lines = scrape(metrics, bound)?;
        let ages: Vec<(String, f64)> = lines
            .iter()
            .filter(|l| l.name == "labnode_net_wireguard_peer_handshake_age_seconds")
            .filter(|l| l.label("interface") == Some(interface))
            .filter(|l| peer.is_none_or(|p| l.label("peer") == Some(p)))
            .map(|l| (l.label("peer").unwrap_or("?").to_owned(), l.value))
            .collect();
        if ages.is_empty() {
            return Err(format!(
                "{metrics} has no labnode_net_wireguard_peer_handshake_age_seconds for {interface}{} (no handshake yet, or the net collector is not running)",
                peer.map(|p| format!(" peer {p}")).unwrap_or_default()
            ));
        }
        let old: Vec<String> = ages
            .iter()
            .filter(|(_, a)| a.is_nan() || *a > max_age.as_secs_f64())
            .map(|(p, a)| format!("peer {p} last handshake {a:.0}s ago"))
            .collect();
        if old.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{interface}: {} (max {}s)",
                old.join(", "),
                max_age.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::{check, serve};
    use super::*;

    #[test]
    fn wireguard_reads_the_exporter() {
        let url = serve(
            200,
            "labnode_net_wireguard_peer_handshake_age_seconds{interface=\"wg0\",peer=\"A=\"} 30\n\
             labnode_net_wireguard_peer_handshake_age_seconds{interface=\"wg0\",peer=\"B=\"} 400\n"
                .into(),
        );
        let wg = |interface: &str, peer: Option<&str>| {
            Check::Wireguard(Wireguard {
                metrics: url.clone(),
                interface: interface.into(),
                peer: peer.map(Into::into),
                max_age: Some(Period(Duration::from_secs(180))),
            })
        };
        check(&wg("wg0", Some("A="))).expect("young");
        let e = check(&wg("wg0", None)).expect_err("B is old");
        assert!(e.contains("peer B= last handshake 400s ago"), "{e}");
        let e = check(&wg("wg1", None)).expect_err("no such interface");
        assert!(
            e.contains("no labnode_net_wireguard_peer_handshake_age_seconds for wg1"),
            "{e}"
        );
    }
}
