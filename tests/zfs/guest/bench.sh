#!/bin/sh
# The snapshot enumeration benchmark, inside the VM: DATASETS file systems with SNAPSHOTS
# snapshots each, then, in the same boot and alternating, ROUNDS runs of each contender:
#   cli      zfs list -t snapshot -o name,creation -Hp        (the reference)
#   labnode  labnode collect --collector zfs: a whole process, pools, datasets, ARC and
#            the snapshot enumeration (on its own thread; the 1 h deadline below lets the
#            run wait for all of it), writing a snapshot file
#   summary  the collector's enumeration alone, in-process (snapshot_enum summary)
#   full     in-process, every snapshot's properties fetched (snapshot_enum full)
# Writes /results/bench.tsv: contender, round, seconds, snapshots (or lines) seen; every
# timing is taken by snapshot_enum the same way (a monotonic clock around the work).
# Usage (kernel command line): labnode.args=DATASETS,SNAPSHOTS,ROUNDS
set -eu
datasets=${1:-100}
snaps=${2:-100}
rounds=${3:-5}
R=/results
# Each step also goes to the console, so a run that hangs shows where.
step() { echo "== $(date +%s) $*" | tee /dev/ttyS0; }

step "pool with $datasets datasets"
truncate -s 1G /tmp/b0
zpool create -O atime=off bench /tmp/b0
i=1
while [ $i -le "$datasets" ]; do
  zfs create "bench/d$i"
  i=$((i + 1))
done
step "$snaps snapshots of each, one zfs snapshot call (one txg) per round"
j=1
while [ $j -le "$snaps" ]; do
  names=
  i=1
  while [ $i -le "$datasets" ]; do
    names="$names bench/d$i@s$j"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086
  zfs snapshot $names
  j=$((j + 1))
done
want=$((datasets * snaps))
got=$(zfs list -H -t snapshot -o name | wc -l)
[ "$got" = "$want" ] || { echo "FAIL: $got snapshots, want $want"; exit 1; }

cat >/tmp/labnode.yaml <<YAML
collectors:
  system: {enabled: false}
  gpu: {enabled: false}
  zfs: {deadline: 1h, interval: 1h}
YAML
: >$R/bench.tsv
# row CONTENDER ROUND: appends snapshot_enum's timing line under the contender's name.
row() { awk -v c="$1" -v r="$2" '{ printf "%s\t%s\t%s\t%s\n", c, r, $3, $2 }' /tmp/enum.out >>$R/bench.tsv; }
r=1
while [ $r -le "$rounds" ]; do
  step "round $r"
  snapshot_enum exec zfs list -t snapshot -o name,creation -Hp >/tmp/enum.out
  row cli $r
  snapshot_enum exec labnode collect --label bench --collector zfs --config /tmp/labnode.yaml --out /tmp/snaps >/tmp/enum.out
  f=$(ls -t /tmp/snaps/*.json | head -n 1)
  seen=$(awk '/"metric": "labnode_zfs_snapshot_enumerated"/ { f = 1 } f && /"value"/ { gsub(/[^0-9.]/, "", $2); print $2 + 0; exit }' "$f")
  awk -v s="$seen" '{ $2 = s; print }' OFS='\t' /tmp/enum.out >/tmp/enum.2 && mv /tmp/enum.2 /tmp/enum.out
  row labnode $r
  for mode in summary full; do
    snapshot_enum $mode >/tmp/enum.out
    row $mode $r
  done
  r=$((r + 1))
done
cat $R/bench.tsv
