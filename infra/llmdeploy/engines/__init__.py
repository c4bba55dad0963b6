"""The engine registry: every engine llmdeploy serves with, one module each (see docs/adding-an-engine.md).

`ENGINES` maps each value of the `engine` config key to its engine; `select` picks the variant that serves a
config (vLLM's CPU build on CPUs, Ray Serve LLM on the ray target); `REGISTERED` lists every variant, which the
contract tests (tests/unit/test_engine_contract.py, tests/integration/test_engine_contract_live.py) run over.
"""
from __future__ import annotations

from ..conf.deployment import DeploymentKind
from ..routes import EngineRoutes
from .base import Engine, HealthCheck, Machine, Model
from .llamacpp import Llamacpp
from .ollama import Ollama
from .ray_serve import RAY_SERVE
from .vllm import VLLM_CPU, Vllm
from .xinference import Xinference

__all__ = ["ENGINES", "ENGINE_ROUTES", "ENGINE_NAMES", "REGISTERED", "Engine", "HealthCheck", "Machine", "Model", "engine_routes_table",
           "register", "select", "unregister"]

ENGINES: dict[str, Engine] = {e.name: e for e in (Ollama(), Xinference(), Vllm(), Llamacpp())}
ENGINE_NAMES = tuple(ENGINES)  # the values of the `engine` key
# Each engine's route table by `engine` value (the README's route table, the route tests).
ENGINE_ROUTES: dict[str, EngineRoutes] = {name: e.routes for name, e in ENGINES.items()}
REGISTERED: dict[str, Engine] = {e.variant: e for e in (*ENGINES.values(), VLLM_CPU, RAY_SERVE)}


def register(engine: Engine) -> None:
    """Add an engine to the registry: a new `engine` value, or a variant of one (tests register deliberately
    broken ones)."""
    REGISTERED[engine.variant] = engine
    if engine.name not in ENGINES:
        ENGINES[engine.name] = engine
        ENGINE_ROUTES[engine.name] = engine.routes


def unregister(engine: Engine) -> None:
    REGISTERED.pop(engine.variant, None)
    if ENGINES.get(engine.name) is engine:
        del ENGINES[engine.name], ENGINE_ROUTES[engine.name]


def select(name: str, kind: DeploymentKind, gpu: bool) -> Engine:
    """The engine that serves `engine: name` on this deployment kind, with or without GPUs (an unknown name, a
    problem parse() reports, reads as the first engine)."""
    return ENGINES.get(name, next(iter(ENGINES.values()))).variant_for(kind, gpu)


def cpu_engine_names() -> list[str]:
    """The `engine` values that serve on CPUs (a Flex shape, the local VM), for messages."""
    return sorted(name for name, e in ENGINES.items() if e.runs_on_cpus)


def engine_routes_table() -> list[tuple[str, EngineRoutes]]:
    """Every route table, by the name the README's route table shows."""
    return [*((name, e.routes) for name, e in ENGINES.items()), (f"ray ({RAY_SERVE.title})", RAY_SERVE.routes)]
