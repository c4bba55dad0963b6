"""Which Pulumi resource holds an attendee's API key, for `workshop rotate` (replace it: a new key) and the
roster edits of `workshop revoke`.

The key's resource is named after the endpoint and the key, never a list position: on the attendee's own VM
`<project>-<stack>-<id>-key-<first key name>` (default: ...-key-default), on a shared endpoint
`<project>-<stack>-ep<N>-key-<id>`. Its URN is found in `pulumi stack export` by that name rather than
rebuilt from parent types, so it stays right whatever component the program nests it in.
"""
from __future__ import annotations

from typing import Any

from ..config import ConfigError
from ..endpoints import EndpointPlan
from ..errors import UsageError
from ..roster import Attendee
from .pulumi_cli import resources, urn_name
from .loaded_stack import WorkshopStack


def find_attendee(attendees: list[Attendee], attendee_id: str, ws: WorkshopStack) -> Attendee:
    wanted = attendee_id.strip().lower()
    for a in attendees:
        if a.id == wanted:
            return a
    known = ", ".join(a.id for a in attendees[:12]) + (" ..." if len(attendees) > 12 else "")
    raise UsageError(f"no attendee '{attendee_id}' in the roster {ws.roster_path} (ids: {known})")


def plans_for(ws: WorkshopStack, attendees: list[Attendee]) -> list[EndpointPlan]:
    try:
        return ws.plans(attendees)
    except ConfigError as exc:
        raise UsageError(f"the workshop's config is wrong: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def key_resource_name(ws: WorkshopStack, attendee_id: str) -> str:
    attendees = ws.attendees()
    attendee = find_attendee(attendees, attendee_id, ws)
    if attendee.revoked:
        raise UsageError(f"attendee '{attendee.id}' is revoked (status column of {ws.roster_path}), so they have "
                         "no key to rotate; clear the status and run pulumi up to give them one")
    plan = next((p for p in plans_for(ws, attendees) if attendee in p.attendees), None)
    if plan is None:
        raise UsageError(f"attendee '{attendee.id}' is not served by any endpoint of stack '{ws.stack}'")
    key = plan.key_for(attendee)
    if not key:
        raise UsageError(f"attendee '{attendee.id}''s VM has no API key (apiKeys is empty: basic auth only); "
                         "there is no key to rotate")
    return f"{ws.resource_prefix}-{plan.key}-key-{key}"


def find_urn(export: dict[str, Any], name: str, stack: str) -> str:
    found = [r["urn"] for r in resources(export) if urn_name(r["urn"]) == name]
    if len(found) == 1:
        return str(found[0])
    if found:
        raise UsageError(f"stack '{stack}' has {len(found)} resources named {name}: " + ", ".join(found))
    keys = sorted(urn_name(r["urn"]) for r in resources(export) if "-key-" in urn_name(r["urn"]))
    shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "") if keys else "none"
    raise UsageError(f"stack '{stack}' has no resource named {name} in its state (key resources there: {shown}); "
                     "has `pulumi up` run since the attendee was added?")
