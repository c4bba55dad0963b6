"""What the templates see: a few small typed objects instead of one flat bag of keys.

Every template renders with `machine`, `topology`, `engine`, `tls`, `auth`, `chat`, `hf_token`, `torch`, `sources`,
`vm` and `paths` (and `host_layout`, where nginx listens); an engine adds objects of its own (engine.context: `ray`,
`vllm`, `xinference`). The Jinja environment is strict (templating.py), so a misspelled name or field fails the
render instead of writing an empty string onto the machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import autostop, vmpaths
from .engines import HealthCheck
from .frontends import LIGHT_LAUNCHER, NEXT_KEY_ENV, OPEN_WEBUI_MEMORY_MB, BiochatterNext
from .nginx_auth import (AUTH_FAILURES, CHAT_PAGE_BURST, HEALTHZ_LIMIT, WEB_USER_DOMAIN, AuthFailureLimit, HealthzLimit,
                         rate_zones, retry_after_seconds, web_user_email)
from .nvidia import CUDA_MIN_DRIVER
from .routes import EngineRoutes
from .topology import UPSTREAM, Node, docker_publish, engine_host, engine_url, firewall, replica_upstreams
from .vmpaths import ACME_WEBROOT, CHAT_ROOT, ETC_DIR, OPEN_WEBUI_ADMIN, SECRETS_DIR, TLS_DIR, USAGE_LOG

if TYPE_CHECKING:
    from .config import StackConfig
    from .engines.base import Model
    from .shapes import Shape

APT_SUITES = {"ubuntu-22.04": ("jammy", "main restricted universe"),
              "ubuntu-24.04": ("noble", "main restricted universe"),
              "debian-12": ("bookworm", "main")}


@dataclass(frozen=True)
class HostPaths:
    """nginx's TLS, secrets and web roots: the paths tests move under a temporary root (vmpaths holds the rest)."""

    tls_dir: str
    secrets_dir: str
    htpasswd: str
    api_keys_map: str
    acme_webroot: str
    chat_root: str
    usage_log: str


@dataclass(frozen=True)
class HostLayout:
    """Where nginx listens and keeps its files on the rendered machine. The VM uses the defaults; tests move the
    same rendered config onto loopback ports and under a temporary directory."""

    root: str = ""
    http_listen: str = "80"
    https_listen: str = "443"
    https_port: int = 443
    engine_port: int = 0  # 0: the engine's own port; tests put a real server on a free one
    chat_port: int = 0  # 0: the chat frontend's own port (CHAT_UI_PORTS)
    login_port: int = 8399  # nginx's own loopback server that checks a pasted key (chat sign-in)
    instance_services: str = ""  # llmdeploy local's stand-in for OCI's metadata, auth and Compute APIs (autostop)

    @property
    def https_port_suffix(self) -> str:
        return "" if self.https_port == 443 else f":{self.https_port}"

    @property
    def paths(self) -> HostPaths:
        etc = f"{self.root}{ETC_DIR}"
        secrets = f"{self.root}{SECRETS_DIR}"
        return HostPaths(tls_dir=f"{self.root}{TLS_DIR}", secrets_dir=secrets, htpasswd=f"{etc}/htpasswd",
                         api_keys_map=f"{secrets}/api-keys.map", acme_webroot=f"{self.root}{ACME_WEBROOT}",
                         chat_root=f"{self.root}{CHAT_ROOT}", usage_log=f"{self.root}{USAGE_LOG}")


@dataclass(frozen=True)
class MachineContext:
    """The machine itself: its stack, OS, GPU driver, conda, the steps it runs and how long it may take."""

    stack: str
    admin_user: str
    os_family: str
    apt_suites: str
    apt_components: str
    gpu: bool
    nvswitch: bool
    nvidia_branch: int
    cuda_min_driver: Any  # nvidia.CUDA_MIN_DRIVER: (CUDA version, minimum driver) pairs
    nvidia_toolkit: bool
    conda_env: str
    steps: tuple[str, ...]
    readiness_timeout_minutes: int

    @property
    def readiness_timeout_s(self) -> int:
        return self.readiness_timeout_minutes * 60


@dataclass(frozen=True)
class TopologyContext:
    """This machine among the stack's: its Node, whether it is an engine replica, what its host firewall admits."""

    node: Node
    firewall: dict[str, Any]

    @property
    def replica(self) -> bool:
        return self.node.is_replica


@dataclass(frozen=True)
class EngineContext:
    """The engine that serves here: its unit, where it listens, what nginx proxies to, its health check and routes."""

    name: str  # the `engine` config value
    unit: str
    port: int
    host: str  # the address it listens on
    url: str  # what nginx's proxy_pass names
    upstream: str  # nginx's upstream of the engine VMs (replicas > 1)
    upstreams: tuple[str, ...]  # its servers; empty for one VM
    docker_publish: tuple[str, ...]
    health: HealthCheck
    routes: EngineRoutes
    model: Model
    model_name: str


@dataclass(frozen=True)
class TlsContext:
    """The certificate's mode and names: the domain nginx serves and the names a self-signed certificate holds."""

    mode: str
    acme_email: str
    acme_directory_url: str
    domain: str
    server_name: str
    sans: str  # openssl's subjectAltName


@dataclass(frozen=True)
class AuthContext:
    """nginx's auth policy: basic-auth users, rates and their zones, admin keys, the limits on failures."""

    basic_users: tuple[str, ...]
    rate: str
    burst: int
    rate_zones: list[dict[str, Any]]
    admin_keys: tuple[str, ...]
    basic_retry_after: int
    failures: AuthFailureLimit
    failures_retry_after: int
    healthz_limit: HealthzLimit


@dataclass(frozen=True)
class ChatContext:
    """The chat frontend (chatUi): where it is served, its port, its admin and its secret file."""

    ui: str
    enabled: bool
    host: str
    path: str
    location: str  # the prefix nginx passes on to it (its path, or / for all of the chat host)
    port: int
    burst: int  # nginx's burst for the chat pages (many assets at once)
    web_user_domain: str
    biochatter_light_repo: str
    biochatter_light_ref: str
    light_launcher: str
    memory_mb: int
    admin_name: str
    admin_email: str
    admin_script: str
    secret_env: str
    secret_wait_s: int
    next: NextContext | None = None  # chatUi biochatter-next


@dataclass(frozen=True)
class NextContext:
    """BioChatter Next's two containers: their digest-pinned images, the server's port and its key file (the
    first ordinary API key, OPENAI_API_KEY=..., delivered over SSH)."""

    server_image: str
    client_image: str
    server_port: int
    server_key: str  # the key's name, never its value
    key_file: str  # its name in the delivered archive
    key_env: str  # where it is installed


@dataclass(frozen=True)
class HfTokenContext:
    """Whether hfToken is set, never its value: the engine step waits for it (delivered over SSH after boot), and
    llama.cpp sends it only to hfEndpoint."""

    is_set: bool
    env_file: str
    wait_s: int
    model_from_hf_endpoint: bool


@dataclass(frozen=True)
class TorchContext:
    """Where pip takes torch from: CPU machines take the PyTorch CPU index (pip would otherwise fetch GBs of CUDA
    wheels); pip trusts a plain-HTTP index only when told to (a mirror on the LAN, or llmdeploy local's own)."""

    cpu_index: str
    trusted_host: str


def template_context(cfg: StackConfig, host_layout: HostLayout, node: Node, steps: list[str]) -> dict[str, Any]:
    """Every object the machine's templates render with."""
    served_by = cfg.served_by
    engine_port = host_layout.engine_port or cfg.engine_port
    paths = host_layout.paths
    timeout_s = cfg.readiness_timeout_minutes * 60
    admin = cfg.chat.admin  # config demands one for chatUi open-webui; attendees never hold one (endpoints.py)
    hf_endpoint = cfg.sources.hf_endpoint.rstrip("/")
    model_url = cfg.model.download_url
    return {
        "machine": MachineContext(
            stack=cfg.stack or "default", admin_user=cfg.admin_user, os_family=cfg.os_family,
            apt_suites=_apt_suites(cfg), apt_components=APT_SUITES[cfg.os][1], gpu=cfg.gpu,
            nvswitch=_machine_shape(cfg, node).nvswitch, nvidia_branch=cfg.nvidia_driver_branch,
            cuda_min_driver=CUDA_MIN_DRIVER, nvidia_toolkit=cfg.nvidia_toolkit, conda_env=cfg.conda_env,
            steps=tuple(steps), readiness_timeout_minutes=cfg.readiness_timeout_minutes),
        "topology": TopologyContext(node, firewall(cfg, node)),
        "engine": EngineContext(
            name=cfg.engine, unit=served_by.unit(node), port=engine_port, host=engine_host(node),
            url=engine_url(cfg, engine_port), upstream=UPSTREAM, upstreams=tuple(replica_upstreams(cfg, engine_port)),
            docker_publish=tuple(docker_publish(node)), health=served_by.health(cfg), routes=served_by.routes,
            model=cfg.model, model_name=cfg.model_name),
        "tls": TlsContext(mode=cfg.tls.mode, acme_email=cfg.tls.acme_email,
                          acme_directory_url=cfg.tls.acme_directory_url, domain=cfg.domain,
                          server_name=cfg.domain or "_", sans=tls_sans(cfg)),
        "auth": AuthContext(
            basic_users=tuple(cfg.auth.basic_users), rate=cfg.auth.rate, burst=cfg.auth.burst,
            rate_zones=rate_zones(cfg), admin_keys=tuple(k.name for k in cfg.auth.api_keys if k.admin),
            basic_retry_after=retry_after_seconds(cfg.auth.rate), failures=AUTH_FAILURES,
            failures_retry_after=retry_after_seconds(AUTH_FAILURES.rate), healthz_limit=HEALTHZ_LIMIT),
        "chat": ChatContext(
            ui=cfg.chat.ui, enabled=cfg.chat.enabled, host=cfg.chat.host, path=cfg.chat.path,
            location=cfg.chat.frontend.location if cfg.chat.frontend else "/",
            port=host_layout.chat_port or (cfg.chat.frontend.port if cfg.chat.frontend else 0),
            burst=max(cfg.auth.burst, CHAT_PAGE_BURST), web_user_domain=WEB_USER_DOMAIN,
            biochatter_light_repo=cfg.chat.biochatter_light_repo, biochatter_light_ref=cfg.chat.biochatter_light_ref,
            light_launcher=LIGHT_LAUNCHER, memory_mb=OPEN_WEBUI_MEMORY_MB, admin_name=admin,
            admin_email=web_user_email(admin), admin_script=OPEN_WEBUI_ADMIN,
            secret_env=f"{paths.secrets_dir}/open-webui.env", secret_wait_s=timeout_s,
            next=_next_context(cfg, host_layout)),
        "hf_token": HfTokenContext(
            is_set=bool(cfg.hf_token), env_file=f"{paths.secrets_dir}/hf.env", wait_s=timeout_s,
            model_from_hf_endpoint=bool(model_url) and (model_url == hf_endpoint
                                                        or model_url.startswith(hf_endpoint + "/"))),
        "torch": TorchContext(cpu_index="" if cfg.gpu else cfg.sources.torch_index_url,
                              trusted_host=_http_host(cfg.sources.torch_index_url)),
        "sources": cfg.sources, "vm": vmpaths.template_vars(), "paths": paths, "host_layout": host_layout,
        "autostop": autostop.context(cfg),
        **served_by.context(cfg, node),
    }


def _next_context(cfg: StackConfig, host_layout: HostLayout) -> NextContext | None:
    images = cfg.chat.next_images
    if images is None:
        return None
    return NextContext(server_image=images.server, client_image=images.client,
                       server_port=BiochatterNext.server_port,
                       server_key=images.server_key, key_file=NEXT_KEY_ENV,
                       key_env=f"{host_layout.paths.secrets_dir}/{NEXT_KEY_ENV}")


def tls_sans(cfg: StackConfig) -> str:
    names = [n for n in (cfg.domain, cfg.chat.host) if n]
    return ",".join([f"DNS:{n}" for n in names + ["localhost"]] + ["IP:127.0.0.1"])


def _machine_shape(cfg: StackConfig, node: Node) -> Shape:
    """The shape of the VM being rendered: a Ray worker's may differ from the head's."""
    return cfg.ray.worker_shape if node.is_ray_worker else cfg.shape


def _http_host(url: str) -> str:
    """The host of an http:// URL (pip's --trusted-host), empty for https."""
    parts = urlsplit(url)
    return (parts.hostname or "") if parts.scheme == "http" else ""


def _apt_suites(cfg: StackConfig) -> str:
    codename = APT_SUITES[cfg.os][0]
    suites = [codename, f"{codename}-updates"]
    return " ".join(suites + ([f"{codename}-security"] if cfg.os_family == "ubuntu" else []))
