"""Xinference: its model section (xinferenceModel*, its backend and the extra that installs it), its REST bodies
(launch and autostart), its pip requirement and constraints, /v1/models/<uid> as its health check, its routes and
smoke dialect. On CPUs it serves GGUF models through its llama.cpp backend."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import quote

from ..conf.reader import MAX_JSON_DEPTH, Reader, json_depth
from ..routes import OPENAI_LIST, EngineRoutes, NginxAnswer, route
from ..templating import VmFile, render_template
from ..topology import Node
from ..vmpaths import FILES_DIR, LIBEXEC, MINIFORGE_DIR, XINFERENCE_VENV
from .base import Engine, HealthCheck, Machine, Model

if TYPE_CHECKING:
    from ..config import StackConfig

# Xinference's model_engine (matched case-insensitively by Xinference) -> the xinference extra that installs it,
# spelt as its METADATA declares it (Provides-Extra: llama-cpp): pip before 23.3 (Debian 12's, a venv's bundled
# one) does not normalise extras and ignores `xinference[llama_cpp]` with a mere warning.
XINFERENCE_BACKEND_EXTRAS = {"vllm": "vllm", "transformers": "transformers", "llama.cpp": "llama-cpp"}
XINFERENCE_INSTALLS = ("conda", "venv")
XINFERENCE_MODELS = f"{LIBEXEC}/xinference-models.py"
_SIZE = r"[0-9]+(_[0-9]+)?"


@dataclass(frozen=True)
class XinferenceModel(Model):
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

    def default_name(self) -> str:
        return self.model_name

    def hub_repos(self) -> list[str]:
        """The model_id of each spec of a custom model (a built-in one comes from Xinference's own list)."""
        specs = (self.custom_model or {}).get("model_specs") or []
        return [str(s["model_id"]) for s in specs if isinstance(s, dict) and s.get("model_id")]

    def params_from_name(self) -> float:
        size = self.model_size_in_billions
        return float(size.replace("_", ".")) if re.fullmatch(_SIZE, size) else 0.0

    def bits_from_name(self) -> int:
        q = self.quantization.lower()
        return 4 if ("4" in q or self.model_format in ("gptq", "awq")) else 8 if "8" in q else 16


def parse_model(r: Reader) -> XinferenceModel:
    name = r.str("xinferenceModelName")
    if not name:
        r.bad("xinferenceModelName", name, "an Xinference model name such as qwen2.5-instruct", "qwen2.5-instruct")
    size = r.str("xinferenceModelSizeInBillions")
    if not re.fullmatch(_SIZE, size):
        r.bad("xinferenceModelSizeInBillions", size, "a number of billions, with _ for a decimal point (7, 1_5)",
              "7")
    custom_raw = r.str("xinferenceCustomModel")
    custom: dict[str, Any] | None = None
    if custom_raw:
        try:
            custom = json.loads(custom_raw)
            if not isinstance(custom, dict) or custom.get("model_name") != name \
                    or json_depth(custom) > MAX_JSON_DEPTH:
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


def xinference_prefix(cfg: StackConfig) -> str:
    """The Python environment Xinference is installed in: conda's, or a virtualenv (xinferenceInstall venv)."""
    return XINFERENCE_VENV if cfg.xinference_install == "venv" else f"{MINIFORGE_DIR}/envs/{cfg.conda_env}"


@dataclass(frozen=True)
class XinferenceContext:
    """What Xinference's templates read (`xinference`): where it is installed, and how (xinferenceInstall)."""

    prefix: str
    install: str


class Xinference(Engine):
    name = variant = "xinference"
    title = "Xinference"
    port = 9997
    dialect = "xinference"
    example = {"engine": "xinference", "shape": "VM.GPU.A10.1"}
    runs_on_cpus = True  # its llama.cpp backend
    pip_torch = True  # xinference needs torch although llama.cpp never uses it
    sections = ("xinferenceModelName", "xinferenceModelEngine", "xinferenceModelSizeInBillions",
                "xinferenceModelFormat", "xinferenceQuantization", "xinferenceCustomModel", "xinferenceInstall",
                "condaEnv", "xinferenceVersion", "xinferenceConstraints")
    routes = EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            route("POST", "/v1/chat/completions", "chat"),
            route("POST", "/v1/completions", "completions"),
            route("POST", "/v1/embeddings", "embeddings"),
            route("POST", "/v1/rerank", "rerank"),
            *OPENAI_LIST,
            route("GET", "/v1/models/{model_uid}", "model details"),
        ),
        management=(
            route("POST", "/v1/models", "launch a model"),
            route("DELETE", "/v1/models/{model_uid}", "terminate a model"),
            route("POST", "/v1/models/{model_uid}/cancel", "cancel a launch"),
            route("POST", "/v1/models/instance", "launch a model version"),
            route("GET/POST", "/v1/model_registrations/{model_type}", "list or register custom models"),
            route("DELETE", "/v1/model_registrations/{model_type}/{model_name}", "unregister a model"),
            route("GET/POST", "/v1/autostart/models", "autostart entries"),
            route("DELETE", "/v1/autostart/models/{model_uid}", "remove an autostart entry"),
            route("GET/POST/DELETE", "/v1/cache/models", "model cache"),
            route("GET", "/v1/cluster/info", "cluster"),
            route("GET", "/v1/workers", "workers"),
            route("DELETE", "/v1/clusters", "stop the cluster"),
        ),
        # Xinference's own client (xinference_client Client.__init__, 4.x) asks this first, without credentials,
        # and attaches its api_key to later requests only if the answer says {"auth": true}; any other answer
        # (nginx's 401) crashes it with KeyError: 'detail'. Xinference itself is started without auth (nginx does
        # it), so its own answer would be {"auth": false}: nginx answers for it, and says nothing more.
        answered=(NginxAnswer("/v1/cluster/auth", '{"auth": true}',
                              "Xinference's client sends its key only if this says auth is on"),),
    )

    def parse_model(self, r: Reader, machine: Machine) -> XinferenceModel:
        return parse_model(r)

    def check_model_name(self, r: Reader, name: str) -> None:
        # The name is Xinference's model_uid: /v1/models/{uid} (the health check) cannot hold a slash, and
        # Xinference reserves the -rep<N> suffix for replicas.
        if not re.fullmatch(r"(?!.*-rep[0-9]+$)[^/]{1,100}", name):
            r.bad("modelName", name, "an Xinference model uid: at most 100 characters, no /, not ending in "
                  "-rep<number>", "my-model")

    def check_machine(self, r: Reader, model: Model, machine: Machine) -> None:
        """On CPUs Xinference serves GGUF models through llama.cpp (xllamacpp): its vLLM backend needs CUDA and its
        transformers backend pulls CUDA torch for nothing."""
        assert isinstance(model, XinferenceModel)
        on_cpus = machine.kind.local_vm or not machine.shape.is_gpu
        if on_cpus and machine.shape_known and model.model_engine != "llama.cpp" \
                and not r.failed("xinferenceModelEngine"):
            where = "the local target" if machine.kind.local_vm else f"the CPU shape {machine.shape.name}"
            r.bad("xinferenceModelEngine", model.model_engine, f"llama.cpp on {where} (with a ggufv2 model; vllm and "
                  "transformers need a GPU shape)", "llama.cpp")

    def uses_conda(self, install: str) -> bool:
        return install == "conda"

    def context(self, cfg: StackConfig, node: Node) -> dict[str, Any]:
        return {**super().context(cfg, node),
                "xinference": XinferenceContext(prefix=xinference_prefix(cfg), install=cfg.xinference_install)}

    def client_snippet(self, endpoint_url: str, api_key: str, model: str, prompt: str, trust: str) -> str:
        # requests (under Xinference's client) reads REQUESTS_CA_BUNDLE, not SSL_CERT_FILE.
        trust_requests = trust.replace("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
        return (f"{trust_requests}from xinference_client import RESTfulClient  # pip install xinference-client\n\n"
                f"client = RESTfulClient(\"{endpoint_url}\",\n"
                f"                       api_key=\"{api_key}\")\n"
                f"print(list(client.list_models()))\n"
                f"model = client.get_model(\"{model}\")\n"
                f"reply = model.chat(messages=[{{\"role\": \"user\", \"content\": \"{prompt}\"}}])\n"
                f"print(reply[\"choices\"][0][\"message\"][\"content\"])")

    def health(self, cfg: StackConfig) -> HealthCheck:
        # 200 once the model is launched; 503 while it launches; 400 for a uid that is not running (4.1's
        # describe_model), so an Xinference without its model is not healthy.
        return HealthCheck(f"/v1/models/{quote(cfg.model_name, safe='')}")

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        model = cfg.model
        assert isinstance(model, XinferenceModel)
        # On CPUs n_gpu is null: Xinference 4.1 refuses 0 ("must be greater than 0", core/worker.py
        # launch_builtin_model).
        n_gpu: int | str | None = "auto" if cfg.gpu else None
        requirement, constraints = xinference_requirements(cfg, model)
        files = [
            VmFile(f"{FILES_DIR}/xinference-launch.json",
                   json.dumps(model.launch_body(cfg.model_name, n_gpu), indent=2) + "\n"),
            VmFile(f"{FILES_DIR}/xinference-autostart.json",
                   json.dumps(model.autostart_body(cfg.model_name, n_gpu), indent=2) + "\n"),
            VmFile(f"{FILES_DIR}/xinference-requirements.txt", requirement),
            VmFile(f"{FILES_DIR}/xinference-constraints.txt", constraints),
            VmFile(XINFERENCE_MODELS, render_template("files/xinference-models.py.j2", ctx), "0755"),
        ]
        if model.custom_model:
            files.append(VmFile(f"{FILES_DIR}/xinference-register.json",
                                json.dumps({"model": json.dumps(model.custom_model), "persist": True}, indent=2)
                                + "\n"))
        return files
