# labnode.monitoring: Prometheus with labnode's rules scraping node exporter and every
# labnode collector (of this node, and of every other node of the inventory over
# WireGuard), Alertmanager with labnode's routes and inhibitions, Grafana with the
# Prometheus datasource (uid labnode-prometheus) and labnode's dashboards provisioned.
# Everything binds to loopback or the address given; secrets come from files, never the
# Nix store.
{
  config,
  lib,
  pkgs,
  ...
}: let
  cfg = config.labnode.monitoring;
  agents = config.labnode.agents;
  inv = config.labnode.inventory;
  promPort = config.services.prometheus.port;
  amPort = config.services.prometheus.alertmanager.port;
  nodePort = config.services.prometheus.exporters.node.port;

  enabledCollectors = lib.filterAttrs (_: c: c.enable) agents.collectors;

  # Targets of one node: its address and its instance label (one per node, so labnode's
  # and node exporter's panels line up under one `$instance`).
  nodeTargets = [
    {
      instance = cfg.instance;
      address = cfg.exporterAddress;
    }
  ];
  remoteTargets = lib.mapAttrsToList (name: n: {
    instance = name;
    inherit (n.wireguard) address;
  }) (lib.filterAttrs (_: n: n.wireguard.address != null) inv.others);
  targets = nodeTargets ++ lib.optionals cfg.scrapeInventory remoteTargets;

  job = name: port: {
    job_name = name;
    static_configs =
      map (t: {
        targets = ["${t.address}:${toString port}"];
        labels.instance = t.instance;
      })
      targets;
  };

  # rollback.yaml with the configured recovery budget in place of its default.
  ruleFile = f:
    if f == "rollback.yaml"
    then pkgs.writeText "rollback.yaml" (import ./rollback-rules.nix {budget = cfg.rollbackRecoveryBudget;})
    else ./rules + "/${f}";
  ruleFiles = map ruleFile (lib.attrNames (lib.filterAttrs (f: type: type == "regular" && lib.hasSuffix ".yaml" f) (builtins.readDir ./rules)));

  # The shipped Alertmanager file has ${LABNODE_ALERT_WEBHOOK_URL} in it, which the module
  # substitutes at start (envsubst); check it here with a placeholder URL instead.
  checkedAlertmanagerConfig =
    pkgs.runCommand "labnode-alertmanager-config-check" {
      nativeBuildInputs = [pkgs.envsubst config.services.prometheus.alertmanager.package];
    } ''
      LABNODE_ALERT_WEBHOOK_URL=http://127.0.0.1:9/placeholder envsubst -i ${./alertmanager.yaml} -o substituted.yaml
      amtool check-config substituted.yaml
      touch $out
    '';
in {
  imports = [../inventory.nix ../agents.nix];

  options.labnode.monitoring = {
    enable = lib.mkEnableOption "Prometheus, Alertmanager and Grafana with labnode's rules and dashboards";

    instance = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "The `instance` label of every target on this node.";
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      description = "Address Prometheus, Alertmanager and Grafana listen on: loopback, or the WireGuard address.";
    };

    exporterAddress = lib.mkOption {
      type = lib.types.str;
      default = agents.listenAddress;
      defaultText = lib.literalExpression "config.labnode.agents.listenAddress";
      description = "Address node exporter listens on and this node's targets are scraped at.";
    };

    scrapeInventory = lib.mkOption {
      type = lib.types.bool;
      default = inv.nodes.${inv.self}.monitoring.server or false;
      defaultText = lib.literalMD "whether the inventory marks this node `monitoring.server`";
      description = ''
        Whether to scrape every other node of the inventory at its WireGuard address, with
        this node's exporter ports (the other nodes set `labnode.agents.listenAddress` to
        their WireGuard address).
      '';
    };

    rollbackRecoveryBudget = lib.mkOption {
      type = lib.types.ints.positive;
      default = 300;
      example = 600;
      description = ''
        Seconds a rollback drill may take until every health gate is green
        (labnode_rollback_recovery_seconds{direction="rollback"}) before the alert
        RollbackRecoveryOverBudget fires.
      '';
    };

    retentionTime = lib.mkOption {
      type = lib.types.str;
      default = "400d";
      description = "How long Prometheus keeps samples (over a year, so yearly comparisons and the 12 monthly snapshots' history fit).";
    };

    scrapeInterval = lib.mkOption {
      type = lib.types.str;
      default = "15s";
      description = "Prometheus scrape and rule evaluation interval.";
    };

    alertWebhookEnvironmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = lib.literalExpression ''config.sops.templates."alertmanager.env".path'';
      description = ''
        A file with `LABNODE_ALERT_WEBHOOK_URL=https://...`, the receiver of every alert
        (labnode.secrets renders it from sops). Without it Alertmanager cannot start, since
        the URL stays unset.
      '';
    };

    grafana = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Whether to run Grafana with the labnode dashboards.";
      };
      port = lib.mkOption {
        type = lib.types.port;
        default = 3000;
        description = "Grafana's HTTP port.";
      };
      adminPasswordFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "File with Grafana's admin password (applied on Grafana's first start only), readable by the grafana user.";
      };
      secretKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "File with Grafana's secret key (signs sessions, encrypts datasource secrets), readable by the grafana user.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    system.checks = [checkedAlertmanagerConfig];

    assertions = [
      {
        assertion = !cfg.grafana.enable || (cfg.grafana.adminPasswordFile != null && cfg.grafana.secretKeyFile != null);
        message = "labnode.monitoring.grafana needs adminPasswordFile and secretKeyFile (labnode.secrets provides them): Grafana's defaults are public.";
      }
      {
        assertion = cfg.alertWebhookEnvironmentFile != null;
        message = "labnode.monitoring.alertWebhookEnvironmentFile is not set (labnode.secrets provides it): Alertmanager's receiver URL would be empty.";
      }
    ];

    services.prometheus = {
      enable = true;
      inherit (cfg) listenAddress retentionTime;
      globalConfig = {
        scrape_interval = cfg.scrapeInterval;
        evaluation_interval = cfg.scrapeInterval;
      };
      inherit ruleFiles;
      alertmanagers = [{static_configs = [{targets = ["${cfg.listenAddress}:${toString amPort}"];}];}];
      scrapeConfigs =
        [
          (job "node" nodePort)
          {
            job_name = "prometheus";
            static_configs = [
              {
                targets = ["${cfg.listenAddress}:${toString promPort}"];
                labels.instance = cfg.instance;
              }
            ];
          }
        ]
        ++ lib.optionals agents.enable (lib.mapAttrsToList (name: c: job "labnode-${name}" c.port) enabledCollectors);

      exporters.node = {
        enable = true;
        listenAddress = cfg.exporterAddress;
        enabledCollectors = ["systemd"];
      };

      alertmanager = {
        enable = true;
        inherit (cfg) listenAddress;
        configText = builtins.readFile ./alertmanager.yaml;
        # amtool cannot check the file before envsubst; system.checks above does it after.
        checkConfig = false;
        environmentFile = cfg.alertWebhookEnvironmentFile;
        # One Alertmanager: no gossip listener (it would bind 0.0.0.0:9094).
        extraFlags = ["--cluster.listen-address="];
      };
    };

    services.grafana = lib.mkIf cfg.grafana.enable {
      enable = true;
      settings = {
        server = {
          http_addr = cfg.listenAddress;
          http_port = cfg.grafana.port;
        };
        security = {
          admin_password = "$__file{${toString cfg.grafana.adminPasswordFile}}";
          secret_key = "$__file{${toString cfg.grafana.secretKeyFile}}";
        };
        analytics.reporting_enabled = false;
      };
      provision = {
        enable = true;
        datasources.settings = {
          apiVersion = 1;
          datasources = [
            {
              name = "Prometheus";
              type = "prometheus";
              uid = "labnode-prometheus";
              access = "proxy";
              url = "http://${cfg.listenAddress}:${toString promPort}";
              isDefault = true;
            }
          ];
        };
        dashboards.settings = {
          apiVersion = 1;
          providers = [
            {
              name = "labnode";
              type = "file";
              options.path = ./dashboards;
            }
          ];
        };
      };
    };
  };
}
