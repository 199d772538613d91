#!/usr/bin/env bash
# labnode serve, scraped by a real Prometheus: the system collector is up and its memory
# gauges agree with /proc/meminfo; the exposition passes promtool with no warnings.
. "$(dirname "$0")/../lib/common.sh"

port=$(free_port)
cat >"$T/labnode.yaml" <<YAML
listen: 127.0.0.1:$port
collectors:
  system:
    interval: 1s
    deadline: 1s
YAML
bg labnode "$LABNODE_BIN" serve --config "$T/labnode.yaml" --collector system
served_up() {
  curl -fsS "http://127.0.0.1:$port/metrics" >"$T/metrics.txt"
  [ "$(metric_value "$T/metrics.txt" 'labnode_collector_up{collector="system"}')" = 1 ]
}
wait_for 10 "labnode to serve the system collector's first result" served_up

lint=$(promtool check metrics <"$T/metrics.txt" 2>&1) || fail "promtool check metrics: $lint"
[ -z "$lint" ] || fail "promtool check metrics warns: $lint"
note "promtool check metrics: clean ($(grep -vc '^#' "$T/metrics.txt") series)"

start_prometheus "127.0.0.1:$port"
up_is_1() { [ "$(prom_query "$prom" 'labnode_collector_up{collector="system"}')" = 1 ]; }
wait_for 30 'labnode_collector_up{collector="system"} == 1 in Prometheus' up_is_1
note "Prometheus sees labnode_collector_up{collector=\"system\"} = 1"

kb() { awk -v k="$1:" '$1 == k { print $2 * 1024 }' /proc/meminfo; }
within_5pct() { # NAME GOT WANT
  awk -v g="$2" -v w="$3" 'BEGIN { d = (g - w) / w; if (d < 0) d = -d; exit !(d <= 0.05) }' ||
    fail "$1 = $2 is not within 5% of /proc/meminfo's $3"
  note "$1 = $2, /proc/meminfo $3: within 5%"
}
within_5pct labnode_system_memory_total_bytes \
  "$(prom_query "$prom" labnode_system_memory_total_bytes)" "$(kb MemTotal)"
within_5pct labnode_system_memory_available_bytes \
  "$(prom_query "$prom" labnode_system_memory_available_bytes)" "$(kb MemAvailable)"

for m in labnode_system_cpu_utilization_ratio labnode_system_load1 labnode_system_uptime_seconds \
  labnode_system_boot_timestamp_seconds labnode_system_kernel_info labnode_collector_duration_seconds \
  labnode_collector_last_success_timestamp_seconds process_resident_memory_bytes; do
  [ -n "$(prom_query "$prom" "$m")" ] || fail "Prometheus has no $m"
done
sum=$(prom_query "$prom" 'sum(labnode_system_cpu_utilization_ratio)')
awk -v s="$sum" 'BEGIN { exit !(s > 0.99 && s < 1.01) }' || fail "CPU mode ratios sum to $sum, not 1"
note "CPU utilization ratios over all modes sum to $sum"
