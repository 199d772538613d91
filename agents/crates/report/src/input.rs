//! What a report reads: the observations of one side, from snapshot files or from
//! Prometheus, in one shape.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use labnode_core::host::HostFacts;
use labnode_core::snapshot::{
    self, CollectorRun, Provenance, RecordKind, SCHEMA_VERSION, Snapshot,
};
use labnode_core::{Kind, Unit};
use serde::Deserialize;

/// FNV-1a: the lookup key is a short metric name, hashed thousands of times per report;
/// nothing here needs a keyed hash (the names come from the operator's own files).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A metric or label name or value, shared by every sample that repeats it.
pub type Name = Arc<str>;

/// Hands out one shared copy of each string, and knows which metrics the report reads.
#[derive(Debug)]
pub struct Interner {
    names: HashSet<Name, BuildHasherDefault<Fnv>>,
    wanted: HashSet<&'static str, BuildHasherDefault<Fnv>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            names: HashSet::default(),
            wanted: crate::catalog::metric_names().into_iter().collect(),
        }
    }
}

impl Interner {
    /// Whether any row reads this metric.
    pub fn wanted(&self, metric: &str) -> bool {
        self.wanted.contains(metric)
    }

    /// The shared copy of `s`.
    pub fn get(&mut self, s: &str) -> Name {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Name = Arc::from(s);
        self.names.insert(n.clone());
        n
    }
}

/// One labelled value as a catalog row reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub metric: Name,
    /// Label pairs.
    pub labels: Vec<(Name, Name)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of a label, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }
}

/// One observation of a host: a snapshot, or one instant of a Prometheus range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// When, seconds since the epoch.
    pub at: f64,
    /// Measured samples (operator-entered samples are not measurements and are left out).
    pub samples: Vec<Sample>,
    /// Kinds of the drill and probe records it holds (those this build knows).
    pub records: Vec<RecordKind>,
    /// Collectors that were down, with why.
    pub down: Vec<(String, String)>,
    /// Where each metric's samples are in `samples` (see [`Self::index`]).
    by_metric: HashMap<Name, (usize, usize), BuildHasherDefault<Fnv>>,
}

impl Observation {
    /// An empty observation at `at`.
    pub fn new(at: f64) -> Self {
        Observation {
            at,
            ..Observation::default()
        }
    }

    /// Groups the samples by metric name so [`Self::metric`] finds them with one lookup;
    /// every source calls it once the samples are in.
    pub fn index(&mut self) {
        self.samples.sort_by(|a, b| a.metric.cmp(&b.metric));
        self.by_metric.clear();
        let mut start = 0;
        for i in 1..=self.samples.len() {
            if i == self.samples.len() || self.samples[i].metric != self.samples[start].metric {
                self.by_metric
                    .insert(self.samples[start].metric.clone(), (start, i));
                start = i;
            }
        }
    }

    /// The samples of one metric.
    pub fn metric(&self, name: &str) -> &[Sample] {
        match self.by_metric.get(name) {
            Some(&(a, b)) => &self.samples[a..b],
            None => &[],
        }
    }

    /// Whether any sample has this metric name.
    pub fn has(&self, metric: &str) -> bool {
        !self.metric(metric).is_empty()
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
    /// Where the observations came from.
    pub source: Source,
}

/// Where a side's observations came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Snapshot files: one observation per snapshot.
    #[default]
    Snapshots,
    /// A Prometheus range: one observation per step.
    Prometheus,
}

impl Source {
    /// What `n` observations are called: "1 snapshot", "3 points".
    pub fn noun(self, n: usize) -> &'static str {
        match (self, n == 1) {
            (Source::Snapshots, true) => "snapshot",
            (Source::Snapshots, false) => "snapshots",
            (Source::Prometheus, true) => "point",
            (Source::Prometheus, false) => "points",
        }
    }
}

impl Side {
    /// Observations holding a record of `kind`, counted.
    pub fn count_records(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for o in &self.observations {
            if o.records.is_empty() {
                *out.entry(String::new()).or_default() += 1;
            }
            let mut kinds: Vec<RecordKind> = o.records.clone();
            kinds.sort();
            kinds.dedup();
            for k in kinds {
                *out.entry(k.as_str().to_owned()).or_default() += 1;
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
    let mut sides = read_sides(vec![(sources, files.to_vec())])?;
    Ok(sides.pop().unwrap_or_default())
}

/// Reads the files of several sides in one parallel pass (so neither side waits for the
/// other's slowest thread), each side as [`read_snapshots`] does.
pub fn read_sides(sides: Vec<(Vec<String>, Vec<Wanted>)>) -> Result<Vec<Side>, InputError> {
    let all: Vec<(usize, &Wanted)> = sides
        .iter()
        .enumerate()
        .flat_map(|(i, (_, files))| files.iter().map(move |w| (i, w)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(all.len().max(1));
    let chunk = all.len().div_ceil(threads).max(1);
    type Part = Result<Vec<(usize, Read)>, snapshot::SnapshotError>;
    let parsed: Vec<Part> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut names = Interner::default();
                    let mut out = Vec::with_capacity(part.len());
                    for (i, w) in part {
                        let read = read_one(&w.path, &mut names)?;
                        if w.label.as_ref().is_none_or(|l| *l == read.label) {
                            out.push((*i, read));
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
    let mut reads: Vec<Vec<Read>> = sides.iter().map(|_| Vec::new()).collect();
    for part in parsed {
        for (i, r) in part? {
            reads[i].push(r);
        }
    }
    Ok(sides
        .into_iter()
        .zip(reads)
        .map(|((sources, _), r)| side_from_reads(sources, r))
        .collect())
}

/// One snapshot file as the report keeps it.
#[derive(Debug)]
pub struct Read {
    /// The snapshot's label.
    pub label: String,
    /// Its host facts.
    pub host: HostFacts,
    /// Its samples, collector runs and records.
    pub obs: Observation,
    /// Operator-entered samples left out.
    pub operator_samples: usize,
}

/// The snapshot document as the report reads it: the same fields as the core's
/// [`Snapshot`], every one required and checked, none unknown, but strings borrowed from
/// the file and record contents only checked to be JSON (the report reads their kind).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lite<'a> {
    schema_version: u32,
    label: String,
    #[serde(rename = "taken_at")]
    _taken_at: Cow<'a, str>,
    taken_at_unix: f64,
    #[serde(rename = "labnode_version")]
    _labnode_version: Cow<'a, str>,
    host: HostFacts,
    collectors: Vec<CollectorRun>,
    #[serde(borrow)]
    samples: Vec<LiteSample<'a>>,
    #[serde(default, borrow)]
    records: Vec<LiteRecord<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiteSample<'a> {
    #[serde(borrow)]
    metric: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "label_pairs")]
    labels: Vec<Pair<'a>>,
    value: f64,
    #[serde(rename = "unit")]
    _unit: Unit,
    #[serde(rename = "kind")]
    _kind: Kind,
    provenance: Provenance,
    #[serde(borrow, rename = "source")]
    _source: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiteRecord<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "data")]
    _data: serde::de::IgnoredAny,
}

/// A label name and value, borrowed from the file where it can be.
type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A JSON object of label pairs, in file order, without building a map.
fn label_pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Pair<'de>>, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<Pair<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of label names and values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(4));
            while let Some((k, v)) = m.next_entry::<Borrowed, Borrowed>()? {
                out.push((k.0, v.0));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs)
}

/// A string borrowed from the input where it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Borrowed<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads one snapshot in one pass; a file that does not read that way is read again by the
/// core's checking parser, which names the schema version before any other complaint (and
/// reads documents of this version that the fast path does not know).
pub fn read_one(path: &Path, names: &mut Interner) -> Result<Read, snapshot::SnapshotError> {
    let bytes = std::fs::read(path).map_err(|source| snapshot::SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    match serde_json::from_slice::<Lite>(&bytes) {
        Ok(lite) if lite.schema_version == SCHEMA_VERSION => Ok(from_lite(lite, names)),
        Ok(lite) => Err(snapshot::SnapshotError::Version {
            path: path.to_owned(),
            found: u64::from(lite.schema_version),
        }),
        Err(_) => Snapshot::parse(&bytes, path).map(|s| from_snapshot(s, names)),
    }
}

fn collector_runs(obs: &mut Observation, runs: Vec<CollectorRun>, names: &mut Interner) {
    // What Prometheus sees as labnode_collector_up, the snapshot lists as its runs.
    let up = names.get("labnode_collector_up");
    let collector = names.get("collector");
    for c in runs {
        if let Some(why) = &c.error {
            obs.down.push((c.name.clone(), why.clone()));
        } else if !c.up {
            obs.down.push((c.name.clone(), "down".into()));
        }
        obs.samples.push(Sample {
            metric: up.clone(),
            labels: vec![(collector.clone(), names.get(&c.name))],
            value: if c.up { 1.0 } else { 0.0 },
        });
    }
}

/// A sample as either reader has it: metric, label pairs, value, provenance.
type Raw<'s, L> = (&'s str, L, f64, Provenance);

/// Builds a [`Read`] from either reader's parts; operator-entered samples are counted, not
/// kept.
fn assemble<'s, L: Iterator<Item = (&'s str, &'s str)>>(
    at: f64,
    label: String,
    host: HostFacts,
    samples: impl ExactSizeIterator<Item = Raw<'s, L>>,
    runs: Vec<CollectorRun>,
    records: Vec<RecordKind>,
    names: &mut Interner,
) -> Read {
    let mut obs = Observation::new(at);
    obs.samples.reserve(samples.len() + runs.len());
    let mut operator_samples = 0;
    for (metric, labels, value, provenance) in samples {
        if provenance == Provenance::OperatorEntered {
            operator_samples += 1;
            continue;
        }
        // Keep what a row can read; a store holds many series no row needs.
        if !names.wanted(metric) {
            continue;
        }
        obs.samples.push(Sample {
            metric: names.get(metric),
            labels: labels.map(|(k, v)| (names.get(k), names.get(v))).collect(),
            value,
        });
    }
    collector_runs(&mut obs, runs, names);
    obs.records = records;
    obs.index();
    Read {
        label,
        host,
        obs,
        operator_samples,
    }
}

fn from_lite(lite: Lite, names: &mut Interner) -> Read {
    let records = lite
        .records
        .into_iter()
        .filter_map(|r| RecordKind::parse(&r.kind))
        .collect();
    let samples = lite.samples.iter().map(|s| {
        let labels = s.labels.iter().map(|(k, v)| (&**k, &**v));
        (&*s.metric, labels, s.value, s.provenance)
    });
    assemble(
        lite.taken_at_unix,
        lite.label,
        lite.host,
        samples,
        lite.collectors,
        records,
        names,
    )
}

/// The same from the core's document.
pub fn from_snapshot(snap: Snapshot, names: &mut Interner) -> Read {
    let records = snap
        .records
        .into_iter()
        .filter_map(|r| RecordKind::parse(&r.kind))
        .collect();
    let samples = snap.samples.iter().map(|s| {
        let labels = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        (s.metric.as_str(), labels, s.value, s.provenance)
    });
    assemble(
        snap.taken_at_unix,
        snap.label,
        snap.host,
        samples,
        snap.collectors,
        records,
        names,
    )
}

/// Builds a side from read snapshots.
pub fn side_from_reads(sources: Vec<String>, mut reads: Vec<Read>) -> Side {
    reads.sort_by(|a, b| a.obs.at.total_cmp(&b.obs.at));
    let mut side = Side {
        sources,
        source: Source::Snapshots,
        ..Side::default()
    };
    let mut host = HostSummary::default();
    for r in reads {
        host.hosts.push(r.host.hostname);
        // Drill snapshots carry host facts too; the OS line comes from every snapshot.
        host.os.extend(r.host.os);
        host.kernels.push(r.host.kernel_release);
        if let Some(n) = r.host.nixos {
            host.nixos_generations.extend(n.generation);
            host.flake_revisions.extend(n.flake_revision);
        }
        side.operator_samples += r.operator_samples;
        side.observations.push(r.obs);
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

    fn sorted(mut r: Read) -> Read {
        for s in &mut r.obs.samples {
            s.labels.sort();
        }
        r
    }

    #[test]
    fn the_fast_reader_reads_what_the_core_reads() {
        let root = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("tests/fixtures");
        let mut n = 0;
        for side in ["before", "after", "candidate"] {
            for f in json_files(&root.join(side)).expect("fixtures") {
                let mut names = Interner::default();
                let fast = sorted(read_one(&f, &mut names).expect("fast"));
                let core = Snapshot::read(&f).expect("core");
                let slow = sorted(from_snapshot(core, &mut names));
                assert_eq!(fast.obs, slow.obs, "{}", f.display());
                assert_eq!(fast.host, slow.host);
                assert_eq!(fast.label, slow.label);
                n += 1;
            }
        }
        assert!(n >= 25, "{n} fixtures");
    }

    #[test]
    fn a_document_the_fast_reader_refuses_is_read_by_the_core_or_named() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("x.json");
        // Valid JSON, a required field missing: the core's message, with its location.
        std::fs::write(&p, r#"{"schema_version": 1, "label": "a"}"#).expect("write");
        let e = read_one(&p, &mut Interner::default())
            .expect_err("incomplete")
            .to_string();
        assert!(e.contains("missing field"), "{e}");
        // Another version: said before anything else.
        std::fs::write(&p, r#"{"schema_version": 3, "extra": true}"#).expect("write");
        let e = read_one(&p, &mut Interner::default())
            .expect_err("version")
            .to_string();
        assert!(
            e.ends_with("snapshot schema version 3, this labnode reads version 1"),
            "{e}"
        );
    }

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
