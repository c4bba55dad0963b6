"""The identity the autostop agent acts as (autostop_agent.py): a dynamic group whose matching rule names the
stack's instances by id, and a policy in the stack's compartment that lets each of them only power itself off
(INSTANCE_POWER_ACTIONS) or, on shapes that bill while stopped, only terminate itself (INSTANCE_DELETE).

Why by instance id: OCI's matching rules take an instance's id, its compartment or a *defined* tag
(tag.<namespace>.<key>.value), never a freeform tag, and a stack's tags are freeform (stack/tags.py); the id is the
narrowest anyway. `request.instance.id = target.instance.id` keeps each instance to itself even within the group.
The terminate keeps the boot volume (preserveBootVolume=true): deleting it needs volume permissions that no
condition can tie to one instance; `pulumi destroy` or the reaper removes it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_oci import identity

from ..autostop import TERMINATE, action_for
from ..config import StackConfig


@dataclass(frozen=True)
class AutostopArgs:
    tenancy_id: str  # dynamic groups live in the tenancy (its root compartment)
    compartment_id: str  # the stack's, where the instances are and the policy is
    action: str  # autostop.STOP or autostop.TERMINATE

    @classmethod
    def from_config(cls, cfg: StackConfig, tenancy_id: str) -> AutostopArgs | None:
        """None when autostop is off: nothing is created."""
        if not cfg.autostop.enabled:
            return None
        return cls(tenancy_id, cfg.compartment_id, action_for(cfg.shape.name))

    @property
    def permission(self) -> str:
        return "INSTANCE_DELETE" if self.action == TERMINATE else "INSTANCE_POWER_ACTIONS"


def matching_rule(instance_ids: Sequence[str]) -> str:
    return "Any {" + ", ".join(f"instance.id = '{i}'" for i in instance_ids) + "}"


def statements(group_id: str, args: AutostopArgs) -> list[str]:
    return [f"Allow dynamic-group id {group_id} to {{{args.permission}}} in compartment id {args.compartment_id} "
            "where request.instance.id = target.instance.id"]


class AutostopIdentity(pulumi.ComponentResource):
    def __init__(self, name: str, args: AutostopArgs, instance_ids: Sequence[pulumi.Input[str]],
                 tags: dict[str, str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:autostop:AutostopIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.group = identity.DynamicGroup(
            f"{name}-autostop", compartment_id=args.tenancy_id, name=f"{name}-autostop",
            description=f"llmdeploy autostop: the instances of {name}, which may only {args.action} themselves",
            matching_rule=pulumi.Output.all(*instance_ids).apply(matching_rule), freeform_tags=tags, opts=child)
        self.policy = identity.Policy(
            f"{name}-autostop", compartment_id=args.compartment_id, name=f"{name}-autostop",
            description=f"llmdeploy autostop: each instance of {name} may {args.action} itself, nothing else",
            statements=self.group.id.apply(lambda group_id: statements(group_id, args)), freeform_tags=tags,
            opts=child)
        self.register_outputs({})
