# Offline check of labnode.gpu's unfree policy (no nixpkgs needed): the module's own list
# and predicate, with its own default, against the packages the nixos-26.05 NVIDIA module
# puts in the closure of a Pascal host (closed kernel modules, no nvidia-settings), named as
# nixpkgs names them. nixpkgs' check-meta asks the predicate with lib.getName: pname when
# the package has one, else the name without its version.
# Sources (docs/nixos/release-audit-26.05.md): pkgs/os-specific/linux/nvidia-x11/generic.nix
# (`name = "nvidia-x11-${version}-${kernel.version}"`, unfreeRedistributable),
# kernel-modules.nix (pname "nvidia-kernel-modules" when open = false, the driver's unfree
# license; "nvidia-open" is free), persistenced.nix, settings.nix.
# Prints a JSON list of problems (empty when clean).
# Run: nix-instantiate --eval --strict --json tests/nix/unfree.nix
let
  inherit (builtins) concatLists filter map parseDrvName;

  # What 26.05 builds for labnode.gpu's settings, unfree or not.
  driverPackages = [
    {name = "nvidia-x11-580.95.05-6.12.41";}
    {
      pname = "nvidia-kernel-modules";
      version = "580.95.05-6.12.41";
    }
    {
      pname = "nvidia-persistenced";
      version = "580.95.05";
    }
  ];
  # Unfree packages the policy must still refuse.
  refused = [
    {
      pname = "steam";
      version = "1.0";
    }
    {name = "nvidia-dc-580.95.05-6.12.41";}
    {
      pname = "cuda_nvcc";
      version = "12.8";
    }
  ];

  getName = pkg: pkg.pname or (parseDrvName pkg.name).name;
  lib = {
    inherit getName;
    inherit (builtins) elem;
    mkIf = condition: content: {inherit condition content;};
    mkOption = args: args;
    mkEnableOption = _: {default = false;};
    literalExpression = text: text;
    versionOlder = a: b: builtins.compareVersions a b < 0;
    types = {
      package = "package";
      str = "str";
      listOf = _: "list";
    };
  };
  declared = import ../../modules/gpu.nix {
    inherit lib;
    config = {
      labnode.gpu = {
        enable = true;
        package = {version = "580.95.05";};
        unfreePackages = declared.options.labnode.gpu.unfreePackages.default;
      };
      boot.kernelPackages.nvidiaPackages.legacy_580 = {version = "580.95.05";};
    };
  };
  inherit (declared.config.content.nixpkgs) config;
  # check-meta allows a package when its name is in allowUnfreePackages or the predicate
  # says yes; each way must allow the driver alone (a user's predicate may replace ours).
  ways = {
    allowUnfreePackages = pkg: builtins.elem (getName pkg) config.allowUnfreePackages;
    allowUnfreePredicate = config.allowUnfreePredicate;
  };
  check = way: allowed:
    concatLists [
      (map (p: "labnode.gpu (${way}) refuses ${getName p}, which the 26.05 driver needs") (filter (p: !(allowed p)) driverPackages))
      (map (p: "labnode.gpu (${way}) allows ${getName p}, which it should refuse") (filter allowed refused))
    ];
in
  concatLists (map (way: check way ways.${way}) (builtins.attrNames ways))
