#!/usr/bin/env bash
# zfs_vm: the zfs collector and `labnode drill zfs` on real ZFS (OpenZFS 2.3 in a qemu VM,
# tests/zfs). The guest (tests/zfs/guest/acceptance.sh) builds a zstd pool with 3 datasets,
# compressible data and 200 snapshots, and a mirror with real checksum errors (one side
# overwritten, then scrubbed) and one side offline; it runs the drill (and its refusals),
# a snapshot enumeration slower than the collector's deadline under labnode serve, exports
# every pool while labnode runs (no pools), and unloads the module under the running agent.
# Here the host compares every
# value labnode exported with what the ZFS CLI printed for the same objects on a quiet pool,
# checks the exposition with promtool, and serves it to a real Prometheus loaded with the
# shipped ZFS rules and recording rules to run every panel query of the ZFS dashboard.
. "$(dirname "$0")/../lib/common.sh"
here=$(cd "$(dirname "$0")/../.." && pwd)
t0=$SECONDS

vm="$T/vm"
if [ -n "${LABNODE_ZFS_VM_RESULTS:-}" ]; then # reuse a guest run (developing the checks)
  cp -r "$LABNODE_ZFS_VM_RESULTS" "$vm" && echo "run-vm: reused $LABNODE_ZFS_VM_RESULTS" >"$T/run-vm.log"
else
  "$here/tests/zfs/run-vm" "$vm" acceptance.sh >"$T/run-vm.log" 2>&1
fi ||
  fail "the guest run failed: $(tail -n 20 "$T/run-vm.log"; tail -n 25 "$vm/guest.log" 2>/dev/null)"
note "$(tail -n 1 "$T/run-vm.log" | sed 's/^run-vm: //')"
M="$vm/metrics.prom"
[ -s "$M" ] || fail "no metrics came back from the guest"

# value SERIES: the value of one exact series in the exposition ("" if absent).
value() { awk -v s="$1" 'index($0, s" ") == 1 { print $NF; exit }' "$M"; }
# same SERIES WANT: the exported value equals WANT exactly (numerically).
checked=0
same() {
  local got
  got=$(value "$1")
  [ -n "$got" ] || fail "$1 is missing; want $2"
  awk -v g="$got" -v w="$2" 'BEGIN { exit !(g + 0 == w + 0) }' || fail "$1 = $got, but the CLI says $2"
  checked=$((checked + 1))
}
absent() { [ -z "$(value "$1")" ] || fail "$1 should be absent, is $(value "$1")"; }

# 1. Pools: zpool get -Hp.
while IFS=$'\t' read -r pool prop val _; do
  case $prop in
  size | allocated | free) same "labnode_zfs_pool_${prop}_bytes{pool=\"$pool\"}" "$val" ;;
  capacity) same "labnode_zfs_pool_capacity_ratio{pool=\"$pool\"}" "$(awk -v v="$val" 'BEGIN { print v / 100 }')" ;;
  fragmentation)
    if [ "$val" = - ]; then absent "labnode_zfs_pool_fragmentation_ratio{pool=\"$pool\"}"; else
      same "labnode_zfs_pool_fragmentation_ratio{pool=\"$pool\"}" "$(awk -v v="$val" 'BEGIN { print v / 100 }')"
    fi ;;
  health)
    state=$(tr 'A-Z' 'a-z' <<<"$val")
    same "labnode_zfs_pool_state{pool=\"$pool\",state=\"$state\"}" 1
    ones=$(grep -c "^labnode_zfs_pool_state{pool=\"$pool\",.* 1$" "$M")
    [ "$ones" = 1 ] || fail "pool $pool has $ones states at 1" ;;
  esac
done <"$vm/zpool-get.txt"
same 'labnode_zfs_pool_state{pool="mirr",state="degraded"}' 1
note "pools: size, allocated, free, capacity, fragmentation and health equal zpool get -Hp; mirr is DEGRADED"

# 2. Datasets: zfs get -Hp.
while IFS=$'\t' read -r ds prop val _; do
  pool=${ds%%/*}
  l="pool=\"$pool\",dataset=\"$ds\""
  case $prop in
  used | available | referenced) same "labnode_zfs_dataset_${prop}_bytes{$l}" "$val" ;;
  logicalused) same "labnode_zfs_dataset_logical_used_bytes{$l}" "$val" ;;
  compressratio) same "labnode_zfs_dataset_compress_ratio{$l}" "$val" ;;
  labnode:protected) same "labnode_zfs_dataset_protected{$l}" "$([ "$val" = on ] && echo 1 || echo 0)" ;;
  esac
done <"$vm/zfs-get.txt"
ratio=$(value 'labnode_zfs_dataset_compress_ratio{pool="tank",dataset="tank/a"}')
awk -v r="$ratio" 'BEGIN { exit !(r > 1) }' || fail "tank/a compressratio $ratio, want > 1 (zstd on text)"
same 'labnode_zfs_dataset_protected{pool="tank",dataset="tank/a"}' 1
note "datasets: used, available, referenced, logicalused, compressratio ($ratio on tank/a) and labnode:protected equal zfs get -Hp"

# 3. Snapshots: zfs list -t snapshot -Hp -o name,creation, summarised per dataset.
total=$(wc -l <"$vm/zfs-snapshots.txt")
[ "$total" = 200 ] || fail "the guest has $total snapshots, want 200"
awk -F'\t' '{ split($1, a, "@"); d = a[1]; n[d]++
  if (!(d in lo) || $2 < lo[d]) lo[d] = $2; if (!(d in hi) || $2 > hi[d]) hi[d] = $2 }
  END { for (d in n) print d "\t" n[d] "\t" lo[d] "\t" hi[d] }' "$vm/zfs-snapshots.txt" >"$T/snapsum"
while IFS=$'\t' read -r ds n lo hi; do
  l="pool=\"${ds%%/*}\",dataset=\"$ds\""
  same "labnode_zfs_snapshots{$l}" "$n"
  same "labnode_zfs_snapshot_oldest_timestamp_seconds{$l}" "$lo"
  same "labnode_zfs_snapshot_newest_timestamp_seconds{$l}" "$hi"
  age=$(value "labnode_zfs_snapshot_newest_age_seconds{$l}")
  awk -v a="$age" -v hi="$hi" -v now="$(cat "$vm/scrape-time.txt")" 'BEGIN { exit !(a >= 0 && a <= now - hi + 1) }' ||
    fail "$ds: newest age $age, newest snapshot at $hi, scraped before $(cat "$vm/scrape-time.txt")"
done <"$T/snapsum"
# Datasets without snapshots: a count of 0 and no ages (never a sentinel).
for ds in $(cut -f1 "$vm/zfs-get.txt" | sort -u); do
  grep -q "^$ds	" "$T/snapsum" && continue
  same "labnode_zfs_snapshots{pool=\"${ds%%/*}\",dataset=\"$ds\"}" 0
  absent "labnode_zfs_snapshot_newest_age_seconds{pool=\"${ds%%/*}\",dataset=\"$ds\"}"
done
same labnode_zfs_snapshot_enumerated 200
note "snapshots: count, oldest and newest creation per dataset equal zfs list -t snapshot -Hp (200 in all)"

# 4. Vdevs: zpool status -p (exact counts) for every vdev, and the injected errors.
awk '/^config:/ { c = 1; next } /^errors:/ { c = 0 } c && NF >= 5 && $1 != "NAME" {
  if ($1 == "mirr" || $1 == "tank") pool = $1; print pool "\t" $1 "\t" $2 "\t" $3 "\t" $4 "\t" $5 }' \
  "$vm/zpool-status.txt" >"$T/vdevs"
[ "$(wc -l <"$T/vdevs")" -ge 6 ] || fail "cannot read the vdevs from zpool status: $(cat "$vm/zpool-status.txt")"
while IFS=$'\t' read -r pool vdev state r w c; do
  l="pool=\"$pool\",vdev=\"$vdev\""
  same "labnode_zfs_vdev_errors_total{$l,type=\"read\"}" "$r"
  same "labnode_zfs_vdev_errors_total{$l,type=\"write\"}" "$w"
  same "labnode_zfs_vdev_errors_total{$l,type=\"checksum\"}" "$c"
  same "labnode_zfs_vdev_state{$l,state=\"$(tr 'A-Z' 'a-z' <<<"$state")\"}" 1
done <"$T/vdevs"
cksum=$(value 'labnode_zfs_vdev_errors_total{pool="mirr",vdev="/tmp/m1",type="checksum"}')
[ "${cksum:-0}" -gt 0 ] || fail "the overwritten vdev shows no checksum errors"
same 'labnode_zfs_vdev_state{pool="mirr",vdev="/tmp/m0",state="offline"}' 1
note "vdevs: read/write/checksum counts and states equal zpool status -p ($cksum checksum errors on the damaged side)"

# 5. Scrubs.
now=$(cat "$vm/scrape-time.txt")
for pool in tank mirr; do
  same "labnode_zfs_pool_scan_state{pool=\"$pool\",function=\"scrub\",state=\"finished\"}" 1
  end=$(value "labnode_zfs_pool_scrub_end_timestamp_seconds{pool=\"$pool\"}")
  start=$(value "labnode_zfs_pool_scan_start_timestamp_seconds{pool=\"$pool\"}")
  awk -v e="$end" -v s="$start" -v n="$now" 'BEGIN { exit !(e >= s && s > n - 3600 && e <= n) }' ||
    fail "$pool: scrub from $start to $end, scraped at $now"
  grep -q "scan: scrub repaired .* with $(value "labnode_zfs_pool_scrub_errors{pool=\"$pool\"}") errors" <(grep -A 12 "pool: $pool" "$vm/zpool-status.txt") ||
    fail "$pool: scrub errors differ from zpool status"
done
note "scrubs: finished, end timestamps present, errors as zpool status says"

# 6. ARC: the limits equal arcstats (taken after the scrape); counters never ahead of it.
arc() { awk -v k="$1" '$1 == k { print $3 }' "$vm/arcstats.txt"; }
same labnode_zfs_arc_max_bytes "$(arc c_max)"
same labnode_zfs_arc_min_bytes "$(arc c_min)"
awk -v h="$(value labnode_zfs_arc_hits_total)" -v H="$(arc hits)" -v r="$(value labnode_zfs_arc_hit_ratio)" \
  'BEGIN { exit !(h > 0 && h <= H && r > 0 && r <= 1) }' || fail "ARC hits/ratio inconsistent with arcstats"
note "ARC: c_min/c_max equal arcstats, hits and hit ratio consistent"

# 7. The drill: every file back, phases timed, recorded, exported by the collector.
d='dataset="tank/scratch"'
same "labnode_zfs_drill_success{$d}" 1
for p in write snapshot damage rollback verify; do
  [ -n "$(value "labnode_zfs_drill_phase_seconds{$d,phase=\"$p\"}")" ] || fail "no $p phase timing"
done
jq -e '.records[0].kind == "zfs_drill" and .records[0].data.verified == .records[0].data.files
  and .records[0].data.files == 48 and (.records[0].data.mismatched | length) == 0
  and .records[0].data.deleted > 0 and .records[0].data.overwritten > 0' "$vm/drill-snapshot.json" >/dev/null ||
  fail "drill record: $(jq -c .records "$vm/drill-snapshot.json")"
note "drill: $(head -n 1 "$vm/drill.out")"
note "drill refusals: non-scratch, inherited scratch and protected exit 2, a second drill on the pool exits 1 (asserted in the guest)"
jq -e '.collectors[0].up == false and (.collectors[0].error | test("ZFS modules"))' "$vm/nozfs.json" >/dev/null ||
  fail "without /dev/zfs: $(jq -c .collectors "$vm/nozfs.json")"
jq -e '.samples | map(select(.metric == "labnode_zfs_snapshots" and .labels.dataset == "tank/a")) | .[0].value == 80' \
  "$vm/first-collect.json" >/dev/null || fail "one-shot collect: tank/a has no snapshot count of 80"
note "one-shot collect (default deadline): the first run has the snapshot series (tank/a: 80)"

# The enumeration slower than the deadline: mid-enumeration the collector is up with its
# pool series and the enumeration is in flight; afterwards the snapshot series are there.
E="$vm/metrics-enumerating.prom"
S="$vm/metrics-slow.prom"
line() { awk -v s="$1" 'index($0, s" ") == 1 { print $NF; exit }' "$2"; }
[ "$(line 'labnode_collector_up{collector="zfs"}' "$E")" = 1 ] || fail "mid-enumeration: collector not up"
[ "$(line 'labnode_zfs_pool_state{pool="mirr",state="degraded"}' "$E")" = 1 ] || fail "mid-enumeration: no pool series"
[ "$(line labnode_zfs_snapshot_enumeration_running "$E")" = 1 ] || fail "mid-enumeration: no enumeration running"
[ -n "$(line labnode_zfs_snapshot_enumeration_running_seconds "$E")" ] || fail "mid-enumeration: no running_seconds"
! grep -q '^labnode_zfs_snapshots{' "$E" || fail "mid-enumeration: snapshot series before the first enumeration finished"
took=$(line labnode_zfs_snapshot_enumeration_duration_seconds "$S")
run=$(line 'labnode_collector_duration_seconds{collector="zfs"}' "$S")
awk -v t="$took" -v r="$run" 'BEGIN { exit !(t >= 4 && r < 2) }' || fail "enumeration took $took s, the run $run s (deadline 2s)"
[ "$(line 'labnode_collector_failures_total{collector="zfs",reason="deadline"}' "$S")" = 0 ] || fail "deadline failures"
[ "$(line 'labnode_zfs_snapshots{pool="tank",dataset="tank/a"}' "$S")" = 80 ] || fail "after the enumeration: tank/a not 80"
note "enumeration slower than the deadline: it took ${took}s against a 2s deadline (runs wait for it up to 1s); the last run took ${run}s, the collector stayed up with its pool series, snapshot series once it finished"

jq -e '.collectors[0].up == true and ([.samples[] | select(.labels.pool != null)] | length) == 0
  and ([.samples[] | select(.metric == "labnode_zfs_arc_size_bytes")] | length) == 1' "$vm/nopools.json" >/dev/null ||
  fail "no pools: $(jq -c '[.collectors, [.samples[] | select(.labels.pool != null)][0]]' "$vm/nopools.json")"
note "no pools (module loaded): collect and serve have the collector up, ARC series, no pool= series"
[ "$(line 'labnode_collector_up{collector="zfs"}' "$vm/metrics-nomodule.prom")" = 0 ] || fail "module unloaded: collector not down"
note "module unloaded under the running agent (rmmod zfs spl succeeded); it reports the collector down: $(grep -o 'collector down: .*' "$vm/serve.log" | head -n 1 | cut -c1-80)"
note "no /dev/zfs: collect records the zfs collector down with: $(jq -r .collectors[0].error "$vm/nozfs.json")"
note "$checked values compared with the ZFS CLI"

# 8. promtool, then a real Prometheus with the shipped rules over the guest's exposition.
for f in "$M" "$E" "$S"; do
  promtool check metrics <"$f" >"$T/promtool.log" 2>&1 || fail "promtool check metrics ($(basename "$f")): $(cat "$T/promtool.log")"
  [ ! -s "$T/promtool.log" ] || fail "promtool check metrics warns ($(basename "$f")): $(cat "$T/promtool.log")"
done
mkdir -p "$T/www"
cp "$M" "$T/www/metrics"
hport=$(free_port)
bg httpd busybox httpd -f -p "127.0.0.1:$hport" -h "$T/www"
wait_for 10 "the exposition to be served" curl -fsS "http://127.0.0.1:$hport/metrics"
R="$here/modules/monitoring"
pport=$(free_port)
fast_rules "$R/rules/recording.yaml" "$T/recording.yaml"
cat >"$T/prometheus.yml" <<YAML
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: ["$R/rules/zfs.yaml", "$T/recording.yaml"]
scrape_configs:
  - {job_name: labnode-zfs, static_configs: [{targets: ['127.0.0.1:$hport']}]}
YAML
bg prometheus prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/pdata" \
  --web.listen-address="127.0.0.1:$pport"
wait_for 30 "prometheus to answer" curl -fsS "http://127.0.0.1:$pport/-/ready"
rpo_recorded() { [ -n "$(prom_query "$pport" 'dataset:labnode_zfs_rpo_seconds:max')" ]; }
end=$((SECONDS + 60))
until rpo_recorded; do
  [ "$SECONDS" -lt "$end" ] || fail "no RPO recording rule result after 60s; target: $(curl -fsS "http://127.0.0.1:$pport/api/v1/targets" | jq -c '[.data.activeTargets[] | {health, lastError}]')"
  sleep 0.5
done
sleep 3
n=0
while IFS=$'\t' read -r title expr; do
  q=$(sed -e 's/\$instance/.*/g; s/\$__rate_interval/1m/g' <<<"$expr")
  resp=$(curl -sS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$q")
  [ "$(jq -r .status <<<"$resp")" = success ] || fail "zfs dashboard / $title: $(jq -r .error <<<"$resp")"
  [ "$(jq '.data.result | length' <<<"$resp")" -gt 0 ] || fail "zfs dashboard / $title returns no series: $q"
  n=$((n + 1))
done < <(jq -r '.panels[] | .title as $t | .targets[] | [$t, .expr] | @tsv' "$R/dashboards/zfs.json")
note "every one of the ZFS dashboard's $n panel queries returns series from the collector's exposition"
pending() {
  curl -fsS "http://127.0.0.1:$pport/api/v1/alerts" |
    jq -e '.data.alerts[] | select(.labels.alertname == "ZfsPoolNotOnline" and .labels.pool == "mirr" and .labels.state == "degraded")' >/dev/null
}
wait_for 30 "ZfsPoolNotOnline{pool=\"mirr\"}" pending
firing=$(curl -fsS "http://127.0.0.1:$pport/api/v1/alerts" | jq -r '[.data.alerts[].labels.alertname] | unique | join(",")')
[ "$firing" = ZfsPoolNotOnline ] || fail "alerts active: $firing; want only ZfsPoolNotOnline (scrubbed, fresh snapshots, pools nearly empty)"
note "the shipped rules: ZfsPoolNotOnline goes pending for the degraded mirror; no other ZFS alert is active"
note "time: zfs_vm $((SECONDS - t0))s in all; the VM $(sed -n 's/.* finished in \([0-9]*s\).*/\1/p' "$T/run-vm.log" | tail -n 1) (boot, acceptance.sh, results), of which acceptance.sh $(cat "$vm/elapsed" 2>/dev/null || echo '?')s"
