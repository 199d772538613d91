# labnode.monitoring: Prometheus with labnode's rules scraping node exporter and every
# labnode collector, Alertmanager with labnode's routes and inhibitions, Grafana with the
# Prometheus datasource and labnode's dashboards provisioned. Everything binds to
# loopback (or the address given); secrets come from files, never the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}: let
  cfg = config.labnode.monitoring;
  agents = config.labnode.agents;
  promPort = config.services.prometheus.port;
  amPort = config.services.prometheus.alertmanager.port;

  target = port: {
    targets = ["${cfg.listenAddress}:${toString port}"];
    # One `instance` for every exporter of this node, so dashboards line up.
    labels.instance = cfg.instance;
  };
  labnodeJobs = lib.mapAttrsToList (name: c: {
    job_name = "labnode-${name}";
    static_configs = [
      (target c.port
        // {targets = ["${agents.listenAddress}:${toString c.port}"];})
    ];
  }) (lib.filterAttrs (_: c: c.enable) agents.collectors);

  # The shipped Alertmanager file has ${LABNODE_ALERT_WEBHOOK_URL} in it, which the module
  # substitutes at start; check it here with a placeholder URL instead.
  checkedAlertmanagerConfig =
    pkgs.runCommand "labnode-alertmanager-config-check" {
      nativeBuildInputs = [pkgs.envsubst config.services.prometheus.alertmanager.package];
    } ''
      LABNODE_ALERT_WEBHOOK_URL=http://127.0.0.1:9/placeholder envsubst -i ${./alertmanager.yaml} -o substituted.yaml
      amtool check-config substituted.yaml
      touch $out
    '';
in {
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
      description = "Address Prometheus and Grafana listen on: loopback, or the WireGuard address.";
    };

    retentionTime = lib.mkOption {
      type = lib.types.str;
      default = "90d";
      description = "How long Prometheus keeps samples.";
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
        (for example a sops template). Without it Alertmanager starts but cannot notify.
      '';
    };

    grafana = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Whether to run Grafana with the labnode dashboards.";
      };
      adminPasswordFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "File with Grafana's admin password (applied on Grafana's first start only), readable by the grafana user.";
      };
      secretKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "File with Grafana's secret key, readable by the grafana user.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    system.checks = [checkedAlertmanagerConfig];

    assertions = [
      {
        assertion = !cfg.grafana.enable || (cfg.grafana.adminPasswordFile != null && cfg.grafana.secretKeyFile != null);
        message = "labnode.monitoring.grafana needs adminPasswordFile and secretKeyFile (e.g. from sops): Grafana's defaults are public.";
      }
    ];

    services.prometheus = {
      enable = true;
      inherit (cfg) listenAddress retentionTime;
      globalConfig = {
        scrape_interval = cfg.scrapeInterval;
        evaluation_interval = cfg.scrapeInterval;
      };
      ruleFiles = [
        ./rules/agents.yaml
        ./rules/gpu.yaml
        ./rules/zfs.yaml
        ./rules/network.yaml
        ./rules/rollback.yaml
        ./rules/recording.yaml
      ];
      alertmanagers = [{static_configs = [{targets = ["127.0.0.1:${toString amPort}"];}];}];
      scrapeConfigs =
        [
          {
            job_name = "node";
            static_configs = [
              (target config.services.prometheus.exporters.node.port
                // {targets = ["127.0.0.1:${toString config.services.prometheus.exporters.node.port}"];})
            ];
          }
          {
            job_name = "prometheus";
            static_configs = [(target promPort)];
          }
        ]
        ++ lib.optionals agents.enable labnodeJobs;

      exporters.node = {
        enable = true;
        listenAddress = "127.0.0.1";
        enabledCollectors = ["systemd"];
      };

      alertmanager = {
        enable = true;
        listenAddress = "127.0.0.1";
        configText = builtins.readFile ./alertmanager.yaml;
        # amtool cannot check the file before envsubst; system.checks below does it after.
        checkConfig = false;
        environmentFile = cfg.alertWebhookEnvironmentFile;
      };
    };

    services.grafana = lib.mkIf cfg.grafana.enable {
      enable = true;
      settings = {
        server = {
          http_addr = cfg.listenAddress;
          http_port = 3000;
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
