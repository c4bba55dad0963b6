"""StackConfig, the typed and validated stack configuration parse() returns, and what it was parsed from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..declared import Declaration
from ..engines import Engine, Model, select
from ..engines.vllm import VLLM_CPU_RUNTIME_GB, VllmCpu, VllmModel
from ..shapes import Shape
from .auth import Auth
from .autostop import Autostop
from .bake import NO_BAKE, Bake
from .chat import Chat
from .datascience import DataScience
from .deployment import DeploymentKind, deployment
from .local import LocalVm
from .ray import RayCluster
from .reader import Secret
from .sources import Sources
from .tls import Tls
from .workshop import WorkshopConfig


@dataclass(frozen=True, repr=False)
class ParsedFrom:
    """The values and declarations a StackConfig was parsed from, so that derive() validates a variant exactly
    as parse() validated the original. The values include secrets' text: never printed (see __repr__)."""

    values: Mapping[str, Any]
    decls: Mapping[str, Declaration]

    def __repr__(self) -> str:
        return f"ParsedFrom({len(self.values)} values)"


@dataclass(frozen=True)
class StackConfig:
    stack: str
    target: str  # the deployment kind's name (the `target` key); ask `deployment` what it is
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
    model: Model  # the engine's model section (engines/<engine>.py)
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
    autostop: Autostop  # idleStopMinutes, ttlHours (conf/autostop.py)
    sources: Sources = field(repr=False)
    # Not part of what a config is: two configs parsed from different spellings of the same values are equal.
    parsed_from: ParsedFrom = field(repr=False, compare=False)
    bake: Bake = NO_BAKE  # bakeImage, bakedImage, bakeMaxAgeDays, bakeHfToken (conf/bake.py)

    @property
    def deployment(self) -> DeploymentKind:
        """What the `target` key names: a vm, a Ray cluster, a Data Science model deployment, the local VM."""
        return deployment(self.target)

    @property
    def served_by(self) -> Engine:
        """The engine object that serves this stack: `engine`'s, in the variant for this deployment and machine
        (vLLM's CPU build on CPUs, Ray Serve LLM on the ray target)."""
        return select(self.engine, self.deployment, self.gpu)

    @property
    def gpu(self) -> bool:
        """Whether the machine has GPUs: the shape's, except on the local target (a QEMU VM, CPUs only)."""
        return self.shape.is_gpu and self.deployment.has_gpus

    @property
    def engine_port(self) -> int:
        return self.served_by.port

    def machine_shapes(self) -> list[Shape]:
        """The shape of every VM the stack boots: the one machine, or the Ray head and each worker."""
        workers = [self.ray.worker_shape] * self.ray.workers if self.deployment.ray_cluster else []
        return [self.shape, *workers]

    @property
    def cluster_gpus(self) -> int:
        """GPUs the stack runs: the whole Ray cluster's on the ray target, else the one machine's."""
        if self.deployment.ray_cluster:
            return self.ray.gpus(self.shape)
        return self.shape.gpus if self.gpu else 0

    @property
    def tensor_parallel_size(self) -> int:
        assert isinstance(self.model, VllmModel)
        return self.model.tensor_parallel_size or (max(self.shape.gpus, 1) if self.gpu else 1)

    @property
    def vllm_cpu(self) -> bool:
        """vLLM's CPU build in a virtualenv (a CPU shape, the local target) instead of its CUDA container."""
        return isinstance(self.served_by, VllmCpu)

    @property
    def memory_gb(self) -> float:
        """The machine's RAM: the Flex shape's memory, or the local VM's."""
        return self.local_vm.memory_mb / 1024 if self.deployment.local_vm else float(self.shape_memory_gbs)

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
