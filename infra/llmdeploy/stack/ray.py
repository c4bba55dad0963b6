"""Target `ray`: a Ray cluster serving one model through Ray Serve LLM (vLLM) behind the head's nginx.

The head has the reserved public IP, DNS, nginx (TLS, API keys, rate limits) and a Ray node; rayWorkers worker
VMs have private IPs only, in a subnet that reaches out through a NAT gateway. The nodes share the cluster NSG,
whose ingress admits its own members only. A generated token turns Ray's token auth on: a Pulumi secret, it
reaches every node over SSH after boot (the workers through the head as jump host), never in user-data.
"""
from __future__ import annotations

import pulumi
import pulumi_random as random

from .. import addresses
from ..config import StackConfig
from ..render import render
from . import gates
from .network import Network
from .vm import PublicEndpoint, api_keys, dns_record, launch, reserved_ip

RAY_TOKEN_LENGTH = 64  # as Ray's own (`ray get-auth-token --generate`: 256 bits)


class RayClusterEndpoint(PublicEndpoint):
    worker_ips: list[str]

    def __init__(self, name: str, cfg: StackConfig, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        if cfg.target != "ray":
            raise ValueError(f"target: got '{cfg.target}'; RayClusterEndpoint builds the ray target only")
        gates.check_connection_settings(cfg)  # before anything is registered
        acme_roots = gates.smoke_acme_roots(cfg)
        super().__init__("llmdeploy:ray:RayClusterEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = Network(f"{name}-net", cfg, tags, opts=child)
        assert network.worker_subnet_id is not None and network.cluster_nsg_id is not None
        token = random.RandomPassword(f"{name}-ray-token", length=RAY_TOKEN_LENGTH, special=False, opts=child)
        ray_token = pulumi.Output.secret(token.result)

        head = launch(f"{name}-head", cfg, render(cfg).user_data, network.subnet_id,
                      [network.nsg_id, network.cluster_nsg_id], "head", tags, child, private_ip=addresses.head_ip())
        ip = reserved_ip(name, cfg, head, tags, self)
        passwords, self.api_keys = api_keys(name, cfg, child)
        self.worker_ips = addresses.worker_ips(cfg.ray.workers)
        for index, worker_ip in enumerate(self.worker_ips):
            worker = launch(f"{name}-worker-{index}", cfg, render(cfg, worker=index).user_data,
                            network.worker_subnet_id, [network.cluster_nsg_id], f"worker{index}", tags, child,
                            shape=cfg.ray.worker_shape, private_ip=worker_ip)
            # Through the head: its sshd must be up, and the worker's token must arrive for it to join.
            gates.worker_readiness(f"{name}-worker-{index}", cfg, worker_ip, ip.ip_address, ray_token,
                                   [worker, head, ip], [worker.id, token.id], self)
        ready = gates.readiness(name, cfg, ip.ip_address, self.api_keys, [head, ip, *dns_record(name, cfg, ip, child)],
                                [head.id, token.id, *[p.id for p in passwords]], self, ray_token=ray_token)

        self._publish(name, cfg, ip, ready, acme_roots)
