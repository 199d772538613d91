//! A safe wrapper over the installed libzfs and libzfs_core (`labnode-zfs-sys`).
//!
//! Every handle is closed by a guard, every string and nvlist value is copied out before
//! its handle goes, and no libzfs pointer leaves this module: callers get plain Rust data.
//! A [`LibZfs`] is one libzfs handle; it is `Send` but not `Sync` (libzfs handles are not
//! safe to share between threads), so the collector keeps it behind a mutex.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, MutexGuard};

use labnode_zfs_sys as sys;

/// The loaded libzfs. Only called on paths that hold a [`LibZfs`], which loaded it.
fn z() -> &'static sys::Library {
    match sys::lib() {
        Ok(l) => l,
        // LibZfs::open returns the load error instead of a handle.
        Err(e) => unreachable!("libzfs used before it was loaded: {e}"),
    }
}

use crate::model::{DatasetInfo, DatasetKind, PoolInfo, ScanInfo, SnapshotSummary, VdevInfo};

/// What a libzfs or libzfs_core call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ZfsError {
    /// `libzfs_init` failed: usually no `/dev/zfs` (module not loaded) or no permission.
    #[error("cannot open libzfs: {0}")]
    Init(String),
    /// A libzfs call failed; the message is libzfs's own description.
    #[error("{what}: {why}")]
    Call {
        /// What was being done, with the object's name.
        what: String,
        /// libzfs's or the kernel's reason.
        why: String,
    },
    /// A name that cannot be passed to C (it holds a NUL byte) or is too long.
    #[error("invalid ZFS name {0:?}")]
    Name(String),
}

fn cstr(s: &str) -> Result<CString, ZfsError> {
    CString::new(s).map_err(|_| ZfsError::Name(s.to_owned()))
}

/// Copies a C string out; `None` for a null pointer.
///
/// # Safety
/// `p` is null or a valid NUL-terminated string that lives for the call.
unsafe fn copy_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees a valid NUL-terminated string.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

fn os_error(code: c_int) -> String {
    std::io::Error::from_raw_os_error(code).to_string()
}

/// Where a loaded zfs module shows up (libzfs checks the same directory).
const ZFS_MODULE_DIR: &str = "/sys/module/zfs";

/// Serialises `libzfs_init` and `libzfs_fini` across threads: they set up and tear down
/// process-wide state (the property tables, libzfs_core's descriptor, fletcher-4), and
/// the collector opens one handle per thread (its runs and the snapshot enumeration).
static INIT: Mutex<()> = Mutex::new(());

fn init_lock() -> MutexGuard<'static, ()> {
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    INIT.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open libzfs handle (which opens `/dev/zfs`). Dropping it closes `/dev/zfs`, so a
/// process that holds none does not pin the zfs module.
#[derive(Debug)]
pub struct LibZfs {
    h: NonNull<sys::libzfs_handle_t>,
}

// SAFETY: a libzfs handle may be used from any thread, one at a time; `LibZfs` is not
// `Sync` and every use takes `&self` on the owning thread (the collector holds it in a
// mutex).
unsafe impl Send for LibZfs {}

impl Drop for LibZfs {
    fn drop(&mut self) {
        let _init = init_lock();
        // SAFETY: the handle came from libzfs_init and every handle derived from it was
        // closed (their guards borrow `self`).
        unsafe { z().libzfs_fini(self.h.as_ptr()) }
    }
}

/// A pool handle, closed on drop.
struct Pool<'a> {
    p: NonNull<sys::zpool_handle_t>,
    _lib: PhantomData<&'a LibZfs>,
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle is open and owned by this guard.
        unsafe { z().zpool_close(self.p.as_ptr()) }
    }
}

/// A dataset handle, closed on drop.
struct Dataset<'a> {
    d: NonNull<sys::zfs_handle_t>,
    _lib: PhantomData<&'a LibZfs>,
}

impl Drop for Dataset<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle is open and owned by this guard.
        unsafe { z().zfs_close(self.d.as_ptr()) }
    }
}

impl Dataset<'_> {
    fn name(&self) -> String {
        // SAFETY: the handle is open; the name is copied out before it can go.
        unsafe { copy_str(z().zfs_get_name(self.d.as_ptr())) }.unwrap_or_default()
    }

    fn kind(&self) -> DatasetKind {
        // SAFETY: the handle is open.
        match unsafe { z().zfs_get_type(self.d.as_ptr()) } {
            sys::zfs_type_t_ZFS_TYPE_VOLUME => DatasetKind::Volume,
            sys::zfs_type_t_ZFS_TYPE_SNAPSHOT => DatasetKind::Snapshot,
            _ => DatasetKind::Filesystem,
        }
    }

    fn int(&self, prop: sys::zfs_prop_t) -> u64 {
        // SAFETY: the handle is open; zfs_prop_get_int only reads it.
        unsafe { z().zfs_prop_get_int(self.d.as_ptr(), prop) }
    }

    /// A user property (`module:name`), set here or inherited, with where it is set.
    fn user_prop(&self, name: &str) -> Option<UserProp> {
        let key = CString::new(name).ok()?;
        // SAFETY: the handle is open; the nvlist it returns belongs to the handle and is
        // only read here, with the strings copied out before the handle can close.
        unsafe {
            let props = z().zfs_get_user_props(self.d.as_ptr());
            if props.is_null() {
                return None;
            }
            let mut entry: *mut sys::nvlist_t = ptr::null_mut();
            if z().nvlist_lookup_nvlist(props, key.as_ptr(), &mut entry) != 0 {
                return None;
            }
            let string = |field: &[u8]| {
                let mut v: *const c_char = ptr::null();
                let rc = z().nvlist_lookup_string(entry, field.as_ptr().cast(), &mut v);
                if rc != 0 { None } else { copy_str(v) }
            };
            Some(UserProp {
                value: string(sys::ZPROP_VALUE)?,
                // The kernel always sends a source; an entry without one is not local.
                set_on: string(sys::ZPROP_SOURCE).unwrap_or_default(),
            })
        }
    }

    fn mountpoint(&self) -> Option<String> {
        let mut where_: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is open; `where_` is malloc'd by libzfs when mounted and
        // freed here after copying.
        unsafe {
            if z().zfs_is_mounted(self.d.as_ptr(), &mut where_) == sys::boolean_t_B_FALSE {
                return None;
            }
            let s = copy_str(where_);
            libc::free(where_.cast());
            s
        }
    }
}

use crate::model::{PROP_PROTECTED, PROP_SCRATCH, UserProp};

/// Collects handles from a libzfs iterator callback; processing happens after the
/// iterator returns, so no Rust code with panics or allocation failures runs inside C.
unsafe extern "C" fn push_zfs(zhp: *mut sys::zfs_handle_t, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Vec` passed by `collect_datasets`, alive for the iteration.
    let v = unsafe { &mut *data.cast::<Vec<*mut sys::zfs_handle_t>>() };
    v.push(zhp);
    0
}

unsafe extern "C" fn push_pool(zhp: *mut sys::zpool_handle_t, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Vec` passed by `pools`, alive for the iteration.
    let v = unsafe { &mut *data.cast::<Vec<*mut sys::zpool_handle_t>>() };
    v.push(zhp);
    0
}

/// The running summary of a snapshot iteration: count, and the lowest and highest
/// creation txg with their names.
#[derive(Default)]
struct SnapScan {
    count: u64,
    oldest: Option<(u64, String)>,
    newest: Option<(u64, String)>,
}

/// Per-snapshot callback of the cheap enumeration: the handle is a "simple" one (name and
/// creation txg only, no properties fetched); it is closed here.
unsafe extern "C" fn scan_snapshot(zhp: *mut sys::zfs_handle_t, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `SnapScan` passed by `snapshot_summary`; `zhp` is a fresh
    // handle libzfs hands over to us, closed below after its name is copied.
    unsafe {
        let scan = &mut *data.cast::<SnapScan>();
        let txg = z().zfs_prop_get_int(zhp, sys::zfs_prop_t_ZFS_PROP_CREATETXG);
        scan.count += 1;
        if scan.oldest.as_ref().is_none_or(|(t, _)| txg < *t) {
            scan.oldest = Some((txg, copy_str(z().zfs_get_name(zhp)).unwrap_or_default()));
        }
        if scan.newest.as_ref().is_none_or(|(t, _)| txg > *t) {
            scan.newest = Some((txg, copy_str(z().zfs_get_name(zhp)).unwrap_or_default()));
        }
        z().zfs_close(zhp);
    }
    0
}

/// The last error libzfs recorded on a handle.
fn describe(h: *mut sys::libzfs_handle_t) -> String {
    // SAFETY: the handle is open; the description is a static or handle-owned string,
    // copied out at once.
    unsafe { copy_str(z().libzfs_error_description(h)) }.unwrap_or_else(|| "unknown error".into())
}

impl LibZfs {
    /// Opens libzfs (and `/dev/zfs`).
    pub fn open() -> Result<Self, ZfsError> {
        sys::lib().map_err(|e| ZfsError::Init(e.to_owned()))?;
        let init = init_lock();
        // SAFETY: libzfs_init has no preconditions; on failure it sets errno.
        let h = unsafe { z().libzfs_init() };
        // errno at once, before any other call can change it.
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        drop(init);
        match NonNull::new(h) {
            Some(h) => Ok(LibZfs { h }),
            None => {
                // SAFETY: libzfs_error_init returns a static string for any errno.
                let msg = unsafe { copy_str(z().libzfs_error_init(errno)) }
                    .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| os_error(errno));
                Err(ZfsError::Init(msg))
            }
        }
    }

    /// Opens libzfs only if the zfs module is loaded (`/sys/module/zfs` exists). Unlike
    /// [`Self::open`], it never makes libzfs run `modprobe zfs`: an agent does not load
    /// kernel modules, and that fork and exec, on every run while the module is out, can
    /// cost more than a run's deadline on a slow machine.
    pub fn open_loaded() -> Result<Self, ZfsError> {
        if !std::path::Path::new(ZFS_MODULE_DIR).exists() {
            return Err(ZfsError::Init(format!(
                "The ZFS modules are not loaded (no {ZFS_MODULE_DIR}). Try running 'modprobe zfs' as root to load them."
            )));
        }
        Self::open()
    }

    fn call_err(&self, what: impl Into<String>) -> ZfsError {
        ZfsError::Call {
            what: what.into(),
            why: describe(self.h.as_ptr()),
        }
    }

    /// Every imported pool with its state, space, last scan and vdevs. A pool that goes
    /// away while it is read is left out.
    pub fn pools(&self) -> Result<Vec<PoolInfo>, ZfsError> {
        let mut raw: Vec<*mut sys::zpool_handle_t> = Vec::new();
        // SAFETY: the callback only pushes into `raw`, which outlives the call.
        let rc = unsafe {
            z().zpool_iter(
                self.h.as_ptr(),
                Some(push_pool),
                (&mut raw as *mut Vec<*mut sys::zpool_handle_t>).cast(),
            )
        };
        // Guard every handle first, so all are closed whatever happens next.
        let pools: Vec<Pool<'_>> = raw
            .into_iter()
            .filter_map(NonNull::new)
            .map(|p| Pool {
                p,
                _lib: PhantomData,
            })
            .collect();
        if rc != 0 {
            return Err(self.call_err("listing pools"));
        }
        Ok(pools.iter().filter_map(|p| self.pool_info(p)).collect())
    }

    fn pool_info(&self, pool: &Pool<'_>) -> Option<PoolInfo> {
        let zhp = pool.p.as_ptr();
        // SAFETY: the handle is open; the name is copied out.
        let name = unsafe { copy_str(z().zpool_get_name(zhp)) }.unwrap_or_default();
        let mut missing = sys::boolean_t_B_FALSE;
        // SAFETY: the handle is open; refreshing replaces its config nvlist.
        if unsafe { z().zpool_refresh_stats(zhp, &mut missing) } != 0
            || missing != sys::boolean_t_B_FALSE
        {
            tracing::info!(pool = %name, "pool {name} went away while being read; its series are left out");
            return None;
        }
        let prop = |p: sys::zpool_prop_t| -> Option<String> {
            let mut buf = [0 as c_char; 1024];
            // SAFETY: the handle is open and `buf` is writable for its length;
            // `literal` asks for the exact numbers `zpool get -p` prints.
            let rc = unsafe {
                z().zpool_get_prop(
                    zhp,
                    p,
                    buf.as_mut_ptr(),
                    buf.len(),
                    ptr::null_mut(),
                    sys::boolean_t_B_TRUE,
                )
            };
            // SAFETY: zpool_get_prop NUL-terminates what it writes.
            (rc == 0)
                .then(|| unsafe { copy_str(buf.as_ptr()) })
                .flatten()
        };
        let num = |p| prop(p).and_then(|v| v.trim().parse::<u64>().ok());
        let health = prop(sys::zpool_prop_t_ZPOOL_PROP_HEALTH)
            .unwrap_or_else(|| "unknown".into())
            .to_ascii_lowercase();
        let mut info = PoolInfo {
            health,
            size: num(sys::zpool_prop_t_ZPOOL_PROP_SIZE),
            allocated: num(sys::zpool_prop_t_ZPOOL_PROP_ALLOCATED),
            free: num(sys::zpool_prop_t_ZPOOL_PROP_FREE),
            capacity_percent: num(sys::zpool_prop_t_ZPOOL_PROP_CAPACITY),
            fragmentation_percent: num(sys::zpool_prop_t_ZPOOL_PROP_FRAGMENTATION),
            data_errors: None,
            scan: None,
            vdevs: Vec::new(),
            name,
        };
        // SAFETY: the config belongs to the handle and stays valid until the next
        // refresh or close; everything read from it is copied out here.
        unsafe {
            let config = z().zpool_get_config(zhp, ptr::null_mut());
            if config.is_null() {
                return Some(info);
            }
            let mut errcount = 0u64;
            if z().nvlist_lookup_uint64(
                config,
                sys::ZPOOL_CONFIG_ERRCOUNT.as_ptr().cast(),
                &mut errcount,
            ) == 0
            {
                info.data_errors = Some(errcount);
            }
            let mut root: *mut sys::nvlist_t = ptr::null_mut();
            if z().nvlist_lookup_nvlist(
                config,
                sys::ZPOOL_CONFIG_VDEV_TREE.as_ptr().cast(),
                &mut root,
            ) != 0
            {
                return Some(info);
            }
            info.scan = read_scan(root);
            self.walk_vdevs(zhp, root, true, &info.name.clone(), &mut info.vdevs, 0);
        }
        Some(info)
    }

    /// Appends `nv` and its children (and, for the root, its cache and spare devices).
    ///
    /// # Safety
    /// `zhp` is an open pool handle and `nv` a vdev nvlist of its current config.
    unsafe fn walk_vdevs(
        &self,
        zhp: *mut sys::zpool_handle_t,
        nv: *mut sys::nvlist_t,
        is_root: bool,
        pool: &str,
        out: &mut Vec<VdevInfo>,
        depth: usize,
    ) {
        if depth > 16 {
            return; // no real vdev tree is this deep; never recurse without bound
        }
        // SAFETY: per the function's contract.
        unsafe {
            let stats = read_u64_array(nv, sys::ZPOOL_CONFIG_VDEV_STATS);
            let mut vs = sys::vdev_stat_t::default();
            let n = stats.len().min(std::mem::size_of::<sys::vdev_stat_t>() / 8);
            ptr::copy_nonoverlapping(
                stats.as_ptr(),
                (&mut vs as *mut sys::vdev_stat_t).cast::<u64>(),
                n,
            );
            let name = if is_root {
                pool.to_owned()
            } else {
                let p = z().zpool_vdev_name(
                    self.h.as_ptr(),
                    zhp,
                    nv,
                    sys::vdev_name_t_VDEV_NAME_TYPE_ID as c_int,
                );
                let s = copy_str(p).unwrap_or_default();
                libc::free(p.cast());
                s
            };
            let mut kind: *const c_char = ptr::null();
            z().nvlist_lookup_string(nv, sys::ZPOOL_CONFIG_TYPE.as_ptr().cast(), &mut kind);
            let state = copy_str(z().zpool_state_to_name(
                vs.vs_state as sys::vdev_state_t,
                vs.vs_aux as sys::vdev_aux_t,
            ))
            .unwrap_or_else(|| "unknown".into())
            .to_ascii_lowercase();
            if n > 0 {
                out.push(VdevInfo {
                    name,
                    kind: copy_str(kind).unwrap_or_else(|| "unknown".into()),
                    state,
                    read_errors: vs.vs_read_errors,
                    write_errors: vs.vs_write_errors,
                    checksum_errors: vs.vs_checksum_errors,
                });
            }
            let mut lists: Vec<&[u8]> = vec![sys::ZPOOL_CONFIG_CHILDREN];
            if is_root {
                lists.push(sys::ZPOOL_CONFIG_L2CACHE);
                lists.push(sys::ZPOOL_CONFIG_SPARES);
            }
            for key in lists {
                let mut children: *mut *mut sys::nvlist_t = ptr::null_mut();
                let mut count: sys::uint_t = 0;
                if z().nvlist_lookup_nvlist_array(
                    nv,
                    key.as_ptr().cast(),
                    &mut children,
                    &mut count,
                ) != 0
                    || children.is_null()
                {
                    continue;
                }
                for i in 0..count as usize {
                    self.walk_vdevs(zhp, *children.add(i), false, pool, out, depth + 1);
                }
            }
        }
    }

    /// Every file system and volume, with the properties labnode exports.
    pub fn datasets(&self) -> Result<Vec<DatasetInfo>, ZfsError> {
        let mut out = Vec::new();
        let mut raw: Vec<*mut sys::zfs_handle_t> = Vec::new();
        // SAFETY: the callback only pushes into `raw`, which outlives the call.
        let rc = unsafe {
            z().zfs_iter_root(
                self.h.as_ptr(),
                Some(push_zfs),
                (&mut raw as *mut Vec<*mut sys::zfs_handle_t>).cast(),
            )
        };
        let mut stack: Vec<Dataset<'_>> = self.guard_all(raw);
        if rc != 0 {
            return Err(self.call_err("listing datasets"));
        }
        stack.reverse();
        while let Some(ds) = stack.pop() {
            let mut children: Vec<*mut sys::zfs_handle_t> = Vec::new();
            // SAFETY: the handle is open; the callback only pushes into `children`.
            let rc = unsafe {
                z().zfs_iter_filesystems_v2(
                    ds.d.as_ptr(),
                    0,
                    Some(push_zfs),
                    (&mut children as *mut Vec<*mut sys::zfs_handle_t>).cast(),
                )
            };
            let mut children = self.guard_all(children);
            if rc != 0 {
                // A dataset destroyed meanwhile: keep what was read, skip its children.
                let name = ds.name();
                tracing::info!(
                    dataset = %name,
                    "cannot list the children of {name} (gone while being read?): {}",
                    describe(self.h.as_ptr())
                );
                children.clear();
            }
            out.push(self.dataset_info(&ds));
            children.reverse();
            stack.extend(children);
        }
        Ok(out)
    }

    fn guard_all(&self, raw: Vec<*mut sys::zfs_handle_t>) -> Vec<Dataset<'_>> {
        raw.into_iter()
            .filter_map(NonNull::new)
            .map(|d| Dataset {
                d,
                _lib: PhantomData,
            })
            .collect()
    }

    fn dataset_info(&self, ds: &Dataset<'_>) -> DatasetInfo {
        DatasetInfo {
            name: ds.name(),
            kind: ds.kind(),
            used: ds.int(sys::zfs_prop_t_ZFS_PROP_USED),
            available: ds.int(sys::zfs_prop_t_ZFS_PROP_AVAILABLE),
            referenced: ds.int(sys::zfs_prop_t_ZFS_PROP_REFERENCED),
            logical_used: ds.int(sys::zfs_prop_t_ZFS_PROP_LOGICALUSED),
            compress_ratio_percent: ds.int(sys::zfs_prop_t_ZFS_PROP_COMPRESSRATIO),
            protected: ds.user_prop(PROP_PROTECTED),
            scratch: ds.user_prop(PROP_SCRATCH),
            mountpoint: ds.mountpoint(),
        }
    }

    fn open_dataset(&self, name: &str, types: u32) -> Result<Dataset<'_>, ZfsError> {
        let c = cstr(name)?;
        // SAFETY: the name is a valid C string; the handle returned is guarded.
        let d = unsafe { z().zfs_open(self.h.as_ptr(), c.as_ptr(), types as c_int) };
        NonNull::new(d)
            .map(|d| Dataset {
                d,
                _lib: PhantomData,
            })
            .ok_or_else(|| self.call_err(format!("cannot open {name}")))
    }

    /// One file system or volume.
    pub fn dataset(&self, name: &str) -> Result<DatasetInfo, ZfsError> {
        let types = sys::zfs_type_t_ZFS_TYPE_FILESYSTEM | sys::zfs_type_t_ZFS_TYPE_VOLUME;
        let ds = self.open_dataset(name, types)?;
        Ok(self.dataset_info(&ds))
    }

    /// Counts a dataset's snapshots and finds the oldest and newest, cheaply: the
    /// iteration asks the kernel for names and creation txgs only (no properties); the
    /// creation time is then read for the two snapshots that need it.
    pub fn snapshot_summary(&self, dataset: &str) -> Result<SnapshotSummary, ZfsError> {
        let ds = self.open_dataset(
            dataset,
            sys::zfs_type_t_ZFS_TYPE_FILESYSTEM | sys::zfs_type_t_ZFS_TYPE_VOLUME,
        )?;
        let mut scan = SnapScan::default();
        // SAFETY: the handle is open; the callback closes each snapshot handle and only
        // writes to `scan`, which outlives the call.
        let rc = unsafe {
            z().zfs_iter_snapshots_v2(
                ds.d.as_ptr(),
                sys::ZFS_ITER_SIMPLE as c_int,
                Some(scan_snapshot),
                (&mut scan as *mut SnapScan).cast(),
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(self.call_err(format!("listing the snapshots of {dataset}")));
        }
        let creation = |name: &str| -> Result<u64, ZfsError> {
            let s = self.open_dataset(name, sys::zfs_type_t_ZFS_TYPE_SNAPSHOT)?;
            Ok(s.int(sys::zfs_prop_t_ZFS_PROP_CREATION))
        };
        let oldest = match scan.oldest {
            Some((_, n)) => Some((n.clone(), creation(&n)?)),
            None => None,
        };
        let newest = match scan.newest {
            Some((_, n)) => Some((n.clone(), creation(&n)?)),
            None => None,
        };
        Ok(SnapshotSummary {
            dataset: dataset.to_owned(),
            count: scan.count,
            oldest,
            newest,
        })
    }

    /// Every snapshot of a dataset with its creation time, the way `zfs list -t snapshot
    /// -o name,creation` reads them (each snapshot's properties fetched). Slow on purpose:
    /// the benchmark's reference for what the cheap enumeration saves.
    pub fn snapshots_full(&self, dataset: &str) -> Result<Vec<(String, u64)>, ZfsError> {
        let ds = self.open_dataset(
            dataset,
            sys::zfs_type_t_ZFS_TYPE_FILESYSTEM | sys::zfs_type_t_ZFS_TYPE_VOLUME,
        )?;
        let mut raw: Vec<*mut sys::zfs_handle_t> = Vec::new();
        // SAFETY: the handle is open; the callback only pushes into `raw`.
        let rc = unsafe {
            z().zfs_iter_snapshots_v2(
                ds.d.as_ptr(),
                0,
                Some(push_zfs),
                (&mut raw as *mut Vec<*mut sys::zfs_handle_t>).cast(),
                0,
                0,
            )
        };
        let snaps = self.guard_all(raw);
        if rc != 0 {
            return Err(self.call_err(format!("listing the snapshots of {dataset}")));
        }
        Ok(snaps
            .iter()
            .map(|s| (s.name(), s.int(sys::zfs_prop_t_ZFS_PROP_CREATION)))
            .collect())
    }

    /// Takes snapshot `name` (`pool/fs@snap`) through libzfs_core.
    pub fn snapshot(&self, name: &str) -> Result<(), ZfsError> {
        let list = NvList::with_boolean(name)?;
        let mut errors: *mut sys::nvlist_t = ptr::null_mut();
        // SAFETY: `list` is a valid nvlist; `errors` is freed below.
        let rc = unsafe { z().lzc_snapshot(list.0.as_ptr(), ptr::null_mut(), &mut errors) };
        if !errors.is_null() {
            // SAFETY: lzc allocated it for us.
            unsafe { z().nvlist_free(errors) };
        }
        if rc != 0 {
            return Err(ZfsError::Call {
                what: format!("cannot snapshot {name}"),
                why: os_error(rc),
            });
        }
        Ok(())
    }

    /// Rolls `fs` back to `snapshot`, which must be its newest (libzfs_core's
    /// `lzc_rollback_to`: refuses if a newer snapshot appeared meanwhile).
    pub fn rollback_to(&self, fs: &str, snapshot: &str) -> Result<(), ZfsError> {
        let (f, s) = (cstr(fs)?, cstr(snapshot)?);
        // SAFETY: both are valid C strings.
        let rc = unsafe { z().lzc_rollback_to(f.as_ptr(), s.as_ptr()) };
        if rc != 0 {
            return Err(ZfsError::Call {
                what: format!("cannot roll {fs} back to {snapshot}"),
                why: os_error(rc),
            });
        }
        Ok(())
    }

    /// Destroys one snapshot.
    pub fn destroy_snapshot(&self, name: &str) -> Result<(), ZfsError> {
        let list = NvList::with_boolean(name)?;
        let mut errors: *mut sys::nvlist_t = ptr::null_mut();
        // SAFETY: `list` is a valid nvlist; `errors` is freed below.
        let rc =
            unsafe { z().lzc_destroy_snaps(list.0.as_ptr(), sys::boolean_t_B_FALSE, &mut errors) };
        if !errors.is_null() {
            // SAFETY: lzc allocated it for us.
            unsafe { z().nvlist_free(errors) };
        }
        if rc != 0 {
            return Err(ZfsError::Call {
                what: format!("cannot destroy {name}"),
                why: os_error(rc),
            });
        }
        Ok(())
    }

    /// Whether a dataset or snapshot of this name exists.
    pub fn exists(&self, name: &str) -> bool {
        // SAFETY: a valid C string.
        cstr(name).is_ok_and(|c| unsafe { z().lzc_exists(c.as_ptr()) } != sys::boolean_t_B_FALSE)
    }
}

/// An owned nvlist, freed on drop.
struct NvList(NonNull<sys::nvlist_t>);

impl NvList {
    /// A list holding one boolean entry `name` (how libzfs_core takes sets of names).
    fn with_boolean(name: &str) -> Result<Self, ZfsError> {
        let c = cstr(name)?;
        let mut nvl: *mut sys::nvlist_t = ptr::null_mut();
        // SAFETY: nvlist_alloc writes a new list to `nvl` on success.
        let rc = unsafe { z().nvlist_alloc(&mut nvl, sys::NV_UNIQUE_NAME, 0) };
        let list = NonNull::new(nvl)
            .filter(|_| rc == 0)
            .map(NvList)
            .ok_or_else(|| ZfsError::Call {
                what: "nvlist_alloc".into(),
                why: os_error(rc),
            })?;
        // SAFETY: the list is valid and the name a valid C string.
        let rc = unsafe { z().nvlist_add_boolean(list.0.as_ptr(), c.as_ptr()) };
        if rc != 0 {
            return Err(ZfsError::Call {
                what: "nvlist_add_boolean".into(),
                why: os_error(rc),
            });
        }
        Ok(list)
    }
}

impl Drop for NvList {
    fn drop(&mut self) {
        // SAFETY: we own the list.
        unsafe { z().nvlist_free(self.0.as_ptr()) }
    }
}

/// Copies a uint64 array out of an nvlist (empty if absent).
///
/// # Safety
/// `nv` is a valid nvlist.
unsafe fn read_u64_array(nv: *mut sys::nvlist_t, key: &[u8]) -> Vec<u64> {
    let mut p: *mut u64 = ptr::null_mut();
    let mut n: sys::uint_t = 0;
    // SAFETY: per the contract; the array belongs to the nvlist and is copied at once.
    unsafe {
        if z().nvlist_lookup_uint64_array(nv, key.as_ptr().cast(), &mut p, &mut n) != 0
            || p.is_null()
        {
            return Vec::new();
        }
        std::slice::from_raw_parts(p, n as usize).to_vec()
    }
}

/// Reads the pool's scan statistics from its root vdev.
///
/// # Safety
/// `root` is the valid vdev tree nvlist of a pool config.
unsafe fn read_scan(root: *mut sys::nvlist_t) -> Option<ScanInfo> {
    // SAFETY: per the contract.
    let raw = unsafe { read_u64_array(root, sys::ZPOOL_CONFIG_SCAN_STATS) };
    let mut ps = sys::pool_scan_stat_t::default();
    let n = raw
        .len()
        .min(std::mem::size_of::<sys::pool_scan_stat_t>() / 8);
    // SAFETY: pool_scan_stat_t is plain u64 fields; n is within both buffers.
    unsafe {
        ptr::copy_nonoverlapping(
            raw.as_ptr(),
            (&mut ps as *mut sys::pool_scan_stat_t).cast::<u64>(),
            n,
        )
    };
    if n < 9 {
        return None;
    }
    let function = match ps.pss_func as sys::pool_scan_func {
        sys::pool_scan_func_POOL_SCAN_SCRUB => "scrub",
        sys::pool_scan_func_POOL_SCAN_RESILVER => "resilver",
        sys::pool_scan_func_POOL_SCAN_ERRORSCRUB => "error_scrub",
        _ => return None,
    };
    let state = match ps.pss_state as sys::dsl_scan_state {
        sys::dsl_scan_state_DSS_SCANNING => "scanning",
        sys::dsl_scan_state_DSS_FINISHED => "finished",
        sys::dsl_scan_state_DSS_CANCELED => "canceled",
        _ => return None,
    };
    Some(ScanInfo {
        function,
        state,
        start_time: ps.pss_start_time,
        end_time: ps.pss_end_time,
        to_examine: ps.pss_to_examine,
        examined: ps.pss_examined,
        issued: ps.pss_issued,
        errors: ps.pss_errors,
    })
}
