"""The typed stack configuration: raw config values in, frozen objects out, every error at once.

`parse()` is the only way to build a StackConfig. It takes the values of the keys declared in
Pulumi.yaml (as the Pulumi CLI passes them, strings, or as YAML gives them, native types) and
either returns a StackConfig or raises ConfigError listing each problem with the key, the bad
value, what is accepted and the command that fixes it. `derive()` builds a variant of a parsed
config (a workshop endpoint's) with some keys set otherwise, validated the same way.

Each section of Pulumi.yaml is read by its own module under conf/ (the reader and its problems in
conf/reader.py); each engine's section by its engine under engines/. This module puts them together
and keeps the names other modules import from it.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Mapping

from .conf import host
from .conf.auth import ApiKey, Auth, parse_auth
from .conf.autostop import parse_autostop
from .conf.bake import Bake, parse_bake
from .conf.chat import Chat, parse_chat
from .conf.datascience import DataScience, parse_datascience
from .conf.deployment import TARGETS, DeploymentKind, deployment
from .conf.host import BYOI_OSES, OSES
from .conf.local import LocalVm, parse_local_vm
from .conf.ray import RayCluster, parse_ray
from .conf.reader import (DOMAIN_RE, MAX_JSON_DEPTH, NAME_RE, ConfigError, Problem, Reader, Secret, is_rate,
                          set_cmd)
from .conf.sizing import check_fit, model_size
from .conf.sources import Sources, parse_sources
from .conf.stack import ParsedFrom, StackConfig
from .conf.tls import TLS_MODES, Tls, check_domains, parse_tls
from .conf.workshop import WorkshopConfig, parse_replicas, parse_workshop
from .declared import Declaration, declarations
from .engines import ENGINE_NAMES, Engine, Machine, Model, cpu_engine_names, select
from .engines import ENGINES as ENGINE_TABLE
from .engines.llamacpp import LlamacppModel, gguf_filename
from .engines.ollama import OLLAMA_ZSTD_SINCE, OllamaModel
from .engines.vllm import VLLM_CPU_RUNTIME_GB, VLLM_DTYPES, VllmModel
from .engines.xinference import XINFERENCE_BACKEND_EXTRAS, XINFERENCE_INSTALLS, XinferenceModel
from .frontends import BIOCHATTER_LIGHT_MODEL, CHAT_UI_PORTS, CHAT_UIS, OPEN_WEBUI_MEMORY_MB, runs_containers
from .shapes import SHAPES, Shape

__all__ = [  # what other modules import from here
    "ApiKey", "Auth", "Bake", "BIOCHATTER_LIGHT_MODEL", "BYOI_OSES", "CHAT_UIS", "CHAT_UI_PORTS", "Chat", "ConfigError",
    "DataScience", "DeploymentKind", "ENGINES", "ENGINE_PORTS", "LlamacppModel", "LocalVm", "MAX_JSON_DEPTH", "OLLAMA_ZSTD_SINCE",
    "OPEN_WEBUI_MEMORY_MB", "OSES", "OllamaModel", "ParsedFrom", "Problem", "RayCluster", "Secret", "Sources",
    "StackConfig", "TARGETS", "TLS_MODES", "Tls", "VLLM_CPU_RUNTIME_GB", "VLLM_DTYPES", "VllmModel", "WorkshopConfig",
    "XINFERENCE_BACKEND_EXTRAS", "XINFERENCE_INSTALLS", "XinferenceModel", "derive", "gguf_filename",
    "is_rate", "parse", "set_cmd"]

ENGINES = ENGINE_NAMES  # the values of the `engine` key
ENGINE_PORTS = {name: e.port for name, e in ENGINE_TABLE.items()}  # each `engine` value's port off Ray
_ADMIN_NAMES_TAKEN = ("root", "ubuntu", "opc", "debian")
_SSH_KEY_EXAMPLE = "--path 'sshPublicKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\""


def parse(raw: Mapping[str, Any], stack: str = "", decls: Mapping[str, Declaration] | None = None) -> StackConfig:
    """Validate raw config values (keys without the project prefix) into a StackConfig."""
    decls = decls if decls is not None else declarations()
    r = Reader(raw, decls)
    _unknown_keys(r, raw, decls)

    target = r.choice("target", TARGETS)
    kind = deployment(target)
    engine_name = r.choice("engine", tuple(ENGINE_TABLE))  # the registry's, at parse time
    shape_name = r.str("shape")
    shape = SHAPES.get(shape_name)
    if shape is None:
        close = difflib.get_close_matches(shape_name, list(SHAPES), n=1)
        r.bad("shape", shape_name, "one of " + ", ".join(SHAPES), close[0] if close else "VM.GPU.A10.1")
        shape = SHAPES["VM.GPU.A10.1"]
    os_name = r.choice("os", list(OSES))
    image = host.image_id(r)
    if kind.boots_user_data and os_name in BYOI_OSES and not image and not r.failed("imageId"):
        r.problems.append(Problem(
            "os", os_name, f"ubuntu-22.04 or ubuntu-24.04 on the vm target (OCI has no {OSES[os_name][0]} platform "
            "image; the local target is where debian-12 runs)",
            f"pulumi config set os ubuntu-24.04; or import a {OSES[os_name][0]} {OSES[os_name][1]} image as a custom "
            "image and boot it: pulumi config set imageId ocid1.image.oc1..xxxx"))
    admin = _admin_user(r)
    keys = _ssh_public_keys(r, kind)
    compartment = r.str("compartmentId")
    if kind.on_oci and not compartment.startswith("ocid1.compartment.") and not compartment.startswith("ocid1.tenancy."):
        r.bad("compartmentId", compartment, "a compartment OCID (ocid1.compartment.oc1..xxxx) for the vm and "
              "datascience targets", "ocid1.compartment.oc1..xxxx")

    machine = Machine(kind, shape, shape_name in SHAPES, os_name, shape.is_gpu and kind.has_gpus)
    engine = select(engine_name, kind, machine.gpu)
    model = engine.parse_model(r, machine)
    model_name = _model_name(r, engine, model)
    params, bits = model_size(r, model)
    memory_gbs = r.int("shapeMemoryGbs", 1, 1760)
    if machine.shape_known and not r.failed("engine"):
        _check_engine_kind(r, engine, shape, kind)
    engine.check_machine(r, model, machine)
    if params and kind.checks_fit and machine.shape_known:
        check_fit(r, shape, params, bits, memory_gbs)
    ray = parse_ray(r, kind, engine, shape, params, bits)

    tls = parse_tls(r)
    domain = r.str("domain").lower().rstrip(".")
    if domain and not DOMAIN_RE.fullmatch(domain):
        r.bad("domain", domain, "a DNS name such as llm.example.org", "llm.example.org")
    check_domains(r, tls, domain)
    auth = parse_auth(r)
    xinference_install = r.choice("xinferenceInstall", XINFERENCE_INSTALLS)
    conda = r.bool("installConda") or engine.uses_conda(xinference_install)
    # vLLM on CPUs runs in a virtualenv, under Ray in Ray's own (rayPackage).
    docker = r.bool("installDocker") or engine.container or runs_containers(r.str("chatUi"))
    sources = parse_sources(r)
    driver_branch = r.int("nvidiaDriverBranch", 450, 999)
    engine.check_sources(r, model, machine, sources, driver_branch)
    cfg = StackConfig(
        stack=stack, target=target, compartment_id=compartment,
        availability_domain=r.str("availabilityDomain"), shape=shape,
        shape_ocpus=r.int("shapeOcpus", 1, 114), shape_memory_gbs=memory_gbs,
        boot_volume_gbs=r.int("bootVolumeGbs", 50, 32768), os=os_name, admin_user=admin,
        ssh_public_keys=keys, conda=conda, conda_env=host.conda_env(r), xinference_install=xinference_install,
        docker=docker, nvidia_toolkit=docker and machine.gpu, nvidia_driver_branch=driver_branch,
        engine=engine_name, model=model, model_name=model_name,
        params_billions=params, quant_bits=bits, hf_token=host.hf_token(r),
        domain=domain, dns_zone=r.str("dnsZone"), tls=tls, auth=auth, tags=host.tags(r),
        expires_at=host.expires_at(r), extra_ca_certs=host.ca_certs(r), image_id=image,
        ssh_allowed_cidrs=host.cidrs(r), ssh_private_key=host.ssh_private_key(r),
        readiness_timeout_minutes=r.int("readinessTimeoutMinutes", 5, 1440),
        smoke_ca_bundle=r.str("smokeCaBundle"), datascience=parse_datascience(r, kind),
        workshop=parse_workshop(r, kind), local_vm=parse_local_vm(r, kind, engine, os_name), ray=ray,
        chat=parse_chat(r, kind, domain, auth, engine, model_name, os_name, tls), replicas=(replicas := parse_replicas(r, kind)),
        autostop=parse_autostop(r, kind, replicas),
        sources=sources,
        parsed_from=ParsedFrom(dict(raw), decls))
    cfg = dataclasses.replace(cfg, bake=parse_bake(r, kind, cfg.replicas, image))
    if cfg.chat.frontend is not None:
        cfg.chat.frontend.check_config(r, cfg)
    if r.problems:
        raise ConfigError(r.problems, stack)
    return cfg


def derive(cfg: StackConfig, overrides: Mapping[str, Any]) -> StackConfig:
    """cfg with the overrides' keys set to their values, validated as parse() validates a stack: a bad override
    raises the ConfigError that parsing the edited values would (a workshop endpoint's config is one)."""
    return parse({**cfg.parsed_from.values, **overrides}, stack=cfg.stack, decls=cfg.parsed_from.decls)


def _unknown_keys(r: Reader, raw: Mapping[str, Any], decls: Mapping[str, Declaration]) -> None:
    for key in sorted(k for k in raw if k not in decls):
        close = difflib.get_close_matches(key, list(decls), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        # A misspelt secret key must not print the secret.
        value = Secret(str(raw[key])) if close and decls[close[0]].secret else raw[key]
        r.problems.append(Problem(key, value, "a key declared in Pulumi.yaml",
                                  f"{hint}remove it: pulumi config rm {key}"))


def _admin_user(r: Reader) -> str:
    admin = r.str("adminUser")
    if not NAME_RE.fullmatch(admin) or admin in _ADMIN_NAMES_TAKEN:
        r.bad("adminUser", admin, "a lower-case login name (a-z, 0-9, _ or -; not root, ubuntu, opc or debian)",
              "llmadmin")
    return admin


def _ssh_public_keys(r: Reader, kind: DeploymentKind) -> tuple[str, ...]:
    keys = tuple(r.list("sshPublicKeys"))
    for k in keys:
        if not host.SSH_KEY_RE.fullmatch(k):
            r.bad("sshPublicKeys", k[:40] + ("..." if len(k) > 40 else ""),
                  "OpenSSH public keys (ssh-ed25519 AAAA... comment)", _SSH_KEY_EXAMPLE)
    # The local target needs none: `llmdeploy local up` generates a key of its own and adds it.
    if kind.boots_user_data and not keys and not r.failed("sshPublicKeys"):
        r.bad("sshPublicKeys", [], f"at least one OpenSSH public key for the {kind} target", _SSH_KEY_EXAMPLE)
    return keys


def _model_name(r: Reader, engine: Engine, model: Model) -> str:
    """modelName, or the engine model's own name; the engine refuses one it cannot serve under."""
    model_name = r.str("modelName") or model.default_name()
    derived_from_a_bad_url = not r.str("modelName") and r.failed("llamacppModelUrl")
    if not derived_from_a_bad_url and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", model_name):
        r.bad("modelName", model_name, "a name of letters, digits and . _ : / - (no spaces)", "my-model")
    else:
        engine.check_model_name(r, model_name)
    return model_name


def _check_engine_kind(r: Reader, engine: Engine, shape: Shape, kind: DeploymentKind) -> None:
    """Where the engine runs: Data Science's model deployment runs vLLM's container; a CPU shape on the vm target
    runs an engine with a CPU path."""
    if kind.model_deployment and not engine.serves_model_deployment:
        name = next(n for n, e in ENGINE_TABLE.items() if e.serves_model_deployment)
        r.bad("engine", engine.name, f"{name} for the datascience target (the model deployment runs vLLM's container)",
              name)
    if kind.engine_replicas and not shape.is_gpu and not engine.runs_on_cpus:
        names = cpu_engine_names()
        r.bad("engine", engine.name, f"one of {', '.join(names)} on the CPU shape {shape.name} (vllm runs vLLM's CPU "
              "build, xinference its llama.cpp backend; ollama needs a GPU shape here)", str(r.decls["engine"].default))
