# free_port: a loopback TCP port nothing listens on now. Shared by the tests and benchmarks.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (: >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
