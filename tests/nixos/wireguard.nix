# labnode.wireguard between two nodes of a (test) inventory: peers derived from it, the UDP
# port open, a handshake, traffic both ways, and labnode's net collector reporting the peer
# (handshake age and byte counters) the way `wg show` does.
{self, ...}: let
  common = import ./common.nix;
  # TEST-ONLY keys (public in this repository).
  keys = {
    a = {
      private = "ENxy/A+MNJhpYTbPsEr5D6C3+DcryjioUL8cB2Ln3l8=";
      public = "FoROZOTcBEug7OnulezcSXzQc4BC5L3/INWEKbQdtj8=";
    };
    b = {
      private = "6H1jKtj+3p5RZaAsMMwfVO6XbSO/Rsn6hyNO1DtyA0s=";
      public = "wgIB21vzz9GUEXl1ZHceTebhgaFFDhRa3/Gx9rRYvmE=";
    };
  };
  inventory = {
    a.wireguard = {
      address = "10.77.0.1";
      publicKey = keys.a.public;
      endpoint = "a:51820";
    };
    b.wireguard = {
      address = "10.77.0.2";
      publicKey = keys.b.public;
      endpoint = "b:51820";
    };
  };
  node = name: {pkgs, ...}: {
    imports = [self.nixosModules.wireguard self.nixosModules.agents];
    labnode.inventory.nodes = inventory;
    labnode.wireguard = {
      enable = true;
      # A store path is fine for a test-only key, never for a real one.
      privateKeyFile = toString (pkgs.writeText "wg-test-only-${name}" keys.${name}.private);
    };
    labnode.agents.enable = true;
    environment.systemPackages = [pkgs.wireguard-tools pkgs.curl];
  };
in {
  name = "labnode-wireguard";

  nodes.a = node "a";
  nodes.b = node "b";

  testScript = ''
    ${common.python}

    start_all()
    for m in (a, b):
        m.wait_for_unit("wireguard-wg0.service")
        m.wait_for_unit("labnode-net.service")
        # The UDP port is open, whichever firewall backend is in use (read whole: `grep -q`
        # on a pipe can fail the command under the driver's pipefail).
        rules = m.succeed("nft list ruleset 2>/dev/null || true; iptables -S 2>/dev/null || true")
        assert "51820" in rules, rules

    a.wait_until_succeeds("ping -c 1 -W 1 10.77.0.2")
    b.wait_until_succeeds("ping -c 1 -W 1 10.77.0.1")
    a.succeed("ping -c 5 -i 0.2 10.77.0.2")

    # The handshake happened (wg prints 0 before the first one).
    handshake = int(a.succeed("wg show wg0 latest-handshakes").split()[1])
    assert handshake > 0, "no handshake"

    def peer_sample(name):
        found = [v for (labels, v) in samples(a, 9469, name)
                 if labels.get("interface") == "wg0" and labels.get("peer") == "${keys.b.public}"]
        return found[0] if found else None

    # labnode reports the handshake as an age, consistent with wg's timestamp.
    age = eventually("the peer's handshake age", lambda: peer_sample("labnode_net_wireguard_peer_handshake_age_seconds"))
    now = int(a.succeed("date +%s"))
    assert abs((now - handshake) - age) <= 20, f"labnode age {age} s, wg says {now - handshake} s"

    # Byte counters agree with wg's within a scrape interval of keepalives and pings.
    rx = eventually("received bytes", lambda: peer_sample("labnode_net_wireguard_peer_receive_bytes_total"))
    tx = eventually("transmitted bytes", lambda: peer_sample("labnode_net_wireguard_peer_transmit_bytes_total"))
    wg_rx, wg_tx = (int(x) for x in a.succeed("wg show wg0 transfer").split()[1:3])
    assert rx > 0 and tx > 0, f"rx {rx} tx {tx}"
    assert rx <= wg_rx and wg_rx - rx <= 4096 + 0.1 * wg_rx, f"rx: labnode {rx}, wg {wg_rx}"
    assert tx <= wg_tx and wg_tx - tx <= 4096 + 0.1 * wg_tx, f"tx: labnode {tx}, wg {wg_tx}"

    # The collector reads WireGuard without being root: only CAP_NET_ADMIN.
    user = a.succeed("systemctl show -p User --value labnode-net.service").strip()
    caps = a.succeed("systemctl show -p AmbientCapabilities --value labnode-net.service").strip()
    assert caps == "cap_net_admin", caps
    a.succeed("systemctl show -p DynamicUser --value labnode-net.service | grep -qx yes")
    print(f"labnode-net runs as {user or 'a dynamic user'} with {caps}")
  '';
}
