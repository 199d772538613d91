//! Every clap type of the binary: the commands, their arguments and value parsers. Flags
//! several commands share are one type each, flattened where used: `--config`
//! ([`ConfigArg`]), a snapshot store's `--out` ([`StoreArg`]), and what every command that
//! changes the node takes ([`NodeArgs`]). The code of each command is under `cmd/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;
use labnode_report::output::Format;
use labnode_report::prometheus::{self, Range};

/// Measure a NixOS research node: export GPU, ZFS, network, rollback and system metrics
/// to Prometheus, save before/after snapshots, and compare them.
#[derive(Debug, Parser)]
#[command(name = "labnode", version)]
#[command(after_help = "Examples:\n  \
    sudo labnode demo                                # this machine before and after: the report\n  \
    labnode serve --config /etc/labnode/config.yaml  # Prometheus exporter on 127.0.0.1:9466\n  \
    labnode collect --label before --out snapshots   # one snapshot of this host\n  \
    labnode config check /etc/labnode/config.yaml    # validate a configuration file\n  \
    labnode generate man DIR                         # a man page per command\n  \
    labnode report --before before --after after     # the before/after table\n  \
    labnode drill rollback                           # the rollback drill's plan; --yes runs it\n  \
    sudo labnode safe-switch --to /nix/store/...     # switch behind health gates\n\n\
    Exit codes: 0 success, 1 failure while running, 2 bad arguments or configuration.\n\
    Logging: set LABNODE_LOG (e.g. LABNODE_LOG=debug).")]
pub struct Cli {
    #[command(subcommand)]
    /// The subcommand.
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure this machine before and after, for real, with embedded defaults, and write
    /// the report: the network (CUBIC without a tunnel, then BBR through WireGuard) between
    /// two network namespaces over an emulated link, a rollback drill on a scratch Nix
    /// profile, every collector. About a minute; needs root; removes all it made.
    Demo(DemoArgs),
    /// Run the Prometheus exporter: collectors poll in the background, /metrics serves
    /// their last results and never waits on one.
    Serve(ServeArgs),
    /// Run every enabled collector once and write one snapshot JSON file.
    Collect(CollectArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Compare a before and an after (snapshots or Prometheus ranges): Markdown, HTML, JSON.
    Report(Box<ReportArgs>),
    /// Active network probe: `net serve` on one end, `net bench` on the other.
    #[command(subcommand)]
    Net(NetCommand),
    /// Drills: measure a recovery by doing it, then put everything back.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Switch to a new system generation behind health gates; roll back by itself when a
    /// gate stays red, activation fails, labnode dies or the host reboots first.
    SafeSwitch(SafeSwitchArgs),
    /// Collect garbage without taking away what a rollback needs: keeps the newest N system
    /// generations whatever their age, behind the same lock as safe switches and drills.
    Gc(GcArgs),
    /// Generate man pages or shell completions.
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Internal: what labnode runs inside its own units and processes.
    #[command(subcommand, hide = true)]
    Internal(InternalCommand),
}

#[derive(Debug, Subcommand)]
pub enum InternalCommand {
    /// Runs PROGRAM ARGS (a generation's switch-to-configuration), its output to LOG and
    /// stdout, its exit status to STATUS.
    Activation {
        /// The log file (appended to).
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        /// The status file (written when the program ends).
        #[arg(long, value_name = "FILE")]
        status: PathBuf,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Roll the system profile back one generation and forward again, timing every phase
    /// until every health gate is green. Prints the plan unless --yes.
    Rollback(DrillRollbackArgs),
    /// Write a data set into a scratch dataset, snapshot, damage it, roll back and verify
    /// every file, timing each phase.
    Zfs(DrillZfsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    /// `--config`.
    pub config: ConfigArg,
    /// Run only this collector (repeatable). Default: every collector enabled in the config.
    #[arg(long = "collector", value_name = "NAME")]
    pub collectors: Vec<String>,
    /// Address to listen on; overrides the config. Default 127.0.0.1:9466.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Name of this snapshot, e.g. `before` or `after` (letters, digits, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    pub label: String,
    #[command(flatten)]
    /// `--out`.
    pub out: StoreArg,
    #[command(flatten)]
    /// `--config`.
    pub config: ConfigArg,
    /// Run only this collector (repeatable).
    #[arg(long = "collector", value_name = "NAME")]
    pub collectors: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without starting anything.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// `labnode net ...`.
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Serve throughput tests to allowed clients that present the token. Prints the QUIC
    /// certificate's SHA-256 fingerprint for `net bench --fingerprint`.
    Serve(NetServeArgs),
    /// Measure throughput, RTT under load, retransmits and CPU per gigabit against a
    /// `net serve`, for each TCP and QUIC congestion control asked for; prints a table (or
    /// JSON) and writes one snapshot with a `net_bench` record.
    Bench(NetBenchArgs),
}

impl NetCommand {
    /// The `--config` file, if the subcommand takes one.
    pub fn config(&self) -> Option<&PathBuf> {
        match self {
            NetCommand::Serve(_) => None,
            NetCommand::Bench(b) => b.config.as_ref(),
        }
    }
}

/// `labnode net serve`.
#[derive(Debug, Args)]
pub struct NetServeArgs {
    /// Address to listen on (TCP; QUIC tests get UDP ports on the same address). Bind the
    /// WireGuard or lab address, not 0.0.0.0, unless every network there is trusted.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// File holding the shared token (at least 16 bytes, one line).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Clients allowed to run tests: addresses or CIDR ranges, comma-separated, repeatable.
    #[arg(long, value_name = "CIDR[,CIDR...]", required = true)]
    pub allow: Vec<String>,
    /// The longest test accepted, in seconds (above 0, at most 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub max_duration: f64,
    /// Tests that may run at once; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_tests: usize,
    /// Streams one test may use.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_streams: u32,
    /// Keep the QUIC certificate in DIR (cert.der, key.der), so its fingerprint survives
    /// restarts. Default: a new certificate at every start.
    #[arg(long, value_name = "DIR")]
    pub identity: Option<PathBuf>,
    /// UDP ports QUIC tests may use, e.g. 9472-9479, so a firewall can open exactly these
    /// (at least --max-tests of them). Default: any ephemeral port.
    #[arg(long, value_name = "FIRST-LAST", value_parser = labnode_netprobe::run::parse_port_range)]
    pub quic_ports: Option<(u16, u16)>,
}

/// `labnode net bench`.
#[derive(Debug, Args)]
pub struct NetBenchArgs {
    /// The `net serve` to test against, e.g. 10.0.0.2:9470.
    #[arg(long, value_name = "ADDR")]
    pub peer: SocketAddr,
    /// File holding the shared token.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// TCP congestion controls to test, set per socket (default cubic,bbr when neither
    /// --tcp nor --quic is given).
    #[arg(long, value_name = "CC[,CC...]", value_delimiter = ',')]
    pub tcp: Vec<String>,
    /// QUIC congestion controls to test (cubic, bbr, newreno); needs --fingerprint.
    #[arg(long, value_name = "CC[,CC...]", value_delimiter = ',')]
    pub quic: Vec<String>,
    /// Parallel streams (TCP connections, or QUIC streams on one connection).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub streams: u32,
    /// Seconds each test sends for (above 0, at most 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub duration: f64,
    /// The server certificate's SHA-256 fingerprint, as `net serve` printed it.
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// Name of the network path, e.g. direct or wireguard (the `path` label).
    #[arg(long, value_name = "NAME", default_value = "direct")]
    pub path: String,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Label of the snapshot.
    #[arg(long, value_name = "NAME", default_value = "net-bench")]
    pub label: String,
    /// Snapshot directory; default: the config's snapshot_dir.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Configuration file (YAML), for snapshot_dir.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--config FILE`: the same flag on every command that reads a configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (YAML). Without it, every default applies.
    #[arg(long = "config", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

/// `--out DIR` of a command that writes a snapshot.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// Snapshot store to write to; overrides the config's snapshot_dir (default
    /// /var/lib/labnode/snapshots).
    #[arg(long = "out", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What every command that changes the node takes: `drill rollback`, `safe-switch`, `gc`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    /// `--config`: the profile, nix-env, gates and bounds come from its `rollback:` section.
    pub config: ConfigArg,
    /// The system profile; overrides `rollback.profile` (default /nix/var/nix/profiles/system).
    #[arg(long, value_name = "PATH")]
    pub profile: Option<PathBuf>,
    /// Wait this long for another run that changes the node (a safe switch, a drill,
    /// garbage collection) to end instead of refusing at once (`gc`: default 6h).
    #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
    pub lock_wait: Option<Duration>,
}

/// `labnode drill rollback`.
#[derive(Debug, Args)]
pub struct DrillRollbackArgs {
    /// Do it. Without --yes the plan is printed and nothing changes.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    /// `--config`, `--profile`, `--lock-wait`.
    pub node: NodeArgs,
    /// Label of the snapshot the result is written to.
    #[arg(long, value_name = "NAME", default_value = "rollback-drill")]
    pub label: String,
    #[command(flatten)]
    /// `--out`.
    pub out: StoreArg,
}

/// `labnode safe-switch`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["to", "recover"]))]
pub struct SafeSwitchArgs {
    /// The system closure to switch to (a store path with bin/switch-to-configuration).
    #[arg(long, value_name = "STORE_PATH")]
    pub to: Option<PathBuf>,
    /// How long every gate may take to turn green after activation; overrides
    /// `rollback.confirm_timeout` (default 120s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "to")]
    pub confirm_timeout: Option<Duration>,
    /// Finish an unconfirmed switch or an interrupted drill found by its marker: roll back to
    /// the known-good generation. The boot unit runs this.
    #[arg(long, conflicts_with = "to")]
    pub recover: bool,
    /// With --recover: try again with backoff (`rollback.retry_interval`, doubling) until
    /// the host is healthy on the known-good generation. The boot unit runs this.
    #[arg(long, requires = "recover")]
    pub retry: bool,
    /// Internal: run as the systemd guard of switch ID (waits for it to end or die).
    #[arg(long, value_name = "ID", requires = "recover", hide = true)]
    pub guard: Option<String>,
    #[command(flatten)]
    /// `--config`, `--profile`, `--lock-wait`.
    pub node: NodeArgs,
    /// Label of the snapshot the result is written to.
    #[arg(long, value_name = "NAME", default_value = "safe-switch")]
    pub label: String,
    #[command(flatten)]
    /// `--out`.
    pub out: StoreArg,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 120s or 5m ({e})"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s} is shorter than 1s"));
    }
    Ok(d)
}

/// A wait for the run lock: 0s (refuse at once) or more.
fn parse_wait(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 0s, 30m or 6h ({e})"))
}

/// `labnode gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The newest system generations kept whatever their age.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub keep_generations: u32,
    /// Generations older than this are deleted (the newest N and an unfinished run's
    /// known-good one excepted), e.g. 30d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delete_older_than: Duration,
    #[command(flatten)]
    /// `--config`, `--profile`, `--lock-wait`.
    pub node: NodeArgs,
    /// Say what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `labnode drill zfs`.
#[derive(Debug, Args)]
pub struct DrillZfsArgs {
    /// The scratch dataset, POOL/FS; it must have the user property labnode:scratch=on
    /// (the drill destroys what it writes there and rolls the dataset back).
    #[arg(long, value_name = "POOL/FS")]
    pub dataset: String,
    /// Name of the snapshot the result is stored in (letters, digits, '.', '_', '-').
    #[arg(long, value_name = "NAME", default_value = "zfs-drill")]
    pub label: String,
    #[command(flatten)]
    /// `--out`.
    pub out: StoreArg,
    #[command(flatten)]
    /// `--config`.
    pub config: ConfigArg,
    /// Files in the drill's data set.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub files: u64,
    /// Bytes per file.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..=(1 << 34)))]
    pub file_size: u64,
    /// Directory of the per-pool locks (labnode-zfs-drill.POOL.lock): one drill per pool.
    #[arg(long, value_name = "DIR", default_value = "/run/lock")]
    pub lock_dir: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    labnode report --before before --after after --format md,html,json --out report/\n  \
    labnode report --before old.json --after snaps/ --operator before-values.yaml --claims\n  \
    labnode report --before baseline --after after --fail-on-regression 20%\n  \
    labnode report --prometheus http://127.0.0.1:9090 --instance c220g5 \\\n      \
    --before-range 2026-11-20T09:00:00Z..2026-11-20T10:00:00Z --after-range now-1h..now\n\n\
    Exit codes: 0 report written, 1 a failure while running or a regression past the gate,\n\
    2 bad arguments, unreadable or foreign snapshots, or a bad operator file.")]
/// Arguments of `labnode report`.
pub struct ReportArgs {
    /// The old system: snapshot files, directories of them, or labels in the store
    /// (repeatable). Several snapshots are summarised: median, p95, n.
    #[arg(
        long,
        value_name = "FILE|DIR|LABEL",
        required_unless_present = "prometheus"
    )]
    pub before: Vec<String>,
    /// The new system, as for --before.
    #[arg(
        long,
        value_name = "FILE|DIR|LABEL",
        required_unless_present = "prometheus"
    )]
    pub after: Vec<String>,
    /// Snapshot store searched for labels. Default: the config's snapshot_dir.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    /// `--config` (for snapshot_dir).
    pub config: ConfigArg,
    /// Operator-entered values (YAML): numbers nobody can measure any more, shown as such.
    #[arg(long, value_name = "FILE")]
    pub operator: Option<PathBuf>,
    /// Output formats, comma-separated: md, html, json.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "md",
        value_name = "FORMATS"
    )]
    pub format: Vec<Format>,
    /// Directory to write report.md, report.html, report.json to. Without it, the one
    /// format asked for goes to standard output.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Show the original claims table's values beside the measured ones.
    #[arg(long)]
    pub claims: bool,
    /// Exit 1, naming every row, when a row got worse by more than this, e.g. 20%.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub fail_on_regression: Option<f64>,
    /// The report's title.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Read both sides from this Prometheus server's HTTP API (http://HOST:PORT[/PREFIX]).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["before", "after"],
        requires_all = ["before_range", "after_range"]
    )]
    pub prometheus: Option<String>,
    /// The before range: T1..T2, each RFC 3339, Unix seconds, `now` or `now-DURATION`.
    #[arg(long, value_name = "T1..T2", value_parser = parse_range, requires = "prometheus")]
    pub before_range: Option<Range>,
    /// The after range, as for --before-range.
    #[arg(long, value_name = "T1..T2", value_parser = parse_range, requires = "prometheus")]
    pub after_range: Option<Range>,
    /// Only series with this `instance` label (one node of several).
    #[arg(long, value_name = "NAME", requires = "prometheus")]
    pub instance: Option<String>,
    /// Resolution of the Prometheus ranges. Default: the range / 250, at least 1s.
    #[arg(long, value_name = "DURATION", value_parser = parse_step, requires = "prometheus")]
    pub step: Option<Duration>,
    /// Timeout of each Prometheus request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_step)]
    pub timeout: Duration,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let n = s.trim().strip_suffix('%').unwrap_or(s.trim());
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v / 100.0),
        _ => Err(format!("`{s}` is not a percentage such as 20%")),
    }
}

fn parse_range(s: &str) -> Result<Range, String> {
    prometheus::parse_range(s, std::time::SystemTime::now()).map_err(|e| e.to_string())
}

fn parse_step(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a duration such as 15s or 1m"))
}

/// What `labnode generate` writes.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write one man page per command (labnode.1, labnode-serve.1, labnode-drill-rollback.1,
    /// ...) into DIR, which is created if missing.
    Man {
        /// The directory (for example `$out/share/man/man1`).
        dir: PathBuf,
    },
    /// Print the collector registry (each collector's name and default port) as JSON: what
    /// the NixOS agents module reads from `modules/collectors.json`.
    Collectors,
    /// Print the completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
}

/// `labnode demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "What it needs: root, iproute2 (ip, tc) and /dev/net/tun; for the \
    WireGuard rows wireguard-go and wg; for the rollback rows nix-build and nix-env (a \
    single-user, offline Nix is enough). Without one of them it stops at once, naming the \
    package to install (tools/demo installs them), unless --partial: then it measures the \
    rest and says what is not measured and why. Without root, ip, tc or (for --link wan or \
    clean) /dev/net/tun it stops at once. A stop changes nothing.\n\n\
    It removes everything it made (namespaces, wireguard-go, probe servers, the scratch \
    service, its temporary directory), also on Ctrl-C, SIGTERM or SIGHUP. It leaves the \
    report and its snapshots in --out, and two small Nix store paths (the scratch \
    generations) that `nix-collect-garbage` frees.\n\n\
    Exit codes: 0 report written; 1 a step failed (or the drill did, after writing the \
    report); 2 bad arguments or this machine cannot run it; 128+N interrupted by signal N."
)]
pub struct DemoArgs {
    /// Directory for the report (report.md, report.html, report.json) and its snapshots.
    /// Default: ./labnode-demo-TIME, TIME in UTC. It must not hold snapshots already.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The emulated link between the namespaces.
    #[arg(long, value_enum, default_value = "wan")]
    pub link: crate::demo::LinkChoice,
    /// Seconds each network test run sends for (5 tests: TCP and QUIC before, TCP, QUIC and
    /// TCP through WireGuard after; each run --repeat times).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub duration: f64,
    /// Runs of each network test per side, interleaved. The report judges a change only
    /// with at least 3 runs a side; with fewer its network rows say "not judged".
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
    /// Measure what this machine allows: without wireguard-go or Nix, run the rest and
    /// leave the WireGuard or rollback rows "not measured", with the reason.
    #[arg(long)]
    pub partial: bool,
}
