# What only the operator of this node knows. Edit before the first install (README,
# "Deploying to a fresh CloudLab c220g5").
{
  # Public keys allowed to log in as root over SSH (password login is off).
  sshAuthorizedKeys = [
    # "ssh-ed25519 AAAA... you@laptop"
  ];
  # The flake the node upgrades itself from every night (system.autoUpgrade).
  flake = "github:labnode/labnode#c220g5";
  # This node's address(es) on the experiment LAN, as CloudLab assigned them.
  experimentAddresses = ["10.10.1.1/24"];
}
