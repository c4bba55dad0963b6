"""Teardown you can trust, and the reaper: both find resources by their freeform tags through OCI's Search
service, so they see what Pulumi's state no longer knows.

- `workshop teardown` runs `pulumi destroy`, then asks Search for anything still tagged with the stack
  (stack, project and managed-by=llmdeploy) that is not TERMINATED or DELETED. Search is eventually
  consistent (a resource deleted a moment ago can still be listed for a while), so it asks again every few
  seconds for up to --wait seconds before it reports what remains.
- `reap --expired` asks for every resource tagged managed-by=llmdeploy, keeps those whose expires-at tag is
  in the past, lists them and, only with --delete, deletes them: instances first (terminated with their boot
  volume, then waited for), then the network parts in the order OCI accepts (public IPs, NSGs, subnets,
  route tables, security lists, internet gateways, VCNs). Types it cannot delete are named, with what to do.
  DNS records carry no tags, so Search cannot find them: that limitation is printed, not hidden.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import Failure, UsageError
from ..polling import Deadline
from ..stack.tags import MANAGED_BY
from . import oci_clients

GONE = frozenset({"TERMINATED", "DELETED"})
POLL_SECONDS = 10.0

# resource type (as Search names it) -> (client, delete method, how it is called); in deletion order
DELETERS: list[tuple[str, str, str]] = [
    ("Instance", "compute", "terminate_instance"),
    ("PublicIp", "network", "delete_public_ip"),
    ("NetworkSecurityGroup", "network", "delete_network_security_group"),
    ("Subnet", "network", "delete_subnet"),
    ("RouteTable", "network", "delete_route_table"),
    ("SecurityList", "network", "delete_security_list"),
    ("InternetGateway", "network", "delete_internet_gateway"),
    ("Vcn", "network", "delete_vcn"),
]
ORDER = {kind: index for index, (kind, _, _) in enumerate(DELETERS)}
DNS_NOTE = ("DNS records (the A records of dnsZone stacks) carry no tags, so Search cannot find them: pulumi destroy "
            "removes them; if the state is lost, delete them with `oci dns record rrset delete --zone-name-or-id ZONE "
            "--domain HOST --rtype A`")


@dataclass(frozen=True)
class Found:
    """One resource as Search reports it."""

    kind: str
    id: str
    name: str
    compartment: str
    state: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def expires_at(self) -> str:
        return self.tags.get("expires-at", "")

    def line(self) -> str:
        who = " ".join(f"{k}={self.tags[k]}" for k in ("stack", "attendee", "expires-at") if self.tags.get(k))
        return f"  {self.kind:<26} {self.state:<12} {self.name or '-':<40} {self.id}  {who}"


def tag_pair(key: str, value: str) -> str:
    for text in (key, value):
        if "'" in text or "\\" in text:
            raise UsageError(f"cannot search for the tag {key}={value}: quotes and backslashes are not allowed")
    return f"(freeformTags.key = '{key}' && freeformTags.value = '{value}')"


def live_only() -> str:
    return " && ".join(f"lifecycleState != '{s}'" for s in sorted(GONE))


def stack_query(project: str, stack: str) -> str:
    return (f"query all resources where {tag_pair('stack', stack)} && {tag_pair('project', project)} && "
            f"{tag_pair(*MANAGED_BY)} && {live_only()}")


def managed_query(compartment: str = "") -> str:
    where = f" && compartmentId = '{compartment}'" if compartment else ""
    if "'" in compartment:
        raise UsageError("--compartment must be an OCID (ocid1.compartment.oc1..xxxx)")
    return f"query all resources where {tag_pair(*MANAGED_BY)}{where} && {live_only()}"


def _has_tag(tags: dict[str, str], key: str, value: str) -> bool:
    return tags.get(key) == value


def search(config: dict[str, Any], query: str) -> list[Found]:
    """Every resource matching a structured query (all pages), minus what is already gone."""
    oci = oci_clients.sdk()
    client = oci_clients.client("search", config)
    details = oci.resource_search.models.StructuredSearchDetails(type="Structured", query=query,
                                                                 matching_context_type="NONE")
    try:
        items = oci.pagination.list_call_get_all_results(client.search_resources, details).data
    except oci_clients.service_errors() as exc:
        raise Failure(f"OCI Search refused the query: {oci_clients.describe(exc)} (the API key's user needs "
                      "`inspect all-resources` or read permission in the compartment)") from None
    found = [Found(kind=str(i.resource_type), id=str(i.identifier), name=str(i.display_name or ""),
                   compartment=str(i.compartment_id or ""), state=str(i.lifecycle_state or "").upper(),
                   tags={str(k): str(v) for k, v in (i.freeform_tags or {}).items()}) for i in items]
    return [f for f in found if f.state not in GONE]


def remaining_after_destroy(config: dict[str, Any], project: str, stack: str, wait: float,
                            say: Callable[[str], None], poll: float | None = None) -> list[Found]:
    """What Search still lists for the stack after waiting up to `wait` seconds for its index to catch up."""
    poll = POLL_SECONDS if poll is None else poll
    query = stack_query(project, stack)
    deadline = Deadline(wait)
    while True:
        found = [f for f in search(config, query)
                 if _has_tag(f.tags, "stack", stack) and _has_tag(f.tags, "project", project)]
        if not found or deadline.expired:
            return found
        say(f"search still lists {len(found)} resource(s) of stack '{stack}'; asking again in {poll:.0f}s "
            f"(Search is eventually consistent; up to {deadline.left:.0f}s more)")
        deadline.sleep(poll)


def parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else None


def expired(found: list[Found], now: datetime) -> tuple[list[Found], list[Found]]:
    """(expired, with an expires-at tag that is not a time)."""
    past, unreadable = [], []
    for f in found:
        if not f.expires_at:
            continue
        when = parse_time(f.expires_at)
        if when is None:
            unreadable.append(f)
        elif when <= now:
            past.append(f)
    return sorted(past, key=lambda f: (ORDER.get(f.kind, len(ORDER)), f.kind, f.name)), unreadable


@dataclass
class Outcome:
    found: Found
    status: str  # DELETED | TERMINATED | FAILED | CANNOT
    detail: str

    def line(self) -> str:
        return f"{self.status:<10} {self.found.kind:<26} {self.found.name or '-':<40} {self.found.id}  {self.detail}"


def delete_all(config: dict[str, Any], targets: list[Found], wait: float, say: Callable[[str], None],
               poll: float | None = None) -> list[Outcome]:
    """Delete in dependency order; every resource gets an outcome, nothing raises."""
    poll = POLL_SECONDS if poll is None else poll
    clients: dict[str, Any] = {}
    outcomes: list[Outcome] = []
    methods = {kind: (client, method) for kind, client, method in DELETERS}
    terminating: list[Found] = []
    for f in targets:
        if f.kind not in methods:
            outcomes.append(Outcome(f, "CANNOT", f"reap does not delete {f.kind} resources; delete it in the OCI "
                                                 f"console or with the oci CLI (OCID {f.id})"))
            continue
        if f.kind != "Instance" and terminating:
            _wait_terminated(config, clients, terminating, wait, say, poll, outcomes)
            terminating = []
        client_kind, method = methods[f.kind]
        client = clients.get(client_kind) or clients.setdefault(client_kind, oci_clients.client(client_kind, config))
        try:
            if f.kind == "Instance":
                getattr(client, method)(f.id, preserve_boot_volume=False)
                terminating.append(f)
                continue
            getattr(client, method)(f.id)
            outcomes.append(Outcome(f, "DELETED", "ok"))
        except oci_clients.service_errors() as exc:
            hint = " (something still uses it: run reap again in a few minutes)" if getattr(exc, "status", 0) == 409 \
                else ""
            outcomes.append(Outcome(f, "FAILED", oci_clients.describe(exc) + hint))
    if terminating:
        _wait_terminated(config, clients, terminating, wait, say, poll, outcomes)
    return outcomes


def _wait_terminated(config: dict[str, Any], clients: dict[str, Any], instances: list[Found], wait: float,
                     say: Callable[[str], None], poll: float, outcomes: list[Outcome]) -> None:
    """Instances must be TERMINATED before their subnet and VCN can go."""
    compute = clients.get("compute") or clients.setdefault("compute", oci_clients.client("compute", config))
    pending = {f.id: f for f in instances}
    deadline = Deadline(wait)
    while pending:
        for instance_id in list(pending):
            try:
                state = str(compute.get_instance(instance_id).data.lifecycle_state or "").upper()
            except oci_clients.service_errors() as exc:
                if getattr(exc, "status", 0) == 404:
                    state = "TERMINATED"
                else:
                    outcomes.append(Outcome(pending.pop(instance_id), "FAILED", oci_clients.describe(exc)))
                    continue
            if state == "TERMINATED":
                outcomes.append(Outcome(pending.pop(instance_id), "TERMINATED", "with its boot volume"))
        if not pending:
            return
        if deadline.expired:
            for f in pending.values():
                outcomes.append(Outcome(f, "FAILED", f"termination requested, but still not TERMINATED after "
                                                     f"{wait:.0f}s; run reap again later"))
            return
        say(f"waiting for {len(pending)} instance(s) to terminate")
        deadline.sleep(poll)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
