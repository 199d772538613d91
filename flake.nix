{
  description = "labnode: a declarative NixOS research node (CloudLab c220g5, Tesla P4), measured before and after";

  inputs = {
    # The newest stable release as of 2026-11 (26.11 is not out yet).
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    disko = {
      # disko's README recommends its `latest` branch (the newest release).
      url = "github:nix-community/disko/latest";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = {
    self,
    nixpkgs,
    sops-nix,
    disko,
  }: let
    system = "x86_64-linux";
    pkgs = nixpkgs.legacyPackages.${system};
    inherit (nixpkgs) lib;

    # hosts/ is the inventory: every directory with a node.nix is a node.
    inventory = import ./hosts;

    # One module per concern; each only declares `labnode.<concern>` and acts when enabled.
    concernModules = {
      base = ./modules/base.nix;
      inventory = ./modules/inventory.nix;
      # Wrappers carry a key, so importing one twice (`default` and the concern) is harmless.
      zfs = {
        key = "labnode#nixosModules.zfs";
        imports = [disko.nixosModules.disko ./modules/zfs.nix];
      };
      wireguard = ./modules/wireguard.nix;
      network-tuning = ./modules/network-tuning.nix;
      monitoring = ./modules/monitoring;
      gpu = ./modules/gpu.nix;
      agents = {
        key = "labnode#nixosModules.agents";
        imports = [
          ./modules/agents.nix
          ({
            lib,
            pkgs,
            ...
          }: {
            labnode.agents.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.labnode;
            labnode.agents.flakeRevision = lib.mkDefault (self.rev or self.dirtyRev or null);
          })
        ];
      };
      secrets = {
        key = "labnode#nixosModules.secrets";
        imports = [sops-nix.nixosModules.sops ./modules/secrets.nix];
      };
    };

    # A node of the inventory as a NixOS system: every labnode module, the inventory, the host.
    mkHost = name:
      lib.nixosSystem {
        modules = [
          self.nixosModules.default
          {labnode.inventory.nodes = inventory;}
          ./hosts/${name}
        ];
      };

    vmTest = file: pkgs.testers.runNixOSTest (import file {inherit self lib;});

    # The Nix style checker tests/run uses offline: the alejandra 3.1.0 library behind a
    # small CLI. The flake checks and formats with the same one, so a newer alejandra in
    # nixpkgs cannot disagree with the offline check.
    alejandraCheck = pkgs.rustPlatform.buildRustPackage {
      pname = "alejandra-check";
      version = "3.1.0";
      src = ./tools/alejandra-check;
      cargoLock.lockFile = ./tools/alejandra-check/Cargo.lock;
      meta.mainProgram = "alejandra-check";
    };
    nixFormatter = pkgs.writeShellScriptBin "labnode-nix-fmt" ''
      exec ${lib.getExe alejandraCheck} --write "$@"
    '';
  in {
    packages.${system} = {
      labnode = pkgs.callPackage ./agents/package.nix {};
      default = self.packages.${system}.labnode;
    };

    nixosModules =
      concernModules
      // {
        default = {imports = lib.attrValues concernModules;};
      };

    nixosConfigurations = lib.mapAttrs (name: _: mkHost name) inventory;

    checks.${system} = {
      labnode = self.packages.${system}.labnode;
      format = pkgs.runCommand "labnode-format-check" {} ''
        ${lib.getExe alejandraCheck} --check ${self} && touch $out
      '';
      lint = pkgs.runCommand "labnode-deadnix" {nativeBuildInputs = [pkgs.deadnix];} ''
        deadnix --fail ${self} && touch $out
      '';
      rules = pkgs.runCommand "labnode-rules-check" {nativeBuildInputs = [pkgs.prometheus.cli];} ''
        cd ${./modules/monitoring/rules}
        promtool check rules *.yaml
        cd tests && promtool test rules *.yaml
        touch $out
      '';
      # Evaluates the real host (assertions included) without building its closure: the
      # drvPath's string context would make every output of its build closure an input. The
      # operator's SSH key and disk names stand in as test-only values (tests/nixos/common.nix):
      # without them the host refuses to evaluate, as it should for a user who has not set
      # them. The output file holds the drvPath, which CI then builds.
      c220g5-eval = let
        host = self.nixosConfigurations.c220g5.extendModules {modules = [(import ./tests/nixos/common.nix).operatorStandIns];};
      in
        pkgs.writeText "c220g5-toplevel" (builtins.unsafeDiscardStringContext host.config.system.build.toplevel.drvPath);
      vm-zfs = vmTest ./tests/nixos/zfs.nix;
      vm-wireguard = vmTest ./tests/nixos/wireguard.nix;
      vm-monitoring = vmTest ./tests/nixos/monitoring.nix;
      vm-network-tuning = vmTest ./tests/nixos/network-tuning.nix;
      vm-rollback = vmTest ./tests/nixos/rollback.nix;
      vm-rollback-cli = vmTest ./tests/nixos/rollback-cli.nix;
      vm-host = vmTest ./tests/nixos/host.nix;
    };

    formatter.${system} = nixFormatter;

    devShells.${system}.default = pkgs.mkShell {
      inputsFrom = [self.packages.${system}.labnode];
      packages = with pkgs; [
        age
        # alejandra-check --check . (what CI runs) and labnode-nix-fmt (nix fmt).
        alejandraCheck
        nixFormatter
        clippy
        deadnix
        jq
        nixos-anywhere
        prometheus
        # promtool: nixpkgs moves it to the `cli` output (the rules check uses it too).
        prometheus.cli
        prometheus-alertmanager
        prometheus-node-exporter
        rustfmt
        sops
        ssh-to-age
        wireguard-tools
      ];
    };
  };
}
