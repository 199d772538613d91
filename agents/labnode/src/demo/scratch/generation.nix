# One generation of a scratch system profile: a store path whose bin/switch-to-configuration
# runs the given shell script, as a NixOS system closure's does. It needs nothing from
# nixpkgs (builder /bin/sh), so it builds offline:
#   nix-build generation.nix --argstr name web-v1 --argstr activate 'echo "$1"'
# In the script, $1 is the action (switch, test, ...) and $out the generation's own path.
{
  name,
  activate,
  # Where mkdir and chmod are on the building machine.
  bin ? "/bin",
}:
derivation {
  name = "labnode-scratch-${name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit activate;
  args = [
    "-c"
    ''
      set -e
      ${bin}/mkdir -p "$out/bin"
      s="$out/bin/switch-to-configuration"
      printf '#!/bin/sh\n# labnode scratch generation ${name}\nout=%s\n' "$out" > "$s"
      printf '%s\n' "$activate" >> "$s"
      ${bin}/chmod 555 "$s"
    ''
  ];
}
