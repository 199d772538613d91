# labnode.zfs on real ZFS in a VM: a pool created with exactly the properties the module
# gives disko (compression=zstd, atime=off, labnode:protected=on under a snapshot policy),
# sanoid taking snapshots by the module's templates, syncoid replicating them to the
# replica dataset, and labnode's zfs collector reporting the datasets as protected with
# their RPO (newest snapshot age).
{
  self,
  lib,
  ...
}: let
  zfsConfig = {
    pools.tank.datasets = {
      data = {
        mountpoint = "/tank/data";
        snapshots = "standard";
      };
      replicas.protected = true;
    };
    replication."tank/data".target = "tank/replicas/data";
  };
in {
  name = "labnode-zfs";

  nodes.machine = {pkgs, ...}: {
    imports = [self.nixosModules.zfs self.nixosModules.agents];
    labnode.zfs = {enable = true;} // zfsConfig;
    labnode.agents = {
      enable = true;
      # Snapshots enumerated every 10 s instead of every 5 min.
      collectors.zfs.settings = {
        interval = "10s";
        deadline = "10s";
        snapshot_interval = "10s";
      };
    };
    # The pool is created by the test script, not found at boot.
    boot.zfs.extraPools = lib.mkForce [];
    # As in nixpkgs' zfs test: /dev/disk/by-id is not populated in the VM.
    boot.zfs.devNodes = "/dev/disk/by-uuid";
    networking.hostId = "deadbeef";
    virtualisation.emptyDiskImages = [2048];
    environment.systemPackages = [pkgs.curl];
  };

  testScript = {nodes, ...}: let
    pool = nodes.machine.disko.devices.zpool.tank;
    flags = flag: attrs: lib.concatStringsSep " " (lib.mapAttrsToList (n: v: "${flag} ${n}=${v}") attrs);
    createDataset = name: "zfs create ${flags "-o" pool.datasets.${name}.options} tank/${name}";
    syncoidUnits = lib.filter (lib.hasPrefix "syncoid-") (lib.attrNames nodes.machine.systemd.services);
    common = import ./common.nix;
  in ''
    ${common.python}

    machine.wait_for_unit("multi-user.target")

    # The pool and datasets exactly as disko would create them from the module's options.
    machine.succeed(
        "zpool create ${flags "-o" pool.options} ${flags "-O" pool.rootFsOptions} tank /dev/vdb",
        "${createDataset "data"}",
        "${createDataset "replicas"}",
        "mkdir -p /tank/data && mount -t zfs tank/data /tank/data",
    )
    props = machine.succeed("zfs get -H -o property,value compression,atime,labnode:protected tank/data")
    assert "compression\tzstd" in props, props
    assert "atime\toff" in props, props
    assert "labnode:protected\ton" in props, props
    machine.succeed("zfs get -H -o value labnode:protected tank/replicas | grep -qx on")

    # Compressible data (the driver runs every command under `set -o pipefail`, and `yes`
    # dies of SIGPIPE in a pipe, so it writes through a process substitution), then sanoid
    # takes the snapshots of its templates. sanoid and syncoid units are Type=simple:
    # `start --wait` returns when the run has ended, with its result.
    machine.succeed("head -c 20000000 < <(yes labnode) > /tank/data/compressible && sync")
    machine.succeed("systemctl start --wait sanoid.service")
    machine.succeed("zfs list -H -t snapshot -o name tank/data | grep -q '@autosnap_.*_hourly'")
    # The module writes the INI with lib.generators.mkKeyValueDefault: `key=value`, no spaces.
    conf = sanoid_config(machine)
    for line in ["hourly=24", "daily=90", "monthly=12"]:
        assert line in conf, f"{line} not in the config sanoid is given: {conf}"

    # syncoid replicates to the replica dataset, which inherits labnode:protected.
    ${lib.concatMapStrings (u: ''
        machine.succeed("systemctl start --wait ${u}.service")
      '')
      syncoidUnits}
    machine.succeed("zfs list -H -t snapshot -o name tank/replicas/data | grep -q '@autosnap_'")
    machine.succeed("zfs get -H -o value labnode:protected tank/replicas/data | grep -qx on")

    # labnode sees the pool now (it started before the pool existed).
    machine.succeed("systemctl restart labnode-zfs.service")
    machine.wait_for_unit("labnode-zfs.service")

    def for_dataset(name, dataset):
        return [v for (labels, v) in samples(machine, 9468, name)
                if labels.get("pool") == "tank" and labels.get("dataset") in (dataset, dataset.split("/", 1)[1])]

    protected = eventually("tank/data reported protected", lambda: for_dataset("labnode_zfs_dataset_protected", "tank/data"))
    assert protected == [1.0], protected
    replica = eventually("tank/replicas/data reported protected", lambda: for_dataset("labnode_zfs_dataset_protected", "tank/replicas/data"))
    assert replica == [1.0], replica

    # The RPO: the newest snapshot is seconds old, not absent and not a sentinel.
    rpo = eventually("the RPO of tank/data", lambda: for_dataset("labnode_zfs_snapshot_newest_age_seconds", "tank/data"))
    assert 0 <= rpo[0] < 900, rpo
    count = for_dataset("labnode_zfs_snapshots", "tank/data")
    listed = len(machine.succeed("zfs list -H -t snapshot -o name tank/data").split())
    assert count == [float(listed)], f"labnode counts {count}, zfs lists {listed}"
    ratio = for_dataset("labnode_zfs_dataset_compress_ratio", "tank/data")
    assert ratio and ratio[0] > 1.5, ratio

    # The collector runs unprivileged, with /dev/zfs as its only device.
    machine.succeed("systemctl show -p DeviceAllow --value labnode-zfs.service | grep -q '/dev/zfs rw'")
    machine.succeed("systemctl show -p DynamicUser --value labnode-zfs.service | grep -qx yes")
  '';
}
