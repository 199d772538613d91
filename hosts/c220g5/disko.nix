# The disks of the c220g5, for disko (nixos-anywhere partitions and formats them at install):
# the SSD holds the boot partitions and the system pool `rpool`, the HDD the data pool
# `tank` (bulk data and the replicas of rpool's snapshots). The pools and datasets
# themselves are declared by labnode.zfs in ./default.nix.
#
# The disks are named in ./operator.nix by their stable /dev/disk/by-id/ names (the order of
# /dev/sdX is not fixed from boot to boot; both disks are erased). Evaluation stops while
# either is unset, names something other than a whole disk under /dev/disk/by-id/, or both
# are the same disk.
{
  config,
  lib,
  ...
}: let
  operator = import ./operator.nix;
  unset = role: "/dev/disk/by-id/UNSET-${role}";
  device = role:
    if operator.disks.${role} or null == null
    then unset role
    else operator.disks.${role};
  devices = config.disko.devices.disk;
  wholeDisk = path: builtins.match "/dev/disk/by-id/[^/]+" path != null && builtins.match ".*-part[0-9]+" path == null;
in {
  assertions =
    map (role: {
      assertion = devices.${role}.device != unset role && wholeDisk devices.${role}.device;
      message = ''
        disko.devices.disk.${role}.device is ${devices.${role}.device}: set disks.${role} in
        hosts/${config.networking.hostName}/operator.nix to the ${role}'s whole-disk name under
        /dev/disk/by-id/ (on the node: `lsblk -d -o NAME,ROTA,SIZE,MODEL,SERIAL`, ROTA 0 is
        the SSD; then `ls -l /dev/disk/by-id/` for the name pointing at it, not a -partN one).
      '';
    }) ["ssd" "hdd"]
    ++ [
      {
        assertion = devices.ssd.device != devices.hdd.device;
        message = "disko.devices.disk: ssd and hdd are the same device (${devices.ssd.device}).";
      }
    ];

  disko.devices.disk = {
    ssd = {
      type = "disk";
      device = lib.mkDefault (device "ssd");
      content = {
        type = "gpt";
        partitions = {
          # GRUB's core image for legacy BIOS boot.
          bios = {
            size = "1M";
            type = "EF02";
          };
          esp = {
            size = "1G";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot";
              mountOptions = ["umask=0077"];
            };
          };
          zfs = {
            size = "100%";
            content = {
              type = "zfs";
              pool = "rpool";
            };
          };
        };
      };
    };
    hdd = {
      type = "disk";
      device = lib.mkDefault (device "hdd");
      content = {
        type = "gpt";
        partitions.zfs = {
          size = "100%";
          content = {
            type = "zfs";
            pool = "tank";
          };
        };
      };
    };
  };
}
