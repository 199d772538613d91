#!/usr/bin/env bash
# `labnode demo` as CI runs it (CI=true, no terminal), then interrupted at chosen moments:
#  1. a whole run (3 runs of each test a side): exit 0, a summary on stdout, counting the
#     judged rows and those within noise, and nothing else in the log; report.json has
#     the network rows measured, each with n = 3 and its interval, BBR judged better, (TCP as deployed: CUBIC without a tunnel before, BBR through
#     WireGuard after; CUBIC against BBR on the direct path; the tunnel's cost; RTT under
#     load) within the shaped 100 Mbit/s and the added 40 ms, the rollback rows measured on
#     the after side (recovery at least the scratch service's 2 s start delay, success 100%)
#     and explained on the before side, GPU and ZFS "not measured" with the collector's
#     reason; the HTML report is self-contained; the snapshots are in the store by label;
#  2. not root: exit 2 at once; without wireguard-go and Nix: the rest measured, the tunnel
#     and rollback rows "not measured" with the reason; in that run the simulated NVML
#     library (a Tesla P4) is where the loader looks for libnvidia-ml.so.1, so the GPU
#     rows are measured on both sides with the profile's values;
#  3. SIGINT during the first bench (on a terminal, where progress is drawn), SIGTERM during
#     the rollback drill, SIGHUP during the bench through WireGuard: exit 128+N, no report;
#  and after every run nothing is left: namespaces, WireGuard sockets, wireguard-go, probe
#  servers and benches, the scratch service, the temporary directory, its GC roots.
. "$(dirname "$0")/../lib/common.sh"
for c in ip tc wireguard-go wg nix-build nix-env setsid script jq; do
  command -v "$c" >/dev/null || fail "$c is needed (tests/run installs it)"
done
# The demo's temporary directory goes under $T, so the check below is about this run only.
export TMPDIR=$T

# leftovers PID: what a demo with this pid left behind, one per line (nothing: clean).
leftovers() {
  local pid=$1 l t
  ip netns list | grep -E "^labnode-[ab]$pid-[ab]( |$)" | sed 's/^/namespace /' || true
  ls /var/run/wireguard 2>/dev/null | grep -E "^wg[ab]$pid[ab]\.sock$" | sed 's/^/socket /' || true
  pgrep -fa "wireguard-go -f wg[ab]$pid[ab]" | sed 's/^/process /' || true
  # Probe servers, benches and the scratch service all run this binary.
  pgrep -fa "^$LABNODE_BIN " | sed 's/^/process /' || true
  [ -e "$T/labnode-demo-$pid" ] && echo "directory $T/labnode-demo-$pid"
  for l in /nix/var/nix/gcroots/auto/*; do
    t=$(readlink "$l" 2>/dev/null) || continue
    case $t in "$T/labnode-demo-$pid/"*) echo "GC root $l -> $t" ;; esac
  done
  find /nix/var/log/nix -name '*labnode-scratch-demo-web*' -newer "$T/start" 2>/dev/null | sed 's/^/build log /'
  true
}
clean() { # PID WHAT
  local left
  left=$(leftovers "$1")
  [ -z "$left" ] || fail "$2 left behind: $left"
}
touch "$T/start"

# 1. A whole run, as CI runs it.
start=$SECONDS
CI=true "$LABNODE_BIN" demo --out "$T/demo" --duration 2 --repeat 3 >"$T/out.txt" 2>"$T/err.txt" &
pid=$!
rc=0
wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "labnode demo exited $rc: $(cat "$T/err.txt") $(cat "$T/out.txt")"
note "labnode demo (CI=true, --duration 2 --repeat 3): $((SECONDS - start)) s"
clean "$pid" "a finished demo"
[ ! -s "$T/err.txt" ] || fail "a CI run wrote to stderr: $(cat -v "$T/err.txt" | head -5)"
grep -q $'\r' "$T/out.txt" && fail "progress was drawn in a CI log"
for want in "^labnode demo on .*: measured before and after in" "^  link: *a WAN-like link: 100 Mbit/s, 40 ms RTT, 0.5% random loss" \
  "^  network: *TCP as deployed" "^  rows: .* compared: [0-9]+ judged \([0-9]+ better, [0-9]+ worse\), [0-9]+ within noise, [0-9]+ not judged" "^  rollback: *drill on a scratch Nix profile" "^  report: *$T/demo/report.html" \
  "^removed: 4 network namespaces, 2 wireguard-go, 3 probe servers, the scratch service, 2 GC roots"; do
  grep -Eq "$want" "$T/out.txt" || fail "the summary has no line like \"$want\": $(cat "$T/out.txt")"
done
sed 's/^/    | /' "$T/out.txt"
note "demo summary: $(grep -E '^  rows:' "$T/out.txt" | sed 's/^  rows: *//')"

J="$T/demo/report.json"
for f in report.md report.html report.json; do [ -s "$T/demo/$f" ] || fail "no $f"; done
# cell ROW SIDE FIELD: a field of a row's cell.
cell() { jq -r --arg r "$1" --arg s "$2" --arg f "$3" '.groups[].rows[] | select(.id == $r) | .[$s][$f] // empty' "$J"; }
measured() { # ROW SIDE
  [ "$(cell "$1" "$2" provenance)" = measured ] || fail "$1 is not measured $2: $(cell "$1" "$2" why)"
}
not_measured() { # ROW SIDE PATTERN: not measured, for the reason given
  [ "$(cell "$1" "$2" provenance)" = not_measured ] || fail "$1 $2 is $(cell "$1" "$2" provenance), not 'not measured'"
  cell "$1" "$2" why | grep -Eq "$3" || fail "$1 $2 is not measured for another reason than /$3/: $(cell "$1" "$2" why)"
}
between() { # WHAT VALUE LOW HIGH
  awk -v v="$2" -v a="$3" -v b="$4" 'BEGIN { exit !(v != "" && v >= a && v <= b) }' || fail "$1 = $2, not within [$3, $4]"
}
value() { cell "$1" "$2" value; }

# The network rows: each side measured with its own configuration, within the link.
for side in before after; do
  for row in net_deployed net_congestion net_rtt_loaded; do measured "$row" "$side"; done
done
[ "$(jq -r '.before.deployed | "\(.congestion) \(.path)"' "$J")" = "cubic direct" ] || fail "before is not CUBIC without a tunnel: $(jq -c .before.deployed "$J")"
[ "$(jq -r '.after.deployed | "\(.congestion) \(.path)"' "$J")" = "bbr wireguard" ] || fail "after is not BBR through WireGuard: $(jq -c .after.deployed "$J")"
shaped=$((100000000 / 8 * 102 / 100)) # bytes/s: 100 Mbit/s and 2% of slack
for side in before after; do
  between "net_deployed $side (B/s)" "$(value net_deployed "$side")" 1 "$shaped"
  between "net_congestion $side (B/s)" "$(value net_congestion "$side")" 1 "$shaped"
  between "RTT under load $side (s)" "$(value net_rtt_loaded "$side")" 0.040 2
done
awk -v c="$(value net_congestion before)" -v b="$(value net_congestion after)" 'BEGIN { exit !(b > 2 * c) }' ||
  fail "BBR ($(value net_congestion after) B/s) is not twice CUBIC ($(value net_congestion before) B/s) on a path with 0.5% loss"
# Three runs a side: each network cell has n = 3 and its 95% interval, and BBR's gain on
# the lossy link is judged, beyond the noise.
for side in before after; do
  for row in net_deployed net_congestion net_rtt_loaded; do
    [ "$(cell "$row" "$side" n)" = 3 ] || fail "$row $side: n = $(cell "$row" "$side" n), want 3 runs"
    jq -e --arg r "$row" --arg s "$side" '.groups[].rows[] | select(.id == $r) | .[$s].interval
      | .low <= .high and .over == "runs"' "$J" >/dev/null || fail "$row $side has no interval over its runs"
  done
done
jq -e '.groups[].rows[] | select(.id == "net_congestion") | .change.verdict == "better"
  and .change.noise.intervals_overlap == false' "$J" >/dev/null ||
  fail "CUBIC against BBR on the lossy link is not judged better: $(jq -c '.groups[].rows[] | select(.id == "net_congestion") | .change' "$J")"
measured net_wireguard_cost after
between "WireGuard cost" "$(value net_wireguard_cost after)" -0.3 0.6
not_measured net_wireguard_cost before 'none measured .*path="wireguard".*\(they measured .*tcp cubic over direct\)'
note "network: TCP as deployed $(cell net_deployed before display) -> $(cell net_deployed after display), CUBIC vs BBR $(cell net_congestion before display) -> $(cell net_congestion after display), tunnel cost $(cell net_wireguard_cost after display), RTT $(cell net_rtt_loaded before display) -> $(cell net_rtt_loaded after display)"

# The rollback rows: the drill is the after side.
for row in rollback_time rollback_success rto_nixos; do
  measured "$row" after
  not_measured "$row" before 'no rollback_drill record'
done
between "rollback success rate" "$(value rollback_success after)" 1 1
between "recovery until every gate is green (s)" "$(value rto_nixos after)" 2 10
between "rollback switch (s)" "$(value rollback_time after)" 0.001 5
[ "$(jq '[.waterfall[] | select(.after_n == 1)] | length' "$J")" = 2 ] || fail "no waterfall of both directions"
measured generations after
note "rollback: switch $(cell rollback_time after display), every gate green after $(cell rto_nixos after display), success $(cell rollback_success after display)"

# GPU and ZFS: not measured here, with the collector's reason.
for side in before after; do
  not_measured gpu_devices "$side" 'the gpu collector was down in 1 of 1 snapshot that ran it: '
  not_measured arc_size "$side" 'the zfs collector was down in 1 of 1 snapshot that ran it: '
  not_measured rto_zfs "$side" 'no zfs_drill record'
  measured collectors_up "$side"
done
note "GPU: $(cell gpu_devices after why | cut -c1-110)"
note "ZFS: $(cell arc_size after why | cut -c1-110)"

# The report says how it was set up, and the HTML stands alone.
jq -e '.setup | length >= 3 and (.[0] | test("WAN-like link: 100 Mbit/s, 40 ms RTT, 0.5% random loss"))' "$J" >/dev/null ||
  fail "the report does not say how it was set up: $(jq -c .setup "$J")"
grep -q '<div class="setup">' "$T/demo/report.html" || fail "the HTML report has no setup"
grep -qi '<script' "$T/demo/report.html" && fail "the HTML report has a script"
grep -q '^> Network: between two network namespaces' "$T/demo/report.md" || fail "the Markdown report has no setup"
[ "$(ls "$T/demo/snapshots"/*-before.json | wc -l)" = 4 ] || fail "want 4 before snapshots (collect, 3 benches): $(ls "$T/demo/snapshots")"
[ "$(ls "$T/demo/snapshots"/*-after.json | wc -l)" = 8 ] || fail "want 8 after snapshots (drill, 2 x 3 benches, collect): $(ls "$T/demo/snapshots")"
"$LABNODE_BIN" report --store "$T/demo/snapshots" --before before --after after --format json |
  jq -e '[.groups[].rows[] | select(.id == "net_deployed") | .after.value] == [input | .groups[].rows[] | select(.id == "net_deployed") | .after.value]' - "$J" >/dev/null ||
  fail "labnode report over the demo's snapshots does not give the demo's report"
note "report: md, html (no script), json; 4 + 8 snapshots that labnode report reads the same"
rc=0
"$LABNODE_BIN" demo --out "$T/demo" >"$T/again.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "already holds snapshots of an earlier run" "$T/again.txt" ||
  fail "a second demo into the same directory: exit $rc, $(cat "$T/again.txt")"
note "a second run into the same --out: exit 2, the first run's snapshots kept"

# 2. What this machine lacks: without root, nothing happens (exit 2); without wireguard-go
#    and Nix (a PATH without them) it stops (exit 2) naming the packages, and with --partial
#    it runs and says what it could not measure.
rc=0
setpriv --reuid=nobody --regid=nogroup --clear-groups "$LABNODE_BIN" demo --out "$T/nobody" >"$T/nobody.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "labnode demo needs root" "$T/nobody.txt" && [ ! -e "$T/nobody" ] ||
  fail "not root: exit $rc, $(cat "$T/nobody.txt")"
note "not root: exit 2, $(grep -o 'needs root.*' "$T/nobody.txt" | cut -c1-80)..., nothing made"
mkdir "$T/path"
for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  for f in "$d"/*; do
    n=${f##*/}
    case $n in wireguard-go | nix-build | nix-env) continue ;; esac
    [ -e "$T/path/$n" ] || ln -s "$f" "$T/path/$n"
  done
done
# The GPU, simulated: libnvidia-ml.so.1 on the loader's path (as the driver installs it),
# the demo's embedded defaults find it there.
: "${LABNODE_FAKE_NVML_LIB:?LABNODE_FAKE_NVML_LIB must point at the simulated NVML library}"
mkdir "$T/nvml"
ln -s "$LABNODE_FAKE_NVML_LIB" "$T/nvml/libnvidia-ml.so.1"
p4="$(cd "$(dirname "$0")/../fake-nvml/profiles" && pwd)/tesla-p4.json"
rc=0
PATH="$T/path" CI=true "$LABNODE_BIN" demo --out "$T/stopped" --duration 1 --repeat 1 >"$T/stopped.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && [ ! -e "$T/stopped" ] &&
  grep -q "wireguard-go not installed (Debian: apt-get install wireguard-go wireguard-tools)" "$T/stopped.txt" &&
  grep -q "nix-build, nix-env not installed (Nix: Debian's nix-bin" "$T/stopped.txt" &&
  grep -q -- "--partial" "$T/stopped.txt" ||
  fail "without wireguard-go and Nix (no --partial): exit $rc, $(cat "$T/stopped.txt")"
clean "" "a demo that stopped for lack of wireguard-go and Nix"
note "without wireguard-go and Nix: exit 2 naming both packages and --partial, nothing made"
rc=0
LD_LIBRARY_PATH="$T/nvml" LABNODE_FAKE_NVML_PROFILE="$p4" PATH="$T/path" CI=true \
  "$LABNODE_BIN" demo --partial --out "$T/bare" --duration 1 --repeat 1 >"$T/bare.txt" 2>&1 &
pid=$!
wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "without wireguard-go and Nix: exit $rc, $(cat "$T/bare.txt")"
clean "$pid" "a demo without wireguard-go and Nix"
grep -q "WireGuard: not measured, wireguard-go not installed" "$T/bare.txt" &&
  grep -q "rollback:   not measured, nix-build, nix-env not installed" "$T/bare.txt" ||
  fail "the summary does not say what is missing: $(cat "$T/bare.txt")"
J="$T/bare/report.json"
measured net_congestion after
not_measured net_wireguard_cost after 'none measured .*path="wireguard"'
not_measured rto_nixos after 'no rollback_drill record'
jq -e '.after.deployed.path == "direct" and (.setup | any(test("no WireGuard tunnel: wireguard-go is missing")))' "$J" >/dev/null ||
  fail "the report does not say the after side ran without a tunnel: $(jq -c '.after.deployed, .setup' "$J")"
note "without wireguard-go and Nix, --partial: exit 0; $(grep -o 'WireGuard: not measured.*' "$T/bare.txt" | cut -c1-60)...; the rollback rows not measured"
# The simulated Tesla P4: measured on both sides, the profile's values.
for side in before after; do
  for row in gpu_devices gpu_memory gpu_power gpu_energy; do measured "$row" "$side"; done
  between "gpu_devices $side" "$(value gpu_devices "$side")" 1 1
  between "gpu_memory $side (B)" "$(value gpu_memory "$side")" $((1843 * 1048576)) $((1843 * 1048576))
  between "gpu_power $side (W)" "$(value gpu_power "$side")" 22 64
  between "gpu_energy $side (J)" "$(value gpu_energy "$side")" 0.001 1000
done
! grep -q "^  gpu: *not measured" "$T/bare.txt" || fail "the summary says the GPU is not measured: $(grep '^  gpu:' "$T/bare.txt")"
note "GPU (simulated Tesla P4): $(cell gpu_devices after display) GPU, memory $(cell gpu_memory after display), power $(cell gpu_power before display) / $(cell gpu_power after display), energy $(cell gpu_energy after display)"

# 3. Interrupted. wait_until SECONDS WHAT COMMAND...: polls COMMAND; fails if the demo ends first.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$dpid" 2>/dev/null || fail "the demo ended before $what"
    [ "$SECONDS" -lt "$end" ] || fail "no $what within ${secs}s"
    sleep 0.1
  done
}
interrupted() { # NAME SIGNAL NUMBER RUNNER_PID
  local name=$1 sig=$2 num=$3 runner=$4 rc=0 t0=$SECONDS
  kill -s "$sig" "$dpid"
  wait "$runner" || rc=$?
  [ "$rc" = $((128 + num)) ] || fail "$name: exit $rc, want $((128 + num)): $(tail -5 "$T/$name.txt")"
  grep -q "demo interrupted by SIG$sig" "$T/$name.txt" || fail "$name: no word of the interruption: $(tail -5 "$T/$name.txt")"
  [ ! -e "$T/$name/report.json" ] || fail "$name: a report was written"
  clean "$dpid" "a demo interrupted by SIG$sig ($name)"
  note "$name: SIG$sig -> exit $rc after $((SECONDS - t0)) s, nothing left: $(grep -o 'removed: .*' "$T/$name.txt" | cut -c1-120)"
}
bench_running() { pgrep -f "^$LABNODE_BIN net bench .*--path $1" >/dev/null; }

# SIGINT during the first bench, on a terminal (script(1)), where progress is drawn.
script -qec "env -u CI $LABNODE_BIN demo --out $T/tty --duration 3 --repeat 1" "$T/tty.txt" >/dev/null 2>&1 &
runner=$!
wait_for 10 "the demo to start" pgrep -f "^$LABNODE_BIN demo --out $T/tty "
dpid=$(pgrep -f "^$LABNODE_BIN demo --out $T/tty ")
wait_until 30 "the first bench" bench_running direct
sleep 1
interrupted tty INT 2 "$runner"
grep -q '==> network before: a stock host (cubic, no tunnel)' "$T/tty.txt" || fail "no progress on a terminal: $(cat -v "$T/tty.txt" | head -5)"

# SIGTERM during the rollback drill.
"$LABNODE_BIN" demo --out "$T/drill" --duration 3 --repeat 1 >"$T/drill.txt" 2>&1 &
dpid=$!
wait_until 60 "the drill (its marker)" test -e "$T/labnode-demo-$dpid/state/pending.json"
interrupted drill TERM 15 "$dpid"

# SIGHUP during the bench through WireGuard.
"$LABNODE_BIN" demo --out "$T/tunnel" --duration 3 --repeat 1 >"$T/tunnel.txt" 2>&1 &
dpid=$!
wait_until 90 "the bench through WireGuard" bench_running wireguard
sleep 1
interrupted tunnel HUP 1 "$dpid"
