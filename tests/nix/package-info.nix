# agents/package.nix read offline (no nixpkgs): its source fileset, build inputs and cargo
# flags, as tests/system/nix_sandbox.sh needs them to build and test the package the way
# `nix build` does. Every argument of package.nix is passed as its own name (a string), so
# `buildInputs` lists nixpkgs attribute names; `lib` and `rustPlatform` are stubs that record
# what the package asks of them. A lib function the stub lacks fails here, loudly.
# Run: nix-instantiate --eval --strict --json tests/nix/package-info.nix
let
  package = import ../../agents/package.nix;
  names = builtins.mapAttrs (name: _: name) (builtins.functionArgs package);
  lib = {
    fileset = {
      toSource = {
        root,
        fileset,
      }: {
        root = toString root;
        files = map toString fileset;
      };
      unions = paths: paths;
    };
    licenses = {
      mit = "mit";
      asl20 = "asl20";
    };
    platforms.linux = ["x86_64-linux"];
  };
  rustPlatform = {
    buildRustPackage = attrs: attrs;
    bindgenHook = "bindgenHook";
  };
  drv = package (names // {inherit lib rustPlatform;});
in {
  inherit (drv.src) root files;
  nativeBuildInputs = drv.nativeBuildInputs or [];
  buildInputs = drv.buildInputs or [];
  cargoRoot = drv.cargoRoot or null;
  buildAndTestSubdir = drv.buildAndTestSubdir or null;
  cargoTestFlags = drv.cargoTestFlags or [];
  checkFlags = drv.checkFlags or [];
  # buildRustPackage's default: tests are built and run with the build's profile.
  checkType = drv.checkType or drv.buildType or "release";
  doCheck = drv.doCheck or true;
}
