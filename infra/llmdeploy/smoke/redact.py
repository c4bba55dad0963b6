"""Keep secrets (API keys, passwords, their Basic-auth and URL-encoded forms) out of everything smoke prints
or writes: check lines, the summary, --json and --junit. The checks never put a credential into their
evidence on purpose; this is the safety net for what a server echoes back or an exception message holds."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import UsageError

MASK = "***"
# The shortest secret the Redactor takes, the same floor as basic-auth passwords (config.py). A shorter one occurs
# by chance in ordinary text ('a' in "openai", '1' in 127.0.0.1), and masking it there shows the secret itself:
# "open***i" reads as "the key is a". Generated keys are far longer (secret_delivery.generate_api_key).
MIN_SECRET_CHARS = 12


class Redactor:
    """Replaces every known secret in strings, and in the strings inside dicts and lists."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        if self._secrets and len(self._secrets[-1]) < MIN_SECRET_CHARS:
            raise UsageError(f"a credential of {len(self._secrets[-1])} character(s) is too short to keep out of what "
                             f"llmdeploy prints: masking it would show it wherever those characters occur; use one "
                             f"of at least {MIN_SECRET_CHARS} characters")

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        return value

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value
