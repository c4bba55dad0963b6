"""Ray Serve LLM on the ray target: vLLM's model (the vllm section, sized by rayTensorParallel and
rayPipelineParallel), a Ray node unit on the head and on each worker, the Serve app the head deploys, a one-token
completion as its health check, and the OpenAI app's routes (no management routes)."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import addresses, nvidia, raycluster
from ..conf.reader import Reader
from ..routes import OPENAI_LIST, EngineRoutes, route
from ..templating import VmFile, render_template
from ..topology import Node
from ..vmpaths import FILES_DIR, LIBEXEC, RAY_VENV
from .base import HealthCheck, Machine, Model
from .vllm import VLLM_DTYPES, Vllm, VllmModel, check_vllm, read_hf_id

if TYPE_CHECKING:
    from ..config import Sources, StackConfig

RAY_STATUS = f"{LIBEXEC}/ray-cluster-status"


def ray_app(cfg: StackConfig) -> raycluster.LlmApp:
    """The Ray Serve LLM app of a ray stack: its vLLM model split and replicated as config says."""
    assert isinstance(cfg.model, VllmModel)
    return raycluster.LlmApp(
        model_id=cfg.model_name, model_source=cfg.model.hf_id, tensor_parallel=cfg.ray.tensor_parallel,
        pipeline_parallel=cfg.ray.pipeline_parallel, min_replicas=cfg.ray.min_replicas,
        max_replicas=cfg.ray.max_replicas,
        engine_kwargs={"dtype": cfg.model.dtype, "max_model_len": cfg.model.max_model_len})


@dataclass(frozen=True)
class RayContext:
    """What the Ray templates read (`ray`; None off Ray Serve LLM): this node's role, address and command, the
    cluster's addresses, ports, token and Serve app."""

    role: str
    unit: str
    venv: str
    node_ip: str
    head_ip: str
    node_ips: tuple[str, ...]
    ports: raycluster.Ports
    env: dict[str, str]
    command: str
    deploy_command: str
    token_path: str
    token_dir: str
    serve_config_path: str
    dashboard_url: str
    app_name: str
    status_command: str
    app: raycluster.LlmApp


class RayServe(Vllm):
    """vLLM under Ray Serve LLM, over a Ray cluster of the head and its workers."""

    variant = "ray-serve"
    title = "Ray Serve LLM"
    port = raycluster.PORTS.serve
    container = False  # vLLM comes from rayPackage, in Ray's virtualenv
    example = {"target": "ray", "engine": "vllm", "shape": "VM.GPU.A10.2", "rayWorkers": 1}
    sections = ("vllmModel", "vllmDtype", "vllmMaxModelLen", "rayPackage", "rayWorkers", "rayWorkerShape",
                "rayTensorParallel", "rayPipelineParallel", "rayMinReplicas", "rayMaxReplicas")
    # Ray Serve LLM's OpenAI app (ray/llm/_internal/serve/core/ingress/ingress.py, DEFAULT_ENDPOINTS, ray 2.60).
    # It has no management routes; Ray's dashboard stays on the head's loopback. Ray's /tokenize and /detokenize are
    # not offered: in the pinned pair they always fail (health() says why), so nginx answers 404 instead of a 500.
    routes = EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            route("POST", "/v1/chat/completions", "chat"),
            route("POST", "/v1/completions", "completions"),
            route("POST", "/v1/embeddings", "embeddings"),
            route("POST", "/v1/score", "score"),
            route("POST", "/v1/audio/transcriptions", "transcription"),
            *OPENAI_LIST,
            route("GET", "/v1/models/{model}", "model details"),
        ),
        management=(),
    )

    def parse_model(self, r: Reader, machine: Machine) -> VllmModel:
        hf_id = read_hf_id(r)
        # Ray Serve LLM's replicas take their own sizes (conf/ray.py checks them).
        if r.int("vllmTensorParallelSize", 0, 8):
            r.bad("vllmTensorParallelSize", r.raw.get("vllmTensorParallelSize"), "0 on the ray target "
                  "(rayTensorParallel and rayPipelineParallel size each replica)", "0")
        return VllmModel(hf_id, r.choice("vllmDtype", VLLM_DTYPES), r.int("vllmMaxModelLen", 256, 1_048_576),
                         r.int("rayTensorParallel", 1, 64))

    def check_sources(self, r: Reader, model: Model, machine: Machine, sources: Sources, driver_branch: int) -> None:
        assert isinstance(model, VllmModel)
        if machine.shape_known and not r.failed("vllmModel"):
            check_vllm(r, model, machine.shape, machine.kind, driver_branch, nvidia.RAY_LLM_CUDA,
                       f"rayPackage {sources.ray_package} installs a vLLM from PyPI that", "rayTensorParallel",
                       other_image=False)

    def health(self, cfg: StackConfig) -> HealthCheck:
        """A one-token completion from the model. Ray Serve LLM's ingress hands it to the model's LLMServer
        replica, which exists only once vLLM has loaded the model; the model's card (/v1/models/NAME) comes from the
        ingress's static config, and answered 200 while vLLM was still loading. Not /tokenize: in the pinned pair
        Ray 2.60 reads vLLM 0.29's tokenizer as `openai_serving_tokenization`, which 0.29 renamed, so it always
        answers "does not support the 'tokenization' task"."""
        return HealthCheck("/v1/completions", "POST", json.dumps({"model": cfg.model_name, "prompt": "ok",
                                                                  "max_tokens": 1}))

    def unit(self, node: Node) -> str:
        return "ray-head" if node.is_head else "ray-worker"

    def step_template(self, node: Node) -> str:
        return f"steps/40-engine-{self.unit(node)}.sh.j2"

    def ready_template(self, node: Node) -> str:
        return "steps/90-ready.sh.j2" if node.is_head else "steps/90-ready-ray-worker.sh.j2"

    def unit_files(self, cfg: StackConfig, ctx: dict[str, Any], node: Node) -> list[VmFile]:
        """A Ray node's unit; on the head also the Serve app, the oneshot that deploys it, the cluster check."""
        files = [VmFile(f"{FILES_DIR}/{self.unit(node)}.service", render_template("files/ray-node.service.j2", ctx))]
        if node.is_head:
            files += [VmFile(f"{FILES_DIR}/serve-app.yaml", raycluster.serve_config_yaml(ray_app(cfg))),
                      VmFile(f"{FILES_DIR}/ray-serve-app.service", render_template("files/ray-serve-app.service.j2", ctx)),
                      VmFile(RAY_STATUS, render_template("files/ray-cluster-status.py.j2", ctx), "0755")]
        return files

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return []  # Ray Serve LLM runs vLLM itself: no container checks

    def context(self, cfg: StackConfig, node: Node) -> dict[str, Any]:
        """What the Ray templates need: this node's role, address and command."""
        head_ip = addresses.head_ip()
        ray_bin = f"{RAY_VENV}/bin/ray"
        command = raycluster.head_command(ray_bin, node.ip) if node.is_head else \
            raycluster.worker_command(ray_bin, node.ip, head_ip)
        ray = RayContext(
            role="head" if node.is_head else "worker", unit=self.unit(node), venv=RAY_VENV, node_ip=node.ip,
            head_ip=head_ip, node_ips=(head_ip, *addresses.worker_ips(cfg.ray.workers)), ports=raycluster.PORTS,
            env=raycluster.environment(), command=shlex.join(command),
            deploy_command=shlex.join(raycluster.serve_deploy_command(f"{RAY_VENV}/bin/serve")),
            token_path=raycluster.TOKEN_PATH, token_dir=raycluster.TOKEN_PATH.rsplit("/", 1)[0],
            serve_config_path=raycluster.SERVE_CONFIG_PATH, dashboard_url=raycluster.dashboard_url(),
            app_name=raycluster.APP_NAME, status_command=RAY_STATUS, app=ray_app(cfg))
        return {**super().context(cfg, node), "ray": ray}


RAY_SERVE = RayServe()
