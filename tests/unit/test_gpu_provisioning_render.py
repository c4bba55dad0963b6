"""The GPU parts of provisioning on the rendered text: step order, the CUDA check before vLLM's container, a
named cause instead of an hour's wait, and no systemd reload once the GPU container runs. The steps run for
real in tests/integration/test_gpu_provisioning.py."""
import re

import pytest

from llmdeploy.render import FILES_DIR, STEPS_DIR, Rendered
from support.gpu_stack import LIBEXEC, rendered
from support.project import EXAMPLE_STACKS, example_stack


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_gpu_stacks_install_the_driver_before_docker_and_the_engine(stack: str) -> None:
    cfg, rendered_stack = example_stack(stack)
    steps = list(rendered_stack.steps)
    if not cfg.gpu:
        assert "25-nvidia" not in steps
        return
    assert steps.index("25-nvidia") < steps.index("40-engine")
    assert "30-docker" not in steps or steps.index("25-nvidia") < steps.index("30-docker")


def test_the_vllm_unit_runs_the_cuda_check_before_the_container() -> None:
    unit = rendered(engine="vllm", tlsMode="self-signed").file(f"{FILES_DIR}/vllm.service").content
    pre = unit.index(f"ExecStartPre={LIBEXEC}/vllm-cuda-check docker.io/vllm/vllm-openai:")
    assert pre < unit.index("ExecStart=/usr/bin/docker run")


def test_the_vllm_step_stops_on_a_named_cause_instead_of_waiting_an_hour() -> None:
    step = rendered(engine="vllm", tlsMode="self-signed").file(f"{STEPS_DIR}/40-engine.sh").content
    assert f'journalctl -u vllm --no-pager --since "$since" 2>/dev/null | {LIBEXEC}/vllm-log-cause' in step
    assert step.index("since=$(date") < step.index("ensure_service vllm")


def steps_of(r: Rendered) -> list[tuple[str, str]]:
    return [(s, r.file(f"{STEPS_DIR}/{s}.sh").content) for s in r.steps]


@pytest.mark.parametrize("overrides", [
    {"engine": "vllm", "tlsMode": "letsencrypt", "domain": "llm.example.org"},
    {"engine": "vllm", "tlsMode": "self-signed", "shape": "BM.GPU.A100-v2.8", "vllmModel": "Qwen/Qwen2.5-72B-Instruct"},
])
def test_nothing_reloads_systemd_after_the_gpu_container_starts(overrides: dict[str, object]) -> None:
    r = rendered(**overrides)
    steps = steps_of(r)
    names = [name for name, _ in steps]
    engine = names.index("40-engine")
    engine_text = steps[engine][1]
    start = engine_text.index("ensure_service vllm")
    installed_before = set()
    for _, text in steps[:engine]:
        installed_before |= set(" ".join(re.findall(r"^\s*apt_install (.+)$", text, re.M)).split())
    installed_before |= set(" ".join(re.findall(r"^\s*apt_install (.+)$", engine_text[:start], re.M)).split())
    for name, text in steps[engine + 1:]:
        assert "systemctl daemon-reload" not in text and "ensure_service" not in text, name
        for line in re.findall(r"^\s*apt_install (.+)$", text, re.M):
            assert set(line.split()) <= installed_before, (name, line)  # no postinst runs after the start
    for name, text in steps:  # every step runs again on a re-run, with the container up
        for enable in re.findall(r"systemctl enable[^\n]*", text):
            assert "--no-reload" in enable, (name, enable)
    # The engine's own reload is ensure_service's, only when the unit changed (tests/integration/test_lib_sh.py runs it).
    assert "systemctl daemon-reload" not in engine_text and "install_file" not in engine_text[:start]
    docker = dict(steps)["30-docker"]
    assert "nvidia-ctk system create-dev-char-symlinks --create-all" in docker
    assert "71-nvidia-dev-char.rules" in docker
