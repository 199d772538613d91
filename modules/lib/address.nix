# Listen addresses, parsed (builtins only, so tests/nix/address.nix checks it offline):
# whether HOST:PORT binds every interface. A string comparison missed `[::0]`,
# `0:0:0:0:0:0:0:0` and `::ffff:0.0.0.0`; this reads the address as the kernel does.
let
  inherit (builtins) all elemAt filter genList head isString length match split;

  # The pieces of `s` between matches of the regex `sep`.
  pieces = sep: s: filter isString (split sep s);

  # A dotted IPv4 address that is 0.0.0.0, however its octets are padded.
  zeroV4 = s: let
    o = pieces "\\." s;
  in
    length o == 4 && all (x: match "0+" x != null) o;

  # An IPv6 address (no brackets, no zone) as its eight groups, or null if it is not one.
  # A trailing dotted IPv4 part becomes two groups: "0" "0" when it is 0.0.0.0.
  groupsV6 = s: let
    halves = pieces "::" s;
    split' = h:
      if h == ""
      then []
      else pieces ":" h;
    expandV4 = gs: let
      n = length gs;
      last = elemAt gs (n - 1);
    in
      if n > 0 && match ".*\\..*" last != null
      then
        genList (elemAt gs) (n - 1)
        ++ (
          if zeroV4 last
          then ["0" "0"]
          else if match "[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+" last != null
          then ["1" "1"]
          else ["not-hex"]
        )
      else gs;
    left = expandV4 (split' (head halves));
    right = expandV4 (split' (elemAt halves 1));
    all' =
      if length halves == 1
      then left
      else left ++ genList (_: "0") (8 - length left - length right) ++ right;
    shapeOk =
      if length halves == 1
      then length left == 8
      else length halves == 2 && length left + length right <= 7;
  in
    if shapeOk && all (g: match "[0-9a-fA-F]{1,4}" g != null) all'
    then all'
    else null;

  isZero = g: match "0{1,4}" g != null;

  # `::`, or `::ffff:0.0.0.0` (IPv4-mapped 0.0.0.0, which binds as INADDR_ANY).
  zeroV6 = s: let
    g = groupsV6 s;
  in
    g
    != null
    && (all isZero g
      || (all isZero (genList (elemAt g) 5)
        && match "0*[fF]{4}" (elemAt g 5) != null
        && isZero (elemAt g 6)
        && isZero (elemAt g 7)));

  # The host of HOST:PORT or [HOST]:PORT, its zone (`%eth0`) dropped.
  hostOf = listen: let
    bracketed = match "\\[([^]]*)]:[0-9]*" listen;
    plain = match "(.*):[0-9]*" listen;
    h =
      if bracketed != null
      then head bracketed
      else if plain != null
      then head plain
      else listen;
  in
    head (pieces "%" h);

  isWildcardHost = h: h == "" || h == "*" || zeroV4 h || zeroV6 h;
in {
  inherit hostOf isWildcardHost;
  # Whether HOST:PORT binds every interface.
  isWildcard = listen: isWildcardHost (hostOf listen);
  # Exposed for the offline test.
  inherit groupsV6;
}
