# labnode.wireguard: the overlay between the nodes of the inventory. This node's address
# and every peer (public key, address, endpoint) come from labnode.inventory; the private
# key is a file (from sops, see labnode.secrets), never in the Nix store.
{
  config,
  lib,
  ...
}: let
  cfg = config.labnode.wireguard;
  inv = config.labnode.inventory;
  me = inv.nodes.${inv.self} or {};
  peerNodes = lib.filterAttrs (_: n: n.wireguard.publicKey != null && n.wireguard.address != null) inv.others;
in {
  imports = [./inventory.nix];

  options.labnode.wireguard = {
    enable = lib.mkEnableOption "the WireGuard overlay between the nodes of the inventory";

    interface = lib.mkOption {
      type = lib.types.str;
      default = "wg0";
      description = "Name of the WireGuard interface.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 51820;
      description = "UDP port WireGuard listens on (opened in the firewall).";
    };

    address = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = me.wireguard.address or null;
      defaultText = lib.literalMD "this node's `wireguard.address` in the inventory";
      description = "This node's IPv4 address in the overlay.";
    };

    prefixLength = lib.mkOption {
      type = lib.types.ints.between 8 32;
      default = 24;
      description = "Prefix length of the overlay network.";
    };

    privateKeyFile = lib.mkOption {
      type = lib.types.str;
      example = "/run/secrets/wireguard/private-key";
      description = "File with this node's private key (labnode.secrets points it at the sops secret).";
    };

    persistentKeepalive = lib.mkOption {
      type = lib.types.nullOr lib.types.ints.positive;
      default = 25;
      description = "Seconds between keepalives to every peer (keeps NAT state and handshakes fresh).";
    };

    trustedTCPPorts = lib.mkOption {
      type = lib.types.listOf lib.types.port;
      default = [];
      description = "TCP ports reachable through the tunnel only (exporters scraped by another node's Prometheus).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.address != null;
        message = "labnode.wireguard.address is not set and the inventory has no wireguard.address for ${inv.self}.";
      }
    ];

    # The script backend (units wireguard-<if>.service) whatever the host's networking is:
    # labnode.secrets restarts that unit when the key changes, and the tests wait for it.
    networking.wireguard.useNetworkd = false;
    networking.wireguard.interfaces.${cfg.interface} = {
      ips = ["${cfg.address}/${toString cfg.prefixLength}"];
      listenPort = cfg.port;
      inherit (cfg) privateKeyFile;
      peers =
        lib.mapAttrsToList (name: n: {
          inherit name;
          inherit (n.wireguard) publicKey endpoint;
          allowedIPs = ["${n.wireguard.address}/32"];
          inherit (cfg) persistentKeepalive;
        })
        peerNodes;
    };

    networking.firewall = {
      allowedUDPPorts = [cfg.port];
      # Strict reverse-path filtering drops tunnel traffic whose route is the tunnel.
      checkReversePath = "loose";
      interfaces.${cfg.interface}.allowedTCPPorts = cfg.trustedTCPPorts;
    };
  };
}
