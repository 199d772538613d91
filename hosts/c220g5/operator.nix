# What only the operator of this node knows. Edit before the first install (README,
# "Deploying to a fresh CloudLab c220g5").
{
  # Public keys allowed to log in as root over SSH (password login is off).
  sshAuthorizedKeys = [
    # "ssh-ed25519 AAAA... you@laptop"
  ];
  # The flake the node upgrades itself from every night (system.autoUpgrade).
  flake = "github:labnode/labnode#c220g5";
  # The port CloudLab wired into the experiment LAN and the address it assigned: the
  # `mac_address` and the `ip` of this node's <interface> in the experiment's manifest.
  # null: no experiment network (the control network still comes up by DHCP).
  experimentInterface = null;
  # experimentInterface = {
  #   mac = "3c:fd:fe:00:00:01";
  #   addresses = ["10.10.1.1/24"];
  # };
}
