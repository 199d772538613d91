# labnode's type stub of the NixOS test driver's driver, for tests/nix/vm-scripts.
from test_driver.machine import Machine
from test_driver.vlan import VLan

class Driver:
    machines: list[Machine]
    vlans: list[VLan]
