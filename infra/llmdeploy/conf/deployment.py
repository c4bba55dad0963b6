"""What each deployment kind (the `target` config key: vm, ray, datascience, local) is, as properties the code asks
instead of comparing the kind's name: whether it boots this project's user-data on OCI, runs a Ray cluster, puts
engine replicas behind one nginx, and so on. `llmdeploy:target` keeps its name in Pulumi config; in the code a
deployment kind is not smoke's endpoint target."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeploymentKind:
    name: str
    on_oci: bool  # creates OCI resources (its provider needs a region and a compartment)
    boots_user_data: bool  # OCI VMs that boot this project's user-data (and take sshPublicKeys)
    ray_cluster: bool  # a Ray head and Ray workers; Ray Serve LLM serves the model
    engine_replicas: bool  # may put more engine VMs behind the head's nginx (replicas > 1)
    model_deployment: bool  # an OCI Data Science model deployment: no host of its own, vLLM's container
    local_vm: bool  # the QEMU VM of `llmdeploy local up`: CPUs only, the local VM's own RAM
    checks_fit: bool  # a model on one machine: its shape must hold it (Ray sizes replicas itself)

    @property
    def has_gpus(self) -> bool:
        """Whether a GPU shape's GPUs reach the engine (the local VM has CPUs only)."""
        return not self.local_vm

    def __str__(self) -> str:
        return self.name


VM = DeploymentKind("vm", on_oci=True, boots_user_data=True, ray_cluster=False, engine_replicas=True,
                    model_deployment=False, local_vm=False, checks_fit=True)
RAY = DeploymentKind("ray", on_oci=True, boots_user_data=True, ray_cluster=True, engine_replicas=False,
                     model_deployment=False, local_vm=False, checks_fit=False)
DATASCIENCE = DeploymentKind("datascience", on_oci=True, boots_user_data=False, ray_cluster=False,
                             engine_replicas=False, model_deployment=True, local_vm=False, checks_fit=True)
LOCAL = DeploymentKind("local", on_oci=False, boots_user_data=False, ray_cluster=False, engine_replicas=False,
                       model_deployment=False, local_vm=True, checks_fit=False)

DEPLOYMENTS = {kind.name: kind for kind in (VM, RAY, DATASCIENCE, LOCAL)}
TARGETS = tuple(DEPLOYMENTS)  # the values of the `target` key


def deployment(name: str) -> DeploymentKind:
    """The kind named by a `target` value; an unknown one (a config problem already reported) reads as vm."""
    return DEPLOYMENTS.get(name, VM)
