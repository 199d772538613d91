# What the other nodes know about c220g5 (plain data, read by hosts/default.nix).
{
  system = "x86_64-linux";
  wireguard = {
    # This node's address inside the tunnel (10.77.0.0/24 is the labnode overlay).
    address = "10.77.0.1";
    # The public half of the key in secrets/c220g5.yaml (`wireguard/private-key`).
    # Replace both when you create your own secrets (docs/nixos/secrets.md).
    publicKey = "KeTzmsa+1mZSsRpTvGbVvIVBjJdVGQeIuMaJEgs7eyI=";
    # Where peers reach it: the CloudLab control network name of the node, set per
    # experiment. null: peers wait for this node to contact them.
    endpoint = null;
  };
  # This node runs Prometheus and scrapes every node of the inventory over WireGuard.
  monitoring.server = true;
}
