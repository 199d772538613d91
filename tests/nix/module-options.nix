# Offline check of every NixOS module under modules/ (no nixpkgs needed): each option the
# module declares has a type and a non-empty description, options of submodules included.
# The modules are called with a stub `lib` that records mkOption's arguments; nothing of
# the `config` part is evaluated. Prints a JSON list of problems (empty when clean).
# Run: nix-instantiate --eval --strict --json tests/nix/module-options.nix
let
  inherit (builtins) attrNames concatLists filter isAttrs isFunction isString map readDir;

  stubType = name: extra: {_stubType = name;} // extra;
  wrap = name: elem: stubType name {inherit elem;};
  types = {
    str = stubType "str" {};
    singleLineStr = stubType "singleLineStr" {};
    bool = stubType "bool" {};
    int = stubType "int" {};
    port = stubType "port" {};
    path = stubType "path" {};
    package = stubType "package" {};
    anything = stubType "anything" {};
    raw = stubType "raw" {};
    ints = {
      positive = stubType "ints.positive" {};
      unsigned = stubType "ints.unsigned" {};
      between = _: _: stubType "ints.between" {};
    };
    nullOr = wrap "nullOr";
    listOf = wrap "listOf";
    attrsOf = wrap "attrsOf";
    lazyAttrsOf = wrap "lazyAttrsOf";
    enum = _: stubType "enum" {};
    either = a: b: stubType "either" {elems = [a b];};
    oneOf = elems: stubType "oneOf" {inherit elems;};
    submodule = module: stubType "submodule" {inherit module;};
  };
  lib = {
    inherit types;
    mkOption = args: args // {_isOption = true;};
    mkEnableOption = what: {
      _isOption = true;
      type = types.bool;
      description = "Whether to enable ${what}.";
    };
    literalExpression = text: {_type = "literalExpression";} // {inherit text;};
    literalMD = text: {_type = "literalMD";} // {inherit text;};
  };
  # Anything a module reads outside `options` while declaring them is lazy; this stands in.
  stub = {};
  pkgs = {formats.yaml = _: {type = stubType "yaml" {};};};

  callModule = module: name:
    if isFunction module
    then
      module {
        inherit lib pkgs name;
        config = stub;
        options = stub;
        modulesPath = "/";
      }
    else module;

  # Problems of one option tree, with `where` naming the path so far.
  checkTree = file: where: tree:
    concatLists (map (key: let
      v = tree.${key};
      here = "${where}.${key}";
    in
      if isAttrs v && v ? _isOption
      then checkOption file here v
      else if isAttrs v
      then checkTree file here v
      else ["${file}: ${here} is neither an option nor a set of options"]) (attrNames tree));

  checkOption = file: where: opt:
    (
      if !(opt ? description) || !(isString opt.description) || opt.description == ""
      then ["${file}: option ${where} has no description"]
      else []
    )
    ++ (
      if !(opt ? type)
      then ["${file}: option ${where} has no type"]
      else checkType file where opt.type
    );

  checkType = file: where: t:
    if !(isAttrs t) || !(t ? _stubType)
    then []
    else if t._stubType == "submodule"
    then let
      m = callModule t.module "<name>";
    in
      if m ? options
      then checkTree file "${where}.<submodule>" m.options
      else ["${file}: submodule of ${where} declares no options"]
    else if t ? elem
    then checkType file where t.elem
    else if t ? elems
    then concatLists (map (checkType file where) t.elems)
    else [];

  moduleFiles = let
    top = filter (f: builtins.match ".*\\.nix" f != null) (attrNames (readDir ../../modules));
  in
    (map (f: ../../modules + "/${f}") top) ++ [../../modules/monitoring/default.nix];

  checkFile = path: let
    m = callModule (import path) "";
    name = baseNameOf (toString path);
  in
    if !(m ? options) || !(m.options ? labnode)
    then ["${name}: declares no labnode.* options"]
    else checkTree name "options" m.options;
in
  concatLists (map checkFile moduleFiles)
