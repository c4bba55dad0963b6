"""A workshop: one VM per attendee (dedicated) or a few VMs with a key per attendee (shared), all in one
network, every resource named after the attendee or endpoint it serves, never after a list position. On the
ray target, one Ray cluster (with its own network) serves every attendee, each with a key of their own."""
from __future__ import annotations

from typing import Any

import pulumi

from ..config import StackConfig
from ..workshop.configs import EndpointPlan
from .network import Network
from .ray import RayClusterEndpoint
from .tags import freeform_tags
from .vm import PublicEndpoint, VmEndpoint


def _entry(plan: EndpointPlan, vm: PublicEndpoint, attendee_id: str) -> pulumi.Output[dict[str, Any]]:
    attendee = next(a for a in plan.attendees if a.id == attendee_id)
    key_name = plan.key_for(attendee)
    return pulumi.Output.all(vm.endpoint_url, vm.api_keys, vm.ca_certificate).apply(lambda v: {
        "name": attendee.name, "email": attendee.email, "endpointUrl": v[0], "openaiBaseUrl": f"{v[0]}/v1",
        "apiKey": v[1].get(key_name, ""), "model": plan.cfg.model_name, "caCertificate": v[2],
        "endpoint": plan.key})


class Workshop(pulumi.ComponentResource):
    attendees: pulumi.Output[dict[str, dict[str, Any]]]
    endpoint_urls: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, cfg: StackConfig, plans: list[EndpointPlan], project: str,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:workshop:Workshop", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # A Ray cluster has a network of its own (its nodes' addresses are fixed); VMs share one.
        network = Network(f"{name}-net", cfg, freeform_tags(cfg, project), opts=child) if cfg.target == "vm" else None
        entries: dict[str, pulumi.Output[dict[str, Any]]] = {}
        urls: dict[str, pulumi.Output[str]] = {}
        for plan in plans:
            attendee = plan.attendees[0].id if not plan.shared else ""
            tags = freeform_tags(plan.cfg, project, attendee)
            vm: PublicEndpoint = VmEndpoint(
                f"{name}-{plan.key}", plan.cfg, tags, network=network, opts=child) if network else \
                RayClusterEndpoint(f"{name}-{plan.key}", plan.cfg, tags, opts=child)
            urls[plan.key] = vm.endpoint_url
            for a in plan.attendees:
                entries[a.id] = _entry(plan, vm, a.id)
        self.attendees = pulumi.Output.secret(pulumi.Output.all(**entries)) if entries else \
            pulumi.Output.secret(pulumi.Output.from_input({}))
        self.endpoint_urls = pulumi.Output.all(**urls) if urls else pulumi.Output.from_input({})
        self.register_outputs({"attendees": self.attendees, "endpointUrls": self.endpoint_urls})
