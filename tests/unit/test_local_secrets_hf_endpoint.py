"""hfToken through the local target, without a VM or a download: `llmdeploy local up` makes the host-side
model server the stack's hfEndpoint, and a look-alike host gets no token. The downloads run for real in
tests/integration/test_local_secrets.py."""
import pytest

from llmdeploy.local.localconfig import local_config
from llmdeploy.render import STEPS_DIR, render
from support.project import ROOT, SSH_KEY

TOKEN = "hf_LocalGate0123456789abcdefgh"


@pytest.mark.parametrize("hf_endpoint,sends", [("http://10.0.2.2:4321", True), ("", False)])
def test_local_up_makes_the_model_server_the_stacks_hf_endpoint(monkeypatch: pytest.MonkeyPatch, hf_endpoint: str,
                                                                sends: bool) -> None:
    monkeypatch.setenv("LLMDEPLOY_HF_TOKEN", TOKEN)  # how `local up` gets a secret: the environment
    cfg = local_config(ROOT, "local", ssh_public_key=SSH_KEY, model_url="http://10.0.2.2:4321/tiny-llama.gguf",
                       extra_ca_certs=[], hf_endpoint=hf_endpoint)
    assert cfg.hf_token.reveal() == TOKEN
    rendered = render(cfg)
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    line = 'download http://10.0.2.2:4321/tiny-llama.gguf "$model_file" /etc/llmdeploy/secrets/hf.env'
    assert (line in step) == sends
    assert ("\nwait_for_hf_token\n" in step) == sends
    assert TOKEN not in rendered.user_data


def test_a_look_alike_host_does_not_get_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDEPLOY_HF_TOKEN", TOKEN)
    cfg = local_config(ROOT, "local", ssh_public_key=SSH_KEY, extra_ca_certs=[],
                       model_url="https://huggingface.co.example.net/org/repo/resolve/main/m.gguf")
    assert "hf.env" not in render(cfg).file(f"{STEPS_DIR}/40-engine.sh").content
