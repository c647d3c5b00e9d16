"""BIOS over Redfish against the sushy-tools emulator (libvirt driver, test:///default).

The emulator runs on loopback with HTTP basic auth (a bcrypt htpasswd file), so the tests
also see that credentials never reach a log or an error message.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from nodeagent.api.v1 import tuning_pb2 as tpb
from nodeagent.cli.main import main
from nodeagent.tuning import bios

USER, PASSWORD = "admin", "s3cret-Pa55word"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    """A fresh emulator per test: its BIOS state lives in the process."""
    auth = tmp_path / "htpasswd"
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    auth.write_text(f"{USER}:{digest}\n")
    config = tmp_path / "emulator.conf"
    config.write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}\n")
    port = _free_port()
    log = open(tmp_path / "emulator.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sushy_tools.emulator.main",
            "--interface",
            "127.0.0.1",
            "--port",
            str(port),
            "--libvirt-uri",
            "test:///default",
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=log,
        env=dict(os.environ, SUSHY_EMULATOR_LIBVIRT_URI="test:///default"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/redfish/v1/", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "emulator.log").read_text()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _settings(**intents: str) -> tpb.BiosSettings:
    s = tpb.BiosSettings(intents=tpb.BiosIntents(**intents))
    s.attributes["QuietBoot"] = "false"
    return s


def test_resolve_verify_apply_verify(emulator: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    target = bios.BmcTarget(emulator, USER, PASSWORD)
    settings = _settings(turbo="disabled", c_states="disabled")
    before = {r.setting: r for r in bios.verify_bios(target, settings)}
    assert before["bios:turbo"].status == tpb.SETTING_DRIFT
    assert before["bios:turbo"].expected == "ProcTurboMode=Disabled"  # from the live registry
    assert before["bios:turbo"].actual == "ProcTurboMode=Enabled"
    assert before["bios:c_states"].status == tpb.SETTING_UNKNOWN  # no C-state attribute here
    assert "MAPPING_MISSING" in before["bios:c_states"].detail
    assert before["bios:attr:QuietBoot"].status == tpb.SETTING_DRIFT

    _, plan = bios.apply_bios(target, settings, check=True)
    assert plan[0].message == "would set ProcTurboMode=Disabled, QuietBoot=false"
    unchanged = {r.setting: r.status for r in bios.verify_bios(target, settings)}
    assert unchanged["bios:turbo"] == tpb.SETTING_DRIFT

    after, progress = bios.apply_bios(target, settings, check=False)
    assert progress[0].status == tpb.TASK_CHANGED
    assert {r.setting: r.status for r in after}["bios:turbo"] == tpb.SETTING_OK
    again = {r.setting: r.status for r in bios.verify_bios(target, settings)}
    assert again == {
        "bios:turbo": tpb.SETTING_OK,
        "bios:c_states": tpb.SETTING_UNKNOWN,
        "bios:attr:QuietBoot": tpb.SETTING_OK,
    }
    _, noop = bios.apply_bios(target, settings, check=False)
    assert noop[0].status == tpb.TASK_OK
    assert PASSWORD not in caplog.text and PASSWORD not in repr(target)


def test_wrong_password_is_an_error_without_the_password(emulator: str) -> None:
    wrong = "not-the-" + PASSWORD
    with pytest.raises(bios.BiosError) as info:
        bios.verify_bios(bios.BmcTarget(emulator, USER, wrong), _settings(turbo="enabled"))
    assert wrong not in str(info.value) and emulator in str(info.value)


def test_cli_verify_with_bmc(
    emulator: str, tmp_path: Path, machine_root: object, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "bmc-password"
    secret.write_text(PASSWORD + "\n")
    root = machine_root("rtx-pro-6000")  # type: ignore[operator]
    code = main(
        [
            "tune",
            "verify",
            "--root",
            str(root),
            "--bmc",
            emulator,
            "--bmc-user",
            USER,
            "--bmc-password-file",
            str(secret),
            "--all",
        ]
    )
    out = capsys.readouterr()
    assert code == 3
    assert "bios:attr:QuietBoot" in out.out and "QuietBoot=true" in out.out
    assert PASSWORD not in out.out + out.err


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(ValueError):
        bios.BmcTarget("https://admin:pw@10.0.0.5", "admin", "pw")


def _registry(
    *names: str, values: tuple[str, ...] = ("Enabled", "Disabled")
) -> dict[str, bios.Attribute]:
    return {n: bios.Attribute(n, "Enumeration", list(values)) for n in names}


def test_supermicro_names_match_by_prefix() -> None:
    attrs = _registry(
        "IntelVirtualizationTechnology#0042",
        "SR-IOVSupport#01A3",
        values=("Enable", "Disable", "Enabled", "Disabled"),
    )
    attrs["QuietBoot#002E"] = bios.Attribute("QuietBoot#002E", "Boolean", [])
    settings = tpb.BiosSettings(intents=tpb.BiosIntents(virtualization="enabled", sriov="disabled"))
    settings.attributes["QuietBoot"] = "false"
    got = {d.setting: (d.attribute, d.value) for d in bios.resolve(settings, attrs)}
    assert got == {
        "bios:virtualization": ("IntelVirtualizationTechnology#0042", "Enabled"),
        "bios:sriov": ("SR-IOVSupport#01A3", "Disabled"),
        "bios:attr:QuietBoot": ("QuietBoot#002E", False),
    }


def test_values_come_from_the_registry() -> None:
    hpe = _registry("WorkloadProfile", values=("HighPerformanceCompute", "LowLatency"))
    hpe |= _registry("MinProcIdlePower", values=("NoCStates", "C6"))
    settings = tpb.BiosSettings(
        intents=tpb.BiosIntents(performance_profile="maximum", c_states="disabled")
    )
    got = {d.setting: d.shown for d in bios.resolve(settings, hpe)}
    assert got == {
        "bios:performance_profile": "WorkloadProfile=HighPerformanceCompute",
        "bios:c_states": "MinProcIdlePower=NoCStates",
    }


def test_pending_is_not_drift() -> None:
    desired = [bios.Desired("bios:turbo", "ProcTurboMode", "Disabled", "ProcTurboMode=Disabled")]
    current = {"ProcTurboMode": "Enabled"}
    pending = bios._compare(desired, current, {"ProcTurboMode": "Disabled"})[0]
    assert pending.status == tpb.SETTING_PENDING and pending.reboot_needed
    assert bios._compare(desired, current, {})[0].status == tpb.SETTING_DRIFT
    assert bios._compare(desired, {"ProcTurboMode": "Disabled"}, {})[0].status == tpb.SETTING_OK
