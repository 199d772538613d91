# The inventory: every directory here with a `node.nix` is a node, by its directory name.
# node.nix is plain data (no NixOS module): what other nodes need to know about this one
# (its WireGuard address, public key and endpoint). The flake turns each directory into
# `nixosConfigurations.<name>` and gives every node the whole inventory, so WireGuard
# peers and Prometheus scrape targets are derived, never listed twice.
let
  entries = builtins.readDir ./.;
  isNode = name: entries.${name} == "directory" && builtins.pathExists (./. + "/${name}/node.nix");
  names = builtins.filter isNode (builtins.attrNames entries);
in
  builtins.listToAttrs (map (name: {
      inherit name;
      value = import (./. + "/${name}/node.nix");
    })
    names)
