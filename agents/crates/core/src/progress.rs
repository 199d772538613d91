//! Progress on a terminal, silence in CI logs and pipes: the one display every long
//! operation uses (node changes and drills, benchmarks, network tests, reports).
//!
//! One rule decides: progress shows when stderr is a terminal and `CI` is not `true` (or
//! `1`). One live line at a time (indicatif draws it); finished steps print above it.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The process's live line, if one is drawn.
static LINE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether `CI` says this is a CI run (`true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Where progress goes: stderr, or nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    shown: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::detect()
    }
}

impl Progress {
    /// Progress when stderr is a terminal and this is not a CI run.
    pub fn detect() -> Self {
        Progress {
            shown: !in_ci() && std::io::stderr().is_terminal(),
        }
    }

    /// No progress at all.
    pub fn quiet() -> Self {
        Progress { shown: false }
    }

    /// Whether it shows anything.
    pub fn shown(&self) -> bool {
        self.shown
    }

    /// A finished step, on its own line (above the live line, if one is drawn).
    pub fn step(&self, msg: &str) {
        if !self.shown {
            return;
        }
        match &*line() {
            Some(bar) => bar.println(format!("==> {msg}")),
            None => eprintln!("==> {msg}"),
        }
    }

    /// A live line that the next update replaces.
    pub fn live(&self, msg: &str) {
        self.draw("    {msg}", |bar| bar.set_message(msg.to_string()));
    }

    /// A live bar: `what [=====     ] detail`, filled to `done` of `total`.
    pub fn bar(&self, what: &str, done: f64, total: f64, detail: &str) {
        let fill = if total > 0.0 {
            (done / total).clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.draw("  {prefix} [{bar:30}] {msg}", |bar| {
            bar.set_prefix(what.to_string());
            bar.set_length(1000);
            bar.set_position((fill * 1000.0) as u64);
            bar.set_message(detail.to_string());
        });
    }

    /// A live count: `what [=====     ] done/total`.
    pub fn count(&self, what: &str, done: u64, total: u64) {
        self.bar(what, done as f64, total as f64, &format!("{done}/{total}"));
    }

    /// Removes the live line.
    pub fn clear(&self) {
        if let Some(bar) = line().take() {
            bar.finish_and_clear();
        }
    }

    fn draw(&self, template: &str, update: impl FnOnce(&ProgressBar)) {
        if !self.shown {
            return;
        }
        let mut line = line();
        let bar = line.get_or_insert_with(|| {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        });
        // The templates are constants of this file; a bad one would only lose the style.
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        update(bar);
    }
}

fn line() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    LINE.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_draws_nothing_and_every_template_parses() {
        let p = Progress::quiet();
        p.live("x");
        p.count("files", 1, 2);
        p.step("done");
        assert!(line().is_none(), "a quiet progress drew a line");
        for t in ["    {msg}", "  {prefix} [{bar:30}] {msg}"] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn ci_is_true_or_one() {
        // The test runner's own environment decides; both spellings count.
        let ci = std::env::var("CI").ok();
        assert_eq!(in_ci(), matches!(ci.as_deref(), Some("true" | "1")));
    }
}
