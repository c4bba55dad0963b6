"""Autostop's keys (idleStopMinutes, ttlHours): when the VM stops or terminates itself. The agent that does it is
autostop.py's; the identity it acts as, stack/autostop.py's."""
from __future__ import annotations

from dataclasses import dataclass

from .deployment import DeploymentKind
from .reader import Reader

MAX_IDLE_MINUTES = 7 * 24 * 60  # a week: beyond it, ttlHours says what is meant
MAX_TTL_HOURS = 366 * 24


@dataclass(frozen=True)
class Autostop:
    idle_minutes: int = 0  # 0: never on idle
    ttl_hours: int = 0  # 0: no time limit

    @property
    def enabled(self) -> bool:
        return bool(self.idle_minutes or self.ttl_hours)


def parse_autostop(r: Reader, kind: DeploymentKind, replicas: int) -> Autostop:
    """Both keys off by default. The agent stops the one VM it runs on: a stack of several VMs (Ray workers, engine
    replicas) or none of its own (a model deployment) would keep billing for the rest, so it is refused there. A
    workshop's VMs each stop themselves (one dynamic group names them all: stack/workshop.py)."""
    autostop = Autostop(idle_minutes=r.int("idleStopMinutes", 0, MAX_IDLE_MINUTES),
                        ttl_hours=r.int("ttlHours", 0, MAX_TTL_HOURS))
    if not autostop.enabled or r.failed("target"):
        return autostop
    key = "idleStopMinutes" if autostop.idle_minutes else "ttlHours"
    value = autostop.idle_minutes or autostop.ttl_hours
    if kind.ray_cluster or kind.model_deployment:
        what = "a Ray cluster's workers" if kind.ray_cluster else "a model deployment (no VM of its own)"
        r.bad(key, value, f"0 on the {kind} target: autostop stops the one VM it runs on, and would leave "
              f"{what} billing", "0")
    elif replicas > 1 and not r.failed("replicas"):
        r.bad(key, value, f"0 with replicas {replicas}: autostop stops the head only, and the engine replicas "
              "would keep billing (set replicas 1 to use autostop)", "0")
    return autostop
