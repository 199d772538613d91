//! Scratch system profiles for demos and tests: real Nix generations (built offline, with
//! nothing from nixpkgs) whose `bin/switch-to-configuration` runs a given shell script, in a
//! real profile made with `nix-env --set`. `labnode demo` drills on one of these; the system
//! tests build theirs from the same `scratch/generation.nix`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Nix expression of one scratch generation (`scratch/generation.nix`).
pub const GENERATION_NIX: &str = include_str!("scratch/generation.nix");

/// Nix settings for building scratch generations on a single-user, offline Nix (such as
/// Debian's `nix-bin` run as root): no sandbox, no build users, no binary cache. Pass it as
/// `nix_config` where the machine's own Nix configuration does not already allow builds.
pub const OFFLINE_NIX_CONFIG: &str = "sandbox = false\nbuild-users-group =\nsubstituters =";

/// Trouble building a scratch profile.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A Nix command failed.
    #[error("`{command}` failed: {why}")]
    Nix {
        /// The command.
        command: String,
        /// Its error output.
        why: String,
    },
}

/// One generation to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A name (part of the store path).
    pub name: String,
    /// The activation script's body: `$1` is the action, `$out` the generation.
    pub activate: String,
}

fn run(program: &Path, args: &[&str], nix_config: Option<&str>) -> Result<String, ScratchError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(c) = nix_config {
        cmd.env("NIX_CONFIG", c);
    }
    let out = cmd.output().map_err(|e| ScratchError::Nix {
        command: command.clone(),
        why: format!("cannot run it: {e}"),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(ScratchError::Nix {
            command,
            why: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds each generation with `nix_build` (the expression is written to `work`) and
/// returns their store paths. `nix_config` replaces `NIX_CONFIG` for the build (e.g.
/// [`OFFLINE_NIX_CONFIG`]).
pub fn build(
    nix_build: &Path,
    work: &Path,
    specs: &[Spec],
    nix_config: Option<&str>,
) -> Result<Vec<PathBuf>, ScratchError> {
    std::fs::create_dir_all(work).map_err(|source| ScratchError::Io {
        path: work.to_owned(),
        source,
    })?;
    let expr = work.join("generation.nix");
    std::fs::write(&expr, GENERATION_NIX).map_err(|source| ScratchError::Io {
        path: expr.clone(),
        source,
    })?;
    let expr_s = expr.to_string_lossy();
    specs
        .iter()
        .map(|s| {
            run(
                nix_build,
                &[
                    "--no-out-link",
                    &expr_s,
                    "--argstr",
                    "name",
                    &s.name,
                    "--argstr",
                    "activate",
                    &s.activate,
                ],
                nix_config,
            )
            .map(PathBuf::from)
        })
        .collect()
}

/// Makes `profile` hold `systems` as generations 1..=n (the last current) with `nix_env`.
pub fn profile(nix_env: &Path, profile: &Path, systems: &[PathBuf]) -> Result<(), ScratchError> {
    if let Some(dir) = profile.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ScratchError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let p = profile.to_string_lossy();
    for s in systems {
        run(
            nix_env,
            &["--profile", &p, "--set", &s.to_string_lossy()],
            None,
        )?;
    }
    Ok(())
}

/// Removes the indirect GC roots Nix registered (in `$NIX_STATE_DIR/gcroots/auto`, default
/// `/nix/var/nix/gcroots/auto`) for profiles under `dir`, for a caller that deletes `dir`:
/// `nix-collect-garbage` would drop them once `dir` is gone, and until then they name paths
/// that no longer exist. Returns how many it removed; roots elsewhere are left alone.
pub fn unregister_roots(dir: &Path) -> std::io::Result<usize> {
    let state = std::env::var_os("NIX_STATE_DIR")
        .map_or_else(|| PathBuf::from("/nix/var/nix"), PathBuf::from);
    let auto = state.join("gcroots/auto");
    let entries = match std::fs::read_dir(&auto) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let root = e.path();
        if std::fs::read_link(&root).is_ok_and(|target| target.starts_with(dir)) {
            std::fs::remove_file(&root)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a real scratch profile when Nix is installed (tests/run installs it, and under
    /// CI=true its absence fails the test).
    #[test]
    fn builds_a_real_profile_with_nix() {
        let have = Command::new("nix-build")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "nix-build is missing under CI=true"
            );
            eprintln!("nix-build not installed: skipped");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let specs: Vec<Spec> = (1..=2)
            .map(|i| Spec {
                name: format!("unit-{i}-{}", std::process::id()),
                activate: format!("echo gen{i} > {}/active", t.path().display()),
            })
            .collect();
        let config = std::env::var("NIX_CONFIG").unwrap_or_else(|_| OFFLINE_NIX_CONFIG.to_owned());
        let paths = build(
            Path::new("nix-build"),
            &t.path().join("work"),
            &specs,
            Some(&config),
        )
        .expect("nix-build");
        let p = t.path().join("profiles/system");
        profile(Path::new("nix-env"), &p, &paths).expect("nix-env");
        let st = labnode_rollback::profile::read(&p).expect("read");
        assert_eq!(st.current, 2);
        assert_eq!(
            st.previous().map(|g| g.store_path.clone()),
            Some(paths[0].clone())
        );
        let ok = std::process::Command::new(labnode_rollback::activation::script_of(&paths[0]))
            .arg("switch")
            .status()
            .expect("activates");
        assert!(ok.success());
        assert_eq!(
            std::fs::read_to_string(t.path().join("active")).expect("written"),
            "gen1\n"
        );
        // nix-env registered a root per generation link; they go, and only they.
        assert_eq!(unregister_roots(t.path()).expect("unregister"), 2);
        assert_eq!(unregister_roots(t.path()).expect("again"), 0);
    }
}
