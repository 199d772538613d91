#!/usr/bin/env bash
# Two GPUs, then one falls off the bus: both are reported with their own values (the
# Volta-class card with NVML's energy counter and a fan, the P4 without); when GPU 1 is
# lost it is reported lost, its series are dropped, NVML is re-initialised (the simulated
# library counts its nvmlInit calls), and GPU 0 keeps being collected.
. "$(dirname "$0")/../lib/common.sh"
export LABNODE_FAKE_NVML_INIT_LOG="$T/nvml-inits"
inits() { [ -f "$LABNODE_FAKE_NVML_INIT_LOG" ] && wc -l <"$LABNODE_FAKE_NVML_INIT_LOG" || echo 0; }

# GPU 1 falls off the bus when the test creates this file.
jq --arg f "$T/gpu1-lost" '.gpus[1].lost_if_exists = $f' \
  "$(dirname "$0")/../fake-nvml/profiles/two-gpus.json" >"$T/profile.json"
start_gpu_agent "$T/profile.json"
start_prometheus "127.0.0.1:$port"
two() { [ "$(prom_query "$prom" 'labnode_gpu_devices')" = 2 ] && [ "$(prom_query "$prom" 'count(labnode_gpu_info)')" = 2 ]; }
wait_for 20 "two GPUs in Prometheus" two

v='{gpu="1",uuid="GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"}'
expect_value "$prom" "labnode_gpu_memory_total_bytes$v" $((16160 * 1048576))
expect_value "$prom" "labnode_gpu_power_watts$v" 150 0.01
expect_value "$prom" "labnode_gpu_fan_speed_ratio$v" 0.45
expect_value "$prom" 'count(labnode_gpu_energy_joules_total{gpu="1",source="nvml"})' 1
expect_value "$prom" 'count(labnode_gpu_energy_joules_total{gpu="0",source="integrated"})' 1
expect_value "$prom" 'labnode_gpu_field_supported{gpu="1",field="fan_speed"}' 1
expect_value "$prom" 'labnode_gpu_field_supported{gpu="0",field="fan_speed"}' 0
expect_value "$prom" 'labnode_gpu_utilization_ratio{gpu="0"}' 0.37
expect_value "$prom" 'labnode_gpu_utilization_ratio{gpu="1"}' 0.8
note "two GPUs, each with its own values; energy source nvml on the V100, integrated on the P4"
[ "$(inits)" = 1 ] || fail "NVML was initialised $(inits) times before any GPU was lost, want 1"

touch "$T/gpu1-lost"
lost() { [ "$(prom_query "$prom" "labnode_gpu_lost$v")" = 1 ]; }
wait_for 20 "GPU 1 to be reported lost" lost
reinit() { [ "$(inits)" -ge 2 ]; }
wait_for 10 "nvmlInit to be called again after the loss" reinit
grep -q 'NVML re-initialised from .* after a lost GPU' "$T/labnode.log" || fail "the re-initialisation was not logged"
sleep 2 # let Prometheus see a few scrapes after the loss
scrape m.txt
grep -q '^labnode_gpu_temperature_celsius{gpu="1"' "$T/m.txt" && fail "the lost GPU's series are still exported"
[ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="gpu"}')" = 1 ] || fail "the collector went down with one GPU lost"
t0=$(metric_value "$T/m.txt" 'labnode_gpu_energy_joules_total{gpu="0",uuid="GPU-5f1c2e3a-8d4b-4c1e-9a7f-2b6d0e1f3a4c",source="integrated"}')
sleep 2
scrape m2.txt
t1=$(metric_value "$T/m2.txt" 'labnode_gpu_energy_joules_total{gpu="0",uuid="GPU-5f1c2e3a-8d4b-4c1e-9a7f-2b6d0e1f3a4c",source="integrated"}')
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b > a) }' || fail "GPU 0 stopped being collected ($t0 -> $t1 J)"
grep -q 'GPU fell off the bus' "$T/labnode.log" || fail "the loss was not logged"
lost() { [ "$(prom_query "$prom" "labnode_gpu_lost$v")" = 1 ]; }
lost || fail "GPU 1 is no longer reported lost after NVML was re-initialised"
note "GPU 1 lost: reported, its series dropped, NVML re-initialised ($(inits) nvmlInit calls so far), GPU 0 still collected after it ($t0 -> $t1 J)"
