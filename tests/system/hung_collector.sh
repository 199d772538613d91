#!/usr/bin/env bash
# A collector that hangs (its procfs read blocks on a FIFO) is reported down with the
# reason, /metrics keeps answering fast, no second run piles up, and it recovers once
# the read returns.
. "$(dirname "$0")/../lib/common.sh"

proc="$T/proc"
mkdir -p "$proc/sys/kernel"
for f in stat meminfo uptime sys/kernel/osrelease sys/kernel/version; do cp "/proc/$f" "$proc/$f"; done
mkfifo "$proc/loadavg" # open(2) blocks until a writer comes: a real hang in a real read

port=$(free_port)
cat >"$T/labnode.yaml" <<YAML
listen: 127.0.0.1:$port
collectors:
  system:
    interval: 1s
    deadline: 500ms
    cpu_window: 10ms
    proc_root: $proc
YAML
bg labnode "$LABNODE_BIN" serve --config "$T/labnode.yaml" --collector system
labnode_pid=$last_pid
wait_for 10 "labnode to serve" curl -fsS "http://127.0.0.1:$port/metrics"

down() {
  curl -fsS "http://127.0.0.1:$port/metrics" >"$T/m.txt"
  [ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="system"}')" = 0 ]
}
wait_for 10 "the hung collector to be reported down" down
sleep 3 # several intervals pass while the first run is still stuck

slowest=0
for _ in $(seq 1 20); do
  t=$(curl -fsS -m 2 -o "$T/m.txt" -w '%{time_total}' "http://127.0.0.1:$port/metrics") ||
    fail "/metrics did not answer while the collector hangs"
  slowest=$(awk -v a="$slowest" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
done
awk -v s="$slowest" 'BEGIN { exit !(s < 0.5) }' || fail "a scrape took ${slowest}s while the collector hangs"
note "20 scrapes while the collector hangs, slowest ${slowest}s"

[ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="system"}')" = 0 ] || fail "collector not down"
deadline=$(metric_value "$T/m.txt" 'labnode_collector_failures_total{collector="system",reason="deadline"}')
awk -v d="$deadline" 'BEGIN { exit !(d >= 3) }' || fail "deadline failures = $deadline, want >= 3"
grep -q '^labnode_system_' "$T/m.txt" && fail "a down collector's series are still served"
grep -q '^process_resident_memory_bytes ' "$T/m.txt" || fail "the agent's own metrics are gone"
curl -fsS "http://127.0.0.1:$port/healthz" | grep -q '^system: down (.*not returned' ||
  fail "/healthz does not give the reason: $(curl -fsS "http://127.0.0.1:$port/healthz")"
grep -q 'collector down.*deadline' "$T/labnode.log" || fail "the reason was not logged"
# Only one run was ever started: exactly one of labnode's threads waits in the FIFO's
# open(2) (the kernel's wait_for_partner), however many intervals have passed.
stuck=0
for task in /proc/"$labnode_pid"/task/*; do
  [ "$(cat "$task/wchan" 2>/dev/null)" = wait_for_partner ] && stuck=$((stuck + 1))
done
[ "$stuck" = 1 ] || fail "$stuck threads of labnode wait on the hung read, want 1"
note "down with reason, $deadline deadline failures counted, one stuck run, other series still served"

# Release the stuck read and give later runs a regular file: the collector recovers.
mv "$proc/loadavg" "$T/loadavg.fifo"
cp /proc/loadavg "$proc/loadavg"
echo "0.00 0.00 0.00 1/1 1" >"$T/loadavg.fifo"
up() {
  curl -fsS "http://127.0.0.1:$port/metrics" >"$T/m.txt"
  [ "$(metric_value "$T/m.txt" 'labnode_collector_up{collector="system"}')" = 1 ]
}
wait_for 10 "the collector to recover" up
grep -q '^labnode_system_load1 ' "$T/m.txt" || fail "no system series after recovery"
note "recovered once the read returned"
