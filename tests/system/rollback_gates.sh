#!/usr/bin/env bash
# The gates that look at other parts of the host, each against the real thing or the
# contract's exposition, through `labnode drill rollback`: Prometheus targets (a real
# Prometheus scraping a real labnode; a down target and one not scraped since the switch
# are red), the GPU through NVML (the simulated NVML library: a Tesla P4 passes, a driver
# that is not loaded and a GPU that fell off the bus are red), WireGuard and ZFS read from
# exporters serving the contract's series, a command; and bad gate configuration.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/rollback.sh"
: "${LABNODE_FAKE_NVML_LIB:?LABNODE_FAKE_NVML_LIB must point at the simulated NVML library}"
P4="$(cd "$(dirname "$0")/../fake-nvml/profiles" && pwd)"

# Two generations that only move the current-system link.
echo "ln -sfn \"\$out\" $T/current-system" >"$T/activate.sh"
a=$(generation "gates-a-$$" "$T/activate.sh")
echo "# b" >>"$T/activate.sh"
b=$(generation "gates-b-$$" "$T/activate.sh")
profile="$T/profiles/system"
mkdir -p "$T/profiles"
nix-env --profile "$profile" --set "$a" 2>/dev/null
nix-env --profile "$profile" --set "$b" 2>/dev/null
ln -sfn "$b" "$T/current-system"

# A real Prometheus scraping a real labnode, and one dead target in another job.
lport=$(free_port)
bg labnode "$LABNODE_BIN" serve --collector system --listen "127.0.0.1:$lport"
wait_for 10 "labnode" curl -fsS "http://127.0.0.1:$lport/metrics"
dead=$(free_port)
pport=$(free_port)
cat >"$T/prometheus.yml" <<YAML
global: {scrape_interval: 500ms, scrape_timeout: 400ms}
scrape_configs:
  - {job_name: labnode, static_configs: [{targets: ['127.0.0.1:$lport']}]}
  - {job_name: gone, static_configs: [{targets: ['127.0.0.1:$dead']}]}
YAML
bg prometheus prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/pdata" --web.listen-address="127.0.0.1:$pport"
wait_for 30 "prometheus" curl -fsS "http://127.0.0.1:$pport/-/ready"
up() { curl -fsS "http://127.0.0.1:$pport/api/v1/targets" | jq -e '.data.activeTargets[] | select(.labels.job == "labnode" and .health == "up")' >/dev/null; }
wait_for 30 "the labnode target to be up" up

# Exporters serving the contract's WireGuard and ZFS series (the net and zfs collectors'
# names and labels), from files busybox httpd serves as they are rewritten.
mkdir -p "$T/exp"
eport=$(free_port)
bg exporters busybox httpd -f -p "127.0.0.1:$eport" -h "$T/exp"
serve_metrics() { printf '%s\n' "$@" >"$T/exp/metrics.tmp" && mv "$T/exp/metrics.tmp" "$T/exp/metrics"; }
serve_metrics '# TYPE labnode_net_wireguard_peer_handshake_age_seconds gauge' \
  'labnode_net_wireguard_peer_handshake_age_seconds{interface="wg0",peer="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 42' \
  '# TYPE labnode_zfs_pool_state gauge' \
  'labnode_zfs_pool_state{pool="tank",state="online"} 1' 'labnode_zfs_pool_state{pool="tank",state="degraded"} 0'
wait_for 10 "the exporter files" curl -fsS "http://127.0.0.1:$eport/metrics"

config() { # EXTRA_GATE_YAML...
  {
    cat <<YAML
snapshot_dir: $T/snaps
rollback:
  profile: $profile
  current_system: $T/current-system
  state_dir: $T/state
  gate_timeout: 2s
  gates:
    - name: targets
      prometheus_targets: {url: "http://127.0.0.1:$pport", jobs: [labnode]}
    - name: gpu
      gpu: {devices: 1, library: "$LABNODE_FAKE_NVML_LIB"}
    - name: wg
      wireguard: {metrics: "http://127.0.0.1:$eport/metrics", interface: wg0, max_age: 180s}
    - name: zfs
      zfs_pools: {metrics: "http://127.0.0.1:$eport/metrics", pools: [tank]}
    - name: cmd
      command: [test, -e, "$T/current-system"]
YAML
    for g in "$@"; do echo "$g"; done
  } >"$T/labnode.yaml"
}
drill() { "$LABNODE_BIN" drill rollback --yes --config "$T/labnode.yaml" "$@"; }
gate() { # SNAPSHOT DIRECTION GATE FIELD
  record "$1" rollback_drill ".directions[] | select(.direction == \"$2\") | .gates[] | select(.name == \"$3\") | .$4"
}

# 1. Everything green. The Prometheus gate only counts scrapes after the switch.
config
export LABNODE_FAKE_NVML_PROFILE="$P4/tesla-p4.json"
drill >"$T/green.txt" 2>&1 || fail "the drill failed: $(cat "$T/green.txt")"
s=$(newest_snapshot "$T/snaps")
for g in targets gpu wg zfs cmd; do
  [ "$(gate "$s" rollback "$g" passed)" = true ] || fail "gate $g did not pass: $(cat "$T/green.txt")"
done
t=$(gate "$s" rollback targets first_pass_seconds)
awk -v t="$t" 'BEGIN { exit !(t > 0.05 && t < 1.5) }' || fail "the targets gate passed at ${t}s: not waiting for a scrape after the switch?"
note "all green: Prometheus targets (first pass ${t}s: the next 500 ms scrape), NVML (Tesla P4), WireGuard, ZFS, command"

# red RUN GATE PATTERN FIX...: the drill RUN fails on GATE with a reason matching PATTERN.
# The fault is on both generations, so the drill cannot end healthy: the marker stays, with
# the reason, and nothing is recorded yet. Once FIX has cleared the fault, `safe-switch
# --recover` (what the guard or the boot unit retries) ends it, and the drill's one record
# says why its rollback failed.
red() {
  local rc=0 run=$1 gate=$2 pattern=$3 before
  shift 3
  before=$(newest_snapshot "$T/snaps")
  drill --label "$run" >"$T/$run.txt" 2>&1 || rc=$?
  [ "$rc" = 1 ] || fail "$run: exit $rc, want 1: $(cat "$T/$run.txt")"
  [ "$(newest_snapshot "$T/snaps")" = "$before" ] || fail "$run: recorded while the host is not healthy"
  jq -r .recovery.last_error "$T/state/pending.json" | grep -qE "$pattern" ||
    fail "$run: the marker does not keep the reason: $(jq -c .recovery "$T/state/pending.json" 2>&1)"
  "$@"
  "$LABNODE_BIN" safe-switch --recover --config "$T/labnode.yaml" >"$T/$run-recover.txt" 2>&1 ||
    fail "$run: recovery after the fix failed: $(cat "$T/$run-recover.txt")"
  [ ! -e "$T/state/pending.json" ] || fail "$run: the marker is left after a healthy recovery"
  set -- "$run" "$gate" "$pattern"
  s=$(newest_snapshot "$T/snaps")
  [ "$(gate "$s" rollback "$2" passed)" = false ] || fail "$1: gate $2 passed"
  why=$(gate "$s" rollback "$2" last_error)
  grep -qE "$3" <<<"$why" || fail "$1: gate $2 is red for another reason: $why"
  [ "$(profile_gen "$profile")" = 2 ] || fail "$1: not back on generation 2"
  note "$1: $2 red: $why (marker kept until the fault was cleared, then recovered)"
}

# 2. Each gate red for its own reason.
good_metrics() {
  serve_metrics 'labnode_net_wireguard_peer_handshake_age_seconds{interface="wg0",peer="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 42' \
    'labnode_zfs_pool_state{pool="tank",state="online"} 1' 'labnode_zfs_pool_state{pool="tank",state="degraded"} 0'
}
export LABNODE_FAKE_NVML_PROFILE="$P4/init-failure.json"
red no-driver gpu "cannot initialise NVML: .*(Driver Not Loaded|driver is not loaded|DriverNotLoaded)" \
  export LABNODE_FAKE_NVML_PROFILE="$P4/tesla-p4.json"
jq '.gpus[0].lost_if_exists = "'"$T/lost"'"' "$P4/tesla-p4.json" >"$T/lost-p4.json"
touch "$T/lost"
export LABNODE_FAKE_NVML_PROFILE="$T/lost-p4.json"
red gpu-lost gpu "GPU 0: device fell off the bus" rm "$T/lost"
export LABNODE_FAKE_NVML_PROFILE="$P4/tesla-p4.json"
serve_metrics 'labnode_net_wireguard_peer_handshake_age_seconds{interface="wg0",peer="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 600' \
  'labnode_zfs_pool_state{pool="tank",state="online"} 1' 'labnode_zfs_pool_state{pool="tank",state="degraded"} 0'
red stale-handshake wg "wg0: peer xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= last handshake 600s ago \(max 180s\)" good_metrics
serve_metrics 'labnode_net_wireguard_peer_handshake_age_seconds{interface="wg0",peer="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 42' \
  'labnode_zfs_pool_state{pool="tank",state="online"} 0' 'labnode_zfs_pool_state{pool="tank",state="degraded"} 1'
red degraded-pool zfs "tank is DEGRADED" good_metrics
config "    - name: gone" "      prometheus_targets: {url: \"http://127.0.0.1:$pport\", jobs: [gone]}"
red target-down gone "gone/127.0.0.1:$dead down: .*connection refused" config

# 3. Bad gate configuration: located, exit 2, nothing run.
printf 'rollback:\n  gates:\n    - name: x\n      tcp: 127.0.0.1:1\n      http: {url: "http://127.0.0.1:1/"}\n' >"$T/bad.yaml"
rc=0
"$LABNODE_BIN" config check "$T/bad.yaml" >"$T/bad.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "bad.yaml:3:7: key \`rollback.gates\[0\]\`: gate 1 must have exactly one check .* it has tcp, http" "$T/bad.txt" ||
  fail "two checks in one gate: exit $rc: $(cat "$T/bad.txt")"
printf 'rollback:\n  gates:\n    - systemd_active: [sshd.service]\n      timout: 5s\n' >"$T/bad.yaml"
rc=0
"$LABNODE_BIN" drill rollback --config "$T/bad.yaml" >"$T/bad.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "bad.yaml:4:7: key \`rollback.gates\[0\].timout\`: unknown field \`timout\`" "$T/bad.txt" ||
  fail "a typo in a gate: exit $rc: $(cat "$T/bad.txt")"
rc=0
"$LABNODE_BIN" safe-switch --to "$T" --config "$T/labnode.yaml" >"$T/bad.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "has no executable bin/switch-to-configuration: not a NixOS system closure" "$T/bad.txt" ||
  fail "safe-switch to a non-system: exit $rc: $(cat "$T/bad.txt")"
note "bad configuration and arguments: file:line:column, the key, exit 2"
