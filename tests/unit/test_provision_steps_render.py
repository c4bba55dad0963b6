"""Which rendered engine steps wait for a delivered token before they download weights; the steps run for real
(in a private mount namespace) in tests/integration/test_provision_steps.py."""
import pytest

from llmdeploy.config import parse
from llmdeploy.render import STEPS_DIR, render
from llmdeploy.vmpaths import LIB_SH
from support.project import minimal_raw

HF_ENV = "/etc/llmdeploy/secrets/hf.env"
TOKEN = "hf_steps0123456789abcdefXYZ"


@pytest.mark.parametrize("engine_name,url", [("vllm", ""), ("xinference", ""),
                                             ("llamacpp", "https://huggingface.co/org/repo/resolve/main/m.gguf")])
def test_engine_steps_that_download_weights_wait_for_a_set_token(engine_name: str, url: str) -> None:
    extra = {"llamacppModelUrl": url} if url else {}
    with_token = render(parse(minimal_raw(engine=engine_name, hfToken=TOKEN, **extra)))
    without = render(parse(minimal_raw(engine=engine_name, **extra)))
    step = f"{STEPS_DIR}/40-engine.sh"
    assert "\nwait_for_hf_token\n" in with_token.file(step).content
    assert "wait_for_hf_token" not in without.file(step).content
    assert f"wait_for_hf_token() {{ wait_for_secret {HF_ENV} hfToken 3600; }}" in with_token.file(LIB_SH).content
    assert TOKEN not in with_token.user_data


@pytest.mark.parametrize("overrides", [
    {"engine": "vllm"}, {"engine": "vllm", "shape": "VM.Standard.E4.Flex", "os": "ubuntu-24.04"}, {"target": "ray"}])
def test_engine_waits_end_with_the_readiness_budget_not_an_hour(overrides: dict[str, object]) -> None:
    """readinessTimeoutMinutes 90: the engine step waits until the waiting gate's deadline (lib.sh's
    readiness_deadline, tests/integration/test_lib_sh.py runs it), else 90 minutes; no hard-coded hour."""
    rendered = render(parse(minimal_raw(readinessTimeoutMinutes=90, **overrides)))
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    assert "deadline=$(readiness_deadline)" in step and "3600" not in step
    assert "echo $(( now + 5400 ))" in rendered.file(LIB_SH).content
