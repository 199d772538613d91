//! The `zfs_pools` gate: pools are ONLINE, read from labnode's zfs exporter.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::http::{http_url, scrape};
use super::{Checker, GateCheck};

/// `zfs_pools`: these pools (or every pool reported) are ONLINE.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZfsPools {
    /// The `labnode serve --collector zfs` exporter's `/metrics` URL.
    pub metrics: String,
    /// These pools (default: every pool the exporter reports, at least one).
    #[serde(default)]
    pub pools: Vec<String>,
}

impl GateCheck for ZfsPools {
    fn describe(&self) -> String {
        if self.pools.is_empty() {
            "every ZFS pool ONLINE".into()
        } else {
            format!("ZFS pools ONLINE: {}", self.pools.join(", "))
        }
    }

    fn validate(&self) -> Result<(), String> {
        http_url(&self.metrics)
    }

    fn check(&self, _: &mut Checker, _since: SystemTime, bound: Duration) -> Result<(), String> {
        let metrics = &self.metrics;
        let lines = scrape(metrics, bound)?;
        let states: Vec<(&str, &str)> = lines
            .iter()
            .filter(|l| l.name == "labnode_zfs_pool_state" && l.value == 1.0)
            .filter_map(|l| Some((l.label("pool")?, l.label("state")?)))
            .collect();
        let want: Vec<&str> = if self.pools.is_empty() {
            let mut all: Vec<&str> = states.iter().map(|(p, _)| *p).collect();
            all.dedup();
            all
        } else {
            self.pools.iter().map(String::as_str).collect()
        };
        if want.is_empty() {
            return Err(format!(
                "{metrics} reports no ZFS pool (is the zfs collector running?)"
            ));
        }
        let bad: Vec<String> = want
            .iter()
            .filter_map(|p| match states.iter().find(|(q, _)| q == p) {
                Some((_, "online")) => None,
                Some((_, s)) => Some(format!("{p} is {}", s.to_uppercase())),
                None => Some(format!("{p} is not reported")),
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::testing::{check, serve};
    use super::*;

    #[test]
    fn zfs_reads_the_exporter() {
        let url = serve(
            200,
            "labnode_zfs_pool_state{pool=\"tank\",state=\"online\"} 1\n\
             labnode_zfs_pool_state{pool=\"tank\",state=\"degraded\"} 0\n\
             labnode_zfs_pool_state{pool=\"scratch\",state=\"online\"} 0\n\
             labnode_zfs_pool_state{pool=\"scratch\",state=\"degraded\"} 1\n"
                .into(),
        );
        let z = |pools: &[&str]| {
            Check::ZfsPools(ZfsPools {
                metrics: url.clone(),
                pools: pools.iter().map(|p| (*p).to_owned()).collect(),
            })
        };
        check(&z(&["tank"])).expect("online");
        let e = check(&z(&[])).expect_err("scratch degraded");
        assert_eq!(e, "scratch is DEGRADED");
        let e = check(&z(&["tonk"])).expect_err("missing");
        assert_eq!(e, "tonk is not reported");
    }
}
