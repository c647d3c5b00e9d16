"""Throwaway hosts for tuning tests: a freshly built machine root with command stand-ins.

Roots are built, not hard-link copied: the stand-ins write files in place (as the kernel
and systemd would), which would leak into a shared session root through a hard link.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent.api.v1 import hardware_pb2 as pb
from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.hardware.discover import discover
from nodeagent.host import HostRoot
from nodeagent.tuning import apply, profiles
from testbed import fakehost
from testbed.machines import build_machine


@dataclass
class Host:
    path: Path
    root: HostRoot
    inventory: pb.HardwareInventory
    profile: tpb.TuningProfile
    commands: dict[str, list[str]]

    def run(
        self,
        check: bool = False,
        reboot: str = "never",
        keep_run: bool = False,
        playbook_dir: Path | None = None,
    ) -> tuple[list[tpb.TaskProgress], tpb.ApplyResult]:
        opts = apply.ApplyOptions(
            self.profile,
            self.root,
            self.inventory,
            check=check,
            commands=self.commands,
            reboot_policy=reboot,
            keep_run=keep_run,
            playbook_dir=playbook_dir,
        )
        tasks, result = [], None
        for event in apply.apply(opts):
            if event.HasField("task"):
                tasks.append(event.task)
            else:
                result = event.result
        assert result is not None
        return tasks, result

    def log(self) -> list[str]:
        return fakehost.commands_log(self.path)


def make_host(name: str, dest: Path) -> Host:
    build_machine(name, dest)
    commands = fakehost.prepare(dest)
    root = HostRoot(dest)
    inv = discover(root)
    profile = profiles.select(profiles.load_all([profiles.SHIPPED]), inv)
    return Host(dest, root, inv, profile, commands)


@pytest.fixture
def fresh_host(scratch: Path) -> Iterator[object]:
    yield lambda name: make_host(name, scratch / name)
