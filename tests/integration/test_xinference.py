"""Xinference: the rendered model script (register, launch, autostart) run for real against a stand-in that
answers as Xinference 4.1 does (tests/support/xinference_stub.py), and what the step installs.

Each check of the script matches by exact name or uid, so a re-run sends no second POST; a custom model named
apart from modelName is registered once; a custom name taken by a built-in model fails clearly; a launch that
cannot end before pulumi up's readiness gate fails naming readinessTimeoutMinutes.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.config import StackConfig
from llmdeploy.render import FILES_DIR, XINFERENCE_MODELS, Rendered, render
from support.endpoint import endpoint_config
from support.xinference_script import run_models_script
from support.xinference_stub import XinferenceStub, wait_for, xinference_stub

CUSTOM = {"version": 2, "context_length": 32768, "model_name": "my-qwen", "model_lang": ["en"],
          "model_ability": ["generate", "chat"], "model_family": "qwen2.5-instruct",
          "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 7, "quantization": "none",
                           "model_id": "Qwen/Qwen2.5-7B-Instruct"}]}


def xinference_config(**overrides: object) -> StackConfig:
    return endpoint_config(**{"engine": "xinference", "shape": "VM.GPU.A10.1", "modelName": "qwen-chat", **overrides})


def with_custom(name: str, uid: str) -> StackConfig:
    return xinference_config(modelName=uid, xinferenceModelName=name,
                             xinferenceCustomModel=json.dumps({**CUSTOM, "model_name": name}))


def run_script(work: Path, rendered: Rendered, api: str, gate: tuple[int, int] | None = None,
               readiness: int = 60) -> subprocess.CompletedProcess[str]:
    """Run the rendered script as the 40-engine step does, with the rendered bodies."""
    return run_models_script(rendered, api, work, readiness_minutes=readiness, gate=gate)


def autostart_entries(stub: XinferenceStub) -> list[dict[str, Any]]:
    import requests
    return requests.Session().get(f"{stub.url}/v1/autostart/models", timeout=5).json()["models"]


def test_launches_once_registers_autostart_and_a_rerun_posts_nothing(tmp_path: Path) -> None:
    rendered = render(xinference_config())
    with xinference_stub() as stub:
        first = run_script(tmp_path / "1", rendered, stub.url)
        assert first.returncode == 0, first.stderr
        again = run_script(tmp_path / "2", rendered, stub.url)
        assert again.returncode == 0, again.stderr
        assert stub.posts("/v1/models") == 1
        assert stub.posts("/v1/autostart/models") == 1
        entries = autostart_entries(stub)
    assert [e["launch"]["model_uid"] for e in entries] == ["qwen-chat"]
    assert entries[0]["launch"] == json.loads(rendered.file(f"{FILES_DIR}/xinference-launch.json").content)
    assert "is running" in again.stdout and "is in place" in again.stdout


def test_the_model_is_served_again_after_a_restart(tmp_path: Path) -> None:
    with xinference_stub(autostart_delay=0.3) as stub:
        assert run_script(tmp_path, render(xinference_config()), stub.url).returncode == 0
        stub.restart()
        assert "qwen-chat" not in stub.running
        assert wait_for(lambda: "qwen-chat" in stub.running, timeout=10)
    assert stub.launches == [("qwen-chat", "api"), ("qwen-chat", "autostart")]


def test_a_rerun_while_autostart_relaunches_waits_instead_of_launching_twice(tmp_path: Path) -> None:
    rendered = render(xinference_config())
    with xinference_stub(launch_seconds=1.5, autostart_delay=0.0) as stub:
        assert run_script(tmp_path / "1", rendered, stub.url).returncode == 0
        stub.restart()  # after a reboot, provisioning is re-run by hand while the autostart launches
        assert wait_for(lambda: "qwen-chat" in stub.launching, timeout=5)
        again = run_script(tmp_path / "2", rendered, stub.url)
    assert again.returncode == 0, again.stderr
    assert "launching already" in again.stdout
    assert stub.launches == [("qwen-chat", "api"), ("qwen-chat", "autostart")]


def test_custom_model_named_apart_from_model_name_is_registered_once(tmp_path: Path) -> None:
    rendered = render(with_custom("my-qwen", uid="chat"))
    with xinference_stub() as stub:
        for run in ("1", "2"):
            result = run_script(tmp_path / run, rendered, stub.url)
            assert result.returncode == 0, result.stderr
        assert stub.posts("/v1/model_registrations/LLM") == 1
        assert stub.posts("/v1/models") == 1
    assert set(stub.registrations) == {"my-qwen"}
    assert stub.running["chat"]["model_name"] == "my-qwen"


def test_custom_name_of_a_builtin_model_fails_clearly(tmp_path: Path) -> None:
    rendered = render(with_custom("qwen2.5-instruct", uid="chat"))
    with xinference_stub() as stub:
        result = run_script(tmp_path, rendered, stub.url)
        assert stub.posts("/v1/model_registrations/LLM") == 0 and stub.posts("/v1/models") == 0
    assert result.returncode == 1
    assert "xinferenceModelName 'qwen2.5-instruct' is the name of a built-in Xinference model" in result.stderr
    assert "pulumi config set xinferenceModelName my-qwen2.5-instruct" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_launch_that_outlives_the_waiting_gate_fails_naming_it(tmp_path: Path) -> None:
    # A gate (this test's own process, alive) gives up in 4 s: the launch gets those 4 s, not the whole budget.
    with xinference_stub(launch_seconds=20) as stub:
        started = time.monotonic()
        result = run_script(tmp_path, render(xinference_config(readinessTimeoutMinutes=5)), stub.url,
                            gate=(int(time.time()) + 4, os.getpid()), readiness=5)
        took = time.monotonic() - started
    assert result.returncode == 1 and took < 15
    assert "readinessTimeoutMinutes = 5" in result.stderr
    assert "pulumi config set readinessTimeoutMinutes 10" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("gate", ["deadline passed", "gate process gone", "no gate"])
def test_with_no_gate_waiting_the_launch_gets_the_whole_budget(tmp_path: Path, gate: str) -> None:
    """A gate that gave up, or whose llmdeploy-wait-ready died without removing its file, waits for nothing."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    files = {"deadline passed": (int(time.time()) - 5, os.getpid()), "gate process gone": (int(time.time()) + 3600,
             gone.pid), "no gate": None}
    with xinference_stub(launch_seconds=1) as stub:
        result = run_script(tmp_path, render(xinference_config(readinessTimeoutMinutes=5)), stub.url,
                            gate=files[gate], readiness=5)
    assert result.returncode == 0, result.stderr
    assert "launch budget 270 s (no gate waiting" in result.stdout


# Old rule: gate - reserve - uptime, so between 55 and 60 minutes after boot the budget was 0 or less, on a VM and
# on the machine running these tests. The script must not read the kernel's uptime at all.
@pytest.mark.parametrize("uptime", [3240, 3299, 3300, 3301, 3450, 3599, 3600, 3601, 90000])
def test_the_machines_uptime_does_not_change_the_budget(tmp_path: Path, uptime: int) -> None:
    rendered = render(xinference_config())
    work = tmp_path / "work"
    work.mkdir()
    script = work / "xinference-models.py"
    script.write_text(rendered.file(XINFERENCE_MODELS).content)
    (work / "uptime").write_text(f"{uptime}.00 {uptime * 2}.00\n")
    for name in ("launch", "autostart"):
        (work / f"{name}.json").write_text(rendered.file(f"{FILES_DIR}/xinference-{name}.json").content)
    with xinference_stub() as stub:
        # The script as the step runs it, with its default gate file and no override, in a private mount namespace
        # where /proc/uptime says `uptime` and /var/lib is an empty tmpfs (this machine's is never read or written).
        command = (f"mount --bind {work}/uptime /proc/uptime && mount -t tmpfs tmpfs /var/lib && "
                   f"exec {sys.executable} {script} --api {stub.url} --readiness-minutes 60 --poll 0.1 "
                   f"--launch {work}/launch.json --autostart {work}/autostart.json")
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", command],
                                capture_output=True, text=True, timeout=60)
        launched = stub.posts("/v1/models")
    assert result.returncode == 0, result.stderr
    assert launched == 1 and "launch budget 3300 s (no gate waiting" in result.stdout


def test_an_engine_that_demands_auth_is_named(tmp_path: Path) -> None:
    from support.openai_stub import openai_stub
    with openai_stub(api_key="engine-key") as stub:
        result = run_script(tmp_path, render(xinference_config()), stub.url)
    assert result.returncode == 1 and "XINFERENCE_AUTH_ADVANCED" in result.stderr
