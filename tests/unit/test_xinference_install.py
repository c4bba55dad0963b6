"""What the Xinference step installs and how it is configured (pins, the backend's extra, the launch timeout,
bad settings named). The models script against the stand-in server is tests/integration/test_xinference.py."""
import json
from typing import Any

import pytest

from llmdeploy.config import ConfigError, StackConfig
from llmdeploy.render import FILES_DIR, STEPS_DIR, XINFERENCE_MODELS, render
from llmdeploy.stack_yaml import load_stack_config
from llmdeploy.vmpaths import GATE_DEADLINE, WAIT_READY
from support.endpoint import endpoint_config
from support.project import ROOT


def xinference_config(**overrides: object) -> StackConfig:
    return endpoint_config(**{"engine": "xinference", "shape": "VM.GPU.A10.1", "modelName": "qwen-chat", **overrides})


def models_script(rendered: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(rendered.file(XINFERENCE_MODELS).content, "xinference-models.py", "exec"), namespace)
    return namespace


def test_the_launch_timeout_comes_from_the_readiness_gate() -> None:
    rendered = render(xinference_config(readinessTimeoutMinutes=45))
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    assert "--max-time" not in step and "--readiness-minutes 45" in step
    budget = models_script(rendered)["launch_budget"]
    now = 1_000_000
    assert budget(45, now, None) == 45 * 60 - 270  # no gate waiting: the whole, less a tenth for the later stages
    assert budget(60, now, None) == 3600 - 300  # at most 5 minutes of it
    assert budget(60, now, (now + 3000, 1)) == 2700  # the waiting gate's deadline, less the later stages' share
    assert budget(60, now, (now - 1, 1)) == 3300  # a gate past its deadline waits for nothing


@pytest.mark.parametrize("minutes", [5, 30, 60, 240])
def test_the_budget_is_sane_at_every_second_around_the_boundary(minutes: int) -> None:
    """Every second of a waiting gate's window and past it: never 0 or less, never past the gate's deadline, never
    more than the whole. (The old rule, gate - reserve - uptime, gave 0 or less in the window's last tenth.)"""
    budget = models_script(render(xinference_config(readinessTimeoutMinutes=minutes)))["launch_budget"]
    whole, now = minutes * 60, 1_000_000
    for left in range(-5, whole + 5):
        b = budget(minutes, now, (now + left, 1))
        assert 0 < b <= whole, (left, b)
        if left > 0:
            assert b <= left, (left, b)


def test_the_script_reads_no_uptime_and_the_gate_writes_its_deadline() -> None:
    rendered = render(xinference_config())
    assert "uptime" not in rendered.file(XINFERENCE_MODELS).content
    wait_ready = rendered.file(WAIT_READY).content
    assert GATE_DEADLINE in wait_ready and GATE_DEADLINE in rendered.file(XINFERENCE_MODELS).content


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
