#!/usr/bin/env bash
# Bad configuration and arguments: a clear message naming file:line:column and key,
# exit code 2, and nothing started or written.
. "$(dirname "$0")/../lib/common.sh"

expect_2() { # DESCRIPTION EXPECTED-STDERR-REGEX COMMAND...
  local what=$1 want=$2 rc=0
  shift 2
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" = 2 ] || fail "$what: exit code $rc, want 2 (stderr: $(cat "$T/err"))"
  grep -Eq -- "$want" "$T/err" || fail "$what: stderr does not match /$want/: $(cat "$T/err")"
  note "$what: $(head -n1 "$T/err")"
}

c="$T/bad.yaml"
printf 'listen: 127.0.0.1:9466\ncollectors:\n  system:\n    intreval: 5s\n' >"$c"
expect_2 "unknown key" "^labnode: $c:4:5: key \`collectors.system.intreval\`: unknown field" \
  "$LABNODE_BIN" config check "$c"
expect_2 "same error from serve" "$c:4:5" "$LABNODE_BIN" serve --config "$c"

printf 'collectors:\n  system:\n    interval: soon\n' >"$c"
expect_2 "wrong type" "$c:3:5: key \`collectors.system.interval\`: .soon. is not a duration" \
  "$LABNODE_BIN" config check "$c"

printf 'collectors:\n  system:\n    interval: 0s\n' >"$c"
expect_2 "out of range" "$c:3:5: key \`collectors.system.interval\`: .*out of range" \
  "$LABNODE_BIN" config check "$c"

printf 'listen: [1, 2]\n' >"$c"
expect_2 "listen not an address" "$c:1:9: key \`listen\`" "$LABNODE_BIN" config check "$c"

printf 'collectors:\n  system:\n    interval: 1s\n    deadline: 2s\n' >"$c"
expect_2 "deadline longer than interval" "$c:4:5: key \`collectors.system.deadline\`" \
  "$LABNODE_BIN" config check "$c"

printf 'collectors:\n  zfs:\n    deadline: 1m\n' >"$c"
expect_2 "deadline longer than the default interval" "$c:3:5: key \`collectors.zfs.deadline\`: the deadline \(60s\) must not be longer than the interval \(15s\)" \
  "$LABNODE_BIN" config check "$c"

printf 'listen: 127.0.0.1:1\ncollectors: {}\nlisten: 127.0.0.1:2\n' >"$c"
expect_2 "duplicate key" "$c:3:1: key \`listen\`: duplicate key \`listen\` \(first at line 1\)" \
  "$LABNODE_BIN" config check "$c"

printf 'collectors:\n  system: 5\n' >"$c"
expect_2 "a value where a mapping belongs" "$c:2:11: key \`collectors.system\`: .*expected a mapping" \
  "$LABNODE_BIN" config check "$c"

printf 'listen: "127.0.0.1:1\nsnapshot_dir: /x\n' >"$c"
expect_2 "not YAML" "$c:[0-9]+:[0-9]+: " "$LABNODE_BIN" config check "$c"

expect_2 "missing file" "$T/none.yaml: cannot read" "$LABNODE_BIN" config check "$T/none.yaml"
expect_2 "bad label" "--label: invalid label" "$LABNODE_BIN" collect --label ../x --out "$T/s"
[ ! -e "$T/s" ] || fail "a refused collect created its output directory"
expect_2 "unknown collector" 'unknown collector "gpux"' "$LABNODE_BIN" collect --label a --collector gpux --out "$T/s"
expect_2 "bad listen flag" "invalid value" "$LABNODE_BIN" serve --listen nowhere

printf '# all defaults\n' >"$c"
"$LABNODE_BIN" config check "$c" | grep -q ": ok (listen 127.0.0.1:9466" || fail "a valid config is refused"
note "a valid config passes"

# Every configuration example in the documents (a ```yaml block with a `collectors:` or
# `rollback:` key at its top level) is a valid configuration, so the documentation cannot
# drift from the parser.
n=0
for md in README.md docs/*.md docs/nixos/*.md modules/monitoring/README.md; do
  awk -v out="$T/example" '
    /^```yaml/ { inb = 1; k++; f = out "-" k ".yaml"; printf "" > f; next }
    inb && /^```/ { inb = 0; close(f); next }
    inb { print > f }
  ' "$md"
  for f in "$T"/example-*.yaml; do
    [ -e "$f" ] || continue
    if grep -Eq '^(collectors|rollback):' "$f"; then
      "$LABNODE_BIN" config check "$f" >/dev/null 2>"$T/err" ||
        fail "a configuration example in $md does not pass config check: $(cat "$T/err")"
      n=$((n + 1))
    fi
    rm -f "$f"
  done
done
[ "$n" -ge 2 ] || fail "found $n configuration examples in the documents, want at least 2"
note "$n configuration examples in the documents pass config check"
