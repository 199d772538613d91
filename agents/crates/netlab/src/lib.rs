//! Two network namespaces joined by an emulated link, for the net tests, benchmarks and
//! `labnode demo`: a veth pair (rate shaped with tbf), or a TUN relay that adds delay and
//! random loss (shaped with tbf too), and optionally a wireguard-go tunnel across it.
//!
//! [`Lab::up`] builds it; dropping the [`Lab`] tears everything down (processes, the relay,
//! both namespaces and with them every interface, leftover UAPI sockets). Names derive from
//! the lab's name, so labs of different tests never collide; the wireguard-go socket
//! directory is shared by every namespace, which is why interface names are unique too.
//!
//! Used by `labnode demo`, the `labnode-netlab` binary the system tests and benchmarks
//! run, and the netprobe tests.

pub mod relay;
pub mod signals;

pub use signals::Signals;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where wireguard-go puts its UAPI sockets.
pub const WIREGUARD_SOCKET_DIR: &str = "/var/run/wireguard";

/// What went wrong building or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command failed.
    #[error("`{command}` failed: {why}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output or exit status.
        why: String,
    },
    /// A system call or file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A bad specification.
    #[error("{0}")]
    Spec(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Gives `dev` in the namespace `netns` the address `address/24`.
fn add_address(netns: &str, address: Ipv4Addr, dev: &str) -> Result<(), LabError> {
    let cidr = format!("{address}/24");
    run(&["ip", "-n", netns, "addr", "add", &cidr, "dev", dev]).map(drop)
}

/// Runs a command, failing with its stderr.
pub fn run(args: &[&str]) -> Result<String, LabError> {
    let line = args.join(" ");
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| LabError::Spec("empty command".into()))?;
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            command: line.clone(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: line,
            why: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The link between the two namespaces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// A veth pair: kernel speed, no delay or loss.
    Veth,
    /// TUN devices and a userspace relay: adds delay and loss (slower than veth; for
    /// WAN-like rates of a few hundred Mbit/s).
    Relay {
        /// Round-trip time added (half each way).
        rtt: Duration,
        /// Probability of losing a packet, per direction, 0..1.
        loss: f64,
    },
}

/// A lab to build.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Short name, `[a-z0-9]`, at most 8 characters: namespaces are `labnode-<name>-a|b`,
    /// interfaces `<name>a|b` and `wg<name>a|b`.
    pub name: String,
    /// The link.
    pub link: Link,
    /// Rate in bits per second, shaped with tbf at both ends; `None` leaves it unshaped.
    pub rate_bits: Option<u64>,
    /// How long a full tbf queue takes to drain (the bottleneck buffer).
    pub queue: Duration,
    /// Build a wireguard-go tunnel across the link.
    pub wireguard: bool,
}

/// One end of a lab.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct End {
    /// Network namespace name (`ip netns`).
    pub netns: String,
    /// The link interface.
    pub interface: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// The WireGuard interface, when there is a tunnel.
    pub wireguard_interface: Option<String>,
    /// Its tunnel address.
    pub wireguard_address: Option<Ipv4Addr>,
    /// Its public key (base64), when there is a tunnel.
    pub wireguard_public_key: Option<String>,
}

/// What a running lab looks like (the binary prints it as JSON).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Layout {
    /// The first end.
    pub a: End,
    /// The second end.
    pub b: End,
    /// The WireGuard UDP port at both ends.
    pub wireguard_port: Option<u16>,
}

/// A running lab; dropping it tears it down.
#[derive(Debug)]
pub struct Lab {
    /// Names and addresses.
    pub layout: Layout,
    namespaces: Vec<String>,
    children: Vec<Child>,
    sockets: Vec<PathBuf>,
    relay: Option<relay::Relay>,
}

const WG_PORT: u16 = 51820;
const LINK_NET: [u8; 3] = [10, 77, 0];
const WG_NET: [u8; 3] = [10, 78, 0];

fn addr(net: [u8; 3], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], host)
}

/// The tbf settings for `rate`: a burst of 1 ms at rate (at least 128 KiB, so GSO
/// packets pass whole) and a queue that drains in `queue`.
pub fn tbf_args(rate_bits: u64, queue: Duration) -> (u64, u64) {
    let bytes_per_s = rate_bits / 8;
    let burst = (bytes_per_s / 1000).max(128 * 1024);
    let limit = ((bytes_per_s as f64 * queue.as_secs_f64()) as u64).max(2 * burst);
    (burst, limit)
}

/// Enters the namespace `name` on the calling thread.
fn enter(name: &str) -> Result<(), LabError> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(io(format!("open {path}")))?;
    // SAFETY: f is an open namespace fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io(format!("setns {path}"))(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on the calling thread inside the network namespace `netns` (an `ip netns`
/// name), then puts the thread back where it was. What `f` reads under `/proc/self/net` and
/// `/proc/sys/net`, the sockets it opens and the threads it starts belong to `netns`; run it
/// on the main thread when it reads `/proc/self/net`, which follows the thread group's leader.
/// `labnode demo` collects this way, so the `net` collector sees a lab end as its host.
pub fn within<T>(netns: &str, f: impl FnOnce() -> T) -> Result<T, LabError> {
    let here = "/proc/thread-self/ns/net";
    let home = std::fs::File::open(here).map_err(io(format!("open {here}")))?;
    enter(netns)?;
    let out = f();
    // SAFETY: home is an open namespace fd.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io(format!("back to the namespace of {here}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(out)
}

/// Opens the two TUN devices, each in its namespace, on a helper thread (so this thread
/// stays where it was).
fn open_tuns(a: (&str, &str), b: (&str, &str)) -> Result<(OwnedFd, OwnedFd), LabError> {
    let (a, b) = (
        (a.0.to_owned(), a.1.to_owned()),
        (b.0.to_owned(), b.1.to_owned()),
    );
    std::thread::spawn(move || -> Result<(OwnedFd, OwnedFd), LabError> {
        enter(&a.0)?;
        let fa = relay::open_tun(&a.1).map_err(io(format!("TUN {} in {}", a.1, a.0)))?;
        enter(&b.0)?;
        let fb = relay::open_tun(&b.1).map_err(io(format!("TUN {} in {}", b.1, b.0)))?;
        Ok((fa, fb))
    })
    .join()
    .map_err(|_| LabError::Spec("the TUN thread panicked".into()))?
}

fn wg_keypair() -> Result<(String, String), LabError> {
    let private = run(&["wg", "genkey"])?.trim().to_owned();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io("wg pubkey"))?;
    if let Some(mut i) = child.stdin.take() {
        std::io::Write::write_all(&mut i, format!("{private}\n").as_bytes())
            .map_err(io("wg pubkey"))?;
    }
    let out = child.wait_with_output().map_err(io("wg pubkey"))?;
    Ok((
        private,
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    ))
}

impl Lab {
    /// Builds the lab. Needs root, `ip`, `tc`, and for WireGuard `wireguard-go` and `wg`.
    pub fn up(spec: &Spec) -> Result<Lab, LabError> {
        let n = &spec.name;
        if n.is_empty()
            || n.len() > 8
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(LabError::Spec(format!(
                "lab name {n:?}: 1 to 8 of a-z, 0-9"
            )));
        }
        let end = |s: &str, host: u8| End {
            netns: format!("labnode-{n}-{s}"),
            interface: format!("{n}{s}"),
            address: addr(LINK_NET, host),
            wireguard_interface: spec.wireguard.then(|| format!("wg{n}{s}")),
            wireguard_address: spec.wireguard.then(|| addr(WG_NET, host)),
            wireguard_public_key: None,
        };
        let mut lab = Lab {
            layout: Layout {
                a: end("a", 1),
                b: end("b", 2),
                wireguard_port: spec.wireguard.then_some(WG_PORT),
            },
            namespaces: Vec::new(),
            children: Vec::new(),
            sockets: Vec::new(),
            relay: None,
        };
        // Leftovers of an earlier lab of this name (a killed test) go first.
        lab.clear_leftovers();
        lab.build(spec)?;
        Ok(lab)
    }

    fn clear_leftovers(&self) {
        for e in [&self.layout.a, &self.layout.b] {
            let _ = run(&["ip", "netns", "del", &e.netns]);
            if let Some(w) = &e.wireguard_interface {
                let _ = std::fs::remove_file(format!("{WIREGUARD_SOCKET_DIR}/{w}.sock"));
            }
        }
    }

    fn build(&mut self, spec: &Spec) -> Result<(), LabError> {
        let (a, b) = (self.layout.a.clone(), self.layout.b.clone());
        for e in [&a, &b] {
            run(&["ip", "netns", "add", &e.netns])?;
            self.namespaces.push(e.netns.clone());
            run(&["ip", "-n", &e.netns, "link", "set", "lo", "up"])?;
        }
        match spec.link {
            Link::Veth => {
                run(&[
                    "ip",
                    "link",
                    "add",
                    &a.interface,
                    "netns",
                    &a.netns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &b.interface,
                    "netns",
                    &b.netns,
                ])?;
            }
            Link::Relay { rtt, loss } => {
                if !(0.0..1.0).contains(&loss) {
                    return Err(LabError::Spec(format!("loss {loss} must be in [0, 1)")));
                }
                let (fa, fb) = open_tuns((&a.netns, &a.interface), (&b.netns, &b.interface))?;
                self.relay = Some(
                    relay::Relay::start(
                        fa,
                        fb,
                        relay::Impairment {
                            delay: rtt / 2,
                            loss,
                        },
                    )
                    .map_err(io("starting the relay"))?,
                );
            }
        }
        for e in [&a, &b] {
            add_address(&e.netns, e.address, &e.interface)?;
            run(&["ip", "-n", &e.netns, "link", "set", &e.interface, "up"])?;
            if let Some(rate) = spec.rate_bits {
                let (burst, limit) = tbf_args(rate, spec.queue);
                run(&[
                    "tc",
                    "-n",
                    &e.netns,
                    "qdisc",
                    "replace",
                    "dev",
                    &e.interface,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{rate}bit"),
                    "burst",
                    &burst.to_string(),
                    "limit",
                    &limit.to_string(),
                ])?;
            }
        }
        if spec.wireguard {
            self.wireguard(&a, &b)?;
        }
        Ok(())
    }

    fn wireguard(&mut self, a: &End, b: &End) -> Result<(), LabError> {
        let keys = [wg_keypair()?, wg_keypair()?];
        for (i, e) in [a, b].into_iter().enumerate() {
            let Some(wg) = &e.wireguard_interface else {
                continue;
            };
            let sock = PathBuf::from(format!("{WIREGUARD_SOCKET_DIR}/{wg}.sock"));
            let child = Command::new("ip")
                .args(["netns", "exec", &e.netns, "wireguard-go", "-f", wg])
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .env("LOG_LEVEL", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io("starting wireguard-go"))?;
            self.children.push(child);
            self.sockets.push(sock.clone());
            let start = Instant::now();
            while !sock.exists() {
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(LabError::Spec(format!(
                        "wireguard-go made no {} within 10 s",
                        sock.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let key_file =
                std::env::temp_dir().join(format!("labnode-{wg}-{}.key", std::process::id()));
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&key_file)
                    .map_err(io(key_file.display().to_string()))?;
                std::io::Write::write_all(&mut f, keys[i].0.as_bytes())
                    .map_err(io(key_file.display().to_string()))?;
            }
            let other = if i == 0 { b } else { a };
            let peer_wg = other
                .wireguard_address
                .map(|x| format!("{x}/32"))
                .unwrap_or_default();
            let set = run(&[
                "ip",
                "netns",
                "exec",
                &e.netns,
                "wg",
                "set",
                wg,
                "listen-port",
                &WG_PORT.to_string(),
                "private-key",
                &key_file.display().to_string(),
                "peer",
                &keys[1 - i].1,
                "endpoint",
                &format!("{}:{WG_PORT}", other.address),
                "allowed-ips",
                &peer_wg,
            ]);
            let _ = std::fs::remove_file(&key_file);
            set?;
            if let Some(x) = e.wireguard_address {
                add_address(&e.netns, x, wg)?;
            }
            run(&["ip", "-n", &e.netns, "link", "set", wg, "up"])?;
        }
        self.layout.a.wireguard_public_key = Some(keys[0].1.clone());
        self.layout.b.wireguard_public_key = Some(keys[1].1.clone());
        Ok(())
    }

    /// A command run inside end `a` or `b`'s namespace.
    pub fn command(&self, end: &End, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &end.netns, program]);
        c
    }

    /// Relay counters: packets forwarded and dropped, a→b then b→a.
    pub fn relay_counts(&self) -> Option<[(u64, u64); 2]> {
        use std::sync::atomic::Ordering::Relaxed;
        self.relay.as_ref().map(|r| {
            [0, 1].map(|i| {
                (
                    r.counters[i].forwarded.load(Relaxed),
                    r.counters[i].dropped.load(Relaxed),
                )
            })
        })
    }

    /// Tears everything down (also done on drop); reports what could not be removed.
    pub fn down(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for c in &mut self.children {
            // ip netns exec replaces itself with wireguard-go, so this is its pid.
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let start = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if start.elapsed() < Duration::from_secs(3) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
        if let Some(mut r) = self.relay.take() {
            r.stop();
        }
        for s in self.sockets.drain(..) {
            match std::fs::remove_file(&s) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("{}: {e}", s.display())),
            }
        }
        for ns in self.namespaces.drain(..) {
            if let Err(e) = run(&["ip", "netns", "del", &ns]) {
                problems.push(e.to_string());
            }
        }
        problems
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.down() {
            eprintln!("labnode-netlab: teardown: {p}");
        }
    }
}

/// Parses a rate such as `1gbit`, `10gbit`, `200mbit`, `500kbit` or a plain number of bits
/// per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.to_owned(), *m)))
        .unwrap_or((t.clone(), 1.0));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate such as 1gbit or 200mbit"))?;
    if v.is_nan() || v * mult < 8000.0 {
        return Err(format!("{s:?}: the rate must be at least 8kbit"));
    }
    Ok((v * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5Gbit"), Ok(2_500_000_000));
        assert_eq!(parse_rate("200mbit"), Ok(200_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0mbit").is_err());
    }

    #[test]
    fn tbf_sizes() {
        let (burst, limit) = tbf_args(1_000_000_000, Duration::from_millis(20));
        assert_eq!(
            burst,
            128 * 1024,
            "1 ms at 1 Gbit/s is less than a GSO packet"
        );
        assert_eq!(limit, 2_500_000);
        let (burst, _) = tbf_args(10_000_000_000, Duration::from_millis(20));
        assert_eq!(burst, 1_250_000);
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_made() {
        for n in ["", "UPPER", "toolongname", "a-b"] {
            let spec = Spec {
                name: n.into(),
                link: Link::Veth,
                rate_bits: None,
                queue: Duration::from_millis(20),
                wireguard: false,
            };
            assert!(matches!(Lab::up(&spec), Err(LabError::Spec(_))), "{n}");
        }
    }
}
