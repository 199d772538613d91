#!/usr/bin/env bash
# `labnode collect` against real Nix profiles: the running generation number and store
# path come out right, and follow a real `nix-env --rollback`.
. "$(dirname "$0")/../lib/common.sh"
# NIX_CONFIG (offline, single-user) comes from tests/run.

build() { # NAME: a real store path standing in for a NixOS system closure
  nix-build --no-out-link -E "derivation {
    name = \"labnode-test-system-$1\"; system = builtins.currentSystem; builder = \"/bin/sh\";
    args = [ \"-c\" \"echo $1-$RANDOM$RANDOM > \$out\" ]; }" 2>"$T/nix-build.log" ||
    fail "nix-build failed: $(tail -n 5 "$T/nix-build.log")"
}
a=$(build one)
b=$(build two)
profile="$T/profiles/system"
mkdir -p "$T/profiles"
nix-env --profile "$profile" --set "$a"
nix-env --profile "$profile" --set "$b"
[ -L "$T/profiles/system-2-link" ] || fail "nix-env did not make generation 2"

cat >"$T/labnode.yaml" <<YAML
collectors:
  system:
    cpu_window: 10ms
    system_profile: $profile
    current_system: $T/run/current-system
    booted_system: $T/run/booted-system
YAML
mkdir -p "$T/run"
ln -sfn "$(readlink -f "$profile")" "$T/run/current-system"
ln -sfn "$a" "$T/run/booted-system"

collect() {
  "$LABNODE_BIN" collect --config "$T/labnode.yaml" --label "$1" --out "$T/snaps" | cut -d' ' -f1
}
check() { # SNAPSHOT GENERATION STORE_PATH
  jq -e --argjson g "$2" --arg p "$3" '
    .host.nixos.generation == $g and .host.nixos.system_path == $p and
    ([.samples[] | select(.metric == "labnode_system_nixos_generation") | .value] == [$g]) and
    ([.samples[] | select(.metric == "labnode_system_nixos_system_info") | .labels.store_path] == [$p])
  ' "$1" >/dev/null || fail "$1: want generation $2 at $3, got $(jq -c .host.nixos "$1")"
}
s=$(collect after-switch)
check "$s" 2 "$b"
jq -e --arg a "$a" '.host.nixos.booted_system_path == $a' "$s" >/dev/null || fail "booted system path wrong"
note "generation 2 ($b) recorded, booted system $a"

nix-env --profile "$profile" --rollback 2>/dev/null
ln -sfn "$(readlink -f "$profile")" "$T/run/current-system"
s=$(collect after-rollback)
check "$s" 1 "$a"
note "after nix-env --rollback: generation 1 ($a) recorded"

rm "$T/run/current-system"
s=$(collect not-nixos)
jq -e '.host.nixos == null and ([.samples[] | select(.metric | startswith("labnode_system_nixos"))] | length) == 0' \
  "$s" >/dev/null || fail "without /run/current-system the snapshot still claims NixOS"
note "without a current system: no NixOS facts, as on the plain Linux 'before' host"
