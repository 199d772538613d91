# The disks of the c220g5, for disko (nixos-anywhere partitions and formats them at install):
# the SSD holds the boot partitions and the system pool `rpool`, the HDD the data pool
# `tank` (bulk data and the replicas of rpool's snapshots). The pools and datasets
# themselves are declared by labnode.zfs in ./default.nix.
#
# CHECK BEFORE INSTALLING: which device is which. On the CloudLab image run
#   lsblk -d -o NAME,ROTA,SIZE,MODEL     (ROTA 0 = the SSD)
#   ls -l /dev/disk/by-id/               (stable names; prefer them)
# and set `ssd` and `hdd` below. Both disks are erased.
let
  ssd = "/dev/sda";
  hdd = "/dev/sdb";
in {
  disko.devices.disk = {
    ssd = {
      type = "disk";
      device = ssd;
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
      device = hdd;
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
