#!/usr/bin/env bash
# timeout: 1500
# The fault matrix of node changes, on a real systemd (PID 1 of its own namespaces,
# tests/lib/systemd.sh) with generations whose switch-to-configuration behaves as NixOS's
# does where it can strand a node: it takes /run/nixos/switch-to-configuration.lock with
# `flock -n` ("Could not acquire lock", exit 1), stops web.service before its slow part,
# then installs and restarts it; `boot` alone points the boot loader ($T/boot-default) at it.
#
# Every phase of a safe switch and of a drill (profile flip, activation start,
# mid-activation, units settling, gate polling, boot, record) meets every fault (SIGKILL of
# labnode, SIGINT, a power cut and a boot, a nightly upgrade started meanwhile), and the
# generation faults (activation fails, a gate stays red, the boot loader fails) meet the
# kill and the power cut during their rollback. Then RANDOM_TRIALS (default 200) kills at
# random times. After each: the running system, the profile and the boot default name one
# generation whose gates are green, web.service is active and answers for it, the marker
# and every labnode unit are gone, and exactly one record per run says what happened.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/rollback.sh"
. "$(dirname "$0")/../lib/systemd.sh"

RANDOM_TRIALS=${RANDOM_TRIALS:-200}
port=8080 # in the private network namespace
profile="$T/profiles/system"
mkdir -p "$T/units" "$T/profiles" "$T/www"

# The boot of this "host": activate what the boot loader names (stage 2), then the boot
# unit of the agents module (`safe-switch --recover --retry`, only while a marker exists).
cat >"$T/units/boot-activation.service" <<UNIT
[Unit]
Description=stage-2 activation of the boot default (test stand-in)
ConditionPathExists=$T/boot-default
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'ln -sfn "\$(readlink -f $T/boot-default)" $T/current-system && exec $T/boot-default/bin/switch-to-configuration boot-activate'
UNIT
cat >"$T/units/labnode-safe-switch-recover.service" <<UNIT
[Unit]
Description=labnode safe-switch: finish or roll back a switch interrupted by a reboot
After=boot-activation.service
ConditionPathExists=$T/state/pending.json
[Service]
Type=exec
Environment="PATH=$PATH"
Environment="NIX_CONFIG=sandbox = false\nbuild-users-group =\nsubstituters ="
ExecStart=$LABNODE_BIN safe-switch --recover --retry --config $T/labnode.yaml
UNIT
printf '[Unit]\nDescription=test boot target\nWants=boot-activation.service labnode-safe-switch-recover.service\n' \
  >"$T/units/labnode-test.target"

# fault_generation NAME MODE: MODE ok, fail (exits 1 after stopping web.service), red (its
# web.service answers 404: the http gate stays red) or bootfail (`boot` exits 1).
# $T/hold-mid, while it exists, holds the activation in its slow part (web.service stopped).
fault_generation() {
  local name=$1 mode=$2 www="$T/www/$1"
  mkdir -p "$www"
  [ "$mode" = red ] || echo "version $name" >"$www/health"
  cat >"$T/activate-$name.sh" <<SCRIPT
set -e
mkdir -p /run/nixos
exec 9>>/run/nixos/switch-to-configuration.lock
flock -n 9 || { echo "Could not acquire lock" >&2; exit 1; }
echo "$name \$1" >> $T/activations
# A full ESP: no boot loader can be written, so switch (which, as NixOS's, installs the
# boot loader before it activates) and boot fail before changing anything.
if [ -e $T/esp-full ] && { [ "\$1" = boot ] || [ "\$1" = switch ]; }; then
  echo "installing the boot loader: No space left on device (simulated full ESP)" >&2
  exit 1
fi
if [ "\$1" = switch ]; then ln -sfn "\$out" $T/boot-default.tmp && mv -T $T/boot-default.tmp $T/boot-default; fi
if [ "\$1" = boot ]; then
  $([ "$mode" = bootfail ] && echo "echo 'installing the boot loader of $name failed (simulated)' >&2; exit 1")
  ln -sfn "\$out" $T/boot-default.tmp && mv -T $T/boot-default.tmp $T/boot-default
  exit 0
fi
ln -sfn "\$out" $T/current-system.tmp && mv -T $T/current-system.tmp $T/current-system
systemctl stop web.service 2>/dev/null || true
if [ -e $T/hold-mid ]; then echo "\$\$" > $T/at-mid; while [ -e $T/hold-mid ]; do sleep 0.02; done; fi
sleep 0.2
$([ "$mode" = fail ] && echo "echo 'activation of $name: a unit failed to start (simulated)' >&2; exit 1")
mkdir -p /run/labnode-units
printf '[Unit]\\nDescription=test web service $name\\n[Service]\\nExecStart=busybox httpd -f -p 127.0.0.1:$port -h $www\\n' > /run/labnode-units/web.service
systemctl daemon-reload
systemctl restart web.service
echo "activated $name (\$1)"
SCRIPT
  generation "$1" "$T/activate-$name.sh"
}

A=$(fault_generation "fa-a-$$" ok)
B=$(fault_generation "fa-b-$$" ok)
C=$(fault_generation "fa-c-$$" ok)
FAIL=$(fault_generation "fa-fail-$$" fail)
RED=$(fault_generation "fa-red-$$" red)
BOOTFAIL=$(fault_generation "fa-bootfail-$$" bootfail)
name_of() { # STORE_PATH: the generation's name
  case $1 in "$A") echo a ;; "$B") echo b ;; "$C") echo c ;; "$FAIL") echo fail ;; "$RED") echo red ;; "$BOOTFAIL") echo bootfail ;; *) echo "?" ;; esac
}
nix-env --profile "$profile" --set "$B" 2>/dev/null # something to roll back to
nix-env --profile "$profile" --set "$A" 2>/dev/null
ln -sfn "$A" "$T/boot-default"
boot_systemd "$T/units"
in_sd systemctl is-active --quiet web.service || fail "the first boot did not start web.service"
note "a private systemd $(in_sd systemctl --version | head -n 1 | cut -d' ' -f2) runs generation a"

cat >"$T/labnode.yaml" <<YAML
snapshot_dir: $T/snaps
rollback:
  profile: $profile
  current_system: $T/current-system
  state_dir: $T/state
  gc_root: $T/gcroots/known-good
  confirm_timeout: 2s
  gate_timeout: 5s
  poll_interval: 50ms
  retry_interval: 200ms
  gates:
    - name: unit
      systemd_active: [web.service]
    - name: no-failed
      systemd_no_failed: {}
    - name: web
      http: {url: "http://127.0.0.1:$port/health"}
YAML
records() { find "$T/snaps" -name '*.json' -exec cat {} + 2>/dev/null | jq -s '[.[].records[]?] | length'; }
mkdir -p "$T/snaps"
newest() { newest_snapshot "$T/snaps"; }
labnode_pids() { in_sd pgrep -f "^$LABNODE_BIN (safe-switch|drill)" || true; }
# lab START_WITH_HOLD ARGS...: labnode in the namespace, in the background ($last_pid).
lab() {
  local hold=$1
  shift
  bg "run-$trial" in_sd env LABNODE_TEST_HOLD_AT="$hold" "$LABNODE_BIN" "$@" --config "$T/labnode.yaml"
}

# settled: nothing of a run is left (marker, labnode, its units) and web.service is up.
settled() {
  [ ! -e "$T/state/pending.json" ] && [ -z "$(labnode_pids)" ] &&
    ! grep -qE ' (active|activating|deactivating) ' <<<"$(in_sd systemctl list-units --no-legend --plain 'labnode-rollback-guard-*' 'labnode-activation-*')" &&
    in_sd systemctl is-active --quiet web.service
}

# check NAME WANT_RECORDS ALLOWED...: the invariant after a trial. The running system, the
# profile and the boot default name one of ALLOWED (store paths), web.service answers for
# it, and WANT_RECORDS new records were written. Prints the generation it ended on.
check() {
  local name=$1 want=$2 cur prof bd got
  shift 2
  cur=$(readlink -f "$T/current-system")
  prof=$(readlink -f "$profile")
  bd=$(readlink -f "$T/boot-default")
  [ "$cur" = "$prof" ] && [ "$prof" = "$bd" ] ||
    fail "$name: running $(name_of "$cur"), profile $(name_of "$prof"), boot default $(name_of "$bd")"
  local g ok=0
  for g in "$@"; do [ "$g" = "$cur" ] && ok=1; done
  [ "$ok" = 1 ] || fail "$name: ended on $(name_of "$cur"), not on $(for g in "$@"; do name_of "$g"; done | tr '\n' ' ')"
  [ "$(in_sd curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null)" = "version fa-$(name_of "$cur")-$$" ] ||
    fail "$name: web.service does not answer for $(name_of "$cur")"
  in_sd systemctl --failed --no-legend --plain | grep -q . && fail "$name: failed units: $(in_sd systemctl --failed --no-legend --plain)"
  got=$(($(records) - r0))
  [ "$got" = "$want" ] || fail "$name: $got new records, want $want: $(jq -c '.records[].data | {outcome, success, reason, error}' "$(newest)" 2>/dev/null)"
  name_of "$cur"
}

# The power cut: everything in the namespace dies at once; the boot loader's default boots.
power_cut_and_boot() {
  halt_systemd
  rm -f "$T/hold-mid" "$T/state/hold"
  boot_systemd "$T/units" "$(cat /proc/sys/kernel/random/uuid)"
}

# wait_hold POINT: until labnode holds at POINT (phase.step) or, for "mid", the activation
# is in its slow part.
wait_hold() {
  local end=$((SECONDS + 20))
  until if [ "$1" = mid ]; then test -s "$T/at-mid"; else grep -q "^$1 " "$T/state/hold" 2>/dev/null; fi; do
    [ "$SECONDS" -lt "$end" ] || fail "trial $trial: labnode did not get to $1: $(tail -n 20 "$T/run-$trial.log")"
    sleep 0.05
  done
}
release() { rm -f "$T/hold-mid" "$T/state/hold" "$T/at-mid"; }
holding_pid() { # the held labnode (namespace pid)
  jq -r .pid "$T/state/pending.json"
}

table=()
trial=0
# run_case KIND POINT FAULT TO...: one trial. KIND switch|drill; POINT phase.step or mid;
# FAULT kill|int|cut|upgrade|none; TO the target of a switch (ignored by a drill).
run_case() {
  local kind=$1 point=$2 fault=$3 to=$4 known t0 t1 end want other allowed
  # FAULT_ONLY="PATTERN": only the cases whose "kind point fault" match (to debug one).
  [[ -z "${FAULT_ONLY:-}" || "$kind $point $fault" == $FAULT_ONLY ]] || return 0
  trial=$((trial + 1))
  known=$(readlink -f "$profile")
  r0=$(records)
  release
  [ "$point" = mid ] && touch "$T/hold-mid"
  local hold=$point
  [ "$point" = mid ] && hold=""
  if [ "$kind" = switch ]; then
    lab "$hold" safe-switch --to "$to"
  else
    lab "$hold" drill rollback --yes
  fi
  local runner=$last_pid
  if [ "$point" != none ]; then wait_hold "$point"; fi
  t0=$(date +%s.%N)
  want=1
  allowed=("$known")
  [ "$kind" = switch ] && allowed+=("$to")
  case $fault in
    kill) in_sd kill -9 "$(holding_pid)" ;;
    int) in_sd kill -INT "$(holding_pid)" ;;
    cut) power_cut_and_boot ;;
    upgrade)
      # The nightly upgrade starts meanwhile (to a third generation): it waits for the
      # run, then switches.
      other=$C
      bg "upgrade-$trial" in_sd "$LABNODE_BIN" safe-switch --to "$other" --lock-wait 60s --label nightly-upgrade --config "$T/labnode.yaml"
      sleep 0.3
      [ -e "$T/state/hold" ] || [ -e "$T/at-mid" ] || fail "$kind $point: the run did not wait at its hold point"
      want=2
      allowed=("$other")
      ;;
    none) ;;
  esac
  release
  wait "$runner" 2>/dev/null || true
  [ "$fault" = upgrade ] && { wait "$last_pid" 2>/dev/null || true; }
  wait_for 90 "$kind $point $fault: the run to be recovered" settled
  t1=$(date +%s.%N)
  end=$(check "$kind $point $fault" "$want" "${allowed[@]}")
  says "$kind $point $fault" "$kind" "$fault" "$to"
  local took
  took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  echo "$kind $fault $took" >>"$T/times"
  table+=("$kind|$point|$fault|$(name_of "$to")|$end|$took")
}

# says NAME KIND FAULT TO: the run's record (the newest of its kind) says what happened:
# the outcome matches where the host ended, and a fault is named as the reason.
says() {
  local name=$1 kind=$2 fault=$3 to=$4 s data="" why
  s=$(grep -l "\"kind\": *\"$([ "$kind" = switch ] && echo safe_switch || echo rollback_drill)\"" "$T/snaps"/*.json | sort | tail -n 1)
  [ -n "$s" ] || fail "$name: no record"
  [ "$fault" = upgrade ] && return 0 # two runs: the upgrade's record is the newest
  if [ "$kind" = switch ]; then
    data=$(record "$s" safe_switch '[.outcome, .reason // ""] | join("|")')
    case ${data%%|*} in
      confirmed) [ "$(readlink -f "$profile")" = "$to" ] || fail "$name: confirmed, but the host is not on it" ;;
      rolled_back) [ "$(readlink -f "$profile")" != "$to" ] || fail "$name: rolled back, but the host is on it" ;;
      *) fail "$name: outcome ${data%%|*}" ;;
    esac
    why=${data#*|}
  else
    why=$(record "$s" rollback_drill '[.interrupted // "", .error // ""] | join(" ")')
  fi
  case $fault in
    kill) want="died|guard|interrupted" ;;
    int) want="SIGINT" ;;
    cut) want="rebooted" ;;
    *) want="." ;;
  esac
  # A fault at the record step may come after the run wrote its record: nothing to say.
  [ "$point" = done.record ] || [ "${data%%|*}" = confirmed ] || grep -qE "$want" <<<"$why" ||
    fail "$name: the record does not name the fault ($want): $why"
}

# random_trial: a safe switch (to a good generation mostly, sometimes to one that fails or
# whose gate stays red) or a drill, hit at a random time by SIGKILL, SIGINT or a power cut.
# A fault that comes before the run changed anything leaves no record, and the profile as
# it was; one that comes after its end hits nothing.
random_trial() {
  local known r kind to fault delay gens0 t0 t1 end want=1 pid
  trial=$((trial + 1))
  known=$(readlink -f "$profile")
  r0=$(records)
  gens0=$(nix-env --profile "$profile" --list-generations | wc -l)
  r=$((RANDOM % 100))
  to=$A
  [ "$known" = "$A" ] && to=$B
  if [ "$r" -lt 8 ]; then to=$FAIL; elif [ "$r" -lt 16 ]; then to=$RED; fi
  kind=switch
  [ $((RANDOM % 5)) = 0 ] && kind=drill
  r=$((RANDOM % 10))
  fault=kill
  if [ "$r" -ge 8 ]; then fault=cut; elif [ "$r" -ge 6 ]; then fault=int; fi
  # Uniform over a good switch's length (about 1 s here; a red gate's confirm is 2 s);
  # RANDOM_MAX_DELAY narrows it (0.05: the run's first steps, its marker and its guard).
  delay=$(awk -v r="$RANDOM" -v max="${RANDOM_MAX_DELAY:-1.3}" 'BEGIN { printf "%.3f", r / 32768 * max }')
  if [ "$kind" = switch ]; then lab "" safe-switch --to "$to"; else lab "" drill rollback --yes; fi
  local runner=$last_pid
  sleep "$delay"
  t0=$(date +%s.%N)
  case $fault in
    kill | int)
      pid=$(in_sd pgrep -f "^$LABNODE_BIN (safe-switch --to|drill rollback --yes)" | head -n 1 || true)
      local sig=KILL
      [ "$fault" = int ] && sig=INT
      [ -z "$pid" ] || in_sd kill "-$sig" "$pid" 2>/dev/null || true
      ;;
    cut) power_cut_and_boot ;;
  esac
  wait "$runner" 2>/dev/null || true
  wait_for 90 "random trial $trial ($kind $fault after ${delay}s): the run to be recovered" settled
  t1=$(date +%s.%N)
  local allowed=("$known")
  [ "$kind" = switch ] && allowed+=("$to")
  if [ "$(records)" = "$r0" ]; then
    want=0
    [ "$(nix-env --profile "$profile" --list-generations | wc -l)" = "$gens0" ] ||
      fail "random trial $trial ($kind to $(name_of "$to"), $fault after ${delay}s): no record, but the profile changed"
  fi
  end=$(check "random trial $trial ($kind to $(name_of "$to"), $fault after ${delay}s)" "$want" "${allowed[@]}")
  # hit: the fault found the run (a labnode to signal, or the power cut) still going.
  local hit=1
  [ "$fault" = cut ] || [ -n "$pid" ] || hit=0
  echo "$kind $fault $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $want $end $hit" >>"$T/random"
}

if [ "${FAULT_WORKER:-}" = 1 ]; then
  # A worker of the random trials (below): its own systemd, generations and store.
  for _ in $(seq 1 "$RANDOM_TRIALS"); do random_trial; done
  awk '{ n++; hit += $6; rec += $4 } END { printf "RESULT %d %d %d\n", n, hit, rec }' "$T/random"
  cat "$T/random" | sed 's/^/TIME /'
  exit 0
fi

# 2. The random trials, in FAULT_WORKERS workers beside the matrix (each its own systemd
# and generations; most of a trial is waiting).
workers=${FAULT_WORKERS:-4}
per=$(((RANDOM_TRIALS + workers - 1) / workers))
wpids=()
if [ "$RANDOM_TRIALS" -gt 0 ]; then
  for w in $(seq 1 "$workers"); do
    (
      rc=0
      FAULT_WORKER=1 RANDOM_TRIALS=$per bash "$0" >"$T/worker-$w.log" 2>&1 || rc=$?
      echo "$rc" >"$T/worker-$w.rc"
    ) &
    wpids+=($!)
  done
fi

# 1. The matrix: every phase of a safe switch and of a drill, times every fault.
for point in switch.flip switch.activate mid switch.settle switch.gates switch.boot done.record; do
  for fault in kill int cut upgrade; do
    cur=$(readlink -f "$profile")
    to=$B
    [ "$cur" = "$B" ] && to=$A
    run_case switch "$point" "$fault" "$to"
  done
done
for point in rollback.flip rollback.activate rollback.gates rollback.boot rollforward.activate rollforward.gates rollforward.boot done.record; do
  for fault in kill int cut; do
    run_case drill "$point" "$fault" -
  done
done

# 2. Generations that fail, and faults during their rollback.
# (A rollback makes the old generation the boot default again only where the boot
# loader was touched: after a failed `boot`.)
for to in "$FAIL" "$RED" "$BOOTFAIL"; do
  run_case switch none none "$to"
  points="rollback.activate rollback.gates"
  [ "$to" = "$BOOTFAIL" ] && points="$points rollback.boot"
  for point in $points; do
    for fault in kill cut; do
      run_case switch "$point" "$fault" "$to"
    done
  done
done
# 3. A terminal that hangs up: labnode's output goes to a pipe nobody reads any more (an
#    ssh session that dropped). The switch goes on and is confirmed; nothing panics.
if [[ -z "${FAULT_ONLY:-}" || "$FAULT_ONLY" == hangup ]]; then
  known=$(readlink -f "$profile")
  to=$A
  [ "$known" = "$A" ] && to=$B
  r0=$(records)
  {
    rc=0
    in_sd "$LABNODE_BIN" safe-switch --to "$to" --config "$T/labnode.yaml" 2>&1 || rc=$?
    echo "$rc" >"$T/hangup.rc"
  } | true
  wait_for 30 "the switch behind a closed pipe to end" test -s "$T/hangup.rc"
  wait_for 30 "the switch behind a closed pipe to be over" settled
  [ "$(cat "$T/hangup.rc")" = 0 ] || fail "safe-switch writing to a closed pipe exited $(cat "$T/hangup.rc")"
  [ "$(check "closed pipe" 1 "$to")" = "$(name_of "$to")" ]
  [ "$(record "$(newest)" safe_switch .outcome)" = confirmed ] || fail "the switch behind a closed pipe was not confirmed"
  note "output to a closed pipe: the switch to $(name_of "$to") was confirmed, exit 0"
fi

# 4. A full ESP: the new generation's gates are green but `boot` fails, so it is rolled
#    back; the old generation is reactivated (with `test`: the boot loader is not needed
#    for that) and runs, but it cannot be made the boot default either. The marker stays
#    (the recovery is retried; the collector says so) until the ESP has room again.
if [[ -z "${FAULT_ONLY:-}" || "$FAULT_ONLY" == esp ]]; then
  known=$(readlink -f "$profile")
  to=$A
  [ "$known" = "$A" ] && to=$B
  r0=$(records)
  touch "$T/esp-full"
  rc=0
  in_sd "$LABNODE_BIN" safe-switch --to "$to" --config "$T/labnode.yaml" >"$T/esp.txt" 2>&1 || rc=$?
  [ "$rc" = 1 ] || fail "a switch with a full ESP exited $rc: $(cat "$T/esp.txt")"
  [ "$(readlink -f "$T/current-system")" = "$known" ] && [ "$(readlink -f "$profile")" = "$known" ] ||
    fail "with a full ESP the old generation was not reactivated: running $(name_of "$(readlink -f "$T/current-system")")"
  [ "$(in_sd curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null)" = "version fa-$(name_of "$known")-$$" ] ||
    fail "with a full ESP the old generation's service does not answer"
  jq -r .recovery.last_error "$T/state/pending.json" | grep -q "boot default" ||
    fail "the marker does not say the boot default is the problem: $(jq -c .recovery "$T/state/pending.json" 2>&1)"
  [ "$(records)" = "$r0" ] || fail "recorded while the boot default is unknown"
  mport=$(free_port)
  bg esp-collector "$LABNODE_BIN" serve --config "$T/labnode.yaml" --collector rollback --listen "127.0.0.1:$mport"
  # Its first run reads every record in the store (a few hundred here): wait for it.
  says_failed() {
    curl -fsS "http://127.0.0.1:$mport/metrics" >"$T/esp-metrics.txt" &&
      grep -qx 'labnode_rollback_recovery_failed 1' "$T/esp-metrics.txt"
  }
  wait_for 60 "the rollback collector to say the recovery failed" says_failed
  kill "$last_pid"
  # The guard keeps retrying; with room on the ESP its next attempt ends it.
  in_sd systemctl list-units --no-legend --plain 'labnode-rollback-guard-*' | grep -q ' active ' ||
    fail "nobody retries the recovery: the guard is gone"
  rm -f "$T/esp-full"
  wait_for 30 "the guard's retry once the ESP has room" settled
  [ "$(check "full ESP" 1 "$known")" = "$(name_of "$known")" ]
  [ "$(record "$(newest)" safe_switch .outcome)" = rolled_back ] || fail "the full-ESP switch is not recorded as rolled back"
  note "a full ESP: rolled back, the old generation reactivated and serving at once; the marker kept (boot default unknown) and the guard retrying until the ESP had room, then recorded"
fi

# 5. A snapshot store that cannot be written after a confirmed switch: the switch stands,
#    the record is kept in the state directory, exit 1 naming it.
if [[ -z "${FAULT_ONLY:-}" || "$FAULT_ONLY" == store ]]; then
  known=$(readlink -f "$profile")
  to=$A
  [ "$known" = "$A" ] && to=$B
  touch "$T/not-a-directory"
  rc=0
  in_sd "$LABNODE_BIN" safe-switch --to "$to" --out "$T/not-a-directory/snaps" --config "$T/labnode.yaml" >"$T/store.txt" 2>&1 || rc=$?
  [ "$rc" = 1 ] && grep -q "unsaved-" "$T/store.txt" || fail "a switch whose store cannot be written: exit $rc: $(cat "$T/store.txt")"
  r0=$(records)
  [ "$(check "unwritable store" 0 "$to")" = "$(name_of "$to")" ]
  ls "$T/state"/unsaved-*.json >/dev/null 2>&1 || fail "the record was not kept in the state directory"
  note "a store that cannot be written: the confirmed switch to $(name_of "$to") stands, its record kept in $(basename "$(ls "$T/state"/unsaved-*.json | head -n 1)"), exit 1"
fi

# 6. labnode killed while its nix-env flips the profile (found by the random trials under
#    load: a kill 0.09 s into a switch). nix-env is slow here on purpose (it waits 1 s
#    before it runs); an orphaned nix-env that outlived labnode would flip the profile after
#    the guard had restored the known-good generation: running b, profile a.
if [[ -z "${FAULT_ONLY:-}" || "$FAULT_ONLY" == slow-nix-env ]]; then
  known=$(readlink -f "$profile")
  to=$A
  [ "$known" = "$A" ] && to=$B
  r0=$(records)
  real_nix_env=$(command -v nix-env)
  cat >"$T/slow-nix-env" <<SCRIPT
#!/bin/sh
case "\$*" in *--set*) touch $T/nix-env-started; sleep 1 ;; esac
exec $real_nix_env "\$@"
SCRIPT
  chmod +x "$T/slow-nix-env"
  sed "s|^rollback:|rollback:\n  nix_env: $T/slow-nix-env|" "$T/labnode.yaml" >"$T/slow.yaml"
  rm -f "$T/nix-env-started"
  bg slow-switch in_sd "$LABNODE_BIN" safe-switch --to "$to" --config "$T/slow.yaml"
  wait_for 20 "the slow nix-env to start" test -e "$T/nix-env-started"
  in_sd pkill -9 -f "^$LABNODE_BIN safe-switch --to $to --config $T/slow.yaml"
  wait_for 60 "the switch killed during nix-env to be recovered" settled
  sleep 1.5 # the time an orphaned nix-env would take to flip the profile after all
  end=$(check "killed during nix-env --set" 1 "$known")
  in_sd pgrep -f "$T/slow-nix-env" >/dev/null && fail "nix-env outlived the labnode that ran it"
  note "labnode killed while nix-env flips the profile: nix-env died with it; back on $(name_of "$known"), running, profile and boot default agree"
fi

# The matrix as a table: a row per run and point, a column per fault; each cell says the
# generation the host ended on and the time from the fault until nothing was left to do.
printf '%s\n' "${table[@]}" | awk -F'|' '
  { key = $1 " " $2 ($4 == "a" || $4 == "b" || $4 == "c" || $4 == "-" || $4 == "?" ? "" : " (to " $4 ")")
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    cell[key, $3] = $5 " " $6 "s"; faults[$3] = 1 }
  END {
    split("kill int cut upgrade none", f, " ")
    printf "  %-34s", "run / point"; for (i = 1; i <= 5; i++) if (f[i] in faults) printf " %-10s", f[i]; print ""
    for (j = 1; j <= n; j++) {
      printf "  %-34s", order[j]
      for (i = 1; i <= 5; i++) if (f[i] in faults) printf " %-10s", ((order[j], f[i]) in cell ? cell[order[j], f[i]] : "-")
      print ""
    }
  }'
note "matrix: ${#table[@]} cases, every one ended on one generation with green gates, web.service up, one record per run"

# For bench/rollback-faults: every hit's time by fault, and the floor a recovery is measured
# against: the bare `switch-to-configuration test` of the generation that runs, until its
# service answers (what a rollback costs with nothing to detect, wait for or record).
if [ -n "${FAULT_TIMES_OUT:-}" ]; then
  g=$(readlink -f "$profile")
  for _ in 1 2 3 4 5; do
    t0=$(date +%s.%N)
    in_sd "$g/bin/switch-to-configuration" test >/dev/null
    until [ "$(in_sd curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null)" = "version fa-$(name_of "$g")-$$" ]; do sleep 0.01; done
    echo "bare activation $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')" >>"$T/times"
  done
fi

# The random trials' figures.
if [ "$RANDOM_TRIALS" -gt 0 ]; then
  for w in $(seq 1 "$workers"); do
    wait_for 1200 "random trials, worker $w" test -s "$T/worker-$w.rc"
    if [ "$(cat "$T/worker-$w.rc")" != 0 ]; then
      tail -n 30 "$T/worker-$w.log" | sed "s/^/  worker $w: /" >&2
      fail "random trials, worker $w: $(grep -m 1 '^FAIL' "$T/worker-$w.log" || echo "exit $(cat "$T/worker-$w.rc")")"
    fi
  done
  cat "$T"/worker-*.log | awk '
    $1 == "RESULT" { n += $2; hit += $3; rec += $4 }
    $1 == "TIME" { f[$3]++ }
    $1 == "TIME" && $7 == 1 { t[++k] = $4 }
    END {
      asort(t)
      printf "  random trials: %d, 0 failed (%d SIGKILL, %d SIGINT, %d power cuts); %d hit a run still going, %d missed it (not started or over); %d records, one per run that changed something\n", n, f["kill"], f["int"], f["cut"], hit, n - hit, rec
      if (k) printf "  the hits, from the fault to nothing left to do: p50 %.2fs, p95 %.2fs, max %.2fs\n", t[int(k * 0.5 + 0.5)], t[int(k * 0.95 + 0.5)], t[k]
    }'
fi
if [ -n "${FAULT_TIMES_OUT:-}" ]; then
  {
    cat "$T/times"
    cat "$T"/worker-*.log 2>/dev/null | awk '$1 == "TIME" && $7 == 1 { print "random", $3, $4 }'
  } >"$FAULT_TIMES_OUT"
fi
