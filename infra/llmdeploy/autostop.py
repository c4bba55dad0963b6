"""Autostop on the VM: which action each shape gets, the agent's config, and the files that install it (rendered
only when idleStopMinutes or ttlHours is set, so other stacks' user-data is unchanged). The agent itself is
autostop_agent.py (installed as it is); the identity it acts as is stack/autostop.py's.

Stop or terminate: OCI bills a stopped instance of a standard (CPU) shape or of a VM.GPU.A10 shape nothing for its
compute, but keeps billing a stopped bare-metal GPU, Dense I/O or HPC shape, whose GPUs or NVMe drives it holds for
it (OCI's "Resource Billing for Stopped Instances"; the Shape model's is_billed_for_stopped_instance says the
same per shape). Those are terminated instead: a stop there would save nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import vmpaths
from .templating import VmFile, render_template

if TYPE_CHECKING:
    from .config import StackConfig
    from .template_context import HostLayout

# Shapes llmdeploy knows (shapes.SHAPES) that OCI keeps billing while stopped: bare-metal GPU shapes. Every other
# shape it knows (the VM.GPU.A10 series, the standard Flex shapes) stops billing for compute when stopped.
BILLED_WHEN_STOPPED = frozenset({"BM.GPU.A10.4", "BM.GPU.L40S.4", "BM.GPU4.8", "BM.GPU.A100-v2.8", "BM.GPU.H100.8"})
STOP = "SOFTSTOP"  # InstanceAction: an ACPI shutdown first (the engine and nginx stop cleanly), then power off
TERMINATE = "TERMINATE"  # TerminateInstance with its boot volume
IMDS = "http://169.254.169.254/opc/v2"


def action_for(shape_name: str) -> str:
    return TERMINATE if shape_name in BILLED_WHEN_STOPPED else STOP


@dataclass(frozen=True)
class AutostopContext:
    """What the autostop templates read."""

    enabled: bool
    idle_minutes: int
    ttl_hours: int
    action: str


def context(cfg: StackConfig) -> AutostopContext:
    a = cfg.autostop
    return AutostopContext(a.enabled, a.idle_minutes, a.ttl_hours, action_for(cfg.shape.name))


def agent_config(cfg: StackConfig, host_layout: HostLayout) -> dict[str, Any]:
    """The agent's settings. instance_services (llmdeploy local's stand-in) replaces the metadata service and the
    region's auth and Compute endpoints; on OCI they are the link-local metadata service and the region's."""
    services = host_layout.instance_services.rstrip("/")
    return {"idle_minutes": cfg.autostop.idle_minutes, "ttl_hours": cfg.autostop.ttl_hours,
            "action": action_for(cfg.shape.name), "engine_port": host_layout.engine_port or cfg.engine_port,
            "usage_log": host_layout.paths.usage_log, "ready_marker": vmpaths.READY_MARKER,
            "state_file": vmpaths.AUTOSTOP_STATE, "ttl_file": vmpaths.AUTOSTOP_TTL,
            "metadata_url": f"{services}/opc/v2" if services else IMDS, "api_base": services}


def autostop_files(cfg: StackConfig, ctx: dict[str, Any], host_layout: HostLayout) -> list[VmFile]:
    if not cfg.autostop.enabled:
        return []
    files = vmpaths.FILES_DIR
    return [VmFile(vmpaths.AUTOSTOP_AGENT, (Path(__file__).parent / "autostop_agent.py").read_text(), "0755"),
            VmFile(vmpaths.AUTOSTOP_CONFIG, json.dumps(agent_config(cfg, host_layout), indent=2) + "\n"),
            VmFile(f"{files}/llmdeploy-autostop.service", render_template("files/llmdeploy-autostop.service.j2", ctx)),
            VmFile(f"{files}/llmdeploy-autostop.timer", render_template("files/llmdeploy-autostop.timer.j2", ctx))]
