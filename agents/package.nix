# The labnode agents as a Nix package: the `labnode` binary, built from this workspace with
# its lock file, its hermetic tests run in the sandbox. NVML is not linked: it is loaded at
# run time from the loader's path or /run/opengl-driver/lib (NixOS). libzfs is linked: the
# zfs-sys crate runs bindgen over libzfs.h at build time, found with pkg-config in
# zfs's `dev` output (headers and .pc files; buildInputs picks that output).
{
  lib,
  rustPlatform,
  pkg-config,
  zfs,
}:
rustPlatform.buildRustPackage {
  pname = "labnode";
  version = "0.1.0";

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./Cargo.toml
      ./Cargo.lock
      ./crates
      ./labnode
      ./bench
    ];
  };
  cargoLock.lockFile = ./Cargo.lock;

  # bindgenHook points bindgen at libclang and the C compiler's include paths.
  nativeBuildInputs = [pkg-config rustPlatform.bindgenHook];
  buildInputs = [zfs];

  cargoBuildFlags = ["--package" "labnode"];
  cargoTestFlags = ["--workspace"];

  meta = {
    description = "Measure a NixOS research node: GPU, ZFS, network and rollback metrics, before/after snapshots";
    license = with lib.licenses; [mit asl20];
    platforms = lib.platforms.linux;
    mainProgram = "labnode";
  };
}
