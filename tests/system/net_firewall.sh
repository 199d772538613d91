#!/usr/bin/env bash
# The net collector's firewall verdict against real nf_tables rules in a namespace, checked
# against what the firewall really does to a connection from the other namespace:
#  - no rules: labnode_net_firewall_default_deny 0, and a connection to an unopened port works;
#  - NixOS's shape (an inet input chain with policy drop): 1, and the connection is dropped;
#  - a drop policy for IPv4 only (iptables-nft -P INPUT DROP) while IPv6 is on: 0;
#  - accept policies on input, or drop on another hook: 0.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/net.sh"
command -v nft >/dev/null || fail "nft (Debian package nftables) is needed to make the rules"
start_lab "$(lab_name f)" --link veth

cat >"$T/agent.yaml" <<YAML
listen: 127.0.0.1:9466
snapshot_dir: $T/snaps
collectors:
  net: {interval: 500ms, deadline: 500ms}
YAML
bg agent ip netns exec "$NSA" "$LABNODE_BIN" serve --config "$T/agent.yaml" --collector net
bg web ip netns exec "$NSA" python3 -m http.server 5555 --bind "$ADDRA" --directory "$T"

verdict() { in_a curl -fsS http://127.0.0.1:9466/metrics | awk '$1 == "labnode_net_firewall_default_deny" { print $2 }'; }
# expect VALUE WHY: the collector's verdict becomes VALUE within a few intervals.
expect() {
  local end=$((SECONDS + 10)) got
  while :; do
    got=$(verdict || true)
    [ "$got" = "$1" ] && return 0
    [ "$SECONDS" -lt "$end" ] || fail "$2: labnode_net_firewall_default_deny = '${got}', want $1"
    sleep 0.2
  done
}
reach() { in_b curl -fsS -m 2 -o /dev/null "http://$ADDRA:5555/"; }
rules() { in_a nft flush ruleset && in_a nft -f - && in_a nft list ruleset >"$T/ruleset.txt"; }
wait_for 15 "the web server in $NSA" reach

in_a nft flush ruleset
expect 0 "no firewall"
reach || fail "no firewall, yet the connection failed"
in_a curl -fsS http://127.0.0.1:9466/metrics >"$T/m.prom"
out=$(promtool check metrics <"$T/m.prom" 2>&1) || fail "promtool: $out"
[ -z "$out" ] || fail "promtool: $out"
note "no rules: verdict 0, a connection from $NSB gets through; promtool clean"

rules <<'NFT'
table inet nixos-fw {
  chain input {
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    tcp dport 22 accept
  }
}
NFT
expect 1 "an inet input chain with policy drop (NixOS's firewall)"
reach && fail "verdict 1, yet a connection to an unopened port got through"
note "inet input chain, policy drop: verdict 1, and the connection is really dropped"

rules <<'NFT'
table ip filter {
  chain INPUT {
    type filter hook input priority filter; policy drop;
    iif lo accept
  }
}
NFT
expect 0 "a drop policy for IPv4 only while IPv6 is on"
note "drop for IPv4 only (iptables-nft -P INPUT DROP) while IPv6 is on: verdict 0"

rules <<'NFT'
table inet t {
  chain input { type filter hook input priority filter; policy accept; }
  chain forwarding { type filter hook forward priority filter; policy drop; }
}
NFT
expect 0 "input accepted by default, drop only on forward"
reach || fail "an accepting input chain dropped the connection"
note "accept on input, drop on forward only: verdict 0, the connection gets through"
in_a nft flush ruleset
