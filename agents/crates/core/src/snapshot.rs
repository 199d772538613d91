//! Snapshots: one JSON document per `labnode collect`, written atomically, never rewritten.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::files::write_new_file;
use crate::host::HostFacts;
use crate::hub::RunResult;
use crate::metrics::{Kind, Metrics, Unit};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Measured by a labnode collector or drill.
    Measured,
    /// Entered by an operator (a value nobody can measure any more).
    OperatorEntered,
}

/// One measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Metric name, as exported to Prometheus.
    pub metric: String,
    /// Label pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The value, in `unit`.
    pub value: f64,
    /// The unit.
    pub unit: Unit,
    /// Gauge or counter.
    pub kind: Kind,
    /// Where the value came from.
    pub provenance: Provenance,
    /// The collector or drill that produced it.
    pub source: String,
}

/// How one collector's run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorRun {
    /// The collector's name.
    pub name: String,
    /// Whether it succeeded.
    pub up: bool,
    /// How long it took.
    pub duration_seconds: f64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The kinds of record labnode writes, each one run of a drill, a switch or a probe. The
/// file keeps the kind as text (`rollback_drill`); a kind this build does not know (a
/// newer writer's) is kept in the file and skipped by readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// `labnode drill rollback`.
    RollbackDrill,
    /// `labnode safe-switch`.
    SafeSwitch,
    /// `labnode drill zfs`.
    ZfsDrill,
    /// `labnode net bench`.
    NetBench,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [RecordKind; 4] = [
        RecordKind::RollbackDrill,
        RecordKind::SafeSwitch,
        RecordKind::ZfsDrill,
        RecordKind::NetBench,
    ];

    /// The name in files and series, e.g. `rollback_drill`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordKind::RollbackDrill => "rollback_drill",
            RecordKind::SafeSwitch => "safe_switch",
            RecordKind::ZfsDrill => "zfs_drill",
            RecordKind::NetBench => "net_bench",
        }
    }

    /// The kind named `name`, if this build knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// What `n` records of the kind are called: "1 rollback drill", "2 network benches".
    pub fn noun(self, n: usize) -> &'static str {
        let (one, many) = match self {
            RecordKind::RollbackDrill => ("rollback drill", "rollback drills"),
            RecordKind::SafeSwitch => ("safe switch", "safe switches"),
            RecordKind::ZfsDrill => ("ZFS drill", "ZFS drills"),
            RecordKind::NetBench => ("network bench", "network benches"),
        };
        if n == 1 { one } else { many }
    }

    /// The command that writes it.
    pub const fn writer(self) -> &'static str {
        match self {
            RecordKind::RollbackDrill => "labnode drill rollback",
            RecordKind::SafeSwitch => "labnode safe-switch",
            RecordKind::ZfsDrill => "labnode drill zfs",
            RecordKind::NetBench => "labnode net bench",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A structured result of a drill or probe run (a rollback drill, a ZFS drill, a network
/// bench): what its samples summarise, in full. `kind` names the writer's schema, e.g.
/// `rollback_drill`; `data` is that writer's own serde type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// What wrote it and how to read `data`, e.g. `rollback_drill`.
    pub kind: String,
    /// The result itself.
    pub data: serde_json::Value,
}

/// One snapshot document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The label given to `labnode collect --label`, e.g. `before`.
    pub label: String,
    /// When it was taken, RFC 3339 UTC.
    pub taken_at: String,
    /// When it was taken, seconds since the epoch.
    pub taken_at_unix: f64,
    /// The labnode version that wrote it.
    pub labnode_version: String,
    /// Facts about the host.
    pub host: HostFacts,
    /// Each collector's run.
    pub collectors: Vec<CollectorRun>,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Structured results of drills and probes, beside their samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<Record>,
}

/// What can go wrong reading or writing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A label that cannot be part of a file name.
    #[error(
        "invalid label {0:?}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Label(String),
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not valid snapshot JSON.
    #[error("{path}:{line}:{column}: not a valid snapshot: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Written by an incompatible labnode.
    #[error("{path}: snapshot schema version {found}, this labnode reads version {SCHEMA_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    crate::sys::io_error_at(path, |path, source| SnapshotError::Io { path, source })
}

/// Checks a snapshot label.
pub fn check_label(label: &str) -> Result<(), SnapshotError> {
    let ok = (1..=64).contains(&label.len())
        && label.starts_with(|c: char| c.is_ascii_alphanumeric())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::Label(label.to_owned()))
    }
}

impl Snapshot {
    /// Builds a snapshot from collector runs.
    pub fn from_runs(
        label: &str,
        host: HostFacts,
        runs: &[RunResult],
    ) -> Result<Self, SnapshotError> {
        let mut snap = Snapshot::new(label, host)?;
        for run in runs {
            snap.collectors.push(CollectorRun {
                name: run.collector.clone(),
                up: run.failure.is_none(),
                duration_seconds: run.duration.as_secs_f64(),
                error: run.failure.as_ref().map(|(_, why)| why.clone()),
            });
            if let Some(m) = run.metrics.as_ref().filter(|_| run.failure.is_none()) {
                snap.add_metrics(&run.collector, m);
            }
        }
        Ok(snap)
    }

    /// An empty snapshot taken now: drills and probes add their samples and records.
    pub fn new(label: &str, host: HostFacts) -> Result<Self, SnapshotError> {
        check_label(label)?;
        let now = SystemTime::now();
        Ok(Snapshot {
            schema_version: SCHEMA_VERSION,
            label: label.to_owned(),
            taken_at: humantime::format_rfc3339_millis(now).to_string(),
            taken_at_unix: crate::sys::unix_seconds(now),
            labnode_version: env!("CARGO_PKG_VERSION").to_owned(),
            host,
            collectors: Vec::new(),
            samples: Vec::new(),
            records: Vec::new(),
        })
    }

    /// Adds every series of `metrics` as a measured sample from `source`.
    pub fn add_metrics(&mut self, source: &str, metrics: &Metrics) {
        for f in metrics.families() {
            for s in &f.series {
                self.samples.push(Sample {
                    metric: f.name.clone(),
                    labels: s.labels.iter().cloned().collect(),
                    value: s.value,
                    unit: f.unit,
                    kind: f.kind,
                    provenance: Provenance::Measured,
                    source: source.to_owned(),
                });
            }
        }
    }

    /// Adds a structured result of kind `kind`.
    pub fn add_record<T: Serialize>(
        &mut self,
        kind: RecordKind,
        data: &T,
    ) -> Result<(), SnapshotError> {
        let data = serde_json::to_value(data).map_err(|e| SnapshotError::Io {
            path: PathBuf::from(kind.as_str()),
            source: io::Error::other(e),
        })?;
        self.records.push(Record {
            kind: kind.as_str().to_owned(),
            data,
        });
        Ok(())
    }

    /// Reads and checks one snapshot file.
    pub fn read(path: &Path) -> Result<Self, SnapshotError> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Self::parse(&bytes, path)
    }

    /// Parses snapshot JSON (from `path`, for messages).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, SnapshotError> {
        let parse_err = |e: serde_json::Error| SnapshotError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or("")
                .to_owned(),
        };
        let version_err = |found: u64| SnapshotError::Version {
            path: path.to_owned(),
            found,
        };
        match serde_json::from_slice::<Snapshot>(bytes) {
            Ok(snap) if snap.schema_version == SCHEMA_VERSION => Ok(snap),
            Ok(snap) => Err(version_err(u64::from(snap.schema_version))),
            Err(e) => {
                // Another schema version says so, instead of "unknown field": only on
                // failure is the document read a second time, for its version alone.
                #[derive(Deserialize)]
                struct Version {
                    schema_version: Option<u64>,
                }
                match serde_json::from_slice::<Version>(bytes) {
                    Ok(Version { schema_version })
                        if schema_version != Some(SCHEMA_VERSION.into()) =>
                    {
                        Err(version_err(schema_version.unwrap_or(0)))
                    }
                    _ => Err(parse_err(e)),
                }
            }
        }
    }

    /// The file name this snapshot is stored under: time first, so names sort by time.
    pub fn file_stem(&self) -> String {
        let compact: String = self
            .taken_at
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        format!("{compact}-{}", self.label)
    }
}

/// One file of a store listing: its path and the snapshot or why it could not be read.
pub type Listed = (PathBuf, Result<Snapshot, SnapshotError>);

/// A directory of snapshots.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created when a snapshot is first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `snap` as a new file and returns its path. Never replaces an existing file:
    /// the data reaches the disk (fsync) before the name appears, and the name appears
    /// atomically, so a crash leaves either no file or a whole one. A store that does not
    /// exist yet is created 0750, its parent fsynced.
    pub fn write(&self, snap: &Snapshot) -> Result<PathBuf, SnapshotError> {
        // The store holds the host's facts: not for every local user.
        crate::files::create_dir_durably(&self.dir, 0o750).map_err(io_err(&self.dir))?;
        let mut bytes = serde_json::to_vec_pretty(snap).map_err(|e| SnapshotError::Io {
            path: self.dir.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        let stem = snap.file_stem();
        for n in 0..1000 {
            let name = if n == 0 {
                format!("{stem}.json")
            } else {
                format!("{stem}-{n}.json")
            };
            match write_new_file(&self.dir, &name, &bytes) {
                Ok(()) => return Ok(self.dir.join(name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&self.dir.join(&name))(e)),
            }
        }
        Err(io_err(&self.dir)(io::Error::other(
            "1000 snapshots share one name",
        )))
    }

    /// Every `*.json` file in the store, oldest first, each parsed or with its error.
    pub fn list(&self) -> Result<Vec<Listed>, SnapshotError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_snapshot_name(p))
            .collect();
        paths.sort();
        Ok(paths
            .into_iter()
            .map(|p| {
                let s = Snapshot::read(&p);
                (p, s)
            })
            .collect())
    }
}

/// One record found in a store, with the snapshot it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundRecord {
    /// The snapshot file.
    pub path: PathBuf,
    /// The snapshot's label.
    pub label: String,
    /// When the snapshot was taken, seconds since the epoch.
    pub taken_at_unix: f64,
    /// The record's data.
    pub data: serde_json::Value,
}

/// The records of one kind in a store, kept up to date cheaply: snapshot files are never
/// rewritten, so each file is read once, and a refresh reads only the files that are new.
/// Collectors use it to export the latest drill or probe results.
#[derive(Debug)]
pub struct RecordIndex {
    store: Store,
    kind: RecordKind,
    /// Every file read so far, with the records of `kind` it holds (usually none).
    seen: BTreeMap<PathBuf, Vec<FoundRecord>>,
    /// Files that could not be read, with why (reported, retried on the next refresh).
    errors: Vec<String>,
}

impl RecordIndex {
    /// An index of the records of `kind` in `store`; nothing is read until [`Self::refresh`].
    pub fn new(store: Store, kind: RecordKind) -> Self {
        RecordIndex {
            store,
            kind,
            seen: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Reads the files that appeared since the last refresh and forgets the ones that went.
    /// A store directory that does not exist yet is an empty store.
    pub fn refresh(&mut self) -> Result<(), SnapshotError> {
        let names = match std::fs::read_dir(self.store.dir()) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_snapshot_name(p))
                .collect::<std::collections::BTreeSet<_>>(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(io_err(self.store.dir())(e)),
        };
        self.seen.retain(|p, _| names.contains(p));
        self.errors.clear();
        for p in names {
            if self.seen.contains_key(&p) {
                continue;
            }
            match Snapshot::read(&p) {
                Ok(snap) => {
                    let found = snap
                        .records
                        .into_iter()
                        .filter(|r| r.kind == self.kind.as_str())
                        .map(|r| FoundRecord {
                            path: p.clone(),
                            label: snap.label.clone(),
                            taken_at_unix: snap.taken_at_unix,
                            data: r.data,
                        })
                        .collect();
                    self.seen.insert(p, found);
                }
                Err(e) => self.errors.push(e.to_string()),
            }
        }
        Ok(())
    }

    /// Every record of the kind, oldest snapshot first.
    pub fn records(&self) -> impl Iterator<Item = &FoundRecord> {
        let mut all: Vec<&FoundRecord> = self.seen.values().flatten().collect();
        all.sort_by(|a, b| a.taken_at_unix.total_cmp(&b.taken_at_unix));
        all.into_iter()
    }

    /// The newest record of the kind.
    pub fn latest(&self) -> Option<&FoundRecord> {
        self.records().last()
    }

    /// Files of the last refresh that could not be read, with why.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

fn is_snapshot_name(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "json")
        && !p
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HostPaths, facts};
    use crate::metrics::Metrics;
    use std::time::Duration;

    fn sample_runs() -> Vec<RunResult> {
        let mut m = Metrics::new();
        m.gauge("labnode_system_memory_total_bytes", "Memory.", Unit::Bytes)
            .push(&[], 1024.0);
        vec![
            RunResult {
                collector: "system".into(),
                metrics: Some(m),
                duration: Duration::from_millis(3),
                failure: None,
            },
            RunResult {
                collector: "gpu".into(),
                metrics: None,
                duration: Duration::from_millis(1),
                failure: Some((crate::hub::Failure::Error, "no NVML".into())),
            },
        ]
    }

    #[test]
    fn writes_reads_and_never_overwrites() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::new(t.path().join("snaps"));
        let snap = Snapshot::from_runs("before", facts(&HostPaths::default()), &sample_runs())
            .expect("snapshot");
        let a = store.write(&snap).expect("write");
        let b = store.write(&snap).expect("second write gets its own name");
        assert_ne!(a, b);
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2);
        for (_, s) in &listed {
            let s = s.as_ref().expect("parses");
            assert_eq!(s, &snap);
        }
        assert_eq!(snap.samples.len(), 1);
        assert_eq!(snap.samples[0].unit, Unit::Bytes);
        assert_eq!(snap.collectors[1].error.as_deref(), Some("no NVML"));
        assert!(
            a.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("-before.json"))
        );
    }

    #[test]
    fn a_new_store_is_not_for_every_local_user() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("var/lib/snaps");
        let snap = Snapshot::from_runs("before", facts(&HostPaths::default()), &sample_runs())
            .expect("snapshot");
        Store::new(&dir).write(&snap).expect("write");
        for d in [&dir, &t.path().join("var")] {
            let mode = std::fs::metadata(d).expect("stat").permissions().mode() & 0o777;
            // 0750 less a umask; never readable by others.
            assert_eq!(mode & 0o007, 0, "{} is {mode:o}", d.display());
            assert_eq!(mode & 0o700, 0o700, "{} is {mode:o}", d.display());
        }
        // An existing directory keeps its mode.
        let open = t.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Store::new(&open).write(&snap).expect("write");
        let mode = std::fs::metadata(&open).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn records_round_trip_and_the_index_reads_each_file_once() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::new(t.path().join("snaps"));
        let mut index = RecordIndex::new(store.clone(), RecordKind::ZfsDrill);
        index.refresh().expect("a missing store is empty");
        assert!(index.latest().is_none());

        let mut snap = Snapshot::new("after", facts(&HostPaths::default())).expect("new");
        snap.add_record(
            RecordKind::ZfsDrill,
            &serde_json::json!({"ok": true, "n": 1}),
        )
        .expect("record");
        snap.add_record(RecordKind::NetBench, &serde_json::json!({"n": 9}))
            .expect("record");
        let first = store.write(&snap).expect("write");
        assert_eq!(Snapshot::read(&first).expect("read"), snap);

        snap.records[0].data = serde_json::json!({"ok": false, "n": 2});
        snap.taken_at_unix += 1.0;
        store.write(&snap).expect("write");
        std::fs::write(store.dir().join("broken.json"), "{").expect("write");
        index.refresh().expect("refresh");
        assert_eq!(index.records().count(), 2);
        assert_eq!(index.latest().map(|r| r.data["n"].clone()), Some(2.into()));
        assert_eq!(index.errors().len(), 1);

        // A file that was read is not read again, even if something replaced it behind
        // the store's back; one that is removed is forgotten.
        std::fs::write(&first, "{").expect("clobber");
        index.refresh().expect("refresh");
        assert_eq!(index.records().count(), 2);
        std::fs::remove_file(&first).expect("rm");
        index.refresh().expect("refresh");
        assert_eq!(index.records().count(), 1);
    }

    #[test]
    fn record_kinds_name_themselves_and_parse_back() {
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::parse(k.as_str()), Some(k));
            assert!(k.writer().starts_with("labnode "));
            assert_ne!(k.noun(1), k.noun(2));
        }
        assert_eq!(RecordKind::parse("collect"), None);
    }

    #[test]
    fn snapshots_without_records_stay_as_they_were() {
        let snap = Snapshot::from_runs("before", facts(&HostPaths::default()), &sample_runs())
            .expect("snapshot");
        let text = serde_json::to_string(&snap).expect("json");
        assert!(!text.contains("records"));
    }

    #[test]
    fn refuses_bad_labels() {
        for bad in ["", "../x", "a b", ".hidden", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        check_label("after-nixos_2.1").expect("good label");
    }

    #[test]
    fn corrupt_or_foreign_files_are_named_errors() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("x.json");
        std::fs::write(&p, "{\"schema_version\": 1, \"label\": ").expect("write");
        let e = Snapshot::read(&p).expect_err("truncated").to_string();
        assert!(e.starts_with(&format!("{}:1:", p.display())), "{e}");
        std::fs::write(&p, "{\"schema_version\": 9}").expect("write");
        let e = Snapshot::read(&p).expect_err("newer").to_string();
        assert!(e.contains("schema version 9"), "{e}");
    }

    #[test]
    fn values_survive_the_file_exactly() {
        let values: [f64; 5] = [
            1_795_464_765.573_881_9,
            0.1 + 0.2,
            1e-300,
            7_980_711_936.0,
            48.293_014_423_356_23,
        ];
        for v in values {
            let text = serde_json::to_string(&v).expect("serialize");
            let back: f64 = serde_json::from_str(&text).expect("parse");
            assert_eq!(back.to_bits(), v.to_bits(), "{v} came back as {back}");
        }
    }
}
