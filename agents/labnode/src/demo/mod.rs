//! `labnode demo`: measures this machine for real, before and after, with embedded
//! defaults, and writes the report. The network runs between two network namespaces over an
//! emulated link (labnode-netlab): "before" as a stock host runs it (TCP CUBIC, no tunnel),
//! "after" as labnode configures it (TCP BBR through WireGuard). The rollback drill runs on a
//! scratch Nix profile. Every collector runs once per side, inside the lab's client
//! namespace (the host's network, as each side has it). Everything it makes is removed at
//! the end, on error, and on SIGINT, SIGTERM or SIGHUP.

mod drill;
mod guard;
mod net;
pub mod scratch;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labnode_report::output::{self, Format};
use labnode_report::report::{Cell, Report, RowOut};

use self::guard::{Ctl, DemoError, Service, TempDir};
pub use self::net::LinkChoice;
use self::net::{Bench, SidePlan};
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::exit::Failure;

/// What can be measured here, and why not where not.
struct Preflight {
    /// `Err(why)` when the WireGuard tunnel cannot be built.
    wireguard: Result<(), String>,
    /// `Err(why)` when no rollback drill can run.
    nix: Result<(), String>,
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(program)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

fn preflight(args: &DemoArgs) -> Result<Preflight, DemoError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DemoError::CannotRun(
            "labnode demo needs root: it creates network namespaces, runs wireguard-go and \
             drills a rollback on a scratch Nix profile. Run it with sudo. Nothing was measured."
                .into(),
        ));
    }
    let missing: Vec<&str> = ["ip", "tc"].into_iter().filter(|p| !in_path(p)).collect();
    if !missing.is_empty() {
        return Err(DemoError::CannotRun(format!(
            "labnode demo needs {} (iproute2) for its network namespaces and emulated link; \
             install iproute2. Nothing was measured.",
            missing.join(" and ")
        )));
    }
    let tun = Path::new("/dev/net/tun").exists();
    if args.link.needs_tun() && !tun {
        return Err(DemoError::CannotRun(
            "--link wan and --link clean need /dev/net/tun (its relay adds the delay and loss): load the tun \
             module, or use --link gbit. Nothing was measured."
                .into(),
        ));
    }
    if !labnode_netprobe::sys::available_congestion()
        .iter()
        .any(|c| c == "bbr")
    {
        // The kernel may have it as a module; try once, quietly.
        let _ = std::process::Command::new("modprobe")
            .arg("tcp_bbr")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let cc = labnode_netprobe::sys::available_congestion();
    for want in ["cubic", "bbr"] {
        if !cc.iter().any(|c| c == want) {
            return Err(DemoError::CannotRun(format!(
                "this kernel offers no TCP {want} (it has: {}); the network comparison is \
                 CUBIC against BBR. Load it (modprobe tcp_{want}). Nothing was measured.",
                cc.join(", ")
            )));
        }
    }
    let wg_missing: Vec<&str> = ["wireguard-go", "wg"]
        .into_iter()
        .filter(|p| !in_path(p))
        .collect();
    let wireguard = if !wg_missing.is_empty() {
        Err(format!(
            "{} not installed (Debian: apt-get install wireguard-go wireguard-tools)",
            wg_missing.join(" and ")
        ))
    } else if !tun {
        Err("/dev/net/tun is missing (wireguard-go needs it)".into())
    } else {
        Ok(())
    };
    let nix_missing: Vec<&str> = ["nix-build", "nix-env", "setsid"]
        .into_iter()
        .filter(|p| !in_path(p))
        .collect();
    let nix = if nix_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not installed (Nix: Debian's nix-bin is enough; setsid: util-linux)",
            nix_missing.join(", ")
        ))
    };
    if !args.partial {
        let lacking: Vec<String> = [&wireguard, &nix]
            .into_iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        if !lacking.is_empty() {
            return Err(DemoError::CannotRun(format!(
                "labnode demo measures the WireGuard and rollback rows too, and this machine \
                 lacks what they need: {}. Install it (tools/demo does), or pass --partial to \
                 measure the rest. Nothing was measured.",
                lacking.join("; ")
            )));
        }
    }
    Ok(Preflight { wireguard, nix })
}

/// The report directory: made if missing; it must not hold snapshots of an earlier run,
/// which the labels `before` and `after` would mix with this one's.
fn out_dir(args: &DemoArgs) -> Result<PathBuf, DemoError> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let stamp: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            PathBuf::from(format!("labnode-demo-{stamp}"))
        }
    };
    let dir = std::path::absolute(&dir)
        .map_err(|e| DemoError::CannotRun(format!("--out {}: {e}", dir.display())))?;
    let store = dir.join("snapshots");
    if std::fs::read_dir(&store).is_ok_and(|mut d| d.next().is_some()) {
        return Err(DemoError::CannotRun(format!(
            "--out {}: {} already holds snapshots of an earlier run; give a new or empty directory",
            dir.display(),
            store.display()
        )));
    }
    std::fs::create_dir_all(&store)
        .map_err(|e| DemoError::CannotRun(format!("--out {}: {e}", store.display())))?;
    Ok(dir)
}

fn token_file(tmp: &Path) -> Result<PathBuf, DemoError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| DemoError::Failed(format!("/dev/urandom: {e}")))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = tmp.join("probe-token");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(|e| DemoError::Failed(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// The sides' network plans.
fn plans(wireguard: bool) -> [SidePlan; 2] {
    let mut after = vec![Bench {
        path: "direct",
        tcp: &["bbr"],
        quic: &["bbr"],
    }];
    if wireguard {
        after.push(Bench {
            path: "wireguard",
            tcp: &["bbr"],
            quic: &[],
        });
    }
    [
        SidePlan {
            label: "before",
            title: "a stock host",
            congestion: "cubic",
            wireguard: false,
            benches: vec![Bench {
                path: "direct",
                tcp: &["cubic"],
                quic: &["cubic"],
            }],
        },
        SidePlan {
            label: "after",
            title: "labnode's configuration",
            congestion: "bbr",
            wireguard,
            benches: after,
        },
    ]
}

/// What was made, for the closing line.
#[derive(Default)]
struct Made {
    namespaces: usize,
    wireguard_go: usize,
    servers: usize,
    service: bool,
    scratch: Vec<PathBuf>,
}

/// Runs `labnode demo`.
pub fn run(args: DemoArgs) -> Result<(), Failure> {
    // First: a signal from now on waits for the cleanup.
    let ctl = Ctl::new().map_err(failure)?;
    if !(args.duration >= 1.0 && args.duration <= 60.0) {
        return Err(Failure::usage("--duration: give 1 to 60 seconds"));
    }
    let started = Instant::now();
    let pre = preflight(&args).map_err(failure)?;
    let out = out_dir(&args).map_err(failure)?;
    let store = out.join("snapshots");
    let tmp = TempDir::new().map_err(failure)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::runtime(format!("cannot find labnode's own path: {e}")))?;
    // Dropped before tmp: the scratch service's pid file lives there.
    let mut service: Option<Service> = None;
    let mut made = Made::default();
    let result = measure(
        &ctl,
        &args,
        &pre,
        &exe,
        &tmp.path,
        &store,
        &mut service,
        &mut made,
    )
    // A step that failed because a signal stopped its child was interrupted.
    .map_err(|e| ctl.check().err().unwrap_or(e));
    ctl.progress.live("cleaning up");
    service.take().map(|s| s.stop());
    // The indirect GC roots nix-env made for the scratch profile point into tmp.
    let roots = scratch::unregister_roots(&tmp.path).unwrap_or_else(|e| {
        eprintln!("labnode: cannot remove the scratch profile's GC roots: {e}");
        0
    });
    let tmp_path = tmp.path.clone();
    drop(tmp);
    ctl.progress.live("");
    let cleaned = cleanup_line(&made, roots, &tmp_path);
    match result {
        Ok(done) => {
            let text = summary(&done, &args, &pre, &out, started.elapsed());
            // A closed pipe must not turn a finished demo into a panic.
            let _ = std::io::stdout().write_all(format!("{text}{cleaned}\n").as_bytes());
            match &done.drill_failed {
                Some(why) => Err(Failure::runtime(format!(
                    "the rollback drill failed (the report shows it): {why}"
                ))),
                None => Ok(()),
            }
        }
        Err(e) => {
            eprintln!("{cleaned}");
            Err(failure(e))
        }
    }
}

fn failure(e: DemoError) -> Failure {
    match e {
        DemoError::Interrupted(s) => Failure {
            code: u8::try_from(128 + s).unwrap_or(1),
            message: format!("demo interrupted by {}", guard::signal_name(s)),
        },
        DemoError::CannotRun(m) => Failure::usage(m),
        DemoError::Failed(m) => Failure::runtime(m),
    }
}

fn cleanup_line(made: &Made, roots: usize, tmp: &Path) -> String {
    let mut removed = Vec::new();
    if made.namespaces > 0 {
        removed.push(format!("{} network namespaces", made.namespaces));
    }
    if made.wireguard_go > 0 {
        removed.push(format!("{} wireguard-go", made.wireguard_go));
    }
    if made.servers > 0 {
        removed.push(format!(
            "{} probe server{}",
            made.servers,
            if made.servers == 1 { "" } else { "s" }
        ));
    }
    if made.service {
        removed.push("the scratch service".into());
    }
    if roots > 0 {
        removed.push(format!("{roots} GC roots of the scratch profile"));
    }
    removed.push(tmp.display().to_string());
    let mut line = format!("removed: {}", removed.join(", "));
    if !made.scratch.is_empty() {
        line.push_str(&format!(
            "; left in the Nix store: {} scratch generations (`nix-collect-garbage` frees them)",
            made.scratch.len()
        ));
    }
    line
}

/// What the measuring produced.
struct Done {
    report: Report,
    written: Vec<PathBuf>,
    down: Vec<(String, String)>,
    drill_failed: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn measure(
    ctl: &Ctl,
    args: &DemoArgs,
    pre: &Preflight,
    exe: &Path,
    tmp: &Path,
    store: &Path,
    service: &mut Option<Service>,
    made: &mut Made,
) -> Result<Done, DemoError> {
    let runs: usize = plans(pre.wireguard.is_ok())
        .iter()
        .map(SidePlan::runs)
        .sum();
    ctl.progress.step(&format!(
        "labnode demo: measuring this host before and after (about {:.0} s); report in {}",
        runs as f64 * f64::from(args.repeat) * (args.duration + 1.0) + 15.0,
        store.parent().unwrap_or(store).display()
    ));
    if let Err(why) = &pre.wireguard {
        ctl.progress.step(&format!(
            "WireGuard: {why}: the after side runs BBR without a tunnel; the WireGuard rows say not measured"
        ));
    }
    if let Err(why) = &pre.nix {
        ctl.progress.step(&format!(
            "rollback: {why}: no drill; the rollback rows say not measured"
        ));
    }
    let token = token_file(tmp)?;
    let env = net::Env {
        ctl,
        exe,
        tmp,
        store,
        token: &token,
        link: args.link,
        duration: args.duration,
        repeat: args.repeat,
    };
    let config = Config {
        snapshot_dir: Some(store.to_owned()),
        ..Config::default()
    };
    let collect = |label: &'static str, cfg: Config| {
        move || crate::cmd::collect::collect_once(&cfg, &[], label, store)
    };
    let [before, after] = plans(pre.wireguard.is_ok());
    let pid = std::process::id();
    let mut down = Vec::new();
    let mut notes = Vec::new();
    made.namespaces += 2;
    made.servers += before.benches.len();
    let b = net::run_side(
        &env,
        &before,
        format!("b{pid}"),
        collect("before", config.clone()),
    )?;
    down.extend(b.collected.down.clone());
    notes.extend(b.in_force.err().map(|why| format!("Before: {why}.")));
    ctl.check()?;
    let mut drill_failed = None;
    // The after side's collectors see the scratch profile the drill ran on.
    let mut after_config = config.clone();
    if pre.nix.is_ok() {
        let d = drill::Env {
            ctl,
            exe,
            tmp,
            store,
        };
        made.service = true;
        let drilled = drill::run(&d, service)?;
        made.scratch = drilled.store_paths;
        after_config = drilled.config;
        if !drilled.record.success {
            drill_failed = Some(
                drilled
                    .record
                    .error
                    .clone()
                    .unwrap_or_else(|| "see the report".into()),
            );
        }
        // Its service is not needed any more.
        if let Some(s) = service.as_ref() {
            s.stop();
        }
        ctl.check()?;
    }
    made.namespaces += 2;
    made.servers += after.benches.len();
    if after.wireguard {
        made.wireguard_go += 2;
    }
    let a = net::run_side(
        &env,
        &after,
        format!("a{pid}"),
        collect("after", after_config),
    )?;
    down.extend(a.collected.down.clone());
    notes.extend(a.in_force.err().map(|why| format!("After: {why}.")));
    ctl.check()?;
    ctl.progress.live("writing the report");
    let report = report(store, args, pre, notes)?;
    let dir = store.parent().unwrap_or(store);
    let written = output::write_all(dir, &[Format::Md, Format::Html, Format::Json], &report)
        .map_err(|e| DemoError::Failed(e.to_string()))?;
    down.sort();
    down.dedup();
    Ok(Done {
        report,
        written,
        down,
        drill_failed,
    })
}

fn report(
    store: &Path,
    args: &DemoArgs,
    pre: &Preflight,
    notes: Vec<String>,
) -> Result<Report, DemoError> {
    let (before, after) =
        crate::cmd::report::sides_from_store(&["before".to_owned()], &["after".to_owned()], store)
            .map_err(|f| {
                DemoError::Failed(format!("reading the demo's snapshots: {}", f.message))
            })?;
    let host = before.host.hosts.first().cloned().unwrap_or_default();
    let mut setup = vec![
        format!(
            "Network: between two network namespaces over {}, {} runs of {} s per test, interleaved. Before: as a stock host runs it, TCP CUBIC and no tunnel. After: as labnode configures it, TCP BBR{}.",
            args.link.describe(),
            args.repeat,
            args.duration,
            if pre.wireguard.is_ok() {
                " through a WireGuard tunnel (wireguard-go)"
            } else {
                " (no WireGuard tunnel: wireguard-go is missing)"
            }
        ),
        "Every collector ran once per side inside the client namespace, which stands for the host's network; CPU, memory, GPU and ZFS are this host's.".to_owned(),
    ];
    setup.push(match &pre.nix {
        Ok(()) => format!(
            "Rollback (after only: a stock host has no generations to roll back to): a drill on a scratch Nix profile of two generations, each starting an HTTP service that answers {} s after it starts; the health gate waits for it.",
            drill::START_DELAY.as_secs()
        ),
        Err(why) => format!("Rollback: not drilled, {why}."),
    });
    setup.extend(notes);
    let opts = labnode_report::Options {
        claims: true,
        gate: None,
        title: Some(format!(
            "labnode demo on {host}: before and after, measured"
        )),
        setup,
    };
    Ok(labnode_report::build(
        &before,
        &after,
        &labnode_report::operator::Operator::default(),
        &opts,
    ))
}

fn row<'a>(r: &'a Report, id: &str) -> Option<&'a RowOut> {
    r.groups.iter().flat_map(|g| &g.rows).find(|x| x.id == id)
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Measured(m) => m.display.clone(),
        Cell::OperatorEntered(o) => format!("{}†", o.display),
        Cell::NotMeasured { .. } => "not measured".into(),
    }
}

/// "before → after (change)" of a row.
fn line_of(r: &Report, id: &str) -> String {
    let Some(x) = row(r, id) else {
        return "not in the catalog".into();
    };
    let change = x.change.as_ref().map_or(String::new(), |c| {
        let noise = c
            .noise
            .as_ref()
            .map_or(String::new(), |n| format!(", {}", n.short));
        format!(" ({}{noise})", c.text)
    });
    format!("{} → {}{change}", cell_text(&x.before), cell_text(&x.after))
}

/// The closing summary, on standard output (the one thing the demo prints in CI logs).
fn summary(done: &Done, args: &DemoArgs, pre: &Preflight, out: &Path, took: Duration) -> String {
    use std::fmt::Write as _;
    let r = &done.report;
    let after = |id: &str| row(r, id).map_or_else(|| "-".to_owned(), |x| cell_text(&x.after));
    let host = r.before.host.hosts.first().cloned().unwrap_or_default();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "labnode demo on {host}: measured before and after in {:.0} s",
        took.as_secs_f64()
    );
    let _ = writeln!(o, "  link:       {}", args.link.describe());
    let _ = writeln!(
        o,
        "  network:    TCP as deployed (before CUBIC direct, after BBR{}): {}",
        if pre.wireguard.is_ok() {
            " through WireGuard"
        } else {
            " direct"
        },
        line_of(r, "net_deployed")
    );
    let _ = writeln!(
        o,
        "              CUBIC vs BBR on the direct path: {}",
        line_of(r, "net_congestion")
    );
    match &pre.wireguard {
        Ok(()) => {
            let _ = writeln!(
                o,
                "              WireGuard tunnel cost: {}",
                after("net_wireguard_cost")
            );
        }
        Err(why) => {
            let _ = writeln!(o, "              WireGuard: not measured, {why}");
        }
    }
    let _ = writeln!(
        o,
        "              RTT under load: {}",
        line_of(r, "net_rtt_loaded")
    );
    match &pre.nix {
        Ok(()) => {
            let _ = writeln!(
                o,
                "  rollback:   drill on a scratch Nix profile, its service answering {} s after it starts: back with every gate green in {} (switch {}), success {}",
                drill::START_DELAY.as_secs(),
                after("rto_nixos"),
                after("rollback_time"),
                after("rollback_success"),
            );
        }
        Err(why) => {
            let _ = writeln!(o, "  rollback:   not measured, {why}");
        }
    }
    for (c, why) in &done.down {
        let _ = writeln!(
            o,
            "  {:<11} not measured here, the {c} collector is down: {why}",
            format!("{c}:")
        );
    }
    let s = &r.summary;
    let _ = writeln!(
        o,
        "  rows:       {} of {} compared: {} judged ({} better, {} worse), {} within noise, {} not judged (fewer than {} runs a side), {} cells not measured",
        s.compared,
        s.rows,
        s.better + s.worse,
        s.better,
        s.worse,
        s.within_noise,
        s.not_judged,
        labnode_report::judge::MIN_RUNS,
        s.not_measured
    );
    for p in &done.written {
        let _ = writeln!(o, "  report:     {}", p.display());
    }
    let store = out.join("snapshots");
    let _ = writeln!(
        o,
        "  snapshots:  {} (labnode report --store {} --before before --after after)",
        store.display(),
        store.display()
    );
    o
}
