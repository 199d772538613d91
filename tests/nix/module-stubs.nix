# The NixOS modules under modules/, called offline (no nixpkgs): a stub `lib` whose
# mkOption records its arguments, stub types that keep their names, and the module files.
# Nothing of a module's `config` part is evaluated. Used by module-options.nix (every
# option typed and described) and options-doc.nix (the options reference).
let
  inherit (builtins) attrNames filter isFunction readDir;

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
      between = lo: hi: stubType "ints.between" {inherit lo hi;};
    };
    nullOr = wrap "nullOr";
    listOf = wrap "listOf";
    attrsOf = wrap "attrsOf";
    lazyAttrsOf = wrap "lazyAttrsOf";
    enum = values: stubType "enum" {inherit values;};
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

  moduleFiles = let
    top = filter (f: builtins.match ".*\\.nix" f != null) (attrNames (readDir ../../modules));
  in
    (map (f: ../../modules + "/${f}") top) ++ [../../modules/monitoring/default.nix];
in {
  inherit lib types callModule moduleFiles;
}
