# Offline check of every NixOS module under modules/ (no nixpkgs needed): each option the
# module declares has a type and a non-empty description, options of submodules included.
# The modules are called with the stubs of module-stubs.nix. Prints a JSON list of problems
# (empty when clean).
# Run: nix-instantiate --eval --strict --json tests/nix/module-options.nix
let
  inherit (builtins) attrNames concatLists isAttrs isString map;
  inherit (import ./module-stubs.nix) callModule moduleFiles;

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

  checkFile = path: let
    m = callModule (import path) "";
    name = baseNameOf (toString path);
  in
    if !(m ? options) || !(m.options ? labnode)
    then ["${name}: declares no labnode.* options"]
    else checkTree name "options" m.options;
in
  concatLists (map checkFile moduleFiles)
