//! Small system helpers every crate needs once: the wall clock as Unix seconds, a
//! non-blocking exclusive `flock(2)`, the `map_err` of an I/O call on a path and the error
//! of reading a state file (procfs, sysfs).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a file of the system's state (procfs, sysfs) gave nothing: it could not be read, or
/// it did not have the expected content.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file did not have the expected content.
    #[error("{path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was missing or malformed.
        what: String,
    },
}

/// Reads `path` whole, as text.
pub fn read_file(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The `map_err` of an I/O call on `path`: `make(path, error)`, usually an error type's
/// `Io { path, source }` variant.
pub fn io_error_at<E>(
    path: &Path,
    make: fn(PathBuf, io::Error) -> E,
) -> impl FnOnce(io::Error) -> E + use<'_, E> {
    move |source| make(path.to_owned(), source)
}

/// `t` as seconds since the Unix epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Now, as seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}

/// Takes an exclusive `flock(2)` on `f` without waiting: `Ok(false)` when another open
/// file description holds it. The kernel drops it when the holder's descriptor closes,
/// also when the holder dies.
pub fn try_lock_exclusive(f: &File) -> io::Result<bool> {
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Releases a lock taken with [`try_lock_exclusive`] before the file is closed.
pub fn unlock(f: &File) {
    // SAFETY: as above.
    unsafe {
        libc::flock(f.as_raw_fd(), libc::LOCK_UN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_description_waits_for_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let a = File::create(&path).expect("create");
        let b = File::open(&path).expect("open");
        assert!(try_lock_exclusive(&a).expect("lock a"));
        assert!(!try_lock_exclusive(&b).expect("b is refused"));
        unlock(&a);
        assert!(try_lock_exclusive(&b).expect("lock b"));
        assert!(unix_now() > 1.7e9);
        assert_eq!(unix_seconds(UNIX_EPOCH), 0.0);
    }
}
