#!/bin/sh
# Smoke test: the modules load, a pool on a file vdev works, labnode runs.
set -eu
truncate -s 256M /tmp/d0
zpool create -O compression=zstd smoke /tmp/d0
zfs create smoke/a
zfs snapshot smoke/a@one
zpool get -Hp size,allocated,free,capacity,fragmentation,health smoke > /results/zpool-get.txt
zfs list -t all -Hp > /results/zfs-list.txt
labnode --version > /results/labnode-version.txt
