"""The machines a stack boots, as Nodes: the head (the one machine, or the Ray head, or the first engine VM), then
each Ray worker or engine replica with its fixed private address; and what each one's network looks like (where
its engine listens, what its host firewall lets in, what nginx proxies to)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import addresses

if TYPE_CHECKING:
    from .config import StackConfig

HEAD, WORKER, REPLICA = "head", "worker", "replica"
UPSTREAM = "llmdeploy_engines"  # nginx's upstream of the engine VMs (replicas > 1)


@dataclass(frozen=True)
class Node:
    """One machine: its role (head, a Ray worker, an engine replica), its index among the machines of that role
    (0 for the head) and its private address."""

    role: str
    index: int
    ip: str

    @property
    def is_head(self) -> bool:
        return self.role == HEAD

    @property
    def is_ray_worker(self) -> bool:
        return self.role == WORKER

    @property
    def is_replica(self) -> bool:
        return self.role == REPLICA

    @property
    def name(self) -> str:
        """head, worker-0, replica-1: the machine's name among the stack's (its output folder, its Pulumi name)."""
        return HEAD if self.is_head else f"{self.role}-{self.index}"


HEAD_NODE = Node(HEAD, 0, addresses.head_ip())


def worker_count(cfg: StackConfig) -> int:
    """The stack's VMs besides the head: Ray workers, or engine replicas after the first (replicas > 1)."""
    if cfg.deployment.ray_cluster:
        return cfg.ray.workers
    return cfg.replicas - 1 if cfg.deployment.engine_replicas else 0


def nodes(cfg: StackConfig) -> list[Node]:
    """Every machine the stack boots: the head, then each Ray worker or engine replica (index 0 is the second VM)."""
    role = WORKER if cfg.deployment.ray_cluster else REPLICA
    return [HEAD_NODE, *(Node(role, i, addresses.worker_ip(i)) for i in range(worker_count(cfg)))]


def node(cfg: StackConfig, role: str, index: int = 0) -> Node:
    """The stack's machine of this role and index: node(cfg, WORKER, 1) is the ray target's second worker."""
    for machine in nodes(cfg):
        if (machine.role, machine.index) == (role, index):
            return machine
    raise ValueError(f"{role} {index}: the stack has no such machine (target {cfg.target}: "
                     f"{', '.join(n.name for n in nodes(cfg))})")


def require_node(cfg: StackConfig, machine: Node) -> None:
    """Refuse a Node that is not one of the stack's (a worker beyond the cluster, a replica on one VM)."""
    if machine not in nodes(cfg):
        raise ValueError(f"{machine.name} ({machine.ip}): the stack has no such machine (target {cfg.target}: "
                         f"{', '.join(n.name for n in nodes(cfg))})")


def machine_name(endpoint: str, node_name: str) -> str:
    """One machine's name (and output folder): the workshop endpoint's, then the Ray node's (head, worker-0)."""
    return "/".join(part for part in (endpoint, node_name) if part)


def named_nodes(cfg: StackConfig) -> list[tuple[str, Node]]:
    """Every machine the stack boots with its name: "" for a stack of one machine, else head, worker-0, ..."""
    many = cfg.deployment.ray_cluster or cfg.replicas > 1
    return [(n.name if many else "", n) for n in nodes(cfg)]


def firewall(cfg: StackConfig, node: Node) -> dict[str, Any]:
    """Inbound TCP the host accepts: SSH, and nginx's ports where nginx runs; on Ray nodes any TCP from the cluster's
    VCN too (the cluster NSG confines it to the cluster's own VMs); on an engine replica any TCP from the head only,
    whose nginx is the engine's one caller. With Docker, what DOCKER-USER holds for containers (firewall.sh.j2)."""
    ports = [22] if not node.is_head else [22, 80, 443]
    text = ", ".join(map(str, ports[:-1])) + f" and {ports[-1]}" if len(ports) > 1 else str(ports[0])
    cluster_cidr = f"{addresses.head_ip()}/32" if node.is_replica else \
        addresses.VCN_CIDR if cfg.deployment.ray_cluster else ""
    published = {"address": node.ip, "port": cfg.engine_port, "head": addresses.head_ip()} \
        if node.is_replica and cfg.docker else {}
    return {"ports": ports, "ports_text": text, "cluster_cidr": cluster_cidr, "replica": node.is_replica,
            "containers": cfg.docker, "published": published}


def docker_publish(node: Node) -> list[str]:
    """The addresses a Docker engine publishes its port on: loopback (the same VM's nginx, and the replica's own
    health checks), and on an engine replica its private address too, for the head's nginx. Never 0.0.0.0: Docker's
    DNAT would take the port on every address, past the host firewall."""
    return ["127.0.0.1", node.ip] if node.is_replica else ["127.0.0.1"]


def engine_host(node: Node) -> str:
    """Where the engine listens: loopback behind the same VM's nginx; every interface on an engine replica,
    whose callers are the head's nginx (the cluster NSG admits the cluster, the host firewall the head only)."""
    return "0.0.0.0" if node.is_replica else "127.0.0.1"


def replica_upstreams(cfg: StackConfig, engine_port: int) -> list[str]:
    """The servers of nginx's engine upstream when replicas > 1: the head's own engine, then each replica's
    (fixed private IPs in the workers' subnet); empty for one VM, whose nginx proxies to loopback directly."""
    if not cfg.deployment.engine_replicas or cfg.replicas < 2:
        return []
    return [f"127.0.0.1:{engine_port}", *(f"{ip}:{engine_port}" for ip in addresses.worker_ips(cfg.replicas - 1))]


def engine_url(cfg: StackConfig, engine_port: int) -> str:
    """What nginx's proxy_pass names: the upstream of the engine VMs, or the one engine on loopback."""
    return f"http://{UPSTREAM if replica_upstreams(cfg, engine_port) else f'127.0.0.1:{engine_port}'}"
