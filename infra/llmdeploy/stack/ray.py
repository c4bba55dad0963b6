"""Target `ray`: a Ray cluster serving one model through Ray Serve LLM (vLLM) behind the head's nginx.

The head has the reserved public IP, DNS, nginx (TLS, API keys, rate limits) and a Ray node; rayWorkers worker
VMs have private IPs only, in a subnet that reaches out through a NAT gateway. The nodes share the cluster NSG,
whose ingress admits its own members only. A generated token turns Ray's token auth on: a Pulumi secret, it
reaches every node over SSH after boot (the workers through the head as jump host), never in user-data.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from .. import addresses
from ..bundle import Provisioning
from ..config import StackConfig
from ..render import render
from ..shapes import Shape
from ..topology import nodes
from . import gates
from .api_keys import generate_api_keys, generate_secret, pulumi_webui_secret_key
from .network import Network
from .vm import PublicEndpoint, VmArgs, checked_boot, dns_record, launch_instance, reserved_ip

RAY_TOKEN_LENGTH = 64  # as Ray's own (`ray get-auth-token --generate`: 256 bits)


@dataclass(frozen=True)
class RayArgs:
    """The head (built as the vm target's VM, in a network with the cluster's subnet and NSG) and the workers."""

    head: VmArgs
    head_ip: str
    worker_shape: Shape
    worker_ips: tuple[str, ...]
    worker_boots: tuple[Provisioning, ...]  # render(cfg, node=<Ray worker i>).provisioning: no secret in it

    @property
    def model_name(self) -> str:
        return self.head.model_name

    @classmethod
    def from_config(cls, cfg: StackConfig, ssh: gates.SshAuth) -> RayArgs:
        """ValueError for a config the smoke test could not check (gates.smoke_acme_roots)."""
        if not cfg.deployment.ray_cluster:
            raise ValueError(f"target: got '{cfg.target}'; RayArgs are the ray target's")
        return cls(VmArgs.from_config(cfg, ssh), addresses.head_ip(), cfg.ray.worker_shape,
                   tuple(addresses.worker_ips(cfg.ray.workers)),
                   tuple(checked_boot(f"worker {n.index}", render(cfg, node=n).provisioning)
                         for n in nodes(cfg) if n.is_ray_worker))


class RayClusterEndpoint(PublicEndpoint):
    def __init__(self, name: str, args: RayArgs, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:ray:RayClusterEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        head_args = args.head
        network = Network(f"{name}-net", head_args.network, tags, opts=child)
        if network.worker_subnet_id is None or network.cluster_nsg_id is None:
            raise ValueError("RayArgs.head.network must have private_nodes set (NetworkArgs.from_config does)")
        token = generate_secret(f"{name}-ray-token", self, RAY_TOKEN_LENGTH)
        ray_token = token.value

        head = launch_instance(f"{name}-head", head_args, head_args.boot, network.subnet_id,
                               [network.nsg_id, network.cluster_nsg_id], "head", tags, child, private_ip=args.head_ip)
        ip = reserved_ip(name, head_args.compartment_id, head, tags, self)
        for index, (worker_ip, boot) in enumerate(zip(args.worker_ips, args.worker_boots)):
            worker = launch_instance(f"{name}-worker-{index}", head_args, boot, network.worker_subnet_id,
                                     [network.cluster_nsg_id], f"worker{index}", tags, child, shape=args.worker_shape,
                                     private_ip=worker_ip)
            # Through the head: its sshd must be up, and the worker's token must arrive for it to join.
            gates.worker_readiness(f"{name}-worker-{index}", head_args.readiness, worker_ip, ip.ip_address, ray_token,
                                   [worker, head, ip], [worker.id, token.id], self, boot.bundle)
        keys = generate_api_keys(name, list(head_args.api_key_names), self)
        self.api_keys = keys.values
        # Open WebUI on the head (chatUi open-webui): its step waits for this key, as on the vm target.
        webui_key = pulumi_webui_secret_key(name, self) if head_args.readiness.secrets.webui else ""
        ready = gates.readiness(name, head_args.readiness, ip.ip_address, self.api_keys,
                                [head, ip, *dns_record(name, head_args, ip, child)], [head.id, token.id, *keys.ids],
                                self, head_args.boot.bundle, ray_token=ray_token, webui_secret_key=webui_key)
        self._publish(name, head_args, ip, ready)
