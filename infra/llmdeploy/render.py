"""User-data and every file it installs, as a pure function of a StackConfig (no Pulumi, no I/O).

The user-data is a small bootstrap (the admin user, the bootstrap script and the bundle's digest); every other
file travels in the provisioning bundle (bundle.py), delivered over SSH and checked against that digest.

Each provisioning step, unit and config file is a Jinja2 template under templates/. The cloud-config
is built as data and dumped with PyYAML, never assembled from strings. Secrets never enter the
output: API keys and provided certificates are delivered after boot (see secrets.py); basic-auth
passwords appear only as bcrypt hashes.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import bcrypt
import jinja2
import yaml

from . import addresses, bundle, raycluster, vmpaths
from .bundle import Provisioning, encode_user_data  # noqa: F401  (re-exported)
from .config import (CHAT_UI_PORTS, ENGINE_PORTS, OPEN_WEBUI_MEMORY_MB, LlamacppModel, OllamaModel, StackConfig,
                     VllmModel, XinferenceModel)
from .declared import PROJECT_ROOT
from .nvidia import CUDA_MIN_DRIVER
from .routes import ENGINE_ROUTES, RAY_SERVE_ROUTES, EngineRoutes
from .shapes import Shape
# The VM's paths are defined in vmpaths; render re-exports the ones other modules import from it.
from .vmpaths import (BOOTSTRAP, BUNDLE_DIGEST, BUNDLE_STAGE, ETC_DIR, FILES_DIR, FIREWALL, INSTALL_SECRETS, LIBEXEC,
                      OPEN_WEBUI_ADMIN, PROVISION, READY_MARKER, RECEIVE_BUNDLE, SECRETS_DIR, STACK_INFO, STAGES_DIR,
                      STEPS_DIR, WAIT_READY)

TEMPLATES = PROJECT_ROOT / "templates"
# BioChatter Light's entry point, beside upstream's app.py: the app with its correcting agent off (one engine request
# per message; files/biochatter-light-launch.py.j2 says why).
LIGHT_LAUNCHER = "llmdeploy_light.py"
UPSTREAM = "llmdeploy_engines"  # nginx's upstream of the engine VMs (replicas > 1)
XINFERENCE_MODELS = f"{LIBEXEC}/xinference-models.py"
XINFERENCE_VENV = "/opt/llmdeploy/xinference"
RAY_VENV = "/opt/llmdeploy/ray"
RAY_STATUS = f"{LIBEXEC}/ray-cluster-status"



@dataclass(frozen=True)
class HealthCheck:
    """The engine request behind nginx's /healthz: it succeeds only while the model answers, not merely the
    engine's process (an Xinference that lost its model still answers /status)."""

    path: str
    method: str = "GET"
    body: str = ""


def _ollama_health(cfg: StackConfig) -> HealthCheck:
    # /api/show 404s for a model that is not pulled (routes.go ShowHandler); Ollama loads models on demand.
    assert isinstance(cfg.model, OllamaModel)
    return HealthCheck("/api/show", "POST", json.dumps({"model": cfg.model.tag}))


ENGINE_HEALTH: dict[str, Callable[[StackConfig], HealthCheck]] = {
    "ollama": _ollama_health,
    # 200 once the model is launched; 503 while it launches; 400 for a uid that is not running (4.1's
    # describe_model), so an Xinference without its model is not healthy.
    "xinference": lambda cfg: HealthCheck(f"/v1/models/{quote(cfg.model_name, safe='')}"),
    # One model per server: 200 only once it is loaded.
    "vllm": lambda cfg: HealthCheck("/health"),
    "llamacpp": lambda cfg: HealthCheck("/health"),
}
assert set(ENGINE_HEALTH) == set(ENGINE_ROUTES) == set(ENGINE_PORTS)

APT_SUITES = {"ubuntu-22.04": ("jammy", "main restricted universe"),
              "ubuntu-24.04": ("noble", "main restricted universe"),
              "debian-12": ("bookworm", "main")}


@dataclass(frozen=True)
class Layout:
    """Where nginx listens and keeps its files. The VM uses the defaults; tests move the same
    rendered config onto loopback ports and under a temporary directory."""

    root: str = ""
    http_listen: str = "80"
    https_listen: str = "443"
    https_port: int = 443
    engine_port: int = 0  # 0: the engine's own port; tests put a real server on a free one
    chat_port: int = 0  # 0: the chat frontend's own port (CHAT_UI_PORTS)
    login_port: int = 8399  # nginx's own loopback server that checks a pasted key (chat sign-in)

    @property
    def https_port_suffix(self) -> str:
        return "" if self.https_port == 443 else f":{self.https_port}"

    @property
    def paths(self) -> dict[str, str]:
        etc = f"{self.root}{ETC_DIR}"
        secrets = f"{self.root}{SECRETS_DIR}"
        return {"tls_dir": f"{etc}/tls", "secrets_dir": secrets, "htpasswd": f"{etc}/htpasswd",
                "api_keys_map": f"{secrets}/api-keys.map", "acme_webroot": f"{self.root}/var/www/llmdeploy-acme",
                "chat_root": f"{self.root}/var/www/llmdeploy-chat"}


@dataclass(frozen=True)
class VmFile:
    path: str
    content: str
    mode: str = "0644"

    @property
    def is_shell(self) -> bool:
        return self.content.startswith("#!/bin/bash") or self.content.startswith("# shellcheck shell=bash")


@dataclass(frozen=True)
class Rendered:
    user_data: str  # the bootstrap cloud-config: what the instance metadata carries
    files: tuple[VmFile, ...]  # every file the machine gets: the bootstrap's, then the bundle's
    steps: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    bundle: bytes = b""  # bundle.pack of the files the bootstrap does not carry

    @property
    def bundle_digest(self) -> str:
        return bundle.digest(self.bundle)

    @property
    def provisioning(self) -> Provisioning:
        return Provisioning(self.user_data, self.bundle)

    @property
    def bundle_files(self) -> tuple[VmFile, ...]:
        return tuple(f for f in self.files if f.path not in BOOTSTRAP_FILES)

    def expanded(self) -> str:
        """The user-data, then every bundle file as write_files would hold it: what the machine gets, for review
        (the snapshots) and for the validators that read a whole cloud-config."""
        files = [{"path": f.path, "owner": "root:root", "permissions": f.mode, "content": f.content}
                 for f in self.bundle_files]
        return (self.user_data + f"# ---- the provisioning bundle (sha256 {self.bundle_digest}), delivered over SSH\n"
                + yaml.dump({"bundle_files": files}, Dumper=_BlockDumper, sort_keys=False, width=120,
                            default_flow_style=False))

    def file(self, path: str) -> VmFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    @property
    def has_nginx(self) -> bool:
        return any(f.path == f"{FILES_DIR}/nginx-site.conf" for f in self.files)

    @property
    def nginx_site(self) -> str:
        return self.file(f"{FILES_DIR}/nginx-site.conf").content

    def shell_scripts(self) -> list[VmFile]:
        return [f for f in self.files if f.is_shell]

    def write(self, out: Path) -> list[Path]:
        """Write user-data, the bundle (bundle.tar.gz) and each file under out/files/<path on the VM>."""
        written = [out / "user-data", out / "bundle.tar.gz"]
        out.mkdir(parents=True, exist_ok=True)
        (out / "user-data").write_text(self.user_data, encoding="utf-8")
        (out / "bundle.tar.gz").write_bytes(self.bundle)
        for f in self.files:
            dest = out / "files" / f.path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(f.content, encoding="utf-8")
            dest.chmod(int(f.mode, 8))
            written.append(dest)
        return written


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
                             # bash's ${#array[@]} would open a Jinja comment under the default {# #}.
                             comment_start_string="[#", comment_end_string="#]")
    env.filters["q"] = lambda value: shlex.quote(str(value))
    # nginx map sources that equal a map keyword must be escaped with a backslash.
    env.filters["map_source"] = lambda name: f"\\{name}" if name in ("default", "hostnames", "include", "volatile") else name
    return env


_ENV = _environment()


def _render(name: str, context: dict[str, Any]) -> str:
    return _ENV.get_template(name).render(**context)


# The base every machine gets, one concern a step (steps/<name>.sh.j2).
BASE_STEPS = ("10-apt", "11-sshd", "12-sysctl", "13-coredump", "14-upgrades", "15-firewall", "16-fail2ban")
# The chat frontends with an install step of their own (45-chat-<ui>.sh.j2).
CHAT_STEP_UIS = ("open-webui", "biochatter-light")


def step_names(cfg: StackConfig, worker: int | None = None) -> list[str]:
    """The provisioning steps this config runs, in order; their names are the stage markers. A Ray worker
    (worker: its index) runs the base, the driver and its Ray node only: nginx and TLS live on the head."""
    if worker is not None and cfg.target == "ray":
        return [*BASE_STEPS, "25-nvidia", "40-engine", "90-ready"]
    steps = [*BASE_STEPS]
    steps += ["20-conda"] if cfg.conda else []
    steps += ["25-nvidia"] if cfg.gpu else []  # the driver, checked, before Docker's toolkit and the engine
    steps += ["30-docker"] if cfg.docker else []
    if worker is not None:  # an engine replica (replicas > 1): the engine alone, nginx is the head's
        return steps + ["40-engine", "90-ready"]
    steps += ["40-engine"]
    steps += ["45-chat"] if cfg.chat.ui in CHAT_STEP_UIS else []  # the frontend, once its engine serves, before
    # 60-nginx opens the chat host
    steps += ["50-tls", "60-nginx"]
    steps += ["70-acme"] if cfg.tls.mode == "letsencrypt" else []
    return steps + ["90-ready"]


@dataclass(frozen=True)
class AuthFailureLimit:
    """What nginx allows per client address in requests without a valid credential before answering 429.

    Only failures count (a request with a valid key never does), so a workshop room behind one NAT address keeps
    working however many attendees it has; the burst lets 40 attendees who all paste a wrong key at once still
    get a 401 that says so, and the rate leaves a mistyping room one failure a second, while a guesser gets
    60 tries a minute instead of thousands a second (keys are 256-bit: the limit is about load and logs)."""

    rate: str = "60r/m"
    burst: int = 40


AUTH_FAILURES = AuthFailureLimit()


@dataclass(frozen=True)
class HealthzLimit:
    """What nginx allows per client address on /healthz, which is open to anyone and asks the engine each time (on
    the ray target, a one-token completion): a monitor polling every second passes, a flood gets 429 before it
    reaches the engine."""

    rate: str = "2r/s"
    burst: int = 20


HEALTHZ_LIMIT = HealthzLimit()
# A chat page load fetches hundreds of scripts and styles at once (Open WebUI 0.12.4's first one after sign-in: about
# 240 requests, measured by tests/e2e/test_local_chat.py at the default 10r/s): the chat host's requests count
# against the key's own rate, as the API's do, with room for two page loads above it.
CHAT_PAGE_BURST = 500
# The frontend learns who signed in from X-User-Email, NAME@<this>, which nginx sets (RFC 2606: never a real
# mailbox).
WEB_USER_DOMAIN = "workshop.invalid"


def web_user_email(key_name: str) -> str:
    """The identity the chat frontend gets for the API key named key_name (X-User-Email)."""
    return f"{key_name}@{WEB_USER_DOMAIN}"


def retry_after_seconds(rate: str) -> int:
    """Seconds until a limit_req bucket at `rate` (10r/s, 30r/m) lets one more request through: Retry-After."""
    count, unit = rate[:-3], rate[-1]
    return max(1, -(-(60 if unit == "m" else 1) // int(count)))


def engine_template(cfg: StackConfig, worker: int | None = None) -> str:
    """The name of the engine's step template: vLLM on CPUs has its own (a virtualenv, no Docker), the ray
    target's head and workers theirs (Ray Serve LLM runs vLLM)."""
    if cfg.target == "ray":
        return "ray-head" if worker is None else "ray-worker"
    return "vllm-cpu" if cfg.vllm_cpu else cfg.engine


def engine_unit(cfg: StackConfig, worker: int | None = None) -> str:
    """The systemd unit that serves (or, on a Ray worker, runs the node)."""
    return engine_template(cfg, worker) if cfg.target == "ray" else cfg.engine


def engine_routes(cfg: StackConfig) -> EngineRoutes:
    return RAY_SERVE_ROUTES if cfg.target == "ray" else ENGINE_ROUTES[cfg.engine]


def engine_health(cfg: StackConfig) -> HealthCheck:
    """The ray target's: a one-token completion from the model. Ray Serve LLM's ingress hands it to the model's
    LLMServer replica, which exists only once vLLM has loaded the model; the model's card (/v1/models/NAME) comes
    from the ingress's static config, and answered 200 while vLLM was still loading. Not /tokenize: in the pinned
    pair Ray 2.60 reads vLLM 0.29's tokenizer as `openai_serving_tokenization`, which 0.29 renamed, so it always
    answers "does not support the 'tokenization' task"."""
    if cfg.target == "ray":
        return HealthCheck("/v1/completions", "POST", json.dumps({"model": cfg.model_name, "prompt": "ok",
                                                                  "max_tokens": 1}))
    return ENGINE_HEALTH[cfg.engine](cfg)


def ray_app(cfg: StackConfig) -> raycluster.LlmApp:
    """The Ray Serve LLM app of a ray stack: its vLLM model split and replicated as config says."""
    assert isinstance(cfg.model, VllmModel)
    return raycluster.LlmApp(
        model_id=cfg.model_name, model_source=cfg.model.hf_id, tensor_parallel=cfg.ray.tensor_parallel,
        pipeline_parallel=cfg.ray.pipeline_parallel, min_replicas=cfg.ray.min_replicas,
        max_replicas=cfg.ray.max_replicas,
        engine_kwargs={"dtype": cfg.model.dtype, "max_model_len": cfg.model.max_model_len})


def _ray_context(cfg: StackConfig, worker: int | None) -> dict[str, Any] | None:
    """What the Ray templates need: this node's role, address and command; None off the ray target."""
    if cfg.target != "ray":
        return None
    head_ip = addresses.head_ip()
    node_ip = head_ip if worker is None else addresses.worker_ip(worker)
    ray_bin = f"{RAY_VENV}/bin/ray"
    command = raycluster.head_command(ray_bin, node_ip) if worker is None else \
        raycluster.worker_command(ray_bin, node_ip, head_ip)
    return {
        "role": "head" if worker is None else "worker", "unit": engine_unit(cfg, worker), "venv": RAY_VENV,
        "node_ip": node_ip, "head_ip": head_ip, "node_ips": [head_ip, *addresses.worker_ips(cfg.ray.workers)],
        "ports": raycluster.PORTS, "env": raycluster.environment(), "command": shlex.join(command),
        "deploy_command": shlex.join(raycluster.serve_deploy_command(f"{RAY_VENV}/bin/serve")),
        "token_path": raycluster.TOKEN_PATH, "token_dir": raycluster.TOKEN_PATH.rsplit("/", 1)[0],
        "serve_config_path": raycluster.SERVE_CONFIG_PATH, "dashboard_url": raycluster.dashboard_url(),
        "app_name": raycluster.APP_NAME, "status_command": RAY_STATUS, "app": ray_app(cfg),
    }


def _firewall(cfg: StackConfig, worker: int | None) -> dict[str, Any]:
    """Inbound TCP the host accepts: SSH, and nginx's ports where nginx runs; on Ray nodes any TCP from the cluster's
    VCN too (the cluster NSG confines it to the cluster's own VMs); on an engine replica any TCP from the head only,
    whose nginx is the engine's one caller. With Docker, what DOCKER-USER holds for containers (firewall.sh.j2)."""
    ports = [22] if worker is not None else [22, 80, 443]
    text = ", ".join(map(str, ports[:-1])) + f" and {ports[-1]}" if len(ports) > 1 else str(ports[0])
    replica = worker is not None and cfg.target == "vm"
    cluster_cidr = f"{addresses.head_ip()}/32" if replica else addresses.VCN_CIDR if cfg.target == "ray" else ""
    published = {"address": addresses.worker_ip(worker), "port": cfg.engine_port, "head": addresses.head_ip()} \
        if replica and cfg.docker and worker is not None else {}
    return {"ports": ports, "ports_text": text, "cluster_cidr": cluster_cidr, "replica": replica,
            "containers": cfg.docker, "published": published}


def docker_publish(cfg: StackConfig, worker: int | None) -> list[str]:
    """The addresses a Docker engine publishes its port on: loopback (the same VM's nginx, and the replica's own
    health checks), and on an engine replica its private address too, for the head's nginx. Never 0.0.0.0: Docker's
    DNAT would take the port on every address, past the host firewall."""
    if worker is not None and cfg.target == "vm":
        return ["127.0.0.1", addresses.worker_ip(worker)]
    return ["127.0.0.1"]


def engine_host(cfg: StackConfig, worker: int | None) -> str:
    """Where the engine listens: loopback behind the same VM's nginx; every interface on an engine replica,
    whose callers are the head's nginx (the cluster NSG admits the cluster, the host firewall the head only)."""
    return "0.0.0.0" if worker is not None and cfg.target == "vm" else "127.0.0.1"


def engine_url(cfg: StackConfig, engine_port: int) -> str:
    """What nginx's proxy_pass names: the upstream of the engine VMs, or the one engine on loopback."""
    return f"http://{UPSTREAM if replica_upstreams(cfg, engine_port) else f'127.0.0.1:{engine_port}'}"


def replica_upstreams(cfg: StackConfig, engine_port: int) -> list[str]:
    """The servers of nginx's engine upstream when replicas > 1: the head's own engine, then each replica's
    (fixed private IPs in the workers' subnet); empty for one VM, whose nginx proxies to loopback directly."""
    if cfg.target != "vm" or cfg.replicas < 2:
        return []
    return [f"127.0.0.1:{engine_port}", *(f"{ip}:{engine_port}" for ip in addresses.worker_ips(cfg.replicas - 1))]


def xinference_prefix(cfg: StackConfig) -> str:
    """The Python environment Xinference is installed in: conda's, or a virtualenv (xinferenceInstall venv)."""
    return XINFERENCE_VENV if cfg.xinference_install == "venv" else f"/opt/miniforge3/envs/{cfg.conda_env}"


def rate_zones(cfg: StackConfig) -> list[dict[str, Any]]:
    zones: dict[str, list[str]] = {}
    for key in cfg.auth.api_keys:
        zones.setdefault(key.rate, []).append(key.name)
    return [{"rate": rate, "names": names, "retry_after": retry_after_seconds(rate)} for rate, names in zones.items()]


def htpasswd(cfg: StackConfig) -> str:
    """bcrypt hashes only. The salt derives from stack and user so that the same password renders the
    same user-data (a fresh salt would make every `pulumi up` replace the instance)."""
    lines = []
    for user in cfg.auth.basic_users:
        digest = hashlib.sha256(f"llmdeploy-htpasswd:{cfg.stack}:{user}".encode()).digest()[:16]
        std = base64.b64encode(digest).decode()[:22]
        salt = std.translate(str.maketrans(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
        lines.append(f"{user}:{_bcrypt(cfg.auth.basic_passwords[user].reveal(), salt)}")
    return "".join(f"{line}\n" for line in lines)


_HASHED: dict[bytes, str] = {}


def _bcrypt(password: str, salt: str) -> str:
    """bcrypt at cost 12 takes about 0.2 s by design, and one program renders the same stack's site for its head,
    every replica and worker: hash each (salt, password) once per process. Keyed by a digest, so the cache holds
    no password."""
    key = hashlib.sha256(f"{salt}\0{password}".encode()).digest()
    if key not in _HASHED:
        _HASHED[key] = bcrypt.hashpw(password.encode(), f"$2b$12${salt}".encode()).decode()
    return _HASHED[key]


def tls_sans(cfg: StackConfig) -> str:
    names = [n for n in (cfg.domain, cfg.chat.host) if n]
    return ",".join([f"DNS:{n}" for n in names + ["localhost"]] + ["IP:127.0.0.1"])


def _context(cfg: StackConfig, layout: Layout, worker: int | None = None) -> dict[str, Any]:
    return {
        "stack": cfg.stack or "default", "engine": cfg.engine, "engine_port": layout.engine_port or cfg.engine_port,
        "engine_unit": engine_unit(cfg, worker), "model": cfg.model, "engine_host": engine_host(cfg, worker),
        "docker_publish": docker_publish(cfg, worker),
        "replica": worker is not None and cfg.target == "vm",
        "upstreams": replica_upstreams(cfg, layout.engine_port or cfg.engine_port), "upstream": UPSTREAM,
        "engine_url": engine_url(cfg, layout.engine_port or cfg.engine_port),
        "ray": _ray_context(cfg, worker), "firewall": _firewall(cfg, worker), "model_name": cfg.model_name, "domain": cfg.domain,
        "server_name": cfg.domain or "_", "tls": cfg.tls, "auth": cfg.auth, "rate_zones": rate_zones(cfg),
        "sources": cfg.sources, "conda_env": cfg.conda_env, "nvidia_toolkit": cfg.nvidia_toolkit,
        "os_family": cfg.os_family, "admin_user": cfg.admin_user, "layout": layout, "paths": layout.paths,
        "health": engine_health(cfg), "routes": engine_routes(cfg), "tls_sans": tls_sans(cfg),
        "admin_keys": [k.name for k in cfg.auth.api_keys if k.admin],
        "chat": cfg.chat, "chat_port": layout.chat_port or CHAT_UI_PORTS.get(cfg.chat.ui, 0),
        "chat_burst": max(cfg.auth.burst, CHAT_PAGE_BURST), "web_user_domain": WEB_USER_DOMAIN,
        "auth_failures": AUTH_FAILURES, "auth_failures_retry_after": retry_after_seconds(AUTH_FAILURES.rate),
        "healthz_limit": HEALTHZ_LIMIT,
        "basic_retry_after": retry_after_seconds(cfg.auth.rate),
        "tensor_parallel": cfg.tensor_parallel_size if isinstance(cfg.model, VllmModel) else 1,
        "apt_suites": _apt_suites(cfg), "apt_components": APT_SUITES[cfg.os][1],
        "steps": step_names(cfg, worker), "vm": vmpaths.template_vars(),
        "readiness_timeout_s": cfg.readiness_timeout_minutes * 60,
        "readiness_timeout_minutes": cfg.readiness_timeout_minutes,
        "nvidia_branch": cfg.nvidia_driver_branch, "cuda_min_driver": CUDA_MIN_DRIVER, "gpu": cfg.gpu,
        "nvswitch": _machine_shape(cfg, worker).nvswitch,
        "vllm_kv_cache_gib": cfg.vllm_cpu_kv_cache_gib if cfg.vllm_cpu else 0,
        "xinference_install": cfg.xinference_install, "xinference_prefix": xinference_prefix(cfg),
        # CPU machines take torch from the PyTorch CPU index: pip would otherwise fetch GBs of CUDA wheels.
        "cpu_torch_index": "" if cfg.gpu else cfg.sources.torch_index_url,
        # pip trusts a plain-HTTP index only when told to (a mirror on the LAN, or llmdeploy local's own).
        "torch_trusted_host": _http_host(cfg.sources.torch_index_url),
    }


def _machine_shape(cfg: StackConfig, worker: int | None) -> Shape:
    """The shape of the VM being rendered: a Ray worker's may differ from the head's."""
    return cfg.ray.worker_shape if cfg.target == "ray" and worker is not None else cfg.shape


def _chat_context(cfg: StackConfig, layout: Layout) -> dict[str, Any]:
    """Open WebUI's memory and secret file, and the admin key whose user signs in first."""
    admin = cfg.chat.admin  # config demands one for chatUi open-webui; attendees never hold one (endpoints.py)
    return {"chat_ui": cfg.chat.ui, "chat_memory_mb": OPEN_WEBUI_MEMORY_MB,
            "chat_admin_email": web_user_email(admin), "chat_admin_name": admin,
            "chat_secret_env": f"{layout.paths['secrets_dir']}/open-webui.env",
            "chat_secret_wait_s": cfg.readiness_timeout_minutes * 60, "chat_admin_script": OPEN_WEBUI_ADMIN,
            "light_launcher": LIGHT_LAUNCHER}


def _http_host(url: str) -> str:
    """The host of an http:// URL (pip's --trusted-host), empty for https."""
    parts = urlsplit(url)
    return (parts.hostname or "") if parts.scheme == "http" else ""


def _secret_context(cfg: StackConfig, layout: Layout) -> dict[str, Any]:
    """Whether secrets are set, never their values: the engine step waits for a set hfToken (delivered over
    SSH after boot), and llama.cpp sends it only to hfEndpoint."""
    endpoint = cfg.sources.hf_endpoint.rstrip("/")
    url = cfg.model.url if isinstance(cfg.model, LlamacppModel) else ""
    return {"hf_token_set": bool(cfg.hf_token), "hf_env": f"{layout.paths['secrets_dir']}/hf.env",
            "hf_token_wait_s": cfg.readiness_timeout_minutes * 60,
            "model_from_hf_endpoint": bool(url) and (url == endpoint or url.startswith(endpoint + "/"))}


def _apt_suites(cfg: StackConfig) -> str:
    codename = APT_SUITES[cfg.os][0]
    suites = [codename, f"{codename}-updates"]
    return " ".join(suites + ([f"{codename}-security"] if cfg.os_family == "ubuntu" else []))


# Host hardening that 10-base installs: sysctl values, no core dumps, the legal banner.
HARDENING_FILES = ("sysctl-hardening.conf", "limits-nocore.conf", "coredump.conf", "issue")


def _base_files(cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
    """What 10-base installs on every machine: SSH, hardening, fail2ban, upgrades."""
    return [
        VmFile(f"{FILES_DIR}/sshd-llmdeploy.conf", _render("files/sshd-llmdeploy.conf.j2", ctx)),
        *(VmFile(f"{FILES_DIR}/{name}", _render(f"files/{name}.j2", ctx)) for name in HARDENING_FILES),
        VmFile(f"{FILES_DIR}/fail2ban-sshd.conf", _render("files/fail2ban-sshd.conf.j2", ctx)),
        VmFile(f"{FILES_DIR}/20auto-upgrades", _render("files/20auto-upgrades.j2", ctx)),
    ]


def _ray_files(cfg: StackConfig, ctx: dict[str, Any], worker: int | None) -> list[VmFile]:
    """A Ray node's unit; on the head also the Serve app, the oneshot that deploys it, the cluster check."""
    files = [VmFile(f"{FILES_DIR}/{engine_unit(cfg, worker)}.service", _render("files/ray-node.service.j2", ctx))]
    if worker is None:
        files += [VmFile(f"{FILES_DIR}/serve-app.yaml", raycluster.serve_config_yaml(ray_app(cfg))),
                  VmFile(f"{FILES_DIR}/ray-serve-app.service", _render("files/ray-serve-app.service.j2", ctx)),
                  VmFile(RAY_STATUS, _render("files/ray-cluster-status.py.j2", ctx), "0755")]
    return files


def _gpu_files(cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
    if not cfg.gpu:
        return []
    return [VmFile(f"{FILES_DIR}/nvidia-unattended-upgrades", _render("files/nvidia-unattended-upgrades.j2", ctx))]


def _mirror_files(cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
    if not cfg.sources.apt_mirror_url:
        return []
    return [VmFile(f"{FILES_DIR}/apt-mirror.sources", _render("files/apt-mirror.sources.j2", ctx))]


def _worker_files(cfg: StackConfig, ctx: dict[str, Any], worker: int) -> list[VmFile]:
    """A Ray worker's or an engine replica's: the base, the driver's upgrades, its node or engine; no nginx, TLS or
    keys (the head has them)."""
    if cfg.target == "ray":
        return _base_files(cfg, ctx) + _mirror_files(cfg, ctx) + _gpu_files(cfg, ctx) + _ray_files(cfg, ctx, worker)
    return [*_base_files(cfg, ctx), _engine_unit_file(cfg, ctx), *_mirror_files(cfg, ctx), *_condarc(cfg, ctx),
            *_engine_support_files(cfg, ctx)]


def _support_files(cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
    files = [
        *_base_files(cfg, ctx),
        VmFile(f"{FILES_DIR}/nginx-site.conf", _render("files/nginx-site.conf.j2", ctx)),
        VmFile(f"{FILES_DIR}/htpasswd", htpasswd(cfg)),
    ]
    files += _ray_files(cfg, ctx, None) if cfg.target == "ray" else [_engine_unit_file(cfg, ctx)]
    files += _mirror_files(cfg, ctx) + _condarc(cfg, ctx)
    if cfg.chat.ui == "biochatter-light":
        files.append(VmFile(f"{FILES_DIR}/biochatter-light.service", _render("files/biochatter-light.service.j2", ctx)))
        files.append(VmFile(f"{FILES_DIR}/{LIGHT_LAUNCHER}", _render("files/biochatter-light-launch.py.j2", ctx)))
    if cfg.chat.enabled:
        files += [VmFile(f"{FILES_DIR}/chat-{name}.html", _render("files/chat-login.html.j2", {**ctx, "failed": failed}))
                  for name, failed in (("login", False), ("login-failed", True))]
    if cfg.tls.mode == "letsencrypt":
        files.append(VmFile(f"{FILES_DIR}/certbot-deploy-hook", _render("files/certbot-deploy-hook.j2", ctx),
                            "0755"))
    return files + _engine_support_files(cfg, ctx)


def _engine_unit_file(cfg: StackConfig, ctx: dict[str, Any]) -> VmFile:
    """The engine's systemd unit (the head's, and each engine replica's alike)."""
    return VmFile(f"{FILES_DIR}/{cfg.engine}.service", _render(f"files/{engine_template(cfg)}.service.j2", ctx))


def _condarc(cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
    return [VmFile(f"{FILES_DIR}/condarc", _render("files/condarc.j2", ctx))] if cfg.conda else []


def _engine_support_files(cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
    """What the engine runs with besides its unit: model scripts, the GPU's checks and upgrade rules."""
    files: list[VmFile] = []
    if isinstance(cfg.model, XinferenceModel):
        files += _xinference_files(cfg, cfg.model, ctx)
    files += _gpu_files(cfg, ctx)
    if cfg.engine == "ollama" and cfg.gpu:
        files.append(VmFile(f"{LIBEXEC}/ollama-gpu-check", _render("files/ollama-gpu-check.sh.j2", ctx), "0755"))
    vllm_on_its_own = cfg.engine == "vllm" and cfg.target != "ray"  # Ray Serve LLM runs vLLM itself
    if vllm_on_its_own and not cfg.vllm_cpu:
        files.append(VmFile(f"{LIBEXEC}/vllm-cuda-check", _render("files/vllm-cuda-check.sh.j2", ctx), "0755"))
    if vllm_on_its_own:
        files.append(VmFile(f"{LIBEXEC}/vllm-log-cause", _render("files/vllm-log-cause.sh.j2", ctx), "0755"))
    if cfg.chat.ui == "open-webui":
        files.append(VmFile(f"{FILES_DIR}/open-webui.service", _render("files/open-webui.service.j2", ctx)))
        files.append(VmFile(OPEN_WEBUI_ADMIN, _render("files/open-webui-admin.sh.j2", ctx), "0755"))
    if cfg.engine == "llamacpp":
        files.append(VmFile(f"{FILES_DIR}/llamacpp-server.py", _render("files/llamacpp-server.py.j2", ctx), "0755"))
    return files


def xinference_requirements(cfg: StackConfig, model: XinferenceModel) -> tuple[str, str]:
    """The pip requirement (xinference with only its backend's extra) and the constraints file that pins the
    backend. `xinference[all]` does not resolve in reasonable time and leaves vLLM unpinned. On CPUs torch (which
    xinference needs although llama.cpp never uses it) is pinned to its CPU build, X+cpu from torchIndexUrl: without
    it pip chose CUDA torch, 3.2 GB of nvidia wheels."""
    requirement = f"xinference[{model.pip_extra}]=={cfg.sources.xinference_version}\n"
    pins = [f"xinference=={cfg.sources.xinference_version}"]
    pins += [_cpu_torch(p) if not cfg.gpu else p for p in cfg.sources.xinference_constraints.split(",") if p]
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+", cfg.sources.llamacpp_package):
        pins.append(cfg.sources.llamacpp_package)  # xllamacpp, pinned once for both llama.cpp paths
    return requirement, "".join(f"{p}\n" for p in pins)


def _cpu_torch(pin: str) -> str:
    """torch==X as torch==X+cpu (a pin with a local label, or of another package, stays as it is)."""
    name, _, version = pin.partition("==")
    return f"{pin}+cpu" if name.lower() == "torch" and "+" not in version else pin


def _xinference_files(cfg: StackConfig, model: XinferenceModel, ctx: dict[str, Any]) -> list[VmFile]:
    # On CPUs n_gpu is null: Xinference 4.1 refuses 0 ("must be greater than 0", core/worker.py launch_builtin_model).
    n_gpu: int | str | None = "auto" if cfg.gpu else None
    requirement, constraints = xinference_requirements(cfg, model)
    files = [
        VmFile(f"{FILES_DIR}/xinference-launch.json",
               json.dumps(model.launch_body(cfg.model_name, n_gpu), indent=2) + "\n"),
        VmFile(f"{FILES_DIR}/xinference-autostart.json",
               json.dumps(model.autostart_body(cfg.model_name, n_gpu), indent=2) + "\n"),
        VmFile(f"{FILES_DIR}/xinference-requirements.txt", requirement),
        VmFile(f"{FILES_DIR}/xinference-constraints.txt", constraints),
        VmFile(XINFERENCE_MODELS, _render("files/xinference-models.py.j2", ctx), "0755"),
    ]
    if model.custom_model:
        files.append(VmFile(f"{FILES_DIR}/xinference-register.json",
                            json.dumps({"model": json.dumps(model.custom_model), "persist": True}, indent=2) + "\n"))
    return files


def stack_info(cfg: StackConfig, steps: list[str], worker: int | None = None) -> dict[str, Any]:
    """Non-secret facts the smoke test reads back over SSH."""
    info = {"stack": cfg.stack, "engine": cfg.engine, "engine_unit": engine_unit(cfg, worker),
            "engine_port": cfg.engine_port, "model_name": cfg.model_name, "domain": cfg.domain,
            "tls_mode": cfg.tls.mode, "gpu_shape": cfg.gpu, "stages": steps, "stages_dir": STAGES_DIR,
            "ready_marker": READY_MARKER}
    if cfg.target == "ray":
        info["ray_role"] = "head" if worker is None else "worker"
    return info


def render(cfg: StackConfig, layout: Layout = Layout(), worker: int | None = None) -> Rendered:
    """The user-data of the stack's machine; on the ray target the head's, or worker `worker`'s; with replicas the
    head's, or engine replica `worker`'s (0 is the second engine VM)."""
    if worker is not None and not 0 <= worker < worker_count(cfg):
        raise ValueError(f"worker {worker}: the stack has no such Ray worker or engine replica (target "
                         f"{cfg.target}, {worker_count(cfg)} besides the head)")
    ctx = {**_context(cfg, layout, worker), **_secret_context(cfg, layout), **_chat_context(cfg, layout)}
    steps = step_names(cfg, worker)
    files = [
        VmFile(vmpaths.LIB_SH, _render("lib.sh.j2", ctx)),
        VmFile(FIREWALL, _render("firewall.sh.j2", ctx), "0755"),
        VmFile(PROVISION, _render("provision.sh.j2", ctx), "0755"),
        VmFile(INSTALL_SECRETS, _render("install-secrets.sh.j2", ctx), "0755"),
        VmFile(WAIT_READY, _render("wait-ready.sh.j2", ctx), "0755"),
    ]
    for step in steps:
        files.append(VmFile(f"{STEPS_DIR}/{step}.sh", _render(_step_template(cfg, step, worker), ctx), "0755"))
    files += _support_files(cfg, ctx) if worker is None else _worker_files(cfg, ctx, worker)
    info = stack_info(cfg, steps, worker)
    files.append(VmFile(STACK_INFO, json.dumps(info, indent=2) + "\n"))
    packed = bundle.pack(files)
    boot_ctx = {"vm": ctx["vm"], "bundle_stage": BUNDLE_STAGE,
                "readiness_timeout_minutes": cfg.readiness_timeout_minutes}
    boot = [VmFile(BUNDLE_DIGEST, bundle.digest(packed) + "\n"),
            VmFile(RECEIVE_BUNDLE, _render("receive-bundle.sh.j2", boot_ctx), "0755"),
            VmFile(BOOTSTRAP, _render("bootstrap.sh.j2", boot_ctx), "0755")]
    return Rendered(cloud_config(cfg, boot), tuple(boot + files), tuple(steps), info, packed)


# What the metadata itself carries; everything else is in the bundle.
BOOTSTRAP_FILES = (BUNDLE_DIGEST, RECEIVE_BUNDLE, BOOTSTRAP)


def _step_template(cfg: StackConfig, step: str, worker: int | None) -> str:
    if step == "40-engine":
        return f"steps/40-engine-{engine_template(cfg, worker)}.sh.j2"
    if step == "45-chat":
        return f"steps/45-chat-{cfg.chat.ui}.sh.j2"
    if step == "90-ready" and worker is not None:
        return "steps/90-ready-ray-worker.sh.j2" if cfg.target == "ray" else "steps/90-ready-replica.sh.j2"
    return f"steps/{step}.sh.j2"


def machine_name(endpoint: str, node: str) -> str:
    """One machine's name (and output folder): the workshop endpoint's, then the Ray node's (head, worker-0)."""
    return "/".join(part for part in (endpoint, node) if part)


def nodes(cfg: StackConfig) -> list[tuple[str, int | None]]:
    """Every machine the stack boots, as (name, worker index for render): "" for the one machine, or the head
    and each Ray worker or engine replica."""
    head = "head" if cfg.target == "ray" or cfg.replicas > 1 else ""
    role = "worker" if cfg.target == "ray" else "replica"
    machines: list[tuple[str, int | None]] = [(head, None)]
    return machines + [(f"{role}-{i}", i) for i in range(worker_count(cfg))]


def worker_count(cfg: StackConfig) -> int:
    """The stack's VMs besides the head: Ray workers, or engine replicas after the first (replicas > 1)."""
    if cfg.target == "ray":
        return cfg.ray.workers
    return cfg.replicas - 1 if cfg.target == "vm" else 0


def render_nodes(cfg: StackConfig, layout: Layout = Layout()) -> list[tuple[str, Rendered]]:
    return [(name, render(cfg, layout, worker)) for name, worker in nodes(cfg)]


# libyaml's emitter writes the same document as PyYAML's pure-Python one about 15 times faster (a workshop
# renders thousands); tests/unit/test_bad_input.py checks that user-data reads back as the files it holds.
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _BlockDumper(_SafeDumper):
    """Dumps multi-line strings as YAML block literals so user-data stays readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def cloud_config(cfg: StackConfig, files: list[VmFile]) -> str:
    user: dict[str, Any] = {"name": cfg.admin_user, "groups": ["sudo"], "shell": "/bin/bash",
                            "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True}
    if cfg.ssh_public_keys:  # a local stack may have none: `llmdeploy local up` adds its own key
        user["ssh_authorized_keys"] = list(cfg.ssh_public_keys)
    doc = {
        "users": [user],
        "disable_root": True,
        "ssh_pwauth": False,
        # The bootstrap is a per-boot script (cloud-init runs it at the end of every boot, the first included):
        # write_files has put it in place by then, and after a reboot it provisions from the bundle it kept.
        "write_files": [{"path": f.path, "owner": "root:root", "permissions": f.mode, "content": f.content}
                        for f in files],
    }
    if cfg.extra_ca_certs:
        # cloud-init installs these into the OS store before any step runs (apt, pip, curl, certbot trust them).
        doc = {"ca_certs": {"trusted": list(cfg.extra_ca_certs)}, **doc}
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=120,
                                         default_flow_style=False)
