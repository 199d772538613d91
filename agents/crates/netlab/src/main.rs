//! `labnode-netlab`: builds a lab (two namespaces, an emulated link, optionally a
//! wireguard-go tunnel), prints its layout as JSON, and keeps it up until SIGINT, SIGTERM
//! or SIGHUP, then tears it down. Test and demo tooling; needs root.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use labnode_netlab::{Lab, Link, Signals, Spec, parse_rate};

/// Emulated links between network namespaces for labnode's network tests.
#[derive(Debug, Parser)]
#[command(name = "labnode-netlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a lab and hold it until a signal.
    Up {
        /// Lab name: 1 to 8 of a-z, 0-9.
        #[arg(long)]
        name: String,
        /// veth (kernel speed) or relay (TUN relay with delay and loss).
        #[arg(long, default_value = "veth")]
        link: String,
        /// Rate shaped with tbf at both ends, e.g. 1gbit, 200mbit.
        #[arg(long)]
        rate: Option<String>,
        /// Round-trip time the relay adds, e.g. 40ms (relay only).
        #[arg(long, default_value = "0ms")]
        rtt: humantime::Duration,
        /// Packet loss per direction in percent, e.g. 0.5 (relay only).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Bottleneck queue of the tbf, as drain time.
        #[arg(long, default_value = "20ms")]
        queue: humantime::Duration,
        /// Add a wireguard-go tunnel across the link.
        #[arg(long)]
        wireguard: bool,
        /// Write the layout JSON here once the lab is up (default: stdout).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Remove what a lab of this name left behind (namespaces, sockets).
    Down {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Down { name } => {
            for s in ["a", "b"] {
                let _ =
                    labnode_netlab::run(&["ip", "netns", "del", &format!("labnode-{name}-{s}")]);
                let _ = std::fs::remove_file(format!(
                    "{}/wg{name}{s}.sock",
                    labnode_netlab::WIREGUARD_SOCKET_DIR
                ));
            }
            ExitCode::SUCCESS
        }
        Cmd::Up {
            name,
            link,
            rate,
            rtt,
            loss,
            queue,
            wireguard,
            ready_file,
        } => {
            // Before anything is built, so a signal during setup waits for the teardown.
            let signals = match Signals::catch() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("labnode-netlab: cannot catch signals: {e}");
                    return ExitCode::from(1);
                }
            };
            let link = match link.as_str() {
                "veth" if Duration::from(rtt).is_zero() && loss == 0.0 => Link::Veth,
                "veth" => {
                    eprintln!("labnode-netlab: --rtt and --loss need --link relay");
                    return ExitCode::from(2);
                }
                "relay" => Link::Relay {
                    rtt: rtt.into(),
                    loss: loss / 100.0,
                },
                other => {
                    eprintln!("labnode-netlab: --link {other:?}: veth or relay");
                    return ExitCode::from(2);
                }
            };
            let rate_bits = match rate.as_deref().map(parse_rate).transpose() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("labnode-netlab: --rate {e}");
                    return ExitCode::from(2);
                }
            };
            let spec = Spec {
                name,
                link,
                rate_bits,
                queue: queue.into(),
                wireguard,
            };
            let lab = match Lab::up(&spec) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("labnode-netlab: {e}");
                    return ExitCode::from(1);
                }
            };
            let json = serde_json::to_string_pretty(&lab.layout).unwrap_or_default();
            match &ready_file {
                Some(p) => {
                    let tmp = p.with_extension("tmp");
                    if let Err(e) =
                        std::fs::write(&tmp, &json).and_then(|()| std::fs::rename(&tmp, p))
                    {
                        eprintln!("labnode-netlab: {}: {e}", p.display());
                        return ExitCode::from(1);
                    }
                }
                None => println!("{json}"),
            }
            signals.wait();
            if let Some(c) = lab.relay_counts() {
                eprintln!(
                    "labnode-netlab: relay a->b {} forwarded, {} dropped; b->a {} forwarded, {} dropped",
                    c[0].0, c[0].1, c[1].0, c[1].1
                );
            }
            drop(lab);
            ExitCode::SUCCESS
        }
    }
}
