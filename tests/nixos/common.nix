# Shared by the NixOS VM tests (tests/nixos/*.nix): the TEST-ONLY secrets, and Python helpers for
# test scripts that read a Prometheus text exposition.
{
  # What a fresh checkout leaves for the operator to fill in (hosts/<node>/operator.nix),
  # stood in for where a host is evaluated or built without one: the flake's
  # checks.c220g5-eval and the host VM test. A TEST-ONLY SSH key (no private half exists
  # anywhere) and disk names; evaluation of the real host stops until the operator sets them.
  operatorStandIns = {
    labnode.base.sshAuthorizedKeys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHlabnodeTestOnlyNotARealKeyxxxxxxxxxxxxxxxx test-only"];
    disko.devices.disk.ssd.device = "/dev/disk/by-id/ata-LABNODE_TEST_ONLY_SSD";
    disko.devices.disk.hdd.device = "/dev/disk/by-id/scsi-LABNODE_TEST_ONLY_HDD";
  };

  # A node module: labnode.secrets with the TEST-ONLY sops file and age key (both public).
  # The node imports self.nixosModules.secrets (or default) itself.
  testSecrets = {
    labnode.secrets = {
      enable = true;
      sopsFile = ../../secrets/test-only/secrets.yaml;
      ageKeyFile = "/run/labnode-test-only-age-key.txt";
      allowTestOnlyKey = true;
    };
    # As in sops-nix's own tests: the key must be in place before setupSecrets runs.
    system.activationScripts.labnodeTestOnlyAgeKey.text = ''
      install -m 0400 ${../../secrets/test-only/age-key.txt} /run/labnode-test-only-age-key.txt
    '';
    system.activationScripts.setupSecrets.deps = ["labnodeTestOnlyAgeKey"];
  };

  # samples(machine, port, name): every sample of `name` on the exporter at
  # 127.0.0.1:port, as (labels, value) pairs. sanoid_config(machine): the lines of the file
  # sanoid.service reads. eventually(what, fn): retries fn until it returns something true,
  # for up to `timeout` seconds.
  python = ''
    import re
    import time


    def samples(machine, port, name):
        text = machine.succeed(f"curl -sf http://127.0.0.1:{port}/metrics")
        found = []
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
            if m is None or m.group(1) != name:
                continue
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            found.append((labels, float(m.group(4))))
        return found


    def sanoid_config(machine):
        # The lines of the config sanoid.service is given: `--configdir DIR` names it
        # (DIR/sanoid.conf: a store path in some releases, /etc/sanoid in others; sanoid's
        # own default is /etc/sanoid).
        exec_start = machine.succeed("systemctl show -p ExecStart --value sanoid.service")
        m = re.search(r"--configdir[ =]([^ ;]+)", exec_start)
        configdir = m.group(1) if m else "/etc/sanoid"
        return machine.succeed(f"cat {configdir}/sanoid.conf").splitlines()


    def eventually(what, fn, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = fn()
                if result:
                    return result
            except Exception as e:
                print(f"waiting for {what}: {e}")
            if time.monotonic() > deadline:
                raise Exception(f"timed out after {timeout} s waiting for {what}")
            time.sleep(2)
  '';
}
