#!/usr/bin/env bash
# From `labnode collect` to `labnode report`: real snapshots of this machine in a store,
# found by label; stdout and files; and every bad input named with its exit code.
. "$(dirname "$0")/../lib/common.sh"
fixtures="$(cd "$(dirname "$0")/../../agents/crates/report/tests/fixtures" && pwd)"
store="$T/store"
for label in before before after after after; do
  "$LABNODE_BIN" collect --label "$label" --out "$store" --collector system >/dev/null ||
    fail "labnode collect --label $label failed"
done

# By label, to standard output (Markdown by default), and to files.
"$LABNODE_BIN" report --before before --after after --store "$store" >"$T/stdout.md" 2>"$T/err" ||
  fail "report by label failed: $(cat "$T/err")"
grep -q '^| RAM in use (ZFS ARC counts as used) | \*\*' "$T/stdout.md" || fail "no measured RAM row on stdout"
"$LABNODE_BIN" report --before before --after after --store "$store" --format json,md --out "$T/r" >"$T/paths" ||
  fail "report --out failed"
[ "$(cat "$T/paths")" = "$T/r/report.json
$T/r/report.md" ] || fail "report --out printed: $(cat "$T/paths")"
j="$T/r/report.json"
[ "$(jq -r .before.observations "$j")/$(jq -r .after.observations "$j")" = 2/3 ] ||
  fail "read $(jq -r .before.observations "$j") before and $(jq -r .after.observations "$j") after snapshots, want 2 and 3"
n=$(jq -r '.groups[].rows[] | select(.id == "memory_used") | "\(.before.n) \(.after.n)"' "$j")
[ "$n" = "2 3" ] || fail "memory_used n: $n"
# The RAM this machine uses lies within what /proc/meminfo says while the test runs.
total=$(awk '/^MemTotal:/ { print $2 * 1024 }' /proc/meminfo)
used=$(jq -r '.groups[].rows[] | select(.id == "memory_used") | .after.value' "$j")
awk -v u="$used" -v t="$total" 'BEGIN { exit !(u > 0 && u < t) }' || fail "memory used $used of $total"
pretty=$(. /etc/os-release && echo "$PRETTY_NAME")
[ "$(jq -r '.groups[].rows[] | select(.id == "os") | .after.value' "$j")" = "$pretty" ] || fail "os row"
[ "$(jq -r '.groups[].rows[] | select(.id == "collectors_up") | .after.value' "$j")" = 0.2 ] ||
  fail "one of five collectors should be up"
note "collect -> report: 2 and 3 snapshots by label, memory and OS from this machine, to stdout and files"

expect_exit() {
  local want=$1 pattern=$2 rc
  shift 2
  set +e
  "$LABNODE_BIN" report "$@" >"$T/out" 2>"$T/err"
  rc=$?
  set -e
  [ "$rc" = "$want" ] || fail "report $* exited $rc, want $want: $(cat "$T/err")"
  grep -qF -- "$pattern" "$T/err" || fail "report $*: no '$pattern' in: $(cat "$T/err")"
}
mkdir -p "$T/future" "$T/broken" "$T/empty"
cp "$fixtures/edge/schema-2.json" "$T/future/"
printf '{"schema_version": 1, "label": "x", "samples": [' >"$T/broken/cut.json"
printf 'before:\n  rollback_time:\n    value: half an hour\n    note: x\n' >"$T/op.yaml"
expect_exit 2 "$T/future/schema-2.json: snapshot schema version 2, this labnode reads version 1" \
  --before "$T/future" --after after --store "$store"
expect_exit 2 "$T/broken/cut.json:1:" --before "$T/broken" --after after --store "$store"
expect_exit 2 "no snapshot labelled \"nonesuch\" in $store" --before nonesuch --after after --store "$store"
expect_exit 2 "$T/empty: no snapshot files" --before "$T/empty" --after after --store "$store"
expect_exit 2 "$T/op.yaml:3:5: key \`before.rollback_time.value\`: \`half an hour\` is not a duration" \
  --before before --after after --store "$store" --operator "$T/op.yaml"
expect_exit 2 "give --out DIR" --before before --after after --store "$store" --format md,html
expect_exit 2 "unknown format \`pdf\`" --before before --after after --store "$store" --format pdf
expect_exit 2 "is not a percentage" --before before --after after --store "$store" --fail-on-regression lots
expect_exit 2 "cannot be used with" --before before --prometheus http://127.0.0.1:9 --before-range 1..2 --after-range 3..4
note "bad inputs exit 2 with file:line:column or the name: schema 2, a cut file, an unknown label, an empty directory, an operator value, formats, the gate"

# The gate over snapshots, both ways: the fixtures' release 43 against 42 fails and names
# its rows; the same set against itself passes.
expect_exit 1 "rollback_time (Rollback: switch to the previous generation): 1.6x slower" \
  --before "$fixtures/after" --after "$fixtures/candidate" --fail-on-regression 20% --format json --out "$T/g"
jq -e '.gate.regressions | map(.row) | length == 8 and index("wireguard_up") and index("firewall_default_deny")' "$T/g/report.json" >/dev/null ||
  fail "the JSON gate does not list 8 rows, wireguard_up and firewall_default_deny among them: $(jq -c '.gate.regressions | map(.row)' "$T/g/report.json")"
"$LABNODE_BIN" report --before "$fixtures/after" --after "$fixtures/after" --fail-on-regression 0% \
  --format json --out "$T/same" >/dev/null || fail "a set against itself fails the gate"
note "gate: 42 -> 43 exits 1 naming rollback_time and 7 more (a peer that never shook hands, the default deny lost); a set against itself passes at 0%"
