{
  description = "labnode: a declarative NixOS research node (CloudLab c220g5, Tesla P4), measured before and after";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = {
    self,
    nixpkgs,
    ...
  }: let
    system = "x86_64-linux";
    pkgs = nixpkgs.legacyPackages.${system};
  in {
    packages.${system} = {
      labnode = pkgs.callPackage ./agents/package.nix {};
      default = self.packages.${system}.labnode;
    };

    nixosModules = {
      agents = {
        lib,
        pkgs,
        ...
      }: {
        imports = [./modules/agents.nix];
        labnode.agents.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.labnode;
        labnode.agents.flakeRevision = lib.mkDefault (self.rev or self.dirtyRev or null);
      };
      monitoring = ./modules/monitoring;
      default = {
        imports = [
          self.nixosModules.agents
          self.nixosModules.monitoring
        ];
      };
    };

    checks.${system} = {
      labnode = self.packages.${system}.labnode;
      format = pkgs.runCommand "labnode-format-check" {nativeBuildInputs = [pkgs.alejandra];} ''
        alejandra --check ${self} && touch $out
      '';
      lint = pkgs.runCommand "labnode-deadnix" {nativeBuildInputs = [pkgs.deadnix];} ''
        deadnix --fail ${self} && touch $out
      '';
      rollback-vm = import ./tests/rollback.nix {inherit self pkgs;};
      rules = pkgs.runCommand "labnode-rules-check" {nativeBuildInputs = [pkgs.prometheus.cli];} ''
        cd ${./modules/monitoring/rules}
        promtool check rules *.yaml
        cd tests && promtool test rules *.yaml
        touch $out
      '';
    };

    formatter.${system} = pkgs.alejandra;

    devShells.${system}.default = pkgs.mkShell {
      inputsFrom = [self.packages.${system}.labnode];
      packages = with pkgs; [
        alejandra
        clippy
        deadnix
        jq
        prometheus
        prometheus-alertmanager
        prometheus-node-exporter
        rustfmt
      ];
    };
  };
}
