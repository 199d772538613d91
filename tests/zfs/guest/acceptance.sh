#!/bin/sh
# The ZFS acceptance run, inside the VM (busybox sh). Builds the pools the issue names,
# runs labnode's collector and drill against them, and leaves in /results what the host
# side (tests/system/zfs_vm.sh) compares: the CLI's view (zpool get -Hp, zfs get -Hp,
# zfs list -t snapshot -Hp, zpool status -p) and labnode's /metrics, taken back to back
# on a quiet pool. Checks that need the guest (drill refusals, a pool vanishing, no
# /dev/zfs) are asserted here; every step is logged to /results/guest.log.
set -eu
R=/results
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
if labnode drill zfs --dataset tank/a --out "$S" >$R/drill-refused.out 2>&1; then fail "drilled a non-scratch dataset"; fi
rc=0
labnode drill zfs --dataset tank/a --out "$S" >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "non-scratch refusal exited $rc, want 2"
grep -q 'labnode:scratch=on' $R/drill-refused.out || fail "refusal does not say why: $(cat $R/drill-refused.out)"
# A second drill while one runs.
labnode drill zfs --dataset tank/scratch --files 16 --file-size 2097152 --out "$S" --label concurrent >$R/drill-first.out 2>&1 &
first=$!
n=0
until grep -q pid /run/lock/labnode-zfs-drill.lock 2>/dev/null; do
  n=$((n + 1))
  [ $n -lt 200 ] || fail "the first drill never took its lock"
  sleep 0.05
done
rc=0
labnode drill zfs --dataset tank/scratch --out "$S" >$R/drill-second.out 2>&1 || rc=$?
[ $rc = 1 ] || fail "a second concurrent drill exited $rc, want 1: $(cat $R/drill-second.out)"
grep -q 'another ZFS drill is running' $R/drill-second.out || fail "second drill: $(cat $R/drill-second.out)"
wait $first || fail "the first drill failed: $(cat $R/drill-first.out)"

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

step "a pool vanishes while labnode runs"
zpool export mirr
sleep 2.5
scrape $R/metrics-after-export.prom
grep -q 'labnode_collector_up{collector="zfs"} 1' $R/metrics-after-export.prom || fail "collector down after the export"
if grep -q 'pool="mirr"' $R/metrics-after-export.prom; then fail "mirr series still exported after its export"; fi
grep -q 'labnode_zfs_pool_state{pool="tank",state="online"} 1' $R/metrics-after-export.prom || fail "tank lost"
kill $serve
wait $serve 2>/dev/null || true

step "no /dev/zfs"
zpool export tank
rmmod zfs
rmmod spl
[ ! -e /dev/zfs ] || fail "/dev/zfs still there"
labnode collect --label nozfs --collector zfs --out /tmp/nozfs >$R/nozfs.out 2>$R/nozfs.err || fail "collect without ZFS failed"
grep -q 'collector zfs is down' $R/nozfs.err || fail "no reason given: $(cat $R/nozfs.err)"
cp /tmp/nozfs/*.json $R/nozfs.json
step "done"
