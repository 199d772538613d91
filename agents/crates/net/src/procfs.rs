//! Parsers for the procfs files the collector reads: `/proc/net/dev`, `/proc/net/snmp`,
//! `/proc/net/netstat` and the sysctls under `/proc/sys/net`. All of them are per network
//! namespace: they describe the namespace of the reading process.

use std::collections::BTreeMap;

/// One line of `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterfaceCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_drops: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_drops: u64,
}

/// Parses `/proc/net/dev`: interface name to counters, in file order.
///
/// Returns the line that could not be read when one is malformed.
pub fn parse_net_dev(text: &str) -> Result<Vec<(String, InterfaceCounters)>, String> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("no `name:` in {line:?}"))?;
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{line:?}: {e}"))?;
        if v.len() < 16 {
            return Err(format!("{line:?}: {} columns, want 16", v.len()));
        }
        out.push((
            name.trim().to_owned(),
            InterfaceCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_drops: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_drops: v[11],
            },
        ));
    }
    Ok(out)
}

/// Parses the `Prefix: names` / `Prefix: values` line pairs of `/proc/net/snmp` and
/// `/proc/net/netstat` into `prefix -> name -> value`. Values that are not integers
/// (none today) are left out; negative ones (`MaxConn` is -1) are kept as they are.
pub fn parse_pairs(text: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((p1, names)), Some((p2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        let group = out.entry(p1.to_owned()).or_default();
        for (n, v) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            if let Ok(v) = v.parse() {
                group.insert(n.to_owned(), v);
            }
        }
    }
    out
}

/// A space-separated sysctl list such as `tcp_available_congestion_control`.
pub fn words(text: &str) -> Vec<String> {
    text.split_ascii_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0: 18446744073709551615 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0
";

    #[test]
    fn net_dev_columns_map_to_the_right_counters() {
        let v = parse_net_dev(NET_DEV).expect("parses");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "lo");
        assert_eq!(v[0].1.rx_bytes, 123_456);
        let e = v[1].1;
        assert_eq!(v[1].0, "eth0");
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_drops),
            (u64::MAX, 2, 3, 4)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_drops),
            (5, 6, 7, 8)
        );
    }

    #[test]
    fn net_dev_malformed_lines_are_named() {
        let e = parse_net_dev("h\nh\n eth0 1 2 3\n").expect_err("no colon");
        assert!(e.contains("eth0"), "{e}");
        let e = parse_net_dev("h\nh\n eth0: 1 2 x\n").expect_err("not a number");
        assert!(e.contains("eth0"), "{e}");
    }

    #[test]
    fn snmp_pairs() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm MaxConn OutSegs RetransSegs\nTcp: 1 -1 5000 12\n";
        let p = parse_pairs(text);
        assert_eq!(p["Tcp"]["OutSegs"], 5000);
        assert_eq!(p["Tcp"]["RetransSegs"], 12);
        assert_eq!(p["Tcp"]["MaxConn"], -1);
        assert_eq!(p["Ip"]["DefaultTTL"], 64);
    }
}
