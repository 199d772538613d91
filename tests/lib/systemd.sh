# A real systemd for the system tests: systemd as PID 1 of fresh PID, mount, UTS, IPC,
# network and cgroup namespaces (tests/lib/systemd-boot), seeing ONLY the units the test
# gives it (plus empty stand-ins for the standard targets), so nothing of the host's
# (tmpfiles, sysctl, journald) ever starts, and with /etc, /usr and /var/log read-only.
# Source after common.sh.
#
#   boot_systemd UNIT_DIR [BOOT_ID]   boots it (again: a "reboot"); sets $sd_pid
#   in_sd COMMAND...                  runs COMMAND inside (its systemctl, its network, its /run)
#   halt_systemd                      kills everything in it at once, like a power cut
SYSTEMD_BOOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/systemd-boot"
[ -x /lib/systemd/systemd ] || fail "systemd is not installed (/lib/systemd/systemd)"
for c in unshare nsenter findmnt ip; do command -v "$c" >/dev/null || fail "$c is missing"; done
[ "$(id -u)" = 0 ] || fail "a private systemd needs root"

cg_root=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
[ -n "$cg_root" ] || fail "no cgroup2 hierarchy is mounted (systemd needs one)"
sd_cgroups=()
sd_pid=

_sd_cleanup() {
  halt_systemd
  if declare -F stop_web >/dev/null; then stop_web; fi
  local c d
  for c in "${sd_cgroups[@]}"; do
    [ -d "$c" ] || continue
    # Leaf first: systemd's slices and scopes, then the test's own group.
    for _ in $(seq 1 50); do
      while IFS= read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find "$c" -mindepth 1 -type d | sort -r)
      rmdir "$c" 2>/dev/null && break
      sleep 0.1 # the namespace's processes are still dying
    done
  done
  cleanup
}
trap _sd_cleanup EXIT

# standard_targets DIR: empty stand-ins for the targets units depend on by default.
standard_targets() {
  local t
  for t in sysinit basic sockets timers paths slices shutdown multi-user local-fs swap network \
    network-online time-set time-sync umount final labnode-test; do
    [ -f "$1/$t.target" ] || printf '[Unit]\nDescription=%s (labnode test stand-in)\n' "$t" >"$1/$t.target"
  done
}

boot_systemd() {
  local units=$1 boot_id=${2:-} cg child
  standard_targets "$units"
  cg="$cg_root/labnode-test-$$-${#sd_cgroups[@]}"
  mkdir "$cg"
  sd_cgroups+=("$cg")
  # The boot script runs in its own cgroup, which becomes the root of systemd's namespace;
  # unshare --kill-child takes systemd (and so everything in its PID namespace) with it.
  bg "systemd-${#sd_cgroups[@]}" sh -c 'echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --kill-child=SIGKILL --mount --uts --ipc --net --cgroup --mount-proc "$2" "$3" labnode-test.target "$4"' \
    sh "$cg" "$SYSTEMD_BOOT" "$units" "$boot_id"
  sd_unshare=$last_pid
  booted() {
    child=$(pgrep -P "$sd_unshare" | head -n 1)
    [ -n "$child" ] && nsenter -t "$child" -m -p -u -i -n -C systemctl is-system-running 2>/dev/null | grep -qE '^(running|degraded)$'
  }
  wait_for 30 "the private systemd to boot" booted
  sd_pid=$(pgrep -P "$sd_unshare" | head -n 1)
}

in_sd() { nsenter -t "$sd_pid" -m -p -u -i -n -C "$@"; }

halt_systemd() {
  [ -n "$sd_pid" ] || return 0
  kill -9 "$sd_pid" 2>/dev/null || true
  kill -9 "$sd_unshare" 2>/dev/null || true
  wait "$sd_unshare" 2>/dev/null || true
  sd_pid=
}
