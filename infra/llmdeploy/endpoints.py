"""Each workshop endpoint's own StackConfig, derived from the stack's (config.derive): per attendee (dedicated
layout, with the roster's overrides and hostname <id>.<workshopDomain>) or per shared endpoint (one API key
per assigned attendee, hostname ep<N>.<workshopDomain>). Every one is validated like a stack of its own,
before any resource exists; an error names the attendee or endpoint."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import ConfigError, Problem, StackConfig, derive, is_rate, set_cmd
from .declared import PROJECT_ROOT
from .roster import Attendee, active, assign, read_roster


MODEL_KEYS = frozenset({"engine", "ollamaModel", "vllmModel", "llamacppModelUrl", "xinferenceModelName",
                        "xinferenceModelSizeInBillions"})


@dataclass(frozen=True)
class EndpointPlan:
    key: str  # the name part of its resources: the attendee id, or ep<N>
    cfg: StackConfig
    attendees: tuple[Attendee, ...]  # dedicated: one; shared: those assigned to it
    shared: bool

    def key_for(self, attendee: Attendee) -> str:
        """The API key name that belongs to the attendee: named after them on a shared endpoint, the
        endpoint's first ordinary (not admin) key on their own VM ("" when that VM has basic-auth users only).
        Attendees never hold an admin key: plan_endpoints refuses a workshop that would give them one."""
        if self.shared:
            return attendee.id
        return next((k.name for k in self.cfg.auth.api_keys if not k.admin), "")


def roster_path(cfg: StackConfig, root: Path = PROJECT_ROOT) -> Path:
    return root / cfg.workshop.roster


def _derive(cfg: StackConfig, changes: dict[str, Any], who: str, from_roster: frozenset[str] = frozenset()
            ) -> StackConfig:
    """`from_roster`: the keys whose value came from the attendee's roster row: their fix is in the roster."""
    try:
        return derive(cfg, {**changes, "workshopRoster": ""})
    except ConfigError as exc:
        problems = [_fix_in_roster(p, who, cfg.workshop.roster) if p.key in from_roster else p for p in exc.problems]
        raise ConfigError(problems, f"{cfg.stack}, {who}") from None


def _fix_in_roster(problem: Problem, who: str, roster: str) -> Problem:
    """A value from a roster column is fixed there, not with `pulumi config set` (which the row would override)."""
    command = f"pulumi config set {problem.key} "
    example = problem.fix.partition(command)[2].split(";")[0].strip() if command in problem.fix else ""
    return replace(problem, fix=f"fix the {problem.key} column of {who} in the roster {roster}"
                                + (f", e.g. {example}" if example else ""))


def plan_endpoints(cfg: StackConfig, attendees: list[Attendee]) -> list[EndpointPlan]:
    ws = cfg.workshop
    if ws.layout == "dedicated":
        plans = []
        for a in active(attendees):
            changes: dict[str, Any] = dict(a.overrides)
            if set(changes) & MODEL_KEYS:
                # A different model: its name and size come from it, not from the stack's model.
                changes = {"modelName": "", "modelParamsBillions": "", "modelQuantBits": 0, **changes}
            if ws.domain:
                changes["domain"] = f"{a.id}.{ws.domain}"
            plans.append(EndpointPlan(a.id, _derive(cfg, changes, f"attendee {a.id}", frozenset(a.overrides)),
                                      (a,), False))
        _refuse_admin_attendees(plans, cfg)
        return plans
    shared_only = {a.id: sorted(set(a.overrides) - {"rateLimit"}) for a in active(attendees)}
    misplaced = {i: keys for i, keys in shared_only.items() if keys}
    if misplaced:
        first = next(iter(misplaced))
        raise ValueError(f"roster: attendee {first} overrides {', '.join(misplaced[first])}, which only the "
                         "dedicated layout honours (a shared endpoint serves one model); remove the override or "
                         "pulumi config set workshopLayout dedicated")
    slots = assign(attendees, ws.endpoints)
    plans = []
    for n in range(ws.endpoints):
        mine = tuple(a for a in active(attendees) if slots.get(a.id) == n)
        if not mine:
            continue
        keys = [f"{a.id}:{_attendee_rate(a, ws.attendee_rate)}" for a in mine] + _chat_admin_keys(cfg)
        changes = {"apiKeys": keys, **({"domain": f"ep{n}.{ws.domain}"} if ws.domain else {})}
        plans.append(EndpointPlan(f"ep{n}", _derive(cfg, changes, f"endpoint ep{n}"), mine, True))
    _refuse_admin_attendees(plans, cfg)
    return plans


def _chat_admin_keys(cfg: StackConfig) -> list[str]:
    """With a chat frontend, each shared endpoint keeps the stack's admin keys besides the attendees' own: one of
    them signs in first and is the frontend's admin (config.Chat.admin), never an attendee."""
    if cfg.chat.ui == "none":
        return []
    return [f"{k.name}:{k.rate}:admin" for k in cfg.auth.api_keys if k.admin]


def _attendee_rate(attendee: Attendee, default: str) -> str:
    """The rate of a shared endpoint's key for the attendee. Only a plain rate: "30r/m:admin" from the roster
    would otherwise become an admin key."""
    rate = attendee.overrides.get("rateLimit", default)
    if not is_rate(rate):
        raise ValueError(f"roster: attendee {attendee.id}'s rateLimit '{rate}' is not an nginx rate such as 30r/m "
                         "(attendee keys are never admin keys); fix the roster's rateLimit cell")
    return rate


def _refuse_admin_attendees(plans: list[EndpointPlan], cfg: StackConfig) -> None:
    """Attendees get inference only. On their own VM an attendee gets the first key not marked admin, so a
    dedicated workshop whose apiKeys are all admin keys has none to give them."""
    for plan in plans:
        names = {plan.key_for(a) for a in plan.attendees} - {""}
        if any(k.admin and k.name in names for k in plan.cfg.auth.api_keys):
            raise ValueError(f"endpoint {plan.key}: an attendee would hold an admin key; attendee keys are never admin")
        if not plan.shared and plan.cfg.auth.api_keys and not names:
            entries = [f"{k.name}:admin" for k in plan.cfg.auth.api_keys]
            raise ConfigError([Problem("apiKeys", entries, "at least one key without :admin in a dedicated workshop "
                                       "(each attendee gets the VM's first ordinary key; attendees are never admin)",
                                       set_cmd("apiKeys", "--path 'apiKeys[0]' attendee"))], cfg.stack)


def load_plans(cfg: StackConfig, root: Path = PROJECT_ROOT) -> list[EndpointPlan]:
    return plan_endpoints(cfg, read_roster(roster_path(cfg, root)))
