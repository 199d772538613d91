# labnode.gpu: the NVIDIA driver for the Tesla P4 (Pascal, GP104). Drivers 590 and newer
# dropped Pascal, so the default is the 580 legacy branch (NVIDIA's LTSB, supported until
# Aug 2028), with the closed kernel modules (the open ones need Turing or newer), the
# persistence daemon (keeps the headless GPU initialised between NVML calls), and
# /run/opengl-driver (libnvidia-ml for the labnode gpu collector). Datacenter mode is NOT
# used: it starts fabricmanager, which fails without NVSwitch.
{
  config,
  lib,
  ...
}: let
  cfg = config.labnode.gpu;
in {
  options.labnode.gpu = {
    enable = lib.mkEnableOption "the NVIDIA driver for a Pascal GPU (Tesla P4)";

    package = lib.mkOption {
      type = lib.types.package;
      default = config.boot.kernelPackages.nvidiaPackages.legacy_580;
      defaultText = lib.literalExpression "config.boot.kernelPackages.nvidiaPackages.legacy_580";
      description = "The driver; it must be older than 590 for Pascal.";
    };

    unfreePackages = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      # nixos-26.05 builds the closed kernel modules as their own package,
      # nvidia-kernel-modules (tests/nix/unfree.nix checks the list against 26.05's names).
      default = ["nvidia-x11" "nvidia-kernel-modules" "nvidia-settings" "nvidia-persistenced"];
      description = "The unfree packages allowed, by `lib.getName`, and no other.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.versionOlder cfg.package.version "590";
        message = "labnode.gpu.package is NVIDIA ${cfg.package.version}: drivers 590 and newer do not support Pascal (Tesla P4). Use nvidiaPackages.legacy_580.";
      }
    ];

    # Both ways nixpkgs allows unfree packages: the list, which NixOS merges across modules
    # (so a user's own list adds to it), and the predicate for releases that read only that
    # (a predicate is not merged: the last definition wins).
    nixpkgs.config.allowUnfreePackages = cfg.unfreePackages;
    nixpkgs.config.allowUnfreePredicate = pkg: lib.elem (lib.getName pkg) cfg.unfreePackages;

    # Loads the nvidia module set; this does not enable X (services.xserver.enable stays off).
    services.xserver.videoDrivers = ["nvidia"];
    hardware.graphics.enable = true;
    hardware.nvidia = {
      inherit (cfg) package;
      open = false;
      nvidiaPersistenced = true;
      nvidiaSettings = false;
      datacenter.enable = false;
    };
  };
}
