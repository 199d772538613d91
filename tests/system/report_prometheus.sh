#!/usr/bin/env bash
# labnode report --prometheus against a real Prometheus that scraped labnode: "before" is the
# agent while the GPU driver is not loaded (system collector only), "after" the same agent
# once the driver is there (system and gpu, the simulated Tesla P4). The report must read
# the same values Prometheus holds, say why the before side has no GPU rows, and gate.
# LABNODE_ARTIFACTS=DIR keeps the reports.
. "$(dirname "$0")/../lib/common.sh"
profiles="$(cd "$(dirname "$0")/../fake-nvml/profiles" && pwd)"
now() { date +%s.%N | cut -c1-14; }

cp "$profiles/init-failure.json" "$T/profile.json"
start_gpu_agent "$T/profile.json" true
start_prometheus "127.0.0.1:$port"
gpu_is() { [ "$(prom_query "$prom" 'labnode_collector_up{collector="gpu"}')" = "$1" ]; }
wait_for 30 "Prometheus to see the gpu collector down" gpu_is 0
t1=$(now)
sleep 6
t2=$(now)
cp "$profiles/tesla-p4.json" "$T/profile.json"
wait_for 40 "Prometheus to see the gpu collector up once the driver is there" gpu_is 1
sleep 1.5
t3=$(now)
sleep 6
t4=$(now)
note "before ${t1}..${t2} (driver not loaded), after ${t3}..${t4} (Tesla P4)"

url="http://127.0.0.1:$prom"
"$LABNODE_BIN" report --prometheus "$url" --before-range "$t1..$t2" --after-range "$t3..$t4" \
  --step 1s --format md,html,json --out "$T/report" >"$T/report.out" 2>"$T/report.err" ||
  fail "report failed: $(cat "$T/report.err")"
j="$T/report/report.json"
row() { jq -c --arg id "$1" '.groups[].rows[] | select(.id == $id)' "$j"; }
field() { row "$1" | jq -r "$2"; }

[ "$(jq -r .before.source "$j")" = prometheus ] || fail "the before side is not read as Prometheus points"
n_before=$(jq -r .before.observations "$j")
n_after=$(jq -r .after.observations "$j")
[ "$n_before" -ge 5 ] && [ "$n_after" -ge 5 ] || fail "too few points: $n_before before, $n_after after"

# GPU rows: not measured before, with the collector's failure as the reason; the profile's
# memory after, exactly (1843 MiB).
[ "$(field gpu_memory .before.provenance)" = not_measured ] || fail "gpu_memory measured without a driver: $(row gpu_memory)"
field gpu_memory .before.why | grep -q 'gpu collector was down' || fail "no reason for gpu_memory: $(row gpu_memory)"
[ "$(field gpu_memory .after.value)" = 1932525568 ] || fail "gpu_memory after: $(row gpu_memory)"
[ "$(field gpu_memory .after.n)" -ge 5 ] || fail "gpu_memory n: $(row gpu_memory)"
[ "$(field gpu_devices .after.value)" = 1 ] || fail "gpu_devices after: $(row gpu_devices)"
# GPU energy: the counter's increase over the after range, as Prometheus holds it at the
# report's steps (first to last; the simulated P4 integrates power, no reset here).
want_e=$(curl -fsS "$url/api/v1/query_range" --data-urlencode 'query=sum(labnode_gpu_energy_joules_total)' \
  --data-urlencode "start=$t3" --data-urlencode "end=$t4" --data-urlencode step=1 |
  jq -r '.data.result[0].values | (.[-1][1] | tonumber) - (.[0][1] | tonumber)')
got_e=$(field gpu_energy .after.value)
awk -v g="$got_e" -v w="$want_e" 'BEGIN { exit !(w > 0 && g > 0.99 * w && g < 1.01 * w) }' ||
  fail "gpu_energy after $got_e J, Prometheus's increase over the range $want_e J: $(row gpu_energy)"
[ "$(field gpu_energy .before.provenance)" = not_measured ] || fail "gpu_energy measured without a driver: $(row gpu_energy)"

# Coverage: system of five collectors before, system and gpu after.
[ "$(field collectors_up .before.value)" = 0.2 ] || fail "collectors_up before: $(row collectors_up)"
[ "$(field collectors_up .after.value)" = 0.4 ] || fail "collectors_up after: $(row collectors_up)"
[ "$(field collectors_up .change.verdict)" = better ] || fail "collectors_up change: $(row collectors_up)"
[ "$(field prometheus_targets_up .after.value)" = 1 ] || fail "targets up: $(row prometheus_targets_up)"

# The memory median lies within what Prometheus itself holds for the range.
span=$(awk -v a="$t3" -v b="$t4" 'BEGIN { printf "%ds", b - a + 1 }')
lo=$(curl -fsS "$url/api/v1/query" --data-urlencode "query=min_over_time(labnode_system_memory_used_bytes[$span])" \
  --data-urlencode "time=$t4" | jq -r '.data.result[0].value[1]')
hi=$(curl -fsS "$url/api/v1/query" --data-urlencode "query=max_over_time(labnode_system_memory_used_bytes[$span])" \
  --data-urlencode "time=$t4" | jq -r '.data.result[0].value[1]')
med=$(field memory_used .after.value)
# Its 95% interval is resampled over the range's points and holds the median.
[ "$(field memory_used .after.interval.over)" = points ] || fail "memory_used interval: $(row memory_used)"
awk -v m="$med" -v lo="$(field memory_used .after.interval.low)" -v hi="$(field memory_used .after.interval.high)" \
  'BEGIN { exit !(lo <= m && m <= hi) }' || fail "memory_used median outside its interval: $(row memory_used)"
awk -v m="$med" -v lo="$lo" -v hi="$hi" 'BEGIN { exit !(m >= lo && m <= hi) }' ||
  fail "memory_used median $med outside Prometheus's range [$lo, $hi]"
pretty=$(. /etc/os-release && echo "$PRETTY_NAME")
[ "$(field os .after.value)" = "$pretty" ] || fail "os after: $(row os), want $pretty"
note "json: $n_before/$n_after points, gpu memory 1843 MiB after, coverage 20% -> 40%, memory median within [min, max]"

grep -q '^| GPU memory in use' "$T/report/report.md" || fail "the Markdown has no GPU memory row"
if [ -n "${LABNODE_ARTIFACTS:-}" ]; then mkdir -p "$LABNODE_ARTIFACTS/prometheus" && cp "$T"/report/* "$LABNODE_ARTIFACTS/prometheus/"; fi
grep -q "<svg class=\"chart bars\" data-group=\"monitoring\"" "$T/report/report.html" || fail "no monitoring chart"

# The gate: the other way round, coverage halves: exit 1, naming the row.
set +e
"$LABNODE_BIN" report --prometheus "$url" --before-range "$t3..$t4" --after-range "$t1..$t2" \
  --step 1s --fail-on-regression 20% --format json --out "$T/gate" >/dev/null 2>"$T/gate.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "the gate exited $rc, want 1: $(cat "$T/gate.err")"
grep -q 'collectors_up (labnode collectors up' "$T/gate.err" || fail "the gate does not name collectors_up: $(cat "$T/gate.err")"
jq -e '.gate.regressions | map(.row) | index("collectors_up")' "$T/gate/report.json" >/dev/null ||
  fail "the JSON gate does not list collectors_up"
note "gate: reversed ranges exit 1 and name collectors_up"

# Errors: nothing listening (1), a range with no data (1), a malformed range (2).
expect_exit() {
  local want=$1 pattern=$2 rc
  shift 2
  set +e
  "$LABNODE_BIN" report "$@" >/dev/null 2>"$T/err"
  rc=$?
  set -e
  [ "$rc" = "$want" ] || fail "report $* exited $rc, want $want: $(cat "$T/err")"
  grep -q -- "$pattern" "$T/err" || fail "report $*: no '$pattern' in: $(cat "$T/err")"
}
dead=$(free_port)
expect_exit 1 "cannot reach Prometheus at http://127.0.0.1:$dead" \
  --prometheus "http://127.0.0.1:$dead" --before-range "$t1..$t2" --after-range "$t3..$t4"
expect_exit 1 "Prometheus has no series" \
  --prometheus "$url" --before-range 1000..2000 --after-range "$t3..$t4"
expect_exit 2 "is not a time range" \
  --prometheus "$url" --before-range "$t2..$t1" --after-range "$t3..$t4"
expect_exit 2 "https is not supported" \
  --prometheus "https://127.0.0.1:$prom" --before-range "$t1..$t2" --after-range "$t3..$t4"
note "errors: unreachable and empty exit 1, bad ranges and https exit 2, each named"
