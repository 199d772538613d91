#!/usr/bin/env bash
# NVML that does not initialise (driver not loaded) and an NVML call that hangs: the gpu
# collector is down with the reason, logged once while it stays the same, the agent and
# its other collectors keep serving; once the driver is back, NVML is initialised again
# after its backoff. NVML with no new utilization samples (NOT_FOUND) falls back to the
# current rates, without a warning.
. "$(dirname "$0")/../lib/common.sh"
profiles="$(cd "$(dirname "$0")/../fake-nvml/profiles" && pwd)"
system_up() {
  scrape s.txt
  [ "$(metric_value "$T/s.txt" 'labnode_collector_up{collector="system"}')" = 1 ]
}

# 1. Driver not loaded, then loaded.
cp "$profiles/init-failure.json" "$T/profile.json"
start_gpu_agent "$T/profile.json" true
down() {
  scrape m.txt
  [ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="gpu"}')" = 0 ]
}
wait_for 10 "the gpu collector to be down" down
start_prometheus "127.0.0.1:$port"
prom_down() { [ "$(prom_query "$prom" 'labnode_collector_up{collector="gpu"}')" = 0 ]; }
wait_for 20 'Prometheus to see labnode_collector_up{collector="gpu"} == 0' prom_down
[ -z "$(prom_query "$prom" 'count({__name__=~"labnode_gpu_.*"})')" ] || fail "Prometheus has GPU series without a driver"
curl -fsS "http://127.0.0.1:$port/healthz" | grep -q '^gpu: down (.*NVML.*driver is not loaded' ||
  fail "/healthz does not say why: $(curl -fsS "http://127.0.0.1:$port/healthz")"
grep -q '^labnode_gpu_' "$T/m.txt" && fail "GPU series are exported without a driver"
wait_for 5 "the system collector to be up beside it" system_up
downs=$(grep -c 'collector down.*collector=gpu\|collector=gpu.*collector down' "$T/labnode.log" || true)
[ "$downs" = 1 ] || fail "the unchanged NVML failure was logged $downs times, want once: $(grep 'collector down' "$T/labnode.log" | head -n 5)"
note "driver not loaded: gpu down with the reason (logged once over ${SECONDS}s), no GPU series, the system collector up"

cp "$profiles/tesla-p4.json" "$T/profile.json"
up() {
  scrape m.txt
  [ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="gpu"}')" = 1 ]
}
wait_for 20 "NVML to be initialised again once the driver is back" up
prom_up() { [ "$(prom_query "$prom" 'labnode_collector_up{collector="gpu"}')" = 1 ]; }
wait_for 20 "Prometheus to see the gpu collector up again" prom_up
expect_value "$prom" 'labnode_gpu_temperature_celsius{gpu="0"}' 47
grep -q '^labnode_gpu_temperature_celsius{gpu="0"' "$T/m.txt" || fail "no GPU series after recovery"
grep -q 'NVML initialised' "$T/labnode.log" || fail "the recovery was not logged"
note "driver back: NVML initialised again after its backoff, GPU series back"
for p in "${_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
_pids=()

# 2. A call that never returns: the deadline fires, the agent keeps serving.
start_gpu_agent hang true
hung() {
  scrape m.txt
  [ "$(metric_value "$T/m.txt" 'labnode_collector_failures_total{collector="gpu",reason="deadline"}')" != 0 ] &&
    [ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="gpu"}')" = 0 ]
}
wait_for 10 "the hung NVML call to trip the deadline" hung
start_prometheus "127.0.0.1:$port"
wait_for 20 'Prometheus to see labnode_collector_up{collector="gpu"} == 0' prom_down
for _ in $(seq 1 10); do
  t=$(curl -fsS -m 2 -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/metrics") || fail "/metrics stopped answering"
  awk -v t="$t" 'BEGIN { exit !(t < 0.5) }' || fail "a scrape took ${t}s while NVML hangs"
done
curl -fsS "http://127.0.0.1:$port/healthz" | grep -q '^gpu: down (.*deadline\|^gpu: down (.*not returned' ||
  fail "/healthz does not give the deadline: $(curl -fsS "http://127.0.0.1:$port/healthz")"
wait_for 5 "the system collector to be up beside it" system_up
note "hung NVML call: gpu down past its deadline, /metrics still answers, the system collector up"
for p in "${_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
_pids=()

# 3. Utilization samples every 1.5 s, runs every 0.5 s: most runs find no new sample (NVML
#    answers NOT_FOUND) and use the current rates; utilization is exported on every run.
jq '.gpus[0].utilization_sample_period_s = 1.5' "$profiles/tesla-p4.json" >"$T/slow-samples.json"
start_gpu_agent "$T/slow-samples.json"
sleep 1
fallbacks=0
for _ in $(seq 1 12); do
  scrape u.txt
  s='{gpu="0",uuid="GPU-5f1c2e3a-8d4b-4c1e-9a7f-2b6d0e1f3a4c"'
  [ "$(metric_value "$T/u.txt" "labnode_gpu_utilization_ratio$s}")" = 0.37 ] ||
    fail "utilization is not 0.37 on every run: $(grep utilization "$T/u.txt")"
  [ "$(metric_value "$T/u.txt" "labnode_gpu_field_supported$s,field=\"utilization_samples\"}")" = 1 ] ||
    fail "utilization_samples is not reported supported on every run: $(grep field_supported "$T/u.txt")"
  [ "$(metric_value "$T/u.txt" "labnode_gpu_field_supported$s,field=\"utilization\"}")" = 1 ] && fallbacks=$((fallbacks + 1))
  sleep 0.5
done
[ "$fallbacks" -gt 0 ] || fail "no run fell back to the current rates"
! grep -q 'NVML call failed' "$T/labnode.log" || fail "NOT_FOUND was logged as a failure: $(grep 'NVML call failed' "$T/labnode.log")"
note "no new samples (NOT_FOUND): the current rates on $fallbacks of 12 scrapes, utilization 0.37 on each, no warning"
