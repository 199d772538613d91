# Helpers of the network system tests: labs of two namespaces built by labnode-netlab.
# Source after common.sh. Needs root, ip, tc; wireguard-go and wg for tunnels.

: "${LABNODE_NETLAB_BIN:?LABNODE_NETLAB_BIN must point at the labnode-netlab binary (tests/run sets it)}"

# lab_name PREFIX: a lab name unique to this test run (1 letter + digits, at most 8).
lab_name() { echo "$1$(($$ % 100000))"; }

# start_lab NAME ARGS...: builds the lab in the background (torn down when the test exits)
# and waits for it; sets NSA, NSB (namespaces), IFA, IFB, ADDRA, ADDRB, and for a tunnel
# WGA, WGB, WGADDRA, WGADDRB, WGKEYA, WGKEYB.
start_lab() {
  local name=$1
  shift
  bg "lab-$name" "$LABNODE_NETLAB_BIN" up --name "$name" --ready-file "$T/lab-$name.json" "$@"
  lab_pid=$last_pid
  local end=$((SECONDS + 30))
  until [ -s "$T/lab-$name.json" ]; do
    kill -0 "$lab_pid" 2>/dev/null || fail "labnode-netlab exited: $(cat "$T/lab-$name.log")"
    [ "$SECONDS" -lt "$end" ] || fail "the lab did not come up in 30 s: $(cat "$T/lab-$name.log")"
    sleep 0.1
  done
  local j="$T/lab-$name.json"
  NSA=$(jq -r .a.netns "$j") NSB=$(jq -r .b.netns "$j")
  IFA=$(jq -r .a.interface "$j") IFB=$(jq -r .b.interface "$j")
  ADDRA=$(jq -r .a.address "$j") ADDRB=$(jq -r .b.address "$j")
  WGA=$(jq -r '.a.wireguard_interface // empty' "$j") WGB=$(jq -r '.b.wireguard_interface // empty' "$j")
  WGADDRA=$(jq -r '.a.wireguard_address // empty' "$j") WGADDRB=$(jq -r '.b.wireguard_address // empty' "$j")
  WGKEYA=$(jq -r '.a.wireguard_public_key // empty' "$j") WGKEYB=$(jq -r '.b.wireguard_public_key // empty' "$j")
}

# stop_lab [SIGNAL]: tears the lab down now (SIGTERM, or SIGNAL, to labnode-netlab, as an
# interrupted holder would get) and checks nothing is left.
stop_lab() {
  kill -s "${1:-TERM}" "$lab_pid" 2>/dev/null || true
  wait "$lab_pid" 2>/dev/null || true
  ! ip netns list | grep -qE "^($NSA|$NSB)( |$)" || fail "namespaces left behind after teardown"
  if [ -n "$WGA" ]; then
    [ ! -e "/var/run/wireguard/$WGA.sock" ] && [ ! -e "/var/run/wireguard/$WGB.sock" ] || fail "UAPI sockets left behind"
  fi
}

in_a() { ip netns exec "$NSA" "$@"; }
in_b() { ip netns exec "$NSB" "$@"; }

# new_token FILE: a random token.
new_token() { head -c 32 /dev/urandom | base64 | tr -d '\n' >"$1"; }

# start_probe_server NS LISTEN ALLOW [ARGS...]: labnode net serve in NS; sets $fp and
# $server_pid.
start_probe_server() {
  local ns=$1 listen=$2 allow=$3
  shift 3
  bg "serve-$ns" ip netns exec "$ns" "$LABNODE_BIN" net serve --listen "$listen" --token-file "$T/token" --allow "$allow" "$@"
  server_pid=$last_pid
  local end=$((SECONDS + 15))
  until grep -q '^fingerprint ' "$T/serve-$ns.log" 2>/dev/null; do
    kill -0 "$server_pid" 2>/dev/null || fail "net serve exited: $(cat "$T/serve-$ns.log")"
    [ "$SECONDS" -lt "$end" ] || fail "net serve printed no fingerprint in 15 s"
    sleep 0.1
  done
  fp=$(awk '/^fingerprint /{print $2}' "$T/serve-$ns.log")
}

# check JQ WHY SHOW: a jq condition over $T/bench.json; fails with WHY and the value of
# the jq expression SHOW when it is false.
check() {
  jq -e "$1" "$T/bench.json" >/dev/null || fail "$2: $(jq -c "$3" "$T/bench.json" 2>/dev/null)"
}
