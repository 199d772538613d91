//! Evaluating a catalog row on one observation.

use crate::catalog::{Agg, Aspect, Match, Measure, Row, Sel, Test};
use crate::input::{Observation, Sample, Side};
use labnode_core::snapshot::RecordKind;

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// The old system.
    Before,
    /// The new system.
    After,
}

impl Which {
    /// "before" or "after".
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Before => "before",
            Which::After => "after",
        }
    }
}

/// What one side's host runs, read from its own observations, for rows "as deployed".
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Context {
    /// The TCP congestion control in force.
    pub congestion: Option<String>,
    /// The network path to peers: `wireguard` or `direct`.
    pub path: Option<String>,
}

impl Context {
    /// Reads it from a side: the congestion control the side's benches ran when they ran
    /// one (what was set up for them, e.g. in a demo's namespaces), else the one the net
    /// collector saw in force most often; the tunnel path where a bench measured one.
    pub fn of(side: &Side) -> Context {
        let mut in_force: Vec<&str> = Vec::new();
        let mut benched: Vec<&str> = Vec::new();
        let mut paths: Vec<&str> = Vec::new();
        for o in &side.observations {
            for s in o.metric("labnode_net_congestion_control_info") {
                if s.value == 1.0 {
                    in_force.extend(s.label("algorithm"));
                }
            }
            if !o.records.contains(&RecordKind::NetBench) {
                continue;
            }
            for s in o.metric("labnode_net_probe_throughput_bytes_per_second") {
                if s.label("protocol") == Some("tcp") {
                    benched.extend(s.label("congestion"));
                    paths.extend(s.label("path"));
                }
            }
        }
        benched.sort_unstable();
        benched.dedup();
        let congestion = if benched.len() == 1 {
            Some(benched[0].to_owned())
        } else {
            mode(&in_force)
        };
        let path = if paths.contains(&"wireguard") {
            Some("wireguard".to_owned())
        } else if paths.contains(&"direct") {
            Some("direct".to_owned())
        } else {
            paths.sort_unstable();
            paths.dedup();
            (paths.len() == 1).then(|| paths[0].to_owned())
        };
        Context { congestion, path }
    }

    fn get(&self, a: Aspect) -> Option<&str> {
        match a {
            Aspect::Congestion => self.congestion.as_deref(),
            Aspect::Path => self.path.as_deref(),
        }
    }
}

fn mode(values: &[&str]) -> Option<String> {
    let mut best: Option<(&str, usize)> = None;
    for v in values {
        let n = values.iter().filter(|x| *x == v).count();
        if best.is_none_or(|(b, bn)| n > bn || (n == bn && *v < b)) {
            best = Some((v, n));
        }
    }
    best.map(|(v, _)| v.to_owned())
}

/// A counter's increase over a side's observations, summed over its series (each series
/// by its labels, oldest first; a drop is a reset, after which the new value counts whole).
/// In snapshots (`fresh_process`) every collect is a new process, so a counter with
/// `source="integrated"` (labnode's own integral, which starts at 0) counts whole in each;
/// other counters (a device's own) run across snapshots.
pub fn increase(
    sel: &Sel,
    ctx: &Context,
    side: &Side,
    fresh_process: bool,
) -> Option<(f64, usize)> {
    let mut last: Vec<(Vec<(String, String)>, f64)> = Vec::new();
    let (mut total, mut n) = (0.0, 0usize);
    for o in &side.observations {
        let mut any = false;
        for s in select(sel, ctx, o) {
            any = true;
            let key: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let whole = fresh_process && s.label("source") == Some("integrated");
            match last.iter_mut().find(|(k, _)| *k == key) {
                Some((_, prev)) => {
                    total += if whole || s.value < *prev {
                        s.value
                    } else {
                        s.value - *prev
                    };
                    *prev = s.value;
                }
                None => {
                    if whole {
                        total += s.value;
                    }
                    last.push((key, s.value));
                }
            }
        }
        n += usize::from(any);
    }
    (n > 0).then_some((total, n))
}

/// One observation's value for a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A number in the row's base unit.
    Num(f64),
    /// A text (a label's value).
    Text(String),
}

/// The row's value in `obs`, if `obs` has what the row needs.
pub fn evaluate(row: &Row, ctx: &Context, obs: &Observation) -> Option<Val> {
    if let Some(kind) = row.event {
        if !obs.records.contains(&kind) {
            return None;
        }
    }
    measure(&row.measure, ctx, obs)
        .or_else(|| row.zero_when.filter(|m| obs.has(m)).map(|_| Val::Num(0.0)))
}

fn measure(m: &Measure, ctx: &Context, obs: &Observation) -> Option<Val> {
    match m {
        Measure::Value { sel, agg } => aggregate(*agg, values(select(sel, ctx, obs))).map(Val::Num),
        Measure::Ratio {
            num,
            den,
            on,
            complement,
        } => ratio(num, den, on, *complement, ctx, obs, obs),
        Measure::Share { part, rest } => {
            let p = aggregate(Agg::Sum, values(select(part, ctx, obs)))?;
            let r = aggregate(Agg::Sum, values(select(rest, ctx, obs)))?;
            (p + r > 0.0).then(|| Val::Num(p / (p + r)))
        }
        Measure::Fraction { sel, test, over } => {
            let passes = |s: &Sample| match *test {
                Test::Below(x) => s.value < x,
                Test::Equals(x) => s.value == x,
            };
            let (mut n, mut pass) = (0usize, 0usize);
            match over {
                None => {
                    for s in select(sel, ctx, obs) {
                        n += 1;
                        pass += usize::from(passes(s));
                    }
                }
                Some((each, on)) => {
                    let tested: Vec<&Sample> = select(sel, ctx, obs).collect();
                    for e in select(each, ctx, obs) {
                        n += 1;
                        let ok = tested
                            .iter()
                            .any(|s| on.iter().all(|l| s.label(l) == e.label(l)) && passes(s));
                        pass += usize::from(ok);
                    }
                }
            }
            (n > 0).then(|| Val::Num(pass as f64 / n as f64))
        }
        Measure::Coverage {
            sel,
            label,
            expected,
        } => {
            let mut any = false;
            let mut up: Vec<&str> = Vec::new();
            for s in select(sel, ctx, obs) {
                any = true;
                if s.value == 1.0 {
                    if let Some(v) = s.label(label).filter(|v| expected.contains(v)) {
                        up.push(v);
                    }
                }
            }
            up.sort_unstable();
            up.dedup();
            any.then(|| Val::Num(up.len() as f64 / expected.len() as f64))
        }
        Measure::Flag { sel } => select(sel, ctx, obs)
            .any(|s| s.value == 1.0)
            .then_some(Val::Num(1.0)),
        Measure::Label { sel, label } => {
            let mut texts: Vec<&str> = select(sel, ctx, obs)
                .filter(|s| s.value == 1.0)
                .filter_map(|s| s.label(label))
                .collect();
            texts.sort_unstable();
            texts.dedup();
            (!texts.is_empty()).then(|| Val::Text(texts.join(", ")))
        }
        Measure::FirstOf(ms) => ms.iter().find_map(|m| measure(m, ctx, obs)),
        Measure::OperatorOnly => None,
    }
}

/// `num / den` with `num` read in `num_obs` and `den` in `den_obs` (see [`Measure::Ratio`]).
fn ratio(
    num: &Sel,
    den: &Sel,
    on: &[&str],
    complement: bool,
    ctx: &Context,
    num_obs: &Observation,
    den_obs: &Observation,
) -> Option<Val> {
    let r = if on.is_empty() {
        let n = aggregate(Agg::Sum, values(select(num, ctx, num_obs)))?;
        let d = aggregate(Agg::Sum, values(select(den, ctx, den_obs)))?;
        (d != 0.0).then(|| n / d)?
    } else {
        let dens: Vec<&Sample> = select(den, ctx, den_obs).collect();
        let ratios = select(num, ctx, num_obs).filter_map(|n| {
            let d = dens
                .iter()
                .find(|d| on.iter().all(|l| n.label(l) == d.label(l)))?;
            (d.value != 0.0).then(|| n.value / d.value)
        });
        aggregate(Agg::Mean, ratios)?
    };
    Some(Val::Num(if complement { 1.0 - r } else { r }))
}

/// For a ratio row of drill or probe results whose numerator and denominator were measured
/// by different runs (`labnode net bench` measures one path per run: the tunnel's cost
/// pairs a `wireguard` run with a `direct` one): the value of the run `obs` paired with the
/// nearest run of `runs` (same record kind, same side) that holds the denominator. `None`
/// when the row is not such a ratio, `obs` holds no numerator, or no run pairs with it.
pub fn evaluate_paired(
    row: &Row,
    ctx: &Context,
    obs: &Observation,
    runs: &[&Observation],
) -> Option<Val> {
    let (
        Measure::Ratio {
            num,
            den,
            on,
            complement,
        },
        Some(kind),
    ) = (&row.measure, row.event)
    else {
        return None;
    };
    let has_record = |o: &Observation| o.records.contains(&kind);
    if !has_record(obs) || !selects(num, ctx, obs) {
        return None;
    }
    let partner = runs
        .iter()
        .filter(|p| !std::ptr::eq(**p, obs) && has_record(p) && selects(den, ctx, p))
        .min_by(|a, b| (a.at - obs.at).abs().total_cmp(&(b.at - obs.at).abs()))?;
    ratio(num, den, on, *complement, ctx, obs, partner)
}

/// Whether `obs` has a series `sel` selects.
pub fn selects(sel: &Sel, ctx: &Context, obs: &Observation) -> bool {
    select(sel, ctx, obs).next().is_some()
}

fn select<'a>(
    sel: &'a Sel,
    ctx: &'a Context,
    obs: &'a Observation,
) -> impl Iterator<Item = &'a Sample> {
    obs.metric(sel.metric).iter().filter(move |s| {
        sel.labels.iter().all(|(k, m)| matches(s, k, *m, ctx))
            && sel.only_where.is_none_or(|(metric, on)| {
                obs.metric(metric)
                    .iter()
                    .any(|o| o.value == 1.0 && on.iter().all(|l| o.label(l) == s.label(l)))
            })
    })
}

fn matches(s: &Sample, key: &str, m: Match, ctx: &Context) -> bool {
    let v = s.label(key);
    match m {
        Match::Is(x) => v == Some(x),
        Match::In(xs) => v.is_some_and(|v| xs.contains(&v)),
        Match::NotIn(xs) => v.is_none_or(|v| !xs.contains(&v)),
        Match::NonEmpty => v.is_some_and(|v| !v.is_empty()),
        Match::SameAs(other) => v.is_some() && v == s.label(other),
        Match::Deployed(a) => v.is_some() && v == ctx.get(a),
    }
}

fn values<'a>(samples: impl Iterator<Item = &'a Sample>) -> impl Iterator<Item = f64> {
    samples.map(|s| s.value)
}

fn aggregate(agg: Agg, values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut n = 0usize;
    let mut acc: Option<f64> = None;
    for v in values {
        n += 1;
        acc = Some(match (acc, agg) {
            (None, _) => v,
            (Some(a), Agg::Sum | Agg::Mean) => a + v,
            (Some(a), Agg::Max) => a.max(v),
            (Some(a), Agg::Min) => a.min(v),
        });
    }
    let a = acc?;
    Some(if agg == Agg::Mean { a / n as f64 } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn s(metric: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Sample {
            metric: metric.into(),
            labels,
            value,
        }
    }

    fn obs(samples: Vec<Sample>, records: &[&str]) -> Observation {
        let mut o = Observation::new(0.0);
        o.samples = samples;
        o.records = records
            .iter()
            .map(|r| RecordKind::parse(r).expect("a known record kind"))
            .collect();
        o.index();
        o
    }

    fn eval(id: &str, ctx: &Context, o: &Observation) -> Option<Val> {
        evaluate(catalog::find(id).expect("row"), ctx, o)
    }

    fn any() -> Context {
        Context::default()
    }

    #[test]
    fn events_count_only_with_their_record() {
        let samples = vec![
            s(
                "labnode_rollback_phase_seconds",
                &[("direction", "rollback"), ("phase", "profile_flip")],
                0.5,
            ),
            s(
                "labnode_rollback_phase_seconds",
                &[("direction", "rollback"), ("phase", "activation")],
                2.0,
            ),
            s(
                "labnode_rollback_phase_seconds",
                &[("direction", "rollback"), ("phase", "gates_green")],
                9.0,
            ),
            s(
                "labnode_rollback_phase_seconds",
                &[("direction", "rollforward"), ("phase", "activation")],
                7.0,
            ),
        ];
        let drill = obs(samples.clone(), &["rollback_drill"]);
        let collected = obs(samples, &[]);
        assert_eq!(eval("rollback_time", &any(), &drill), Some(Val::Num(2.5)));
        assert_eq!(eval("rollback_time", &any(), &collected), None);
    }

    #[test]
    fn sides_select_their_own_configuration() {
        let o = obs(
            vec![
                s(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[
                        ("protocol", "tcp"),
                        ("congestion", "cubic"),
                        ("path", "direct"),
                    ],
                    9e8,
                ),
                s(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[
                        ("protocol", "tcp"),
                        ("congestion", "bbr"),
                        ("path", "wireguard"),
                    ],
                    4e8,
                ),
                s(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[
                        ("protocol", "tcp"),
                        ("congestion", "bbr"),
                        ("path", "direct"),
                    ],
                    8e8,
                ),
            ],
            &["net_bench"],
        );
        let stock = Context {
            congestion: Some("cubic".into()),
            path: Some("direct".into()),
        };
        let labnode = Context {
            congestion: Some("bbr".into()),
            path: Some("wireguard".into()),
        };
        assert_eq!(eval("net_deployed", &stock, &o), Some(Val::Num(9e8)));
        assert_eq!(eval("net_deployed", &labnode, &o), Some(Val::Num(4e8)));
        // Nothing known about the host: nothing to select.
        assert_eq!(eval("net_deployed", &any(), &o), None);
        // The side's context comes from its own observations.
        let side = Side {
            observations: vec![o.clone()],
            ..Side::default()
        };
        assert_eq!(
            Context::of(&side),
            Context {
                congestion: None,
                path: Some("wireguard".into())
            },
            "two congestion controls benched and no collector: unknown"
        );
        // The collector decides between several benched controls; a single benched control
        // is what was set up for the benches (a demo's namespaces), whatever the host runs.
        let collected = obs(
            vec![s(
                "labnode_net_congestion_control_info",
                &[("algorithm", "bbr")],
                1.0,
            )],
            &[],
        );
        let side = Side {
            observations: vec![o.clone(), collected.clone()],
            ..Side::default()
        };
        assert_eq!(Context::of(&side).congestion.as_deref(), Some("bbr"));
        let only_cubic = obs(
            vec![s(
                "labnode_net_probe_throughput_bytes_per_second",
                &[
                    ("protocol", "tcp"),
                    ("congestion", "cubic"),
                    ("path", "direct"),
                ],
                9e8,
            )],
            &["net_bench"],
        );
        let side = Side {
            observations: vec![only_cubic, collected],
            ..Side::default()
        };
        assert_eq!(
            Context::of(&side),
            Context {
                congestion: Some("cubic".into()),
                path: Some("direct".into())
            }
        );
        // Tunnel cost pairs series on protocol and congestion: 1 - 4/8.
        assert_eq!(eval("net_wireguard_cost", &any(), &o), Some(Val::Num(0.5)));
    }

    #[test]
    fn a_tunnel_run_pairs_with_the_nearest_direct_run_of_its_side() {
        // `labnode net bench` measures one path per run and snapshot.
        let run = |path: &str, at: f64, bps: f64| {
            let mut o = obs(
                vec![s(
                    "labnode_net_probe_throughput_bytes_per_second",
                    &[("protocol", "tcp"), ("congestion", "bbr"), ("path", path)],
                    bps,
                )],
                &["net_bench"],
            );
            o.at = at;
            o
        };
        let direct_old = run("direct", 0.0, 1e8);
        let direct = run("direct", 100.0, 8e7);
        let tunnel = run("wireguard", 110.0, 6e7);
        let row = catalog::find("net_wireguard_cost").expect("row");
        let runs = [&direct_old, &direct, &tunnel];
        // Within one run there is nothing to pair.
        assert_eq!(evaluate(row, &any(), &tunnel), None);
        // Paired with the nearest direct run: 1 - 6/8.
        assert_eq!(
            evaluate_paired(row, &any(), &tunnel, &runs),
            Some(Val::Num(0.25))
        );
        // A direct run is only a partner, never paired itself.
        assert_eq!(evaluate_paired(row, &any(), &direct, &runs), None);
        // No direct run on the side: no value.
        assert_eq!(evaluate_paired(row, &any(), &tunnel, &[&tunnel]), None);
        // Rows that are not ratios are never paired.
        let deployed = catalog::find("net_deployed").expect("row");
        assert_eq!(evaluate_paired(deployed, &any(), &tunnel, &runs), None);
    }

    #[test]
    fn joins_fractions_coverage_and_zero_fallbacks() {
        let o = obs(
            vec![
                s(
                    "labnode_zfs_snapshot_newest_age_seconds",
                    &[("pool", "tank"), ("dataset", "tank/home")],
                    600.0,
                ),
                s(
                    "labnode_zfs_snapshot_newest_age_seconds",
                    &[("pool", "tank"), ("dataset", "tank/scratch")],
                    9e6,
                ),
                s(
                    "labnode_zfs_dataset_protected",
                    &[("pool", "tank"), ("dataset", "tank/home")],
                    1.0,
                ),
                s(
                    "labnode_zfs_dataset_protected",
                    &[("pool", "tank"), ("dataset", "tank/scratch")],
                    0.0,
                ),
                s("labnode_collector_up", &[("collector", "system")], 1.0),
                s("labnode_collector_up", &[("collector", "gpu")], 0.0),
                s("labnode_collector_up", &[("collector", "zfs")], 1.0),
                s("labnode_collector_up", &[("collector", "other")], 1.0),
                s(
                    "labnode_net_congestion_control_info",
                    &[("algorithm", "bbr")],
                    1.0,
                ),
                s("labnode_system_os_info", &[("id", "debian")], 1.0),
            ],
            &[],
        );
        // Only the protected dataset's age counts.
        assert_eq!(eval("rpo", &any(), &o), Some(Val::Num(600.0)));
        // system and zfs are up, of every collector the registry has ("other" is not one).
        let expected = crate::catalog::COLLECTORS.len() as f64;
        assert_eq!(
            eval("collectors_up", &any(), &o),
            Some(Val::Num(2.0 / expected))
        );
        // The net collector ran and saw no peer: 0, not "not measured".
        assert_eq!(eval("wireguard_up", &any(), &o), Some(Val::Num(0.0)));
        assert_eq!(eval("nixos", &any(), &o), Some(Val::Num(0.0)));
        assert_eq!(
            eval("congestion_control", &any(), &o),
            Some(Val::Text("bbr".into()))
        );
        // Nothing to read: not measured.
        assert_eq!(eval("gpu_power", &any(), &o), None);
        assert_eq!(eval("secrets_outside_store", &any(), &o), None);
    }

    #[test]
    fn a_peer_that_never_shook_hands_counts_as_down() {
        fn peer(p: &str) -> [(&str, &str); 2] {
            [("interface", "wg0"), ("peer", p)]
        }
        let o = obs(
            vec![
                s(
                    "labnode_net_wireguard_peer_handshake_age_seconds",
                    &peer("a"),
                    30.0,
                ),
                s(
                    "labnode_net_wireguard_peer_transmit_bytes_total",
                    &peer("a"),
                    9e9,
                ),
                s(
                    "labnode_net_wireguard_peer_handshake_age_seconds",
                    &peer("b"),
                    400.0,
                ),
                s(
                    "labnode_net_wireguard_peer_transmit_bytes_total",
                    &peer("b"),
                    9e9,
                ),
                // Configured, sending handshake initiations, never answered: no age.
                s(
                    "labnode_net_wireguard_peer_transmit_bytes_total",
                    &peer("c"),
                    148.0,
                ),
            ],
            &[],
        );
        assert_eq!(eval("wireguard_up", &any(), &o), Some(Val::Num(1.0 / 3.0)));
    }

    #[test]
    fn a_counter_increase_counts_resets_and_fresh_processes() {
        let row = catalog::find("gpu_energy").expect("row");
        let Measure::Value { sel, .. } = &row.measure else {
            panic!("gpu_energy reads one counter")
        };
        let e = |src: &str, v: f64| {
            s(
                "labnode_gpu_energy_joules_total",
                &[("gpu", "0"), ("source", src)],
                v,
            )
        };
        let side = |vals: &[f64], src: &str| Side {
            observations: vals.iter().map(|v| obs(vec![e(src, *v)], &[])).collect(),
            ..Side::default()
        };
        // A running counter: 100 -> 250, a reset, 0 -> 40: 150 + 40.
        let nvml = side(&[100.0, 250.0, 40.0], "nvml");
        assert_eq!(increase(sel, &any(), &nvml, false), Some((190.0, 3)));
        assert_eq!(increase(sel, &any(), &nvml, true), Some((190.0, 3)));
        // labnode's integral in snapshots starts at 0 in each collect: each counts whole.
        let integrated = side(&[22.0, 20.0, 23.0], "integrated");
        assert_eq!(increase(sel, &any(), &integrated, true), Some((65.0, 3)));
        // The same from Prometheus (one serve process): first to last, 22 -> 20 a reset.
        assert_eq!(increase(sel, &any(), &integrated, false), Some((23.0, 3)));
        assert_eq!(increase(sel, &any(), &side(&[], "nvml"), true), None);
    }
}
