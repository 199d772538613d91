//! Numbers as people read them, and how a change is worded.

use crate::catalog::{Direction, Display, Wording};

/// `v` with `digits` significant digits, trailing zeros dropped; integers of five or more
/// digits grouped with commas.
pub fn sig(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    // Rounding may carry into one more digit (9.995 -> "10.00"): fine, trimmed below.
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    group_thousands(&s)
}

fn group_thousands(s: &str) -> String {
    let (sign, rest) = s.strip_prefix('-').map_or(("", s), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    if int.len() < 5 {
        return s.to_owned();
    }
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// A duration in seconds, in the largest unit that keeps it above 1.
pub fn duration(secs: f64) -> String {
    const UNITS: &[(f64, &str, &str)] = &[
        (7.0 * 86400.0, "week", "weeks"),
        (86400.0, "day", "days"),
        (3600.0, "h", "h"),
        (60.0, "min", "min"),
        (1.0, "s", "s"),
        (1e-3, "ms", "ms"),
        (1e-6, "µs", "µs"),
    ];
    if secs == 0.0 {
        return "0 s".into();
    }
    let a = secs.abs();
    let (size, one, many) = UNITS
        .iter()
        .find(|(size, ..)| a >= *size * 0.9995)
        .copied()
        .unwrap_or((1e-6, "µs", "µs"));
    let n = sig(secs / size, 3);
    let unit = if n == "1" { one } else { many };
    format!("{n} {unit}")
}

fn scaled(v: f64, base: f64, units: &[&str]) -> String {
    let mut x = v;
    let mut i = 0;
    while x.abs() >= base * 0.9995 && i + 1 < units.len() {
        x /= base;
        i += 1;
    }
    format!("{} {}", sig(x, 3), units[i])
}

/// A value of a row's display kind (the summary's central value).
pub fn value(display: Display, v: f64) -> String {
    match display {
        Display::Duration => duration(v),
        Display::Bytes => scaled(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"]),
        // Values are in the metric's base unit, bytes per second; people read links in bits.
        Display::BitRate => scaled(
            v * 8.0,
            1000.0,
            &["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"],
        ),
        Display::Percent => percent(v),
        Display::Factor => format!("{v:.2}x"),
        Display::Watts => format!("{} W", sig(v, 3)),
        Display::Energy => scaled(v / 3600.0, 1000.0, &["Wh", "kWh", "MWh"]),
        Display::Count => sig(v, 4),
        Display::CpuPerGigabit => format!("{} CPU s/Gbit", sig(v, 3)),
        Display::YesNo => {
            if v >= 1.0 {
                "yes".into()
            } else if v <= 0.0 {
                "no".into()
            } else {
                format!("yes in {}", percent(v))
            }
        }
        Display::Text => sig(v, 3),
    }
}

/// A ratio as a percentage: "80%", "99.5%", "0.31%".
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    let s = if p.abs() >= 99.95 {
        sig(p.round(), 6)
    } else if p.abs() >= 10.0 {
        sig((p * 10.0).round() / 10.0, 3)
    } else {
        sig(p, 2)
    };
    format!("{s}%")
}

/// Which way a change went, judged by the row's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Better, by the row's direction.
    Better,
    /// Worse.
    Worse,
    /// No change worth a word (within 0.5%).
    Unchanged,
    /// Changed, on a row that is not judged.
    Changed,
    /// An operator's bound leaves the direction open.
    Undetermined,
    /// Moved, but not beyond the noise or the row's minimum effect.
    WithinNoise,
    /// Moved, but a side has fewer runs than a verdict needs.
    NotJudged,
}

/// A bound an operator put on a value ("30 min or more").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The true value is at least this.
    AtLeast,
    /// The true value is at most this.
    AtMost,
}

/// A number on one side, with the bound an operator may have put on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The value (the summary's central value).
    pub v: f64,
    /// The bound, for operator-entered values.
    pub bound: Option<Bound>,
}

/// An interval, "4.1–5.3 Mbit/s" (the unit once when both ends share it), or
/// "850 ms – 1.2 s".
pub fn range(display: Display, lo: f64, hi: f64) -> String {
    let (a, b) = (value(display, lo), value(display, hi));
    // A value is its number, then its unit ("0.04 CPU s/Gbit"): split at the first space.
    match (a.split_once(' '), b.split_once(' ')) {
        (Some((x, u)), Some((y, w))) if u == w => format!("{x}–{y} {u}"),
        _ if a.ends_with('%') && b.ends_with('%') => {
            format!("{}–{b}", a.trim_end_matches('%'))
        }
        _ => format!("{a} – {b}"),
    }
}

/// A value with its bound, e.g. "≥ 30 min".
pub fn bounded(display: Display, p: Point) -> String {
    let v = value(display, p.v);
    match p.bound {
        Some(Bound::AtLeast) => format!("≥ {v}"),
        Some(Bound::AtMost) => format!("≤ {v}"),
        None => v,
    }
}

/// The change from `a` to `b`: its verdict and its words.
pub fn change(
    display: Display,
    direction: Direction,
    wording: Wording,
    a: Point,
    b: Point,
) -> (Verdict, String) {
    let (x, y) = (a.v, b.v);
    let same = if matches!(wording, Wording::Points) || display == Display::YesNo {
        (y - x).abs() < 5e-4
    } else {
        (y - x).abs() <= 0.005 * x.abs().max(y.abs())
    };
    let up = y > x;
    // Whether the bounds leave the direction of the change open; if not, whether the
    // magnitude is a lower bound ("at least").
    let (open, at_least) = bound_effect(a.bound, b.bound, up, same);
    let verdict = if open {
        Verdict::Undetermined
    } else if same {
        Verdict::Unchanged
    } else {
        match direction {
            Direction::Neutral => Verdict::Changed,
            Direction::HigherIsBetter if up => Verdict::Better,
            Direction::LowerIsBetter if !up => Verdict::Better,
            _ => Verdict::Worse,
        }
    };
    let from_to = || format!("{} → {}", bounded(display, a), bounded(display, b));
    if open {
        return (verdict, from_to());
    }
    if same {
        return (verdict, "unchanged".into());
    }
    let qual = if at_least { "at least " } else { "" };
    let text = match wording {
        Wording::FromTo | Wording::State => from_to(),
        Wording::Points => {
            let pp = (y - x) * 100.0;
            format!(
                "{qual}{}{} pp",
                if pp > 0.0 { "+" } else { "-" },
                sig(pp.abs(), 2)
            )
        }
        Wording::Percent if x == 0.0 => from_to(),
        // Twice as much or more reads better as a factor than as "+1939%".
        Wording::Percent if x > 0.0 && y >= 2.0 * x => {
            format!("{qual}{}x", sig((y / x * 10.0).round() / 10.0, 3))
        }
        Wording::Percent => {
            let rel = (y - x) / x.abs() * 100.0;
            let mag = if rel.abs() >= 10.0 {
                sig(rel.abs().round(), 4)
            } else {
                sig(rel.abs(), 2)
            };
            format!("{qual}{}{mag}%", if rel > 0.0 { "+" } else { "-" })
        }
        Wording::Factor { better, worse } => {
            let better_way = match direction {
                Direction::LowerIsBetter => !up,
                _ => up,
            };
            let word = if better_way { better } else { worse };
            let (big, small) = if up { (y, x) } else { (x, y) };
            if small <= 0.0 {
                from_to()
            } else {
                let f = big / small;
                if f < 1.1 {
                    format!("{qual}{}% {word}", sig((f - 1.0) * 100.0, 2))
                } else if f < 10.0 {
                    format!("{qual}{}x {word}", sig((f * 10.0).round() / 10.0, 3))
                } else {
                    format!("{qual}{}x {word}", sig(f.round(), 6))
                }
            }
        }
    };
    (verdict, text)
}

/// `(open, at_least)`: whether operator bounds leave the direction open, and whether the
/// size of the change is only a lower bound.
fn bound_effect(a: Option<Bound>, b: Option<Bound>, up: bool, same: bool) -> (bool, bool) {
    if a.is_none() && b.is_none() {
        return (false, false);
    }
    // A bound on `a` makes the change's size a lower bound when the change moves away from
    // the side the bound leaves open; otherwise the true change could be anything.
    let a_ok = match a {
        None => true,
        Some(Bound::AtLeast) => !up && !same,
        Some(Bound::AtMost) => up && !same,
    };
    let b_ok = match b {
        None => true,
        Some(Bound::AtLeast) => up && !same,
        Some(Bound::AtMost) => !up && !same,
    };
    if a_ok && b_ok {
        (false, true)
    } else {
        (true, false)
    }
}

/// How much worse `b` is than `a` by the row's direction, as a fraction of `a` (0.35 is
/// 35% worse); `None` when not worse or not judged. From 0 to anything worse is infinite.
pub fn worsening(direction: Direction, a: f64, b: f64) -> Option<f64> {
    let worse_by = match direction {
        Direction::Neutral => return None,
        Direction::LowerIsBetter => b - a,
        Direction::HigherIsBetter => a - b,
    };
    if worse_by <= 0.0 {
        return None;
    }
    Some(if a == 0.0 {
        f64::INFINITY
    } else {
        worse_by / a.abs()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    const FASTER: Wording = Wording::Factor {
        better: "faster",
        worse: "slower",
    };

    fn p(v: f64) -> Point {
        Point { v, bound: None }
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig(4.2, 3), "4.2");
        assert_eq!(sig(4.256, 3), "4.26");
        assert_eq!(sig(956.4, 3), "956");
        assert_eq!(sig(0.012345, 3), "0.0123");
        assert_eq!(sig(25809.0, 4), "25,809");
        assert_eq!(sig(-1234567.0, 7), "-1,234,567");
        assert_eq!(sig(9.9996, 3), "10");
        assert_eq!(sig(0.0, 3), "0");
    }

    #[test]
    fn units() {
        assert_eq!(duration(4.2), "4.2 s");
        assert_eq!(duration(0.85), "850 ms");
        assert_eq!(duration(0.000_42), "420 µs");
        assert_eq!(duration(1800.0), "30 min");
        assert_eq!(duration(3600.0), "1 h");
        assert_eq!(duration(5400.0), "1.5 h");
        assert_eq!(duration(86400.0), "1 day");
        assert_eq!(duration(604_800.0), "1 week");
        assert_eq!(duration(59.99), "1 min");
        assert_eq!(value(Display::Bytes, 7_980_711_936.0), "7.43 GiB");
        assert_eq!(value(Display::Bytes, 512.0), "512 B");
        // Bit rates are stored in bytes per second and shown in bits.
        assert_eq!(value(Display::BitRate, 119_550_000.0), "956 Mbit/s");
        assert_eq!(value(Display::BitRate, 9.41e9 / 8.0), "9.41 Gbit/s");
        assert_eq!(value(Display::Percent, 0.8), "80%");
        assert_eq!(value(Display::Percent, 0.995), "99.5%");
        assert_eq!(value(Display::Percent, 1.0), "100%");
        assert_eq!(value(Display::Percent, 0.0031), "0.31%");
        assert_eq!(value(Display::Factor, 1.6666), "1.67x");
        assert_eq!(value(Display::Factor, 1.0), "1.00x");
        assert_eq!(value(Display::YesNo, 1.0), "yes");
        assert_eq!(value(Display::YesNo, 0.0), "no");
        assert_eq!(value(Display::YesNo, 0.6), "yes in 60%");
    }

    #[test]
    fn every_wording_and_direction() {
        use Display::{BitRate, Count, Duration, Percent, YesNo};
        use Verdict::{Better, Changed, Unchanged, Worse};
        // One case a line: display, direction, wording, before, after, verdict, words.
        #[rustfmt::skip]
        let cases = [
            (Duration, LowerIsBetter, FASTER, 26.0, 4.2, Better, "6.2x faster"),
            (Duration, LowerIsBetter, FASTER, 4.0, 10.0, Worse, "2.5x slower"),
            (Duration, LowerIsBetter, FASTER, 604_800.0, 3600.0, Better, "168x faster"),
            (Duration, LowerIsBetter, FASTER, 10.0, 9.5, Better, "5.3% faster"),
            (Duration, LowerIsBetter, Wording::FromTo, 604_800.0, 3600.0, Better, "1 week → 1 h"),
            (BitRate, HigherIsBetter, Wording::Percent, 800e6, 952e6, Better, "+19%"),
            (BitRate, HigherIsBetter, Wording::Percent, 100.0, 88.0, Worse, "-12%"),
            (BitRate, HigherIsBetter, Wording::Percent, 956.0, 957.0, Unchanged, "unchanged"),
            (Percent, HigherIsBetter, Wording::Points, 0.5, 0.95, Better, "+45 pp"),
            (Percent, Neutral, Wording::Points, 0.3, 0.25, Changed, "-5 pp"),
            (YesNo, HigherIsBetter, Wording::State, 0.0, 1.0, Better, "no → yes"),
            // From zero a percentage means nothing: both values instead.
            (Count, LowerIsBetter, Wording::Percent, 0.0, 12.0, Worse, "0 → 12"),
        ];
        for (display, direction, wording, a, b, verdict, text) in cases {
            assert_eq!(
                change(display, direction, wording, p(a), p(b)),
                (verdict, text.into()),
                "{display:?} {a} -> {b}"
            );
        }
    }

    #[test]
    fn operator_bounds() {
        let at_least_30min = Point {
            v: 1800.0,
            bound: Some(Bound::AtLeast),
        };
        let from_30min = |after| {
            change(
                Display::Duration,
                LowerIsBetter,
                FASTER,
                at_least_30min,
                p(after),
            )
        };
        assert_eq!(
            from_30min(4.2),
            (Verdict::Better, "at least 429x faster".into())
        );
        // "30 min or more" before, 45 min after: could be better or worse.
        assert_eq!(
            from_30min(2700.0),
            (Verdict::Undetermined, "≥ 30 min → 45 min".into())
        );
    }

    #[test]
    fn ranges_say_the_unit_once() {
        assert_eq!(
            range(Display::BitRate, 512_500.0, 650_000.0),
            "4.1–5.2 Mbit/s"
        );
        assert_eq!(range(Display::Percent, 0.4, 1.0), "40–100%");
        assert_eq!(range(Display::Duration, 0.85, 1.2), "850 ms – 1.2 s");
        assert_eq!(
            range(Display::CpuPerGigabit, 0.0397, 0.102),
            "0.0397–0.102 CPU s/Gbit"
        );
    }

    #[test]
    fn worsening_by_direction() {
        assert_eq!(worsening(LowerIsBetter, 4.0, 5.0), Some(0.25));
        assert_eq!(worsening(LowerIsBetter, 5.0, 4.0), None);
        assert_eq!(worsening(HigherIsBetter, 100.0, 70.0), Some(0.3));
        assert_eq!(worsening(HigherIsBetter, 0.0, 1.0), None);
        assert_eq!(worsening(LowerIsBetter, 0.0, 1.0), Some(f64::INFINITY));
        assert_eq!(worsening(Neutral, 1.0, 100.0), None);
    }
}
