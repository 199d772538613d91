//! Writing a new file whole and durably, never replacing one: an unnamed `O_TMPFILE` inode
//! linked into place, or a hidden temporary file renamed with `RENAME_NOREPLACE`; and
//! creating a directory durably, with the mode asked for.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` and any missing parents with `mode` (less the umask), fsyncing the parent
/// of each directory it creates, so the new name survives a crash as a file written into
/// it does. Directories that exist are left as they are.
pub fn create_dir_durably(dir: &Path, mode: u32) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {}
            // Another process made it between the check and here.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(e),
        }
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
/// Creates `dir/name` holding `bytes`, durably, failing with `AlreadyExists` if it exists.
///
/// Uses an unnamed `O_TMPFILE` inode that is linked into place only once complete; where
/// the file system lacks `O_TMPFILE`, a hidden temporary file renamed with
/// `RENAME_NOREPLACE`. Either way the directory is fsynced afterwards.
pub fn write_new_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_new_file_mode(dir, name, bytes, 0o644)
}

/// [`write_new_file`] with the file's `mode` (less the umask), such as 0600 for a key.
pub fn write_new_file_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir_file = File::open(dir)?;
    if !write_unnamed_then_link(dir, &dir_file, name, bytes, mode)? {
        write_hidden_then_rename(dir, &dir_file, name, bytes, mode)?;
    }
    dir_file.sync_all()
}

/// The `O_TMPFILE` way; `Ok(false)` when this file system or this host cannot do it.
fn write_unnamed_then_link(
    dir: &Path,
    dir_file: &File,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<bool> {
    let target = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let unnamed = OpenOptions::new()
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    let mut f = match unnamed {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    f.write_all(bytes)?;
    f.sync_all()?;
    let src = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings and the fds are open.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            dir_file.as_raw_fd(),
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::AlreadyExists {
        return Err(e);
    }
    Ok(false) // no /proc to link through
}

/// The portable way: a hidden temporary file, renamed without replacing.
fn write_hidden_then_rename(
    dir: &Path,
    dir_file: &File,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    let target = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let tmp_name = format!(".{name}.{}.tmp", std::process::id());
    let tmp = dir.join(&tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        let tmp_c = std::ffi::CString::new(tmp_name.as_str()).map_err(io::Error::other)?;
        // The raw system call: older musl has no renameat2 wrapper.
        // SAFETY: valid NUL-terminated names relative to an open directory fd.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                dir_file.as_raw_fd(),
                tmp_c.as_ptr(),
                dir_file.as_raw_fd(),
                target.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        // No RENAME_NOREPLACE on this file system: link (fails if present) and unlink.
        std::fs::hard_link(&tmp, dir.join(name))?;
        std::fs::remove_file(&tmp)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_name_is_reported_not_replaced() {
        let t = tempfile::tempdir().expect("tempdir");
        write_new_file(t.path(), "a.json", b"first").expect("first");
        let e = write_new_file(t.path(), "a.json", b"second").expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read(t.path().join("a.json")).expect("read"),
            b"first"
        );
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(t.path()).expect("ls").count(), 1);
    }

    #[test]
    fn both_ways_write_whole_files_and_never_replace() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = File::open(t.path()).expect("open dir");
        // Not every file system under TMPDIR has O_TMPFILE (a build sandbox's may not): then
        // the unnamed way says so and the file is written the portable way.
        let tmpfile =
            write_unnamed_then_link(t.path(), &d, "u.json", b"unnamed", 0o644).expect("tmpfile");
        if !tmpfile {
            eprintln!(
                "no O_TMPFILE under {}: the portable way only",
                t.path().display()
            );
            write_hidden_then_rename(t.path(), &d, "u.json", b"unnamed", 0o644).expect("rename");
        }
        write_hidden_then_rename(t.path(), &d, "r.json", b"renamed", 0o644).expect("rename");
        let e = write_hidden_then_rename(t.path(), &d, "u.json", b"x", 0o644).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        if tmpfile {
            let e =
                write_unnamed_then_link(t.path(), &d, "r.json", b"x", 0o644).expect_err("exists");
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        }
        assert_eq!(
            std::fs::read(t.path().join("u.json")).expect("read"),
            b"unnamed"
        );
        assert_eq!(
            std::fs::read(t.path().join("r.json")).expect("read"),
            b"renamed"
        );
        let mut names: Vec<_> = std::fs::read_dir(t.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["r.json", "u.json"]);
    }
}
