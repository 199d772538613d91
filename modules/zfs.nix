# labnode.zfs: ZFS pools and datasets (created by disko) with compression=zstd and
# atime=off, snapshot retention by sanoid templates, replication between pools by syncoid,
# a monthly scrub, TRIM and an ARC ceiling.
#
# Datasets under a snapshot policy carry the user property `labnode:protected=on`, so the
# labnode zfs collector exports `labnode_zfs_dataset_protected` = 1 for them and the RPO
# alert applies. Needs disko's NixOS module (the flake's `nixosModules.zfs` imports it).
{
  config,
  lib,
  options,
  ...
}: let
  cfg = config.labnode.zfs;

  datasetModule = {config, ...}: {
    options = {
      mountpoint = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/srv/data";
        description = "Where the dataset is mounted; null: not mounted (a container for children).";
      };
      snapshots = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "standard";
        description = ''
          The `labnode.zfs.snapshotTemplates` entry sanoid applies to this dataset (and its
          children); null: no snapshots. A dataset with a template is marked
          `labnode:protected=on`.
        '';
      };
      protected = lib.mkOption {
        type = lib.types.bool;
        default = config.snapshots != null;
        defaultText = lib.literalExpression "snapshots != null";
        description = ''
          Whether the dataset (and, by inheritance, its children) carries
          `labnode:protected=on`: RPO alerting applies. On by default under a snapshot
          template; set it on a replica parent so received copies are watched too.
        '';
      };
      properties = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = {};
        example = {recordsize = "1M";};
        description = "Extra ZFS properties set when the dataset is created.";
      };
    };
  };

  poolModule = {
    options = {
      mode = lib.mkOption {
        type = lib.types.str;
        default = "";
        example = "mirror";
        description = "The vdev layout disko creates (`\"\"` for a single device, `mirror`, `raidz`, ...).";
      };
      root = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether the pool holds `/` (imported in the initrd; every other pool is imported at boot by name).";
      };
      poolProperties = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = {};
        description = "Pool properties (`zpool create -o`), added to ashift=12.";
      };
      properties = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = {};
        description = "Properties of the pool's root dataset (`zpool create -O`), added to labnode's defaults.";
      };
      datasets = lib.mkOption {
        type = lib.types.attrsOf (lib.types.submodule datasetModule);
        default = {};
        description = "The pool's datasets, by path below the pool.";
      };
    };
  };

  templateModule = {
    options = {
      hourly = lib.mkOption {
        type = lib.types.ints.unsigned;
        description = "Hourly snapshots kept.";
      };
      daily = lib.mkOption {
        type = lib.types.ints.unsigned;
        description = "Daily snapshots kept.";
      };
      monthly = lib.mkOption {
        type = lib.types.ints.unsigned;
        description = "Monthly snapshots kept.";
      };
      yearly = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 0;
        description = "Yearly snapshots kept.";
      };
      autosnap = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Whether sanoid takes snapshots (false for replicas, whose snapshots arrive by syncoid).";
      };
    };
  };

  replicationModule = {name, ...}: {
    options = {
      source = lib.mkOption {
        type = lib.types.str;
        default = name;
        description = "The dataset to replicate (`pool/dataset`).";
      };
      target = lib.mkOption {
        type = lib.types.str;
        example = "tank/replicas/home";
        description = "Where it is received (`pool/dataset`, or `user@host:pool/dataset`).";
      };
      recursive = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Whether child datasets are replicated too.";
      };
    };
  };

  # Every dataset of every pool as { pool; name; value }.
  allDatasets = lib.concatLists (lib.mapAttrsToList (pool: p:
    lib.mapAttrsToList (name: value: {inherit pool name value;}) p.datasets)
  cfg.pools);
  replicaParents = lib.unique (map (r: dirOf r.target) (lib.filter (r: !(lib.hasInfix ":" r.target)) (lib.attrValues cfg.replication)));
  snapshotted = lib.filter (d: d.value.snapshots != null) allDatasets;

  # Mounted datasets use mountpoint=legacy, mounted by NixOS from fileSystems (which disko
  # generates); the others are not mounted at all.
  diskoDataset = d: {
    type = "zfs_fs";
    options =
      {
        mountpoint =
          if d.value.mountpoint == null
          then "none"
          else "legacy";
      }
      // lib.optionalAttrs d.value.protected {"labnode:protected" = "on";}
      // d.value.properties;
    inherit (d.value) mountpoint;
  };
in {
  options.labnode.zfs = {
    enable = lib.mkEnableOption "ZFS with labnode's pools, snapshot retention, replication, scrub and TRIM";

    pools = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule poolModule);
      default = {};
      description = ''
        ZFS pools by name, created by disko on the devices whose partitions name them
        (`content = { type = "zfs"; pool = NAME; }` in the host's disko layout).
      '';
    };

    snapshotTemplates = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule templateModule);
      default = {
        standard = {
          hourly = 24;
          daily = 90;
          monthly = 12;
        };
        replica = {
          hourly = 24;
          daily = 90;
          monthly = 12;
          autosnap = false;
        };
      };
      description = ''
        Sanoid retention templates. `standard`: hourly snapshots, 24 hourly, 90 daily and
        12 monthly kept (a one-hour RPO, 90 days of dailies, a year of monthlies).
        `replica`: the same retention for received copies, which sanoid prunes but does not
        snapshot.
      '';
    };

    replication = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule replicationModule);
      default = {};
      example = {"rpool/home".target = "tank/replicas/home";};
      description = ''
        syncoid replications (hourly), by source dataset. Local targets are pruned with the
        `replica` template below their parent dataset, so put them under a container dataset
        (e.g. `tank/replicas`) that exists in `pools`.
      '';
    };

    scrubInterval = lib.mkOption {
      type = lib.types.str;
      default = "monthly";
      description = "How often every pool is scrubbed (systemd calendar expression).";
    };

    trimInterval = lib.mkOption {
      type = lib.types.str;
      default = "weekly";
      description = "How often pools are TRIMmed (systemd calendar expression).";
    };

    arcMaxBytes = lib.mkOption {
      type = lib.types.nullOr lib.types.ints.positive;
      default = null;
      example = 16 * 1024 * 1024 * 1024;
      description = "Upper bound of the ARC (`zfs.zfs_arc_max`); null: ZFS's default (half of RAM).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      map (d: {
        assertion = cfg.snapshotTemplates ? ${d.value.snapshots};
        message = "labnode.zfs.pools.${d.pool}.datasets.${d.name}.snapshots: no snapshot template named ${d.value.snapshots}.";
      })
      snapshotted
      ++ [
        {
          assertion = cfg.replication != {} -> cfg.snapshotTemplates ? replica;
          message = "labnode.zfs.replication prunes its targets with the `replica` snapshot template, which is missing.";
        }
      ];

    boot.supportedFilesystems.zfs = true;
    # On, as NixOS has it before 26.11, and said so: nixos-26.05 warns while it is left at
    # that default. The first boot imports a pool last imported by the installer's host id,
    # which a strict import refuses, and a remote node would not boot.
    boot.zfs.forceImportRoot = lib.mkDefault true;
    # Pools whose datasets are not in fileSystems are imported by name.
    boot.zfs.extraPools = lib.attrNames (lib.filterAttrs (_: p: !p.root) cfg.pools);
    boot.kernelParams = lib.optional (cfg.arcMaxBytes != null) "zfs.zfs_arc_max=${toString cfg.arcMaxBytes}";

    disko.devices.zpool =
      lib.mapAttrs (pool: p: {
        type = "zpool";
        inherit (p) mode;
        options = {ashift = "12";} // p.poolProperties;
        rootFsOptions =
          {
            compression = "zstd";
            atime = "off";
            xattr = "sa";
            acltype = "posixacl";
            mountpoint = "none";
          }
          // p.properties;
        datasets = lib.listToAttrs (map (d: lib.nameValuePair d.name (diskoDataset d)) (lib.filter (d: d.pool == pool) allDatasets));
      })
      cfg.pools;

    services.sanoid = {
      enable = snapshotted != [] || cfg.replication != {};
      templates =
        lib.mapAttrs (_: t: {
          inherit (t) hourly daily monthly yearly autosnap;
          autoprune = true;
        })
        cfg.snapshotTemplates;
      datasets =
        lib.listToAttrs (map (d:
          lib.nameValuePair "${d.pool}/${d.name}" {
            useTemplate = [d.value.snapshots];
            recursive = true;
          })
        snapshotted)
        # Local replicas are pruned below their parent, which exists before the first
        # receive (sanoid's `zfs allow` on a missing target would fail the run).
        // lib.listToAttrs (map (parent:
          lib.nameValuePair parent {
            useTemplate = ["replica"];
            recursive = true;
          })
        replicaParents);
    };

    services.syncoid = lib.mkIf (cfg.replication != {}) {
      enable = true;
      commands = lib.mapAttrs (_: r: {inherit (r) source target recursive;}) cfg.replication;
      # syncoid prunes its own sync snapshots, which needs mount on the source and destroy on
      # the target (nixpkgs issue 216614). Recent nixpkgs defaults already grant both; older
      # ones did not. lib.unique keeps the `zfs allow` list free of duplicates either way.
      localSourceAllow = lib.unique (options.services.syncoid.localSourceAllow.default ++ ["mount"]);
      localTargetAllow = lib.unique (options.services.syncoid.localTargetAllow.default ++ ["destroy"]);
    };

    services.zfs.autoScrub = {
      enable = true;
      interval = cfg.scrubInterval;
    };
    services.zfs.trim = {
      enable = true;
      interval = cfg.trimInterval;
    };
  };
}
