#!/usr/bin/env bash
# The "before" host gets a static binary (docs/agents.md: A static binary for the "before" host):
# built as documented, it needs no shared library, and `labnode collect` with it writes a
# snapshot that `labnode report` reads.
. "$(dirname "$0")/../lib/common.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${CARGO_TARGET_DIR:?tests/run sets CARGO_TARGET_DIR}"

triple=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --locked \
  --manifest-path "$root/agents/Cargo.toml" -p labnode --no-default-features --target "$triple" ||
  fail "the static build failed"
bin="$CARGO_TARGET_DIR/$triple/debug/labnode"
[ -x "$bin" ] || fail "no binary at $bin"
if readelf -d "$bin" | grep -q NEEDED; then
  fail "the static binary needs shared libraries: $(readelf -d "$bin" | grep NEEDED)"
fi
if readelf -l "$bin" | grep -q INTERP; then fail "the static binary asks for a dynamic loader"; fi
note "static: no NEEDED entry, no interpreter ($(du -h "$bin" | cut -f1), debug build)"

# Run it as the old host would: no configuration, a fresh store.
"$bin" collect --label before --out "$T/store" >"$T/out" 2>"$T/err" ||
  fail "collect with the static binary failed: $(cat "$T/err")"
snap=$(cut -d" " -f1 "$T/out")
[ -f "$snap" ] || fail "collect printed no snapshot path: $(cat "$T/out")"
[ "$(jq -r '.collectors[] | select(.name == "system") | .up' "$snap")" = true ] ||
  fail "the system collector is not up in the static binary's snapshot"
jq -e '[.samples[] | select(.metric == "labnode_system_memory_total_bytes")] | length == 1' "$snap" >/dev/null ||
  fail "no memory total in the snapshot"
"$LABNODE_BIN" report --store "$T/store" --before before --after before --format json >"$T/report.json" ||
  fail "labnode report cannot read the static binary's snapshot"
note "collect: $(jq -r '.samples | length' "$snap") samples, the system collector up, labnode report reads it"
