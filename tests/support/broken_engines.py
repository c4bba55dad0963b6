"""Deliberately broken engines for the contract tests: each is vLLM under a name of its own ("broken"), wrong in one
way, and `registered` puts one in the registry for the length of a with-block."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llmdeploy.engines import Engine, HealthCheck, register, unregister
from llmdeploy.engines.vllm import Vllm
from llmdeploy.routes import EngineRoutes
from llmdeploy.templating import VmFile, render_template
from llmdeploy.vmpaths import FILES_DIR


class Broken(Vllm):
    """Sound: vLLM's step and unit, under the name broken."""

    name = variant = "broken"
    example = {"engine": "broken", "shape": "VM.GPU.A10.1"}

    def step_template(self, node: Any) -> str:
        return "steps/40-engine-vllm.sh.j2"

    def unit_files(self, cfg: Any, ctx: dict[str, Any], node: Any) -> list[VmFile]:
        return [VmFile(f"{FILES_DIR}/broken.service", render_template("files/vllm.service.j2", ctx))]

    def unit(self, node: Any) -> str:
        return "broken"

    def variant_for(self, kind: Any, gpu: bool) -> Engine:
        return self


class HealthyWithoutModel(Broken):
    def health(self, cfg: Any) -> HealthCheck:
        return HealthCheck("/v1/models")  # the server's list answers 200 with or without the model


class NoCompletionsRoute(Broken):
    routes = EngineRoutes(prefixes=("/v1/",), inference=tuple(r for r in Vllm.routes.inference
                                                               if r.path != "/v1/completions"),
                          management=Vllm.routes.management)


class WrongDialect(Broken):
    dialect = "ollama"  # vLLM answers /v1/..., not Ollama's /api/tags


class NoUnit(Broken):
    def unit_files(self, cfg: Any, ctx: dict[str, Any], node: Any) -> list[VmFile]:
        return []


class UnitSystemdRefuses(Broken):
    """A unit whose ExecStart= is a relative path: systemd refuses to load it (systemd-analyze verify)."""

    def unit_files(self, cfg: Any, ctx: dict[str, Any], node: Any) -> list[VmFile]:
        return [VmFile(f.path, f.content.replace("ExecStart=/", "ExecStart=", 1), f.mode)
                for f in super().unit_files(cfg, ctx, node)]


@contextmanager
def registered(engine: Engine) -> Iterator[Engine]:
    register(engine)
    try:
        yield engine
    finally:
        unregister(engine)
