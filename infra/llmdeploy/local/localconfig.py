"""The stack's config as the local VM gets it: the stack file's values, plus what only `llmdeploy local up`
knows (the model URL or Hugging Face endpoint on 10.0.2.2, its own SSH key, this machine's extra CA certificates,
the local pebble's ACME directory, and the model server as hfEndpoint when it checks the stack's hfToken),
validated by the same config.parse as every other target."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import LlamacppModel, StackConfig, parse
from ..declared import declarations
from ..engines import ENGINES
from ..errors import UsageError
from ..pem import certificates
from ..stack_yaml import read_stack
from . import paths
from .hostsrv import GUEST_HOST_IP

TINY_MODEL = "tiny-llama.gguf"  # written by llmdeploy itself (tinymodel.py): < 1 MB, random weights
# The same tiny models as Hugging Face repositories of the Hub stand-in (hostsrv.HubHandler), for vLLM and Xinference.
TINY_HF_REPO = "llmdeploy/tiny-llama"  # LlamaForCausalLM, safetensors and a tokenizer
TINY_GGUF_REPO = "llmdeploy/tiny-llama-gguf"  # holds TINY_MODEL
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


class LocalConfigError(UsageError):
    """Bad input for the local VM; the message says the fix."""


@dataclass(frozen=True)
class ModelSource:
    filename: str
    serve: Path | None  # a file this machine serves to the guest; None: the guest downloads the URL itself
    url: str  # the stack's URL (rewritten once the server's port is known)


def models_dir() -> Path:
    return paths.cache_root() / "models"


def hub_dir() -> Path:
    """The Hub stand-in's repositories, <org>/<name>/ (the tiny ones are written here on first use)."""
    return models_dir() / "hub"


def _tiny_gguf() -> Path:
    path = models_dir() / TINY_MODEL
    if not path.is_file():
        from .tinymodel import write_tiny_gguf  # needs the gguf package; imported only when used
        tmp = path.with_name(path.name + ".part")
        write_tiny_gguf(tmp)
        tmp.replace(path)
    return path


def _ensure_tiny_repo(repo_id: str) -> None:
    folder = hub_dir() / repo_id
    if folder.is_dir():
        return
    tmp = folder.with_name(folder.name + ".part")
    if repo_id == TINY_HF_REPO:
        from .tinymodel import write_tiny_hf_llama
        write_tiny_hf_llama(tmp)
    else:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / TINY_MODEL).write_bytes(_tiny_gguf().read_bytes())
    tmp.replace(folder)


def hub_repos(cfg: StackConfig) -> list[str]:
    """The Hugging Face repositories the stack's engine downloads: vLLM's model, or the model_id of each spec of
    Xinference's custom model."""
    return cfg.model.hub_repos()


def hub_source(cfg: StackConfig) -> ModelSource:
    """An hfEndpoint on 10.0.2.2 names this machine's Hub stand-in. It serves the folder of the repositories' owner
    (one, e.g. llmdeploy) from the Hub cache; the tiny repositories are written on first use."""
    repos = hub_repos(cfg)
    owners = sorted({r.split("/", 1)[0] for r in repos})
    if len(owners) != 1:
        raise LocalConfigError(f"hfEndpoint: got '{cfg.sources.hf_endpoint}', this machine's Hub stand-in, which "
                               "serves the repositories of one owner; the stack names "
                               f"{', '.join(repos) or 'no repository (vllmModel, or model_id in xinferenceCustomModel)'}")
    for repo in repos:
        if repo in (TINY_HF_REPO, TINY_GGUF_REPO):
            _ensure_tiny_repo(repo)
        elif not (hub_dir() / repo).is_dir():
            raise LocalConfigError(f"hfEndpoint: got '{cfg.sources.hf_endpoint}', this machine's Hub stand-in, but "
                                   f"{repo} is neither a tiny model ({TINY_HF_REPO}, {TINY_GGUF_REPO}) nor in "
                                   f"{hub_dir()}; copy the repository's files to {hub_dir() / repo}")
    return ModelSource(owners[0], hub_dir() / owners[0], cfg.sources.hf_endpoint)


def model_source(cfg: StackConfig, model_file: str | None) -> ModelSource:
    """Which model the guest gets and from where. A URL on 10.0.2.2 (this machine, as the guest sees it) names
    a file served from here: the tiny model, or one in the models cache; --model-file serves any file. For vLLM
    and Xinference, an hfEndpoint on 10.0.2.2 names this machine's Hugging Face Hub stand-in."""
    if not isinstance(cfg.model, LlamacppModel):
        if model_file:
            raise LocalConfigError(f"--model-file {model_file}: only for engine llamacpp; {cfg.engine} downloads "
                                   f"Hugging Face repositories: put one in {hub_dir()}/ORG/NAME")
        if urlsplit(cfg.sources.hf_endpoint).hostname == GUEST_HOST_IP:
            return hub_source(cfg)
        return ModelSource("", None, cfg.sources.hf_endpoint)
    if model_file:
        path = Path(model_file).expanduser().resolve()
        if not path.is_file():
            raise LocalConfigError(f"--model-file {model_file}: no such file")
        if not path.name.endswith(".gguf"):
            raise LocalConfigError(f"--model-file {model_file}: expected a .gguf file")
        return ModelSource(path.name, path, cfg.model.url)
    url = cfg.model.url
    if urlsplit(url).hostname != GUEST_HOST_IP:
        return ModelSource(cfg.model.filename, None, url)
    name = cfg.model.filename
    if name == TINY_MODEL:
        return ModelSource(name, _tiny_gguf(), url)
    path = models_dir() / name
    if path.is_file():
        return ModelSource(name, path, url)
    raise LocalConfigError(f"llamacppModelUrl: got '{url}', a file this machine serves to the VM, but {name} is "
                           f"neither the tiny model ({TINY_MODEL}) nor in {models_dir()}; pass --model-file "
                           f"PATH/{name}, or copy it there")


def pip_find_links() -> list[Path]:
    """The local folders in this machine's pip find-links (PIP_FIND_LINKS, or `pip config`'s find-links)."""
    values = [os.environ.get("PIP_FIND_LINKS", "")]
    try:
        listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            values.append(value.strip().strip("'\""))
    folders: list[Path] = []
    for entry in " ".join(values).split():
        entry = entry.removeprefix("file://")
        if "://" not in entry and Path(entry).is_dir():
            folders.append(Path(entry).resolve())
    return list(dict.fromkeys(folders))


def torch_wheel_dirs(cfg: StackConfig, explicit: list[str], stack_sets_index: bool) -> list[Path]:
    """The folders of CPU torch wheels this machine serves to the guest as its torchIndexUrl: --torch-wheels DIR,
    else the folders of pip's find-links that hold a torch wheel. None when nothing needs torch (llama.cpp without
    Open WebUI), or the stack names its own torchIndexUrl (a mirror)."""
    if explicit:
        folders = [Path(d).expanduser().resolve() for d in explicit]
        for folder in folders:
            if not any(folder.glob("torch-*.whl")):
                raise LocalConfigError(f"--torch-wheels {folder}: no torch wheel (torch-*.whl) in it; pass a folder "
                                       "holding PyTorch's CPU wheel (pip download --no-deps torch==X+cpu "
                                       "--index-url https://download.pytorch.org/whl/cpu -d DIR)")
        return folders
    needs_torch = cfg.served_by.pip_torch or (cfg.chat.frontend is not None and cfg.chat.frontend.pip_torch)
    if not needs_torch or cfg.gpu or stack_sets_index:
        return []
    return [d for d in pip_find_links() if any(d.glob("torch-*.whl"))]


def host_ca_certs(folder: Path = HOST_CA_DIR) -> list[str]:
    """The CA certificates added to this machine's store (update-ca-certificates' local folder): a
    TLS-inspecting proxy or an internal CA that the guest needs too, for pip and apt over HTTPS."""
    found: list[str] = []
    for path in sorted(folder.rglob("*.crt")) if folder.is_dir() else []:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [c.rstrip() for c in certificates(text)]
    return list(dict.fromkeys(found))


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = json.loads(value)
    return [str(v) for v in value]


def local_config(root: Path, stack: str, *, ssh_public_key: str, model_url: str, extra_ca_certs: list[str],
                 acme_directory_url: str = "", hf_endpoint: str = "", torch_index_url: str = "",
                 values: Mapping[str, Any] | None = None) -> StackConfig:
    """`values`: the stack's config values as `local up` read them once; None reads the stack file."""
    raw = dict(read_stack(root, stack) if values is None else values)
    raw["sshPublicKeys"] = _as_list(raw.get("sshPublicKeys")) + [ssh_public_key]
    raw["extraCaCerts"] = list(dict.fromkeys(_as_list(raw.get("extraCaCerts")) + extra_ca_certs))
    decls = declarations(root)
    engine = ENGINES.get(str(raw.get("engine") or decls["engine"].default))
    if engine is not None and engine.model_url_key:  # a model downloaded by URL: the host's own copy
        raw[engine.model_url_key] = model_url
    elif urlsplit(str(raw.get("hfEndpoint") or "")).hostname == GUEST_HOST_IP:
        # The model server is the Hub stand-in: hfEndpoint is its origin (model_url names the owner's folder).
        parts = urlsplit(model_url)
        raw["hfEndpoint"] = f"{parts.scheme}://{parts.netloc}"
    if acme_directory_url:
        raw["acmeDirectoryUrl"] = acme_directory_url
    if hf_endpoint:
        raw["hfEndpoint"] = hf_endpoint
    if torch_index_url:  # this machine's CPU torch wheels, served by the model server (hostsrv's /simple/)
        raw["torchIndexUrl"] = torch_index_url
    return parse(raw, stack=stack, decls=decls)
