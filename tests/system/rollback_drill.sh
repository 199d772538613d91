#!/usr/bin/env bash
# `labnode drill rollback` on real Nix generations whose switch-to-configuration stops and
# starts a real HTTP service that answers only D seconds after it starts: the plan changes
# nothing; the drill measures recovery within 10% + 50 ms of D in both directions and ends
# on the generation it started from; the rollback collector exports the result to a real
# Prometheus with the shipped rules and dashboard. Faults: an activation that exits
# non-zero, a service that never answers, kill -9 mid-drill (then a restart), a second
# drill while one runs, no previous generation, a running system that is not the profile's.
# safe-switch without systemd (arm: none): a confirmed switch ran the generation's
# switch-to-configuration `test`, then `boot`; a rolled-back one only `test`.
# No systemd here (see rollback_systemd for the systemd gates, the guard and a power cut).
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/rollback.sh"
M="$(cd "$(dirname "$0")/../../modules/monitoring" && pwd)"

D=3
port=$(free_port)
v1=$(web_generation "web-v1-$$" ok "$D" "$port" proc)
v2=$(web_generation "web-v2-$$" ok "$D" "$port" proc)
profile="$T/profiles/system"
mkdir -p "$T/profiles"
nix-env --profile "$profile" --set "$v1" 2>/dev/null
nix-env --profile "$profile" --set "$v2" 2>/dev/null
"$v2/bin/switch-to-configuration" switch >/dev/null
healthy() { curl -fsS "http://127.0.0.1:$port/health" | grep -q "version $1"; }
wait_for 20 "generation 2's service to answer" healthy "web-v2-$$"

lport=$(free_port)
config() { # GATE_TIMEOUT
  cat >"$T/labnode.yaml" <<YAML
listen: 127.0.0.1:$lport
snapshot_dir: $T/snaps
collectors:
  rollback:
    interval: 1s
    deadline: 1s
rollback:
  profile: $profile
  current_system: $T/current-system
  state_dir: $T/state
  gates:
    - name: web
      http: {url: "http://127.0.0.1:$port/health", body_contains: version}
      timeout: ${1}s
    - name: port
      tcp: 127.0.0.1:$port
      timeout: ${1}s
YAML
}
config 20
drill() { "$LABNODE_BIN" drill rollback --config "$T/labnode.yaml" "$@"; }
# on_top OLDER NEWER NAME: OLDER then NEWER become the newest generations; NEWER (NAME) runs.
on_top() {
  nix-env --profile "$profile" --set "$1" 2>/dev/null
  nix-env --profile "$profile" --set "$2" 2>/dev/null
  "$2/bin/switch-to-configuration" switch >/dev/null
  wait_for 20 "$3's service" healthy "$3"
}
# failing_drill LABEL: a drill that must exit 1; $s is its snapshot.
failing_drill() {
  local rc=0
  drill --yes --label "$1" >"$T/$1.txt" 2>&1 || rc=$?
  [ "$rc" = 1 ] || fail "$1: the drill exited $rc, not 1: $(cat "$T/$1.txt")"
  s=$(newest_snapshot "$T/snaps")
}

# 1. The plan changes nothing.
before=$(ls -l --time-style=full-iso "$T/profiles")
drill >"$T/plan.txt" || fail "the plan failed: $(cat "$T/plan.txt")"
grep -q "current generation:  2 ($v2" "$T/plan.txt" || fail "the plan does not name generation 2: $(cat "$T/plan.txt")"
grep -q "previous generation: 1 ($v1" "$T/plan.txt" || fail "the plan does not name generation 1"
grep -q "web: GET http://127.0.0.1:$port/health answers 2xx" "$T/plan.txt" || fail "the plan does not list the gates"
[ "$(ls -l --time-style=full-iso "$T/profiles")" = "$before" ] || fail "the plan changed the profile"
[ ! -e "$T/state" ] && [ ! -e "$T/snaps" ] || fail "the plan wrote state or a snapshot"
healthy "web-v2-$$" || fail "the plan touched the service"
note "without --yes: the plan (generations 2 -> 1 -> 2, 2 gates) and nothing changed"

# 2. The rollback collector, scraped by a real Prometheus with the shipped rollback and
#    recording rules (the recording group's 1m interval shortened to 1s for the test).
watch_rollback "$lport"

# 3. The drill.
start=$(date +%s.%N)
drill --yes --label drill-ok >"$T/drill.txt" 2>&1 || fail "the drill failed: $(cat "$T/drill.txt")"
sed "s/^/    | /" "$T/drill.txt"
s=$(newest_snapshot "$T/snaps")
[ "$(record "$s" rollback_drill .success)" = true ] || fail "not a success: $(cat "$T/drill.txt")"
for dir in rollback rollforward; do
  r=$(record "$s" rollback_drill ".directions[] | select(.direction == \"$dir\") | .recovery_seconds")
  within "$dir recovery" "$r" "$D" 0.10 0.05
  note "$dir: recovery ${r}s for a service that answers ${D}s after it starts (within 10% + 50 ms)"
done
[ "$(profile_gen "$profile")" = 2 ] || fail "the profile ended on generation $(profile_gen "$profile"), not 2"
[ "$(readlink -f "$T/current-system")" = "$v2" ] || fail "generation 2 is not what runs"
[ "$(record "$s" rollback_drill .ended_on_start)" = true ] || fail "the record does not say it ended on the start generation"
healthy "web-v2-$$" || fail "generation 2's service does not answer after the drill"
grep -q "the generation it started from: verified" "$T/drill.txt" || fail "the drill did not report the verification"
# flip, activation (`test`), gates, and the boot default (`boot` once green) per direction.
jq -e '[.samples[] | select(.metric == "labnode_rollback_phase_seconds")] | length == 8' "$s" >/dev/null ||
  fail "the snapshot does not hold 4 phases x 2 directions: $(jq -c '[.samples[].metric]' "$s")"
[ "$(actions "web-v1-$$")" = "test boot" ] || fail "the rollback ran '$(actions "web-v1-$$")' on generation 1, not 'test boot'"
[ "$(boot_default)" = "$v2" ] || fail "after the drill the boot loader's default is $(boot_default), not generation 2"
cpu=$(record "$s" rollback_drill .overhead.cpu_seconds)
note "ended on generation 2, verified; labnode's own CPU time ${cpu}s"

# The collector after the drill: promtool clean, the contract's series.
sleep 1.5
curl -fsS "http://127.0.0.1:$lport/metrics" >"$T/metrics.txt"
lint=$(promtool check metrics <"$T/metrics.txt" 2>&1) || fail "promtool check metrics: $lint"
[ -z "$lint" ] || fail "promtool check metrics warns: $lint"
for want in 'labnode_rollback_drills_total{result="success"} 1' 'labnode_rollback_drills_total{result="failure"} 0' \
  'labnode_rollback_drills_total{result="refused"} 0' \
  'labnode_rollback_last_success 1' 'labnode_rollback_profile_generations 2' \
  'labnode_rollback_profile_current_generation 2' 'labnode_rollback_profile_previous_generation 1' \
  'labnode_rollback_pending_switch 0' 'labnode_rollback_safe_switch_total{outcome="rolled_back"} 0'; do
  grep -qxF "$want" "$T/metrics.txt" || fail "the collector does not export: $want"
done
grep -q '^labnode_rollback_phase_seconds{direction="rollforward",phase="gates_green"}' "$T/metrics.txt" || fail "no phase series"
grep -q '^labnode_rollback_gate_seconds{direction="rollback",gate="web"}' "$T/metrics.txt" || fail "no gate series"
note "collector: promtool clean; counters, last result, phases, gates and profile facts exported"
scraped() { [ "$(prom_query "$pport" 'labnode_rollback_last_success')" = 1 ]; }
wait_for 30 "Prometheus to scrape the drill's result" scraped

# 4. A drill whose previous generation fails to activate; Prometheus sees the failure.
broken=$(web_generation "web-broken-$$" fail "$D" "$port" proc)
v3=$(web_generation "web-v3-$$" ok "$D" "$port" proc)
on_top "$broken" "$v3" "web-v3-$$"
failing_drill drill-broken
err=$(record "$s" rollback_drill '.directions[0].error')
grep -q "activation failed: .*exited with exit status: 1.*a unit failed to start (simulated)" <<<"$err" || fail "the failure is not explained: $err"
[ "$(record "$s" rollback_drill .ended_on_start)" = true ] && [ "$(profile_gen "$profile")" = 4 ] ||
  fail "after a failed rollback the profile is on $(profile_gen "$profile"), not the known-good 4"
healthy "web-v3-$$" || fail "generation 4's service does not answer after the failed drill"
note "broken activation: drill failed (exit 1) with '$(cut -c1-90 <<<"$err")...', back on generation 4, healthy"
failed_seen() { [ "$(prom_query "$pport" 'labnode_rollback_drills_total{result="failure"}')" = 1 ] &&
  [ "$(prom_query "$pport" 'labnode_rollback_last_success')" = 0 ]; }
wait_for 30 "Prometheus to see the failed drill" failed_seen
firing() { curl -fsS "http://127.0.0.1:$pport/api/v1/alerts" | jq -e '.data.alerts[] | select(.labels.alertname == "RollbackDrillFailed" and .state == "firing")' >/dev/null; }
wait_for 30 "RollbackDrillFailed to fire" firing
half() { [ "$(prom_query "$pport" 'instance:labnode_rollback_success:ratio_30d')" = 0.5 ]; }
wait_for 30 "the recording rule to see one success in two drills" half
ratio=$(prom_query "$pport" 'instance:labnode_rollback_success:ratio_30d')
within "30-day success ratio (one success, one failure)" "$ratio" 0.5 0 0.001
note "Prometheus: RollbackDrillFailed fires; the recording rule's success ratio is $ratio"
n=0
while IFS=$'\t' read -r title expr; do
  q=$(sed -e 's/\$instance/.*/g' <<<"$expr")
  resp=$(curl -sS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$q")
  [ "$(jq -r '.data.result | length' <<<"$resp")" -gt 0 ] || fail "dashboard panel '$title' returns no data: $q"
  n=$((n + 1))
done < <(jq -r '.panels[] | .title as $t | .targets[]? | [$t, .expr] | @tsv' "$M/dashboards/rollback.json")
note "every one of the $n rollback dashboard queries returns data against the collector"

# 5. A previous generation whose service never answers: the gate times out.
config 3
never=$(web_generation "web-never-$$" never "$D" "$port" proc)
v5=$(web_generation "web-v5-$$" ok 1 "$port" proc)
on_top "$never" "$v5" "web-v5-$$"
failing_drill drill-never
err=$(record "$s" rollback_drill '.directions[0].error')
grep -q "gates stayed red: web (http) red after [0-9]* checks: GET http://127.0.0.1:$port/health: .*[Cc]onnection refused" <<<"$err" || fail "not explained: $err"
[ "$(profile_gen "$profile")" = 6 ] && healthy "web-v5-$$" || fail "not back on generation 6"
note "a service that never answers: red after the 3 s timeout, explained, back on generation 6"

# 6. kill -9 mid-drill, then a restart (the boot unit's command) finishes it.
slow=$(web_generation "web-slow-$$" ok 6 "$port" proc)
v7=$(web_generation "web-v7-$$" ok 1 "$port" proc)
on_top "$slow" "$v7" "web-v7-$$"
config 20
bg drill-killed "$LABNODE_BIN" drill rollback --yes --config "$T/labnode.yaml" --label drill-killed
dpid=$last_pid
in_rollback() { [ "$(jq -r .phase "$T/state/pending.json" 2>/dev/null)" = rollback ] && [ "$(profile_gen "$profile")" = 7 ]; }
wait_for 20 "the drill to be mid-rollback" in_rollback
# 6a. A second drill meanwhile is refused, naming the first.
rc=0
drill --yes >"$T/second.txt" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "another drill or switch holds .*: pid $dpid (labnode drill rollback)" "$T/second.txt" ||
  fail "a second drill was not refused (exit $rc): $(cat "$T/second.txt")"
note "a second drill while one runs: refused, naming pid $dpid"
{ kill -9 "$dpid"; wait "$dpid"; } 2>/dev/null || true
[ "$(profile_gen "$profile")" = 7 ] || fail "the kill did not land mid-drill"
"$LABNODE_BIN" safe-switch --recover --config "$T/labnode.yaml" >"$T/recover.txt" 2>&1 || fail "recover failed: $(cat "$T/recover.txt")"
[ "$(profile_gen "$profile")" = 8 ] && healthy "web-v7-$$" || fail "recovery did not restore generation 8"
[ ! -e "$T/state/pending.json" ] || fail "the marker is still there"
s=$(newest_snapshot "$T/snaps")
why=$(record "$s" rollback_drill .interrupted)
grep -q "labnode (pid $dpid) died during its \`rollback\` phase" <<<"$why" || fail "not explained: $why"
[ "$(jq -r .label "$s")" = drill-killed ] || fail "the recovered drill is not under its own label"
note "kill -9 mid-rollback: 'labnode safe-switch --recover' restored generation 8: $why"

# 6b. The same, finished by the next `drill rollback --yes`, which then drills.
bg drill-killed2 "$LABNODE_BIN" drill rollback --yes --config "$T/labnode.yaml" --label drill-killed
dpid=$last_pid
wait_for 20 "the drill to be mid-rollback" in_rollback
{ kill -9 "$dpid"; wait "$dpid"; } 2>/dev/null || true
drill --yes >"$T/next.txt" 2>&1 || fail "the next drill failed: $(cat "$T/next.txt")"
grep -q "finished an unfinished rollback drill first" "$T/next.txt" || fail "the next drill did not finish the interrupted one: $(cat "$T/next.txt")"
[ "$(profile_gen "$profile")" = 8 ] && healthy "web-v7-$$" || fail "not back on generation 8"
note "kill -9 mid-rollback, then 'drill rollback --yes': finished the old drill, then drilled"

# 7. safe-switch (arm: none, no systemd): `test` during confirmation, `boot` only once green.
{ cat "$T/labnode.yaml"; echo "  arm: none"; } >"$T/switch.yaml"
v9=$(web_generation "web-v9-$$" ok 1 "$port" proc)
"$LABNODE_BIN" safe-switch --to "$v9" --config "$T/switch.yaml" >"$T/switch-good.txt" 2>&1 ||
  fail "safe-switch to a good generation failed: $(cat "$T/switch-good.txt")"
s=$(newest_snapshot "$T/snaps")
[ "$(record "$s" safe_switch .outcome)" = confirmed ] || fail "not confirmed: $(cat "$T/switch-good.txt")"
[ "$(actions "web-v9-$$")" = "test boot" ] || fail "confirmation ran '$(actions "web-v9-$$")', not 'test boot'"
[ "$(boot_default)" = "$v9" ] || fail "the boot loader's default is $(boot_default), not generation 9"
[ "$(record "$s" safe_switch .switch.phases.boot_default)" != null ] || fail "no boot_default phase"
[ "$(profile_gen "$profile")" = 9 ] && healthy "web-v9-$$" || fail "not on generation 9"
never2=$(web_generation "web-never2-$$" never 1 "$port" proc)
rc=0
"$LABNODE_BIN" safe-switch --to "$never2" --confirm-timeout 2s --config "$T/switch.yaml" >"$T/switch-never.txt" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a switch to a generation that never answers exited $rc, not 1: $(cat "$T/switch-never.txt")"
s=$(newest_snapshot "$T/snaps")
[ "$(record "$s" safe_switch .outcome)" = rolled_back ] || fail "not rolled back: $(cat "$T/switch-never.txt")"
[ "$(actions "web-never2-$$")" = test ] || fail "the rolled-back generation ran '$(actions "web-never2-$$")', not only test"
[ "$(boot_default)" = "$v9" ] || fail "after the rollback the boot loader's default is $(boot_default), not generation 9"
[ "$(profile_gen "$profile")" = 9 ] && healthy "web-v9-$$" || fail "not back on generation 9"
note "safe-switch: confirmed after 'test' then 'boot'; a red gate rolled back having run only 'test', boot default kept on 9"
bootfail=$(web_generation "web-bootfail-$$" bootfail 1 "$port" proc)
rc=0
"$LABNODE_BIN" safe-switch --to "$bootfail" --config "$T/switch.yaml" >"$T/switch-bootfail.txt" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a switch whose boot step fails exited $rc, not 1: $(cat "$T/switch-bootfail.txt")"
s=$(newest_snapshot "$T/snaps")
[ "$(record "$s" safe_switch .outcome)" = rolled_back ] || fail "a failed boot step was not rolled back"
reason=$(record "$s" safe_switch .reason)
grep -q "every gate was green, but making it the boot default failed: .*exit status: 1.*installing the boot loader of web-bootfail-$$ failed" <<<"$reason" ||
  fail "the failed boot step is not explained: $reason"
[ "$(actions "web-bootfail-$$")" = "test boot" ] || fail "ran '$(actions "web-bootfail-$$")', not 'test boot'"
[ "$(boot_default)" = "$v9" ] && [ "$(profile_gen "$profile")" = 9 ] && healthy "web-v9-$$" ||
  fail "after a failed boot step: boot default $(boot_default), generation $(profile_gen "$profile")"
note "safe-switch whose 'boot' fails after every gate was green: rolled back to 9, exit 1, explained"

# 8. Refusals that change nothing.
mkdir -p "$T/one"
nix-env --profile "$T/one/system" --set "$v1" 2>/dev/null
before=$(ls -l --time-style=full-iso "$T/one")
rc=0
drill --yes --profile "$T/one/system" >"$T/one.txt" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "has no generation older than the current one (1): there is nothing to roll back to" "$T/one.txt" ||
  fail "no previous generation: exit $rc: $(cat "$T/one.txt")"
[ "$(ls -l --time-style=full-iso "$T/one")" = "$before" ] || fail "the refused drill changed the profile"
s=$(newest_snapshot "$T/snaps")
[ "$(record "$s" rollback_drill .refused)" = true ] && [ "$(record "$s" rollback_drill .success)" = false ] ||
  fail "the refusal is not recorded as a refused, failed drill: $(jq -c .records "$s")"
err=$(record "$s" rollback_drill .error)
grep -q "^refused: no previous generation" <<<"$err" || fail "the refusal's record does not say why: $err"
counted() { curl -fsS "http://127.0.0.1:$lport/metrics" | grep -qxF 'labnode_rollback_drills_total{result="refused"} 1'; }
wait_for 10 "the collector to count the refused drill" counted
curl -fsS "http://127.0.0.1:$lport/metrics" >"$T/metrics-refused.txt"
ok=$(awk '$1 == "labnode_rollback_drills_total{result=\"success\"}" { print $2 }' "$T/metrics-refused.txt")
bad=$(awk '$1 == "labnode_rollback_drills_total{result=\"failure\"}" { print $2 }' "$T/metrics-refused.txt")
want=$(awk -v o="$ok" -v b="$bad" 'BEGIN { printf "%.6f", o / (o + b) }')
refused_seen() { [ "$(prom_query "$pport" 'labnode_rollback_drills_total{result="refused"}')" = 1 ] &&
  [ "$(prom_query "$pport" 'sum(labnode_rollback_drills_total{result="success"})')" = "$ok" ]; }
wait_for 30 "Prometheus to see the refused drill" refused_seen
sleep 2 # one more evaluation of the recording rule
ratio=$(prom_query "$pport" 'instance:labnode_rollback_success:ratio_30d')
within "30-day success ratio with a refusal ($ok successes, $bad failures, 1 refused)" "$ratio" "$want" 0 0.001
note "no previous generation: refused (exit 1), profile untouched; recorded ('$err'), counted as refused, success ratio $ratio = $ok/($ok+$bad) leaves it out"
ln -sfn "$v1" "$T/current-system"
rc=0
drill --yes >"$T/notrunning.txt" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "the running system ($v1, generation 1) is not the profile's current generation 9" "$T/notrunning.txt" ||
  fail "running != current: exit $rc: $(cat "$T/notrunning.txt")"
[ "$(profile_gen "$profile")" = 9 ] || fail "the refused drill changed the profile"
note "running system is not the profile's current generation: refused with why"
