# labnode.secrets: sops-nix wiring. One sops file per node (secrets/<host>.yaml), decrypted
# at activation to /run/secrets (tmpfs, never the Nix store) with the node's age identity:
# its SSH host key (the default) or an age key file. Declares the secrets the enabled
# labnode modules need and points their `*File` options at them:
#
#   wireguard/private-key        labnode.wireguard.privateKeyFile
#   grafana/admin-password       labnode.monitoring.grafana.adminPasswordFile
#   grafana/secret-key           labnode.monitoring.grafana.secretKeyFile
#   alertmanager/webhook-url     labnode.monitoring.alertWebhookEnvironmentFile (a rendered env file)
#   labnode/net-token            labnode.agents.netServe.tokenFile
{
  config,
  lib,
  ...
}: let
  cfg = config.labnode.secrets;
  wg = config.labnode.wireguard;
  mon = config.labnode.monitoring;
  agents = config.labnode.agents;
  grafanaOn = mon.enable && mon.grafana.enable;
  netServeOn = agents.enable && agents.netServe.enable;
  # The public half of secrets/test-only/age-key.txt, whose private half is committed.
  testOnlyRecipient = "age14wrnrw6jwgxwvgp7j2qgysn495nrhh68j78vyahslc2wrdmeuekswzxzaj";
in {
  # The modules whose secrets this wires (imports by path are deduplicated).
  imports = [./wireguard.nix ./monitoring ./agents.nix];

  options.labnode.secrets = {
    enable = lib.mkEnableOption "secrets from a sops file (sops-nix) for the labnode modules";

    sopsFile = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./secrets/c220g5.yaml";
      description = "The node's sops-encrypted YAML file (layout: secrets/README.md).";
    };

    allowTestOnlyKey = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Whether `sopsFile` may be encrypted to the test-only key without a warning (the VM tests).";
    };

    ageKeyFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/var/lib/sops-nix/key.txt";
      description = ''
        An age identity file on the node. null: the node decrypts with its SSH ed25519 host
        key (converted to age by sops-nix), so no extra key has to be installed.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    warnings = lib.optional (!cfg.allowTestOnlyKey && lib.hasInfix testOnlyRecipient (builtins.readFile cfg.sopsFile)) ''
      ${toString cfg.sopsFile} is encrypted to the TEST-ONLY age key, whose private half is
      public: anyone can read these secrets, and this node cannot decrypt them with its own
      key. Create real secrets before deploying (docs/nixos/secrets.md).
    '';

    sops = {
      defaultSopsFile = cfg.sopsFile;
      defaultSopsFormat = "yaml";
      age = lib.mkIf (cfg.ageKeyFile != null) {
        keyFile = cfg.ageKeyFile;
        sshKeyPaths = [];
      };

      secrets = lib.mkMerge [
        (lib.mkIf wg.enable {
          "wireguard/private-key" = {};
        })
        (lib.mkIf grafanaOn {
          "grafana/admin-password".owner = "grafana";
          "grafana/secret-key".owner = "grafana";
        })
        (lib.mkIf mon.enable {
          "alertmanager/webhook-url" = {};
        })
        (lib.mkIf netServeOn {
          "labnode/net-token" = {};
        })
      ];

      templates = lib.mkIf mon.enable {
        "alertmanager.env".content = "LABNODE_ALERT_WEBHOOK_URL=${config.sops.placeholder."alertmanager/webhook-url"}\n";
      };
    };

    # A unit restarts when a secret it reads changes, by its own restart triggers: the hash
    # of the sops file (sopsFileHash) is in its unit file, so a switch that brings a new sops
    # file restarts it after the activation has written the new secrets. (Not sops-nix's
    # restartUnits: it relies on the activation script's restart list, which nixos-26.05
    # deprecates and 26.11 removes; docs/nixos/release-audit-26.05.md.)
    systemd.services = let
      after = names: extra: {restartTriggers = map (n: config.sops.secrets.${n}.sopsFileHash) names ++ extra;};
    in
      lib.mkMerge [
        (lib.mkIf wg.enable {"wireguard-${wg.interface}" = after ["wireguard/private-key"] [];})
        (lib.mkIf grafanaOn {grafana = after ["grafana/admin-password" "grafana/secret-key"] [];})
        # The template's own text too: a change to it is a new environment file.
        (lib.mkIf mon.enable {alertmanager = after ["alertmanager/webhook-url"] [config.sops.templates."alertmanager.env".content];})
        (lib.mkIf netServeOn {labnode-net-serve = after ["labnode/net-token"] [];})
      ];

    labnode.wireguard.privateKeyFile = lib.mkIf wg.enable (lib.mkDefault config.sops.secrets."wireguard/private-key".path);
    labnode.monitoring.grafana = lib.mkIf grafanaOn {
      adminPasswordFile = lib.mkDefault config.sops.secrets."grafana/admin-password".path;
      secretKeyFile = lib.mkDefault config.sops.secrets."grafana/secret-key".path;
    };
    labnode.monitoring.alertWebhookEnvironmentFile = lib.mkIf mon.enable (lib.mkDefault config.sops.templates."alertmanager.env".path);
    labnode.agents.netServe.tokenFile = lib.mkIf netServeOn (lib.mkDefault config.sops.secrets."labnode/net-token".path);
  };
}
