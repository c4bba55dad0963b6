"""`llmdeploy local up` serves this machine's CPU torch wheels to the guest as a PEP 503 simple index (the model
server's /simple/, localconfig.torch_wheel_dirs), and sets the stack's torchIndexUrl to it: the guest cannot reach
download.pytorch.org here, and pip would retry it for every package. Checked with real pip: it resolves a wheel
from the index over plain HTTP with --trusted-host, and the rendered vLLM and Xinference steps pass that flag for
an http torchIndexUrl only.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from llmdeploy.config import StackConfig
from llmdeploy.local import checks, procs
from llmdeploy.local.hostsrv import ModelServer, start_model_server
from llmdeploy.local.localconfig import LocalConfigError, local_config, torch_wheel_dirs
from llmdeploy.local.state import new_state
from llmdeploy.render import STEPS_DIR, HostLayout, render
from support.project import ROOT

pytestmark = pytest.mark.integration
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm local@llmdeploy"


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel (no code) that pip installs."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        whl.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}/RECORD", "")
    return path


def engine_step(cfg: StackConfig) -> str:
    return render(cfg, HostLayout()).file(f"{STEPS_DIR}/40-engine.sh").content


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ModelServer]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "torch", "2.13.0+cpu")
    folder = tmp_path / "model"
    folder.mkdir()
    server = start_model_server(folder, tmp_path / "srv.log", token="hf_secret_x", wheel_dirs=(wheels,))
    try:
        yield server
    finally:
        procs.stop_process(server.pid, str(folder))


def test_pip_installs_torch_from_the_served_index_over_http(index: ModelServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{index.port}/simple"
    page = requests.get(f"{url}/torch/", timeout=10)
    assert page.status_code == 200 and "torch-2.13.0+cpu-py3-none-any.whl#sha256=" in page.text
    # An unknown project is a 404, which pip reads as "not here" and moves on to its other indexes.
    assert requests.get(f"{url}/numpy/", timeout=10).status_code == 404
    target = tmp_path / "target"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "-q", "--no-deps",
                           "--index-url", url, "--trusted-host", "127.0.0.1", "--target", str(target),
                           "torch==2.13.0+cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (target / "torch-2.13.0+cpu.dist-info").is_dir()


def test_local_up_sets_torch_index_url_and_the_steps_trust_its_http_host() -> None:
    for stack in ("local-vllm", "local-xinference"):
        cfg = local_config(ROOT, stack, ssh_public_key=SSH_KEY, model_url="http://10.213.0.1:4000/llmdeploy",
                           extra_ca_certs=[], torch_index_url="http://10.213.0.1:4000/simple")
        assert cfg.sources.torch_index_url == "http://10.213.0.1:4000/simple"
        script = engine_step(cfg)
        assert "--extra-index-url http://10.213.0.1:4000/simple" in script
        assert "--trusted-host 10.213.0.1" in script
        assert "download.pytorch.org" not in script
        # The PyPI index stays the one for everything else.
        assert "--index-url https://pypi.org/simple" in script


def test_an_https_torch_index_gets_no_trusted_host() -> None:
    cfg = local_config(ROOT, "local-vllm", ssh_public_key=SSH_KEY, model_url="http://10.213.0.1:4000/llmdeploy",
                       extra_ca_certs=[])
    assert "--trusted-host" not in engine_step(cfg)


def test_the_wheel_folders_come_from_pip_find_links_or_the_option(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = local_config(ROOT, "local-vllm", ssh_public_key=SSH_KEY, model_url="http://10.213.0.1:4000/llmdeploy",
                       extra_ca_certs=[])
    wheels = tmp_path / "w"
    wheels.mkdir()
    fake_wheel(wheels, "torch", "2.13.0+cpu")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{tmp_path / 'none'} file://{wheels}")
    assert wheels.resolve() in torch_wheel_dirs(cfg, [], stack_sets_index=False)
    assert torch_wheel_dirs(cfg, [], stack_sets_index=True) == []  # the stack's own mirror wins
    assert torch_wheel_dirs(cfg, [str(wheels)], stack_sets_index=False) == [wheels.resolve()]
    with pytest.raises(LocalConfigError, match=r"--torch-wheels .*no torch wheel"):
        torch_wheel_dirs(cfg, [str(tmp_path / "none")], stack_sets_index=False)
    llama = local_config(ROOT, "local", ssh_public_key=SSH_KEY, model_url="http://10.0.2.2:1/tiny-llama.gguf",
                         extra_ca_certs=[])
    assert torch_wheel_dirs(llama, [], stack_sets_index=False) == []  # llama.cpp needs no torch


@pytest.mark.parametrize(("engine", "kind"), [("xinference", "xinference"), ("vllm", "openai"),
                                              ("llamacpp", "openai")])
def test_local_smoke_speaks_the_engines_dialect(engine: str, kind: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`llmdeploy local up`'s smoke test of an Xinference stack is `llmdeploy smoke --kind xinference` (CRLF stream
    lines, completion streams without [DONE]); the others speak plain OpenAI."""
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path))
    state = new_state("s")
    state.engine, state.endpoint, state.model_name = engine, "https://llm.test:1", "m"
    state.ports = {"22": 2, "80": 3, "443": 4}
    assert checks.target(state, checks.credentials(state)).kind == kind


def test_open_webui_gets_the_torch_index_on_a_llama_cpp_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp needs no torch, Open WebUI does (chatUi open-webui): local-chat gets the index, local does not."""
    wheels = tmp_path / "w"
    wheels.mkdir()
    fake_wheel(wheels, "torch", "2.13.0+cpu")
    monkeypatch.setenv("PIP_FIND_LINKS", f"file://{wheels}")
    configs = {stack: local_config(ROOT, stack, ssh_public_key=SSH_KEY, model_url="http://10.213.0.1:4000/m.gguf",
                                   extra_ca_certs=[]) for stack in ("local-chat", "local")}
    assert wheels.resolve() in torch_wheel_dirs(configs["local-chat"], [], stack_sets_index=False)
    assert torch_wheel_dirs(configs["local"], [], stack_sets_index=False) == []
