//! Generates the bindings against the installed libzfs, to be loaded at run time.
//!
//! pkg-config finds the headers and the library directory (`libzfs` requires
//! `libzfs_core`; both link libnvpair). Set `PKG_CONFIG_PATH` to use another OpenZFS, and
//! `LIBCLANG_PATH` if bindgen cannot find libclang. Nothing is linked: the bindings are a
//! table of functions filled by `dlopen` of libzfs's soname, found here (`libzfs.so` is
//! a link to `libzfs.so.N.x.y`), in that directory first, then on the loader's path.

use std::env;
use std::path::PathBuf;

const FUNCTIONS: &[&str] = &[
    "libzfs_init",
    "libzfs_fini",
    "libzfs_print_on_error",
    "libzfs_errno",
    "libzfs_error_description",
    "libzfs_error_init",
    "zpool_iter",
    "zpool_get_name",
    "zpool_close",
    "zpool_get_prop",
    "zpool_get_prop_int",
    "zpool_refresh_stats",
    "zpool_get_config",
    "zpool_vdev_name",
    "zpool_state_to_name",
    "zfs_open",
    "zfs_close",
    "zfs_get_name",
    "zfs_get_type",
    "zfs_prop_get",
    "zfs_prop_get_int",
    "zfs_get_user_props",
    "zfs_is_mounted",
    "zfs_iter_root",
    "zfs_iter_filesystems_v2",
    "zfs_iter_snapshots_v2",
    "lzc_snapshot",
    "lzc_rollback_to",
    "lzc_destroy_snaps",
    "lzc_exists",
    "nvlist_alloc",
    "nvlist_free",
    "nvlist_add_boolean",
    "nvlist_lookup_nvlist",
    "nvlist_lookup_nvlist_array",
    "nvlist_lookup_uint64",
    "nvlist_lookup_uint64_array",
    "nvlist_lookup_string",
    "nvlist_next_nvpair",
    "nvpair_name",
];

const TYPES: &[&str] = &[
    "vdev_stat_t",
    "pool_scan_stat_t",
    "zpool_prop_t",
    "zfs_prop_t",
    "zfs_type_t",
    "vdev_state_t",
    "vdev_aux_t",
    "pool_scan_func_t",
    "dsl_scan_state_t",
    "vdev_name_t",
    "zprop_source_t",
];

const VARS: &[&str] = &[
    "ZPOOL_CONFIG_.*",
    "ZFS_ITER_SIMPLE",
    "ZFS_MAXPROPLEN",
    "ZPOOL_MAXPROPLEN",
    "ZPROP_VALUE",
    "ZPROP_SOURCE",
    "NV_UNIQUE_NAME",
];

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let mut include_paths = Vec::new();
    let mut version = String::new();
    let mut lib_dirs = Vec::new();
    for name in ["libzfs", "libzfs_core"] {
        match pkg_config::Config::new()
            .atleast_version("2.2")
            .cargo_metadata(false)
            .probe(name)
        {
            Ok(lib) => {
                include_paths.extend(lib.include_paths);
                lib_dirs.extend(lib.link_paths);
                if version.is_empty() {
                    version = lib.version;
                }
            }
            Err(e) => {
                eprintln!(
                    "labnode-zfs-sys: pkg-config cannot find {name} (OpenZFS >= 2.2 user headers and libraries):\n{e}\n\
                     On Debian: `apt-get install -t bookworm-backports libzfslinux-dev` (contrib); \
                     on NixOS: pkg-config and zfs.dev in the build inputs."
                );
                std::process::exit(1);
            }
        }
    }
    println!("cargo:rustc-env=LABNODE_LIBZFS_VERSION={version}");
    // libzfs.so -> libzfs.so.6.0.0: the soname is libzfs.so.6.
    let (dir, soname) = lib_dirs
        .iter()
        .find_map(|d| {
            let real = std::fs::canonicalize(d.join("libzfs.so")).ok()?;
            let file = real.file_name()?.to_str()?;
            let major = file.strip_prefix("libzfs.so.")?.split('.').next()?;
            Some((d.clone(), format!("libzfs.so.{major}")))
        })
        .unwrap_or_else(|| (PathBuf::new(), "libzfs.so.6".to_owned()));
    println!("cargo:rustc-env=LABNODE_LIBZFS_DIR={}", dir.display());
    println!("cargo:rustc-env=LABNODE_LIBZFS_SONAME={soname}");

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        // OpenZFS builds its user libraries with these; libspl's headers need stat64.
        .clang_args(["-D_GNU_SOURCE", "-D_LARGEFILE64_SOURCE"])
        .clang_args(include_paths.iter().map(|p| format!("-I{}", p.display())))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .dynamic_library_name("Library")
        .dynamic_link_require_all(true)
        .allowlist_recursively(true)
        .layout_tests(false)
        .wrap_unsafe_ops(true)
        .derive_default(true)
        .generate_comments(false);
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = match builder.generate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("labnode-zfs-sys: bindgen failed on the libzfs headers: {e}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
    if let Err(e) = bindings.write_to_file(&out) {
        eprintln!("labnode-zfs-sys: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}
