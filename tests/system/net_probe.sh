#!/usr/bin/env bash
# labnode net serve|bench on the real kernel, between two network namespaces joined by an
# emulated link (labnode-netlab):
#  1. a 1 Gbit/s veth link (tbf): TCP CUBIC and BBR, QUIC CUBIC and BBR complete, every
#     goodput is within the shaped rate and plausible, the snapshot holds the record;
#  2. refusals: a wrong token, a client outside the allowlist, a malformed request, a test
#     over the duration cap, while an idle connection is held open: each is refused with
#     its reason; a flood from outside the allowlist leaves every request of a good client
#     served, and the server still serves a good client afterwards;
#  3. a WAN-like path (TUN relay: 40 ms RTT, 0.5% loss, 100 Mbit/s): RTT under load is at
#     least the added delay, and BBR beats CUBIC.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/net.sh"
new_token "$T/token"

# 1. 1 Gbit/s.
start_lab "$(lab_name p)" --link veth --rate 1gbit
start_probe_server "$NSB" "$ADDRB:9470" "$ADDRA/32" --max-duration 10
in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 2 \
  --tcp cubic,bbr --quic cubic,bbr --fingerprint "$fp" --json --label gbit --out "$T/snaps" \
  >"$T/bench.json" 2>"$T/bench.err" || fail "bench: $(cat "$T/bench.err")"
check '.runs | length == 4' "four runs" '.runs'
check '[.runs[] | .throughput_bits_per_second <= 1.02e9] | all' "goodput above the shaped 1 Gbit/s" '[.runs[].throughput_bits_per_second]'
check '[.runs[] | select(.protocol == "tcp") | .throughput_bits_per_second >= 5e8] | all' "TCP below half the link" '[.runs[].throughput_bits_per_second]'
check '[.runs[] | select(.protocol == "quic") | .throughput_bits_per_second >= 1e8] | all' "QUIC below 100 Mbit/s" '[.runs[].throughput_bits_per_second]'
check '[.runs[] | .rtt_seconds > 0 and .client_cpu_seconds > 0 and .server_cpu_seconds > 0 and .bytes > 0] | all' "missing RTT or CPU" '.runs'
check '[.runs[] | select(.protocol == "quic") | .gso != null] | all' "QUIC runs must say whether GSO was on" '.runs'
check '[.runs[] | select(.protocol == "quic" and .congestion == "bbr") | .experimental] | all' "quinn's BBR must be flagged experimental" '.runs'
grep -q $'\r' "$T/bench.err" && fail "a progress bar was drawn without a terminal"
note "1 Gbit/s veth: $(jq -r '[.runs[] | "\(.protocol)/\(.congestion) \(.throughput_bits_per_second / 1e6 | floor) Mbit/s"] | join(", ")' "$T/bench.json")"
snap=$(ls "$T"/snaps/*-gbit.json)
jq -e '(.records[] | select(.kind == "net_bench") | .data.runs | length) == 4 and
  ([.samples[] | select(.metric == "labnode_net_probe_throughput_bytes_per_second" and .labels.path == "direct")] | length) == 4 and
  ([.samples[] | select(.metric == "labnode_net_probe_cpu_seconds_per_gigabit")] | length) == 8' "$snap" >/dev/null ||
  fail "the snapshot lacks the net_bench record or its samples: $(jq -c '[.samples[].metric] | unique' "$snap")"
note "snapshot $(basename "$snap"): a net_bench record and the contract's probe samples"

# The text table on request, with the experimental note.
in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 1 --quic bbr \
  --fingerprint "$fp" --out "$T/snaps" >"$T/table.txt" 2>&1 || fail "table bench: $(cat "$T/table.txt")"
grep -Eq '^quic +bbr +[0-9.]+' "$T/table.txt" && grep -q 'experimental upstream' "$T/table.txt" ||
  fail "no table row or no experimental note: $(cat "$T/table.txt")"

# The progress line: drawn on a terminal (a pty from script(1)), never with CI=true.
pty_bench() { # ENV-ARGS...: net bench on a pseudo-terminal, with env(1) arguments
  env "$@" script -qec "ip netns exec $NSA $LABNODE_BIN net bench --peer $ADDRB:9470 --token-file $T/token --duration 1 --tcp cubic --out $T/snaps" /dev/null
}
pty_bench -u CI >"$T/pty.out" 2>&1 || fail "bench on a pty: $(cat "$T/pty.out")"
grep -Eq '  tcp/cubic +\[[=> ]{30}\] +[0-9.]+/1 s +[0-9.]+ Mbit/s' "$T/pty.out" || fail "no progress line on a terminal: $(cat -v "$T/pty.out" | head -5)"
pty_bench CI=true >"$T/pty-ci.out" 2>&1 || fail "bench on a pty with CI=true: $(cat "$T/pty-ci.out")"
grep -q 'tcp/cubic *\[' "$T/pty-ci.out" && fail "a progress line with CI=true: $(cat -v "$T/pty-ci.out" | head -5)"
note "progress line: drawn on a terminal, not with CI=true, not without a terminal"

# 2. Refusals, with an idle connection held open the whole time.
in_a bash -c "exec 3<>/dev/tcp/$ADDRB/9470; sleep 30" &
idle=$!
_pids+=("$idle")
refused() { # WHAT WANT_EXIT WANT_TEXT COMMAND...
  local what=$1 want=$2 text=$3 rc=0
  shift 3
  "$@" >"$T/ref.out" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || fail "$what: exit $rc, want $want: $(cat "$T/ref.out")"
  grep -q "$text" "$T/ref.out" || fail "$what: no \"$text\" in: $(cat "$T/ref.out")"
  note "$what: exit $rc, $(grep -m1 -o "$text.*" "$T/ref.out" | cut -c1-90)"
}
head -c 32 /dev/urandom | base64 >"$T/wrong-token"
refused "wrong token" 1 "refused the test: wrong token" \
  in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/wrong-token" --duration 1 --tcp cubic --out "$T/snaps"
# The server's own namespace connects from $ADDRB, which is not in the allowlist.
refused "outside the allowlist" 1 "is not in this server's allowlist" \
  in_b "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 1 --tcp cubic --out "$T/snaps"
refused "over the duration cap" 1 "allows up to 10.0 s" \
  in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 30 --tcp cubic --out "$T/snaps"
malformed=$(in_a bash -c "exec 3<>/dev/tcp/$ADDRB/9470; printf 'GET / HTTP/1.0\r\n\r\n' >&3; head -n1 <&3")
jq -e '.type == "refused" and (.error | startswith("malformed request"))' <<<"$malformed" >/dev/null ||
  fail "a malformed request got: $malformed"
note "malformed request: $(jq -r .error <<<"$malformed" | cut -c1-90)"
refused "a bad argument" 2 "needs --fingerprint" \
  in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --quic cubic
# A flood from outside the allowlist (the server's own namespace): turned away at accept, it
# takes no thread or place, and every request of the allowed client is served meanwhile.
in_b bash -c "end=\$((SECONDS + 10)); n=0; while [ \$SECONDS -lt \$end ]; do (exec 4<>/dev/tcp/$ADDRB/9470 && printf 'x\n' >&4) 2>/dev/null; n=\$((n + 1)); done; echo \$n >$T/flood.n" &
flood=$!
_pids+=("$flood")
sleep 0.5
for i in 1 2 3 4 5; do
  in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 0.5 --tcp cubic \
    --out "$T/snaps" >"$T/flood.out" 2>&1 || fail "request $i during a flood from outside the allowlist: $(cat "$T/flood.out")"
done
wait "$flood" || true
[ "$(cat "$T/flood.n" 2>/dev/null || echo 0)" -gt 100 ] || fail "the flood made only $(cat "$T/flood.n" 2>/dev/null) connections"
note "a flood of $(cat "$T/flood.n") connections from outside the allowlist: 5 of 5 requests served meanwhile"
kill -0 "$server_pid" || fail "the server died"
in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 1 --tcp bbr --json \
  --out "$T/snaps" >"$T/bench.json" 2>"$T/bench.err" || fail "a good client after the refusals: $(cat "$T/bench.err")"
check '.runs[0].throughput_bits_per_second > 1e8' "goodput after the refusals" '.runs'
kill "$idle" 2>/dev/null || true
note "after the refusals, with an idle connection open, a good client still gets $(jq -r '.runs[0].throughput_bits_per_second / 1e6 | floor' "$T/bench.json") Mbit/s"
stop_lab

# 3. WAN-like: 40 ms RTT, 0.5% loss, 100 Mbit/s.
start_lab "$(lab_name w)" --link relay --rate 100mbit --rtt 40ms --loss 0.5
start_probe_server "$NSB" "$ADDRB:9470" "$ADDRA/32"
in_a "$LABNODE_BIN" net bench --peer "$ADDRB:9470" --token-file "$T/token" --duration 4 \
  --tcp cubic,bbr --quic cubic,bbr --fingerprint "$fp" --json --path wan --out "$T/snaps" \
  >"$T/bench.json" 2>"$T/bench.err" || fail "WAN bench: $(cat "$T/bench.err")"
check '.runs | length == 4' "four runs" '.runs'
check '[.runs[] | .throughput_bits_per_second <= 1.02e8] | all' "goodput above the shaped 100 Mbit/s" '[.runs[].throughput_bits_per_second]'
check '[.runs[] | .rtt_seconds >= 0.040 and .min_rtt_seconds >= 0.040] | all' "RTT below the added 40 ms" '[.runs[] | [.rtt_seconds, .min_rtt_seconds]]'
check '[.runs[] | select(.protocol == "tcp")] | (.[] | select(.congestion == "bbr") | .throughput_bits_per_second) > (.[] | select(.congestion == "cubic") | .throughput_bits_per_second)' \
  "TCP BBR does not beat CUBIC on a lossy path" '[.runs[] | [.protocol, .congestion, .throughput_bits_per_second]]'
check '[.runs[] | select(.protocol == "tcp") | .retransmitted > 0] | all' "0.5% loss but no retransmissions" '[.runs[].retransmitted]'
note "WAN 40 ms / 0.5% / 100 Mbit/s: $(jq -r '[.runs[] | "\(.protocol)/\(.congestion) \(.throughput_bits_per_second / 1e6 * 10 | floor / 10) Mbit/s rtt \(.rtt_seconds * 1000 | floor) ms"] | join(", ")' "$T/bench.json")"
stop_lab
note "labs torn down: no namespaces or sockets left"
