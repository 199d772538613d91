//! Output formats and writing them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::Report;
use crate::{html, markdown, schema};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown (`report.md`).
    Md,
    /// Self-contained HTML with inline SVG (`report.html`).
    Html,
    /// JSON (`report.json`).
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "md" | "markdown" => Ok(Format::Md),
            "html" => Ok(Format::Html),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format `{other}`: use md, html or json")),
        }
    }
}

impl Format {
    /// The file name it is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Md => "report.md",
            Format::Html => "report.html",
            Format::Json => "report.json",
        }
    }
}

/// The report in one format.
pub fn render(format: Format, report: &Report) -> String {
    match format {
        Format::Md => markdown::render(report),
        Format::Html => html::render(report),
        Format::Json => schema::json(report),
    }
}

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file or directory.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

/// Writes each format to `dir` (created if missing), each file replaced atomically.
pub fn write_all(
    dir: &Path,
    formats: &[Format],
    report: &Report,
) -> Result<Vec<PathBuf>, WriteError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteError {
        path: dir.to_owned(),
        source,
    })?;
    let mut formats = formats.to_vec();
    formats.dedup();
    let mut out = Vec::new();
    for f in formats {
        let path = dir.join(f.file_name());
        replace(&path, render(f, report).as_bytes()).map_err(|source| WriteError {
            path: path.clone(),
            source,
        })?;
        out.push(path);
    }
    Ok(out)
}

/// Writes `bytes` to a hidden temporary file beside `path` and renames it over `path`, so a
/// reader sees the old report or the new one, never half of one. No fsync: a report is
/// rebuilt from the snapshots in milliseconds, and three syncs cost more than the report.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
