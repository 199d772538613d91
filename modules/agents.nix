# labnode.agents: one hardened `labnode serve` service per collector, the configuration
# file generated from options (and checked by `labnode config check` at build time), and
# the flake revision recorded for snapshots.
{
  config,
  lib,
  pkgs,
  ...
}: let
  cfg = config.labnode.agents;
  yaml = pkgs.formats.yaml {};
  enabled = lib.filterAttrs (_: c: c.enable) cfg.collectors;

  rawConfig = yaml.generate "labnode-unchecked.yaml" {
    snapshot_dir = cfg.snapshotDir;
    collectors = lib.mapAttrs (_: c: c.settings // {enabled = c.enable;}) cfg.collectors;
  };
  # A typo in a collector setting fails the build, not the service.
  configFile = pkgs.runCommand "labnode.yaml" {} ''
    ${lib.getExe cfg.package} config check ${rawConfig}
    cp ${rawConfig} $out
  '';

  collectorModule = {name, ...}: {
    options = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Whether to run the ${name} collector as its own service, `labnode-${name}`.";
      };
      port = lib.mkOption {
        type = lib.types.port;
        description = "TCP port the ${name} collector's exporter listens on (at `labnode.agents.listenAddress`).";
      };
      settings = lib.mkOption {
        inherit (yaml) type;
        default = {};
        example = {
          interval = "1s";
          deadline = "1s";
        };
        description = ''
          Settings of the ${name} collector, written under `collectors.${name}` in the
          labnode configuration file (see the README for every key). Checked at build time.
        '';
      };
    };
  };

  hardening = name: {
    DynamicUser = true;
    StateDirectory = "labnode";
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateUsers = name != "gpu";
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    RestrictAddressFamilies = ["AF_INET" "AF_INET6" "AF_UNIX"];
    SystemCallArchitectures = "native";
    SystemCallFilter = ["@system-service" "~@privileged" "~@resources"];
    UMask = "0077";
  };

  # Only the GPU collector sees devices, and only NVIDIA's.
  devices = name:
    if name == "gpu"
    then {
      PrivateDevices = false;
      DevicePolicy = "closed";
      DeviceAllow = ["char-nvidia-frontend rw" "char-nvidia-uvm rw" "char-nvidia-caps r"];
    }
    else {PrivateDevices = true;};

  # The net collector reads kernel WireGuard devices over generic netlink, which asks for
  # CAP_NET_ADMIN in the host's user namespace; nothing else gets a capability.
  netlink = name:
    lib.optionalAttrs (name == "net") {
      PrivateUsers = false;
      CapabilityBoundingSet = ["CAP_NET_ADMIN"];
      AmbientCapabilities = ["CAP_NET_ADMIN"];
      RestrictAddressFamilies = ["AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK"];
    };
in {
  options.labnode.agents = {
    enable = lib.mkEnableOption "the labnode agents: one hardened Prometheus exporter service per collector";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The labnode package (the flake's `packages.<system>.labnode`).";
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      description = "Address every collector's exporter binds to: loopback, or the WireGuard address for a remote Prometheus.";
    };

    snapshotDir = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/labnode/snapshots";
      description = "Where `labnode collect` writes snapshots by default.";
    };

    flakeRevision = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = lib.literalExpression "self.rev or self.dirtyRev or null";
      description = "The flake revision this system was built from; recorded in snapshots and in `labnode_system_nixos_system_info`.";
    };

    collectors = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule collectorModule);
      default = {};
      example = lib.literalExpression ''
        {
          system.port = 9466;
          gpu = { port = 9467; settings.interval = "1s"; };
        }
      '';
      description = "The collectors to run, by name (`system`, `gpu`, `net`), each as its own service.";
    };

    configFile = lib.mkOption {
      type = lib.types.path;
      readOnly = true;
      default = configFile;
      defaultText = lib.literalMD "the checked file generated from these options";
      description = "The generated labnode configuration file, also at `/etc/labnode/config.yaml`.";
    };
  };

  config = lib.mkIf cfg.enable {
    labnode.agents.collectors.system.port = lib.mkDefault 9466;

    environment.systemPackages = [cfg.package];
    environment.etc =
      {"labnode/config.yaml".source = configFile;}
      // lib.optionalAttrs (cfg.flakeRevision != null) {
        "labnode/flake-revision".text = cfg.flakeRevision + "\n";
      };

    systemd.services =
      lib.mapAttrs' (
        name: c:
          lib.nameValuePair "labnode-${name}" {
            description = "labnode ${name} collector (Prometheus exporter)";
            wantedBy = ["multi-user.target"];
            after = ["network.target"];
            serviceConfig =
              hardening name
              // devices name
              // netlink name
              // {
                ExecStart = lib.escapeShellArgs [
                  (lib.getExe cfg.package)
                  "serve"
                  "--config"
                  "${configFile}"
                  "--collector"
                  name
                  "--listen"
                  "${cfg.listenAddress}:${toString c.port}"
                ];
                Restart = "on-failure";
                RestartSec = "5s";
              };
          }
      )
      enabled;
  };
}
