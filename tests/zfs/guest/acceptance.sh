#!/bin/sh
# The ZFS acceptance run, inside the VM (busybox sh). Builds the pools the issue names,
# runs labnode's collector and drill against them, and leaves in /results what the host
# side (tests/system/zfs_vm.sh) compares: the CLI's view (zpool get -Hp, zfs get -Hp,
# zfs list -t snapshot -Hp, zpool status -p) and labnode's /metrics, taken back to back
# on a quiet pool. Checks that need the guest (drill refusals, a snapshot enumeration
# slower than the deadline, a pool vanishing, no pools, the module unloaded under a running
# agent, no /dev/zfs) are asserted here; every step is logged to /results/guest.log.
set -eu
R=/results
started=$(date +%s)
S=/var/lib/labnode/snapshots
# Each step also goes to the console, so a run that hangs shows where.
step() { echo "== $(date +%s) $*" | tee /dev/ttyS0; }
fail() { echo "FAIL: $*"; exit 1; }

step "pools and datasets"
truncate -s 512M /tmp/t0
zpool create -O compression=zstd -O atime=off tank /tmp/t0
zfs create tank/a
zfs create tank/b
zfs create tank/scratch
zfs set labnode:protected=on tank/a
zfs set labnode:scratch=on tank/scratch
# Compressible data (log-like text), and some that is not.
i=0
while [ $i -lt 4 ]; do
  seq 1 150000 | sed 's/^/2026-01-01 labnode acceptance line /' >/tank/a/log$i.txt
  i=$((i + 1))
done
seq 1 300000 >/tank/b/numbers.txt
dd if=/dev/urandom of=/tank/b/random.bin bs=1M count=4 2>/dev/null

step "200 snapshots"
i=1
while [ $i -le 80 ]; do
  zfs snapshot tank/a@s$i tank/b@s$i
  i=$((i + 1))
done
i=1
while [ $i -le 40 ]; do
  zfs snapshot tank/scratch@s$i
  i=$((i + 1))
done
[ "$(zfs list -H -t snapshot -o name | wc -l)" = 200 ] || fail "expected 200 snapshots"

step "mirror with real checksum errors, a scrub, one side offline"
truncate -s 256M /tmp/m0 /tmp/m1
zpool create mirr mirror /tmp/m0 /tmp/m1
dd if=/dev/urandom of=/mirr/data bs=1M count=64 2>/dev/null
zpool sync mirr
# Damage one side between its labels (the first and last 512 KiB hold them).
dd if=/dev/urandom of=/tmp/m1 bs=1M seek=4 count=120 conv=notrunc 2>/dev/null
zpool scrub -w mirr
zpool scrub -w tank
zpool offline mirr /tmp/m0
zpool status -p mirr

step "labnode serve"
mkdir -p "$S"
cat >/tmp/labnode.yaml <<YAML
listen: 127.0.0.1:9466
snapshot_dir: $S
collectors:
  system:
    enabled: false
  gpu:
    enabled: false
  zfs:
    interval: 1s
    deadline: 1s
    snapshot_interval: 1s
YAML
ip link set lo up
labnode serve --config /tmp/labnode.yaml >$R/serve.log 2>&1 &
serve=$!
scrape() { wget -q -O "$1" http://127.0.0.1:9466/metrics; }
n=0
until scrape /tmp/m.prom && grep -q '^labnode_zfs_snapshots{' /tmp/m.prom; do
  n=$((n + 1))
  [ $n -lt 100 ] || fail "labnode serve never exported snapshots: $(cat $R/serve.log)"
  sleep 0.3
done

step "drill: refusals"
if labnode drill zfs --dataset tank/b --out "$S" >$R/drill-refused.out 2>&1; then fail "drilled a non-scratch dataset"; fi
rc=0
labnode drill zfs --dataset tank/b --out "$S" >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "non-scratch refusal exited $rc, want 2"
grep -q 'labnode:scratch=on' $R/drill-refused.out || fail "refusal does not say why: $(cat $R/drill-refused.out)"
# refuse DATASET WANT: the drill exits 2 and its message holds WANT.
refuse() {
  rc=0
  labnode drill zfs --dataset "$1" --out "$S" >$R/drill-refused.out 2>&1 || rc=$?
  [ $rc = 2 ] || fail "drill of $1 exited $rc, want 2: $(cat $R/drill-refused.out)"
  grep -q "$2" $R/drill-refused.out || fail "drill of $1: want '$2': $(cat $R/drill-refused.out)"
}
# A child of a scratch dataset inherits labnode:scratch=on: it is not scratch itself.
zfs create tank/scratch/child
[ "$(zfs get -H -o source labnode:scratch tank/scratch/child)" = "inherited from tank/scratch" ] ||
  fail "the child does not inherit the mark"
refuse tank/scratch/child 'inherited from tank/scratch'
# Protected wins over scratch, set on the dataset or inherited.
zfs create -o labnode:scratch=on -o labnode:protected=on tank/guarded
refuse tank/guarded 'protected (labnode:protected=on, set on tank/guarded)'
zfs create -o labnode:scratch=on tank/a/sub
refuse tank/a/sub 'protected (labnode:protected=on, set on tank/a)'
zfs destroy tank/scratch/child
zfs destroy tank/guarded
zfs destroy tank/a/sub
# One drill per pool: a second, on the same dataset or on another of the same pool, is
# refused while the first runs.
zfs create -o labnode:scratch=on tank/scratch2
labnode drill zfs --dataset tank/scratch --files 16 --file-size 2097152 --out "$S" --label concurrent >$R/drill-first.out 2>&1 &
first=$!
n=0
until grep -q pid /run/lock/labnode-zfs-drill.tank.lock 2>/dev/null; do
  n=$((n + 1))
  [ $n -lt 200 ] || fail "the first drill never took its pool's lock"
  sleep 0.05
done
for ds in tank/scratch tank/scratch2; do
  rc=0
  labnode drill zfs --dataset $ds --out "$S" >$R/drill-second.out 2>&1 || rc=$?
  [ $rc = 1 ] || fail "a second concurrent drill of $ds exited $rc, want 1: $(cat $R/drill-second.out)"
  grep -q 'another ZFS drill is running on this pool' $R/drill-second.out || fail "second drill of $ds: $(cat $R/drill-second.out)"
done
wait $first || fail "the first drill failed: $(cat $R/drill-first.out)"
zfs destroy tank/scratch2

step "drill"
labnode drill zfs --dataset tank/scratch --files 48 --file-size 262144 --out "$S" --label acceptance >$R/drill.out 2>$R/drill.err ||
  fail "drill failed: $(cat $R/drill.out $R/drill.err)"
cp "$(tail -n 1 $R/drill.out)" $R/drill-snapshot.json
[ -z "$(zfs list -H -t snapshot -o name tank/scratch | grep labnode-drill || true)" ] || fail "the drill left its snapshot"

step "CLI and labnode, back to back on a quiet pool"
zpool sync
sleep 2
n=0
while :; do
  zpool get -Hp size,allocated,free,capacity,fragmentation,health >$R/zpool-get.1
  zfs get -Hp -t filesystem used,available,referenced,logicalused,compressratio,labnode:protected >$R/zfs-get.1
  zfs list -t snapshot -Hp -o name,creation >$R/zfs-snapshots.1
  zpool status -p >$R/zpool-status.1
  sleep 2.5 # two collector runs, so the scrape is from after the CLI's view
  scrape $R/metrics.prom
  zpool get -Hp size,allocated,free,capacity,fragmentation,health >$R/zpool-get.txt
  zfs get -Hp -t filesystem used,available,referenced,logicalused,compressratio,labnode:protected >$R/zfs-get.txt
  zfs list -t snapshot -Hp -o name,creation >$R/zfs-snapshots.txt
  zpool status -p >$R/zpool-status.txt
  if cmp -s $R/zpool-get.1 $R/zpool-get.txt && cmp -s $R/zfs-get.1 $R/zfs-get.txt &&
    cmp -s $R/zfs-snapshots.1 $R/zfs-snapshots.txt; then
    break
  fi
  n=$((n + 1))
  [ $n -lt 5 ] || fail "the pools never went quiet"
done
cat /proc/spl/kstat/zfs/arcstats >$R/arcstats.txt
date +%s >$R/scrape-time.txt

step "one-shot collect: a small pool's snapshots are in the first run (default deadline)"
cat >/tmp/collect.yaml <<YAML
collectors:
  system: {enabled: false}
  gpu: {enabled: false}
YAML
labnode collect --label first --collector zfs --config /tmp/collect.yaml --out /tmp/first >$R/first.out 2>&1 ||
  fail "collect failed: $(cat $R/first.out)"
cp /tmp/first/*.json $R/first-collect.json
grep -q '"labnode_zfs_snapshots"' $R/first-collect.json || fail "the first collect has no snapshot series"

step "a snapshot enumeration slower than the deadline (labnode serve, deadline 2s)"
# The enumeration of the 200 real snapshots, delayed by 4 s (test-only variable: this VM
# cannot create the thousands of snapshots that take that long in the test's time).
sed -e 's/127.0.0.1:9466/127.0.0.1:9467/' -e 's/deadline: 1s/deadline: 2s/' -e 's/interval: 1s/interval: 2s/' \
  /tmp/labnode.yaml >/tmp/slow.yaml
grep -q 'deadline: 2s' /tmp/slow.yaml || fail "slow.yaml: $(cat /tmp/slow.yaml)"
LABNODE_ZFS_TEST_ENUMERATION_DELAY=4 labnode serve --config /tmp/slow.yaml >$R/serve-slow.log 2>&1 &
slow=$!
seen_running=0
n=0
while :; do
  n=$((n + 1))
  [ $n -lt 100 ] || fail "the slow enumeration never finished: $(cat $R/serve-slow.log)"
  kill -0 $slow 2>/dev/null || fail "labnode serve exited: $(cat $R/serve-slow.log)"
  sleep 0.3
  wget -q -O /tmp/s.prom http://127.0.0.1:9467/metrics 2>/dev/null || continue
  grep -q '^labnode_collector_up{collector="zfs"}' /tmp/s.prom || continue # no run ended yet
  grep -q '^labnode_collector_up{collector="zfs"} 1' /tmp/s.prom ||
    fail "collector down while the enumeration runs: $(grep 'collector down' $R/serve-slow.log)"
  grep -q '^labnode_zfs_pool_state{pool="tank",state="online"} 1' /tmp/s.prom || fail "no pool series while the enumeration runs"
  if grep -q '^labnode_zfs_snapshots{' /tmp/s.prom; then break; fi
  grep -q '^labnode_zfs_snapshot_enumeration_running 1' /tmp/s.prom || fail "no snapshot series and no enumeration running"
  [ $seen_running = 1 ] || cp /tmp/s.prom $R/metrics-enumerating.prom
  seen_running=1
done
cp /tmp/s.prom $R/metrics-slow.prom
[ $seen_running = 1 ] || fail "never saw the enumeration in flight"
grep -q '^labnode_zfs_snapshots{pool="tank",dataset="tank/a"} 80' $R/metrics-slow.prom || fail "tank/a: $(grep 'dataset="tank/a"' $R/metrics-slow.prom)"
awk '$1 == "labnode_zfs_snapshot_enumeration_duration_seconds" { v = $2; found = 1 } END { exit !(found && v >= 4) }' $R/metrics-slow.prom ||
  fail "enumeration duration: $(grep enumeration_duration $R/metrics-slow.prom)"
grep -q '^labnode_collector_failures_total{collector="zfs",reason="deadline"} 0' $R/metrics-slow.prom || fail "deadline failures"
kill $slow
wait $slow 2>/dev/null || true

step "a pool vanishes while labnode runs"
zpool export mirr
sleep 2.5
scrape $R/metrics-after-export.prom
grep -q 'labnode_collector_up{collector="zfs"} 1' $R/metrics-after-export.prom || fail "collector down after the export"
if grep -q 'pool="mirr"' $R/metrics-after-export.prom; then fail "mirr series still exported after its export"; fi
grep -q 'labnode_zfs_pool_state{pool="tank",state="online"} 1' $R/metrics-after-export.prom || fail "tank lost"

step "no pools: every pool exported, the module loaded"
zpool export tank
[ -z "$(zpool list -H -o name)" ] || fail "pools left: $(zpool list -H -o name)"
labnode collect --label nopools --collector zfs --config /tmp/collect.yaml --out /tmp/nopools >$R/nopools.out 2>&1 ||
  fail "collect with no pools failed: $(cat $R/nopools.out)"
cp /tmp/nopools/*.json $R/nopools.json
grep -q '"up": true' $R/nopools.json || fail "collector down with no pools: $(cat $R/nopools.out)"
if grep -q '"pool":' $R/nopools.json; then fail "pool series with no pools"; fi
sleep 1.5 # a run of the agent after the export
scrape $R/metrics-nopools.prom
grep -q 'labnode_collector_up{collector="zfs"} 1' $R/metrics-nopools.prom || fail "serve: collector down with no pools"
if grep -q 'pool="' $R/metrics-nopools.prom; then fail "serve: pool series with no pools"; fi

step "the module unloaded under the running agent"
# The agent closes /dev/zfs when a run finds no pools; a run may have it open for a moment.
unload() {
  n=0
  until rmmod "$1" 2>$R/rmmod.err; do
    n=$((n + 1))
    [ $n -lt 25 ] || fail "cannot unload $1 under labnode serve: $(cat $R/rmmod.err)"
    sleep 0.2
  done
}
unload zfs
unload spl
[ ! -e /dev/zfs ] || fail "/dev/zfs still there"
n=0
# A run under way at the unload may overrun its deadline first (a loaded host, TCG): the
# reason that counts is the one the runs after it give.
until scrape $R/metrics-nomodule.prom && grep -q 'labnode_collector_up{collector="zfs"} 0' $R/metrics-nomodule.prom &&
  grep -q 'collector down: cannot open libzfs' $R/serve.log; do
  n=$((n + 1))
  [ $n -lt 50 ] || fail "the agent never reported the zfs collector down with the reason: $(tail -n 5 $R/serve.log)"
  sleep 0.3
done
kill $serve
wait $serve 2>/dev/null || true

step "no /dev/zfs"
labnode collect --label nozfs --collector zfs --out /tmp/nozfs >$R/nozfs.out 2>$R/nozfs.err || fail "collect without ZFS failed"
grep -q 'collector zfs is down' $R/nozfs.err || fail "no reason given: $(cat $R/nozfs.err)"
cp /tmp/nozfs/*.json $R/nozfs.json
echo $(($(date +%s) - started)) >$R/elapsed
step "done"
