# Shared by the benchmark scripts: build, free ports, waiting, formatting.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/labnode/cargo-target}
BIN=$CARGO_TARGET_DIR/release
T=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT

build_release() {
  echo "building release binaries..." >&2
  cargo build --quiet --release --locked --manifest-path agents/Cargo.toml -p labnode -p labnode-bench >&2
}
. "$ROOT/tests/lib/ports.sh"
wait_up() {
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 never answered" >&2
  exit 1
}
j() { jq -r "$2" <<<"$1"; }
f() { awk -v v="$1" -v d="${2:-2}" 'BEGIN { printf "%.*f", d, v }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }
metric() { curl -fsS "$1" | awk -v s="$2" 'index($0, s" ") == 1 { print $NF; exit }'; }
