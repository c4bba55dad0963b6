"""The workshop's stack outputs: `attendees` (secret), {attendee id: {name, email, endpointUrl, openaiBaseUrl,
apiKey, model, caCertificate, endpoint}}, read from the Pulumi CLI (`pulumi stack output --json
--show-secrets`) or from a file saved from it (`--outputs FILE`).

Every value is checked before it goes into a handout or a shell snippet: a URL is an http(s) URL without
quotes or spaces, a key and a model name are the characters llmdeploy issues, so nothing read from a file can
turn a ready-to-paste snippet into something else. The keys stay in memory; nothing here prints them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import UsageError
from ..pem import mentions_certificate
from ..stack.output_names import ATTENDEES
from ..textfiles import FileProblem, load_json, read_text
from . import pulumi_cli

_KEY_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")  # fullmatch: `$` lets a final newline through
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")  # fullmatch: `$` lets a final newline through
_URL_BAD = re.compile(r"[\s'\"`$\\<>]")
REQUIRED = ("endpointUrl", "openaiBaseUrl", "apiKey", "model")


@dataclass(frozen=True)
class AttendeeOutput:
    id: str
    name: str
    email: str
    endpoint_url: str
    openai_base_url: str
    api_key: str
    model: str
    ca_certificate: str
    endpoint: str  # the VM serving the attendee: their id (dedicated) or ep<N> (shared)
    http_url: str = ""  # optional: where plain HTTP listens, when not port 80 of the host
    chat_url: str = ""  # optional: the chat frontend's sign-in page (chatUi)

    def __repr__(self) -> str:  # never print a key by accident
        return f"AttendeeOutput({self.id!r}, {self.endpoint_url!r}, apiKey=***)"

    @property
    def shared(self) -> bool:
        return self.endpoint != self.id


def read_outputs_file(path: Path) -> dict[str, Any]:
    try:
        text = read_text(path, "outputs file")
    except OSError as exc:
        raise UsageError(f"cannot read the outputs file {path}: {exc.strerror}; save it with `pulumi stack "
                         "output --json --show-secrets > FILE` (and keep it private: it holds the keys)") from None
    try:
        data = load_json(text, f"the outputs file {path}")
    except FileProblem as exc:
        raise UsageError(f"{exc}: save it with `pulumi stack output --json --show-secrets > FILE`") from None
    if not isinstance(data, dict):
        raise UsageError(f"the outputs file {path} must hold a JSON object of outputs, as `pulumi stack output "
                         "--json --show-secrets` prints it")
    return data


def load_outputs(root: Path, stack: str, outputs_file: str | None) -> tuple[dict[str, Any], str]:
    """The outputs and where they came from."""
    if outputs_file:
        return read_outputs_file(Path(outputs_file)), f"outputs file {outputs_file}"
    return pulumi_cli.stack_outputs(root, stack), f"stack '{stack}' (pulumi stack output)"


def _url(value: Any, what: str, where: str) -> str:
    text = str(value or "")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or _URL_BAD.search(text):
        raise UsageError(f"{where}: {what} {text!r} is not an http(s) URL")
    return text.rstrip("/")


def attendee_outputs(outputs: dict[str, Any], source: str) -> list[AttendeeOutput]:
    """The attendees in id order, every field checked; UsageError names the attendee and the field."""
    entries = outputs.get(ATTENDEES)
    if (isinstance(entries, dict) and set(entries) == {"secret"}) or entries == "[secret]":
        raise UsageError(f"{source}: the '{ATTENDEES}' output is still encrypted; save the outputs with "
                         "--show-secrets (pulumi stack output --json --show-secrets)")
    if entries is None:
        raise UsageError(f"{source} has no '{ATTENDEES}' output: is workshopRoster set, and has `pulumi up` "
                         f"finished for this stack? (outputs present: {', '.join(sorted(outputs)) or 'none'})")
    if not isinstance(entries, dict):
        raise UsageError(f"{source}: the '{ATTENDEES}' output must be an object {{attendee id: {{...}}}}")
    if not entries:
        raise UsageError(f"{source}: the '{ATTENDEES}' output is empty: every attendee is revoked, or the "
                         "roster is empty")
    found = []
    for attendee_id in sorted(entries):
        entry = entries[attendee_id]
        where = f"{source}, attendee {attendee_id}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected an object with {', '.join(REQUIRED)}")
        missing = [k for k in REQUIRED if not entry.get(k)]
        if missing:
            raise UsageError(f"{where}: missing {', '.join(missing)} (did `pulumi up` finish for this attendee?)")
        key = str(entry["apiKey"])
        if not _KEY_RE.fullmatch(key):
            raise UsageError(f"{where}: apiKey is not an API key llmdeploy issues (16-128 of A-Z a-z 0-9 _ -)")
        model = str(entry["model"])
        if not _MODEL_RE.fullmatch(model):
            raise UsageError(f"{where}: model {model!r} is not a model name (letters, digits and . _ : / -)")
        ca = str(entry.get("caCertificate") or "")
        if ca and not mentions_certificate(ca):
            raise UsageError(f"{where}: caCertificate is not a PEM certificate")
        found.append(AttendeeOutput(
            id=str(attendee_id), name=str(entry.get("name") or attendee_id), email=str(entry.get("email") or ""),
            endpoint_url=_url(entry["endpointUrl"], "endpointUrl", where),
            openai_base_url=_url(entry["openaiBaseUrl"], "openaiBaseUrl", where), api_key=key, model=model,
            ca_certificate=ca, endpoint=str(entry.get("endpoint") or attendee_id),
            http_url=_url(entry["httpUrl"], "httpUrl", where) if entry.get("httpUrl") else "",
            chat_url=_url(entry["chatUrl"], "chatUrl", where) if entry.get("chatUrl") else ""))
    return found
