# The rollback CLI on a NixOS VM built from the flake's modules, with its own gates: the
# drill's plan changes nothing and the drill ends where it began (timed against a service
# with a known start delay); a failing `labnode safe-switch` rolls back and exits 1; a
# `kill -9` of labnode mid-confirmation is rolled back by its transient systemd guard; a
# crash of the VM mid-confirmation boots the old generation and the module's boot unit
# records the rollback; a `kill -9` during the activation itself (web.service stopped, its
# new start still running) leaves nothing half-switched: the guard waits for the activation
# unit, then rolls back; a nightly upgrade (labnode-upgrade.service) to a system whose gate
# stays red rolls back by itself, with a record and the alert's series.
# Systems: the base one (web.service serves "v1"), the specialisation `v2` (serves "v2"
# after a 2 s start delay), `broken` (its web.service fails), `slow` (60 s delay) and
# `slowstart` (its web.service's start takes 10 s: the activation is slow).
# tests/nixos/rollback.nix covers the module's drill unit and the exported metrics.
{self, ...}: {
  name = "labnode-rollback-cli";

  nodes.machine = {
    lib,
    pkgs,
    ...
  }: let
    web = version: delay: {
      description = "test web service ${version}";
      wantedBy = ["multi-user.target"];
      serviceConfig.ExecStart = "${pkgs.bash}/bin/bash -c 'sleep ${toString delay}; exec ${pkgs.busybox}/bin/httpd -f -p 127.0.0.1:8080 -h ${pkgs.writeTextDir "health" version}'";
    };
  in {
    imports = [self.nixosModules.agents];
    labnode.agents.enable = true;
    environment.systemPackages = [pkgs.curl pkgs.jq];
    systemd.services.web = web "v1" 0;
    specialisation.v2.configuration.systemd.services.web = lib.mkForce (web "v2" 2);
    specialisation.broken.configuration.systemd.services.web.serviceConfig.ExecStart =
      lib.mkForce "${pkgs.coreutils}/bin/false";
    specialisation.slow.configuration.systemd.services.web = lib.mkForce (web "slow" 60);
    specialisation.slowstart.configuration.systemd.services.web =
      lib.mkForce ((web "slowstart" 0)
        // {serviceConfig.ExecStartPre = "${pkgs.coreutils}/bin/sleep 10";});
    # The nightly upgrade through labnode, its "build" the system the test names.
    labnode.base = {
      enable = true;
      allowNoSshKey = true;
      gc.enable = false;
      autoUpgrade = {
        enable = true;
        flake = "path:/unused#machine";
      };
    };
    labnode.agents.rollback.upgradeBuild = "cat /run/labnode-upgrade-target";
    # The VM has no boot loader to update: activate with `test`, as the drill would on a
    # host where only the running system matters. (safe-switch's `boot`, and the boot unit's
    # `switch`, call installBootLoader: a no-op here.)
    system.switch.enable = true;
    system.build.installBootLoader = lib.mkForce "${pkgs.coreutils}/bin/true";
    # The gates of every run, the nightly upgrade's included: the module's own configuration
    # file (/etc/labnode/config.yaml, checked at build time).
    labnode.agents.rollback.settings = {
      activation_action = "test";
      arm = "systemd";
      gate_timeout = "60s";
      confirm_timeout = "30s";
      gates = [
        {
          name = "web-unit";
          systemd_active = ["web.service"];
        }
        {
          name = "no-failed";
          systemd_no_failed = {};
        }
        {
          name = "web";
          http.url = "http://127.0.0.1:8080/health";
        }
      ];
    };
  };

  testScript = ''
    import json

    cfg = "--config /etc/labnode/config.yaml"
    profile = "/nix/var/nix/profiles/system"

    def newest_record(kind):
        path = machine.succeed("ls -1 /var/lib/labnode/snapshots/*.json | sort | tail -n 1").strip()
        snap = json.loads(machine.succeed(f"cat {path}"))
        return next(r["data"] for r in snap["records"] if r["kind"] == kind)

    machine.wait_for_unit("multi-user.target")
    machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/health | grep -x v1")
    base = machine.succeed("readlink -f /run/current-system").strip()

    # Generations N (base) and N+1 (v2), running v2.
    machine.succeed(f"nix-env -p {profile} --set {base}")
    machine.succeed(f"nix-env -p {profile} --set {base}/specialisation/v2")
    machine.succeed(f"{base}/specialisation/v2/bin/switch-to-configuration test")
    machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/health | grep -x v2")
    v2_gen = machine.succeed(f"readlink {profile}").strip()

    with subtest("drill rollback: the plan changes nothing, the drill ends where it began"):
        machine.succeed(f"labnode drill rollback {cfg} | grep 'nothing is changed without --yes'")
        assert machine.succeed(f"readlink {profile}").strip() == v2_gen
        machine.succeed(f"labnode drill rollback --yes {cfg}")
        d = newest_record("rollback_drill")
        assert d["success"] and d["ended_on_start"], d
        back, forward = d["directions"]
        assert back["direction"] == "rollback" and forward["direction"] == "rollforward"
        assert "units_settled" in back["phases"], back
        # v1 answers at once; v2 only after its 2 s start delay.
        assert forward["recovery_seconds"] >= 2.0, forward
        assert machine.succeed(f"readlink {profile}").strip() == v2_gen
        machine.succeed("curl -fsS http://127.0.0.1:8080/health | grep -x v2")

    with subtest("safe-switch to a generation whose unit fails: rolled back, exit 1"):
        machine.fail(f"labnode safe-switch --to {base}/specialisation/broken --confirm-timeout 10s {cfg}")
        s = newest_record("safe_switch")
        assert s["outcome"] == "rolled_back" and s["healthy"], s
        assert "web.service" in s["reason"], s["reason"]
        assert s["detect_seconds"] > 0 and s["recover_seconds"] > 0, s
        # A specialisation is a symlink to its own system: compare what both resolve to.
        assert machine.succeed(f"readlink -f {profile}").strip() == machine.succeed(f"readlink -f {base}/specialisation/v2").strip()
        machine.succeed("systemctl is-active web.service")
        machine.succeed("curl -fsS http://127.0.0.1:8080/health | grep -x v2")

    with subtest("kill -9 of labnode mid-confirmation: its systemd guard rolls back"):
        machine.succeed(
            f"systemd-run --unit=labnode-switch-under-test labnode safe-switch --to {base}/specialisation/slow {cfg}"
        )
        machine.wait_until_succeeds("test -e /var/lib/labnode/safe-switch/pending.json")
        machine.wait_until_succeeds("jq -e '.phase == \"switch\"' /var/lib/labnode/safe-switch/pending.json")
        assert "running" in machine.succeed("systemctl list-units 'labnode-rollback-guard-*'")
        machine.succeed("systemctl kill --signal=KILL labnode-switch-under-test.service")
        machine.wait_until_fails("test -e /var/lib/labnode/safe-switch/pending.json", timeout=60)
        s = newest_record("safe_switch")
        assert s["outcome"] == "rolled_back" and "found by its systemd guard" in s["reason"], s
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/health | grep -x v2")

    def on_one_generation(system):
        # The invariant: running system, profile and their service agree, nothing left over.
        want = machine.succeed(f"readlink -f {system}").strip()
        assert machine.succeed("readlink -f /run/current-system").strip() == want, "the running system"
        assert machine.succeed(f"readlink -f {profile}").strip() == want, "the profile"
        machine.fail("test -e /var/lib/labnode/safe-switch/pending.json")
        machine.fail("systemctl list-units --no-legend --plain 'labnode-activation-*' 'labnode-rollback-guard-*' | grep -E ' (active|activating) '")
        machine.succeed("systemctl is-active web.service")

    with subtest("kill -9 of labnode during the activation: the guard waits for it, then rolls back"):
        machine.succeed(
            f"systemd-run --unit=labnode-switch-mid-activation labnode safe-switch --to {base}/specialisation/slowstart {cfg}"
        )
        # The activation runs in a unit of its own; web.service's new start is under way.
        machine.wait_until_succeeds("systemctl list-units --no-legend --plain 'labnode-activation-*' | grep -q ' active '")
        machine.wait_until_succeeds("systemctl show -P ActiveState web.service | grep -qx activating")
        machine.succeed("systemctl kill --signal=KILL labnode-switch-mid-activation.service")
        machine.wait_until_fails("test -e /var/lib/labnode/safe-switch/pending.json", timeout=120)
        s = newest_record("safe_switch")
        assert s["outcome"] == "rolled_back" and "died during its `switch` phase" in s["reason"], s
        on_one_generation(f"{base}/specialisation/v2")
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/health | grep -x v2")

    with subtest("a bad nightly upgrade: rolled back by itself, recorded, counted"):
        machine.succeed(f"readlink -f {base}/specialisation/broken > /run/labnode-upgrade-target")
        machine.fail("systemctl start labnode-upgrade.service")
        s = newest_record("safe_switch")
        assert s["outcome"] == "rolled_back" and s["healthy"], s
        label = machine.succeed("ls -1 /var/lib/labnode/snapshots/*.json | sort | tail -n 1").strip()
        assert label.endswith("-nightly-upgrade.json"), label
        on_one_generation(f"{base}/specialisation/v2")
        # The fourth rolled-back switch of this test, as the rollback collector exports it.
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:9470/metrics | grep -qx 'labnode_rollback_safe_switch_total{outcome=\"rolled_back\"} 4'")
        metrics = machine.succeed("curl -fsS http://127.0.0.1:9470/metrics")
        assert 'labnode_rollback_safe_switch_total{outcome="rolled_back"} 4' in metrics, metrics

    with subtest("a crash mid-confirmation: the old generation boots, the boot unit rolls back"):
        # The known-good generation is the one the VM boots: the VM has no boot loader whose
        # default could change, it boots `base`, as a boot loader never told otherwise would.
        machine.succeed(f"nix-env -p {profile} --set {base}")
        machine.succeed(f"{base}/bin/switch-to-configuration test")
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/health | grep -x v1")
        machine.succeed(
            f"systemd-run --unit=labnode-switch-crashed labnode safe-switch --to {base}/specialisation/slow {cfg}"
        )
        machine.wait_until_succeeds("jq -e '.phase == \"switch\"' /var/lib/labnode/safe-switch/pending.json")
        machine.wait_until_succeeds(f"test $(readlink -f /run/current-system) = $(readlink -f {base}/specialisation/slow)")
        machine.wait_until_succeeds("systemctl show -p Description web.service | grep -qx 'Description=test web service slow'")
        machine.succeed("sync")
        machine.crash()
        machine.start()
        machine.wait_for_unit("multi-user.target")
        assert machine.succeed("readlink -f /run/current-system").strip() == base, "the unconfirmed generation booted"
        machine.wait_until_fails("test -e /var/lib/labnode/safe-switch/pending.json", timeout=120)
        s = newest_record("safe_switch")
        assert s["outcome"] == "rolled_back", s
        assert "the host rebooted during its `switch` phase" in s["reason"], s["reason"]
        assert "boot_default" not in ((s.get("switch") or {}).get("phases") or {}), s
        assert machine.succeed(f"readlink -f {profile}").strip() == base, "the profile is not back on the old generation"
        # The boot unit started the recovery (which retries until healthy, in a transient
        # unit of its own, collected once it succeeded) and ended at once.
        unit = "labnode-safe-switch-recover.service"
        machine.wait_until_succeeds(f"test \"$(systemctl show -P ActiveState {unit})\" = inactive")
        machine.succeed(f"test \"$(systemctl show -P Result {unit})\" = success")
        machine.wait_until_fails("systemctl is-active labnode-safe-switch-recover-run.service")
        assert "labnode_rollback_recovery_failed 0" in machine.succeed("curl -fsS http://127.0.0.1:9470/metrics")
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/health | grep -x v1")
  '';
}
