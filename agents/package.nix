# The labnode agents as a Nix package: the `labnode` binary, built from this workspace with
# its lock file, its hermetic tests run in the sandbox. NVML is not linked: it is loaded at
# run time from the loader's path or /run/opengl-driver/lib (NixOS).
{
  lib,
  rustPlatform,
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

  cargoBuildFlags = ["--package" "labnode"];
  cargoTestFlags = ["--workspace"];

  meta = {
    description = "Measure a NixOS research node: GPU, ZFS, network and rollback metrics, before/after snapshots";
    license = with lib.licenses; [mit asl20];
    platforms = lib.platforms.linux;
    mainProgram = "labnode";
  };
}
