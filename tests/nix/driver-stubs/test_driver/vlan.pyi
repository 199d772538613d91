# labnode's type stub of the NixOS test driver's VLANs, for tests/nix/vm-scripts.

class VLan:
    nr: int
