"""Xinference: the rendered model script (register, launch, autostart) run for real against a stand-in that
answers as Xinference 4.1 does (tests/support/xinference_stub.py), and what the step installs.

Each check of the script matches by exact name or uid, so a re-run sends no second POST; a custom model named
apart from modelName is registered once; a custom name taken by a built-in model fails clearly; a launch that
cannot end before pulumi up's readiness gate fails naming readinessTimeoutMinutes.
"""
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from llmdeploy.config import StackConfig
from llmdeploy.render import FILES_DIR, Rendered, render
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


def run_script(work: Path, rendered: Rendered, api: str, uptime: float = 100.0,
               readiness: int = 60) -> subprocess.CompletedProcess[str]:
    """Run the rendered script as the 40-engine step does, with the rendered bodies."""
    return run_models_script(rendered, api, work, readiness_minutes=readiness, uptime=uptime)


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


def test_a_launch_that_outlives_the_readiness_gate_fails_naming_it(tmp_path: Path) -> None:
    # readinessTimeoutMinutes 5 = 300 s; 30 s kept for the later stages; booted 266 s ago: 4 s left.
    with xinference_stub(launch_seconds=20) as stub:
        started = time.monotonic()
        result = run_script(tmp_path, render(xinference_config(readinessTimeoutMinutes=5)), stub.url,
                            uptime=266, readiness=5)
        took = time.monotonic() - started
    assert result.returncode == 1 and took < 15
    assert "readinessTimeoutMinutes = 5" in result.stderr
    assert "pulumi config set readinessTimeoutMinutes 10" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_time_left_fails_before_launching(tmp_path: Path) -> None:
    with xinference_stub() as stub:
        result = run_script(tmp_path, render(xinference_config(readinessTimeoutMinutes=5)), stub.url,
                            uptime=290, readiness=5)
        assert stub.posts("/v1/models") == 0
    assert result.returncode == 1 and "readinessTimeoutMinutes = 5" in result.stderr


def test_an_engine_that_demands_auth_is_named(tmp_path: Path) -> None:
    from support.openai_stub import openai_stub
    with openai_stub(api_key="engine-key") as stub:
        result = run_script(tmp_path, render(xinference_config()), stub.url)
    assert result.returncode == 1 and "XINFERENCE_AUTH_ADVANCED" in result.stderr
