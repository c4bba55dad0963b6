"""User-data and every file it installs, as a pure function of a StackConfig (no Pulumi, no I/O).

The user-data is a small bootstrap (the admin user, the bootstrap script and the bundle's digest); every other
file travels in the provisioning bundle (bundle.py), delivered over SSH and checked against that digest.

Each provisioning step, unit and config file is a Jinja2 template under templates/. The cloud-config
is built as data and dumped with PyYAML, never assembled from strings. Secrets never enter the
output: API keys and provided certificates are delivered after boot (see secret_delivery.py); basic-auth
passwords appear only as bcrypt hashes.

What is an engine's own (its step, unit, support files, health check, routes) the engine object says
(engines/); the machines and their network are topology.py's; nginx's auth policy is nginx_auth.py's; the typed
objects every template reads (and HostLayout) are template_context.py's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import bundle, vmpaths
from .bundle import Provisioning, encode_user_data  # noqa: F401  (re-exported)
from .autostop import autostop_files
from .config import StackConfig
from .engines import ENGINE_ROUTES, ENGINES, HealthCheck  # noqa: F401  (re-exported)
from .engines.ray_serve import RAY_STATUS, RAY_VENV, ray_app  # noqa: F401  (re-exported)
from .engines.xinference import XINFERENCE_MODELS, xinference_requirements  # noqa: F401  (re-exported)
from .nginx_auth import (AUTH_FAILURES, CHAT_PAGE_BURST, HEALTHZ_LIMIT, WEB_USER_DOMAIN, AuthFailureLimit,  # noqa: F401
                         HealthzLimit, htpasswd, rate_zones, retry_after_seconds, web_user_email)
from .routes import EngineRoutes
from .template_context import APT_SUITES, HostLayout, HostPaths, template_context, tls_sans  # noqa: F401
from .templating import ENV as _ENV, VmFile, render_template as _render  # noqa: F401  (re-exported)
from .topology import (HEAD_NODE, UPSTREAM, Node, docker_publish, engine_host, engine_url, firewall, machine_name,  # noqa: F401
                       named_nodes, nodes, replica_upstreams, require_node, worker_count)
# The VM's paths are defined in vmpaths; render re-exports the ones other modules import from it.
from .vmpaths import (ACME_WEBROOT, BOOTSTRAP, BUNDLE_DIGEST, BUNDLE_STAGE, CHAT_ROOT, ETC_DIR, FILES_DIR, FIREWALL,
                      INSTALL_SECRETS, LIBEXEC, OPEN_WEBUI_ADMIN, PROVISION, READY_MARKER, RECEIVE_BUNDLE, SECRETS_DIR,
                      STAGES_DIR, STEPS_DIR, VM_FACTS_FILE, WAIT_READY)

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
        (the snapshots) and for the validators that read a whole cloud-config. In path order, the bundle's own."""
        files = [{"path": f.path, "owner": "root:root", "permissions": f.mode, "content": f.content}
                 for f in sorted(self.bundle_files, key=lambda f: f.path)]
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


# The base every machine gets, one concern a step (steps/<name>.sh.j2).
BASE_STEPS = ("10-apt", "11-sshd", "12-sysctl", "13-coredump", "14-upgrades", "15-firewall", "16-fail2ban")


def step_names(cfg: StackConfig, at: Node = HEAD_NODE) -> list[str]:
    """The provisioning steps this machine runs, in order; their names are the stage markers. A Ray worker runs
    the base, the driver and its Ray node only: nginx and TLS live on the head."""
    if at.is_ray_worker:
        return [*BASE_STEPS, "25-nvidia", "40-engine", "90-ready"]
    steps = [*BASE_STEPS]
    steps += ["20-conda"] if cfg.conda else []
    steps += ["25-nvidia"] if cfg.gpu else []  # the driver, checked, before Docker's toolkit and the engine
    steps += ["30-docker"] if cfg.docker else []
    steps += ["35-autostop"] if cfg.autostop.enabled else []  # off by default: no step, no files
    if at.is_replica:  # an engine replica (replicas > 1): the engine alone, nginx is the head's
        return steps + ["40-engine", "90-ready"]
    steps += ["40-engine"]
    # The frontend, once its engine serves, before 60-nginx opens the chat host.
    steps += ["45-chat"] if cfg.chat.frontend is not None else []
    steps += ["50-tls", "60-nginx"]
    steps += ["70-acme"] if cfg.tls.mode == "letsencrypt" else []
    return steps + ["90-ready"]


def engine_unit(cfg: StackConfig, at: Node = HEAD_NODE) -> str:
    """The systemd unit that serves (or, on a Ray worker, runs the node)."""
    return cfg.served_by.unit(at)


def engine_routes(cfg: StackConfig) -> EngineRoutes:
    return cfg.served_by.routes


def engine_health(cfg: StackConfig) -> HealthCheck:
    return cfg.served_by.health(cfg)


# Host hardening that the base steps install: sysctl values, no core dumps, the legal banner.
HARDENING_FILES = ("sysctl-hardening.conf", "limits-nocore.conf", "coredump.conf", "issue")


def _base_files(ctx: dict[str, Any]) -> list[VmFile]:
    """What the base steps install on every machine: SSH, hardening, fail2ban, upgrades."""
    return [
        VmFile(f"{FILES_DIR}/sshd-llmdeploy.conf", _render("files/sshd-llmdeploy.conf.j2", ctx)),
        *(VmFile(f"{FILES_DIR}/{name}", _render(f"files/{name}.j2", ctx)) for name in HARDENING_FILES),
        VmFile(f"{FILES_DIR}/fail2ban-sshd.conf", _render("files/fail2ban-sshd.conf.j2", ctx)),
        VmFile(f"{FILES_DIR}/20auto-upgrades", _render("files/20auto-upgrades.j2", ctx)),
    ]


def _machine_files(cfg: StackConfig, ctx: dict[str, Any], at: Node, host_layout: HostLayout) -> list[VmFile]:
    """Every file a machine's steps install besides the steps themselves. Each VM gets the base, its mirror and
    its engine's unit (a Ray worker's: its Ray node); a GPU VM the driver's upgrade rules; the head nginx, the
    keys' files, the chat frontend and certbot's hook; engine VMs the engine's support files."""
    engine = cfg.served_by
    files = [*_base_files(ctx), *engine.unit_files(cfg, ctx, at)]
    if cfg.sources.apt_mirror_url:
        files.append(VmFile(f"{FILES_DIR}/apt-mirror.sources", _render("files/apt-mirror.sources.j2", ctx)))
    if cfg.gpu:
        files.append(VmFile(f"{FILES_DIR}/nvidia-unattended-upgrades",
                            _render("files/nvidia-unattended-upgrades.j2", ctx)))
    if at.is_ray_worker:  # its Ray node only: no conda, no engine files of its own
        return files
    if cfg.conda:
        files.append(VmFile(f"{FILES_DIR}/condarc", _render("files/condarc.j2", ctx)))
    files += engine.support_files(cfg, ctx)
    if not at.is_head:  # an engine replica: no nginx, TLS or keys (the head has them)
        return files
    files += [VmFile(f"{FILES_DIR}/nginx-site.conf", _render("files/nginx-site.conf.j2", ctx)),
              VmFile(f"{FILES_DIR}/htpasswd", htpasswd(cfg))]
    if cfg.chat.frontend is not None:
        files += cfg.chat.frontend.files(cfg, ctx)
        files += [VmFile(f"{FILES_DIR}/chat-{name}.html", _render("files/chat-login.html.j2", {**ctx, "failed": failed}))
                  for name, failed in (("login", False), ("login-failed", True))]
    files += autostop_files(cfg, ctx, host_layout)
    if cfg.tls.mode == "letsencrypt":
        files.append(VmFile(f"{FILES_DIR}/certbot-deploy-hook", _render("files/certbot-deploy-hook.j2", ctx),
                            "0755"))
    return files


def vm_facts(cfg: StackConfig, steps: list[str], at: Node = HEAD_NODE) -> dict[str, Any]:
    """Non-secret facts the smoke test reads back over SSH."""
    info = {"stack": cfg.stack, "engine": cfg.engine, "engine_unit": cfg.served_by.unit(at),
            "engine_port": cfg.engine_port, "model_name": cfg.model_name, "domain": cfg.domain,
            "tls_mode": cfg.tls.mode, "gpu_shape": cfg.gpu, "stages": steps, "stages_dir": STAGES_DIR,
            "ready_marker": READY_MARKER}
    if cfg.deployment.ray_cluster:
        info["ray_role"] = at.role
    return info


def render(cfg: StackConfig, host_layout: HostLayout = HostLayout(), node: Node = HEAD_NODE) -> Rendered:
    """The user-data of one of the stack's machines (topology.nodes): the head by default; on the ray target a Ray
    worker, with replicas an engine replica (topology.node(cfg, role, index) finds one)."""
    require_node(cfg, node)
    steps = step_names(cfg, node)
    ctx = template_context(cfg, host_layout, node, steps)
    files = [
        VmFile(vmpaths.LIB_SH, _render("lib.sh.j2", ctx)),
        VmFile(FIREWALL, _render("firewall.sh.j2", ctx), "0755"),
        VmFile(PROVISION, _render("provision.sh.j2", ctx), "0755"),
        VmFile(INSTALL_SECRETS, _render("install-secrets.sh.j2", ctx), "0755"),
        VmFile(WAIT_READY, _render("wait-ready.sh.j2", ctx), "0755"),
    ]
    for step in steps:
        files.append(VmFile(f"{STEPS_DIR}/{step}.sh", _render(_step_template(cfg, step, node), ctx), "0755"))
    files += _machine_files(cfg, ctx, node, host_layout)
    info = vm_facts(cfg, steps, node)
    files.append(VmFile(VM_FACTS_FILE, json.dumps(info, indent=2) + "\n"))
    packed = bundle.pack(files)
    boot_ctx = {"vm": ctx["vm"], "bundle_stage": BUNDLE_STAGE, "machine": ctx["machine"]}
    boot = [VmFile(BUNDLE_DIGEST, bundle.digest(packed) + "\n"),
            VmFile(RECEIVE_BUNDLE, _render("receive-bundle.sh.j2", boot_ctx), "0755"),
            VmFile(BOOTSTRAP, _render("bootstrap.sh.j2", boot_ctx), "0755")]
    return Rendered(cloud_config(cfg, boot), tuple(boot + files), tuple(steps), info, packed)


# Each engine's health check by `engine` value (its GPU or single-VM variant), for the tests that run them all.
ENGINE_HEALTH = {name: e.health for name, e in ENGINES.items()}
# What the metadata itself carries; everything else is in the bundle.
BOOTSTRAP_FILES = (BUNDLE_DIGEST, RECEIVE_BUNDLE, BOOTSTRAP)


def _step_template(cfg: StackConfig, step: str, at: Node) -> str:
    if step == "40-engine":
        return cfg.served_by.step_template(at)
    if step == "45-chat" and cfg.chat.frontend is not None:
        return cfg.chat.frontend.step_template
    if step == "90-ready":
        return cfg.served_by.ready_template(at)
    return f"steps/{step}.sh.j2"


def render_nodes(cfg: StackConfig, host_layout: HostLayout = HostLayout()) -> list[tuple[str, Rendered]]:
    """Every machine's user-data, by its name (topology.named_nodes)."""
    return [(name, render(cfg, host_layout, at)) for name, at in named_nodes(cfg)]


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
