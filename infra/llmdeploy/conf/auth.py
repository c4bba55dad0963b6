"""The auth section of Pulumi.yaml: apiKeys (NAME[:RATE][:admin]), basic-auth users and their passwords,
rateLimit and rateLimitBurst."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from .reader import NAME_RE, RATE_RE, Problem, Reader, Secret, set_cmd


@dataclass(frozen=True)
class ApiKey:
    name: str
    rate: str
    admin: bool = False  # may use the engine's management routes (routes.py), not only inference


@dataclass(frozen=True)
class Auth:
    api_keys: tuple[ApiKey, ...]
    basic_users: tuple[str, ...]
    basic_passwords: Mapping[str, Secret]
    rate: str
    burst: int


def parse_auth(r: Reader) -> Auth:
    rate = r.str("rateLimit")
    if not RATE_RE.fullmatch(rate):
        r.bad("rateLimit", rate, "an nginx rate such as 10r/s or 600r/m", "10r/s")
    keys: list[ApiKey] = []
    for entry in r.list("apiKeys"):
        key = _api_key(entry, rate)
        if key is None:
            r.bad("apiKeys", entry, "NAME, NAME:RATE, NAME:admin or NAME:RATE:admin (name: a-z, 0-9, _ or -; rate "
                  "like 30r/m; admin: the key may also manage the engine, see the README's route table)",
                  "--path 'apiKeys[0]' alice:30r/m")
            key = ApiKey(entry.partition(":")[0], rate)
        keys.append(key)
    _duplicates(r, "apiKeys", [k.name for k in keys])
    users = r.list("basicAuthUsers")
    for user in users:
        if not NAME_RE.fullmatch(user):
            r.bad("basicAuthUsers", user, "user names of a-z, 0-9, _ or -", "--path 'basicAuthUsers[0]' alice")
    _duplicates(r, "basicAuthUsers", users)
    passwords = _basic_passwords(r, users)
    if not keys and not users and not r.failed("apiKeys") and not r.failed("basicAuthUsers"):
        r.bad("apiKeys", [], "at least one API key or basic-auth user: an endpoint without auth is refused",
              "--path 'apiKeys[0]' default")
    return Auth(tuple(keys), tuple(users), passwords, rate, r.int("rateLimitBurst", 0, 10_000))


def _api_key(entry: str, default_rate: str) -> ApiKey | None:
    """`NAME[:RATE][:admin]` as an ApiKey, or None when the entry is not of that form."""
    name, *flags = entry.split(":")
    admin = bool(flags) and flags[-1] == "admin"
    rates = flags[:-1] if admin else flags
    if not NAME_RE.fullmatch(name) or len(rates) > 1 or (rates and not RATE_RE.fullmatch(rates[0])):
        return None
    return ApiKey(name, rates[0] if rates else default_rate, admin)


def _duplicates(r: Reader, key: str, names: list[str]) -> None:
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.bad(key, name, "each name once", f"--path '{key}[N]' OTHER_NAME")


def _basic_passwords(r: Reader, users: list[str]) -> dict[str, Secret]:
    text = r.secret("basicAuthPasswords").reveal()
    example = "'{\"alice\": \"a-long-passphrase\"}'"
    if not text:
        table: dict[str, Any] = {}
    else:
        try:
            table = json.loads(text)
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise ValueError
        except (ValueError, RecursionError):
            r.bad("basicAuthPasswords", text, "a JSON object of user to password", example)
            return {}
    for user in users:
        if len(table.get(user, "")) < 12:
            state = "no password" if user not in table else "a password shorter than 12 characters"
            r.problems.append(Problem("basicAuthPasswords", f"{state} for '{user}'",
                                      "a password of at least 12 characters for every user in basicAuthUsers",
                                      set_cmd("basicAuthPasswords", example, secret=True)))
    extra = sorted(set(table) - set(users))
    if extra:
        r.bad("basicAuthUsers", users, f"every user that has a password listed (missing: {', '.join(extra)})",
              f"--path 'basicAuthUsers[{len(users)}]' {extra[0]}")
    return {u: Secret(table[u]) for u in users if u in table}
