//! Operator-entered values: what nobody can measure any more ("a manual rollback took 30
//! minutes or more"), from a YAML file, shown as operator-entered, never as measured.
//!
//! ```yaml
//! before:
//!   rollback_time:
//!     value: 30 min
//!     bound: at_least           # optional: at_least or at_most
//!     note: Restoring /etc from the nightly tarball and reinstalling packages by hand.
//! after:
//!   secrets_outside_store:
//!     value: yes
//!     note: sops-nix; reviewed with `nix-store -qR /run/current-system | xargs grep -l`.
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use labnode_core::config::{self, ConfigError};
use serde::Deserialize;

use crate::catalog::{self, Display};
use crate::eval::{Val, Which};
use crate::format::Bound;

/// One operator-entered value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entered {
    /// The value, in the row's base unit.
    pub val: Val,
    /// A bound on the true value, if the operator gave one.
    pub bound: Option<Bound>,
    /// Where it came from and why it is believed.
    pub note: String,
    /// `file:line:column` of the entry.
    pub at: String,
}

/// Every operator-entered value, by side and row id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operator {
    /// Values for the before side.
    pub before: BTreeMap<&'static str, Entered>,
    /// Values for the after side.
    pub after: BTreeMap<&'static str, Entered>,
}

impl Operator {
    /// The values of one side.
    pub fn side(&self, which: Which) -> &BTreeMap<&'static str, Entered> {
        match which {
            Which::Before => &self.before,
            Which::After => &self.after,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    before: BTreeMap<String, Entry>,
    #[serde(default)]
    after: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    value: Raw,
    #[serde(default)]
    bound: Option<Bound>,
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Raw {
    Bool(bool),
    Num(f64),
    Text(String),
}

/// Reads an operator file. Every error names file, line, column and key.
pub fn load(path: &Path) -> Result<Operator, ConfigError> {
    let (file, text): (File, String) = config::load(path)?;
    let mut out = Operator::default();
    for (which, entries) in [(Which::Before, file.before), (Which::After, file.after)] {
        for (id, entry) in entries {
            let key = format!("{}.{id}", which.as_str());
            let Some(row) = catalog::find(&id) else {
                let ids: Vec<&str> = catalog::rows().map(|(_, r)| r.id).collect();
                return Err(ConfigError::at_key(
                    path,
                    &text,
                    &key,
                    format!("no report row `{id}`; the rows are: {}", ids.join(", ")),
                ));
            };
            let value_key = format!("{key}.value");
            let val = parse_value(row.display, &entry.value)
                .map_err(|why| ConfigError::at_key(path, &text, &value_key, why))?;
            if entry.note.trim().is_empty() {
                return Err(ConfigError::at_key(
                    path,
                    &text,
                    &format!("{key}.note"),
                    "say where the value comes from: an operator-entered value needs a note",
                ));
            }
            if entry.bound.is_some() && matches!(row.display, Display::YesNo | Display::Text) {
                return Err(ConfigError::at_key(
                    path,
                    &text,
                    &format!("{key}.bound"),
                    "a yes/no or text value has no bound",
                ));
            }
            let loc = config::locate_key(&text, &key);
            let at = match loc {
                Some((l, c)) => format!("{}:{l}:{c}", path.display()),
                None => path.display().to_string(),
            };
            let entered = Entered {
                val,
                bound: entry.bound,
                note: entry.note.trim().to_owned(),
                at,
            };
            match which {
                Which::Before => out.before.insert(row.id, entered),
                Which::After => out.after.insert(row.id, entered),
            };
        }
    }
    Ok(out)
}

/// Parses an operator's value for a row shown as `display`, into the row's base unit.
fn parse_value(display: Display, raw: &Raw) -> Result<Val, String> {
    let text = match raw {
        Raw::Bool(b) => {
            return match display {
                Display::YesNo => Ok(Val::Num(if *b { 1.0 } else { 0.0 })),
                _ => Err(format!("expected {}, not a yes/no", expects(display))),
            };
        }
        Raw::Num(n) => {
            return match display {
                Display::Duration
                | Display::Bytes
                | Display::BitRate
                | Display::YesNo
                | Display::Text => Err(format!("`{n}` has no unit: expected {}", expects(display))),
                Display::Percent if !(0.0..=1.0).contains(n) => Err(format!(
                    "`{n}` is not a ratio between 0 and 1: write a percentage such as 95%"
                )),
                _ if !n.is_finite() || *n < 0.0 => Err(format!("`{n}` must be a number >= 0")),
                _ => Ok(Val::Num(*n)),
            };
        }
        Raw::Text(t) => t.trim(),
    };
    let bad = || format!("`{text}` is not {}", expects(display));
    match display {
        Display::Text => Ok(Val::Text(text.to_owned())),
        Display::YesNo => match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Ok(Val::Num(1.0)),
            "no" | "false" | "off" => Ok(Val::Num(0.0)),
            _ => Err(bad()),
        },
        Display::Duration => {
            let compact: String = text.split_whitespace().collect();
            humantime::parse_duration(&compact)
                .map(|d| Val::Num(d.as_secs_f64()))
                .map_err(|_| bad())
        }
        Display::Percent => {
            let n = text.strip_suffix('%').ok_or_else(bad)?;
            let v: f64 = n.trim().parse().map_err(|_| bad())?;
            if (0.0..=100.0).contains(&v) {
                Ok(Val::Num(v / 100.0))
            } else {
                Err(format!("`{text}` is not between 0% and 100%"))
            }
        }
        Display::Bytes => with_unit(text, BYTE_UNITS).ok_or_else(bad).map(Val::Num),
        Display::BitRate => with_unit(text, BIT_UNITS).ok_or_else(bad).map(Val::Num),
        Display::Watts => with_unit(text, &[("W", 1.0), ("kW", 1e3)])
            .ok_or_else(bad)
            .map(Val::Num),
        Display::Energy => with_unit(text, &[("Wh", 3600.0), ("kWh", 3.6e6), ("J", 1.0)])
            .ok_or_else(bad)
            .map(Val::Num),
        Display::Factor => {
            let n = text.strip_suffix('x').unwrap_or(text);
            n.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Val::Num)
                .ok_or_else(bad)
        }
        Display::Count | Display::CpuPerGigabit => text
            .replace(',', "")
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Val::Num)
            .ok_or_else(bad),
    }
}

const BYTE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("PB", 1e15),
    ("KiB", 1024.0),
    ("MiB", 1048576.0),
    ("GiB", 1073741824.0),
    ("TiB", 1099511627776.0),
    ("PiB", 1125899906842624.0),
];

/// Link rates as people write them, into bytes per second (the metrics' base unit).
const BIT_UNITS: &[(&str, f64)] = &[
    ("bit/s", 1.0 / 8.0),
    ("bps", 1.0 / 8.0),
    ("kbit/s", 1e3 / 8.0),
    ("kbps", 1e3 / 8.0),
    ("Kbps", 1e3 / 8.0),
    ("Mbit/s", 1e6 / 8.0),
    ("Mbps", 1e6 / 8.0),
    ("Gbit/s", 1e9 / 8.0),
    ("Gbps", 1e9 / 8.0),
    ("Tbit/s", 1e12 / 8.0),
];

/// "12 TB" with a unit from `units` (exact spelling), into base units.
fn with_unit(text: &str, units: &[(&str, f64)]) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num.replace(',', "").trim().parse().ok()?;
    let (_, scale) = units.iter().find(|(u, _)| *u == unit.trim())?;
    let v = n * scale;
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn expects(display: Display) -> &'static str {
    match display {
        Display::Duration => "a duration such as 30 min, 4h or 1 week",
        Display::Bytes => "a size such as 12 TB or 40 GiB",
        Display::BitRate => "a rate such as 800 Mbit/s or 1 Gbit/s",
        Display::Percent => "a percentage such as 95%",
        Display::Factor => "a factor such as 1.6x",
        Display::Watts => "a power such as 70 W",
        Display::Energy => "an energy such as 40 Wh or 1.2 kWh",
        Display::Count | Display::CpuPerGigabit => "a number",
        Display::YesNo => "yes or no",
        Display::Text => "a text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("operator.yaml");
        std::fs::write(&p, text).expect("write");
        (t, p)
    }

    #[test]
    fn reads_values_in_their_units() {
        let (_t, p) = write(
            "before:\n  rollback_time:\n    value: 30 min\n    bound: at_least\n    note: by hand\n  rpo:\n    value: 1 week\n    note: weekly rsync\n  net_deployed:\n    value: 800 Mbit/s\n    note: iperf3 in 2025\n  rollback_success:\n    value: 50%\n    note: about half\n  storage_logical:\n    value: 12 TB\n    note: df\nafter:\n  secrets_outside_store:\n    value: yes\n    note: sops-nix\n",
        );
        let op = load(&p).expect("loads");
        let rb = &op.before["rollback_time"];
        assert_eq!(rb.val, Val::Num(1800.0));
        assert_eq!(rb.bound, Some(Bound::AtLeast));
        assert_eq!(rb.at, format!("{}:2:3", p.display()));
        assert_eq!(op.before["rpo"].val, Val::Num(604_800.0));
        // "800 Mbit/s", in bytes per second.
        assert_eq!(op.before["net_deployed"].val, Val::Num(1e8));
        assert_eq!(op.before["rollback_success"].val, Val::Num(0.5));
        assert_eq!(op.before["storage_logical"].val, Val::Num(12e12));
        assert_eq!(op.after["secrets_outside_store"].val, Val::Num(1.0));
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let cases = [
            (
                "before:\n  rollbak_time:\n    value: 30 min\n    note: x\n",
                ":2:3: key `before.rollbak_time`: no report row `rollbak_time`",
            ),
            (
                "before:\n  rollback_time:\n    value: 30\n    note: x\n",
                ":3:5: key `before.rollback_time.value`: `30` has no unit",
            ),
            (
                "before:\n  rollback_time:\n    value: half an hour\n    note: x\n",
                ":3:5: key `before.rollback_time.value`: `half an hour` is not a duration",
            ),
            (
                "after:\n  rollback_success:\n    value: 120%\n    note: x\n",
                ":3:5: key `after.rollback_success.value`: `120%` is not between 0% and 100%",
            ),
            (
                "after:\n  rpo:\n    value: 1h\n",
                ":3:5: key `after.rpo`: missing field `note`",
            ),
            (
                "after:\n  rpo:\n    value: 1h\n    note: x\n    bonud: at_least\n",
                ":5:5: key `after.rpo.bonud`: unknown field `bonud`",
            ),
            (
                "after:\n  rpo:\n    value: 1h\n    note: \" \"\n",
                ":4:5: key `after.rpo.note`: say where the value comes from",
            ),
            ("during: {}\n", ":1:1: key `during`: unknown field `during`"),
        ];
        for (text, want) in cases {
            let (_t, p) = write(text);
            let e = load(&p).expect_err(text).to_string();
            let want = format!("{}{want}", p.display());
            assert!(e.starts_with(&want), "{text:?}\n got: {e}\nwant: {want}");
        }
    }
}
