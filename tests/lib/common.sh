# Helpers shared by the system tests. Source it; it sets `set -euo pipefail`.
# Each test runs in its own temporary directory ($T) that is removed on exit, and every
# process it starts with `bg` is killed on exit.
set -euo pipefail

: "${LABNODE_BIN:?LABNODE_BIN must point at the labnode binary (tests/run sets it)}"
T=$(mktemp -d "${TMPDIR:-/tmp}/labnode-test.XXXXXX")
_pids=()

cleanup() {
  local p
  for p in "${_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

# Starts a command in the background, its output in $T/<name>.log; its pid is $last_pid.
# Call it directly, never in `$(...)`: a subshell's processes escape the cleanup.
bg() {
  local name=$1
  shift
  "$@" >"$T/$name.log" 2>&1 &
  last_pid=$!
  _pids+=("$last_pid")
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

note() { echo "  $*"; }

. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.2 s.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || fail "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# prom_query PORT PROMQL: the first result's value, or nothing.
prom_query() {
  curl -fsS "http://127.0.0.1:$1/api/v1/query" --data-urlencode "query=$2" |
    jq -r '.data.result[0].value[1] // empty'
}

# Starts a real Prometheus scraping the given targets every second; sets $prom to its port.
# (Not `$(start_prometheus)`: a process started in a subshell escapes the cleanup.)
start_prometheus() {
  local port targets="" t
  port=$(free_port)
  for t in "$@"; do targets+="\"$t\","; done
  cat >"$T/prometheus-$port.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: labnode
    static_configs:
      - targets: [${targets%,}]
YAML
  bg "prometheus-$port" prometheus --config.file="$T/prometheus-$port.yml" \
    --storage.tsdb.path="$T/prometheus-data-$port" \
    --web.listen-address="127.0.0.1:$port"
  wait_for 30 "prometheus to answer" curl -fsS "http://127.0.0.1:$port/-/ready"
  prom=$port
}

# fast_rules SRC DST: a copy of the rule file SRC whose groups are evaluated every second
# instead of every minute, so a test sees recording rules without waiting for a group's
# first evaluation, which Prometheus may place anywhere in the first minute.
fast_rules() {
  sed 's/^\(    interval:\) 1m$/\1 1s/' "$1" >"$2"
  grep -q '^    interval: 1s$' "$2" || fail "$1 has no 1m group interval to shorten"
}

# metric_value TEXT_FILE SERIES: the value of the exposition line that starts with SERIES.
metric_value() {
  awk -v s="$2" 'index($0, s" ") == 1 { print $NF; exit }' "$1"
}

# start_gpu_agent PROFILE [SYSTEM]: labnode serve with the gpu collector on the simulated
# NVML library and the given profile (a name under tests/fake-nvml/profiles or a path);
# SYSTEM=true runs the system collector beside it. Sets $port.
start_gpu_agent() {
  local profile=$1 system=${2:-false}
  : "${LABNODE_FAKE_NVML_LIB:?LABNODE_FAKE_NVML_LIB must point at the simulated NVML library}"
  [ -f "$profile" ] || profile="$(cd "$(dirname "${BASH_SOURCE[0]}")/../fake-nvml/profiles" && pwd)/$profile.json"
  port=$(free_port)
  # The collectors are named, so a collector enabled by default elsewhere never joins in.
  local only=(--collector gpu)
  [ "$system" = true ] && only+=(--collector system)
  cat >"$T/labnode.yaml" <<YAML
listen: 127.0.0.1:$port
collectors:
  system:
    interval: 1s
  gpu:
    interval: 500ms
    deadline: 500ms
    window: 200ms
    library: $LABNODE_FAKE_NVML_LIB
YAML
  LABNODE_FAKE_NVML_PROFILE=$profile bg labnode "$LABNODE_BIN" serve --config "$T/labnode.yaml" "${only[@]}"
  wait_for 10 "labnode to serve" curl -fsS "http://127.0.0.1:$port/metrics"
}

# scrape FILE: one /metrics scrape of the agent on $port into $T/FILE.
scrape() { curl -fsS "http://127.0.0.1:$port/metrics" >"$T/$1"; }

# expect_value PROM_PORT PROMQL WANT [TOLERANCE]: the query's value equals WANT (within
# the relative tolerance, default exact).
expect_value() {
  local got
  got=$(prom_query "$1" "$2")
  [ -n "$got" ] || fail "Prometheus has no value for $2"
  awk -v g="$got" -v w="$3" -v t="${4:-0}" 'BEGIN { d = g - w; if (d < 0) d = -d; m = (w < 0 ? -w : w); exit !(d <= t * m + 1e-9) }' ||
    fail "$2 = $got, want $3"
}
