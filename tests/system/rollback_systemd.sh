#!/usr/bin/env bash
# Rollback drills and safe switches against a real systemd (PID 1 of its own namespaces,
# tests/lib/systemd.sh) over its private D-Bus socket, with generations whose
# switch-to-configuration installs a unit, runs daemon-reload and restarts it, as NixOS's
# does. The systemd gates (units active, no failed unit, empty job queue) and the
# units_settled phase are measured for real; safe-switch: all green is confirmed, having run
# the new generation's switch-to-configuration `test` and then, only once every gate was
# green, `boot` (the boot loader, $T/boot-default, names the old generation until then; a
# rolled-back switch never runs `boot`); a failing
# activation, a unit that fails and a service that never answers are rolled back with
# time-to-detect and time-to-recover; kill -9 of labnode mid-confirmation is rolled back by
# its transient systemd guard; a power cut mid-confirmation boots the old generation (the
# boot loader's default was never changed) and its boot unit (`labnode safe-switch
# --recover`) finishes the rollback.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/rollback.sh"
. "$(dirname "$0")/../lib/systemd.sh"

D=3
port=8080 # in the private network namespace
mkdir -p "$T/units" "$T/profiles"
boot_systemd "$T/units"
note "a private systemd $(in_sd systemctl --version | head -n 1 | cut -d' ' -f2) runs as PID 1 (host pid $sd_pid)"

v1=$(web_generation "sd-v1-$$" ok "$D" "$port" systemd)
v2=$(web_generation "sd-v2-$$" ok "$D" "$port" systemd)
profile="$T/profiles/system"
nix-env --profile "$profile" --set "$v1" 2>/dev/null
nix-env --profile "$profile" --set "$v2" 2>/dev/null
in_sd "$v2/bin/switch-to-configuration" switch >/dev/null
healthy() { in_sd curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null | grep -q "version $1"; }
wait_for 20 "generation 2's web.service" healthy "sd-v2-$$"
lport=$(free_port)
cat >"$T/labnode.yaml" <<YAML
listen: 127.0.0.1:$lport
snapshot_dir: $T/snaps
collectors:
  rollback: {interval: 1s, deadline: 1s}
rollback:
  profile: $profile
  current_system: $T/current-system
  state_dir: $T/state
  gate_timeout: 20s
  gates:
    - name: unit
      systemd_active: [web.service]
    - name: no-failed
      systemd_no_failed: {}
    - name: jobs
      systemd_jobs_empty: {}
    - name: web
      http: {url: "http://127.0.0.1:$port/health"}
YAML
labnode() { in_sd "$LABNODE_BIN" "$@" --config "$T/labnode.yaml"; }
newest() { newest_snapshot "$T/snaps"; }

# The rollback collector (outside the namespace, reading the same store) and a real
# Prometheus with the shipped rollback rules, to see the safe-switch series and alert.
watch_rollback "$lport"

# 1. A drill: the units_settled phase and the systemd gates.
labnode drill rollback --yes >"$T/drill.txt" 2>&1 || fail "the drill failed: $(cat "$T/drill.txt")"
sed 's/^/    | /' "$T/drill.txt"
s=$(newest)
for dir in rollback rollforward; do
  sel=".directions[] | select(.direction == \"$dir\")"
  r=$(record "$s" rollback_drill "$sel | .recovery_seconds")
  within "$dir recovery" "$r" "$D" 0.10 0.05
  settled=$(record "$s" rollback_drill "$sel | .phases.units_settled")
  [ "$settled" != null ] || fail "$dir: no units_settled phase: $(record "$s" rollback_drill "$sel | .settle_skipped")"
  for g in unit no-failed jobs web; do
    [ "$(record "$s" rollback_drill "$sel | .gates[] | select(.name == \"$g\") | .passed")" = true ] || fail "$dir: gate $g did not pass"
  done
  note "$dir: recovery ${r}s (service answers after ${D}s), units settled in ${settled}s, 4 gates green"
done
[ "$(profile_gen "$profile")" = 2 ] && healthy "sd-v2-$$" || fail "the drill did not end on generation 2"

# 1b. The drill as the NixOS module starts it: a oneshot unit runs labnode in a unit of its
#     own and waits for it (the module: `systemd-run --wait`; here `systemctl start`, as
#     there is no D-Bus daemon), so the parent's start job stays queued until labnode is
#     done. With LABNODE_PARENT_UNIT (what the module sets) that job is labnode's own and
#     the units settle; without it the same drill waits on it and fails at the settle timeout.
module_drill() { # NAME CONFIG [LABNODE_PARENT_UNIT]
  local name=$1 config=$2 parent=${3:-}
  {
    printf '[Service]\nType=oneshot\nEnvironment="PATH=%s"\n' "$PATH"
    printf 'Environment="NIX_CONFIG=sandbox = false\\nbuild-users-group =\\nsubstituters ="\n'
    [ -z "$parent" ] || printf 'Environment=LABNODE_PARENT_UNIT=%s\n' "$parent"
    printf 'ExecStart=%s drill rollback --yes --config %s\n' "$LABNODE_BIN" "$config"
  } | in_sd sh -c "cat >/run/labnode-units/$name-run.service"
  printf '[Service]\nType=oneshot\nExecStart=%s start %s-run.service\n' "$(command -v systemctl)" "$name" |
    in_sd sh -c "cat >/run/labnode-units/$name.service"
  in_sd systemctl daemon-reload
  in_sd systemctl start "$name.service"
}
module_drill labnode-drill-rollback "$T/labnode.yaml" labnode-drill-rollback.service \
  >"$T/module-drill.txt" 2>&1 || fail "the drill under a oneshot parent failed: $(cat "$T/module-drill.txt"; record "$(newest)" rollback_drill '.directions[].error')"
s=$(newest)
[ "$(record "$s" rollback_drill .success)" = true ] || fail "the drill under a oneshot parent did not succeed"
settled=$(record "$s" rollback_drill '.directions[0].phases.units_settled')
[ "$settled" != null ] || fail "the drill under a oneshot parent has no units_settled phase"
sed 's/^  gate_timeout: 20s$/  gate_timeout: 20s\n  settle_timeout: 3s/' "$T/labnode.yaml" >"$T/short-settle.yaml"
grep -q 'settle_timeout: 3s' "$T/short-settle.yaml" || fail "could not shorten the settle timeout"
if module_drill labnode-drill-noparent "$T/short-settle.yaml" >"$T/noparent.txt" 2>&1; then
  fail "a drill under a oneshot parent it was not told about settled: the control case proves nothing"
fi
# Its roll forward cannot settle either: not healthy, so no record yet; the marker keeps
# the reason for the next attempt.
jq -r '.recovery.last_error' "$T/state/pending.json" | grep -q 'labnode-drill-noparent.service' ||
  fail "the control drill failed for another reason: $(jq -c '.recovery' "$T/state/pending.json" 2>&1)"
# The failed control units would turn the no-failed gate red for the cases below.
in_sd systemctl reset-failed labnode-drill-noparent.service labnode-drill-noparent-run.service
# Finished by hand (as the boot unit would): now it settles, and the drill's one record says so.
labnode safe-switch --recover >"$T/finish-control.txt" 2>&1 || fail "finishing the control drill failed: $(cat "$T/finish-control.txt")"
[ ! -e "$T/state/pending.json" ] || fail "the control drill's marker is left"
record "$(newest)" rollback_drill '.error' | grep -q 'labnode-drill-noparent.service' ||
  fail "the control drill's record does not say why: $(record "$(newest)" rollback_drill '.error')"
[ "$(profile_gen "$profile")" = 2 ] && healthy "sd-v2-$$" || fail "the control drill did not end on generation 2"
note "under a oneshot parent (the module's shape): settled in ${settled}s with LABNODE_PARENT_UNIT; without it the parent's start job keeps it unsettled"

# 2. safe-switch to a good generation: confirmed; its guard ran beside it.
v3=$(web_generation "sd-v3-$$" ok "$D" "$port" systemd)
bg switch-good in_sd "$LABNODE_BIN" safe-switch --to "$v3" --config "$T/labnode.yaml"
spid=$last_pid
guarded() { in_sd systemctl list-units --no-legend --plain 'labnode-rollback-guard-*' | grep -qE 'active +running'; }
wait_for 10 "the guard unit to run during the switch" guarded
wait "$spid" || fail "safe-switch to a good generation failed: $(cat "$T/switch-good.log")"
s=$(newest)
[ "$(record "$s" safe_switch .outcome)" = confirmed ] || fail "not confirmed: $(cat "$T/switch-good.log")"
[ "$(profile_gen "$profile")" = 3 ] && healthy "sd-v3-$$" || fail "not on generation 3"
[ ! -e "$T/state/pending.json" ] || fail "the marker is left"
[ "$(actions "sd-v3-$$")" = "test boot" ] || fail "confirmation ran '$(actions "sd-v3-$$")', not 'test boot'"
[ "$(boot_default)" = "$v3" ] || fail "the boot loader's default is $(boot_default), not generation 3"
[ "$(record "$s" safe_switch .switch.phases.boot_default)" != null ] || fail "no boot_default phase in the record"
gone() { ! in_sd systemctl list-units --all --no-legend --plain 'labnode-rollback-guard-*' | grep -q .; }
wait_for 5 "the guard to go once the switch is confirmed" gone
note "good generation 3: confirmed, exit 0 (switch-to-configuration test, then boot once green), its systemd guard ran beside it and is gone"

# rolled_back NAME EXPECT_REASON: the newest record is a rollback to generation 3, healthy;
# the boot loader's default is generation 3's.
rolled_back() {
  s=$(newest)
  [ "$(record "$s" safe_switch .outcome)" = rolled_back ] || fail "$1: not rolled back"
  reason=$(record "$s" safe_switch .reason)
  grep -qE "$2" <<<"$reason" || fail "$1: the reason does not say why: $reason"
  [ "$(record "$s" safe_switch .healthy)" = true ] || fail "$1: not healthy after the rollback"
  detect=$(record "$s" safe_switch .detect_seconds)
  recover=$(record "$s" safe_switch .recover_seconds)
  [ "$(readlink -f "$T/current-system")" = "$v3" ] && healthy "sd-v3-$$" || fail "$1: generation 3 does not run"
  [ "$(readlink -f "$profile")" = "$v3" ] || fail "$1: the profile is not back on generation 3's system"
  [ ! -e "$T/state/pending.json" ] || fail "$1: the marker is left"
  [ "$(boot_default)" = "$v3" ] || fail "$1: the boot loader's default is $(boot_default), not generation 3"
}
# never_boot NAME GENERATION: GENERATION's switch-to-configuration ran `test`, never `switch`
# or `boot`.
never_boot() {
  local a
  a=$(actions "$2")
  grep -qw test <<<"$a" && ! grep -qwE "boot|switch" <<<"$a" || fail "$1: $2 ran '$a', not only test"
}
switch_fails() { # NAME STORE_PATH ARGS...: safe-switch that must exit 1
  local name=$1 to=$2 rc=0
  shift 2
  labnode safe-switch --to "$to" "$@" >"$T/$name.txt" 2>&1 || rc=$?
  [ "$rc" = 1 ] || fail "$name: safe-switch exited $rc, not 1: $(cat "$T/$name.txt")"
}

# 3. An activation that fails.
bad=$(web_generation "sd-fail-$$" fail "$D" "$port" systemd)
switch_fails activation-fails "$bad"
rolled_back "activation fails" "activation failed: .*exit status: 1.*a unit failed to start \(simulated\)"
never_boot "activation fails" "sd-fail-$$"
within "recover after a failed activation" "$recover" "$D" 0.25 0.5
awk -v d="$detect" 'BEGIN { exit !(d < 1) }' || fail "detecting a failed activation took ${detect}s"
note "activation exits 1: rolled back, exit 1; detected in ${detect}s, recovered in ${recover}s"
firing() { curl -fsS "http://127.0.0.1:$pport/api/v1/alerts" | jq -e '.data.alerts[] | select(.labels.alertname == "SafeSwitchRolledBack" and .state == "firing")' >/dev/null; }
wait_for 30 "SafeSwitchRolledBack to fire" firing
expect_value "$pport" labnode_rollback_safe_switch_detect_seconds "$detect" 1e-9
expect_value "$pport" labnode_rollback_safe_switch_recover_seconds "$recover" 1e-9
expect_value "$pport" 'labnode_rollback_safe_switch_total{outcome="confirmed"}' 1
note "Prometheus: SafeSwitchRolledBack fires; time to detect and to recover as recorded"

# 4. A unit that fails at once: the no-failed gate stays red until the confirm timeout.
unitfail=$(web_generation "sd-unitfail-$$" unitfail "$D" "$port" systemd)
switch_fails unit-fails "$unitfail" --confirm-timeout 4s
rolled_back "unit fails" "no-failed \(systemd_no_failed\) red after [0-9]+ checks: (red again after passing: )?failed units: web.service"
within "detect at the confirm timeout" "$detect" 4 0.15 0.3
never_boot "unit fails" "sd-unitfail-$$"
note "web.service fails: rolled back at the 4 s confirm timeout (detect ${detect}s, recover ${recover}s): $(cut -c1-80 <<<"$reason")..."

# 5. A service that never answers.
never=$(web_generation "sd-never-$$" never "$D" "$port" systemd)
switch_fails never-answers "$never" --confirm-timeout 3s
rolled_back "never answers" "web \(http\) red after [0-9]+ checks: GET http://127.0.0.1:$port/health: .*[Cc]onnection refused"
within "detect at the confirm timeout" "$detect" 3 0.15 0.3
never_boot "never answers" "sd-never-$$"
note "the service never answers: rolled back at the 3 s confirm timeout (detect ${detect}s, recover ${recover}s); a red gate never ran boot"

# 6. kill -9 of labnode mid-confirmation: its transient systemd guard rolls back at once.
slow=$(web_generation "sd-slow-$$" ok 8 "$port" systemd)
bg switch-killed in_sd "$LABNODE_BIN" safe-switch --to "$slow" --confirm-timeout 60s --config "$T/labnode.yaml"
# Mid-confirmation: the activation has finished (systemd runs the slow generation's
# web.service, whose httpd answers only after 8 s) and labnode is still in its `switch`
# phase, waiting for the gates. (The activation flips current-system before it talks to
# systemd, so the symlink alone would also match a half-done activation.)
confirming() {
  [ "$(jq -r .phase "$T/state/pending.json" 2>/dev/null)" = switch ] &&
    [ "$(readlink -f "$T/current-system")" = "$slow" ] || return 1
  local unit
  unit=$(in_sd systemctl show -p Description -p ActiveState web.service) &&
    grep -qx "ActiveState=active" <<<"$unit" &&
    grep -qx "Description=test web service sd-slow-$$" <<<"$unit"
}
wait_for 20 "the switch to be mid-confirmation" confirming
sleep 1
lpid=$(jq -r .pid "$T/state/pending.json")
killed_at=$(date +%s.%N)
in_sd kill -9 "$lpid"
back() { [ ! -e "$T/state/pending.json" ] && [ "$(readlink -f "$profile")" = "$v3" ]; }
wait_for 30 "the guard to roll back" back
wait "$last_pid" 2>/dev/null || true
rolled_back "labnode killed" "labnode \(pid $lpid\) died during its \`switch\` phase \(step gates\); found by its systemd guard"
started=$(record "$s" safe_switch .started_unix)
lag=$(awk -v k="$killed_at" -v s="$started" -v d="$detect" 'BEGIN { printf "%.3f", s + d - k }')
within "guard detection lag after the kill" "$lag" 0 0 0.5
note "kill -9 mid-confirmation: the guard rolled back ${lag}s after the kill; recovered in ${recover}s"

# 7. A power cut mid-confirmation; on the next boot the boot unit rolls back.
bg switch-cut in_sd "$LABNODE_BIN" safe-switch --to "$slow" --confirm-timeout 60s --config "$T/labnode.yaml"
wait_for 20 "the switch to be mid-confirmation" confirming
halt_systemd
wait "$last_pid" 2>/dev/null || true
[ -e "$T/state/pending.json" ] || fail "the marker did not survive the power cut"
[ "$(jq -r .phase "$T/state/pending.json")" = switch ] ||
  fail "the switch was no longer confirming at the power cut: $(jq -c . "$T/state/pending.json"); $(tail -n 5 "$T/switch-cut.log")"
never_boot "power cut" "sd-slow-$$"
# The boot loader boots its default: the old generation 3, never the unconfirmed one.
[ "$(boot_default)" = "$v3" ] || fail "at the power cut the boot loader's default is $(boot_default), not generation 3"
ln -sfn "$(boot_default)" "$T/current-system"
mkdir -p "$T/units2"
cat >"$T/units2/labnode-safe-switch-recover.service" <<UNIT
[Unit]
Description=labnode: finish or roll back an unconfirmed switch (boot)
[Service]
Type=oneshot
Environment="PATH=$PATH"
Environment="NIX_CONFIG=sandbox = false\nbuild-users-group =\nsubstituters ="
ExecStart=$LABNODE_BIN safe-switch --recover --config $T/labnode.yaml
UNIT
printf '[Unit]\nDescription=test boot target\nWants=labnode-safe-switch-recover.service\n' >"$T/units2/labnode-test.target"
boot_systemd "$T/units2" "$(cat /proc/sys/kernel/random/uuid)"
recovered() { in_sd systemctl show -p ActiveState,Result labnode-safe-switch-recover.service | tr '\n' ' ' | grep -q 'Result=success' &&
  [ ! -e "$T/state/pending.json" ]; }
wait_for 60 "the boot unit to roll back" recovered
rolled_back "power cut" "the host rebooted during its \`switch\` phase \(step gates\), before it was finished; found by \`labnode safe-switch --recover\`"
never_boot "power cut" "sd-slow-$$"
note "power cut mid-confirmation: generation 3 booted (the boot default never changed), its boot unit rolled the profile back (detect ${detect}s incl. the reboot, recover ${recover}s)"
