# labnode.base: what every labnode node needs to be managed from the flake and rolled back:
# flakes on, automatic upgrades from the flake (off unless asked), garbage collection that
# keeps enough generations and boot entries for rollbacks, SSH by key only.
{
  config,
  lib,
  ...
}: let
  cfg = config.labnode.base;
in {
  options.labnode.base = {
    enable = lib.mkEnableOption "the labnode base configuration (flakes, upgrades, GC, SSH keys only)";

    sshAuthorizedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.singleLineStr;
      default = [];
      example = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... admin@laptop"];
      description = ''
        SSH public keys allowed to log in as root. Password login is off, so a system on which
        no user has an SSH key cannot be logged into remotely: evaluation stops with an error
        unless `allowNoSshKey` is set.
      '';
    };

    allowNoSshKey = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Whether a system on which no user (root or any other) has an SSH authorized key may
        evaluate. Off by default: on a remote node such a system locks everyone out at its
        first boot. Set it only where another way in exists (a console, a VM test).
      '';
    };

    nftables = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether the firewall runs on nftables (`networking.nftables.enable`, which makes
        `networking.firewall.backend` "nftables"). Its input chain has the policy drop, which
        the net collector reads over netlink as `labnode_net_firewall_default_deny`; with the
        iptables backend the verdict is not measured.
      '';
    };

    bootEntries = lib.mkOption {
      type = lib.types.ints.between 2 1000;
      default = 30;
      description = "How many system generations the boot menu keeps, so an older one can always be booted.";
    };

    gc = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Whether to collect garbage automatically.";
      };
      dates = lib.mkOption {
        type = lib.types.str;
        default = "weekly";
        description = "When garbage collection runs (systemd calendar expression).";
      };
      keepDays = lib.mkOption {
        type = lib.types.ints.positive;
        default = 30;
        description = "Generations younger than this many days are kept (and so can be rolled back to).";
      };
      keepGenerations = lib.mkOption {
        type = lib.types.ints.positive;
        default = 5;
        description = ''
          The newest system generations kept whatever their age, so a node that went
          `keepDays` without a change still has one to roll back to. Honoured when
          `labnode.agents` runs the collection (`labnode gc`, the default with the agents
          on); nixpkgs' `nix-collect-garbage --delete-older-than` alone knows no such floor.
        '';
      };
    };

    autoUpgrade = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether to rebuild from `flake` on a timer (`nixos-upgrade.service`).";
      };
      flake = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "github:OWNER/labnode#c220g5";
        description = "The flake reference to upgrade from (with `#host`).";
      };
      dates = lib.mkOption {
        type = lib.types.str;
        default = "04:40";
        description = "When the upgrade runs (systemd calendar expression).";
      };
      allowReboot = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether to reboot when the kernel, initrd or kernel parameters changed.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        # Any user's keys count (keys or keyFiles), root's from sshAuthorizedKeys included.
        assertion =
          cfg.allowNoSshKey
          || lib.any (u: u.openssh.authorizedKeys.keys != [] || u.openssh.authorizedKeys.keyFiles != [])
          (lib.attrValues config.users.users);
        message = ''
          No user of ${config.networking.hostName} has an SSH authorized key, and password
          login is off: once installed, nobody could log in. Put your public key in
          labnode.base.sshAuthorizedKeys (hosts/<node>/operator.nix), or set
          labnode.base.allowNoSshKey = true where another way in exists.
        '';
      }
      {
        assertion = cfg.bootEntries >= cfg.gc.keepGenerations;
        message = "labnode.base.bootEntries (${toString cfg.bootEntries}) must be at least gc.keepGenerations (${toString cfg.gc.keepGenerations}): every generation kept for a rollback must be bootable.";
      }
      {
        assertion = cfg.autoUpgrade.enable -> cfg.autoUpgrade.flake != null;
        message = "labnode.base.autoUpgrade.enable needs labnode.base.autoUpgrade.flake.";
      }
    ];

    nix.settings.experimental-features = ["nix-command" "flakes"];

    nix.gc = {
      automatic = cfg.gc.enable;
      inherit (cfg.gc) dates;
      options = "--delete-older-than ${toString cfg.gc.keepDays}d";
    };

    # Both loaders' limits: whichever one the host enables applies.
    boot.loader.grub.configurationLimit = cfg.bootEntries;
    boot.loader.systemd-boot.configurationLimit = cfg.bootEntries;

    system.autoUpgrade = {
      inherit (cfg.autoUpgrade) enable flake dates allowReboot;
      flags = ["--print-build-logs"];
    };

    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };
    users.users.root.openssh.authorizedKeys.keys = cfg.sshAuthorizedKeys;

    networking.firewall.enable = true;
    networking.nftables.enable = cfg.nftables;
  };
}
