#!/usr/bin/env bash
# kill -9 at random moments during a stream of `labnode collect` runs never leaves a
# partial or corrupt snapshot: every file in the store parses, whole.
. "$(dirname "$0")/../lib/common.sh"

out="$T/snapshots"
cfg="$T/labnode.yaml"
printf 'collectors:\n  system:\n    cpu_window: 20ms\n' >"$cfg"

# How long one undisturbed run takes, so the kills spread over the whole run.
start=$(date +%s%N)
"$LABNODE_BIN" collect --config "$cfg" --label calibrate --out "$out" >/dev/null
run_ms=$((($(date +%s%N) - start) / 1000000))
[ "$run_ms" -gt 0 ] || run_ms=1
rm -f "$out"/*.json

runs=${SNAPSHOT_KILL_RUNS:-60}
killed=0
for i in $(seq 1 "$runs"); do
  "$LABNODE_BIN" collect --config "$cfg" --label "kill$i" --out "$out" >/dev/null 2>&1 &
  pid=$!
  # Anywhere from the start to a little past the typical end of a run.
  sleep "$(awk -v r="$RANDOM" -v ms="$run_ms" 'BEGIN { printf "%.4f", (r / 32767) * ms * 1.3 / 1000 }')"
  if kill -9 "$pid" 2>/dev/null; then killed=$((killed + 1)); fi
  wait "$pid" 2>/dev/null || true
done

files=0
for f in "$out"/* "$out"/.[!.]*; do
  [ -e "$f" ] || continue
  files=$((files + 1))
  case "$f" in *.json) ;; *) fail "a stray file was left in the store: $f" ;; esac
  jq -e '.schema_version == 1 and (.samples | length) > 0 and (.host.hostname | length) > 0' \
    "$f" >/dev/null || fail "$f is not a whole snapshot"
done
complete=$((runs - killed))
note "$runs runs of ${run_ms}ms each, $killed killed with SIGKILL at random times"
note "$files snapshot files in the store, every one parses whole"
[ "$killed" -gt 0 ] || fail "no run was killed; the test proved nothing"
[ "$files" -gt 0 ] || fail "no run completed; the test proved nothing"
[ "$files" -ge "$complete" ] || fail "$complete runs finished but only $files files exist"
