"""`llmdeploy workshop status`: smoke-test every attendee's endpoint with the attendee's own key, side by side
(llmdeploy.smoke's runner, progress bar and summary table), and record per attendee when the test last ran
and last passed, for the handouts ("smoke test passed at 09:12").

The status file (default build/workshop/<stack>/status.json) holds no secret: ids, times, pass/fail and the
first failed check's summary, redacted. A failed run keeps the attendee's earlier last pass.

Trust: each endpoint's own CA (self-signed stacks, from the outputs) and, when the stack's ACME directory is a
test one (Let's Encrypt staging, pebble), that directory's roots (llmdeploy/acme_roots.py), read from the stack
file's non-secret keys. The handouts ship the same CA file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import acme_roots
from ..declared import declarations
from ..errors import UsageError
from ..smoke.redact import Redactor
from ..smoke.runner import TargetReport
from ..smoke.targets import Credentials, Target
from ..stack_yaml import read_stack, secret_env_name
from ..textfiles import FileProblem, load_json, read_text
from .attendee_outputs import AttendeeOutput

STATUS_VERSION = 1


def default_status_path(root: Path, stack: str) -> Path:
    return root / "build" / "workshop" / stack / "status.json"


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stack_engine(root: Path, stack: str) -> str:
    """The stack's engine (its config, or Pulumi.yaml's default); only non-secret keys are read."""
    decls = declarations(root)
    no_secrets = {secret_env_name(k): "" for k, d in decls.items() if d.secret}
    raw = read_stack(root, stack, {**no_secrets, **os.environ})
    return str(raw.get("engine", decls["engine"].default) or "")


def stack_acme_trust(root: Path, stack: str) -> str:
    """The roots the stack's clients must trust beyond the system store for its ACME certificate: a test
    directory's pinned roots, or a pebble stack's smokeCaBundle; "" for a public directory or another tlsMode.
    Only non-secret keys are read, so no secret has to be given."""
    decls = declarations(root)
    no_secrets = {secret_env_name(k): "" for k, d in decls.items() if d.secret}
    raw = read_stack(root, stack, {**no_secrets, **os.environ})

    def value(key: str) -> str:
        return str(raw.get(key, decls[key].default) or "")

    if value("tlsMode") != "letsencrypt":
        return ""
    return acme_roots.client_trust_pem(value("acmeDirectoryUrl"), value("smokeCaBundle"), root)


def attendee_ca(attendee: AttendeeOutput, acme_trust: str = "") -> str:
    """What an attendee's client must trust: the endpoint's own CA (self-signed) and/or the test ACME roots."""
    return "".join(pem.strip() + "\n" for pem in (attendee.ca_certificate, acme_trust) if pem.strip())


@dataclass
class CaFiles:
    """Each attendee's CA (see attendee_ca) as a file the smoke checks can trust; removed on exit."""

    folder: Path
    acme_trust: str = ""

    def path_for(self, attendee: AttendeeOutput) -> str | None:
        pem = attendee_ca(attendee, self.acme_trust)
        if not pem:
            return None
        path = self.folder / f"{attendee.id}-ca.pem"
        path.write_text(pem, encoding="utf-8")
        return str(path)


def targets(attendees: list[AttendeeOutput], ca_dir: Path, timeout: float, acme_trust: str = "") -> list[Target]:
    """One smoke target per attendee, signed in with their own key; with a chat frontend, their chat page too."""
    cas = CaFiles(ca_dir, acme_trust)
    return [Target(url=a.endpoint_url, credentials=Credentials(api_key=a.api_key), kind="openai", model=a.model,
                   ca_bundle=cas.path_for(a), http_url=a.http_url or None, timeout=timeout, name=a.id,
                   chat_url=a.chat_url or None)
            for a in attendees]


def redactor(attendees: list[AttendeeOutput]) -> Redactor:
    return Redactor(secret for a in attendees for secret in Credentials(api_key=a.api_key).secrets())


def read_status(path: Path) -> dict[str, dict[str, Any]]:
    """{attendee id: {lastRun, lastResult, lastPass, firstFailure}}; empty when there is no file yet."""
    if not path.exists():
        return {}
    try:
        data = load_json(read_text(path, "status file"), f"the status file {path}")
    except (OSError, FileProblem) as exc:
        raise UsageError(f"the status file {path} cannot be read ({exc}); delete it and run `llmdeploy workshop "
                         "status` again") from None
    attendees = data.get("attendees") if isinstance(data, dict) else None
    if not isinstance(attendees, dict):
        raise UsageError(f"the status file {path} is not one `llmdeploy workshop status` wrote; delete it and run "
                         "`llmdeploy workshop status` again")
    return {str(k): v for k, v in attendees.items() if isinstance(v, dict)}


def update_status_file(path: Path, stack: str, reports: list[TargetReport], red: Redactor,
                       now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Merge this run into the status file (atomically) and return every attendee's status."""
    now_text = iso(now or datetime.now(timezone.utc))
    status = read_status(path)
    for report in reports:
        entry = dict(status.get(report.target.name, {}))
        first = report.first_failure
        entry.update(lastRun=now_text, lastResult="pass" if report.passed else "fail",
                     firstFailure="" if first is None else red.text(f"{first.name}: {first.summary}")[:300],
                     url=report.target.url)
        if report.passed:
            entry["lastPass"] = now_text
        entry.setdefault("lastPass", None)
        status[report.target.name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": STATUS_VERSION, "stack": stack, "updated": now_text, "attendees": status}
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return status
