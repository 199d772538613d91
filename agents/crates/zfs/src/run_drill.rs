//! Running the ZFS drill against a real scratch dataset (through libzfs and libzfs_core).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::drill::{DataGen, DrillResult, Refusal, refusal, timed};
use crate::libzfs::{LibZfs, ZfsError};

/// The directory the drill writes inside the dataset's mount point.
pub const DRILL_DIR: &str = ".labnode-drill";
/// The drill's snapshots are named `DATASET@labnode-drill-<unix ms>`.
pub const SNAPSHOT_PREFIX: &str = "labnode-drill-";
/// Where the per-pool locks that keep two drills apart live by default.
pub const DEFAULT_LOCK_DIR: &str = "/run/lock";

/// The lock of `pool` in `dir`: one drill per pool at a time, so no drill destroys the
/// snapshots or files of another, whatever dataset of the pool each was given.
pub fn lock_path(dir: &Path, pool: &str) -> PathBuf {
    dir.join(format!("labnode-zfs-drill.{pool}.lock"))
}

/// How to run the drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// `pool/fs`: must have `labnode:scratch=on` set on itself, and not be protected.
    pub dataset: String,
    /// Files to write.
    pub files: u64,
    /// Bytes per file.
    pub file_size: u64,
    /// The directory of the per-pool lock files ([`lock_path`]).
    pub lock_dir: PathBuf,
    /// Where each phase is shown (a terminal; nothing in CI logs).
    pub progress: labnode_core::progress::Progress,
}

/// Why the drill did not start (nothing was touched).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The dataset may not be drilled: not marked scratch itself, or protected.
    #[error("refusing to drill {dataset}: {why}")]
    Refused {
        /// The dataset.
        dataset: String,
        /// Why.
        why: Refusal,
    },
    /// The dataset is a volume or not mounted.
    #[error("cannot drill {0}: it is not a mounted file system")]
    NotMounted(String),
    /// Another drill holds the pool's lock.
    #[error(
        "another ZFS drill is running on this pool ({holder}; lock {path}): refusing to run two at once"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as far as the lock file says.
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("cannot take the drill lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// libzfs failed before the drill started.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
}

impl DrillError {
    /// Whether the operator asked for something that cannot be done (exit code 2) rather
    /// than something failing while running (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, DrillError::Refused { .. } | DrillError::NotMounted(_))
    }
}

/// Holds the drill lock until dropped (flock: released by the kernel if we die).
struct LockGuard(#[allow(dead_code)] File);

fn take_lock(path: &Path) -> Result<LockGuard, DrillError> {
    let lock_err = |source| DrillError::Lock {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(lock_err)?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(lock_err)?;
    if !labnode_core::sys::try_lock_exclusive(&f).map_err(lock_err)? {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "holder unknown".to_owned(),
            h => h.to_owned(),
        };
        return Err(DrillError::Busy {
            path: path.to_owned(),
            holder,
        });
    }
    f.set_len(0).map_err(lock_err)?;
    writeln!(f, "pid {}", std::process::id()).map_err(lock_err)?;
    f.sync_all().map_err(lock_err)?;
    Ok(LockGuard(f))
}

use labnode_core::sys::unix_now;

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn file_name(i: u64) -> String {
    format!("f{i:05}.bin")
}

/// Runs the drill. `Err` means it did not start; a drill that started and failed comes
/// back as `Ok` with `success: false` and the reason, so it is recorded.
pub fn run(opts: &DrillOptions) -> Result<DrillResult, DrillError> {
    let lib = LibZfs::open()?;
    let info = lib.dataset(&opts.dataset)?;
    if let Some(why) = refusal(&info) {
        return Err(DrillError::Refused {
            dataset: opts.dataset.clone(),
            why,
        });
    }
    let Some(mountpoint) = info.mountpoint.clone() else {
        return Err(DrillError::NotMounted(opts.dataset.clone()));
    };
    let _lock = take_lock(&lock_path(&opts.lock_dir, info.pool()))?;
    let say = |msg: &str| opts.progress.step(&format!("drill zfs: {msg}"));
    let dir = Path::new(&mountpoint).join(DRILL_DIR);
    let started = unix_now();
    let snapshot = format!(
        "{}@{SNAPSHOT_PREFIX}{}",
        opts.dataset,
        (started * 1000.0) as u64
    );
    let mut result = DrillResult {
        dataset: opts.dataset.clone(),
        snapshot: snapshot.clone(),
        started_at_unix: started,
        files: opts.files,
        bytes: opts.files * opts.file_size,
        deleted: 0,
        overwritten: 0,
        added: 0,
        phases: BTreeMap::new(),
        recovery_seconds: None,
        verified: 0,
        mismatched: Vec::new(),
        manifest_sha256: String::new(),
        success: false,
        error: None,
    };

    // Leftovers of a drill that died: its directory and its snapshots.
    if let Err(e) = clean_leftovers(&lib, &opts.dataset, &dir) {
        result.error = Some(e);
        return Ok(result);
    }
    let outcome = drill_phases(&lib, opts, &dir, &snapshot, &mut result, &say);
    if let Err(e) = outcome {
        result.error = Some(e);
        result.success = false;
    }
    // Leave the scratch dataset as it was: no drill snapshot, no drill files.
    if lib.exists(&snapshot) {
        if let Err(e) = lib.destroy_snapshot(&snapshot) {
            tracing::warn!("cleaning up after the drill: {e}");
        }
    }
    if let Err(e) = fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(
                "cleaning up after the drill: {}",
                io("cannot remove", &dir, e)
            );
        }
    }
    Ok(result)
}

fn clean_leftovers(lib: &LibZfs, dataset: &str, dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => tracing::info!("removed a previous drill's {}", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot remove the old", dir, e)),
    }
    let snaps = lib.snapshots_full(dataset).map_err(|e| e.to_string())?;
    for (name, _) in snaps {
        if name
            .split_once('@')
            .is_some_and(|(_, s)| s.starts_with(SNAPSHOT_PREFIX))
        {
            tracing::info!("destroying a previous drill's snapshot {name}");
            lib.destroy_snapshot(&name).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

fn drill_phases(
    lib: &LibZfs,
    opts: &DrillOptions,
    dir: &Path,
    snapshot: &str,
    result: &mut DrillResult,
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let mut phases = BTreeMap::new();
    // 1. write
    say(&format!(
        "writing {} files of {} bytes into {}",
        opts.files,
        opts.file_size,
        dir.display()
    ));
    let hashes = timed(&mut phases, "write", || write_files(dir, opts))?;
    let mut manifest = Sha256::new();
    for (name, h) in &hashes {
        manifest.update(format!("{name}  {h}\n"));
    }
    result.manifest_sha256 = hex(&manifest.finalize());
    result.phases = phases.clone();

    // 2. snapshot
    say(&format!("snapshot {snapshot}"));
    timed(&mut phases, "snapshot", || lib.snapshot(snapshot)).map_err(|e| e.to_string())?;
    result.phases = phases.clone();

    // 3. damage
    say("damaging: deleting, overwriting and adding files");
    let (deleted, overwritten, added) = timed(&mut phases, "damage", || damage(dir, opts))?;
    (result.deleted, result.overwritten, result.added) = (deleted, overwritten, added);
    result.phases = phases.clone();

    // 4. rollback
    say(&format!("rolling {} back to {snapshot}", opts.dataset));
    timed(&mut phases, "rollback", || {
        lib.rollback_to(&opts.dataset, snapshot)
    })
    .map_err(|e| e.to_string())?;
    result.phases = phases.clone();

    // 5. verify
    say("verifying every file by SHA-256");
    let (verified, mismatched) = timed(&mut phases, "verify", || verify(dir, &hashes))?;
    result.verified = verified;
    result.mismatched = mismatched;
    result.recovery_seconds = Some(phases["rollback"] + phases["verify"]);
    result.phases = phases;
    result.success = result.mismatched.is_empty() && result.verified == opts.files;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_files(dir: &Path, opts: &DrillOptions) -> Result<BTreeMap<String, String>, String> {
    fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
    let mut hashes = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..opts.files {
        let path = dir.join(file_name(i));
        let mut f = File::create(&path).map_err(|e| io("cannot create", &path, e))?;
        let mut gen_ = DataGen::for_file(i);
        let mut h = Sha256::new();
        let mut left = opts.file_size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            gen_.fill(i % 2 == 0, &mut buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| io("cannot write", &path, e))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        f.sync_all().map_err(|e| io("cannot sync", &path, e))?;
        hashes.insert(file_name(i), hex(&h.finalize()));
    }
    sync_dir(dir)?;
    Ok(hashes)
}

fn damage(dir: &Path, opts: &DrillOptions) -> Result<(u64, u64, u64), String> {
    let (mut deleted, mut overwritten) = (0, 0);
    for i in 0..opts.files {
        let path = dir.join(file_name(i));
        match i % 3 {
            0 => {
                fs::remove_file(&path).map_err(|e| io("cannot delete", &path, e))?;
                deleted += 1;
            }
            1 => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("cannot open", &path, e))?;
                let n = opts.file_size.clamp(1, 4096) as usize;
                f.seek(SeekFrom::Start(opts.file_size / 2 / 4096 * 4096))
                    .and_then(|_| f.write_all(&vec![0xA5; n]))
                    .and_then(|_| f.sync_all())
                    .map_err(|e| io("cannot overwrite", &path, e))?;
                overwritten += 1;
            }
            _ => {}
        }
    }
    let stray = dir.join("stray.bin");
    fs::write(&stray, b"this file must not survive the rollback\n")
        .map_err(|e| io("cannot write", &stray, e))?;
    sync_dir(dir)?;
    Ok((deleted, overwritten, 1))
}

fn verify(dir: &Path, hashes: &BTreeMap<String, String>) -> Result<(u64, Vec<String>), String> {
    let mut verified = 0;
    let mut mismatched = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (name, want) in hashes {
        let path = dir.join(name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                mismatched.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf).map_err(|e| io("cannot read", &path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        if hex(&h.finalize()) == *want {
            verified += 1;
        } else {
            mismatched.push(format!("{name}: content differs"));
        }
    }
    let entries = fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !hashes.contains_key(&name) {
            mismatched.push(format!("{name}: should not exist"));
        }
    }
    Ok((verified, mismatched))
}
