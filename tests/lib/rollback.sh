# Helpers of the rollback system tests: real Nix generations (agents/crates/rollback/
# scratch/generation.nix, the file `labnode demo` builds from too) whose
# bin/switch-to-configuration stops and starts a real HTTP service, in a real profile.
# Source after common.sh. NIX_CONFIG (offline, single-user) comes from tests/run.

ROLLBACK_NIX="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../agents/labnode/src/demo/scratch" && pwd)/generation.nix"
# stop_web: stops the test web service a proc-mode generation left running (at exit too).
stop_web() {
  if [ -f "$T/web/pid" ]; then kill -15 -- "-$(cat "$T/web/pid")" 2>/dev/null || true; fi
}
trap 'stop_web; cleanup' EXIT
command -v busybox >/dev/null || fail "busybox (busybox-static) is needed for the test's HTTP service"
command -v nix-build >/dev/null || fail "nix-build (nix-bin) is needed"

# generation NAME SCRIPT_FILE: builds a generation whose activation runs SCRIPT_FILE's text
# (in it, $out is the generation and $1 the action); prints its store path.
generation() {
  nix-build --no-out-link "$ROLLBACK_NIX" --argstr name "$1" --argstr activate "$(cat "$2")" \
    2>"$T/nix-build-$1.log" || fail "nix-build of $1 failed: $(tail -n 5 "$T/nix-build-$1.log")"
}

# web_script NAME MODE DELAY PORT MANAGER > FILE: an activation that stops the web service of
# the previous generation and starts this one's, which answers HTTP on 127.0.0.1:PORT only
# after DELAY seconds and serves /health = "version NAME". MODE: ok; never (the service never
# answers); fail (activation exits 1 after stopping the old service); unitfail (the unit
# fails at once); bootfail (as ok, but `boot` exits 1: the boot loader cannot be written). MANAGER: proc (a process group, no systemd) or systemd (a unit in
# /run/labnode-units, daemon-reload, restart: what NixOS's switch-to-configuration does).
# Like NixOS's activation, it points the current-system link ($T/current-system) at itself.
# Every run appends "NAME ACTION" to $T/activations. The boot loader is $T/boot-default:
# `switch` and `boot` point it at the generation; `boot` changes nothing else, `test` only
# activates.
web_script() {
  local name=$1 mode=$2 delay=$3 port=$4 manager=$5 www="$T/www/$1" cmd
  case $mode in
    ok | bootfail) cmd="sleep $delay; exec busybox httpd -f -p 127.0.0.1:$port -h $www" ;;
    never | fail) cmd="exec sleep 100000" ;;
    unitfail) cmd="exec /bin/false" ;;
  esac
  echo "set -e"
  echo "echo \"$name \$1\" >> $T/activations"
  [ "$mode" = bootfail ] && echo "if [ \"\$1\" = boot ]; then echo 'installing the boot loader of $name failed (simulated)' >&2; exit 1; fi"
  echo "case \$1 in switch | boot) ln -sfn \"\$out\" $T/boot-default ;; esac"
  echo "if [ \"\$1\" = boot ]; then echo \"boot default: $name\"; exit 0; fi"
  echo "ln -sfn \"\$out\" $T/current-system"
  echo "mkdir -p $www && echo 'version $name' > $www/health"
  if [ "$manager" = proc ]; then
    echo "mkdir -p $T/web"
    echo "if [ -f $T/web/pid ]; then kill -15 -\$(cat $T/web/pid) 2>/dev/null || true; rm -f $T/web/pid; fi"
    [ "$mode" = fail ] && echo "echo 'activation of $name: a unit failed to start (simulated)' >&2; exit 1"
    echo "setsid sh -c '$cmd' >>$T/web/log 2>&1 </dev/null &"
    echo "echo \$! > $T/web/pid"
  else
    [ "$mode" = fail ] && echo "systemctl stop web.service; echo 'activation of $name: a unit failed to start (simulated)' >&2; exit 1"
    echo "mkdir -p /run/labnode-units"
    echo "printf '[Unit]\\nDescription=test web service $name\\n[Service]\\nExecStart=/bin/sh -c \"$cmd\"\\n' > /run/labnode-units/web.service"
    echo "systemctl daemon-reload"
    echo "systemctl restart web.service"
  fi
  echo "echo \"activated $name (\$1)\""
}

# web_generation NAME MODE DELAY PORT MANAGER: builds it; prints the store path.
web_generation() {
  web_script "$@" >"$T/activate-$1.sh"
  generation "$1" "$T/activate-$1.sh"
}

# actions NAME: the actions generation NAME's switch-to-configuration ran, in order, one line.
actions() {
  awk -v n="$1" '$1 == n { printf "%s%s", sep, $2; sep = " " }' "$T/activations" 2>/dev/null
}

# boot_default: the store path the boot loader ($T/boot-default) would boot.
boot_default() {
  readlink -f "$T/boot-default"
}

# record FILE KIND JQ: the jq expression over the record of KIND in the snapshot FILE.
record() {
  jq -r --arg k "$2" ".records[] | select(.kind == \$k) | .data | $3" "$1"
}

# newest_snapshot DIR: the newest snapshot file in DIR.
newest_snapshot() {
  ls -1 "$1"/*.json 2>/dev/null | sort | tail -n 1
}

# within NAME GOT WANT REL ABS: GOT is within REL * WANT + ABS of WANT.
within() {
  awk -v g="$2" -v w="$3" -v r="$4" -v a="$5" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(d <= r * w + a) }' ||
    fail "$1 = $2, want $3 within $4 x + ${5}s"
}

# profile_gen PROFILE: the generation number the profile points at.
profile_gen() {
  readlink "$1" | sed -E 's/.*-([0-9]+)-link$/\1/'
}

# watch_rollback LABNODE_PORT: runs the rollback collector (`labnode serve` with
# $T/labnode.yaml, listening on LABNODE_PORT) and a real Prometheus scraping it every second
# with the shipped rollback and recording rules (the recording group's 1m interval cut to
# 1s); waits until Prometheus has scraped the zero counters. Sets $pport.
watch_rollback() {
  local M
  M="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../modules/monitoring" && pwd)"
  bg rollback-collector "$LABNODE_BIN" serve --config "$T/labnode.yaml" --collector rollback
  wait_for 10 "the rollback collector" curl -fsS "http://127.0.0.1:$1/metrics"
  fast_rules "$M/rules/recording.yaml" "$T/recording.yaml"
  pport=$(free_port)
  {
    echo "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}"
    echo "rule_files: ['$M/rules/rollback.yaml', '$T/recording.yaml']"
    echo "scrape_configs: [{job_name: labnode-rollback, static_configs: [{targets: ['127.0.0.1:$1']}]}]"
  } >"$T/prometheus.yml"
  bg prometheus prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/pdata" \
    --web.listen-address="127.0.0.1:$pport"
  wait_for 30 "prometheus" curl -fsS "http://127.0.0.1:$pport/-/ready"
  _zero() { [ "$(prom_query "$pport" 'labnode_rollback_safe_switch_total{outcome="rolled_back"}')" = 0 ] &&
    [ "$(prom_query "$pport" 'labnode_rollback_drills_total{result="success"}')" = 0 ]; }
  wait_for 30 "Prometheus to scrape the rollback collector before any run" _zero
}
