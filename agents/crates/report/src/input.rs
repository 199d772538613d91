//! What a report reads: the observations of one side, from snapshot files or from
//! Prometheus, in one shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use labnode_core::snapshot::{self, Provenance, SCHEMA_VERSION, Snapshot};

/// One labelled value as a catalog row reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub metric: String,
    /// Label pairs, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of a label, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One observation of a host: a snapshot, or one instant of a Prometheus range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// When, seconds since the epoch.
    pub at: f64,
    /// Measured samples (operator-entered samples are not measurements and are left out).
    pub samples: Vec<Sample>,
    /// Kinds of the drill and probe records it holds (`rollback_drill`, ...).
    pub records: Vec<String>,
    /// Collectors that were down, with why.
    pub down: Vec<(String, String)>,
}

impl Observation {
    /// Whether any sample has this metric name.
    pub fn has(&self, metric: &str) -> bool {
        self.samples.iter().any(|s| s.metric == metric)
    }
}

/// Facts about the host a side was observed on, for the report's header.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HostSummary {
    /// Host names (or Prometheus instances), sorted.
    pub hosts: Vec<String>,
    /// Operating systems, sorted.
    pub os: Vec<String>,
    /// Kernel releases, sorted.
    pub kernels: Vec<String>,
    /// NixOS generations seen, sorted.
    pub nixos_generations: Vec<u64>,
    /// Flake revisions seen, sorted.
    pub flake_revisions: Vec<String>,
}

/// One side of the comparison: every observation and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Where the observations came from, as given (paths, labels, a Prometheus range).
    pub sources: Vec<String>,
    /// The observations, oldest first.
    pub observations: Vec<Observation>,
    /// Host facts.
    pub host: HostSummary,
    /// Operator-entered samples found in snapshots (not used as measurements).
    pub operator_samples: usize,
    /// What one observation is called in the report: `snapshots` or `points`.
    pub noun: &'static str,
}

impl Side {
    /// Observations holding a record of `kind`, counted.
    pub fn count_records(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for o in &self.observations {
            if o.records.is_empty() {
                *out.entry(String::new()).or_default() += 1;
            }
            let mut kinds: Vec<&String> = o.records.iter().collect();
            kinds.dedup();
            for k in kinds {
                *out.entry(k.clone()).or_default() += 1;
            }
        }
        out
    }

    /// The first and last observation time.
    pub fn span(&self) -> Option<(f64, f64)> {
        let first = self.observations.iter().map(|o| o.at).reduce(f64::min)?;
        let last = self.observations.iter().map(|o| o.at).reduce(f64::max)?;
        Some((first, last))
    }
}

/// Why snapshots could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A snapshot file is broken, foreign or of another schema version.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// Neither a file, a directory nor a label in the store.
    #[error("{arg}: no such file or directory, and no snapshot labelled {arg:?} in {store}{why}")]
    NotFound {
        /// The argument.
        arg: String,
        /// The store searched.
        store: PathBuf,
        /// Why the store could not be searched, if it could not.
        why: String,
    },
    /// A directory without snapshots.
    #[error("{0}: no snapshot files (*.json) in this directory")]
    Empty(PathBuf),
}

/// A snapshot file to read; `label` set when it was found by label, to be confirmed by the
/// label inside it (a store name `<time>-a-1.json` is label `a-1` or the second `a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The file.
    pub path: PathBuf,
    /// The label it must carry.
    pub label: Option<String>,
}

/// Turns `--before`/`--after` arguments into snapshot files: a file is itself, a directory
/// is every `*.json` in it, anything else is a label looked up in `store`.
pub fn resolve(args: &[String], store: &Path) -> Result<Vec<Wanted>, InputError> {
    let mut out = Vec::new();
    let mut store_files: Option<Vec<PathBuf>> = None;
    for arg in args {
        let p = Path::new(arg);
        if p.is_file() {
            out.push(Wanted {
                path: p.to_owned(),
                label: None,
            });
        } else if p.is_dir() {
            let files = json_files(p)?;
            if files.is_empty() {
                return Err(InputError::Empty(p.to_owned()));
            }
            out.extend(files.into_iter().map(|path| Wanted { path, label: None }));
        } else {
            let not_found = |why: String| InputError::NotFound {
                arg: arg.clone(),
                store: store.to_owned(),
                why,
            };
            if snapshot::check_label(arg).is_err() {
                return Err(not_found(String::new()));
            }
            if store_files.is_none() {
                store_files = Some(
                    json_files(store).map_err(|e| not_found(format!(" (cannot read it: {e})")))?,
                );
            }
            let found: Vec<Wanted> = store_files
                .iter()
                .flatten()
                .filter(|f| may_carry_label(f, arg))
                .map(|f| Wanted {
                    path: f.clone(),
                    label: Some(arg.clone()),
                })
                .collect();
            if found.is_empty() {
                return Err(not_found(String::new()));
            }
            out.extend(found);
        }
    }
    Ok(out)
}

/// Whether a store file `<time>-<label>[-<n>].json` may hold a snapshot labelled `label`
/// (the time part has no '-'); the label inside the file decides.
fn may_carry_label(path: &Path, label: &str) -> bool {
    let Some(rest) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .and_then(|n| n.split_once('-'))
        .map(|(_, rest)| rest)
    else {
        return false;
    };
    match rest.strip_prefix(label) {
        Some("") => true,
        Some(tail) => tail
            .strip_prefix('-')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, snapshot::SnapshotError> {
    let rd = std::fs::read_dir(dir).map_err(|source| snapshot::SnapshotError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads snapshot files (in parallel) into a side. Every file must be a whole snapshot of
/// this schema version: one that is not stops the report with its name and why.
pub fn read_snapshots(sources: Vec<String>, files: &[Wanted]) -> Result<Side, InputError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let parsed: Vec<Result<Vec<Snapshot>, snapshot::SnapshotError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(part.len());
                    for w in part {
                        let snap = read_one(&w.path)?;
                        if w.label.as_ref().is_none_or(|l| *l == snap.label) {
                            out.push(snap);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut snaps = Vec::with_capacity(files.len());
    for part in parsed {
        snaps.extend(part?);
    }
    Ok(side_from_snapshots(sources, snaps))
}

/// Reads one snapshot: straight into the typed document (one pass), checking the version
/// after; anything wrong is read again by the core's checking parser for its message
/// (which names a newer or older schema version before any other complaint).
pub fn read_one(path: &Path) -> Result<Snapshot, snapshot::SnapshotError> {
    let bytes = std::fs::read(path).map_err(|source| snapshot::SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    match serde_json::from_slice::<Snapshot>(&bytes) {
        Ok(s) if s.schema_version == SCHEMA_VERSION => Ok(s),
        Ok(s) => Err(snapshot::SnapshotError::Version {
            path: path.to_owned(),
            found: u64::from(s.schema_version),
        }),
        Err(_) => Snapshot::parse(&bytes, path),
    }
}

/// Builds a side from parsed snapshots.
pub fn side_from_snapshots(sources: Vec<String>, mut snaps: Vec<Snapshot>) -> Side {
    snaps.sort_by(|a, b| a.taken_at_unix.total_cmp(&b.taken_at_unix));
    let mut side = Side {
        sources,
        noun: "snapshots",
        ..Side::default()
    };
    let mut host = HostSummary::default();
    for snap in snaps {
        host.hosts.push(snap.host.hostname.clone());
        // Drill snapshots carry host facts too; the OS line comes from every snapshot.
        if let Some(os) = &snap.host.os {
            host.os.push(os.clone());
        }
        host.kernels.push(snap.host.kernel_release.clone());
        if let Some(n) = &snap.host.nixos {
            host.nixos_generations.extend(n.generation);
            host.flake_revisions.extend(n.flake_revision.clone());
        }
        let mut obs = Observation {
            at: snap.taken_at_unix,
            ..Observation::default()
        };
        for s in snap.samples {
            if s.provenance == Provenance::OperatorEntered {
                side.operator_samples += 1;
                continue;
            }
            obs.samples.push(Sample {
                metric: s.metric,
                labels: s.labels.into_iter().collect(),
                value: s.value,
            });
        }
        // What Prometheus sees as labnode_collector_up, the snapshot lists as its runs.
        for c in snap.collectors {
            if let Some(why) = &c.error {
                obs.down.push((c.name.clone(), why.clone()));
            } else if !c.up {
                obs.down.push((c.name.clone(), "down".into()));
            }
            obs.samples.push(Sample {
                metric: "labnode_collector_up".into(),
                labels: vec![("collector".into(), c.name)],
                value: if c.up { 1.0 } else { 0.0 },
            });
        }
        obs.records = snap.records.into_iter().map(|r| r.kind).collect();
        side.observations.push(obs);
    }
    host.finish();
    side.host = host;
    side
}

impl HostSummary {
    /// Sorts and removes duplicates.
    pub fn finish(&mut self) {
        self.hosts.sort();
        self.hosts.dedup();
        self.os.sort();
        self.os.dedup();
        self.kernels.sort();
        self.kernels.dedup();
        self.nixos_generations.sort_unstable();
        self.nixos_generations.dedup();
        self.flake_revisions.sort();
        self.flake_revisions.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_may_carry_their_label_only() {
        for (name, label, want) in [
            ("20261124T140000.000Z-after.json", "after", true),
            ("20261124T140000.000Z-after-1.json", "after", true),
            ("20261124T140000.000Z-after-12.json", "after", true),
            ("20261124T140000.000Z-after-12.json", "after-12", true),
            ("20261124T140000.000Z-before.json", "after", false),
            ("20261124T140000.000Z-xafter.json", "after", false),
            ("20261124T140000.000Z-after-x.json", "after", false),
            ("20261124T140000.000Z-after-nixos.json", "after", false),
            ("20261124T140000.000Z-a-b.json", "b", false),
            ("after.json", "after", false),
        ] {
            assert_eq!(
                may_carry_label(Path::new(name), label),
                want,
                "{name} {label}"
            );
        }
    }
}
