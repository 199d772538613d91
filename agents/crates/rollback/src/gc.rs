//! `labnode gc`: garbage collection that never takes away what a rollback needs.
//!
//! nix-collect-garbage's `--delete-older-than` deletes every old generation of every
//! profile: a node that went a month without a change is left with nothing to roll back
//! to. This keeps the newest `keep` generations of the system profile whatever their age
//! (and the known-good system of an unfinished run, which also has a GC root), deletes the
//! other system generations older than the period, the old generations of every other
//! profile as `--delete-older-than` would, then collects the store. It takes the run lock,
//! so it never runs beside a safe switch, a drill or the nightly upgrade.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::engine::{Context, Engine, RunError};
use crate::profile::{self, NixEnv};
use crate::state;

/// What a collection is asked to do.
#[derive(Debug, Clone)]
pub struct GcPlan {
    /// Newest system generations kept whatever their age (at least 1).
    pub keep: u32,
    /// Older generations than this are deleted.
    pub older_than: Duration,
    /// Where profiles live (default: the system profile's directory).
    pub profiles_dir: Option<PathBuf>,
    /// The program that collects the store (default: `nix-store` beside `nix-env`).
    pub nix_store: Option<PathBuf>,
    /// Only say what would be deleted.
    pub dry_run: bool,
}

/// What a collection did.
#[derive(Debug, Clone, Default)]
pub struct GcDone {
    /// System generations deleted.
    pub deleted: Vec<u64>,
    /// System generations kept, newest first.
    pub kept: Vec<u64>,
    /// Other profiles whose old generations were deleted.
    pub other_profiles: Vec<PathBuf>,
    /// Whether the store was collected.
    pub collected: bool,
}

/// Runs the collection with the run lock held (waiting `ctx.lock_wait` for it).
pub fn gc(ctx: &Context, plan: &GcPlan) -> Result<GcDone, RunError> {
    if plan.keep == 0 {
        return Err(RunError::Usage(
            "--keep-generations must be at least 1".into(),
        ));
    }
    let e = Engine::new(ctx);
    let _lock = e.lock("labnode gc")?;
    let cfg = &ctx.cfg;
    let system = cfg.profile();
    let st = profile::read(&system)?;
    // What an unfinished run needs stays, whatever its age.
    let protected: Vec<PathBuf> = e
        .state
        .marker()?
        .map(|m| vec![m.from.store_path, m.to.store_path])
        .unwrap_or_default();
    let cutoff = state::now_unix() - plan.older_than.as_secs_f64();
    let mut newest: Vec<u64> = st.generations.iter().map(|g| g.number).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    let kept_young: Vec<u64> = newest.iter().copied().take(plan.keep as usize).collect();
    let mut done = GcDone::default();
    for g in &st.generations {
        let keep = g.number == st.current
            || kept_young.contains(&g.number)
            || g.created_unix >= cutoff
            || protected.contains(&g.store_path);
        if keep {
            done.kept.push(g.number);
        } else {
            done.deleted.push(g.number);
        }
    }
    done.kept.sort_unstable_by(|a, b| b.cmp(a));
    let nix = NixEnv {
        program: cfg.nix_env(),
        profile: system.clone(),
    };
    if !plan.dry_run && !done.deleted.is_empty() {
        nix.delete_generations(&done.deleted.iter().map(u64::to_string).collect::<Vec<_>>())?;
    }
    let days = plan.older_than.as_secs().div_ceil(86_400).max(1);
    let dir = plan
        .profiles_dir
        .clone()
        .or_else(|| system.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| "/nix/var/nix/profiles".into());
    for p in profiles_under(&dir) {
        if p == system {
            continue;
        }
        if !plan.dry_run {
            NixEnv {
                program: cfg.nix_env(),
                profile: p.clone(),
            }
            .delete_generations(&[format!("{days}d")])?;
        }
        done.other_profiles.push(p);
    }
    if !plan.dry_run {
        let program = plan.nix_store.clone().unwrap_or_else(|| {
            let env = cfg.nix_env();
            if env.is_absolute() {
                env.with_file_name("nix-store")
            } else {
                "nix-store".into()
            }
        });
        let out = Command::new(&program).arg("--gc").output().map_err(|e| {
            RunError::Refused(format!("cannot run {} --gc: {e}", program.display()))
        })?;
        if !out.status.success() {
            return Err(RunError::Refused(format!(
                "{} --gc failed ({}): {}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        done.collected = true;
    }
    Ok(done)
}

/// Every profile under `dir` (recursively): a link `NAME` pointing at `NAME-N-link`.
fn profiles_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(profiles_under(&path));
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let target = std::fs::read_link(&path).ok();
        let points_at_generation = target
            .as_ref()
            .and_then(|t| t.file_name())
            .and_then(|t| t.to_str())
            .is_some_and(|t| profile::link_number(name, t).is_some());
        if meta.file_type().is_symlink() && points_at_generation {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn profiles_are_found_and_their_generation_links_are_not() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        std::fs::create_dir_all(d.join("per-user/root")).expect("mkdir");
        for (dir, name) in [
            (d.to_path_buf(), "system"),
            (d.join("per-user/root"), "profile"),
        ] {
            symlink("/nix/store/x", dir.join(format!("{name}-1-link"))).expect("link");
            symlink(format!("{name}-1-link"), dir.join(name)).expect("link");
        }
        symlink("/nix/store/y", d.join("not-a-profile")).expect("link");
        assert_eq!(
            profiles_under(d),
            vec![d.join("per-user/root/profile"), d.join("system")]
        );
    }
}
