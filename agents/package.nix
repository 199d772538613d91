# The labnode agents as a Nix package: the `labnode` binary, built from this workspace with
# its lock file, its hermetic tests run in the sandbox. NVML is not linked: it is loaded at
# run time from the loader's path or /run/opengl-driver/lib (NixOS). libzfs is linked: the
# zfs-sys crate runs bindgen over libzfs.h at build time, found with pkg-config in zfs's
# `dev` output (headers and .pc files; buildInputs picks that output).
#
# tests/system/nix_sandbox.sh builds and runs these tests the way this derivation does (its
# source fileset, its build inputs, the sandbox's network, user and PATH), on every
# tests/run; tests/nix/package-info.nix reads this file for it.
{
  lib,
  rustPlatform,
  pkg-config,
  zfs,
  openssl,
  zlib,
  util-linux,
  libtirpc,
}:
rustPlatform.buildRustPackage {
  pname = "labnode";
  version = "0.1.0";

  # The workspace and the metric contract its tests check the report's catalog against.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ./Cargo.toml
      ./Cargo.lock
      ./crates
      ./labnode
      ./bench
      ../docs/metrics.md
    ];
  };
  cargoRoot = "agents";
  buildAndTestSubdir = "agents";
  cargoLock.lockFile = ./Cargo.lock;

  # bindgenHook points bindgen at libclang and the C compiler's include paths.
  nativeBuildInputs = [pkg-config rustPlatform.bindgenHook];
  # OpenZFS's libzfs.pc and libzfs_core.pc name libcrypto, zlib, blkid, uuid and libtirpc in
  # Requires.private (nixpkgs' zfs is configured with them and propagates none), and
  # pkg-config fails on a missing one whatever it is asked: they are build inputs here.
  buildInputs = [zfs openssl zlib util-linux libtirpc];

  cargoBuildFlags = ["--package" "labnode"];
  cargoTestFlags = ["--workspace"];

  meta = {
    description = "Measure a NixOS research node: GPU, ZFS, network and rollback metrics, before/after snapshots";
    license = with lib.licenses; [mit asl20];
    platforms = lib.platforms.linux;
    mainProgram = "labnode";
  };
}
