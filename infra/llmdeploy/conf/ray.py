"""The ray section of Pulumi.yaml: the Ray cluster's workers and how Ray Serve LLM splits and replicates the model
over their GPUs, refused here when Ray would leave replicas pending or vLLM refuse them."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from ..engines import ENGINES, Engine
from ..shapes import SHAPES, Shape, required_memory_gb
from .deployment import DeploymentKind
from .reader import Problem, Reader


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


def parse_ray(r: Reader, kind: DeploymentKind, engine: Engine, head: Shape, params: float, bits: int) -> RayCluster:
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
    if not kind.ray_cluster or r.problems_for("rayWorkers", "rayWorkerShape", "rayTensorParallel",
                                              "rayPipelineParallel", "rayMinReplicas", "rayMaxReplicas"):
        return cluster
    if not engine.serves_ray and not r.failed("engine"):
        serving = [name for name, e in ENGINES.items() if e.serves_ray]
        others = [name for name in ENGINES if name not in serving]
        r.bad("engine", engine.name, f"{' or '.join(serving)} for the ray target (Ray Serve LLM runs vLLM; "
              f"{', '.join(others[:-1])} and {others[-1]} run on the vm target)", serving[0])
    for key, shape in (("shape", head), ("rayWorkerShape", worker)):
        if not shape.is_gpu and not r.failed(key):
            r.bad(key, shape.name, "a GPU shape on the ray target (Ray Serve LLM places each vLLM worker on a GPU)",
                  "VM.GPU.A10.2")
    if r.failed("shape") or r.failed("rayWorkerShape") or r.failed("engine"):
        return cluster
    _check_ray_sizes(r, cluster, head, params, bits)
    return cluster


def _check_ray_sizes(r: Reader, cluster: RayCluster, head: Shape, params: float, bits: int) -> None:
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
