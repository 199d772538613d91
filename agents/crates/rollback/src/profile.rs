//! A Nix profile's generations (`PROFILE-N-link`), which one is current, and the real
//! `nix-env` operations that flip it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One generation of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Its number N (`PROFILE-N-link`).
    pub number: u64,
    /// The store path it points at.
    pub store_path: PathBuf,
    /// When it was made (the link's modification time, as `nix-env --list-generations`
    /// shows it), seconds since the epoch.
    pub created_unix: f64,
}

/// What a profile holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The profile's path.
    pub profile: PathBuf,
    /// Every generation, oldest first.
    pub generations: Vec<Generation>,
    /// The generation the profile points at.
    pub current: u64,
}

impl State {
    /// The current generation.
    pub fn current(&self) -> Option<&Generation> {
        self.get(self.current)
    }

    /// The generation `nix-env --rollback` would switch to: the newest older than current.
    pub fn previous(&self) -> Option<&Generation> {
        self.generations
            .iter()
            .filter(|g| g.number < self.current)
            .max_by_key(|g| g.number)
    }

    /// Generation `n`.
    pub fn get(&self, n: u64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.number == n)
    }

    /// The newest generation pointing at `store_path`.
    pub fn number_of(&self, store_path: &Path) -> Option<u64> {
        self.generations
            .iter()
            .filter(|g| g.store_path == store_path)
            .map(|g| g.number)
            .max()
    }
}

/// What can go wrong with a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profile link cannot be read.
    #[error("{path}: cannot read the profile: {source}")]
    Read {
        /// The profile.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The profile does not point at one of its generations.
    #[error("{path}: points at {target:?}, not at a {base}-N-link generation")]
    NotAGeneration {
        /// The profile.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
        /// The profile's base name.
        base: String,
    },
    /// The current generation's link is missing.
    #[error("{path}: generation {number} is current but {path}-{number}-link is missing")]
    CurrentMissing {
        /// The profile.
        path: PathBuf,
        /// The generation number.
        number: u64,
    },
    /// `nix-env` could not run or failed.
    #[error("`{command}` failed: {why}")]
    NixEnv {
        /// The command line.
        command: String,
        /// Its error output or the reason it could not start.
        why: String,
    },
}

fn split_profile(profile: &Path) -> Option<(&Path, &str)> {
    Some((profile.parent()?, profile.file_name()?.to_str()?))
}

/// The generation number in a link name `BASE-N-link`.
pub fn link_number(base: &str, name: &str) -> Option<u64> {
    name.strip_prefix(base)?
        .strip_prefix('-')?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

/// Reads a profile: its generations and which one is current.
pub fn read(profile: &Path) -> Result<State, ProfileError> {
    let read_err = |source| ProfileError::Read {
        path: profile.to_owned(),
        source,
    };
    let (dir, base) = split_profile(profile).ok_or_else(|| {
        read_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a profile path",
        ))
    })?;
    let target = std::fs::read_link(profile).map_err(read_err)?;
    let current = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| link_number(base, n))
        .ok_or_else(|| ProfileError::NotAGeneration {
            path: profile.to_owned(),
            target: target.clone(),
            base: base.to_owned(),
        })?;
    let mut generations = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)?.flatten() {
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| link_number(base, n)) else {
            continue;
        };
        let link = entry.path();
        // A generation whose store path is gone (garbage-collected) cannot be switched to.
        let Ok(store_path) = std::fs::canonicalize(&link) else {
            continue;
        };
        let created_unix = std::fs::symlink_metadata(&link)
            .map(|m| m.mtime() as f64 + m.mtime_nsec() as f64 / 1e9)
            .unwrap_or(0.0);
        generations.push(Generation {
            number,
            store_path,
            created_unix,
        });
    }
    generations.sort_by_key(|g| g.number);
    let state = State {
        profile: profile.to_owned(),
        generations,
        current,
    };
    if state.current().is_none() {
        return Err(ProfileError::CurrentMissing {
            path: profile.to_owned(),
            number: current,
        });
    }
    Ok(state)
}

/// The store path a link such as `/run/current-system` points at, if it exists.
pub fn resolve(link: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(link).ok()
}

/// Runs the real `nix-env` on a profile.
#[derive(Debug, Clone)]
pub struct NixEnv {
    /// The program.
    pub program: PathBuf,
    /// The profile.
    pub profile: PathBuf,
}

impl NixEnv {
    /// `nix-env --profile P --rollback`: what `nixos-rebuild switch --rollback` runs.
    pub fn rollback(&self) -> Result<Duration, ProfileError> {
        self.run(&["--rollback"])
    }

    /// `nix-env --profile P --switch-generation N`.
    pub fn switch_generation(&self, n: u64) -> Result<Duration, ProfileError> {
        self.run(&["--switch-generation", &n.to_string()])
    }

    /// `nix-env --profile P --set PATH`: a new generation (what `nixos-rebuild switch` does).
    pub fn set(&self, store_path: &Path) -> Result<Duration, ProfileError> {
        let p = store_path.to_string_lossy();
        self.run(&["--set", &p])
    }

    /// `nix-env --profile P --delete-generations SPEC...` (numbers, or `Nd` for "older than
    /// N days").
    pub fn delete_generations(&self, specs: &[String]) -> Result<Duration, ProfileError> {
        let mut args = vec!["--delete-generations"];
        args.extend(specs.iter().map(String::as_str));
        self.run(&args)
    }

    fn run(&self, args: &[&str]) -> Result<Duration, ProfileError> {
        let profile = self.profile.to_string_lossy();
        let mut argv = vec!["--profile", &profile];
        argv.extend_from_slice(args);
        let command = format!("{} {}", self.program.display(), argv.join(" "));
        let start = Instant::now();
        let mut cmd = Command::new(&self.program);
        cmd.args(&argv);
        // nix-env dies with labnode: an orphan that outlived a killed labnode would flip the
        // profile after the guard had restored the known-good generation (the fault tests
        // found it). Its profile switch is an atomic rename, so a kill leaves the old or the
        // new profile, never half of one.
        let parent = std::process::id();
        // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then nothing would kill this one.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(std::io::Error::other(
                        "labnode exited before nix-env started",
                    ));
                }
                Ok(())
            });
        }
        let out = cmd.output().map_err(|e| ProfileError::NixEnv {
            command: command.clone(),
            why: format!("cannot run {}: {e}", self.program.display()),
        })?;
        let took = start.elapsed();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ProfileError::NixEnv {
                command,
                why: format!("{} ({})", err.trim(), out.status),
            });
        }
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let store = t.path().join("store");
        for s in ["a", "b", "c"] {
            std::fs::create_dir_all(store.join(s)).expect("mkdir");
        }
        let p = t.path().join("profiles");
        std::fs::create_dir(&p).expect("mkdir");
        symlink(store.join("a"), p.join("system-1-link")).expect("link");
        symlink(store.join("b"), p.join("system-3-link")).expect("link");
        symlink(store.join("c"), p.join("system-4-link")).expect("link");
        symlink(store.join("gone"), p.join("system-2-link")).expect("link");
        symlink(store.join("a"), p.join("system-profiles-1-link")).expect("link");
        symlink("system-4-link", p.join("system")).expect("link");
        (t, p.join("system"))
    }

    #[test]
    fn reads_generations_current_and_previous() {
        let (t, profile) = fixture();
        let s = read(&profile).expect("read");
        let numbers: Vec<u64> = s.generations.iter().map(|g| g.number).collect();
        assert_eq!(numbers, [1, 3, 4], "a collected generation is skipped");
        assert_eq!(s.current, 4);
        assert_eq!(s.previous().map(|g| g.number), Some(3));
        let b = std::fs::canonicalize(t.path().join("store/b")).expect("canon");
        assert_eq!(s.number_of(&b), Some(3));
        assert!(s.generations[0].created_unix > 1e9);
    }

    #[test]
    fn the_oldest_generation_has_no_previous() {
        let (_t, profile) = fixture();
        std::fs::remove_file(&profile).expect("rm");
        symlink("system-1-link", &profile).expect("link");
        assert_eq!(read(&profile).expect("read").previous(), None);
    }

    #[test]
    fn a_profile_that_is_not_a_generation_is_an_error() {
        let (t, profile) = fixture();
        std::fs::remove_file(&profile).expect("rm");
        symlink(t.path().join("store/a"), &profile).expect("link");
        let e = read(&profile).expect_err("not a generation").to_string();
        assert!(e.contains("not at a system-N-link generation"), "{e}");
        let e = read(&t.path().join("profiles/nothing"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("cannot read the profile"), "{e}");
    }

    #[test]
    fn link_numbers() {
        assert_eq!(link_number("system", "system-12-link"), Some(12));
        assert_eq!(link_number("system", "system-profiles-1-link"), None);
        assert_eq!(link_number("system", "system-x-link"), None);
    }

    #[test]
    fn a_missing_nix_env_is_named() {
        let n = NixEnv {
            program: "/nonexistent/nix-env".into(),
            profile: "/tmp/p".into(),
        };
        let e = n.rollback().expect_err("missing").to_string();
        assert!(e.contains("cannot run /nonexistent/nix-env"), "{e}");
        assert!(e.contains("--profile /tmp/p --rollback"), "{e}");
    }
}
