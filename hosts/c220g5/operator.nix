# What only the operator of this node knows. Edit before the first install
# (docs/nixos/deploy.md).
{
  # Public keys allowed to log in as root over SSH (password login is off). Evaluation stops
  # while no user has a key: the first boot would lock everyone out.
  sshAuthorizedKeys = [
    # "ssh-ed25519 AAAA... you@laptop"
  ];
  # The node's two disks by their stable names (both are erased at install). On the node, in
  # CloudLab's image: `lsblk -d -o NAME,ROTA,SIZE,MODEL,SERIAL` (ROTA 0 is the SSD), then
  # `ls -l /dev/disk/by-id/` for the name that points at each (`ata-...` for the SATA SSD,
  # `scsi-...` or `wwn-...` for the SAS HDD; the whole disk, not a `-partN`).
  disks = {
    ssd = null; # e.g. "/dev/disk/by-id/ata-INTEL_SSDSC2BB480G7_PHDV0000000000000"
    hdd = null; # e.g. "/dev/disk/by-id/scsi-35000c50000000000"
  };
  # The flake the node upgrades itself from every night (system.autoUpgrade).
  flake = "github:labnode/labnode#c220g5";
  # The port CloudLab wired into the experiment LAN and the address it assigned: the
  # `mac_address` and the `ip` of this node's <interface> in the experiment's manifest.
  # null: no experiment network (the control network still comes up by DHCP).
  experimentInterface = null;
  # experimentInterface = {
  #   mac = "3c:fd:fe:00:00:01";
  #   addresses = ["10.10.1.1/24"];
  # };
}
