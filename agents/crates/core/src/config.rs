//! Loading YAML configuration with errors that name file, line, column and key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The dotted key path, e.g. `collectors.system.interval`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `key` in `text`, located where the YAML parser saw the key.
    pub fn at_key(file: &Path, text: &str, key: &str, message: impl Into<String>) -> Self {
        let loc = Positions::parse(text).key(key);
        ConfigError {
            file: file.to_owned(),
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// Reads and parses `path` into `T`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    let value = parse(&text, path)?;
    Ok((value, text))
}

/// Parses YAML `text` (from `file`, for messages) into `T`.
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    // An empty file is an empty mapping, so every default applies.
    let text_or_empty = if text.trim().is_empty() { "{}" } else { text };
    let de = serde_norway::Deserializer::from_str(text_or_empty);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        let mut message = inner.to_string();
        // serde_norway appends " at line L column C"; the location is printed up front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // And it may prefix the path (or its parent) it saw; the key is printed instead.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.is_empty() && path.starts_with(prefix) {
                message = rest.to_owned();
            }
        }
        // Rust type names mean nothing to the reader of a YAML file.
        if let Some(i) = message.find("expected struct ") {
            message.truncate(i);
            message.push_str("expected a mapping (`key: value` lines)");
        }
        let mut line = loc.as_ref().map(|l| l.line());
        let mut column = loc.as_ref().map(|l| l.column());
        let parent = (path != "." && path != "?" && !path.is_empty()).then_some(path);
        let mut key = parent.clone();
        // serde names a duplicate key but not where it is; the YAML parser has both places.
        if let Some(dup) = message
            .strip_prefix("duplicate field `")
            .and_then(|m| m.strip_suffix('`'))
            .map(str::to_owned)
        {
            if let Some((first, (l2, c2))) = Positions::duplicate(text) {
                (line, column) = (Some(l2), Some(c2));
                message = format!("duplicate key `{dup}` (first at line {})", first.0);
            }
            key = Some(parent.map_or(dup.clone(), |p| format!("{p}.{dup}")));
        }
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            key,
            message,
        }
    })
}

/// The keys every collector section has (`enabled`, `interval`, `deadline`) and their
/// defaults, in one place.
pub trait Schedule {
    /// The interval when none is given.
    const DEFAULT_INTERVAL: Duration;
    /// The deadline when none is given (shortened to the interval where that is shorter).
    const DEFAULT_DEADLINE: Duration;
    /// The section's `enabled`, `interval` and `deadline`, as written.
    fn schedule(&self) -> (Option<bool>, Option<Interval>, Option<Deadline>);

    /// Whether the collector runs (default true).
    fn enabled(&self) -> bool {
        self.schedule().0.unwrap_or(true)
    }
    /// The poll interval in force.
    fn interval(&self) -> Duration {
        self.schedule()
            .1
            .map_or(Self::DEFAULT_INTERVAL, Period::get)
    }
    /// The deadline in force: the one given, else the default but never longer than the
    /// interval (`interval: 1s` alone must not leave a 5 s deadline).
    fn deadline(&self) -> Duration {
        self.schedule()
            .2
            .map_or(Self::DEFAULT_DEADLINE.min(self.interval()), Period::get)
    }
    /// Relations between the section's own values that their types cannot express
    /// (default: none). The key named is relative to the section.
    fn check_relations(&self) -> Result<(), SectionError> {
        Ok(())
    }
    /// Checks the section: a deadline that was given is not longer than the interval in
    /// force (the default included), then [`Schedule::check_relations`].
    fn check(&self) -> Result<(), SectionError> {
        let (interval, deadline) = (self.interval(), self.deadline());
        if self.schedule().2.is_some() && deadline > interval {
            return Err(SectionError {
                key: "deadline",
                message: format!(
                    "the deadline ({deadline:?}) must not be longer than the interval ({interval:?})"
                ),
            });
        }
        self.check_relations()
    }
}

/// Declares a collector's section: a struct with `enabled`, `interval` and `deadline`
/// first, then the section's own fields, deserialized with `deny_unknown_fields` (the keys
/// stay plain fields, so errors are located as on any struct), and its [`Schedule`] impl
/// from the two defaults plus any items given in `impl Schedule {}` (`check_relations`).
/// The struct derives `Debug`, `Clone`, `Default` and `serde::Deserialize` (the caller
/// depends on serde).
///
/// ```
/// use std::time::Duration;
/// use labnode_core::config::{Schedule, SectionError};
///
/// labnode_core::collector_config! {
///     /// Configuration of the `demo` collector.
///     pub struct Config {
///         defaults: interval Duration::from_secs(15), deadline Duration::from_secs(5);
///         /// How many.
///         pub count: Option<u8>,
///     }
///     impl Schedule {
///         fn check_relations(&self) -> Result<(), SectionError> {
///             Ok(())
///         }
///     }
/// }
///
/// let c = Config::default();
/// assert!(c.enabled());
/// assert_eq!((c.interval(), c.deadline()), (Duration::from_secs(15), Duration::from_secs(5)));
/// ```
#[macro_export]
macro_rules! collector_config {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            defaults: interval $interval:expr, deadline $deadline:expr;
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident : $field_ty:ty),* $(,)?
        }
        $(impl Schedule { $($items:tt)* })?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, ::serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            /// Whether the collector runs (default true).
            pub enabled: ::core::option::Option<bool>,
            /// Poll interval (default: the section's `Schedule::DEFAULT_INTERVAL`).
            pub interval: ::core::option::Option<$crate::config::Interval>,
            /// Deadline of one run (default: the section's `Schedule::DEFAULT_DEADLINE`,
            /// shortened to the interval where that is shorter).
            pub deadline: ::core::option::Option<$crate::config::Deadline>,
            $($(#[$field_meta])* $field_vis $field: $field_ty,)*
        }

        impl $crate::config::Schedule for $name {
            const DEFAULT_INTERVAL: ::std::time::Duration = $interval;
            const DEFAULT_DEADLINE: ::std::time::Duration = $deadline;
            fn schedule(
                &self,
            ) -> (
                ::core::option::Option<bool>,
                ::core::option::Option<$crate::config::Interval>,
                ::core::option::Option<$crate::config::Deadline>,
            ) {
                (self.enabled, self.interval, self.deadline)
            }
            $($($items)*)?
        }
    };
}

/// A value of a collector section that does not fit the others: its key within the
/// section (`deadline`, `window`) and why. The caller locates it in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionError {
    /// The key, relative to the section.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Finds the line and column (1-based) of a dotted key, e.g. `collectors.system.interval`
/// or `rollback.gates[2].name`.
pub fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    Positions::parse(text).key(key)
}

/// Where each key and sequence item of a YAML document is, from one parse by a
/// span-keeping parser (marked-yaml). serde_norway still reads the values: its messages
/// are the ones users see; this only says where.
#[derive(Debug)]
pub struct Positions {
    root: Option<marked_yaml::Node>,
}

impl Positions {
    /// Parses `text`; a document the parser refuses (anchors, tags, bad syntax) has no
    /// positions, and errors about it carry serde's location or none.
    pub fn parse(text: &str) -> Positions {
        Positions {
            root: marked_yaml::parse_yaml(0, text).ok(),
        }
    }

    /// The position of `key`: dotted mapping keys, each optionally followed by `[i]` for
    /// item `i` of the sequence it holds. A key is located at its name, an item at its
    /// first character.
    pub fn key(&self, key: &str) -> Option<(usize, usize)> {
        let mut node = self.root.as_ref()?;
        let mut at = None;
        for part in key.split('.') {
            let (name, indices) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            let map = node.as_mapping()?;
            let (k, v) = map.iter().find(|(k, _)| k.as_str() == name)?;
            at = k.span().start().copied();
            node = v;
            for index in indices.split(']').filter(|i| !i.is_empty()) {
                let i: usize = index.trim_start_matches('[').parse().ok()?;
                node = node.as_sequence()?.get(i)?;
                // A mapping's own mark is at its first `:`; its first key is where it starts.
                let first_key = node.as_mapping().and_then(|m| m.keys().next());
                at = first_key.map_or(node.span(), |k| k.span()).start().copied();
            }
        }
        at.map(|m| (m.line(), m.column()))
    }

    /// The first duplicated key of `text`: where it first stands and where it stands again.
    pub fn duplicate(text: &str) -> Option<((usize, usize), (usize, usize))> {
        let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        match marked_yaml::parse_yaml_with_options(0, text, options) {
            Err(marked_yaml::LoadError::DuplicateKey(d)) => {
                let first = d.prev_key.span().start()?;
                let again = d.key.span().start()?;
                Some((
                    (first.line(), first.column()),
                    (again.line(), again.column()),
                ))
            }
            _ => None,
        }
    }
}

/// A duration between `MIN_MS` and `MAX_MS` milliseconds, written as `15s`, `500ms`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

/// A poll interval: 100 ms to 1 day.
pub type Interval = Period<100, 86_400_000>;
/// A deadline for one run: 10 ms to 1 hour.
pub type Deadline = Period<10, 3_600_000>;

impl<const MIN_MS: u64, const MAX_MS: u64> Period<MIN_MS, MAX_MS> {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de> for Period<MIN_MS, MAX_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration such as 15s, 500ms or 2m ({e})"
            ))
        })?;
        let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
        if v < min || v > max {
            return Err(serde::de::Error::custom(format!(
                "{s} is out of range: must be between {} and {}",
                crate::hub::fmt_duration(min),
                crate::hub::fmt_duration(max)
            )));
        }
        Ok(Period(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        interval: Option<Interval>,
        count: Option<u8>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        listen: Option<std::net::SocketAddr>,
        collectors: Option<std::collections::BTreeMap<String, Inner>>,
    }

    fn err(text: &str) -> ConfigError {
        parse::<Outer>(text, Path::new("cfg.yaml")).expect_err("should fail")
    }

    crate::collector_config! {
        /// A section made by the macro, as the collectors make theirs.
        struct Section {
            defaults: interval Duration::from_secs(15), deadline Duration::from_secs(5);
            /// A value of the section's own.
            count: Option<u8>,
        }
        impl Schedule {
            fn check_relations(&self) -> Result<(), SectionError> {
                match self.count {
                    Some(0) => Err(SectionError {
                        key: "count",
                        message: "zero".into(),
                    }),
                    _ => Ok(()),
                }
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct WithSection {
        collectors: Option<std::collections::BTreeMap<String, Section>>,
    }

    #[test]
    fn macro_sections_keep_their_keys_and_checks() {
        let e = parse::<WithSection>(
            "collectors:\n  system:\n    interval: 5s\n    intreval: 5s\n",
            Path::new("cfg.yaml"),
        )
        .expect_err("unknown key");
        assert_eq!((e.line, e.column), (Some(4), Some(5)), "{e}");
        assert_eq!(e.key.as_deref(), Some("collectors.system.intreval"), "{e}");
        assert!(e.message.starts_with("unknown field `intreval`, expected one of `enabled`, `interval`, `deadline`, `count`"), "{e}");
        let s: Section = parse("interval: 1s\ncount: 3\n", Path::new("x")).expect("parses");
        assert!(s.enabled());
        assert_eq!(s.interval(), Duration::from_secs(1));
        assert_eq!(
            s.deadline(),
            Duration::from_secs(1),
            "the default, cut to the interval"
        );
        assert_eq!(s.check(), Ok(()));
        let s: Section = parse("enabled: false\ndeadline: 20s\n", Path::new("x")).expect("parses");
        assert!(!s.enabled());
        assert_eq!(s.check().map_err(|e| e.key), Err("deadline"));
        let s: Section = parse("count: 0\n", Path::new("x")).expect("parses");
        assert_eq!(s.check().map_err(|e| e.key), Err("count"));
    }

    #[test]
    fn unknown_key_names_line_column_and_key() {
        let e = err("listen: 127.0.0.1:9466\ncollectors:\n  system:\n    intreval: 5s\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.column, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("collectors.system.intreval"), "{e}");
        assert!(e.message.starts_with("unknown field `intreval`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("cfg.yaml:4:5: key `collectors.system.intreval`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_and_out_of_range_are_located() {
        let e = err("collectors:\n  system:\n    count: lots\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("collectors.system.count")),
            "{e}"
        );
        let e = err("collectors:\n  system:\n    count: 300\n");
        assert_eq!(e.line, Some(3), "{e}");
        let e = err("collectors:\n  system:\n    interval: 1ms\n");
        assert_eq!(e.key.as_deref(), Some("collectors.system.interval"), "{e}");
        assert!(e.message.contains("out of range"), "{e}");
        let e = err("listen: nowhere\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("listen")), "{e}");
    }

    #[test]
    fn duplicates_and_shapes_are_named_in_yaml_terms() {
        let e = err("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n");
        assert_eq!((e.line, e.column), (Some(2), Some(1)), "{e}");
        assert_eq!(e.key.as_deref(), Some("listen"), "{e}");
        assert!(e.message.contains("first at line 1"), "{e}");
        let e = err("collectors:\n  system: 5\n");
        assert!(
            e.message
                .ends_with("expected a mapping (`key: value` lines)"),
            "{e}"
        );
        assert!(!e.message.contains("struct"), "{e}");
        let e = err("listen: \"127.0.0.1:1\nother: x\n");
        assert!(e.key.as_deref() != Some("?"), "{e}");
    }

    #[test]
    fn empty_file_means_defaults() {
        let o: Outer = parse("\n# nothing\n", Path::new("x")).expect("empty is fine");
        assert!(o.listen.is_none());
    }

    #[test]
    fn locates_nested_keys() {
        let t = "a: 1\nb:\n  # c\n  c:\n    d: 2\n  e: 3\nd: 4\n";
        assert_eq!(locate_key(t, "b.c.d"), Some((5, 5)));
        assert_eq!(locate_key(t, "d"), Some((7, 1)));
        assert_eq!(locate_key(t, "b.e"), Some((6, 3)));
        assert_eq!(locate_key(t, "b.x"), None);
        // Sequence items, block and flow style, and keys inside them.
        let t = "r:\n  gates:\n    - name: a\n      tcp: x\n    -   name: b\n  flow: [1, {k: 2}]\n";
        assert_eq!(locate_key(t, "r.gates[0]"), Some((3, 7)));
        assert_eq!(locate_key(t, "r.gates[1].name"), Some((5, 9)));
        assert_eq!(locate_key(t, "r.gates[0].tcp"), Some((4, 7)));
        assert_eq!(locate_key(t, "r.gates[2]"), None);
        assert_eq!(locate_key(t, "r.flow[1].k"), Some((6, 14)));
        // What the parser refuses has no positions, rather than wrong ones.
        assert_eq!(locate_key("a: &x 1\nb: *x\n", "b"), None);
    }
}
