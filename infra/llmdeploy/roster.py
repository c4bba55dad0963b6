"""The workshop roster: a CSV with id, name, email and optional per-attendee overrides.

Attendee ids name every resource made for an attendee, so adding or removing one attendee touches only
that attendee's resources. Overrides are config keys (engine, ollamaModel, shape, ...), validated like
any other config value when the attendee's config is built.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .textfiles import FileProblem, read_text

REQUIRED = ("id", "name", "email")
STATUS_COLUMN = "status"  # "revoked" removes the attendee's endpoint or key at the next pulumi up
# Overrides an attendee may carry: model and engine choices, never auth, network or lifecycle settings.
OVERRIDABLE = ("engine", "ollamaModel", "vllmModel", "llamacppModelUrl", "xinferenceModelName",
               "xinferenceModelSizeInBillions", "modelName", "shape", "shapeOcpus", "shapeMemoryGbs", "rateLimit")
_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,23}")  # fullmatch: `$` lets a final newline through


class RosterError(UsageError):
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
        text = read_text(path, "roster", encoding="utf-8-sig")
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror}") from None
    except FileProblem as exc:
        raise RosterError(str(exc)) from None
    reader = csv.DictReader(text.splitlines())
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        records = list(reader)
    except csv.Error as exc:  # e.g. a cell over the csv module's 128 KiB field limit
        raise RosterError(f"{path}: line {reader.line_num} is not CSV the roster accepts ({exc}); one attendee per "
                          f"line: {','.join(REQUIRED)}") from None
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED and c != STATUS_COLUMN and c not in OVERRIDABLE]
    if missing or unknown:
        raise RosterError(
            f"{path}: " + "; ".join(filter(None, [
                f"missing column(s) {', '.join(missing)}" if missing else "",
                f"unknown column(s) {', '.join(unknown)} (overridable: {', '.join(OVERRIDABLE)})" if unknown else ""]))
            + f". The header must start with: {','.join(REQUIRED)}")
    attendees, problems, seen = [], [], {}
    for line, row in enumerate(records, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not any(row.values()):
            continue
        attendee_id = row.get("id", "").lower()
        if not _ID_RE.fullmatch(attendee_id):
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


def set_status(path: Path, attendee_id: str, status: str) -> bool:
    """Set one attendee's status column ("revoked" or "active") in the roster file, keeping every row, its order
    and its other cells (the shared layout's assignment depends on row positions). Adds the status column when
    the roster has none. Returns False when the attendee already had that status."""
    if status not in ("active", "revoked"):
        raise RosterError(f"status '{status}' must be active or revoked")
    try:
        raw = path.read_bytes()
        text = read_text(path, "roster", encoding="utf-8-sig")
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror}") from None
    except FileProblem as exc:
        raise RosterError(str(exc)) from None
    bom = raw.startswith(b"\xef\xbb\xbf")
    newline = "\r\n" if "\r\n" in text else "\n"
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise RosterError(f"{path}: empty roster")
    header = [c.strip() for c in rows[0]]
    if "id" not in header:
        raise RosterError(f"{path}: no id column")
    id_col = header.index("id")
    if STATUS_COLUMN not in header:
        rows[0].append(STATUS_COLUMN)
        for row in rows[1:]:
            if any(cell.strip() for cell in row):
                row.extend([""] * (len(header) - len(row)) + [""])
        header.append(STATUS_COLUMN)
    status_col = header.index(STATUS_COLUMN)
    matches = [row for row in rows[1:] if len(row) > id_col and row[id_col].strip().lower() == attendee_id.lower()]
    if len(matches) != 1:
        raise RosterError(f"{path}: no attendee with id '{attendee_id}'" if not matches else
                          f"{path}: id '{attendee_id}' is on more than one line")
    row = matches[0]
    row.extend([""] * (status_col + 1 - len(row)))
    current = row[status_col].strip().lower() or "active"
    if current == status:
        return False
    row[status_col] = "" if status == "active" else status
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows(rows)
    data = ("\ufeff" if bom else "") + out.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data, encoding="utf-8", newline="")
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return True
