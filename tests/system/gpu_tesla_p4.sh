#!/usr/bin/env bash
# The Tesla P4 profile through a real Prometheus scrape: every value from the profile,
# units converted (MiB -> bytes, mW -> W, MHz -> Hz, KB/s -> bytes/s), the fields a P4
# lacks (energy counter, fan) absent rather than zero or a sentinel, energy integrated
# from power within 2% of the profile's exact integral, promtool clean, and a snapshot
# with the window means: mean power over the whole window (integrated and from NVML's
# energy counter) within 3% of the analytic mean, utilization from the window's own
# samples only; per-process memory NVML cannot see is absent, not 0.
. "$(dirname "$0")/../lib/common.sh"

start_gpu_agent tesla-p4
start_prometheus "127.0.0.1:$port"
up() { [ "$(prom_query "$prom" 'labnode_collector_up{collector="gpu"}')" = 1 ]; }
wait_for 30 "the gpu collector to be up in Prometheus" up
has_procs() { [ -n "$(prom_query "$prom" labnode_gpu_compute_processes_memory_bytes)" ]; }
wait_for 10 "every GPU series in Prometheus" has_procs

MiB=1048576
s='{gpu="0",uuid="GPU-5f1c2e3a-8d4b-4c1e-9a7f-2b6d0e1f3a4c"}'
expect_value "$prom" "labnode_gpu_memory_total_bytes$s" $((7611 * MiB))
expect_value "$prom" "labnode_gpu_memory_used_bytes$s" $((1843 * MiB))
expect_value "$prom" "labnode_gpu_utilization_ratio$s" 0.37
expect_value "$prom" "labnode_gpu_memory_utilization_ratio$s" 0.12
expect_value "$prom" "labnode_gpu_temperature_celsius$s" 47
expect_value "$prom" "labnode_gpu_slowdown_temperature_celsius$s" 91
expect_value "$prom" "labnode_gpu_shutdown_temperature_celsius$s" 94
expect_value "$prom" "labnode_gpu_power_limit_watts$s" 75
expect_value "$prom" "labnode_gpu_sm_clock_hertz$s" 1531000000
expect_value "$prom" "labnode_gpu_memory_clock_hertz$s" 3003000000
expect_value "$prom" "labnode_gpu_pcie_tx_bytes_per_second$s" $((1200 * 1024))
expect_value "$prom" "labnode_gpu_pcie_rx_bytes_per_second$s" $((3400 * 1024))
expect_value "$prom" "labnode_gpu_pcie_link_generation$s" 3
expect_value "$prom" "labnode_gpu_pcie_link_width$s" 16
expect_value "$prom" "labnode_gpu_performance_state$s" 0
expect_value "$prom" "labnode_gpu_compute_processes$s" 2
expect_value "$prom" "labnode_gpu_compute_processes_memory_bytes$s" $(((1536 + 256) * MiB))
expect_value "$prom" 'labnode_gpu_ecc_errors_total{type="corrected",counter="aggregate"}' 17
expect_value "$prom" 'labnode_gpu_ecc_errors_total{type="uncorrected",counter="aggregate"}' 1
expect_value "$prom" 'labnode_gpu_ecc_errors_total{type="corrected",counter="volatile"}' 2
expect_value "$prom" 'labnode_gpu_retired_pages{cause="multiple_single_bit_ecc"}' 2
expect_value "$prom" 'labnode_gpu_retired_pages{cause="double_bit_ecc"}' 1
expect_value "$prom" 'count(labnode_gpu_throttle_reason)' 2
expect_value "$prom" 'sum(labnode_gpu_throttle_reason{reason=~"gpu_idle|sw_power_cap"})' 2
expect_value "$prom" 'count(labnode_gpu_info{name="Tesla P4",pci_bus_id="00000000:3B:00.0",persistence_mode="enabled",driver_version="580.95.05",cuda_version="13.0"})' 1
power=$(prom_query "$prom" "labnode_gpu_power_watts$s")
awk -v p="$power" 'BEGIN { exit !(p >= 22 && p <= 64) }' || fail "power $power W is outside the profile's 22..64 W"
note "every profile value arrived through Prometheus in base units (power now ${power} W)"

# What a P4 lacks is absent, and said so once.
expect_value "$prom" 'labnode_gpu_field_supported{field="energy_counter"}' 0
expect_value "$prom" 'labnode_gpu_field_supported{field="fan_speed"}' 0
expect_value "$prom" 'labnode_gpu_field_supported{field="power"}' 1
expect_value "$prom" 'labnode_gpu_field_supported{field="compute_processes_memory"}' 1
[ -z "$(prom_query "$prom" 'labnode_gpu_fan_speed_ratio')" ] || fail "a fan speed is exported for a passively cooled P4"
[ -z "$(prom_query "$prom" 'labnode_gpu_energy_joules_total{source="nvml"}')" ] || fail "an NVML energy counter is claimed on Pascal"
expect_value "$prom" 'count(labnode_gpu_energy_joules_total{source="integrated"})' 1
sentinels=$(prom_query "$prom" 'count({__name__=~"labnode_gpu_.*"} >= 1e15 or {__name__=~"labnode_gpu_.*"} < 0)')
[ -z "$sentinels" ] || fail "$sentinels GPU series carry sentinel values"
note "energy counter and fan absent, field_supported says so, no sentinels"

scrape metrics.txt
lint=$(promtool check metrics <"$T/metrics.txt" 2>&1) || fail "promtool: $lint"
[ -z "$lint" ] || fail "promtool check metrics warns: $lint"
note "promtool check metrics: clean"

# Energy against the exact integral of the profile's power curve (a triangle wave over
# wall-clock time, 22..64 W, period 8 s), between two collections about 12 s apart.
reading() { # -> "energy_joules collection_time"
  scrape e.txt
  echo "$(metric_value "$T/e.txt" "labnode_gpu_energy_joules_total{gpu=\"0\",uuid=\"GPU-5f1c2e3a-8d4b-4c1e-9a7f-2b6d0e1f3a4c\",source=\"integrated\"}") \
$(metric_value "$T/e.txt" 'labnode_collector_last_success_timestamp_seconds{collector="gpu"}')"
}
read -r e1 t1 <<<"$(reading)"
sleep 12
read -r e2 t2 <<<"$(reading)"
awk -v e1="$e1" -v e2="$e2" -v t1="$t1" -v t2="$t2" 'BEGIN {
  lo = 22; hi = 64; period = 8; n = 200000; exact = 0
  for (i = 0; i < n; i++) {
    t = t1 + (t2 - t1) * (i + 0.5) / n
    ph = (t - period * int(t / period)) / period
    tri = ph < 0.5 ? ph * 2 : 2 - ph * 2
    exact += (lo + (hi - lo) * tri) * (t2 - t1) / n
  }
  got = e2 - e1; err = (got - exact) / exact; if (err < 0) err = -err
  printf "  energy over %.2f s: %.1f J exported, %.1f J exact integral, %.2f%% apart\n", t2 - t1, got, exact, err * 100
  exit !(err <= 0.02)
}' || fail "integrated energy is not within 2% of the integral of power"

# A snapshot carries the means over the sampling window, with the window's length.
LABNODE_FAKE_NVML_PROFILE=$(dirname "$0")/../fake-nvml/profiles/tesla-p4.json \
  "$LABNODE_BIN" collect --config "$T/labnode.yaml" --collector gpu --label gpu --out "$T/snaps" >/dev/null
snap=$(ls "$T"/snaps/*.json)
jq -e '
  ([.samples[] | select(.metric == "labnode_gpu_window_seconds") | .value][0] | . >= 0.19 and . < 1) and
  ([.samples[] | select(.metric == "labnode_gpu_power_watts") | .value, .unit][0:2] | .[0] >= 22 and .[0] <= 64 and .[1] == "watts") and
  ([.samples[] | select(.metric == "labnode_gpu_utilization_ratio") | .value] == [0.37]) and
  (.collectors == [.collectors[] | select(.name == "gpu" and .up)])
' "$snap" >/dev/null || fail "the snapshot lacks the GPU window means: $(jq -c '[.samples[] | select(.metric | test("window|power_watts|utilization"))]' "$snap")"
note "snapshot: mean power and utilization over a $(jq '[.samples[] | select(.metric == "labnode_gpu_window_seconds") | .value][0]' "$snap") s window"

# Snapshot means are means over the whole window. Power: a triangle wave with a 0.4 s
# period, so its mean over the 0.4 s window is 43 W at any phase (the window overruns
# 0.4 s by a few ms; 3% allows for that); GPU 0 integrates sampled power, GPU 1 reads
# NVML's energy counter at both ends. Utilization: NVML's sample buffer holds 20 s of
# samples, those from before nvmlInit at 100% (90% memory), those after at 37% (12%):
# only samples within the window may count.
jq '.gpus[0] += {power_period_s: 0.4, utilization_gpu_percent_before_init: 100, utilization_memory_percent_before_init: 90}
    | .gpus[1] = (.gpus[0] + {uuid: "GPU-11111111-2222-3333-4444-555555555555", pci_bus_id: "00000000:AF:00.0", energy_supported: true})' \
  "$(dirname "$0")/../fake-nvml/profiles/tesla-p4.json" >"$T/fast.json"
cat >"$T/window.yaml" <<YAML
collectors:
  gpu:
    interval: 2s
    deadline: 2s
    window: 400ms
    library: $LABNODE_FAKE_NVML_LIB
YAML
for i in 1 2 3 4 5 6; do
  LABNODE_FAKE_NVML_PROFILE=$T/fast.json \
    "$LABNODE_BIN" collect --config "$T/window.yaml" --collector gpu --label "w$i" --out "$T/wsnaps" >/dev/null
done
for snap in "$T"/wsnaps/*.json; do
  got=$(jq -c '[.samples[] | select(.metric | test("^labnode_gpu_(power_watts|window_seconds|utilization_ratio|memory_utilization_ratio)$"))
    | [.metric, .labels.gpu // "", .value]]' "$snap")
  jq -e '
    [.samples[] | select(.metric == "labnode_gpu_power_watts") | .value] as $p
    | [.samples[] | select(.metric == "labnode_gpu_utilization_ratio") | .value] as $u
    | [.samples[] | select(.metric == "labnode_gpu_memory_utilization_ratio") | .value] as $m
    | [.samples[] | select(.metric == "labnode_gpu_window_seconds") | .value][0] as $w
    | ($p | length) == 2 and all($p[]; (. - 43 | fabs) <= 43 * 0.03)
      and $u == [0.37, 0.37] and $m == [0.12, 0.12] and $w >= 0.4 and $w < 0.5
  ' "$snap" >/dev/null || fail "snapshot window means are off (want 43 W, 0.37, 0.12, window 0.4..0.5 s): $got"
done
note "6 snapshots, 0.4 s windows: mean power $(jq -rs '[.[].samples[] | select(.metric == "labnode_gpu_power_watts") | .value * 10 | round / 10 | tostring] | join(", ")' "$T"/wsnaps/*.json) W (43 W exact), utilization only from the window's samples"

# A process whose memory NVML cannot see (NVML_VALUE_NOT_AVAILABLE): no sum, said so.
jq '.gpus[0].processes[1].used_mib = null' \
  "$(dirname "$0")/../fake-nvml/profiles/tesla-p4.json" >"$T/procmem.json"
LABNODE_FAKE_NVML_PROFILE=$T/procmem.json \
  "$LABNODE_BIN" collect --config "$T/labnode.yaml" --collector gpu --label procmem --out "$T/psnaps" >/dev/null
snap=$(ls "$T"/psnaps/*.json)
jq -e '
  ([.samples[] | select(.metric == "labnode_gpu_compute_processes_memory_bytes")] == []) and
  ([.samples[] | select(.metric == "labnode_gpu_compute_processes") | .value] == [2]) and
  ([.samples[] | select(.metric == "labnode_gpu_field_supported" and .labels.field == "compute_processes_memory") | .value] == [0])
' "$snap" >/dev/null || fail "unavailable process memory is not reported as unsupported: $(jq -c '[.samples[] | select(.metric | test("compute_processes")) , select(.labels.field == "compute_processes_memory")]' "$snap")"
note "process memory unavailable: no memory sum, 2 processes, field_supported{field=\"compute_processes_memory\"} 0"
