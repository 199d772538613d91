# labnode.monitoring with its secrets from sops (test-only key): Prometheus scrapes every
# target (node exporter, itself, every labnode collector) and loaded every rule file;
# Alertmanager delivers to the webhook URL that came from sops; Grafana logs in with the
# password from sops and serves every provisioned dashboard on the labnode-prometheus
# datasource; nothing listens beyond loopback.
{
  self,
  lib,
  ...
}: let
  common = import ./common.nix;
  rulesDir = ../../modules/monitoring/rules;
  ruleFiles = lib.attrNames (lib.filterAttrs (f: t: t == "regular" && lib.hasSuffix ".yaml" f) (builtins.readDir rulesDir));
  ruleText = lib.concatMapStrings (f: builtins.readFile (rulesDir + "/${f}")) ruleFiles;
  count = re: lib.length (lib.filter lib.isList (builtins.split re ruleText));
  dashboardsDir = ../../modules/monitoring/dashboards;
  dashboardUids = map (f: (builtins.fromJSON (builtins.readFile (dashboardsDir + "/${f}"))).uid) (lib.attrNames (builtins.readDir dashboardsDir));
in {
  name = "labnode-monitoring";

  nodes.machine = {pkgs, ...}: {
    imports = [self.nixosModules.monitoring self.nixosModules.agents self.nixosModules.secrets common.testSecrets];
    labnode.monitoring.enable = true;
    labnode.agents.enable = true;
    environment.systemPackages = [pkgs.curl pkgs.jq pkgs.socat];
    virtualisation.memorySize = 2048;
  };

  testScript = ''
    import json

    ${common.python}

    machine.wait_for_unit("multi-user.target")
    for unit in ["prometheus", "alertmanager", "grafana", "prometheus-node-exporter",
                 "labnode-system", "labnode-net", "labnode-rollback"]:
        machine.wait_for_unit(f"{unit}.service")
    machine.wait_for_open_port(9090)
    machine.wait_for_open_port(3000)

    def api(path):
        return json.loads(machine.succeed(f"curl -sf 'http://127.0.0.1:9090{path}'"))

    # Every target is scraped and up.
    expected_jobs = {"node", "prometheus", "labnode-system", "labnode-net", "labnode-rollback"}

    def all_up():
        targets = api("/api/v1/targets")["data"]["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        down = [(t["labels"]["job"], t["lastError"]) for t in targets if t["health"] != "up"]
        print(f"jobs {sorted(jobs)}, down {down}")
        return jobs == expected_jobs and not down

    eventually("every target up", all_up)
    instances = {t["labels"]["instance"] for t in api("/api/v1/targets")["data"]["activeTargets"]}
    assert instances == {"machine"}, instances

    # Every rule file is loaded, with every alert and recording rule, none failing.
    groups = api("/api/v1/rules")["data"]["groups"]
    # (The module hands Prometheus promtool-checked copies, so count files, not names.)
    files = {g["file"] for g in groups}
    assert len(files) == ${toString (lib.length ruleFiles)}, files
    assert len(groups) == ${toString (count "\n  - name: ")}, [g["name"] for g in groups]
    rules = [r for g in groups for r in g["rules"]]
    alerts = [r for r in rules if r["type"] == "alerting"]
    records = [r for r in rules if r["type"] == "recording"]
    assert len(alerts) == ${toString (count "- alert: ")}, len(alerts)
    assert len(records) == ${toString (count "- record: ")}, len(records)
    eventually("every rule evaluated", lambda: all(r.get("health") == "ok" for g in api("/api/v1/rules")["data"]["groups"] for r in g["rules"]))

    # Alertmanager is Prometheus's, and delivers to the URL from sops.
    machine.wait_until_succeeds("curl -sf http://127.0.0.1:9093/-/ready")
    eventually("Prometheus to find Alertmanager", lambda: api("/api/v1/alertmanagers")["data"]["activeAlertmanagers"])
    machine.succeed("systemd-run --unit=webhook socat -u TCP-LISTEN:9099,reuseaddr,fork OPEN:/tmp/webhook.log,creat,append")
    machine.wait_for_open_port(9099)
    machine.succeed(
        "curl -sf -XPOST -H 'Content-Type: application/json' http://127.0.0.1:9093/api/v2/alerts "
        + "-d '[{\"labels\": {\"alertname\": \"LabnodeTestOnly\", \"severity\": \"critical\", \"instance\": \"machine\"}}]'"
    )
    machine.wait_until_succeeds("grep -q LabnodeTestOnly /tmp/webhook.log", timeout=120)
    machine.succeed("grep -q 'POST /labnode-test-only-webhook' /tmp/webhook.log")

    # Grafana: the admin password from sops, the datasource uid the dashboards use, and
    # every dashboard provisioned.
    auth = "admin:test-only-grafana-admin-password"
    machine.wait_until_succeeds(f"curl -sf -u {auth} http://127.0.0.1:3000/api/health")
    ds = json.loads(machine.succeed(f"curl -sf -u {auth} http://127.0.0.1:3000/api/datasources/uid/labnode-prometheus"))
    assert ds["type"] == "prometheus" and ds["url"] == "http://127.0.0.1:9090", ds
    machine.fail("curl -sf -u admin:admin http://127.0.0.1:3000/api/org")
    uids = {d["uid"] for d in json.loads(machine.succeed(f"curl -sf -u {auth} 'http://127.0.0.1:3000/api/search?type=dash-db'"))}
    assert uids == set(${builtins.toJSON dashboardUids}), uids
    for uid in uids:
        dash = json.loads(machine.succeed(f"curl -sf -u {auth} http://127.0.0.1:3000/api/dashboards/uid/{uid}"))
        assert dash["dashboard"]["panels"], uid

    # Nothing of the stack listens beyond loopback; no Alertmanager gossip port at all.
    ports = {"9090", "9093", "9094", "3000", "9100", "9466", "9467", "9468", "9469", "9470"}
    for line in machine.succeed("ss -tlnH").splitlines():
        local = line.split()[3]
        addr, port = local.rsplit(":", 1)
        if port in ports:
            assert addr in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"), line
    # Read in Python: with the driver's pipefail, `grep -q` ending early could fail the pipe.
    assert ":9094 " not in machine.succeed("ss -tlnH"), "Alertmanager's cluster port is open"
  '';
}
