# Shared by the NixOS VM tests (tests/*.nix): the TEST-ONLY secrets, and Python helpers for
# test scripts that read a Prometheus text exposition.
{
  # A node module: labnode.secrets with the TEST-ONLY sops file and age key (both public).
  # The node imports self.nixosModules.secrets (or default) itself.
  testSecrets = {
    labnode.secrets = {
      enable = true;
      sopsFile = ../secrets/test-only/secrets.yaml;
      ageKeyFile = "/run/labnode-test-only-age-key.txt";
      allowTestOnlyKey = true;
    };
    # As in sops-nix's own tests: the key must be in place before setupSecrets runs.
    system.activationScripts.labnodeTestOnlyAgeKey.text = ''
      install -m 0400 ${../secrets/test-only/age-key.txt} /run/labnode-test-only-age-key.txt
    '';
    system.activationScripts.setupSecrets.deps = ["labnodeTestOnlyAgeKey"];
  };

  # samples(machine, port, name): every sample of `name` on the exporter at
  # 127.0.0.1:port, as (labels, value) pairs. eventually(what, fn): retries fn until it
  # returns something true, for up to `timeout` seconds.
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
