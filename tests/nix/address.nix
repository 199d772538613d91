# Offline check of modules/lib/address.nix: which listen addresses bind every interface.
# Prints a JSON list of the cases it gets wrong (empty when right).
# Run: nix-instantiate --eval --strict --json tests/nix/address.nix
let
  a = import ../../modules/lib/address.nix;
  wildcard = [
    ":9471"
    "*:9471"
    "0.0.0.0:9471"
    "000.0.00.0:9471"
    "[::]:9471"
    "[::0]:9471"
    "[0::]:9471"
    "[0:0:0:0:0:0:0:0]:9471"
    "[0000:0000:0000:0000:0000:0000:0000:0000]:9471"
    "[::ffff:0.0.0.0]:9471"
    "[::FFFF:0.0.0.0]:9471"
    "[::ffff:0:0]:9471"
    "[0:0:0:0:0:ffff:0.0.0.0]:9471"
    "[::0.0.0.0]:9471"
    "[::%eth0]:9471"
  ];
  specific = [
    "127.0.0.1:9471"
    "10.77.0.1:9471"
    "0.0.0.1:9471"
    "[::1]:9471"
    "[fe80::1%wg0]:9471"
    "[ffff::]:9471"
    "[::ffff:127.0.0.1]:9471"
    "[::ffff:0:1]:9471"
    "[0:0:0:0:0:0:0:1]:9471"
    "[fd00:77::1]:9471"
    "localhost:9471"
  ];
  wrong =
    builtins.filter (l: !a.isWildcard l) wildcard
    ++ builtins.filter a.isWildcard specific;
in
  map (l: "${l}: ${
    if a.isWildcard l
    then "taken for every interface"
    else "not taken for every interface"
  }")
  wrong
