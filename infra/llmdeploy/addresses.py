"""The stack's private address plan (pure: the Pulumi network, the rendered user-data and the host firewall
read it): the VCN, its public subnet (the endpoint VM, the Ray head) and the private one of the Ray workers,
and the fixed private IPs of the ray target's nodes, which each worker's user-data needs before any VM exists."""
from __future__ import annotations

import ipaddress

VCN_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"  # public: the endpoint VM (vm target) or the Ray head, behind the internet gateway
WORKER_SUBNET_CIDR = "10.42.2.0/24"  # private: Ray workers, out through the NAT gateway only
FIRST_HOST = 10  # OCI keeps a subnet's first addresses for itself; start the fixed ones clear of them
MAX_WORKERS = 200


def head_ip() -> str:
    return str(ipaddress.ip_network(SUBNET_CIDR)[FIRST_HOST])


def worker_ip(index: int) -> str:
    if not 0 <= index < MAX_WORKERS:
        raise ValueError(f"worker index {index} outside 0..{MAX_WORKERS - 1}")
    return str(ipaddress.ip_network(WORKER_SUBNET_CIDR)[FIRST_HOST + index])


def worker_ips(count: int) -> list[str]:
    return [worker_ip(i) for i in range(count)]
