# labnode.network-tuning in force: BBR and fq by sysctl, tcp_bbr loaded at boot, the
# 10 GbE buffer sizes, fq on a new interface, and a real TCP connection using BBR.
{self, ...}: {
  name = "labnode-network-tuning";

  nodes.machine = {pkgs, ...}: {
    imports = [self.nixosModules.network-tuning];
    labnode.network-tuning.enable = true;
    environment.systemPackages = [pkgs.socat];
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    def sysctl(key):
        return machine.succeed(f"sysctl -n {key}").split()

    assert sysctl("net.ipv4.tcp_congestion_control") == ["bbr"], sysctl("net.ipv4.tcp_congestion_control")
    assert sysctl("net.core.default_qdisc") == ["fq"], sysctl("net.core.default_qdisc")
    assert sysctl("net.core.rmem_max") == ["67108864"]
    assert sysctl("net.core.wmem_max") == ["67108864"]
    assert sysctl("net.ipv4.tcp_rmem") == ["4096", "131072", "67108864"], sysctl("net.ipv4.tcp_rmem")
    assert sysctl("net.ipv4.tcp_wmem") == ["4096", "65536", "67108864"], sysctl("net.ipv4.tcp_wmem")
    assert sysctl("net.ipv4.tcp_mtu_probing") == ["1"]

    # Loaded at boot by boot.kernelModules, not by the first socket that asked for it.
    machine.succeed("grep -q '^tcp_bbr ' /proc/modules")
    machine.succeed("grep -q '^sch_fq ' /proc/modules")
    machine.succeed("systemctl show -p Result systemd-modules-load.service | grep -q success")

    # A new interface with a transmit queue gets fq as its root qdisc. (Not a veth: veth,
    # dummy and bridge devices are IFF_NO_QUEUE and always get `noqueue`, whatever
    # net.core.default_qdisc says; ifb has a real queue.)
    machine.succeed("ip link add lntest0 type ifb && ip link set lntest0 up")
    machine.succeed("tc qdisc show dev lntest0 | grep -qw fq")

    # A real connection uses BBR (ss -i prints the congestion control in use).
    machine.succeed("systemd-run --unit=lntest-server socat TCP-LISTEN:7777,reuseaddr EXEC:'sleep 60'")
    machine.wait_for_open_port(7777)
    machine.succeed("systemd-run --unit=lntest-client socat -u EXEC:'sleep 60' TCP:127.0.0.1:7777")
    machine.wait_until_succeeds("ss -tinH state established '( dport = :7777 )' | grep -qw bbr")
  '';
}
