# The type hints the NixOS test driver prepends to a VM test script before it runs mypy
# (nixos/lib/test-script-prepend.py, nixos-26.05): labnode's own declaration of the same
# globals, over the stub package in driver-stubs/. tests/nix/vm-scripts adds the machine
# names (`name: Machine`) after it. Older names (machines, Machine) and 26.05's
# (machines_qemu, QemuMachine) are both declared, so a script written for either checks.
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from test_driver.driver import Driver
from test_driver.logger import Logger
from test_driver.machine import Machine, NspawnMachine, QemuMachine
from test_driver.vlan import VLan


class RetryProtocol(Protocol):
    def __call__(self, fn: Callable, timeout: int = 900) -> None:
        raise Exception("type information for the test driver only")


class PollingConditionProtocol(Protocol):
    def __call__(
        self,
        fun_: Callable | None = None,
        *,
        seconds_interval: float = 2.0,
        description: str | None = None,
    ) -> Callable[[Callable], AbstractContextManager] | AbstractContextManager:
        raise Exception("type information for the test driver only")


class CreateMachineProtocol(Protocol):
    def __call__(
        self, start_command: str | dict, *, name: str | None = None, keep_machine_state: bool = False
    ) -> Machine:
        raise Exception("type information for the test driver only")


start_all: Callable[[], None]
subtest: Callable[[str], AbstractContextManager[None]]
retry: RetryProtocol
test_script: Callable[[], None]
machines: list[Machine]
machines_qemu: list[QemuMachine]
machines_nspawn: list[NspawnMachine]
vlans: list[VLan]
driver: Driver
log: Logger
create_machine: CreateMachineProtocol
run_tests: Callable[[], None]
join_all: Callable[[], None]
serial_stdout_off: Callable[[], None]
serial_stdout_on: Callable[[], None]
polling_condition: PollingConditionProtocol
