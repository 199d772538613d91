//! The `net` collector: the TCP congestion control in force and the ones available, the
//! default qdisc, per-interface counters, TCP segment counters, every WireGuard peer (over
//! generic netlink from the kernel module, or from wireguard-go's UAPI socket) and the
//! newest `labnode net bench` results from the snapshot store. No subprocesses.
//!
//! Everything under `/proc/net` and `/proc/sys/net` describes the network namespace of the
//! process, so an agent started inside a namespace reports that namespace.
//!
//! [`NetCollector`] implements `labnode_core::Collector`; [`Config`] is its `collectors.net`
//! section; [`probe`] holds the `net_bench` record that `labnode net bench` writes. Used by
//! the `labnode` binary's registry and by `labnode-netprobe`.

pub mod firewall;
pub mod netlink;
pub mod probe;
pub mod procfs;
pub mod wireguard;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use labnode_core::snapshot::{RecordIndex, Store};
use labnode_core::sys::{FileError, read_file as read};
use labnode_core::{CollectError, Kind, Metrics, Polled, Timing, Unit};

use crate::wireguard::{Device, netlink as wg_netlink, uapi};

/// Where wireguard-go and other userspace implementations put their UAPI sockets.
pub const DEFAULT_WIREGUARD_SOCKET_DIR: &str = "/var/run/wireguard";

labnode_core::collector_config! {
    /// Configuration of the `net` collector (the `collectors.net` section): polled every 15s
    /// by default, each run within 5s.
    pub struct Config {
        defaults: interval Duration::from_secs(15), deadline Duration::from_secs(5);
        /// Interfaces to leave out: exact names, or prefixes ending in `*` (e.g. `veth*`).
        #[serde(default)]
        pub exclude_interfaces: Vec<String>,
        /// Read kernel WireGuard devices over generic netlink (default true).
        pub wireguard_netlink: Option<bool>,
        /// Directory of userspace WireGuard UAPI sockets (default `/var/run/wireguard`).
        pub wireguard_socket_dir: Option<PathBuf>,
        /// procfs mount (default `/proc`).
        pub proc_root: Option<PathBuf>,
        /// sysfs mount (default `/sys`), to tell kernel WireGuard interfaces apart.
        pub sys_root: Option<PathBuf>,
    }
}

/// Why a collection failed: a procfs or sysfs file could not be read or parsed.
pub type NetError = FileError;

/// The `net` collector.
#[derive(Debug)]
pub struct NetCollector {
    timing: Timing,
    proc_root: PathBuf,
    sys_root: PathBuf,
    socket_dir: PathBuf,
    netlink: bool,
    exclude: Vec<String>,
    records: Mutex<RecordIndex>,
}

impl NetCollector {
    /// A collector with `cfg`, exporting bench results from the store at `snapshot_dir`.
    pub fn new(cfg: &Config, snapshot_dir: &Path) -> Self {
        NetCollector {
            timing: Timing::of(cfg),
            proc_root: cfg.proc_root.clone().unwrap_or_else(|| "/proc".into()),
            sys_root: cfg.sys_root.clone().unwrap_or_else(|| "/sys".into()),
            socket_dir: cfg
                .wireguard_socket_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_WIREGUARD_SOCKET_DIR.into()),
            netlink: cfg.wireguard_netlink.unwrap_or(true),
            exclude: cfg.exclude_interfaces.clone(),
            records: Mutex::new(RecordIndex::new(
                Store::new(snapshot_dir),
                probe::RECORD_KIND,
            )),
        }
    }

    fn excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    }

    fn sysctl(&self, rel: &str) -> Result<String, NetError> {
        read(&self.proc_root.join("sys/net").join(rel)).map(|s| s.trim().to_owned())
    }

    fn congestion(&self, m: &mut Metrics) -> Result<(), NetError> {
        let current = self.sysctl("ipv4/tcp_congestion_control")?;
        m.gauge(
            "labnode_net_congestion_control_info",
            "The TCP congestion control in force (net.ipv4.tcp_congestion_control); the value is 1.",
            Unit::Info,
        )
        .push(&[("algorithm", &current)], 1.0);
        let avail = self.sysctl("ipv4/tcp_available_congestion_control")?;
        let fam = m.gauge(
            "labnode_net_congestion_control_available",
            "TCP congestion controls the kernel has loaded (net.ipv4.tcp_available_congestion_control); the value is 1.",
            Unit::Info,
        );
        for a in procfs::words(&avail).into_iter().collect::<BTreeSet<_>>() {
            fam.push(&[("algorithm", &a)], 1.0);
        }
        // Absent on kernels without the sysctl, never faked.
        if let Ok(q) = self.sysctl("core/default_qdisc") {
            m.gauge(
                "labnode_net_default_qdisc_info",
                "The qdisc new interfaces get (net.core.default_qdisc); the value is 1.",
                Unit::Info,
            )
            .push(&[("qdisc", &q)], 1.0);
        }
        Ok(())
    }

    fn interfaces(&self, m: &mut Metrics) -> Result<Vec<String>, NetError> {
        let path = self.proc_root.join("net/dev");
        let list =
            procfs::parse_net_dev(&read(&path)?).map_err(|what| NetError::Parse { path, what })?;
        let names: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
        for (name, c) in list.iter().filter(|(n, _)| !self.excluded(n)) {
            let i: &[(&str, &str)] = &[("interface", name)];
            let rx = [("interface", name.as_str()), ("direction", "receive")];
            let tx = [("interface", name.as_str()), ("direction", "transmit")];
            let counters = [
                (
                    "labnode_net_interface_receive_bytes_total",
                    "Bytes the interface received.",
                    Unit::Bytes,
                    c.rx_bytes,
                ),
                (
                    "labnode_net_interface_transmit_bytes_total",
                    "Bytes the interface sent.",
                    Unit::Bytes,
                    c.tx_bytes,
                ),
                (
                    "labnode_net_interface_receive_packets_total",
                    "Packets the interface received.",
                    Unit::Count,
                    c.rx_packets,
                ),
                (
                    "labnode_net_interface_transmit_packets_total",
                    "Packets the interface sent.",
                    Unit::Count,
                    c.tx_packets,
                ),
            ];
            for (name, help, unit, v) in counters {
                m.counter(name, help, unit).push(i, v as f64);
            }
            let by_direction = [
                (
                    "labnode_net_interface_errors_total",
                    "Interface errors, by direction (receive, transmit); sum them for the total.",
                    (c.rx_errors, c.tx_errors),
                ),
                (
                    "labnode_net_interface_drops_total",
                    "Packets the interface dropped, by direction (receive, transmit); sum them for the total.",
                    (c.rx_drops, c.tx_drops),
                ),
            ];
            for (name, help, (r, t)) in by_direction {
                m.counter(name, help, Unit::Count)
                    .push(&rx, r as f64)
                    .push(&tx, t as f64);
            }
        }
        Ok(names)
    }

    fn tcp(&self, m: &mut Metrics) -> Result<(), NetError> {
        let path = self.proc_root.join("net/snmp");
        let snmp = procfs::parse_pairs(&read(&path)?);
        let tcp = snmp.get("Tcp").ok_or_else(|| NetError::Parse {
            path: path.clone(),
            what: "no Tcp lines".into(),
        })?;
        let get = |k: &str| {
            tcp.get(k).copied().ok_or_else(|| NetError::Parse {
                path: path.clone(),
                what: format!("no Tcp {k}"),
            })
        };
        let counter = |m: &mut Metrics, name: &str, help: &str, v: i64| {
            m.counter(name, help, Unit::Count)
                .push(&[], v.max(0) as f64);
        };
        counter(
            m,
            "labnode_net_tcp_sent_segments_total",
            "TCP segments sent, retransmissions included (Tcp OutSegs).",
            get("OutSegs")?,
        );
        counter(
            m,
            "labnode_net_tcp_retransmitted_segments_total",
            "TCP segments retransmitted (Tcp RetransSegs).",
            get("RetransSegs")?,
        );
        counter(
            m,
            "labnode_net_tcp_received_segments_total",
            "TCP segments received (Tcp InSegs).",
            get("InSegs")?,
        );
        m.gauge(
            "labnode_net_tcp_established_connections",
            "TCP connections in ESTABLISHED or CLOSE-WAIT (Tcp CurrEstab).",
            Unit::Count,
        )
        .push(&[], get("CurrEstab")?.max(0) as f64);
        // TcpExt is extra detail: absent where the file or a field is missing.
        if let Ok(text) = read(&self.proc_root.join("net/netstat")) {
            let ext = procfs::parse_pairs(&text);
            if let Some(e) = ext.get("TcpExt") {
                for (field, name, help) in [
                    (
                        "TCPTimeouts",
                        "labnode_net_tcp_timeouts_total",
                        "TCP retransmission timeouts (TcpExt TCPTimeouts).",
                    ),
                    (
                        "ListenDrops",
                        "labnode_net_tcp_listen_drops_total",
                        "Connection attempts dropped at a listening socket (TcpExt ListenDrops).",
                    ),
                ] {
                    if let Some(v) = e.get(field) {
                        counter(m, name, help, *v);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the input firewall drops what no rule accepts (see [`firewall`]). Never fails
    /// the collector: where nf_tables cannot be read (no `CAP_NET_ADMIN`, no nf_tables) or
    /// cannot decide (legacy iptables tables), the series is absent.
    fn firewall(&self, m: &mut Metrics) {
        let chains = match firewall::chains(self.timing.deadline) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("firewall not read: {e}");
                return;
            }
        };
        if let Some(deny) =
            firewall::default_deny(&chains, firewall::Families::read(&self.proc_root))
        {
            m.gauge(
                "labnode_net_firewall_default_deny",
                "1 if, for IPv4 and (when on) IPv6, an nf_tables input base chain has the policy drop; 0 if input is accepted by default.",
                Unit::Info,
            )
            .push(&[], if deny { 1.0 } else { 0.0 });
        }
    }

    /// WireGuard interfaces of this namespace: kernel ones over netlink, the rest through
    /// UAPI sockets whose interface exists here (the socket directory is shared by every
    /// namespace, so a socket alone proves nothing).
    fn wireguard(&self, here: &[String]) -> (Vec<Device>, Vec<String>) {
        let mut devices = Vec::new();
        let mut errors = Vec::new();
        let kernel: Vec<&String> = here
            .iter()
            .filter(|n| {
                std::fs::read_to_string(self.sys_root.join("class/net").join(n).join("uevent"))
                    .is_ok_and(|u| u.lines().any(|l| l == "DEVTYPE=wireguard"))
            })
            .collect();
        if self.netlink && !kernel.is_empty() {
            match wg_netlink::Client::open(self.timing.deadline).and_then(|mut c| {
                let fam = c.wireguard_family()?;
                Ok((c, fam))
            }) {
                Ok((mut c, Some(fam))) => {
                    for n in &kernel {
                        match c.device(fam, n) {
                            Ok(d) => devices.push(d),
                            Err(e) => errors.push(format!("{n}: {e}")),
                        }
                    }
                }
                Ok((_, None)) => errors.push("sysfs lists WireGuard interfaces but the kernel has no wireguard netlink family".into()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let sockets = match std::fs::read_dir(&self.socket_dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                errors.push(format!("{}: {e}", self.socket_dir.display()));
                Vec::new()
            }
        };
        let mut sockets: Vec<PathBuf> = sockets;
        sockets.sort();
        for s in sockets {
            let Some(name) = s
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".sock"))
            else {
                continue;
            };
            if !here.iter().any(|h| h == name) || devices.iter().any(|d| d.name == name) {
                continue;
            }
            match uapi::get(&s, name, self.timing.deadline) {
                Ok(d) => devices.push(d),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (devices, errors)
    }

    fn wireguard_metrics(&self, m: &mut Metrics, devices: &[Device], now: SystemTime) {
        for d in devices.iter().filter(|d| !self.excluded(&d.name)) {
            m.gauge(
                "labnode_net_wireguard_interface_info",
                "A WireGuard interface and how it was read (source: netlink from the kernel module, uapi from a userspace implementation's socket); the value is 1.",
                Unit::Info,
            )
            .push(&[("interface", &d.name), ("source", d.source.as_str())], 1.0);
            if let Some(p) = d.listen_port {
                m.gauge(
                    "labnode_net_wireguard_listen_port",
                    "The UDP port the WireGuard interface listens on.",
                    Unit::Count,
                )
                .push(&[("interface", &d.name)], f64::from(p));
            }
            m.gauge(
                "labnode_net_wireguard_peers",
                "Peers configured on the WireGuard interface.",
                Unit::Count,
            )
            .push(&[("interface", &d.name)], d.peers.len() as f64);
            for p in &d.peers {
                let key = p.key_base64();
                let l: &[(&str, &str)] = &[("interface", &d.name), ("peer", &key)];
                if let Some(hs) = p.last_handshake {
                    // A handshake a moment in the future (clock step) counts as just now.
                    let age = now.duration_since(hs).unwrap_or_default();
                    m.gauge(
                        "labnode_net_wireguard_peer_handshake_age_seconds",
                        "Seconds since the latest handshake with the peer (an age, not a timestamp); absent if it never shook hands.",
                        Unit::Seconds,
                    )
                    .push(l, age.as_secs_f64());
                }
                let values = [
                    (
                        "labnode_net_wireguard_peer_receive_bytes_total",
                        "Bytes received from the peer.",
                        Kind::Counter,
                        Unit::Bytes,
                        p.rx_bytes as f64,
                    ),
                    (
                        "labnode_net_wireguard_peer_transmit_bytes_total",
                        "Bytes sent to the peer.",
                        Kind::Counter,
                        Unit::Bytes,
                        p.tx_bytes as f64,
                    ),
                    (
                        "labnode_net_wireguard_peer_allowed_ips",
                        "Allowed-IP ranges routed to the peer.",
                        Kind::Gauge,
                        Unit::Count,
                        p.allowed_ips as f64,
                    ),
                ];
                for (name, help, kind, unit, v) in values {
                    m.family(name, help, kind, unit).push(l, v);
                }
                if let Some(e) = p.endpoint {
                    let e = e.to_string();
                    m.gauge(
                        "labnode_net_wireguard_peer_endpoint_info",
                        "The peer's current endpoint (address:port); the value is 1.",
                        Unit::Info,
                    )
                    .push(
                        &[("interface", &d.name), ("peer", &key), ("endpoint", &e)],
                        1.0,
                    );
                }
                if let Some(k) = p.persistent_keepalive {
                    m.gauge(
                        "labnode_net_wireguard_peer_persistent_keepalive_seconds",
                        "The peer's persistent keepalive interval; absent when off.",
                        Unit::Seconds,
                    )
                    .push(l, f64::from(k));
                }
            }
        }
    }

    fn probe_results(&self, m: &mut Metrics) -> Result<(), CollectError> {
        let mut idx = self.records.lock().unwrap_or_else(|p| p.into_inner());
        idx.refresh()?;
        for e in idx.errors() {
            tracing::warn!("snapshot store: {e}");
        }
        let mut parsed = Vec::new();
        for r in idx.records() {
            match serde_json::from_value::<probe::BenchRecord>(r.data.clone()) {
                Ok(b) => parsed.push((r.taken_at_unix, b)),
                Err(e) => tracing::warn!("{}: net_bench record: {e}", r.path.display()),
            }
        }
        let latest = probe::latest_metrics(parsed.iter().map(|(t, b)| (*t, b)));
        for f in latest.families() {
            let fam = m.family(&f.name, &f.help, f.kind, f.unit);
            fam.series.extend(f.series.iter().cloned());
        }
        Ok(())
    }
}

impl Polled for NetCollector {
    const NAME: &'static str = "net";
    fn timing(&self) -> Timing {
        self.timing
    }
    fn poll(&self) -> Result<Metrics, CollectError> {
        let mut m = Metrics::new();
        self.congestion(&mut m)?;
        let here = self.interfaces(&mut m)?;
        self.tcp(&mut m)?;
        self.firewall(&mut m);
        let (devices, errors) = self.wireguard(&here);
        self.wireguard_metrics(&mut m, &devices, SystemTime::now());
        if !errors.is_empty() {
            // A WireGuard interface we cannot read is a failure, not a silent gap: the
            // handshake alert depends on these series.
            return Err(format!("WireGuard: {}", errors.join("; ")).into());
        }
        self.probe_results(&mut m)?;
        m.prune_empty();
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labnode_core::Collector;

    fn fake_proc(dir: &Path) {
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w("sys/net/ipv4/tcp_congestion_control", "cubic\n");
        w(
            "sys/net/ipv4/tcp_available_congestion_control",
            "reno cubic bbr\n",
        );
        w("sys/net/core/default_qdisc", "pfifo_fast\n");
        w(
            "net/dev",
            "h\nh\n    lo: 1 2 0 0 0 0 0 0 1 2 0 0 0 0 0 0\n  eth0: 100 10 1 2 0 0 0 0 200 20 3 4 0 0 0 0\nveth9: 5 5 0 0 0 0 0 0 5 5 0 0 0 0 0 0\n",
        );
        w(
            "net/snmp",
            "Tcp: InSegs OutSegs RetransSegs CurrEstab\nTcp: 7 50 2 3\n",
        );
        w(
            "net/netstat",
            "TcpExt: TCPTimeouts ListenDrops\nTcpExt: 4 5\n",
        );
    }

    fn collector(root: &Path, exclude: &[&str]) -> NetCollector {
        let cfg = Config {
            proc_root: Some(root.join("proc")),
            sys_root: Some(root.join("sys")),
            wireguard_socket_dir: Some(root.join("wg")),
            exclude_interfaces: exclude.iter().map(|s| (*s).to_owned()).collect(),
            ..Config::default()
        };
        NetCollector::new(&cfg, &root.join("snapshots"))
    }

    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        m.value(name, labels)
    }

    #[test]
    fn reads_procfs_into_the_contract_names() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_proc(&t.path().join("proc"));
        let c = collector(t.path(), &["veth*"]);
        let m = c.collect().expect("collects");
        m.validate().expect("valid");
        assert_eq!(
            value(
                &m,
                "labnode_net_congestion_control_info",
                &[("algorithm", "cubic")]
            ),
            Some(1.0)
        );
        assert_eq!(
            m.families()
                .iter()
                .find(|f| f.name == "labnode_net_congestion_control_info")
                .map(|f| f.series.len()),
            Some(1),
            "only the algorithm in force"
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_congestion_control_available",
                &[("algorithm", "bbr")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_default_qdisc_info",
                &[("qdisc", "pfifo_fast")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_interface_receive_bytes_total",
                &[("interface", "eth0")]
            ),
            Some(100.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_interface_transmit_packets_total",
                &[("interface", "eth0")]
            ),
            Some(20.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_interface_errors_total",
                &[("interface", "eth0"), ("direction", "transmit")]
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_interface_drops_total",
                &[("interface", "eth0"), ("direction", "receive")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_interface_receive_bytes_total",
                &[("interface", "veth9")]
            ),
            None,
            "excluded"
        );
        assert_eq!(
            value(&m, "labnode_net_tcp_sent_segments_total", &[]),
            Some(50.0)
        );
        assert_eq!(
            value(&m, "labnode_net_tcp_retransmitted_segments_total", &[]),
            Some(2.0)
        );
        assert_eq!(value(&m, "labnode_net_tcp_timeouts_total", &[]), Some(4.0));
        assert!(m.families().iter().all(|f| !f.name.contains("wireguard")));
    }

    #[test]
    fn a_missing_file_is_a_named_failure() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_proc(&t.path().join("proc"));
        std::fs::remove_file(t.path().join("proc/net/snmp")).expect("rm");
        let e = collector(t.path(), &[])
            .collect()
            .expect_err("no snmp")
            .to_string();
        assert!(e.contains("net/snmp"), "{e}");
    }

    #[test]
    fn uapi_sockets_of_other_namespaces_are_skipped_and_a_broken_one_is_an_error() {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixListener;
        let t = tempfile::tempdir().expect("tempdir");
        fake_proc(&t.path().join("proc"));
        std::fs::create_dir_all(t.path().join("wg")).expect("mkdir");
        // A socket for an interface this namespace does not have: ignored.
        let _other = UnixListener::bind(t.path().join("wg/wgelsewhere.sock")).expect("bind");
        let c = collector(t.path(), &[]);
        c.collect()
            .expect("the other namespace's socket is not read");
        // A socket for eth0 (pretend it is wireguard-go): read; peer series appear.
        let l = UnixListener::bind(t.path().join("wg/eth0.sock")).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = [0u8; 7];
            s.read_exact(&mut req).expect("read");
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                - 42;
            let a = format!(
                "listen_port=51820\npublic_key={}\nendpoint=10.0.0.2:51820\nlast_handshake_time_sec={now}\nlast_handshake_time_nsec=0\nrx_bytes=10\ntx_bytes=20\nallowed_ip=10.1.0.0/24\nallowed_ip=10.2.0.0/24\npublic_key={}\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nrx_bytes=0\ntx_bytes=0\nerrno=0\n\n",
                "ff".repeat(32),
                "01".repeat(32)
            );
            s.write_all(a.as_bytes()).expect("write");
            // The second accept answers garbage: the collection after it must fail.
            let (mut s, _) = l.accept().expect("accept");
            s.read_exact(&mut req).expect("read");
            s.write_all(b"errno=5\n\n").expect("write");
        });
        let m = c.collect().expect("collects");
        m.validate().expect("valid");
        let key = wireguard::base64(&[0xff; 32]);
        let age = value(
            &m,
            "labnode_net_wireguard_peer_handshake_age_seconds",
            &[("peer", &key)],
        )
        .expect("age");
        assert!((42.0..44.0).contains(&age), "{age}");
        assert_eq!(
            value(
                &m,
                "labnode_net_wireguard_peer_receive_bytes_total",
                &[("peer", &key)]
            ),
            Some(10.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_wireguard_peer_transmit_bytes_total",
                &[("peer", &key)]
            ),
            Some(20.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_wireguard_peer_allowed_ips",
                &[("peer", &key)]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_wireguard_peer_endpoint_info",
                &[("endpoint", "10.0.0.2:51820")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &m,
                "labnode_net_wireguard_interface_info",
                &[("interface", "eth0"), ("source", "uapi")]
            ),
            Some(1.0)
        );
        let never = wireguard::base64(&[0x01; 32]);
        assert_eq!(
            value(
                &m,
                "labnode_net_wireguard_peer_handshake_age_seconds",
                &[("peer", &never)]
            ),
            None,
            "never shook hands: absent"
        );
        let e = c.collect().expect_err("errno=5").to_string();
        assert!(e.contains("eth0.sock") && e.contains("errno=5"), "{e}");
        server.join().expect("server");
    }

    #[test]
    fn exports_the_newest_bench_results_from_the_store() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_proc(&t.path().join("proc"));
        let c = collector(t.path(), &[]);
        let m = c.collect().expect("empty store");
        assert!(
            m.families()
                .iter()
                .all(|f| !f.name.starts_with("labnode_net_probe"))
        );
        let rec = probe::BenchRecord {
            path: "wireguard".into(),
            peer: "p".into(),
            streams: 1,
            duration_seconds: 1.0,
            runs: vec![probe::RunResult {
                protocol: "tcp".into(),
                congestion: "bbr".into(),
                throughput_bits_per_second: 3e8,
                bytes: 37_500_000,
                seconds: 1.0,
                rtt_seconds: Some(0.001),
                min_rtt_seconds: None,
                retransmitted: 0,
                client_cpu_seconds: 0.1,
                server_cpu_seconds: 0.1,
                gso: None,
                experimental: false,
            }],
        };
        let mut snap = labnode_core::snapshot::Snapshot::new(
            "x",
            labnode_core::host::facts(&Default::default()),
        )
        .expect("snap");
        snap.add_metrics("net bench", &probe::record_metrics(&rec));
        snap.add_record(probe::RECORD_KIND, &rec).expect("record");
        Store::new(t.path().join("snapshots"))
            .write(&snap)
            .expect("write");
        let m = c.collect().expect("collects");
        m.validate().expect("valid");
        assert_eq!(
            value(
                &m,
                probe::names::THROUGHPUT,
                &[
                    ("protocol", "tcp"),
                    ("congestion", "bbr"),
                    ("path", "wireguard")
                ]
            ),
            Some(3e8 / 8.0)
        );
        assert!(value(&m, probe::names::TIMESTAMP, &[("path", "wireguard")]).is_some());
    }
}
