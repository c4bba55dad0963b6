"""The model server of `llmdeploy local up` as a Hugging Face Hub stand-in
(llmdeploy.local.modelserver.HubHandler), and the local stacks that use it (localconfig.model_source / local_config).

The stand-in is checked with the real client: huggingface_hub from the vLLM virtualenv that scripts/setup.sh
installs (vLLM and Xinference download through it), run in a subprocess: snapshot_download, hf_hub_download,
list_repo_files, file_exists, get_safetensors_metadata and HfFileSystem.ls, the calls vLLM 0.32 and Xinference 4.1
make. Without the token it raises GatedRepoError, as the Hub does for a gated model; with a wrong one, 401.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from llmdeploy.local import localconfig
from llmdeploy.local.hostsrv import GUEST_HOST_IP, ModelServer
from llmdeploy.local.localconfig import TINY_GGUF_REPO, TINY_HF_REPO, local_config, model_source
from llmdeploy.stack_yaml import load_stack_config
from support.engines import VLLM_VENV, hub_server, hub_url, missing_engine, tiny_hub
from support.project import ROOT

pytestmark = pytest.mark.integration
TOKEN = "hf_test_token_0123456789"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm local@llmdeploy"

CLIENT = r"""
import json, os, sys
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError
repo, token = sys.argv[1], os.environ["STANDIN_HUB_TOKEN"]  # not argv: a token never goes on a command line
out = {}
for name, tok in (("none", False), ("wrong", "hf_wrong")):
    try:
        snapshot_download(repo, token=tok)
        out[name] = "downloaded"
    except GatedRepoError:
        out[name] = "GatedRepoError"
    except HfHubHTTPError as err:
        out[name] = f"HTTP {err.response.status_code}"
folder = snapshot_download(repo, token=token)
out["files"] = sorted(os.listdir(folder))
try:
    hf_hub_download(repo, "tokenizer.model", token=token)
except EntryNotFoundError:
    out["missing"] = "EntryNotFoundError"
api = HfApi(token=token)
out["listed"] = api.list_repo_files(repo)
out["exists"] = [api.file_exists(repo, "config.json"), api.file_exists(repo, "nope.json")]
out["parameters"] = api.get_safetensors_metadata(repo).parameter_count
out["ls"] = HfFileSystem(token=token).ls(repo, detail=False)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with hub_server(tiny_hub(tmp_path_factory.mktemp("hub") / "repos"), TOKEN) as server:
        yield server


def test_huggingface_hub_downloads_the_tiny_llama_with_the_token_only(hub: ModelServer, tmp_path: Path) -> None:
    if why := missing_engine(VLLM_VENV, "vLLM (its huggingface_hub)"):
        pytest.skip(why)
    env = {"HF_ENDPOINT": hub_url(hub), "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin",
           "HF_HUB_DISABLE_TELEMETRY": "1", "STANDIN_HUB_TOKEN": TOKEN}
    result = subprocess.run([str(VLLM_VENV / "bin" / "python"), "-c", CLIENT, TINY_HF_REPO], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["none"] == "GatedRepoError" and out["wrong"] == "HTTP 401"
    files = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
             "tokenizer.json", "tokenizer_config.json"]
    assert out["files"] == files and out["listed"] == files
    assert out["missing"] == "EntryNotFoundError" and out["exists"] == [True, False]
    assert out["parameters"] == {"F32": 149440}
    assert out["ls"] == [f"{TINY_HF_REPO}/{f}" for f in files]
    log = (hub.folder.parent / "hub.log").read_text()
    assert TOKEN not in log and "hf_wrong" not in log  # the log has no headers


def test_resolve_answers_as_the_hub_does(hub: ModelServer) -> None:
    session = requests.Session()
    session.trust_env = False
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{hub_url(hub)}/{TINY_GGUF_REPO}/resolve/main/tiny-llama.gguf"
    head = session.head(url, headers=auth, timeout=5)
    size = (hub.folder / TINY_GGUF_REPO / "tiny-llama.gguf").stat().st_size
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
    commit = head.headers["X-Repo-Commit"]
    assert session.head(url.replace("/main/", f"/{commit}/"), headers=auth, timeout=5).status_code == 200
    part = session.get(url, headers={**auth, "Range": "bytes=0-3"}, timeout=5)
    assert part.status_code == 206 and part.content == b"GGUF"
    unknown = session.head(url.replace("/main/", "/v9/"), headers=auth, timeout=5)
    assert unknown.status_code == 404 and unknown.headers["X-Error-Code"] == "RevisionNotFound"
    assert session.head(f"{hub_url(hub)}/nobody/nothing/resolve/main/x", headers=auth,
                        timeout=5).headers["X-Error-Code"] == "RepoNotFound"
    assert session.get(f"{hub_url(hub)}/../hub.log", timeout=5).status_code == 404


@pytest.mark.parametrize("stack,repo", [("local-vllm", TINY_HF_REPO), ("local-xinference", TINY_GGUF_REPO)])
def test_the_local_stacks_get_the_hub_stand_in_as_their_hf_endpoint(stack: str, repo: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(tmp_path))
    cfg0 = load_stack_config(ROOT, stack)
    assert cfg0.sources.hf_endpoint == f"http://{GUEST_HOST_IP}" and not cfg0.gpu
    source = model_source(cfg0, None)
    # What `llmdeploy local up` serves: the owner's folder, holding the tiny repository written on first use.
    assert (source.filename, source.serve) == ("llmdeploy", localconfig.hub_dir() / "llmdeploy")
    assert source.serve is not None and (source.serve / repo.split("/")[1]).is_dir()
    model_url = f"http://{GUEST_HOST_IP}:41234/{source.filename}"  # ModelServer.guest_url(filename)
    cfg = local_config(ROOT, stack, ssh_public_key=SSH_KEY, model_url=model_url, extra_ca_certs=[])
    assert cfg.sources.hf_endpoint == f"http://{GUEST_HOST_IP}:41234"
    assert cfg.engine == stack.removeprefix("local-")


def test_a_hub_repository_this_machine_lacks_is_named_with_the_fix(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(tmp_path))
    cfg = load_stack_config(ROOT, "local-vllm")
    from dataclasses import replace

    from llmdeploy.config import VllmModel
    assert isinstance(cfg.model, VllmModel)
    other = replace(cfg, model=replace(cfg.model, hf_id="llmdeploy/other-model"))
    with pytest.raises(localconfig.LocalConfigError, match="llmdeploy/other-model is neither a tiny model"):
        model_source(other, None)
    with pytest.raises(localconfig.LocalConfigError, match="--model-file x.gguf: only for engine llamacpp"):
        model_source(cfg, "x.gguf")
