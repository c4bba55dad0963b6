"""The Ray cluster of the ray target, as data: its fixed ports, the head's and the workers' `ray start`
commands, the environment that turns Ray's token auth on, and the Ray Serve LLM app `serve deploy` reads.

Pure (no Pulumi, no I/O): the templates, the Pulumi program, the host firewall and the tests that run a real
cluster all take their ports and commands from here. Ray listens on all interfaces whatever
--node-ip-address says, so every port is fixed and named, for the NSG and the host firewall to confine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

LOOPBACK = "127.0.0.1"
TOKEN_PATH = "/etc/ray/token"  # root-only; Ray reads it through RAY_AUTH_TOKEN_PATH (checked in ray 2.60's binary)
SERVE_CONFIG_PATH = "/etc/ray/serve-app.yaml"
APP_NAME = "llm"
LLM_APP_IMPORT_PATH = "ray.serve.llm:build_openai_app"


@dataclass(frozen=True)
class Ports:
    """Every port a Ray node opens. Defaults are Ray's own where it has a fixed one."""

    gcs: int = 6379
    node_manager: int = 6380
    object_manager: int = 6381
    runtime_env_agent: int = 6382
    dashboard_agent_grpc: int = 6383
    metrics_export: int = 6384
    dashboard_agent_listen: int = 52365
    client_server: int = 10001
    # Ray's own default range (`ray start --help`): each worker process holds one port, and the raylet starts about
    # one per CPU before any work, more for actors (Serve replicas, vLLM workers). 99 ports ran out on 128+ vCPUs.
    min_worker: int = 10002
    max_worker: int = 19999
    dashboard: int = 8265  # head only, on 127.0.0.1 (serve deploy talks to it there)
    serve: int = 8000  # head only, on 127.0.0.1: nginx proxies to it

    def cluster_ranges(self) -> tuple[tuple[int, int], ...]:
        """(first, last) TCP ranges the nodes reach each other on; nothing else of Ray's is meant off the host.
        NCCL and Gloo (tensor parallel across nodes) add ephemeral ports, which the cluster NSG allows anyway."""
        return ((self.gcs, self.metrics_export), (self.dashboard_agent_listen, self.dashboard_agent_listen),
                (self.client_server, self.client_server), (self.min_worker, self.max_worker))


PORTS = Ports()
# Worker ports a node needs per vCPU: the ones pre-started (one per CPU, as --num-cpus defaults to the vCPUs Ray
# detects), as many again for actors and for workers that are replaced while the old one's port is in TIME_WAIT,
# and room to spare.
WORKER_PORTS_PER_VCPU = 4


def worker_ports_needed(vcpus: int) -> int:
    return WORKER_PORTS_PER_VCPU * vcpus


def environment(token_path: str = TOKEN_PATH) -> dict[str, str]:
    """What every Ray process (nodes, `serve deploy`, `ray status`) needs in its environment: token auth on,
    the token read from a root-only file (never on a command line), no usage stats sent home."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path, "RAY_USAGE_STATS_ENABLED": "0"}


def _node_args(node_ip: str, ports: Ports, num_cpus: int | None, num_gpus: int | None) -> list[str]:
    args = ["--block", "--disable-usage-stats", "--node-ip-address", node_ip,
            "--node-manager-port", str(ports.node_manager), "--object-manager-port", str(ports.object_manager),
            "--runtime-env-agent-port", str(ports.runtime_env_agent),
            "--dashboard-agent-grpc-port", str(ports.dashboard_agent_grpc),
            "--dashboard-agent-listen-port", str(ports.dashboard_agent_listen),
            "--metrics-export-port", str(ports.metrics_export),
            "--min-worker-port", str(ports.min_worker), "--max-worker-port", str(ports.max_worker)]
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    return args


def head_command(ray: str, node_ip: str, *, ports: Ports = PORTS, num_cpus: int | None = None,
                 num_gpus: int | None = None) -> list[str]:
    """argv of the head node (systemd runs it in the foreground: --block). None leaves a count to Ray's
    detection."""
    return [ray, "start", "--head", "--port", str(ports.gcs), "--dashboard-host", LOOPBACK,
            "--dashboard-port", str(ports.dashboard), "--ray-client-server-port", str(ports.client_server),
            *_node_args(node_ip, ports, num_cpus, num_gpus)]


def worker_command(ray: str, node_ip: str, head_ip: str, *, ports: Ports = PORTS, num_cpus: int | None = None,
                   num_gpus: int | None = None) -> list[str]:
    """argv of a worker node joining the head's GCS."""
    return [ray, "start", "--address", f"{head_ip}:{ports.gcs}", *_node_args(node_ip, ports, num_cpus, num_gpus)]


def dashboard_url(ports: Ports = PORTS) -> str:
    return f"http://{LOOPBACK}:{ports.dashboard}"


def serve_deploy_command(serve: str, config_path: str = SERVE_CONFIG_PATH, ports: Ports = PORTS) -> list[str]:
    """argv that hands the app config to the head's dashboard (idempotent: the same config changes nothing)."""
    return [serve, "deploy", config_path, "--address", dashboard_url(ports)]


@dataclass(frozen=True)
class LlmApp:
    """One model served by Ray Serve LLM (vLLM), replicated between min and max replicas, each replica
    tensor_parallel x pipeline_parallel workers of one bundle each."""

    model_id: str  # the name clients ask for (modelName)
    model_source: str  # Hugging Face id (or a path) vLLM loads
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    min_replicas: int = 1
    max_replicas: int = 1
    bundle: Mapping[str, float] = field(default_factory=lambda: {"GPU": 1})  # {"CPU": 2} on CPUs
    engine_kwargs: Mapping[str, Any] = field(default_factory=dict)  # more vLLM arguments (max_model_len, dtype)
    runtime_env: Mapping[str, Any] = field(default_factory=dict)

    @property
    def workers_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    def gpus_needed(self) -> int:
        """GPUs that max_replicas occupy at once."""
        return int(self.bundle.get("GPU", 0)) * self.workers_per_replica * self.max_replicas


def llm_config(app: LlmApp) -> dict[str, Any]:
    """The LLMConfig (ray.serve.llm) of the app, as the dict `build_openai_app` validates."""
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": app.model_id, "model_source": app.model_source},
        "engine_kwargs": {"tensor_parallel_size": app.tensor_parallel,
                          "pipeline_parallel_size": app.pipeline_parallel, **app.engine_kwargs},
        "deployment_config": {"autoscaling_config": {"min_replicas": app.min_replicas,
                                                     "max_replicas": app.max_replicas}},
        # PACK: a replica's workers on as few nodes as fit (tensor parallel across nodes only when it must).
        "placement_group_config": {"bundles": [dict(app.bundle) for _ in range(app.workers_per_replica)],
                                   "strategy": "PACK"},
    }
    if app.runtime_env:
        config["runtime_env"] = dict(app.runtime_env)
    return config


def serve_config(app: LlmApp, ports: Ports = PORTS) -> dict[str, Any]:
    """The `serve deploy` config: one OpenAI app, its HTTP proxy on the head only, bound to 127.0.0.1."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": LOOPBACK, "port": ports.serve},
        "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": LLM_APP_IMPORT_PATH,
                          "args": {"llm_configs": [llm_config(app)]}}],
    }


def serve_config_yaml(app: LlmApp, ports: Ports = PORTS) -> str:
    return yaml.safe_dump(serve_config(app, ports), sort_keys=False)
