# The c220g5 node: its hardware and disks, its networks, and which labnode modules are on.
# Values only: every option is declared by a module under modules/.
{
  config,
  lib,
  ...
}: let
  operator = import ./operator.nix;
  agents = config.labnode.agents;
in {
  imports = [
    ./hardware.nix
    ./disko.nix
  ];

  networking.hostName = "c220g5";
  # ZFS refuses to import pools last used by another host id: 8 hex digits, fixed per node.
  networking.hostId = "c2205a7e";
  # The release this node was first installed with; never change it on an installed node.
  system.stateVersion = "26.05";
  time.timeZone = "UTC";

  # CloudLab's control network answers DHCP on whichever port it is wired to (an onboard
  # i350 port on the c220g5, by CloudLab's hardware list), so every Ethernet port asks. The
  # experiment LAN has no DHCP: its port is named by MAC address and gets the address
  # CloudLab assigned (both are in the experiment's manifest).
  networking.useNetworkd = true;
  networking.useDHCP = false;
  systemd.network = {
    wait-online.anyInterface = true;
    networks."10-experiment" = lib.mkIf (operator.experimentInterface != null) {
      matchConfig.MACAddress = operator.experimentInterface.mac;
      address = operator.experimentInterface.addresses;
      linkConfig.RequiredForOnline = "no";
    };
    networks."20-control" = {
      matchConfig.Type = "ether";
      networkConfig.DHCP = "ipv4";
    };
  };

  labnode = {
    base = {
      enable = true;
      inherit (operator) sshAuthorizedKeys;
      autoUpgrade = {
        enable = true;
        inherit (operator) flake;
      };
    };

    secrets = {
      enable = true;
      sopsFile = ../../secrets/c220g5.yaml;
    };

    zfs = {
      enable = true;
      # 192 GB of RAM: leave most of it to experiments, give the ARC up to 32 GiB.
      arcMaxBytes = 32 * 1024 * 1024 * 1024;
      pools = {
        rpool = {
          root = true;
          poolProperties.autotrim = "on";
          datasets = {
            root.mountpoint = "/";
            nix.mountpoint = "/nix";
            var.mountpoint = "/var";
            home = {
              mountpoint = "/home";
              snapshots = "standard";
            };
            # The labnode snapshot store: the measured history of this node.
            labnode = {
              mountpoint = "/var/lib/labnode";
              snapshots = "standard";
            };
          };
        };
        tank.datasets = {
          data = {
            mountpoint = "/tank/data";
            snapshots = "standard";
          };
          # syncoid's copies of rpool's protected datasets; their RPO is watched too.
          replicas.protected = true;
          # Scratch space for `labnode drill zfs` (it may destroy what is in it).
          scratch = {
            mountpoint = "/tank/scratch";
            properties."labnode:scratch" = "on";
          };
        };
      };
      replication = {
        "rpool/home".target = "tank/replicas/home";
        "rpool/labnode".target = "tank/replicas/labnode";
      };
    };

    wireguard.enable = true;
    network-tuning.enable = true;
    gpu.enable = true;

    # Every collector the node has hardware for. The health gates below decide whether a
    # rollback drill or a safe switch recovered; the weekly drill itself stays opt-in
    # (labnode.agents.rollback.drill.enable).
    agents = {
      enable = true;
      rollback.settings.gates = [
        {systemd_active = ["sshd.service" "wireguard-wg0.service" "prometheus.service" "grafana.service"];}
        {tcp = "127.0.0.1:22";}
        {
          name = "prometheus";
          http.url = "http://127.0.0.1:9090/-/ready";
        }
        {gpu.devices = 1;}
        # Every pool ONLINE, read from the zfs collector's own exporter.
        {
          name = "zfs";
          zfs_pools.metrics = "http://${agents.listenAddress}:${toString agents.collectors.zfs.port}/metrics";
        }
      ];
    };

    monitoring.enable = true;
  };
}
