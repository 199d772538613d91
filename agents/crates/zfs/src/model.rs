//! Plain data read from ZFS: what the libzfs wrapper copies out and the collector exports.
//! No libzfs types here, so this compiles (and is tested) without libzfs.

/// The user property that marks a dataset as protected (RPO alerting applies).
pub const PROP_PROTECTED: &str = "labnode:protected";
/// The user property that marks a dataset as scratch: the ZFS drill may destroy its contents.
pub const PROP_SCRATCH: &str = "labnode:scratch";

/// What kind of dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// A file system.
    Filesystem,
    /// A volume (zvol).
    Volume,
    /// A snapshot.
    Snapshot,
}

/// A pool's state and space, as `zpool get -Hp` prints them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolInfo {
    /// The pool's name.
    pub name: String,
    /// The `health` property, lower case: online, degraded, faulted, offline, unavail,
    /// removed or suspended.
    pub health: String,
    /// `size`, `allocated`, `free` in bytes.
    pub size: Option<u64>,
    /// Allocated bytes.
    pub allocated: Option<u64>,
    /// Free bytes.
    pub free: Option<u64>,
    /// `capacity`, percent (integer, as ZFS computes it).
    pub capacity_percent: Option<u64>,
    /// `fragmentation`, percent; `None` where ZFS prints `-`.
    pub fragmentation_percent: Option<u64>,
    /// Persistent data errors (`zpool status -v`'s list), approximate as ZFS counts them.
    pub data_errors: Option<u64>,
    /// The last scan (scrub or resilver), if the pool ever had one.
    pub scan: Option<ScanInfo>,
    /// Every vdev, the root first (named after the pool, as `zpool status` shows it).
    pub vdevs: Vec<VdevInfo>,
}

/// The pool's last scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanInfo {
    /// `scrub`, `resilver` or `error_scrub`.
    pub function: &'static str,
    /// `scanning`, `finished` or `canceled`.
    pub state: &'static str,
    /// Start, seconds since the epoch.
    pub start_time: u64,
    /// End, seconds since the epoch (0 while scanning).
    pub end_time: u64,
    /// Bytes to examine, and examined so far.
    pub to_examine: u64,
    /// Bytes examined.
    pub examined: u64,
    /// Bytes issued (checked) so far.
    pub issued: u64,
    /// Errors the scan found.
    pub errors: u64,
}

/// One vdev's state and error counters.
#[derive(Debug, Clone, PartialEq)]
pub struct VdevInfo {
    /// Its name as `zpool status` prints it (`mirror-0`, a device path, the pool's name
    /// for the root).
    pub name: String,
    /// Its type (`root`, `mirror`, `raidz`, `disk`, `file`, ...).
    pub kind: String,
    /// Its state, lower case (`online`, `degraded`, `offline`, `faulted`, ...).
    pub state: String,
    /// Read errors.
    pub read_errors: u64,
    /// Write errors.
    pub write_errors: u64,
    /// Checksum errors.
    pub checksum_errors: u64,
}

/// A file system's or volume's space, as `zfs get -Hp` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInfo {
    /// Full name, `pool/a/b`.
    pub name: String,
    /// File system or volume.
    pub kind: DatasetKind,
    /// `used` bytes.
    pub used: u64,
    /// `available` bytes.
    pub available: u64,
    /// `referenced` bytes.
    pub referenced: u64,
    /// `logicalused` bytes.
    pub logical_used: u64,
    /// `compressratio` times 100 (ZFS keeps it as an integer: 215 is 2.15x).
    pub compress_ratio_percent: u64,
    /// `labnode:protected` (a user property), when set here or inherited.
    pub protected: Option<UserProp>,
    /// `labnode:scratch` (a user property), when set here or inherited.
    pub scratch: Option<UserProp>,
    /// Where it is mounted, when it is.
    pub mountpoint: Option<String>,
}

/// A user property's value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProp {
    /// The value.
    pub value: String,
    /// The dataset that sets it: the dataset itself when set locally, an ancestor when
    /// inherited, `$recvd` when received (`zfs get`'s SOURCE column is made from this).
    pub set_on: String,
}

impl UserProp {
    /// Whether the value is `on`.
    pub fn is_on(&self) -> bool {
        self.value == "on"
    }
}

impl DatasetInfo {
    /// The pool it lives in.
    pub fn pool(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }
}

/// One dataset's snapshots, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSummary {
    /// The dataset.
    pub dataset: String,
    /// How many snapshots it has.
    pub count: u64,
    /// The oldest snapshot's name and creation time (seconds since the epoch).
    pub oldest: Option<(String, u64)>,
    /// The newest snapshot's name and creation time.
    pub newest: Option<(String, u64)>,
}
