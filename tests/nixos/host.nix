# The whole c220g5 host in a VM: hosts/c220g5 as deployed, minus what a VM does not have
# (its hardware file: boot loader, CPU; the GPU; the disks disko would partition, so no
# pool is imported at boot) and with the TEST-ONLY secrets instead of the node's. Every
# unit comes up and none fails; the secrets are decrypted with the right owners; the
# WireGuard key from sops is the one the inventory publishes; every Prometheus target is
# up; from another machine only SSH answers; a rollback drill with the host's own gates
# (minus the GPU and ZFS ones, which the VM cannot pass) to a second generation and back.
{
  self,
  lib,
  ...
}: let
  common = import ./common.nix;
  inventory = import ../../hosts;
in {
  name = "labnode-host";

  nodes.c220g5 = {
    config,
    pkgs,
    ...
  }: {
    imports = [
      self.nixosModules.default
      ../../hosts/c220g5
      common.testSecrets
      common.operatorStandIns
    ];
    disabledModules = [../../hosts/c220g5/hardware.nix];
    labnode.inventory.nodes = inventory;

    # What the VM lacks.
    disko.enableConfig = false;
    boot.zfs.extraPools = lib.mkForce [];
    labnode.gpu.enable = lib.mkForce false;
    # Without pools or a network, sanoid, syncoid, the scrub, the TRIM and the nightly upgrade
    # fail when they run, and the test asserts that no unit failed: move their schedules past
    # the test's lifetime (an hourly timer would otherwise fire in some runs). Their
    # timers stay armed, and the test checks that.
    services.sanoid.interval = "2099-01-01";
    services.syncoid.interval = "2099-01-01";
    labnode.zfs.scrubInterval = "2099-01-01";
    labnode.zfs.trimInterval = "2099-01-01";
    labnode.base.autoUpgrade.dates = "2099-01-01";
    # The test driver configures the VM's test network itself; DHCP on every port would
    # take it over.
    systemd.network.networks."20-control".enable = false;
    labnode.secrets.sopsFile = lib.mkForce ../../secrets/test-only/secrets.yaml;

    # The drill: a previous generation that differs only in one /etc file, and the host's
    # rollback settings with its gates minus gpu and zfs_pools, activated with `test` (the
    # VM has no boot loader).
    system.switch.enable = true;
    specialisation.previous.configuration.environment.etc."labnode-drill-test".text = "previous";
    environment.etc."labnode/drill-test.yaml".source = (pkgs.formats.yaml {}).generate "drill-test.yaml" {
      snapshot_dir = config.labnode.agents.snapshotDir;
      rollback =
        config.labnode.agents.rollback.settings
        // {
          activation_action = "test";
          gates = builtins.filter (g: !(g ? gpu || g ? zfs_pools)) config.labnode.agents.rollback.settings.gates;
        };
    };

    virtualisation.memorySize = 4096;
    virtualisation.cores = 2;
    environment.systemPackages = [pkgs.curl pkgs.jq pkgs.wireguard-tools];
  };

  # A machine on the same network, to see what the firewall lets through.
  nodes.outside = {pkgs, ...}: {
    environment.systemPackages = [pkgs.netcat-openbsd];
  };

  testScript = ''
    import json

    ${common.python}

    c220g5.wait_for_unit("multi-user.target")
    for unit in ["sshd", "wireguard-wg0", "prometheus", "alertmanager", "grafana",
                 "prometheus-node-exporter", "labnode-system", "labnode-zfs",
                 "labnode-net", "labnode-rollback"]:
        c220g5.wait_for_unit(f"{unit}.service")
    # The nightly upgrade and gc run through labnode (the run lock, the gates, the newest
    # generations kept); nixpkgs' own timers are off.
    for timer in ["sanoid", "zfs-scrub", "labnode-upgrade", "labnode-gc"]:
        c220g5.succeed(f"systemctl is-active {timer}.timer")
    for timer in ["nixos-upgrade", "nix-gc"]:
        c220g5.fail(f"systemctl is-active {timer}.timer")
    assert "syncoid-" in c220g5.succeed("systemctl list-timers --all --no-pager")

    # Nothing failed.
    failed = c220g5.succeed("systemctl list-units --failed --no-legend --plain").strip()
    assert failed == "", failed

    # Secrets: decrypted with the test-only key, owned by who reads them.
    c220g5.succeed("test \"$(stat -c %U:%a /run/secrets/wireguard/private-key)\" = root:400")
    c220g5.succeed("test \"$(stat -c %U /run/secrets/grafana/admin-password)\" = grafana")
    c220g5.succeed("grep -q '^LABNODE_ALERT_WEBHOOK_URL=http://127.0.0.1:9099/' /run/secrets/rendered/alertmanager.env")
    # The value itself is nowhere in /etc (whose files live in the Nix store).
    c220g5.fail("grep -Rqs test-only-grafana-admin-password /etc")

    # The WireGuard key from sops matches the public key the inventory gives the peers.
    pub = c220g5.succeed("wg show wg0 public-key").strip()
    assert pub == "${inventory.c220g5.wireguard.publicKey}", pub
    c220g5.succeed("ip -4 addr show wg0 | grep -q 'inet ${inventory.c220g5.wireguard.address}/24'")

    # Network tuning is in force.
    assert c220g5.succeed("sysctl -n net.ipv4.tcp_congestion_control").strip() == "bbr"

    # The firewall runs on nftables and the net collector (a dynamic user with CAP_NET_ADMIN
    # only) reads its input policy as default deny.
    c220g5.succeed("nft list chain inet nixos-fw input | grep -q 'policy drop'")
    eventually(
        "the net collector to report the firewall's default deny",
        lambda: "labnode_net_firewall_default_deny 1" in c220g5.succeed("curl -sf http://127.0.0.1:9469/metrics"),
    )

    # The generated labnode configuration passes its own check.
    c220g5.succeed("labnode config check /etc/labnode/config.yaml")

    # Every target up.
    def all_up():
        targets = json.loads(c220g5.succeed("curl -sf http://127.0.0.1:9090/api/v1/targets"))["data"]["activeTargets"]
        print([(t["labels"]["job"], t["health"], t["lastError"]) for t in targets])
        return targets and all(t["health"] == "up" for t in targets)

    eventually("every target up", all_up)

    # Sanoid's retention as the module sets it, in the config the sanoid unit is given.
    conf = sanoid_config(c220g5)
    assert "[template_standard]" in conf and "hourly=24" in conf, conf

    # The stack listens on loopback only (or the WireGuard address) ...
    ports = {"9090", "9093", "9094", "3000", "9100", "9466", "9467", "9468", "9469", "9470", "9471"}
    for line in c220g5.succeed("ss -tlnH").splitlines():
        addr, port = line.split()[3].rsplit(":", 1)
        if port in ports:
            assert addr.startswith("127.") or addr == "[::1]" or addr.startswith("${inventory.c220g5.wireguard.address}"), line

    # A rollback drill with the host's gates (minus gpu and zfs): to the previous
    # generation and back, every gate green both ways.
    c220g5.succeed("labnode config check /etc/labnode/drill-test.yaml")
    profile = "/nix/var/nix/profiles/system"
    base = c220g5.succeed("readlink -f /run/current-system").strip()
    c220g5.succeed(f"nix-env -p {profile} --set {base}/specialisation/previous")
    c220g5.succeed(f"nix-env -p {profile} --set {base}")
    c220g5.succeed("labnode drill rollback --yes --config /etc/labnode/drill-test.yaml --label host-drill")
    snap = c220g5.succeed("grep -l host-drill /var/lib/labnode/snapshots/*.json | sort | tail -n 1").strip()
    drill = next(r["data"] for r in json.loads(c220g5.succeed(f"cat {snap}"))["records"] if r["kind"] == "rollback_drill")
    assert drill["success"] and drill["ended_on_start"], drill
    for d in drill["directions"]:
        names = {g["name"] for g in d["gates"]}
        assert names == {"systemd_active", "tcp", "prometheus"}, names
        assert all(g["passed"] for g in d["gates"]), d["gates"]
    assert c220g5.succeed("readlink -f /run/current-system").strip() == base
    c220g5.fail("test -e /etc/labnode-drill-test")

    # The store holds the host's facts: root:labnode 2750, so the rollback collector (a
    # dynamic user in group labnode) reads the drill and other local users do not.
    assert c220g5.succeed("stat -c %a:%U:%G /var/lib/labnode/snapshots").strip() == "2750:root:labnode"
    c220g5.wait_until_succeeds(
        "curl -sf http://127.0.0.1:9470/metrics | grep -q '^labnode_rollback_last_success 1'",
        timeout=60,
    )
    c220g5.fail("su -s /bin/sh nobody -c 'ls /var/lib/labnode/snapshots'")

    # The deployed units' hardening, scored by NixOS's systemd (docs/nixos/hardening.md
    # lists the offline scores); none worse than OK. The root units (drill, recovery,
    # upgrade) switch the system and are not scored.
    for unit in c220g5.succeed("systemctl list-units --plain --no-legend 'labnode-*.service' | cut -d' ' -f1").split():
        if c220g5.succeed(f"systemctl show -p DynamicUser --value {unit}").strip() != "yes":
            continue
        line = c220g5.succeed(f"systemd-analyze security --no-pager {unit} | tail -n 1").strip()
        print(line)
        assert any(w in line for w in ("PERFECT", "SAFE", "OK")), line

    # ... and from another machine only SSH answers.
    outside.wait_for_unit("multi-user.target")
    outside.succeed("nc -z -w 5 c220g5 22")
    for port in sorted(ports):
        outside.fail(f"nc -z -w 2 c220g5 {port}")
  '';
}
