# labnode.agents: one hardened `labnode serve --collector NAME` service per collector, each
# with only the devices and privileges its collector needs; the configuration file generated
# from options (and checked by `labnode config check` at build time); the rollback drill
# (a weekly timer, off by default), the boot-time safe-switch recovery, and optionally the
# `labnode net serve` probe endpoint.
#
# The snapshot store (`snapshotDir`) is written by root (drills, probes, `labnode collect`)
# and only read by the collectors, which run as dynamic users in the static group
# `labnode`: it is a root:labnode 2750 directory made by tmpfiles (the host's facts are not
# for every local user; new files take its group), not a per-service StateDirectory
# (several DynamicUser units sharing one StateDirectory would fight over its ownership).
{
  config,
  lib,
  pkgs,
  ...
}: let
  cfg = config.labnode.agents;
  yaml = pkgs.formats.yaml {};
  enabled = lib.filterAttrs (_: c: c.enable) cfg.collectors;
  labnode = lib.getExe cfg.package;
  # The WireGuard interface when labnode.wireguard is imported and on (the probe's firewall
  # openings go there only), else null.
  wgInterface =
    if config.labnode.wireguard.enable or false
    then config.labnode.wireguard.interface
    else null;
  # Whether netServe.listen binds every interface (the address parsed, not compared).
  netServeWildcard = (import ./lib/address.nix).isWildcard cfg.netServe.listen;
  # labnode's safe-switch state directory (config.rs DEFAULT_STATE_DIR unless set).
  stateDir = cfg.rollback.settings.state_dir or "/var/lib/labnode/safe-switch";

  rawConfig = yaml.generate "labnode-unchecked.yaml" ({
      snapshot_dir = cfg.snapshotDir;
      collectors = lib.mapAttrs (_: c: c.settings // {enabled = c.enable;}) cfg.collectors;
    }
    // lib.optionalAttrs (cfg.http != {}) {inherit (cfg) http;}
    // lib.optionalAttrs (cfg.rollback.settings != {}) {rollback = cfg.rollback.settings;});
  # A typo in a collector or rollback setting fails the build, not the service.
  configFile = pkgs.runCommand "labnode.yaml" {} ''
    ${labnode} config check ${rawConfig}
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
          interval = "15s";
          deadline = "5s";
        };
        description = ''
          Settings of the ${name} collector, written under `collectors.${name}` in the
          labnode configuration file (docs/configuration.md lists every key). Checked at build time.
        '';
      };
    };
  };

  # What every collector service gets, and what each needs beyond that (modules/lib/units.nix,
  # which tests/nix/unit-security scores offline with systemd-analyze security).
  inherit (import ./lib/units.nix) hardening needs;

  # Every collector labnode knows and its default port: the export of the binary's
  # collector registry (agents/labnode/src/collectors.rs; a cargo test keeps it in step).
  defaultPorts = builtins.mapAttrs (_: c: c.port) (builtins.fromJSON (builtins.readFile ./collectors.json));

  # Runs a command as a transient unit: a drill or a recovery switches the system, and
  # switch-to-configuration stops units that the other generation does not have, which
  # must not include the one doing the switching.
  # With `wait`, the oneshot unit that starts it waits for it and fails with it; without,
  # the oneshot only starts it (the boot recovery, which retries until the host is healthy).
  transientWith = {wait}: unit: args:
    lib.escapeShellArgs ([
        "${config.systemd.package}/bin/systemd-run"
        "--unit=${unit}"
        "--collect"
        "--service-type=oneshot"
        "--property=After=network-online.target"
        "--property=RequiresMountsFor=${stateDir}"
        "--setenv=PATH=${lib.makeBinPath [config.nix.package config.systemd.package pkgs.coreutils]}"
      ]
      ++ (
        if wait
        then [
          "--wait"
          # The oneshot unit that runs this one waits for it: its start job is labnode's own,
          # not an unsettled one (agents/crates/rollback/src/systemd.rs, PARENT_UNIT_ENV).
          "--setenv=LABNODE_PARENT_UNIT=${lib.removeSuffix "-run" unit}.service"
        ]
        # Without it systemd-run waits for a oneshot's start-up, which is the whole run.
        else ["--no-block"]
      )
      ++ ["--" labnode]
      ++ args);
  transient = transientWith {wait = true;};

  # labnode.base's nightly upgrade and garbage collection, when labnode runs them (the
  # base module may not be imported: then there is nothing to take over).
  base = config.labnode.base or {enable = false;};
  guarded = cfg.rollback.guardNodeChanges && base.enable;
  upgrade = guarded && base.autoUpgrade.enable;
  collect = guarded && base.gc.enable;
  # `flake#host`, or the flake and this host's name.
  upgradeFlake = lib.head (lib.splitString "#" base.autoUpgrade.flake);
  upgradeHost = let
    parts = lib.splitString "#" base.autoUpgrade.flake;
  in
    if lib.length parts > 1 && lib.last parts != ""
    then lib.last parts
    else config.networking.hostName;
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

    scrapers = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default =
        ["localhost"]
        ++ lib.optional (wgInterface != null && cfg.listenAddress == config.labnode.wireguard.address)
        "${config.labnode.wireguard.address}/${toString config.labnode.wireguard.prefixLength}";
      defaultText = lib.literalMD "`localhost`, and the WireGuard network when `listenAddress` is this node's WireGuard address";
      example = ["localhost" "10.77.0.0/24"];
      description = ''
        The only addresses the collectors' units exchange packets with (systemd's
        `IPAddressAllow`, every other address denied): the Prometheus servers that scrape them.
      '';
    };

    http = lib.mkOption {
      inherit (yaml) type;
      default = {};
      example = {
        header_timeout = "5s";
        idle_timeout = "60s";
        max_connections = 512;
      };
      description = ''
        What a client may hold of each collector's exporter, written as `http` in the labnode
        configuration file: a whole-header deadline, an idle timeout and a connection cap that
        closes the longest-idle connection first (docs/configuration.md). Checked at build time.
      '';
    };

    snapshotDir = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/labnode/snapshots";
      description = "The snapshot store: drills and `labnode collect` write it (as root), the collectors read it.";
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
      description = ''
        The collectors, by name (`system`, `gpu`, `zfs`, `net`, `rollback`), each run as its
        own service. All five are declared with ports 9466..9470; `system`, `net` and
        `rollback` run by default, `gpu` when the NVIDIA driver is enabled, `zfs` when ZFS is.
      '';
    };

    rollback = {
      settings = lib.mkOption {
        inherit (yaml) type;
        default = {};
        example = {
          profile = "/nix/var/nix/profiles/system";
          gates = [
            {systemd_active = ["sshd.service"];}
            {
              name = "prometheus";
              http.url = "http://127.0.0.1:9090/-/ready";
            }
          ];
        };
        description = ''
          The top-level `rollback:` section of the labnode configuration file: the health
          gates and the system profile that `labnode drill rollback` and `labnode
          safe-switch` use (docs/rollback.md lists its keys). Checked at build time.
        '';
      };

      drill = {
        enable = lib.mkOption {
          type = lib.types.bool;
          default = false;
          description = ''
            Whether to run `labnode drill rollback --yes` on a timer: it switches this host to
            its previous generation, measures the recovery phase by phase, and switches back.
          '';
        };
        schedule = lib.mkOption {
          type = lib.types.str;
          default = "weekly";
          description = "When the rollback drill runs (systemd calendar expression).";
        };
      };

      recoverAtBoot = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Whether to run `labnode safe-switch --recover --retry` at boot, which finishes or
          rolls back a safe switch or drill that the host rebooted in the middle of (found by
          its marker under /var/lib/labnode/safe-switch/), and tries again with backoff until
          the host is healthy on its known-good generation
          (`labnode_rollback_recovery_failed` says while it is not).
        '';
      };

      upgradeBuild = lib.mkOption {
        type = lib.types.str;
        default = "nix build --refresh --print-build-logs --print-out-paths --out-link \"$RUNTIME_DIRECTORY/system\" ${lib.escapeShellArg "${upgradeFlake}#nixosConfigurations.\"${upgradeHost}\".config.system.build.toplevel"}";
        defaultText = lib.literalMD "`nix build` of `labnode.base.autoUpgrade.flake`'s system, rooted in the unit's runtime directory";
        description = ''
          The shell command `labnode-upgrade.service` runs to get the new system: it prints
          the system's store path (and keeps it alive until the switch, for example with an
          out-link under `$RUNTIME_DIRECTORY`). Replace it to fetch a closure your CI built
          instead of building on the node.
        '';
      };

      guardNodeChanges = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Whether `labnode.base`'s nightly upgrade and garbage collection go through labnode.
          The upgrade (`labnode-upgrade.service`, in place of nixpkgs' `nixos-upgrade`)
          builds the flake, then `labnode safe-switch`es to it: the health gates decide, a
          red gate or a crash rolls back, and it waits for a running drill or switch instead
          of racing it. Garbage collection (`labnode-gc.service`, in place of `nix-gc`)
          keeps the newest `labnode.base.gc.keepGenerations` system generations whatever
          their age and an unfinished run's rollback target, under the same lock. Off, both
          are nixpkgs' units, which know nothing of labnode's runs.
        '';
      };
    };

    netServe = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether to run `labnode net serve`, the endpoint other nodes' `labnode net bench` measures against.";
      };
      listen = lib.mkOption {
        type = lib.types.str;
        default = "127.0.0.1:9471";
        example = "10.77.0.1:9471";
        description = "Address and port `labnode net serve` binds (TCP and UDP for QUIC): 127.0.0.1 or the WireGuard address; a wildcard address needs `allowWildcardListen`.";
      };
      allowWildcardListen = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether `listen` may be a wildcard address (0.0.0.0 or ::), which binds every interface; off, evaluation fails on one.";
      };
      allow = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = ["127.0.0.0/8"];
        example = ["10.77.0.0/24"];
        description = "Client networks the probe server accepts (CIDR).";
      };
      tokenFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "File with the token clients must present (labnode.secrets points it at the sops secret).";
      };
      quicPorts = {
        from = lib.mkOption {
          type = lib.types.port;
          default = 9472;
          description = "First UDP port a QUIC test may use (`labnode net serve --quic-ports`).";
        };
        to = lib.mkOption {
          type = lib.types.port;
          default = 9473;
          description = "Last UDP port a QUIC test may use; the range must hold at least as many ports as tests may run at once (2).";
        };
      };
      openFirewall = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether to open the probe's TCP port and its QUIC UDP port range in the firewall, on the WireGuard interface (`labnode.wireguard.interface`) only; needs `labnode.wireguard.enable`.";
      };
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
    assertions = [
      {
        assertion = cfg.netServe.enable -> cfg.netServe.tokenFile != null;
        message = "labnode.agents.netServe needs tokenFile (labnode.secrets provides it from sops).";
      }
      {
        # net serve runs at most 2 tests at once, each on its own UDP port.
        assertion = cfg.netServe.enable -> cfg.netServe.quicPorts.to - cfg.netServe.quicPorts.from >= 1;
        message = "labnode.agents.netServe.quicPorts must hold at least 2 ports (from < to).";
      }
      {
        assertion = cfg.netServe.enable -> (cfg.netServe.allowWildcardListen || !netServeWildcard);
        message = "labnode.agents.netServe.listen = ${cfg.netServe.listen} binds every interface; use 127.0.0.1 or the WireGuard address, or set allowWildcardListen.";
      }
      {
        assertion = cfg.netServe.enable && cfg.netServe.openFirewall -> wgInterface != null;
        message = "labnode.agents.netServe.openFirewall opens the probe's ports on the WireGuard interface only: enable labnode.wireguard (modules/wireguard.nix).";
      }
    ];

    labnode.agents.collectors =
      lib.mapAttrs (name: port: {
        port = lib.mkDefault port;
        enable = lib.mkDefault (
          if name == "gpu"
          then lib.elem "nvidia" config.services.xserver.videoDrivers
          else if name == "zfs"
          then config.boot.supportedFilesystems.zfs or false
          else true
        );
      })
      defaultPorts;

    environment.systemPackages = [cfg.package];
    environment.etc =
      {"labnode/config.yaml".source = configFile;}
      // lib.optionalAttrs (cfg.flakeRevision != null) {
        "labnode/flake-revision".text = cfg.flakeRevision + "\n";
      };

    systemd.tmpfiles.rules = [
      "d /var/lib/labnode 0755 root root -"
      "d ${cfg.snapshotDir} 2750 root labnode -"
    ];
    # Readers of the snapshot store: the collectors (SupplementaryGroups) and the users an
    # administrator adds, for `labnode report --store`.
    users.groups.labnode = {};

    systemd.services =
      lib.mapAttrs' (
        name: c:
          lib.nameValuePair "labnode-${name}" {
            description = "labnode ${name} collector (Prometheus exporter)";
            wantedBy = ["multi-user.target"];
            # The zfs collector reports pools, so it starts once they are imported.
            after =
              ["network.target" "systemd-tmpfiles-setup.service"]
              ++ lib.optional (name == "zfs") "zfs-import.target";
            serviceConfig =
              hardening
              // needs.${name} or {}
              // {
                ExecStart = lib.escapeShellArgs [
                  labnode
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
                IPAddressAllow = cfg.scrapers;
              };
          }
      )
      enabled
      // lib.optionalAttrs cfg.rollback.drill.enable {
        labnode-drill-rollback = {
          description = "labnode rollback drill: switch to the previous generation and back, timing the recovery";
          after = ["multi-user.target"];
          restartIfChanged = false;
          serviceConfig = {
            Type = "oneshot";
            TimeoutStartSec = "infinity";
          };
          script = transient "labnode-drill-rollback-run" ["drill" "rollback" "--yes" "--config" "${configFile}"];
        };
      }
      // lib.optionalAttrs cfg.rollback.recoverAtBoot {
        labnode-safe-switch-recover = {
          description = "labnode safe-switch: finish or roll back a switch interrupted by a reboot";
          wantedBy = ["multi-user.target"];
          after = ["multi-user.target"];
          restartIfChanged = false;
          # Only while a marker exists: state.rs MARKER_FILE, "pending.json" (a test in
          # state.rs checks this line). The directory is never empty: the lock file stays.
          unitConfig.ConditionPathExists = "${stateDir}/pending.json";
          unitConfig.RequiresMountsFor = [stateDir];
          serviceConfig.Type = "oneshot";
          # The run retries until the host is healthy; this unit only starts it, so boot
          # and later switches never wait on a recovery that keeps failing.
          script = transientWith {wait = false;} "labnode-safe-switch-recover-run" ["safe-switch" "--recover" "--retry" "--config" "${configFile}"];
        };
      }
      // lib.optionalAttrs upgrade {
        labnode-upgrade = {
          description = "labnode nightly upgrade: build the flake, then safe-switch to it (health gates, rollback)";
          after = ["network-online.target"];
          wants = ["network-online.target"];
          restartIfChanged = false;
          unitConfig.X-StopOnRemoval = false;
          startAt = base.autoUpgrade.dates;
          environment = {HOME = "/root";} // config.networking.proxy.envVars;
          # What nixpkgs' nixos-upgrade has: fetching a git+ssh flake needs ssh.
          path = [config.nix.package pkgs.gitMinimal config.programs.ssh.package pkgs.coreutils pkgs.gnutar pkgs.gzip pkgs.xz];
          serviceConfig = {
            Type = "oneshot";
            TimeoutStartSec = "infinity";
            # The built system's GC root until the switch has put it in the profile.
            RuntimeDirectory = "labnode-upgrade";
          };
          script = ''
            set -euo pipefail
            to=$(${cfg.rollback.upgradeBuild})
            if [ "$to" = "$(readlink -f /nix/var/nix/profiles/system)" ] \
              && [ "$to" = "$(readlink -f /run/current-system)" ]; then
              echo "already running $to"
              exit 0
            fi
            ${transient "labnode-upgrade-run" ["safe-switch" "--lock-wait" "1h" "--label" "nightly-upgrade" "--config" "${configFile}"]} --to "$to"
            ${lib.optionalString base.autoUpgrade.allowReboot ''
              # Confirmed healthy on the new system; a new kernel only runs after a reboot.
              booted=$(readlink /run/booted-system/{initrd,kernel,kernel-modules})
              built=$(readlink /run/current-system/{initrd,kernel,kernel-modules})
              if [ "$booted" != "$built" ]; then
                ${config.systemd.package}/bin/shutdown -r +1
              fi
            ''}
          '';
        };
      }
      // lib.optionalAttrs collect {
        labnode-gc = {
          description = "labnode garbage collection: old generations, never a rollback target";
          restartIfChanged = false;
          startAt = base.gc.dates;
          path = [config.nix.package];
          serviceConfig = {
            Type = "oneshot";
            ExecStart = lib.escapeShellArgs [
              labnode
              "gc"
              "--keep-generations"
              (toString base.gc.keepGenerations)
              "--delete-older-than"
              "${toString base.gc.keepDays}d"
              "--lock-wait"
              "6h"
              "--config"
              "${configFile}"
            ];
          };
        };
      }
      // lib.optionalAttrs cfg.netServe.enable {
        labnode-net-serve = {
          description = "labnode net serve: the throughput probe endpoint (token and allowlist required)";
          wantedBy = ["multi-user.target"];
          after = ["network-online.target"];
          wants = ["network-online.target"];
          serviceConfig =
            hardening
            // {
              # The network-facing probe has no business with the snapshot store.
              SupplementaryGroups = [];
              # Only the clients it accepts; socket buffers of two tests at once; a thread per
              # connection (at most max-tests x (max-streams + 1) + 16 = 50 by default).
              IPAddressAllow = ["localhost"] ++ cfg.netServe.allow;
              MemoryMax = "256M";
              TasksMax = 128;
              LoadCredential = ["token:${toString cfg.netServe.tokenFile}"];
              # The QUIC certificate, so its fingerprint (what clients pin) survives restarts:
              # sha256sum /var/lib/labnode-net-serve/cert.der, or the unit's "fingerprint" line.
              StateDirectory = "labnode-net-serve";
              StateDirectoryMode = "0700";
              ExecStart = lib.escapeShellArgs [
                labnode
                "net"
                "serve"
                "--listen"
                cfg.netServe.listen
                "--allow"
                (lib.concatStringsSep "," cfg.netServe.allow)
                "--token-file"
                "%d/token"
                "--identity"
                "%S/labnode-net-serve"
                "--quic-ports"
                "${toString cfg.netServe.quicPorts.from}-${toString cfg.netServe.quicPorts.to}"
              ];
              Restart = "on-failure";
              RestartSec = "5s";
            };
        };
      };

    systemd.timers =
      lib.optionalAttrs cfg.rollback.drill.enable {
        labnode-drill-rollback = {
          description = "Run the labnode rollback drill";
          wantedBy = ["timers.target"];
          timerConfig = {
            OnCalendar = cfg.rollback.drill.schedule;
            RandomizedDelaySec = "1h";
            Persistent = true;
          };
        };
      }
      # The schedule's other settings as the user set them for nixpkgs' units.
      // lib.optionalAttrs upgrade {
        labnode-upgrade.timerConfig = {
          RandomizedDelaySec = config.system.autoUpgrade.randomizedDelaySec;
          FixedRandomDelay = config.system.autoUpgrade.fixedRandomDelay or false;
          Persistent = config.system.autoUpgrade.persistent or true;
        };
      }
      // lib.optionalAttrs collect {
        labnode-gc.timerConfig = {
          RandomizedDelaySec = config.nix.gc.randomizedDelaySec;
          Persistent = config.nix.gc.persistent;
        };
      };

    # labnode's units above take these over; nixpkgs' would race a safe switch or drill.
    system.autoUpgrade.enable = lib.mkIf upgrade (lib.mkForce false);
    nix.gc.automatic = lib.mkIf collect (lib.mkForce false);

    # Only on the WireGuard interface: nothing opens to the world but SSH and WireGuard.
    networking.firewall.interfaces = lib.mkIf (cfg.netServe.enable && cfg.netServe.openFirewall && wgInterface != null) {
      ${wgInterface} = {
        allowedTCPPorts = [(lib.toInt (lib.last (lib.splitString ":" cfg.netServe.listen)))];
        allowedUDPPortRanges = [{inherit (cfg.netServe.quicPorts) from to;}];
      };
    };
  };
}
