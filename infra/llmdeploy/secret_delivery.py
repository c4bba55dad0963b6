"""Secrets that must never sit in user-data, packed for delivery after boot.

OCI keeps user-data in instance metadata, readable by anyone with read access to the instance, so
API keys, a provided TLS key, the Hugging Face token, Open WebUI's secret key and BioChatter Next's key travel instead over SSH, as a tar archive on
the standard input of /usr/local/sbin/llmdeploy-install-secrets (never on a command line). They are
delivered as soon as SSH logs in, while the steps run: a step that needs one (the engine's download
needs hfToken) waits for it.
"""
from __future__ import annotations

import io
import re
import secrets as _random
import tarfile
from dataclasses import dataclass
from typing import Mapping

from .config import Secret, StackConfig, Tls
from .frontends import NEXT_KEY_ENV

KEY_PREFIX = "sk-llm-"
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{24,128}")  # fullmatch: `$` lets a final newline through
# How long a delivery waits for each thing it hands over to appear on the VM (bundle.delivery_script): the
# receiver (cloud-init's write_files), then the unpacked bundle's secret installer.
INSTALLER_WAIT_S = 300


def generate_api_key() -> str:
    return KEY_PREFIX + _random.token_urlsafe(32)


def random_webui_secret_key() -> str:
    """Open WebUI's WEBUI_SECRET_KEY (it signs the frontend's session tokens): 256 random bits."""
    return _random.token_urlsafe(32)


def api_keys_map(keys: Mapping[str, str]) -> str:
    """nginx map entries: the full Authorization header of each key -> the key's name."""
    lines = []
    for name, key in keys.items():
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"API key '{name}' must be 24-128 characters of A-Z, a-z, 0-9, '_' or '-'")
        lines.append(f'"Bearer {key}" {name};')
    return "".join(f"{line}\n" for line in lines)


def open_webui_env(secret_key: str) -> str:
    """open-webui.env, the unit's EnvironmentFile: one URL-safe word, so systemd reads it as it is."""
    if not _KEY_RE.fullmatch(secret_key):
        raise ValueError("Open WebUI's secret key must be 24-128 characters of A-Z, a-z, 0-9, '_' or '-'")
    return f"WEBUI_SECRET_KEY={secret_key}\n"


def next_server_env(api_key: str) -> str:
    """biochatter-next.env, biochatter-server's --env-file: the ordinary API key it talks to the engine with (Docker
    reads the file; the value never reaches a command line)."""
    if not _KEY_RE.fullmatch(api_key):
        raise ValueError("BioChatter Next's API key must be 24-128 characters of A-Z, a-z, 0-9, '_' or '-'")
    return f"OPENAI_API_KEY={api_key}\n"


def hf_env(token: str) -> str:
    """hf.env: the token (one word: config.py checks it) under both names Hugging Face's libraries read."""
    return f"HF_TOKEN={token}\nHUGGING_FACE_HUB_TOKEN={token}\n"


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, 0
    tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class DeliveredSecrets:
    """What a VM gets after boot, apart from the key values (Pulumi generates those): the API key names, the
    Hugging Face token and the TLS mode with a provided certificate. The readiness gate takes this, not the
    whole config."""

    key_names: tuple[str, ...]
    hf_token: Secret
    tls: Tls
    webui: bool = False  # chatUi open-webui: its secret key (WEBUI_SECRET_KEY) goes too
    next_key: str = ""  # chatUi biochatter-next: the name of the ordinary key its server gets (biochatter-next.env)

    @classmethod
    def from_config(cls, cfg: StackConfig) -> DeliveredSecrets:
        images = cfg.chat.next_images
        return cls(tuple(k.name for k in cfg.auth.api_keys), cfg.hf_token, cfg.tls, cfg.chat.ui == "open-webui",
                   images.server_key if images else "")

    def bundle(self, api_keys: Mapping[str, str], public_ip: str = "", ray_token: str = "",
               webui_secret_key: str = "") -> bytes:
        """The tar archive llmdeploy-install-secrets reads: one key for every name in key_names, for
        self-signed TLS the public IP the certificate must also name, on a Ray head the cluster's token, and for
        chatUi open-webui its secret key (step 45-chat waits for the first one; a bundle without it leaves the VM
        the one it has)."""
        missing = sorted(set(self.key_names) - set(api_keys))
        if missing:
            raise ValueError(f"no key value for API key name(s): {', '.join(missing)}")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            _add(tar, "api-keys.map", api_keys_map({name: api_keys[name] for name in self.key_names}))
            self._add_node_secrets(tar, ray_token)
            if self.webui and webui_secret_key:
                _add(tar, "open-webui.env", open_webui_env(webui_secret_key))
            if self.next_key:
                _add(tar, NEXT_KEY_ENV, next_server_env(api_keys[self.next_key]))
            if self.tls.mode == "self-signed" and public_ip:
                _add(tar, "tls/extra-sans", f"IP:{public_ip}\n")
            if self.tls.mode == "provided":
                _add(tar, "tls/fullchain.pem", self.tls.certificate.reveal())
                _add(tar, "tls/privkey.pem", self.tls.private_key.reveal())
        return out.getvalue()

    def worker_bundle(self, ray_token: str) -> bytes:
        """The archive of a Ray worker: no API keys or TLS (nginx runs on the head only)."""
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            self._add_node_secrets(tar, ray_token)
        return out.getvalue()

    def _add_node_secrets(self, tar: tarfile.TarFile, ray_token: str) -> None:
        """What every machine of a stack gets: the Hugging Face token (the engine, or each Ray node's vLLM
        workers, download the weights) and the Ray cluster's token."""
        if self.hf_token:
            _add(tar, "hf.env", hf_env(self.hf_token.reveal()))
        if ray_token:
            _add(tar, "ray-token", check_ray_token(ray_token))


def check_ray_token(token: str) -> str:
    """A Ray cluster token: one word (Ray's own are 64 hex digits), as the token file holds it."""
    if not _RAY_TOKEN_RE.fullmatch(token):
        raise ValueError("the Ray token must be 32-128 characters of A-Z, a-z, 0-9, '_' or '-'")
    return token + "\n"


_RAY_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")


def secrets_bundle(cfg: StackConfig, api_keys: Mapping[str, str], public_ip: str = "", ray_token: str = "",
                   webui_secret_key: str = "") -> bytes:
    """DeliveredSecrets.bundle for the config's secrets."""
    return DeliveredSecrets.from_config(cfg).bundle(api_keys, public_ip, ray_token, webui_secret_key)


def worker_bundle(cfg: StackConfig, ray_token: str) -> bytes:
    """DeliveredSecrets.worker_bundle for the config's secrets."""
    return DeliveredSecrets.from_config(cfg).worker_bundle(ray_token)
