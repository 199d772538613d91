# CloudLab c220g5 (Cisco UCS C220 M5SX): 2x Intel Xeon Silver 4114 (Skylake-SP, 10 cores
# each), 192 GB RAM, one 480 GB SATA SSD and one 1 TB SAS HDD behind a Cisco 12G SAS
# controller (MegaRAID or HBA firmware: both drivers are in the initrd), a dual-port Intel
# X520 10 GbE NIC (ixgbe, the experiment network) and the onboard Intel i350 1 GbE ports
# (igb, the CloudLab control network), an NVIDIA Tesla P4.
{modulesPath, ...}: {
  imports = [(modulesPath + "/installer/scan/not-detected.nix")];

  nixpkgs.hostPlatform = "x86_64-linux";

  boot.initrd.availableKernelModules = ["ahci" "megaraid_sas" "mpt3sas" "sd_mod" "xhci_pci" "ehci_pci" "usbhid" "usb_storage"];
  boot.kernelModules = ["kvm-intel"];
  hardware.cpu.intel.updateMicrocode = true;
  hardware.enableRedistributableFirmware = true;

  # Whether the c220g5's firmware boots this disk in UEFI or legacy BIOS mode depends on how
  # CloudLab set up the node's boot order, which could not be settled from here. GRUB is
  # installed for both: into the 1 MiB BIOS boot partition (disko adds the SSD to
  # boot.loader.grub.devices because of it) and as the removable EFI loader on the ESP,
  # which needs no NVRAM entry. /boot is the ESP (vfat), so GRUB never reads ZFS.
  boot.loader.grub = {
    enable = true;
    efiSupport = true;
    efiInstallAsRemovable = true;
  };
  boot.loader.efi.canTouchEfiVariables = false;
}
