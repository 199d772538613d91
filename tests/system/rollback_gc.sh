#!/usr/bin/env bash
# Garbage collection that never takes away a rollback target, on real Nix profiles and the
# real store. The control: what nix.gc's `nix-collect-garbage --delete-older-than 30d` does
# to the system profile of a node that went a month without a change (`nix-env
# --delete-generations 30d`): only the current generation is left, so a drill or a safe
# switch has nothing to go back to. `labnode gc` keeps the newest N whatever their age,
# deletes the rest of the old ones, and collects the store (what it deleted is gone from
# it, what it kept is valid). While a safe switch runs, gc waits for the run lock (or
# refuses at once), and the switch's known-good system has a GC root.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/rollback.sh"
# A switch held at its gates defers SIGTERM (it finishes the step first): kill it outright
# if the test ends while it holds.
trap 'kill -9 "${spid:-}" 2>/dev/null || true; stop_web; cleanup' EXIT

mkdir -p "$T/profiles" "$T/control"
profile="$T/profiles/system"
control="$T/control/system"
echo "ln -sfn \"\$out\" $T/current-system" >"$T/activate.sh"
paths=()
for i in 1 2 3 4 5 6 7 8; do
  echo "# generation $i" >>"$T/activate.sh"
  paths+=("$(generation "gc-$i-$$" "$T/activate.sh")")
  nix-env --profile "$profile" --set "${paths[-1]}" 2>/dev/null
  nix-env --profile "$control" --set "${paths[-1]}" 2>/dev/null
done
ln -sfn "${paths[7]}" "$T/current-system"
# A month without a change: every generation, the current one too, is 40 days old or more.
# (A younger current generation would keep the one before it: nix keeps the generation
# that was current at the cutoff.)
for i in 1 2 3 4 5 6 7 8; do
  touch -h -d "$((48 - i)) days ago" "$T/profiles/system-$i-link" "$T/control/system-$i-link"
done
cat >"$T/labnode.yaml" <<YAML
snapshot_dir: $T/snaps
rollback:
  profile: $profile
  current_system: $T/current-system
  state_dir: $T/state
  gc_root: $T/gcroots/known-good
  activation_action: test
  arm: none
  gates:
    - name: cmd
      command: [test, -e, "$T/current-system"]
YAML
gens() { nix-env --profile "$1" --list-generations | awk '{ printf "%s%s", sep, $1; sep = " " }'; }

# 1. The control: nix.gc's way leaves nothing to roll back to.
nix-env --profile "$control" --delete-generations 30d 2>/dev/null
[ "$(gens "$control")" = 8 ] || fail "the control kept generations $(gens "$control"), not only 8: it proves nothing"
rc=0
"$LABNODE_BIN" drill rollback --yes --profile "$control" --config "$T/labnode.yaml" >"$T/control.txt" 2>&1 || rc=$?
grep -q "nothing to roll back to" "$T/control.txt" || fail "the control's drill: exit $rc: $(cat "$T/control.txt")"
note "control: --delete-older-than 30d left generation 8 alone; a drill there has nothing to roll back to"

# 2. labnode gc: the newest 5 stay whatever their age; 1 to 3 go, from the profile and the store.
"$LABNODE_BIN" gc --keep-generations 5 --delete-older-than 30d --config "$T/labnode.yaml" >"$T/gc.txt" 2>&1 ||
  fail "labnode gc failed: $(cat "$T/gc.txt")"
[ "$(gens "$profile")" = "4 5 6 7 8" ] || fail "labnode gc kept $(gens "$profile"), not 4 to 8: $(cat "$T/gc.txt")"
for i in 1 2 3; do
  ! nix-store --check-validity "${paths[$((i - 1))]}" 2>/dev/null || fail "generation $i's system is still in the store after the collection"
done
for i in 4 5 6 7 8; do
  nix-store --check-validity "${paths[$((i - 1))]}" 2>/dev/null || fail "generation $i's system was collected"
done
"$LABNODE_BIN" drill rollback --yes --config "$T/labnode.yaml" >"$T/drill.txt" 2>&1 || fail "the drill after gc failed: $(cat "$T/drill.txt")"
note "labnode gc --keep-generations 5 --delete-older-than 30d: kept 4 to 8, deleted 1 to 3 (gone from the store); the drill still rolls back"

# 3. Beside a safe switch: gc refuses at once, or waits for it; the switch's known-good
#    system has a GC root meanwhile.
v9=$(generation "gc-9-$$" "$T/activate.sh")
bg switch env LABNODE_TEST_HOLD_AT=switch.gates "$LABNODE_BIN" safe-switch --to "$v9" --config "$T/labnode.yaml"
spid=$last_pid
held() { [ -e "$T/state/hold" ] || ! kill -0 "$spid" 2>/dev/null; }
wait_for 20 "the switch to hold at its gates" held
[ -e "$T/state/hold" ] || fail "the switch did not get to its gates: $(cat "$T/switch.log")"
[ "$(readlink "$T/gcroots/known-good")" = "${paths[7]}" ] || fail "no GC root on the known-good system during the switch: $(ls -l "$T/gcroots" 2>&1)"
rc=0
"$LABNODE_BIN" gc --keep-generations 1 --delete-older-than 1d --lock-wait 0s --config "$T/labnode.yaml" >"$T/gc-busy.txt" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "labnode safe-switch" "$T/gc-busy.txt" || fail "gc beside a safe switch: exit $rc: $(cat "$T/gc-busy.txt")"
bg gc-wait "$LABNODE_BIN" gc --keep-generations 2 --delete-older-than 1d --lock-wait 60s --config "$T/labnode.yaml"
gpid=$last_pid
sleep 0.5
kill -0 "$gpid" 2>/dev/null || fail "gc did not wait for the switch: $(cat "$T/gc-wait.log")"
rm -f "$T/state/hold"
wait "$spid" || fail "the switch failed: $(cat "$T/switch.log")"
wait "$gpid" || fail "the waiting gc failed: $(cat "$T/gc-wait.log")"
[ ! -e "$T/gcroots/known-good" ] || fail "the GC root outlived the switch"
[ "$(readlink -f "$profile")" = "$v9" ] || fail "the switch did not end on its generation"
[ "$(gens "$profile" | wc -w)" = 2 ] || fail "the gc after the switch kept $(gens "$profile"), not the newest 2"
note "beside a safe switch: gc refused with --lock-wait 0s ($(head -n 1 "$T/gc-busy.txt" | cut -c1-90)...), waited with 60s; the known-good system had a GC root until the switch ended"
