//! The scheduler: each gate polled on its own thread until it passes or its time runs out,
//! the moment it first passed recorded; then one round of every gate at once confirms that
//! they are green together.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{Checker, Env, Gate, GateOutcome, GatesResult};

/// The longest a single check may take, so a gate keeps polling at its pace.
const CHECK_BOUND: Duration = Duration::from_secs(2);

/// One gate's live state, shared with the progress display.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Gate name.
    pub name: String,
    /// Green now.
    pub green: bool,
    /// Last error.
    pub error: Option<String>,
}

/// Runs every gate until all are green together, or one runs out of time. Timings are from
/// `switch_start`; gate timeouts count from now and never reach past `deadline`.
/// `stop` ends the polling early (an interrupted run): the gates still red stay red.
pub fn run(
    gates: &[Gate],
    env: &Env,
    switch_start: Instant,
    deadline: Option<Instant>,
    live: &Mutex<Vec<Live>>,
    stop: &(dyn Fn() -> bool + Sync),
) -> GatesResult {
    let polling_since = SystemTime::now();
    let start = Instant::now();
    let mut outcomes: Vec<GateOutcome> = gates
        .iter()
        .map(|g| GateOutcome {
            name: g.name.clone(),
            kind: g.check.kind().to_owned(),
            passed: false,
            first_pass_seconds: None,
            checks: 0,
            last_error: None,
            timeout_seconds: g.timeout.as_secs_f64(),
        })
        .collect();
    if let Ok(mut l) = live.lock() {
        *l = gates
            .iter()
            .map(|g| Live {
                name: g.name.clone(),
                ..Live::default()
            })
            .collect();
    }
    let ends: Vec<Instant> = gates
        .iter()
        .map(|g| {
            let own = start + g.timeout;
            deadline.map_or(own, |d| own.min(d))
        })
        .collect();
    let mut green_since: Vec<Option<Instant>> = vec![None; gates.len()];
    loop {
        let pending: Vec<usize> = (0..gates.len())
            .filter(|i| green_since[*i].is_none())
            .collect();
        if pending.is_empty() {
            // Every gate has passed: once more, all at once.
            let mut checker = Checker::new(env.clone());
            let mut all = true;
            for (i, g) in gates.iter().enumerate() {
                outcomes[i].checks += 1;
                if let Err(e) = checker.check(&g.check, polling_since, CHECK_BOUND) {
                    all = false;
                    green_since[i] = None;
                    outcomes[i].last_error = Some(format!("red again after passing: {e}"));
                    set_live(live, i, false, Some(e));
                }
            }
            if all {
                let green_at = green_since
                    .iter()
                    .flatten()
                    .max()
                    .map(|t| t.duration_since(switch_start));
                for o in &mut outcomes {
                    o.passed = true;
                }
                return GatesResult {
                    gates: outcomes,
                    green_at: Some(green_at.unwrap_or_else(|| start.duration_since(switch_start))),
                };
            }
            continue;
        }
        let results: Vec<(usize, PollResult)> = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .iter()
                .map(|&i| {
                    let g = &gates[i];
                    let end = ends[i];
                    let env = env.clone();
                    (
                        i,
                        s.spawn(move || poll(g, &env, polling_since, end, live, i, stop)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| {
                    (
                        i,
                        h.join().unwrap_or(PollResult {
                            passed_at: None,
                            checks: 0,
                            last_error: Some("the gate's thread panicked".into()),
                        }),
                    )
                })
                .collect()
        });
        let mut timed_out = false;
        for (i, r) in results {
            outcomes[i].checks += r.checks;
            if r.last_error.is_some() {
                outcomes[i].last_error = r.last_error;
            }
            match r.passed_at {
                Some(t) => {
                    green_since[i] = Some(t);
                    if outcomes[i].first_pass_seconds.is_none() {
                        outcomes[i].first_pass_seconds =
                            Some(t.duration_since(switch_start).as_secs_f64());
                    }
                }
                None => timed_out = true,
            }
        }
        if timed_out {
            // The gates that passed earlier may have turned red since (a unit that was
            // active for a moment, then failed): the record says how they are now.
            let mut checker = Checker::new(env.clone());
            for (i, o) in outcomes.iter_mut().enumerate() {
                o.passed = green_since[i].is_some();
                if o.passed {
                    o.checks += 1;
                    if let Err(e) = checker.check(&gates[i].check, polling_since, CHECK_BOUND) {
                        o.passed = false;
                        o.last_error = Some(format!("red again after passing: {e}"));
                    }
                }
            }
            return GatesResult {
                gates: outcomes,
                green_at: None,
            };
        }
    }
}

fn set_live(live: &Mutex<Vec<Live>>, i: usize, green: bool, error: Option<String>) {
    if let Ok(mut l) = live.lock() {
        if let Some(g) = l.get_mut(i) {
            g.green = green;
            g.error = error;
        }
    }
}

struct PollResult {
    passed_at: Option<Instant>,
    checks: u32,
    last_error: Option<String>,
}

fn poll(
    g: &Gate,
    env: &Env,
    since: SystemTime,
    end: Instant,
    live: &Mutex<Vec<Live>>,
    i: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> PollResult {
    let mut checker = Checker::new(env.clone());
    let mut checks = 0;
    let mut last_error = None;
    loop {
        let at = Instant::now();
        let bound = end
            .saturating_duration_since(at)
            .clamp(Duration::from_millis(50), CHECK_BOUND);
        checks += 1;
        match checker.check(&g.check, since, bound) {
            Ok(()) => {
                set_live(live, i, true, None);
                return PollResult {
                    passed_at: Some(Instant::now()),
                    checks,
                    last_error,
                };
            }
            Err(e) => {
                set_live(live, i, false, Some(e.clone()));
                last_error = Some(e);
            }
        }
        let next = at + g.interval;
        if next >= end || stop() {
            return PollResult {
                passed_at: None,
                checks,
                last_error,
            };
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::Command;
    use super::super::tcp::Tcp;
    use super::super::testing::env;
    use super::*;
    use crate::gates::Check;
    use std::net::TcpListener;

    #[test]
    fn polling_records_the_first_pass_and_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let start = Instant::now();
        // The listener opens 400 ms in (later on a loaded builder: the test reads when).
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let l = TcpListener::bind(addr).expect("rebind");
            (l, start.elapsed().as_secs_f64())
        });
        let gates = vec![
            Gate {
                name: "late".into(),
                timeout: Duration::from_secs(5),
                interval: Duration::from_millis(20),
                check: Check::Tcp(Tcp(addr.to_string())),
            },
            Gate {
                name: "always".into(),
                timeout: Duration::from_secs(5),
                interval: Duration::from_millis(20),
                check: Check::Command(Command(vec!["true".into()])),
            },
        ];
        let live = Mutex::new(Vec::new());
        let r = run(&gates, &env(), start, None, &live, &|| false);
        let (_listener, opened) = opener.join().expect("opener");
        // Green once the late gate first passed: not before its port opened, and within a
        // few polls after (the bound leaves room for a loaded machine, not for a gate that
        // waited for its timeout).
        let green = r.green_at.expect("green").as_secs_f64();
        assert!(
            green >= opened && green < opened + 2.0,
            "green at {green}, port open at {opened}"
        );
        let late = &r.gates[0];
        assert!(late.passed && late.checks >= 2, "{late:?}");
        assert!(
            late.first_pass_seconds
                .is_some_and(|t| t >= opened && t <= green),
            "{late:?}, port open at {opened}"
        );
        assert!(
            r.gates[1].first_pass_seconds.is_some_and(|t| t < opened),
            "{:?}",
            r.gates[1]
        );

        let never = vec![Gate {
            name: "never".into(),
            timeout: Duration::from_millis(300),
            interval: Duration::from_millis(100),
            check: Check::Command(Command(vec!["false".into()])),
        }];
        let r = run(&never, &env(), Instant::now(), None, &live, &|| false);
        assert_eq!(r.green_at, None);
        assert!(!r.gates[0].passed);
        // One check every 100 ms for 300 ms: 3, fewer when a check is slow to run.
        let checks = r.gates[0].checks;
        assert!((1..=3).contains(&checks), "{checks} checks");
        assert_eq!(r.red().len(), 1);
        assert!(
            r.red()[0].starts_with(&format!(
                "never (command) red after {checks} checks: false exited"
            )),
            "{:?}",
            r.red()
        );
    }
}
