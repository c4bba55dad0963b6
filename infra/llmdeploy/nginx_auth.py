"""nginx's auth policy: how many failed credentials and /healthz requests a client may send, the chat host's burst
and the identity its frontend gets, the rate zones of the API keys, and basic auth's htpasswd (bcrypt hashes only,
each hashed once per process)."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bcrypt

if TYPE_CHECKING:
    from .config import StackConfig


@dataclass(frozen=True)
class AuthFailureLimit:
    """What nginx allows per client address in requests without a valid credential before answering 429.

    Only failures count (a request with a valid key never does), so a workshop room behind one NAT address keeps
    working however many attendees it has; the burst lets 40 attendees who all paste a wrong key at once still
    get a 401 that says so, and the rate leaves a mistyping room one failure a second, while a guesser gets
    60 tries a minute instead of thousands a second (keys are 256-bit: the limit is about load and logs)."""

    rate: str = "60r/m"
    burst: int = 40


AUTH_FAILURES = AuthFailureLimit()


@dataclass(frozen=True)
class HealthzLimit:
    """What nginx allows per client address on /healthz, which is open to anyone and asks the engine each time (on
    the ray target, a one-token completion): a monitor polling every second passes, a flood gets 429 before it
    reaches the engine."""

    rate: str = "2r/s"
    burst: int = 20


HEALTHZ_LIMIT = HealthzLimit()
# A chat page load fetches hundreds of scripts and styles at once (Open WebUI 0.12.4's first one after sign-in: about
# 240 requests, measured by tests/e2e/test_local_chat.py at the default 10r/s): the chat host's requests count
# against the key's own rate, as the API's do, with room for two page loads above it.
CHAT_PAGE_BURST = 500
# The frontend learns who signed in from X-User-Email, NAME@<this>, which nginx sets (RFC 2606: never a real
# mailbox).
WEB_USER_DOMAIN = "workshop.invalid"


def web_user_email(key_name: str) -> str:
    """The identity the chat frontend gets for the API key named key_name (X-User-Email)."""
    return f"{key_name}@{WEB_USER_DOMAIN}"


def retry_after_seconds(rate: str) -> int:
    """Seconds until a limit_req bucket at `rate` (10r/s, 30r/m) lets one more request through: Retry-After."""
    count, unit = rate[:-3], rate[-1]
    return max(1, -(-(60 if unit == "m" else 1) // int(count)))


def rate_zones(cfg: StackConfig) -> list[dict[str, Any]]:
    zones: dict[str, list[str]] = {}
    for key in cfg.auth.api_keys:
        zones.setdefault(key.rate, []).append(key.name)
    return [{"rate": rate, "names": names, "retry_after": retry_after_seconds(rate)} for rate, names in zones.items()]


def htpasswd(cfg: StackConfig) -> str:
    """bcrypt hashes only. The salt derives from stack and user so that the same password renders the
    same user-data (a fresh salt would make every `pulumi up` replace the instance)."""
    lines = []
    for user in cfg.auth.basic_users:
        digest = hashlib.sha256(f"llmdeploy-htpasswd:{cfg.stack}:{user}".encode()).digest()[:16]
        std = base64.b64encode(digest).decode()[:22]
        salt = std.translate(str.maketrans(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
        lines.append(f"{user}:{_bcrypt(cfg.auth.basic_passwords[user].reveal(), salt)}")
    return "".join(f"{line}\n" for line in lines)


_HASHED: dict[bytes, str] = {}


def _bcrypt(password: str, salt: str) -> str:
    """bcrypt at cost 12 takes about 0.2 s by design, and one program renders the same stack's site for its head,
    every replica and worker: hash each (salt, password) once per process. Keyed by a digest, so the cache holds
    no password."""
    key = hashlib.sha256(f"{salt}\0{password}".encode()).digest()
    if key not in _HASHED:
        _HASHED[key] = bcrypt.hashpw(password.encode(), f"$2b$12${salt}".encode()).decode()
    return _HASHED[key]
