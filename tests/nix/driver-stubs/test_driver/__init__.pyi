# labnode's type stubs of the NixOS test driver (the `test_driver` package), for tests/nix/vm-scripts.
