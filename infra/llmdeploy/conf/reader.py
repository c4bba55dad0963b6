"""Reading raw config values: the Secret type, one Problem per bad value, ConfigError with all of them, and the
Reader that coerces each key by its declaration in Pulumi.yaml and collects problems instead of stopping."""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..declared import Declaration
from ..errors import UsageError

# Each is used with fullmatch: `$` (and match()) would let a final newline through, and a name or rate
# with one writes a directive of its own into the nginx map.
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# nginx keeps a rate in thousandths of a request per second (a 64-bit integer) and limit_req multiplies it by
# the milliseconds since a client's last request; 20 digits overflow it at once. Six digits (999999r/s, far
# beyond what one engine serves) keep that product in range for years of idle time.
RATE_RE = re.compile(r"[1-9][0-9]{0,5}r/[sm]")
DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# C0 and C1 control characters and DEL, but tab, newline and CR (PEM certificates and JSON documents hold them).
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Secret:
    """A config value that must never be printed; reveal() is the only way to its text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(***)" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    accepted: str
    fix: str

    def __str__(self) -> str:
        shown = "(secret)" if isinstance(self.value, Secret) else repr(self.value)
        return f"{self.key}: got {shown}; expected {self.accepted} ({self.fix})"


class ConfigError(UsageError):
    """Raised by parse() with every problem found, not just the first."""

    def __init__(self, problems: list[Problem], stack: str = "") -> None:
        self.problems = problems
        where = f" in stack '{stack}'" if stack else ""
        lines = [f"{len(problems)} config problem(s){where}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def set_cmd(key: str, example: str, secret: bool = False) -> str:
    flag = "--secret " if secret else ""
    if example.startswith("--path "):
        return f"pulumi config set {flag}{example}"
    return f"pulumi config set {flag}{key} {example}"



class Reader:
    """Reads raw values by declared type and collects problems instead of stopping at the first."""

    def __init__(self, raw: Mapping[str, Any], decls: Mapping[str, Declaration]) -> None:
        self.raw = raw
        self.decls = decls
        self.problems: list[Problem] = []

    def bad(self, key: str, value: Any, accepted: str, example: str) -> None:
        secret = key in self.decls and self.decls[key].secret
        self.problems.append(Problem(key, Secret(str(value)) if secret else value, accepted,
                                     set_cmd(key, example, secret)))

    def _value(self, key: str) -> Any:
        return self.raw[key] if key in self.raw and self.raw[key] is not None else self.decls[key].default

    def str(self, key: str) -> str:
        value = self._value(key)
        if isinstance(value, (dict, list)):
            self.bad(key, value, "a string", "VALUE")
            return ""
        return self._printable(key, str(value).strip())

    def _printable(self, key: str, text: str) -> str:
        """text, after recording a problem if it holds a control character other than tab, newline or CR: NUL or
        ESC pass the format checks of URLs and e-mail addresses, but no file the VM gets should hold them."""
        bad = next((c for c in text if CONTROL_RE.match(c)), None)
        if bad is not None and not self.failed(key):
            self.bad(key, text, f"text without control characters (found U+{ord(bad):04X})", "VALUE")
        return text

    def choice(self, key: str, allowed: tuple[str, ...] | list[str]) -> str:
        value = self.str(key)
        if value not in allowed:
            close = [a for a in allowed if value and a.startswith(value)] or \
                difflib.get_close_matches(value, list(allowed), n=1)
            self.bad(key, value, "one of " + ", ".join(allowed), close[0] if close else allowed[0])
        return value

    def problems_for(self, *keys: str) -> bool:
        return any(self.failed(k) for k in keys)

    def failed(self, key: str) -> bool:
        """Whether a problem was already recorded for key (so dependent checks stay quiet)."""
        return any(p.key == key for p in self.problems)

    def int(self, key: str, lo: int, hi: int) -> int:
        value = self._value(key)
        try:
            if isinstance(value, bool):
                raise ValueError
            number_f = float(value)
            if not number_f.is_integer():
                raise ValueError
            number = int(number_f)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
            self.bad(key, value, f"a whole number from {lo} to {hi}", str(lo))
            return lo
        if not lo <= number <= hi:
            self.bad(key, value, f"a whole number from {lo} to {hi}", str(lo))
        return number

    def bool(self, key: str) -> bool:
        value = self._value(key)
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        self.bad(key, value, "true or false", "true")
        return False

    def list(self, key: str) -> list[str]:
        value = self._value(key)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except (json.JSONDecodeError, RecursionError):  # RecursionError: brackets nested ~1,000 deep
                self.bad(key, value, "a list of strings", f"--path '{key}[0]' VALUE")
                return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(key, value, "a list of strings", f"--path '{key}[0]' VALUE")
            return []
        return [self._printable(key, v.strip()) for v in value]

    def secret(self, key: str) -> Secret:
        value = self._value(key)
        return Secret("" if value is None else str(value))




def is_rate(text: str) -> bool:
    """An nginx limit_req rate, such as 10r/s or 30r/m."""
    return bool(RATE_RE.fullmatch(text))


# Xinference's custom model specs are a few levels deep; a deeper document would only exhaust the stack of
# whatever reads it next (json.dumps, Pulumi's serializer).
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (0 for a scalar), without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
