"""The local section of Pulumi.yaml: the QEMU VM of the local target (`llmdeploy local up`)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engines import Engine, cpu_engine_names
from .deployment import DeploymentKind
from .reader import Reader


@dataclass(frozen=True)
class LocalVm:
    """The QEMU VM of the local target (`llmdeploy local up`)."""

    vcpus: int
    memory_mb: int


def parse_local_vm(r: Reader, kind: DeploymentKind, engine: Engine, os_name: str) -> LocalVm:
    if kind.local_vm:
        # The local VM is a Debian 12 image built by `llmdeploy local up`, on CPUs only.
        if not engine.runs_on_cpus and not r.failed("engine"):
            names = cpu_engine_names()
            r.bad("engine", engine.name, f"one of {', '.join(names)} for the local target (the local VM has no GPU: "
                  "llama.cpp, vLLM's CPU build or Xinference's llama.cpp backend)", names[0])
        if os_name != "debian-12" and not r.failed("os"):
            r.bad("os", os_name, "debian-12 for the local target (`llmdeploy local up` boots a Debian 12 image it "
                  "builds with debootstrap)", "debian-12")
    return LocalVm(r.int("localVcpus", 1, 64), r.int("localMemoryMb", 1024, 262144))
