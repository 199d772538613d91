# The rollback drill on a NixOS VM with two real generations in its system profile: the
# module's drill unit (through its transient run) switches to the previous generation,
# times the recovery, and switches back; the profile ends where it started, the snapshot
# store has the drill record, and the rollback collector exports the result. Then a
# safe switch to a generation with a failing unit rolls itself back.
{self, ...}: let
  common = import ./common.nix;
in {
  name = "labnode-rollback";

  nodes.machine = {pkgs, ...}: {
    imports = [self.nixosModules.agents];
    labnode.agents = {
      enable = true;
      rollback.drill.enable = true;
    };
    # Generations are switched for real; the VM boots without a boot loader, so
    # `switch-to-configuration switch` has none to install.
    system.switch.enable = true;
    system.build.installBootLoader = pkgs.lib.mkForce "${pkgs.coreutils}/bin/true";
    environment.etc."labnode-test-generation".text = "base";
    environment.systemPackages = [pkgs.curl];
    specialisation = {
      # The generation the drill starts from (so the base is its previous one).
      current.configuration.environment.etc."labnode-test-generation".text = pkgs.lib.mkForce "current";
      # A generation whose new unit fails: safe-switch must not keep it.
      broken.configuration.systemd.services.labnode-test-broken = {
        wantedBy = ["multi-user.target"];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${pkgs.coreutils}/bin/false";
        };
      };
    };
  };

  testScript = ''
    ${common.python}

    machine.wait_for_unit("multi-user.target")
    profile = "/nix/var/nix/profiles/system"

    # Two generations: 1 = the booted system, 2 = the `current` specialisation, active.
    base = machine.succeed("readlink -f /run/current-system").strip()
    current = machine.succeed("readlink -f /run/current-system/specialisation/current").strip()
    broken = machine.succeed("readlink -f /run/current-system/specialisation/broken").strip()
    machine.succeed(f"nix-env -p {profile} --set {base}")
    machine.succeed(f"nix-env -p {profile} --set {current}")
    machine.succeed(f"{profile}/bin/switch-to-configuration switch")
    machine.succeed("grep -qx current /etc/labnode-test-generation")

    # The drill, as the timer would run it.
    machine.succeed("systemctl start labnode-drill-rollback.service")
    assert machine.succeed(f"readlink -f {profile}").strip() == current, "the drill did not end on the starting generation"
    machine.succeed("grep -qx current /etc/labnode-test-generation")
    # It ran as the transient unit (which the switches cannot stop) and that run succeeded:
    # systemd-run --wait reports both in the journal of the unit that called it. (No pipe
    # into `grep -q`: under the driver's pipefail, journalctl's SIGPIPE would fail it.)
    # (Not `log`: the driver defines it, typed as its logger.)
    def drill_unit_journal():
        text = machine.succeed("journalctl -u labnode-drill-rollback.service -o cat --no-pager")
        return text if "Finished with result:" in text else None

    journal = eventually("systemd-run's report in the drill unit's journal", drill_unit_journal, timeout=30)
    assert "Running as unit: labnode-drill-rollback-run.service" in journal, journal
    assert "Finished with result: success" in journal, journal
    machine.succeed("grep -l rollback_drill /var/lib/labnode/snapshots/*.json")

    def drill(name):
        return samples(machine, 9470, name)

    success = eventually("the drill result", lambda: drill("labnode_rollback_last_success"))
    assert success == [({}, 1.0)], success
    recovery = {labels.get("direction"): v for (labels, v) in drill("labnode_rollback_recovery_seconds")}
    assert set(recovery) == {"rollback", "rollforward"}, recovery
    assert all(0 < v < 300 for v in recovery.values()), recovery
    phases = {(labels.get("direction"), labels.get("phase")) for (labels, _) in drill("labnode_rollback_phase_seconds")}
    assert ("rollback", "activation") in phases and ("rollforward", "activation") in phases, phases

    # A safe switch to the broken generation rolls back by itself, and says so: exit 1.
    status, out = machine.execute(f"labnode safe-switch --to {broken} --confirm-timeout 30s --config /etc/labnode/config.yaml")
    assert status == 1, f"safe-switch exited {status}, not 1: {out}"
    assert machine.succeed("readlink -f /run/current-system").strip() == current, "safe-switch kept the broken generation"
    assert machine.succeed(f"readlink -f {profile}").strip() == current
    machine.succeed("grep -l safe_switch /var/lib/labnode/snapshots/*.json")
    rolled_back = eventually(
        "the safe-switch result",
        lambda: [v for (labels, v) in drill("labnode_rollback_safe_switch_total") if labels.get("outcome") == "rolled_back"],
    )
    assert rolled_back == [1.0], rolled_back
  '';
}
