#!/usr/bin/env bash
# The net collector against a real wireguard-go tunnel between two namespaces (the kernel
# here has no WireGuard module, so the collector reads the UAPI socket; the generic
# netlink path is covered by unit tests on kernel-format messages):
#  1. net bench runs through the tunnel (--path wireguard) and its result is exported;
#  2. the collector's handshake age and byte counters match `wg show <if> dump`;
#  3. the exposition passes promtool check metrics; the other namespace's UAPI socket in
#     the shared directory is not read;
#  4. a real Prometheus in the namespace loads the shipped network rules and every panel
#     query of the network dashboard returns series from this collector.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/net.sh"
M="$(cd "$(dirname "$0")/../../modules/monitoring" && pwd)"
new_token "$T/token"
start_lab "$(lab_name g)" --link veth --rate 1gbit --wireguard
[ -S "/var/run/wireguard/$WGA.sock" ] && [ -S "/var/run/wireguard/$WGB.sock" ] || fail "no UAPI sockets"

# The agent inside namespace a: the net collector every second.
cat >"$T/agent.yaml" <<YAML
listen: 127.0.0.1:9466
snapshot_dir: $T/snaps
collectors:
  system: {enabled: false}
  gpu: {enabled: false}
  net: {interval: 1s, deadline: 1s}
YAML
bg agent ip netns exec "$NSA" "$LABNODE_BIN" serve --config "$T/agent.yaml"
scrape_a() { in_a curl -fsS http://127.0.0.1:9466/metrics >"$T/$1"; }
net_up() { scrape_a first.prom && grep -q "labnode_collector_up{collector=\"net\"} 1" "$T/first.prom"; }
wait_for 15 "the net collector in $NSA to be up" net_up
grep -q "labnode_net_wireguard_peer_handshake_age_seconds" "$T/first.prom" &&
  fail "a handshake age before any handshake (must be absent)"
grep -q "labnode_net_wireguard_peers{interface=\"$WGA\"} 1" "$T/first.prom" || fail "no peer count for $WGA"
# What WireguardHandshakeStale's rule for a peer that never shook hands, and the report's
# wireguard_up, count such a peer by: its byte counters, there without a handshake age.
grep -q "labnode_net_wireguard_peer_transmit_bytes_total{interface=\"$WGA\",peer=" "$T/first.prom" ||
  fail "no transmit counter for $WGA's peer before its first handshake"
grep -q "interface=\"$WGB\"" "$T/first.prom" && fail "read $WGB, the other namespace's interface, through the shared socket directory"
note "before any traffic: $WGA has 1 peer, no handshake age (absent, not 0 or 1970) but its byte counters, $WGB not read"

# 1. The bench through the tunnel.
start_probe_server "$NSB" "$WGADDRB:9470" "$WGADDRA/32"
in_a "$LABNODE_BIN" net bench --peer "$WGADDRB:9470" --token-file "$T/token" --duration 2 --tcp bbr,cubic \
  --quic bbr --fingerprint "$fp" --path wireguard --json --label tunnel --out "$T/snaps" \
  >"$T/bench.json" 2>"$T/bench.err" || fail "bench through the tunnel: $(cat "$T/bench.err")"
check '.runs | length == 3' "three runs" '.runs'
check '[.runs[] | .throughput_bits_per_second > 1e7 and .throughput_bits_per_second <= 1.02e9] | all' \
  "goodput through the tunnel out of range" '[.runs[].throughput_bits_per_second]'
note "through wireguard-go: $(jq -r '[.runs[] | "\(.protocol)/\(.congestion) \(.throughput_bits_per_second / 1e6 | floor) Mbit/s"] | join(", ")' "$T/bench.json")"

# 2. Against wg show dump, once the tunnel is idle. A scrape reads the last collection (at
#    most one interval old), so compare ages within one interval and counters exactly,
#    retrying while a late packet (a passive keepalive) moves them.
sleep 2
match=false
for _ in 1 2 3 4 5 6 7 8 9 10; do
  sleep 1.2
  scrape_a now.prom
  now=$(date +%s.%N)
  dump=$(in_a wg show "$WGA" dump | sed -n 2p)
  read -r key _ _ _ hs wrx wtx _ <<<"$dump"
  [ "$key" = "$WGKEYB" ] || fail "wg show lists peer $key, not $WGKEYB"
  series() { metric_value "$T/now.prom" "$1{interface=\"$WGA\",peer=\"$WGKEYB\"}"; }
  age=$(series labnode_net_wireguard_peer_handshake_age_seconds)
  rx=$(series labnode_net_wireguard_peer_receive_bytes_total)
  tx=$(series labnode_net_wireguard_peer_transmit_bytes_total)
  [ -n "$age" ] && [ -n "$rx" ] && [ -n "$tx" ] || fail "peer series missing: $(grep wireguard "$T/now.prom")"
  wg_age=$(awk -v n="$now" -v h="$hs" 'BEGIN { print n - h }')
  # When the collector read it: its age then plus the time since must be wg's age now
  # (wg prints whole seconds, so it may be up to 1 s more), and that read must be at most
  # one interval (1 s, plus scheduling slack on a busy machine) old.
  ts=$(metric_value "$T/now.prom" 'labnode_collector_last_success_timestamp_seconds{collector="net"}')
  lag=$(awk -v n="$now" -v t="$ts" 'BEGIN { print n - t }')
  if awk -v a="$age" -v l="$lag" -v w="$wg_age" 'BEGIN { d = w - (a + l); exit !(d >= -0.2 && d <= 1.2 && l <= 1.5) }' &&
    [ "$(printf '%.0f' "$rx")" = "$wrx" ] && [ "$(printf '%.0f' "$tx")" = "$wtx" ]; then
    match=true
    break
  fi
done
$match || fail "collector (age $age read $lag s earlier, rx $rx, tx $tx) vs wg show dump (age $wg_age, rx $wrx, tx $wtx)"
[ "$wrx" -gt 1000000 ] || fail "the tunnel carried only $wrx bytes"
note "collector vs wg show dump: handshake age $age s (read $lag s before wg's) vs $wg_age s, rx $wrx = $(printf '%.0f' "$rx"), tx $wtx = $(printf '%.0f' "$tx")"
grep -q "labnode_net_wireguard_interface_info{interface=\"$WGA\",source=\"uapi\"} 1" "$T/now.prom" || fail "no source=uapi info"
grep -q "labnode_net_wireguard_peer_endpoint_info{interface=\"$WGA\",peer=\"$WGKEYB\",endpoint=\"$ADDRB:51820\"} 1" "$T/now.prom" ||
  fail "endpoint: $(grep endpoint "$T/now.prom")"
grep -q "labnode_net_wireguard_peer_allowed_ips{interface=\"$WGA\",peer=\"$WGKEYB\"} 1" "$T/now.prom" || fail "allowed IPs count"
grep -q "labnode_net_probe_throughput_bytes_per_second{protocol=\"tcp\",congestion=\"bbr\",path=\"wireguard\"}" "$T/now.prom" ||
  fail "the bench result is not exported: $(grep probe "$T/now.prom" | head -3)"

# 3. promtool.
out=$(promtool check metrics <"$T/now.prom" 2>&1) || fail "promtool check metrics failed: $out"
[ -z "$out" ] || fail "promtool check metrics: $out"
note "promtool check metrics: clean ($(grep -vc '^#' "$T/now.prom") series)"

# 4. Prometheus in namespace a with the shipped rules; the network dashboard's queries.
pport=9090
fast_rules "$M/rules/recording.yaml" "$T/recording.yaml"
{
  echo "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}"
  echo "rule_files: ['$M/rules/network.yaml', '$T/recording.yaml']"
  echo "scrape_configs: [{job_name: labnode-net, static_configs: [{targets: ['127.0.0.1:9466']}]}]"
} >"$T/prometheus.yml"
bg prometheus ip netns exec "$NSA" prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/pdata" \
  --web.listen-address="127.0.0.1:$pport"
q() { in_a curl -fsS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1"; }
# Traffic during the scrapes, so the rates and the retransmit ratio have something to show.
in_a "$LABNODE_BIN" net bench --peer "$WGADDRB:9470" --token-file "$T/token" --duration 8 --tcp cubic \
  --path wireguard --json --out "$T/snaps" >/dev/null 2>"$T/bench2.err" &
traffic=$!
_pids+=("$traffic")
ready() { [ "$(q 'count(instance:labnode_net_tcp_retransmit:ratio_rate5m)' | jq -r '.data.result[0].value[1] // 0')" -ge 1 ]; }
wait_for 60 "Prometheus to scrape the agent and evaluate the recording rule" ready
wait "$traffic" || fail "bench during the scrapes: $(cat "$T/bench2.err")"
checked=0
while IFS=$'\t' read -r title expr; do
  query=$(sed -e 's/\$instance/.*/g; s/\$__rate_interval/1m/g' <<<"$expr")
  resp=$(q "$query")
  [ "$(jq -r .status <<<"$resp")" = success ] || fail "$title: $(jq -r .error <<<"$resp")"
  [ "$(jq '.data.result | length' <<<"$resp")" -gt 0 ] || fail "network dashboard / $title returns no series: $query"
  checked=$((checked + 1))
done < <(jq -r '.panels[] | .title as $t | .targets[] | [$t, .expr] | @tsv' "$M/dashboards/network.json")
rules=$(in_a curl -fsS "http://127.0.0.1:$pport/api/v1/rules")
jq -e '[.data.groups[].rules[] | select(.health != "ok")] | length == 0' <<<"$rules" >/dev/null ||
  fail "unhealthy rules: $(jq -c '[.data.groups[].rules[] | select(.health != "ok") | {name, lastError}]' <<<"$rules")"
for expr in $(grep -hoP '(?<![\w:])labnode_net_\w+(?![\w:])' "$M"/rules/network.yaml "$M"/rules/recording.yaml | sort -u); do
  [ "$(q "count($expr)" | jq -r '.data.result[0].value[1] // 0')" -ge 1 ] || fail "the rules query $expr, which the collector does not export"
done
note "Prometheus: the $checked network dashboard queries return series; every labnode_net_* name in the rules exists; rules healthy"
stop_lab INT
note "lab torn down on SIGINT: namespaces, wireguard-go and its sockets gone"
