"""Xinference: the rendered model script (register, launch, autostart) run for real against a stand-in that
answers as Xinference 4.1 does (tests/support/xinference_stub.py), and what the step installs.

Each check of the script matches by exact name or uid, so a re-run sends no second POST; a custom model named
apart from modelName is registered once; a custom name taken by a built-in model fails clearly; a launch that
cannot end before pulumi up's readiness gate fails naming readinessTimeoutMinutes.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.config import ConfigError, StackConfig
from llmdeploy.render import FILES_DIR, STEPS_DIR, XINFERENCE_MODELS, Rendered, render
from llmdeploy.stackfile import load_stack_config
from support.endpoint import endpoint_config
from support.xinference_script import run_models_script
from support.xinference_stub import XinferenceStub, wait_for, xinference_stub

ROOT = Path(__file__).resolve().parents[1]
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


def test_the_launch_timeout_comes_from_the_readiness_gate() -> None:
    rendered = render(xinference_config(readinessTimeoutMinutes=45))
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    assert "--max-time" not in step and "--readiness-minutes 45" in step
    namespace: dict[str, Any] = {}
    exec(compile(rendered.file(XINFERENCE_MODELS).content, "xinference-models.py", "exec"), namespace)
    budget = namespace["launch_budget"]
    assert budget(45, 90) == 45 * 60 - 270 - 90  # a tenth of the gate for the later stages, from boot
    assert budget(60, 100) == 3600 - 300 - 100  # at most 5 minutes of it
    assert budget(60, 86400) == 3300  # a re-run long after the gate: the whole budget


# ---- what the step installs -------------------------------------------------------------------

@pytest.mark.parametrize("engine,extra", [("vllm", "vllm"), ("llama.cpp", "llama-cpp"),
                                          ("transformers", "transformers"), ("vLLM", "vllm")])
def test_only_the_backends_extra_is_installed_with_pins(engine: str, extra: str) -> None:
    rendered = render(xinference_config(xinferenceModelEngine=engine))
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    requirement = rendered.file(f"{FILES_DIR}/xinference-requirements.txt").content
    constraints = rendered.file(f"{FILES_DIR}/xinference-constraints.txt").content.splitlines()
    assert requirement == f"xinference[{extra}]==4.1.0\n"
    assert "xinference[all]==" not in step
    assert '-c "$LLMDEPLOY_FILES/xinference-constraints.txt"' in step
    assert {"xinference==4.1.0", "vllm==0.19.1", "torch==2.10.0", "xllamacpp==2026.10.11549"} <= set(constraints)
    assert ("apt_install gcc libc6-dev" in step) == (extra == "vllm")  # Triton compiles at run time
    body = json.loads(rendered.file(f"{FILES_DIR}/xinference-launch.json").content)
    assert body["model_engine"] == engine.lower()


def test_the_unit_turns_per_model_virtualenvs_off_and_names_the_mirror() -> None:
    rendered = render(xinference_config(pipIndexUrl="https://mirror.internal/pypi/simple"))
    unit = rendered.file(f"{FILES_DIR}/xinference.service").content
    assert "Environment=XINFERENCE_ENABLE_VIRTUAL_ENV=0\n" in unit
    assert "Environment=PIP_INDEX_URL=https://mirror.internal/pypi/simple\n" in unit


def test_the_example_stack_keeps_its_defaults() -> None:
    rendered = render(load_stack_config(ROOT, "xinference-a10"))
    assert rendered.file(f"{FILES_DIR}/xinference-requirements.txt").content == "xinference[vllm]==4.1.0\n"
    autostart = json.loads(rendered.file(f"{FILES_DIR}/xinference-autostart.json").content)
    assert autostart["launch"] == json.loads(rendered.file(f"{FILES_DIR}/xinference-launch.json").content)
    assert "proxy_pass http://127.0.0.1:9997/v1/models/qwen2.5-instruct;" in rendered.nginx_site


@pytest.mark.parametrize("overrides,key,accepted", [
    ({"xinferenceModelEngine": "sglang"}, "xinferenceModelEngine", "one of vllm, transformers, llama.cpp"),
    ({"xinferenceConstraints": "vllm,torch==2.10.0"}, "xinferenceConstraints", "comma-separated pins NAME==VERSION"),
    ({"modelName": "org/model"}, "modelName", "an Xinference model uid: at most 100 characters, no /"),
    ({"modelName": "chat-rep1"}, "modelName", "not ending in -rep<number>"),
])
def test_bad_xinference_settings_are_named(overrides: dict[str, str], key: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as err:
        xinference_config(**overrides)
    line = next(line for line in str(err.value).splitlines() if line.strip().startswith(f"- {key}:"))
    assert accepted in line and "pulumi config set" in line
