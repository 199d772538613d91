# labnode.inventory: every node of hosts/ as data, so WireGuard peers and Prometheus scrape
# targets are derived from one list. The flake sets `nodes` from hosts/default.nix; a node
# finds itself by `networking.hostName`.
{
  config,
  lib,
  ...
}: let
  nodeModule = {
    freeformType = lib.types.attrsOf lib.types.anything;
    options = {
      system = lib.mkOption {
        type = lib.types.str;
        default = "x86_64-linux";
        description = "The node's platform.";
      };
      wireguard = {
        address = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "10.77.0.2";
          description = "The node's IPv4 address inside the WireGuard overlay (no prefix length).";
        };
        publicKey = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          description = "The node's WireGuard public key (base64).";
        };
        endpoint = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "node1.example.org:51820";
          description = "Where peers reach the node (`host:port`); null when only it contacts them.";
        };
      };
      monitoring.server = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether this node runs the Prometheus that scrapes every node.";
      };
    };
  };
in {
  options.labnode.inventory = {
    nodes = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule nodeModule);
      default = {};
      description = "Every node of the inventory (hosts/), by name.";
    };
    self = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This node's name in the inventory.";
    };
    others = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      readOnly = true;
      default = lib.filterAttrs (name: _: name != config.labnode.inventory.self) config.labnode.inventory.nodes;
      defaultText = lib.literalMD "every node but this one";
      description = "The other nodes of the inventory.";
    };
  };
}
