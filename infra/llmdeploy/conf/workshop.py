"""The workshop section of Pulumi.yaml (workshopRoster, workshopLayout, ...) and replicas, the engine VMs behind
one nginx, which a workshop does not take."""
from __future__ import annotations

from dataclasses import dataclass

from .. import addresses
from .deployment import DeploymentKind
from .reader import DOMAIN_RE, RATE_RE, Reader


@dataclass(frozen=True)
class WorkshopConfig:
    roster: str  # path relative to the project; empty: not a workshop
    layout: str  # dedicated | shared
    endpoints: int
    domain: str
    attendee_rate: str
    hours: int


def parse_replicas(r: Reader, kind: DeploymentKind) -> int:
    """Engine VMs behind the head's nginx: the vm target only, one stack (not a workshop), and no secret the
    engine VMs would need (hfToken reaches the head alone)."""
    replicas = r.int("replicas", 1, addresses.MAX_WORKERS + 1)
    if replicas == 1 or r.failed("replicas"):
        return replicas
    if not kind.engine_replicas and not r.failed("target"):
        fix = "on the ray target Ray Serve scales: rayMinReplicas and rayMaxReplicas" if kind.ray_cluster else \
            "on the datascience target: dsInstanceCount" if kind.model_deployment else "the local target is one VM"
        r.bad("replicas", replicas, f"1 on the {kind} target (replicas puts engine VMs behind the vm target's "
              f"nginx; {fix})", "1")
    elif r.str("workshopRoster"):
        r.bad("replicas", replicas, "1 for a workshop (each attendee's endpoint is one VM; a shared layout "
              "scales with workshopEndpoints)", "1")
    elif r.secret("hfToken").reveal():
        r.bad("replicas", replicas, "1 with hfToken set (the token is delivered to the head only; serve an "
              "ungated model, or one VM)", "1")
    return replicas


def parse_workshop(r: Reader, kind: DeploymentKind) -> WorkshopConfig:
    roster = r.str("workshopRoster")
    layout = r.choice("workshopLayout", ("dedicated", "shared"))
    domain = r.str("workshopDomain").lower().rstrip(".")
    if domain and not DOMAIN_RE.fullmatch(domain):
        r.bad("workshopDomain", domain, "a DNS name such as ws.example.org", "ws.example.org")
    rate = r.str("workshopAttendeeRate")
    if not RATE_RE.fullmatch(rate):
        r.bad("workshopAttendeeRate", rate, "an nginx rate such as 30r/m", "30r/m")
    if roster and not kind.boots_user_data:
        r.bad("target", kind.name, "vm or ray for a workshop (workshopRoster is set)", "vm")
    elif roster and kind.ray_cluster and (layout != "shared" or r.int("workshopEndpoints", 1, 100) != 1):
        r.bad("workshopLayout", layout, "shared with workshopEndpoints 1 on the ray target (one cluster serves "
              "every attendee, each with a key of their own; rayMaxReplicas scales it)",
              "shared; pulumi config set workshopEndpoints 1")
    return WorkshopConfig(roster, layout, r.int("workshopEndpoints", 1, 100), domain, rate,
                          r.int("workshopHours", 1, 720))
