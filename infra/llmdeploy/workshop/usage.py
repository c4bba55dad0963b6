"""`llmdeploy workshop usage`: who of the attendees is using their endpoint, over a window: per attendee, the
requests, successes, 401s, 429s, errors, time, bytes and last request, and the attendees with none (idle).

Each endpoint VM's usage log is read over SSH as `llmdeploy usage` reads one (operate.usage.read_log) and summed by
the same code (operate.usage_report.summarize). Which key is whose comes from the roster and the stack's config, as
`pulumi up` plans them (llmdeploy.endpoints): on a shared endpoint the key named after the attendee, on their own VM
the VM's first ordinary key. Where each VM is comes from the `workshopEndpoints` output (its URL's host); the
login is the cloud stacks' (operate.cloud_access: sshPrivateKey, host keys trusted on first use). VMs are read in
parallel; one that cannot be read is a row saying why, never the end of the report.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..endpoints import EndpointPlan
from ..errors import Failure, UsageError
from ..operate.cloud_access import SshTarget
from ..operate.usage_report import NO_KEY, NO_KEY_LABEL, KeyUsage, aligned, human_size, summarize
from ..stack.output_names import WORKSHOP_ENDPOINTS

if TYPE_CHECKING:  # paramiko loads only when a command logs in
    from ..sshclient import Session

ACTIVE, IDLE, UNREACHABLE = "active", "idle", "unreachable"


@dataclass(frozen=True)
class EndpointVm:
    """One VM to read: its name (attendee id or ep<N>), where it is, and whose key is which."""

    key: str
    target: SshTarget
    attendees: tuple[tuple[str, str, str], ...]  # (attendee id, name, their key's name)


@dataclass
class AttendeeUsage:
    id: str
    name: str
    endpoint: str
    state: str  # active | idle | unreachable
    usage: KeyUsage
    problem: str = ""  # why the endpoint could not be read


@dataclass
class WorkshopUsage:
    since: str
    attendees: list[AttendeeUsage] = field(default_factory=list)
    others: dict[str, list[KeyUsage]] = field(default_factory=dict)  # per endpoint: keys that are no attendee's

    def count(self, state: str) -> int:
        return sum(1 for a in self.attendees if a.state == state)

    def as_json(self) -> str:
        def row(a: AttendeeUsage) -> dict[str, Any]:
            found = asdict(a.usage)
            found.pop("name")
            return {"id": a.id, "name": a.name, "endpoint": a.endpoint, "state": a.state, "problem": a.problem,
                    "key": a.usage.name, **found}

        return json.dumps({"since": self.since or None, "attendees": [row(a) for a in self.attendees],
                           "others": {ep: [asdict(k) for k in keys] for ep, keys in self.others.items()}}, indent=2)


def endpoint_vms(plans: list[EndpointPlan], outputs: dict[str, Any], port: int, source: str) -> list[EndpointVm]:
    """Every planned endpoint with an attendee, placed by the `workshopEndpoints` output."""
    urls = outputs.get(WORKSHOP_ENDPOINTS)
    if not isinstance(urls, dict):
        raise UsageError(f"{source} has no '{WORKSHOP_ENDPOINTS}' output: has `pulumi up` finished for this stack? "
                         f"(outputs present: {', '.join(sorted(outputs)) or 'none'})")
    found = []
    for plan in plans:
        host = urlsplit(str(urls.get(plan.key) or "")).hostname
        if not host:
            raise UsageError(f"{source}: '{WORKSHOP_ENDPOINTS}' has no URL for endpoint {plan.key}: run `pulumi up` "
                             "after editing the roster")
        found.append(EndpointVm(plan.key, SshTarget(plan.cfg.admin_user, host, port),
                                tuple((a.id, a.name, plan.key_for(a)) for a in plan.attendees)))
    return found


def read_logs(vms: list[EndpointVm], login: Callable[[SshTarget], Session], read: Callable[[Session, str], str],
              concurrency: int) -> dict[str, str | Failure]:
    """Each VM's log text, or the Failure that stopped it (a VM that is down, a changed host key, no sudo, a
    connection dropped half-way)."""
    from paramiko import SSHException

    def one(vm: EndpointVm) -> str | Failure:
        try:
            session = login(vm.target)
        except Failure as exc:
            return exc
        try:
            return read(session, vm.target.where)
        except Failure as exc:
            return exc
        except (SSHException, OSError, EOFError) as exc:
            return Failure(f"{vm.target.where}: the connection failed while reading the log ({type(exc).__name__}: "
                           f"{exc})")
        finally:
            session.close()

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(vms) or 1))) as pool:
        return dict(zip((vm.key for vm in vms), pool.map(one, vms)))


def report(vms: list[EndpointVm], logs: dict[str, str | Failure], window: timedelta | None,
           now: datetime | None = None) -> WorkshopUsage:
    """Per attendee (in id order), with every endpoint's other keys kept apart."""
    rows: list[AttendeeUsage] = []
    result = WorkshopUsage(since="")
    for vm in vms:
        log = logs[vm.key]
        if isinstance(log, Failure):
            rows += [AttendeeUsage(a_id, name, vm.key, UNREACHABLE, KeyUsage(key), str(log).splitlines()[0])
                     for a_id, name, key in vm.attendees]
            continue
        summed = summarize(log.splitlines(), window, now)
        result.since = summed.since
        by_name = {k.name: k for k in summed.keys}
        for a_id, name, key in vm.attendees:
            usage = by_name.pop(key, None) or KeyUsage(key)
            rows.append(AttendeeUsage(a_id, name, vm.key, ACTIVE if usage.requests else IDLE, usage))
        if by_name:
            result.others[vm.key] = list(by_name.values())
    if not result.since and window is not None:  # every VM unreachable: the window still says where it starts
        result.since = summarize([], window, now).since
    result.attendees = sorted(rows, key=lambda a: a.id)
    return result


COLUMNS = ("attendee", "endpoint", "state", "requests", "ok", "401", "429", "errors", "avg s", "engine s", "in",
           "out", "last seen")


def table(found: WorkshopUsage) -> str:
    def row(a: AttendeeUsage) -> tuple[str, ...]:
        k = a.usage
        if a.state == UNREACHABLE:
            return (a.id, a.endpoint, a.state, *("?",) * 9, "")
        return (a.id, a.endpoint, a.state, str(k.requests), str(k.ok), str(k.unauthorized), str(k.throttled),
                str(k.client_errors + k.server_errors), f"{k.request_seconds / k.requests:.3f}" if k.requests else "-",
                f"{k.upstream_seconds:.1f}", human_size(k.request_bytes), human_size(k.response_bytes), k.last or "-")

    rows = [COLUMNS] + [row(a) for a in found.attendees]
    lines = aligned(rows, text_columns=3)
    window = f"since {found.since}" if found.since else "the whole log"
    lines.append(f"({window}: {found.count(ACTIVE)} active, {found.count(IDLE)} idle, {found.count(UNREACHABLE)} "
                 "unreachable)")
    problems = {a.endpoint: a.problem for a in found.attendees if a.problem}
    lines += [f"unreachable: {endpoint}: {problem}" for endpoint, problem in problems.items()]
    for endpoint, keys in found.others.items():
        parts = [f"{NO_KEY_LABEL if k.name in (NO_KEY, NO_KEY_LABEL) else k.name} {k.requests}" for k in keys]
        lines.append(f"{endpoint}: requests by no attendee's key: {', '.join(parts)}")
    return "\n".join(lines)
