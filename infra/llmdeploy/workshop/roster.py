"""The workshop roster: a CSV with id, name, email and optional per-attendee overrides.

Attendee ids name every resource made for an attendee, so adding or removing one attendee touches only
that attendee's resources. Overrides are config keys (engine, ollamaModel, shape, ...), validated like
any other config value when the attendee's config is built.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED = ("id", "name", "email")
STATUS_COLUMN = "status"  # "revoked" removes the attendee's endpoint or key at the next pulumi up
# Overrides an attendee may carry: model and engine choices, never auth, network or lifecycle settings.
OVERRIDABLE = ("engine", "ollamaModel", "vllmModel", "llamacppModelUrl", "xinferenceModelName",
               "xinferenceModelSizeInBillions", "modelName", "shape", "shapeOcpus", "shapeMemoryGbs", "rateLimit")
_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")


class RosterError(ValueError):
    """The roster cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Attendee:
    id: str
    name: str
    email: str
    overrides: dict[str, str] = field(default_factory=dict)
    revoked: bool = False


def read_roster(path: Path) -> list[Attendee]:
    """Every attendee (revoked ones included, marked), in file order. All problems are reported at once."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED and c != STATUS_COLUMN and c not in OVERRIDABLE]
    if missing or unknown:
        raise RosterError(
            f"{path}: " + "; ".join(filter(None, [
                f"missing column(s) {', '.join(missing)}" if missing else "",
                f"unknown column(s) {', '.join(unknown)} (overridable: {', '.join(OVERRIDABLE)})" if unknown else ""]))
            + f". The header must start with: {','.join(REQUIRED)}")
    attendees, problems, seen = [], [], {}
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not any(row.values()):
            continue
        attendee_id = row.get("id", "").lower()
        if not _ID_RE.match(attendee_id):
            problems.append(f"line {line}: id '{row.get('id', '')}' must be 1-24 of a-z, 0-9 and '-', starting "
                            "with a letter (it names the attendee's resources and API key)")
        elif attendee_id in seen:
            problems.append(f"line {line}: id '{attendee_id}' is already used on line {seen[attendee_id]}")
        seen.setdefault(attendee_id, line)
        if not row.get("name"):
            problems.append(f"line {line}: attendee '{attendee_id}' has no name")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", row.get("email", "")):
            problems.append(f"line {line}: email '{row.get('email', '')}' is not an e-mail address")
        status = row.get(STATUS_COLUMN, "").lower()
        if status not in ("", "active", "revoked"):
            problems.append(f"line {line}: status '{status}' must be empty, active or revoked")
        overrides = {k: v for k, v in row.items() if k in OVERRIDABLE and v}
        attendees.append(Attendee(attendee_id, row.get("name", ""), row.get("email", ""), overrides,
                                  status == "revoked"))
    if problems:
        raise RosterError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    if not attendees:
        raise RosterError(f"{path}: no attendees (one row per attendee after the header {','.join(REQUIRED)})")
    return attendees


def active(attendees: list[Attendee]) -> list[Attendee]:
    return [a for a in attendees if not a.revoked]


def assign(attendees: list[Attendee], endpoints: int) -> dict[str, int]:
    """Shared layout: the endpoint (0..endpoints-1) that serves each active attendee, by row position.
    Counts differ by at most one, and the assignment is stable as long as the roster only grows at the
    end and attendees are revoked (status column) rather than deleted: no one else ever moves."""
    return {a.id: row % endpoints for row, a in enumerate(attendees) if not a.revoked}
