"""A workshop stack as the workshop commands see it: its typed config, its roster and
the endpoints `pulumi up` makes of them (llmdeploy.endpoints, the same code the Pulumi program runs).

Secrets: a `secure:` value can only be decrypted by the Pulumi CLI. The workshop commands need none of them
(plan, handouts, status, rotate, revoke and teardown read shapes, names, tags and the roster), so a secret
that is not given in the environment is read as empty. Only when a check then needs it (a tlsMode provided
stack without its certificate, say) does the command stop and say which environment variable to set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, StackConfig, parse
from ..declared import declarations, project_name
from ..endpoints import EndpointPlan, plan_endpoints
from ..errors import UsageError
from ..roster import Attendee, RosterError, read_roster
from ..stack_yaml import read_stack, secret_env_name, stack_file
from ..textfiles import FileProblem, load_yaml, read_text


@dataclass(frozen=True)
class WorkshopStack:
    root: Path
    stack: str
    project: str
    cfg: StackConfig

    @property
    def roster_path(self) -> Path:
        return self.root / self.cfg.workshop.roster

    @property
    def resource_prefix(self) -> str:
        """What every Pulumi resource of the stack is named after (the program's `<project>-<stack>`)."""
        return f"{self.project}-{self.stack}"

    def attendees(self) -> list[Attendee]:
        try:
            return read_roster(self.roster_path)
        except RosterError as exc:
            raise UsageError(f"roster: {exc}") from None

    def plans(self, attendees: list[Attendee] | None = None) -> list[EndpointPlan]:
        """The endpoints `pulumi up` would create, each with its validated config (ConfigError or ValueError
        name the attendee or endpoint that is wrong)."""
        return plan_endpoints(self.cfg, self.attendees() if attendees is None else attendees)


def _unresolved_secrets(root: Path, stack: str) -> dict[str, str]:
    """The keys stored `secure:` in the stack file whose plaintext is not in the environment: key -> env name."""
    try:
        data = load_yaml(read_text(stack_file(root, stack), "stack file"), stack) or {}
    except (OSError, FileProblem):
        return {}  # read_stack reports it properly
    config = data.get("config") if isinstance(data, dict) else None
    out: dict[str, str] = {}
    for full_key, value in (config or {}).items() if isinstance(config, dict) else ():
        key = str(full_key).partition(":")[2]
        if isinstance(value, dict) and "secure" in value and secret_env_name(key) not in os.environ:
            out[key] = secret_env_name(key)
    return out


def load(root: Path, stack: str, require_workshop: bool = True) -> WorkshopStack:
    """The stack's config; UsageError (exit 2) for anything the user must fix."""
    unresolved = _unresolved_secrets(root, stack)
    env = {**os.environ, **{name: "" for name in unresolved.values()}}
    try:
        raw = read_stack(root, stack, env)
        cfg = parse(raw, stack=stack, decls=declarations(root))
    except ConfigError as exc:
        needed = [p.key for p in exc.problems if p.key in unresolved]
        if needed:
            key = needed[0]
            raise UsageError(
                f"{key} is encrypted in Pulumi.{stack}.yaml (secure:), and this stack needs its value here; only "
                f"the Pulumi CLI can decrypt it, so pass it in the environment: {unresolved[key]}=\"$(pulumi config "
                f"get {key} --stack {stack})\" llmdeploy workshop ...") from None
        raise
    if require_workshop and not cfg.workshop.roster:
        raise UsageError(f"stack '{stack}' is not a workshop: workshopRoster is not set (pulumi config set "
                         f"workshopRoster roster.csv --stack {stack}, a CSV with the header id,name,email)")
    return WorkshopStack(root, stack, project_name(root), cfg)
