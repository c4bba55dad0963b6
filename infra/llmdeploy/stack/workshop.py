"""A workshop: one VM per attendee (dedicated) or a few VMs with a key per attendee (shared), all in one
network, every resource named after the attendee or endpoint it serves, never after a list position. On the
ray target, one Ray cluster (with its own network: its nodes' addresses are fixed) serves every attendee."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from ..config import StackConfig
from ..endpoints import EndpointPlan
from ..roster import Attendee
from .gates import SshAuth
from .network import Network, NetworkArgs
from .autostop import AutostopArgs, AutostopIdentity
from .ray import RayArgs, RayClusterEndpoint
from .tags import freeform_tags
from .vm import PublicEndpoint, VmArgs, VmEndpoint


@dataclass(frozen=True)
class WorkshopEndpoint:
    key: str  # the name part of its resources: the attendee id, or ep<N>
    vm: VmArgs | RayArgs
    tags: dict[str, str]
    attendees: tuple[tuple[Attendee, str], ...]  # whom it serves, each with the name of their API key


@dataclass(frozen=True)
class WorkshopArgs:
    network: NetworkArgs | None  # the VMs' shared network; None for a Ray cluster (it has its own)
    network_tags: dict[str, str]
    endpoints: tuple[WorkshopEndpoint, ...]

    @classmethod
    def from_plans(cls, cfg: StackConfig, plans: list[EndpointPlan], project: str, ssh: SshAuth,
                   tenancy_id: str = "") -> WorkshopArgs:
        """ValueError (VmArgs.from_config) for an endpoint whose smoke test could not run, or for autostop without a
        known tenancy."""
        endpoints = tuple(WorkshopEndpoint(
            plan.key, RayArgs.from_config(plan.cfg, ssh) if plan.cfg.deployment.ray_cluster else
            VmArgs.from_config(plan.cfg, ssh, tenancy_id),
            freeform_tags(plan.cfg, project, plan.attendees[0].id if not plan.shared else ""),
            tuple((a, plan.key_for(a)) for a in plan.attendees)) for plan in plans)
        network = None if cfg.deployment.ray_cluster else NetworkArgs.from_config(cfg)
        return cls(network, freeform_tags(cfg, project), endpoints)


def _entry(endpoint: WorkshopEndpoint, vm: PublicEndpoint, attendee: Attendee,
           key_name: str) -> pulumi.Output[dict[str, Any]]:
    return pulumi.Output.all(vm.endpoint_url, vm.api_keys, vm.ca_certificate).apply(lambda v: {
        "name": attendee.name, "email": attendee.email, "endpointUrl": v[0], "openaiBaseUrl": f"{v[0]}/v1",
        "apiKey": v[1].get(key_name, ""), "model": endpoint.vm.model_name, "caCertificate": v[2],
        "endpoint": endpoint.key, **({"chatUrl": vm.chat_url} if vm.chat_url else {})})


def _autostop_identities(name: str, vms: list[tuple[VmArgs, VmEndpoint]], tags: dict[str, str],
                         opts: pulumi.ResourceOptions) -> None:
    """One dynamic group and policy for all the workshop's VMs with autostop (one per distinct action: stop on
    shapes that stop billing, terminate on the rest), not one per VM: a tenancy's dynamic groups are a service
    limit, and the policy's condition keeps each instance to itself all the same."""
    by_args: dict[AutostopArgs, list[pulumi.Output[str]]] = {}
    for args, vm in vms:
        if args.autostop is not None:
            by_args.setdefault(args.autostop, []).append(vm.instance_id)
    for autostop, instance_ids in by_args.items():
        suffix = f"-{autostop.action.lower()}" if len(by_args) > 1 else ""
        AutostopIdentity(f"{name}{suffix}", autostop, instance_ids, tags, opts)


class Workshop(pulumi.ComponentResource):
    attendees: pulumi.Output[dict[str, dict[str, Any]]]
    endpoint_urls: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: WorkshopArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:workshop:Workshop", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = Network(f"{name}-net", args.network, args.network_tags, opts=child) if args.network else None
        entries: dict[str, pulumi.Output[dict[str, Any]]] = {}
        urls: dict[str, pulumi.Output[str]] = {}
        vms: list[tuple[VmArgs, VmEndpoint]] = []
        for endpoint in args.endpoints:
            vm: PublicEndpoint
            if isinstance(endpoint.vm, RayArgs):
                vm = RayClusterEndpoint(f"{name}-{endpoint.key}", endpoint.vm, endpoint.tags, opts=child)
            else:
                vm = VmEndpoint(f"{name}-{endpoint.key}", endpoint.vm, endpoint.tags, network=network, opts=child,
                                own_autostop=False)
                vms.append((endpoint.vm, vm))
            urls[endpoint.key] = vm.endpoint_url
            for attendee, key_name in endpoint.attendees:
                entries[attendee.id] = _entry(endpoint, vm, attendee, key_name)
        _autostop_identities(name, vms, args.network_tags, child)
        self.attendees = pulumi.Output.secret(pulumi.Output.all(**entries)) if entries else \
            pulumi.Output.secret(pulumi.Output.from_input({}))
        self.endpoint_urls = pulumi.Output.all(**urls) if urls else pulumi.Output.from_input({})
        self.register_outputs({"attendees": self.attendees, "endpointUrls": self.endpoint_urls})
