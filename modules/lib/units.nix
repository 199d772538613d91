# The systemd settings of labnode's collector units: what every collector gets (no
# privileges, a read-only system, no devices, bounded descriptors, threads, memory and
# network) and what each collector needs beyond that, with why. Plain attribute sets, so
# tests/nix/unit-security renders them into unit files and scores them offline with
# `systemd-analyze security`; modules/agents.nix merges them into each service.
{
  # What every collector service gets: no privileges, a read-only system, no devices.
  hardening = {
    DynamicUser = true;
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateUsers = true;
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
    # A filtered call fails with EPERM (a library can fall back) instead of killing the agent.
    SystemCallErrorNumber = "EPERM";
    UMask = "0077";
    # Reads the snapshot store (root:labnode 2750).
    SupplementaryGroups = ["labnode"];
    # Limits. Descriptors: above the default connection cap (512) with room for the
    # collector's own files; the unit sets it, as setrlimit is in the filtered @resources.
    LimitNOFILE = 8192;
    # Threads: the runtime's one, at most 16 blocking collector runs, the background
    # snapshot enumeration and samplers.
    TasksMax = 32;
    # Memory: bench/exporter-footprint measures 10 MiB of RSS under 50 concurrent scrapers;
    # six times that leaves room for larger hosts without letting a leak take the node.
    MemoryMax = "64M";
    # The network: only scrapers, the addresses agents.nix allows (IPAddressAllow).
    IPAddressDeny = "any";
  };

  # What a collector needs beyond that, and why.
  needs = {
    # NVML opens /dev/nvidiactl, /dev/nvidia0..N, /dev/nvidia-uvm and /dev/nvidia-caps/*
    # (device groups nvidia-frontend, nvidia-uvm, nvidia-caps, ...) and loads
    # libnvidia-ml from /run/opengl-driver/lib. The driver checks the caller's
    # namespaces, and its library may map code at run time.
    gpu = {
      PrivateDevices = false;
      DevicePolicy = "closed";
      DeviceAllow = ["char-nvidia* rw"];
      PrivateUsers = false;
      MemoryDenyWriteExecute = false;
      # The driver's library and its per-device state are not in the benchmark.
      MemoryMax = "256M";
    };
    # libzfs opens /dev/zfs read-write and reads /proc/self/mounts and /etc/zfs; ZFS hides
    # every dataset from a process in a user namespace it was not delegated to, so no
    # PrivateUsers. Read-only ioctls need no capability.
    zfs = {
      PrivateDevices = false;
      DevicePolicy = "closed";
      DeviceAllow = ["/dev/zfs rw"];
      PrivateUsers = false;
      # libzfs's pool configurations and a large pool's snapshot names (10,000 and more).
      MemoryMax = "256M";
    };
    # WireGuard over generic netlink: WG_CMD_GET_DEVICE needs CAP_NET_ADMIN in the host's
    # user namespace. (The wireguard-go fallback, /var/run/wireguard/<if>.sock, is
    # root-only; on NixOS the kernel implementation is used.)
    net = {
      PrivateUsers = false;
      CapabilityBoundingSet = "CAP_NET_ADMIN";
      AmbientCapabilities = "CAP_NET_ADMIN";
      RestrictAddressFamilies = ["AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK"];
    };
  };
}
