# The reference of every labnode.* option, as Markdown, from the modules' own declarations
# (called offline with the stubs of module-stubs.nix): docs/nixos/options.md is this text,
# and tests/run fails when the file is stale.
# Run: nix-instantiate --eval --strict --json tests/nix/options-doc.nix | jq -r . > docs/nixos/options.md
let
  inherit (builtins) attrNames concatLists concatStringsSep filter isAttrs isList isString map replaceStrings sort toJSON;
  inherit (import ./module-stubs.nix) callModule moduleFiles;

  # Options of one tree: a list of {path, file, option}.
  collect = file: path: tree:
    concatLists (map (key: let
      v = tree.${key};
      here = path ++ [key];
    in
      if isAttrs v && v ? _isOption
      then
        [
          {
            inherit file;
            path = here;
            option = v;
          }
        ]
        ++ subOptions file here v.type
      else if isAttrs v
      then collect file here v
      else []) (attrNames tree));

  # The options of a submodule (attrsOf (submodule ...) and the like), under `<name>`.
  subOptions = file: path: t:
    if !(isAttrs t) || !(t ? _stubType)
    then []
    else if t._stubType == "submodule"
    then collect file (path ++ ["<name>"]) (callModule t.module "<name>").options
    else if t ? elem
    then subOptions file path t.elem
    else [];

  typeName = t:
    if !(isAttrs t) || !(t ? _stubType)
    then "unspecified"
    else if t._stubType == "enum"
    then "one of ${concatStringsSep ", " (map toJSON t.values)}"
    else if t._stubType == "ints.between"
    then "integer between ${toString t.lo} and ${toString t.hi} (both inclusive)"
    else if t._stubType == "submodule"
    then "submodule"
    else if t ? elem
    then "${t._stubType} (${typeName t.elem})"
    else if t ? elems
    then concatStringsSep " or " (map typeName t.elems)
    else t._stubType;

  # A default as Nix-like text: defaultText wins (a default that reads config or pkgs must
  # have one, as in nixpkgs), then the value itself.
  valueText = v:
    if isAttrs v && v ? _type
    then v.text
    else if isString v
    then toJSON v
    else if isList v || isAttrs v
    then toJSON v
    else if v == true
    then "true"
    else if v == false
    then "false"
    else if v == null
    then "null"
    else toString v;

  oneLine = s: replaceStrings ["\n"] [" "] s;

  render = o: let
    opt = o.option;
    name = concatStringsSep "." (filter (s: s != "options") o.path);
    default =
      if opt ? defaultText
      then valueText opt.defaultText
      else if opt ? default
      then valueText opt.default
      else null;
    description =
      if isAttrs opt.description
      then opt.description.text
      else opt.description;
  in
    concatStringsSep "\n" ([
        "## `${name}`"
        ""
        (oneLine description)
        ""
        "- type: ${typeName (opt.type or null)}"
      ]
      ++ (
        if default == null
        then []
        else ["- default: `${oneLine default}`"]
      )
      ++ (
        if opt ? example
        then ["- example: `${oneLine (valueText opt.example)}`"]
        else []
      )
      ++ ["- declared in: `modules/${o.file}`" ""]);

  fileOf = path: let
    s = toString path;
    m = builtins.match ".*/modules/(.*)" s;
  in
    if m == null
    then baseNameOf s
    else builtins.head m;

  options = concatLists (map (path: collect (fileOf path) [] (callModule (import path) "").options) moduleFiles);
  byName = sort (a: b: concatStringsSep "." a.path < concatStringsSep "." b.path) options;
in
  concatStringsSep "\n" ([
      "# NixOS options"
      ""
      "Every option the labnode modules declare (`labnode.<concern>`), with its type, default"
      "and the module that declares it. Generated from the modules' own declarations by"
      "`tests/nix/options-doc.nix`; `tests/run` fails when this file is stale. Regenerate:"
      ""
      "```sh"
      "nix-instantiate --eval --strict --json tests/nix/options-doc.nix | jq -r . > docs/nixos/options.md"
      "```"
      ""
      "Which nixpkgs options the modules set in turn: [nixpkgs-options.md](nixpkgs-options.md)."
      ""
    ]
    ++ map render byName)
