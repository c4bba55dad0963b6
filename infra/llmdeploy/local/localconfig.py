"""The stack's config as the local VM gets it: the stack file's values, plus what only `llmdeploy local up`
knows (the model URL on 10.0.2.2, its own SSH key, this machine's extra CA certificates, the local
pebble's ACME directory, and the model server as hfEndpoint when it checks the stack's hfToken), validated
by the same config.parse as every other target."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import LlamacppModel, StackConfig, parse
from ..declared import declarations
from ..stackfile import read_stack
from . import paths
from .hostsrv import GUEST_HOST_IP

TINY_MODEL = "tiny-llama.gguf"  # written by llmdeploy itself (tinymodel.py): < 1 MB, random weights
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.S)


class LocalConfigError(ValueError):
    """Bad input for the local VM; the message says the fix."""


@dataclass(frozen=True)
class ModelSource:
    filename: str
    serve: Path | None  # a file this machine serves to the guest; None: the guest downloads the URL itself
    url: str  # the stack's URL (rewritten once the server's port is known)


def models_dir() -> Path:
    return paths.cache_root() / "models"


def model_source(cfg: StackConfig, model_file: str | None) -> ModelSource:
    """Which GGUF the guest gets and from where. A URL on 10.0.2.2 (this machine, as the guest sees it) names
    a file served from here: the tiny model, or one in the models cache; --model-file serves any file."""
    if not isinstance(cfg.model, LlamacppModel):
        raise LocalConfigError(f"engine: got '{cfg.engine}'; the local target runs llamacpp")
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
        path = models_dir() / TINY_MODEL
        if not path.is_file():
            from .tinymodel import write_tiny_gguf  # needs the gguf package; imported only when used
            tmp = path.with_name(path.name + ".part")
            write_tiny_gguf(tmp)
            tmp.replace(path)
        return ModelSource(name, path, url)
    path = models_dir() / name
    if path.is_file():
        return ModelSource(name, path, url)
    raise LocalConfigError(f"llamacppModelUrl: got '{url}', a file this machine serves to the VM, but {name} is "
                           f"neither the tiny model ({TINY_MODEL}) nor in {models_dir()}; pass --model-file "
                           f"PATH/{name}, or copy it there")


def host_ca_certs(folder: Path = HOST_CA_DIR) -> list[str]:
    """The CA certificates added to this machine's store (update-ca-certificates' local folder): a
    TLS-inspecting proxy or an internal CA that the guest needs too, for pip and apt over HTTPS."""
    found: list[str] = []
    for path in sorted(folder.rglob("*.crt")) if folder.is_dir() else []:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [m.strip() for m in _PEM_RE.findall(text)]
    return list(dict.fromkeys(found))


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = json.loads(value)
    return [str(v) for v in value]


def local_config(root: Path, stack: str, *, ssh_public_key: str, model_url: str, extra_ca_certs: list[str],
                 acme_directory_url: str = "", hf_endpoint: str = "") -> StackConfig:
    raw = dict(read_stack(root, stack))
    raw["sshPublicKeys"] = _as_list(raw.get("sshPublicKeys")) + [ssh_public_key]
    raw["extraCaCerts"] = list(dict.fromkeys(_as_list(raw.get("extraCaCerts")) + extra_ca_certs))
    raw["llamacppModelUrl"] = model_url
    if acme_directory_url:
        raw["acmeDirectoryUrl"] = acme_directory_url
    if hf_endpoint:
        raw["hfEndpoint"] = hf_endpoint
    return parse(raw, stack=stack, decls=declarations(root))
