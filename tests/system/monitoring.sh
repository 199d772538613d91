#!/usr/bin/env bash
# The monitoring content, tested for real: promtool on the rules and their unit tests,
# amtool on the Alertmanager configuration and a real Alertmanager inhibiting symptom
# alerts, the dashboards' JSON model, and a real Prometheus with the shipped rules scraping
# labnode (system, and gpu on the simulated NVML) and node exporter: every panel query
# parses, every panel whose collector runs here returns series, and a stopped collector
# makes its alert go pending.
. "$(dirname "$0")/../lib/common.sh"
M="$(cd "$(dirname "$0")/../../modules/monitoring" && pwd)"

# 1. Rules: syntax and unit tests.
out=$(promtool check rules "$M"/rules/*.yaml 2>&1) || fail "promtool check rules: $out"
grep -qi warn <<<"$out" && fail "promtool check rules warns: $out"
note "promtool check rules: $(grep -o 'SUCCESS: [0-9]* rules' <<<"$out" | awk '{n += $2} END {print n}') rules clean"
(cd "$M/rules/tests" && promtool test rules ./*.yaml) >"$T/ruletest.log" 2>&1 || fail "promtool test rules: $(cat "$T/ruletest.log")"
alerts=$(grep -h '^ *- alert:' "$M"/rules/*.yaml | awk '{print $3}' | sort -u)
for a in $alerts; do
  grep -q "name: $a fires" "$M"/rules/tests/*.yaml || grep -q "name: $a fires for" "$M"/rules/tests/*.yaml || fail "no firing test for $a"
  grep -q "name: $a stays quiet" "$M"/rules/tests/*.yaml || fail "no quiet test for $a"
done
note "promtool test rules: pass; each of the $(wc -w <<<"$alerts") alerts has a firing and a quiet case"
# The rollback recovery budget as the module writes it (labnode.monitoring.rollbackRecoveryBudget):
# 600 s instead of 300, so 420 s is quiet and 700 s fires, saying the budget.
if command -v nix-instantiate >/dev/null; then
  mkdir -p "$T/budget"
  nix-instantiate --eval --strict --json -E "import $M/rollback-rules.nix { budget = 600; }" 2>"$T/budget/err" |
    jq -r . >"$T/budget/rollback.yaml" || fail "rollback-rules.nix: $(cat "$T/budget/err")"
  cat >"$T/budget/test.yaml" <<'YAML'
rule_files: [rollback.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: labnode_rollback_recovery_seconds{instance="node1",direction="rollback"}
    values: 420x5
  - series: labnode_rollback_recovery_seconds{instance="node2",direction="rollback"}
    values: 700x5
  alert_rule_test:
  - eval_time: 1m
    alertname: RollbackRecoveryOverBudget
    exp_alerts:
    - exp_labels: {instance: node2, direction: rollback, severity: warning, collector: rollback}
      exp_annotations:
        summary: Recovery by rollback on node2 took 11m 40s, over the 10m 0s budget
        description: 'See which phase grew on the rollback dashboard (labnode_rollback_phase_seconds): usually a slow unit stop or start, or a gate waiting on a service. Speed it up or raise the budget (labnode.monitoring.rollbackRecoveryBudget) knowingly.'
YAML
  (cd "$T/budget" && promtool check rules rollback.yaml && promtool test rules test.yaml) >"$T/budget/log" 2>&1 ||
    fail "the rollback rules with a 600 s budget: $(cat "$T/budget/log")"
  note "rollbackRecoveryBudget = 600: the module's rollback.yaml is clean, 420 s quiet, 700 s fires over the 10m 0s budget"
fi

# 2. Alertmanager: the configuration as the NixOS module renders it (envsubst of a secret).
LABNODE_ALERT_WEBHOOK_URL=http://127.0.0.1:9/hook envsubst <"$M/alertmanager.yaml" >"$T/alertmanager.yml"
amtool check-config "$T/alertmanager.yml" >"$T/amtool.log" 2>&1 || fail "amtool check-config: $(cat "$T/amtool.log")"
[ "$(amtool config routes test --config.file="$T/alertmanager.yml" severity=critical 2>/dev/null)" = webhook ] || fail "critical is not routed to the webhook"
[ "$(amtool config routes test --config.file="$T/alertmanager.yml" severity=info 2>/dev/null)" = null ] || fail "info is not kept off the webhook"
note "amtool check-config clean; critical and warning go to the webhook, info nowhere"
amport=$(free_port)
bg alertmanager prometheus-alertmanager --config.file="$T/alertmanager.yml" --storage.path="$T/am" \
  --web.listen-address="127.0.0.1:$amport" --cluster.listen-address=
wait_for 20 "alertmanager to answer" curl -fsS "http://127.0.0.1:$amport/-/ready"
curl -fsS -XPOST -H 'Content-Type: application/json' "http://127.0.0.1:$amport/api/v2/alerts" -d '[
  {"labels": {"alertname": "LabnodeCollectorDown", "collector": "gpu", "instance": "a:9466", "severity": "warning"}},
  {"labels": {"alertname": "GpuLost", "collector": "gpu", "instance": "a:9466", "severity": "critical", "gpu": "0"}},
  {"labels": {"alertname": "GpuLost", "collector": "gpu", "instance": "b:9466", "severity": "critical", "gpu": "0"}}]' >/dev/null
state() { curl -fsS "http://127.0.0.1:$amport/api/v2/alerts" | jq -r --arg i "$1" '.[] | select(.labels.alertname == "GpuLost" and .labels.instance == $i) | .status.state'; }
inhibited() { [ "$(state a:9466)" = suppressed ] && [ "$(state b:9466)" = active ]; }
wait_for 10 "GpuLost to be inhibited where its collector is down, and only there" inhibited
note "a real Alertmanager inhibits GpuLost under LabnodeCollectorDown{collector=\"gpu\"} on the same instance only"

# 3. Dashboards: Grafana's JSON model.
uids=()
for d in "$M"/dashboards/*.json; do
  jq -e '
    (.uid | type == "string") and (.title | type == "string") and (.panels | length > 0) and
    ([.panels[].id] | length == (unique | length)) and
    ([.. | objects | select(has("datasource")) | .datasource | objects | .uid] | unique == ["labnode-prometheus"]) and
    (.templating.list | any(.name == "instance")) and
    ([.panels[].targets[]? | .expr | test("instance=~\"\\$instance\"")] | all)
  ' "$d" >/dev/null || fail "$(basename "$d"): not a valid labnode dashboard (ids, datasource uid, instance variable)"
  uids+=("$(jq -r .uid "$d")")
done
[ "$(printf '%s\n' "${uids[@]}" | sort -u | wc -l)" = "${#uids[@]}" ] || fail "two dashboards share a uid"
note "${#uids[@]} dashboards: valid JSON, unique panel ids, datasource uid labnode-prometheus, \$instance on every query"

# 4. A real Prometheus with the shipped rules, scraping labnode (one process per collector,
#    as the NixOS module runs them) and node exporter.
: "${LABNODE_FAKE_NVML_LIB:?LABNODE_FAKE_NVML_LIB must point at the simulated NVML library}"
sport=$(free_port) gport=$(free_port) nport=$(free_port) pport=$(free_port)
printf 'collectors:\n  system:\n    interval: 1s\n' >"$T/system.yaml"
printf 'collectors:\n  gpu:\n    interval: 1s\n    library: %s\n' "$LABNODE_FAKE_NVML_LIB" >"$T/gpu.yaml"
bg labnode-system "$LABNODE_BIN" serve --config "$T/system.yaml" --collector system --listen "127.0.0.1:$sport"
LABNODE_FAKE_NVML_PROFILE="$(dirname "$0")/../fake-nvml/profiles/tesla-p4.json" \
  bg labnode-gpu "$LABNODE_BIN" serve --config "$T/gpu.yaml" --collector gpu --listen "127.0.0.1:$gport"
gpid=$last_pid
bg node prometheus-node-exporter --web.listen-address="127.0.0.1:$nport"
# A third agent whose gpu collector cannot start (driver not loaded): its collector is down.
bport=$(free_port)
LABNODE_FAKE_NVML_PROFILE="$(dirname "$0")/../fake-nvml/profiles/init-failure.json" \
  bg labnode-broken "$LABNODE_BIN" serve --config "$T/gpu.yaml" --collector gpu --listen "127.0.0.1:$bport"
# The shipped rules; the recording group evaluated every second instead of every minute.
mkdir -p "$T/rules"
for r in "$M"/rules/*.yaml; do cp "$r" "$T/rules/"; done
fast_rules "$M/rules/recording.yaml" "$T/rules/recording.yaml"
{
  echo "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}"
  echo "rule_files:"
  for r in "$T"/rules/*.yaml; do echo "  - $r"; done
  echo "scrape_configs:"
  for j in "labnode-system $sport" "labnode-gpu $gport" "node $nport" "labnode-broken $bport"; do
    set -- $j
    echo "  - {job_name: $1, static_configs: [{targets: ['127.0.0.1:$2']}]}"
  done
} >"$T/prometheus.yml"
promtool check config "$T/prometheus.yml" >"$T/pcheck.log" 2>&1 || fail "promtool check config: $(cat "$T/pcheck.log")"
bg prometheus prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/pdata" \
  --web.listen-address="127.0.0.1:$pport"
wait_for 30 "prometheus to answer" curl -fsS "http://127.0.0.1:$pport/-/ready"
ready() { [ -n "$(prom_query "$pport" 'gpu:labnode_gpu_utilization_ratio:avg_over_time_1h')" ] &&
  [ "$(prom_query "$pport" 'count(up == 1)')" = 4 ] &&
  [ -n "$(prom_query "$pport" 'rate(node_pressure_memory_waiting_seconds_total[1m])')" ]; }
wait_for 60 "every target up and the recording rules evaluated" ready
sleep 3
rules_loaded=$(curl -fsS "http://127.0.0.1:$pport/api/v1/rules" | jq '[.data.groups[].rules[]] | length')
note "Prometheus loaded $rules_loaded rules and scrapes labnode-system, labnode-gpu, labnode-broken and node"

# Panels that need what this machine lacks: NixOS, systemd's collector in node exporter.
may_be_empty='labnode_system_nixos_generation|node_systemd_unit_state'
checked=0 with_data=0
for d in "$M"/dashboards/*.json; do
  name=$(basename "$d" .json)
  while IFS=$'\t' read -r title expr; do
    q=$(sed -e 's/\$instance/.*/g; s/\$__rate_interval/1m/g; s/\$__interval/15s/g; s/\$__range/1h/g' <<<"$expr")
    resp=$(curl -sS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$q")
    [ "$(jq -r .status <<<"$resp")" = success ] || fail "$name / $title: the query does not run: $(jq -r .error <<<"$resp")"
    checked=$((checked + 1))
    n=$(jq '.data.result | length' <<<"$resp")
    if [ "$name" = node ] || [ "$name" = gpu ]; then
      if [ "$n" = 0 ] && ! grep -Eq "$may_be_empty" <<<"$expr"; then fail "$name / $title returns no series: $q"; fi
    fi
    [ "$n" -gt 0 ] && with_data=$((with_data + 1))
  done < <(jq -r '.panels[] | .title as $t | .targets[] | [$t, .expr] | @tsv' "$d")
done
note "$checked panel queries run; $with_data return series (every node and GPU panel that can here)"

# 5. A collector that is down, and an agent that is stopped: their alerts go pending.
collector_pending() {
  curl -fsS "http://127.0.0.1:$pport/api/v1/alerts" |
    jq -e '.data.alerts[] | select(.labels.alertname == "LabnodeCollectorDown" and .labels.job == "labnode-broken" and .labels.collector == "gpu" and .state == "pending")' >/dev/null
}
wait_for 30 "LabnodeCollectorDown{job=\"labnode-broken\",collector=\"gpu\"} to go pending" collector_pending
note "the gpu collector that cannot start makes LabnodeCollectorDown{collector=\"gpu\"} pending"
kill "$gpid"
pending() {
  curl -fsS "http://127.0.0.1:$pport/api/v1/alerts" |
    jq -e '.data.alerts[] | select(.labels.alertname == "PrometheusTargetDown" and .labels.job == "labnode-gpu" and .state == "pending")' >/dev/null
}
wait_for 30 "PrometheusTargetDown{job=\"labnode-gpu\"} to go pending" pending
note "stopping the gpu agent makes PrometheusTargetDown{job=\"labnode-gpu\"} pending"
