"""The result every check returns (smoke, `validate`, `workshop plan`): what was checked, pass/fail (or warn),
how long, and the evidence."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

PASS, FAIL, WARN = "pass", "fail", "warn"


@dataclass
class CheckResult:
    name: str
    status: str = PASS  # pass | fail | warn (a warning does not fail the run)
    summary: str = ""
    seconds: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)  # request/response, command/exit code/output...
    metrics: dict[str, float] = field(default_factory=dict)  # ttft_s, tokens_per_s, days_left...

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def fail(self, summary: str, **evidence: Any) -> "CheckResult":
        self.status, self.summary = FAIL, summary
        self.evidence.update(evidence)
        return self

    def warn(self, summary: str, **evidence: Any) -> "CheckResult":
        if self.status == PASS:
            self.status, self.summary = WARN, summary
        self.evidence.update(evidence)
        return self

    @property
    def detail(self) -> str:
        """Everything there is to read: a tool's whole output when the check kept one, else the summary."""
        return str(self.evidence.get("output", self.summary))

    def line(self, width: int = 36, timed: bool = True) -> str:
        """One report line: status, the name padded to `width`, the seconds (unless untimed), the summary."""
        seconds = f" {self.seconds:6.2f}s " if timed else ""
        return f"{self.status.upper():4}  {self.name:<{width}}{seconds} {self.summary}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def timed(name: str) -> Iterator[CheckResult]:
    """with timed("auth: no key refused") as r: ... ; r.fail(...) on failure. An exception inside is a failure
    with its type and message as evidence (a check never raises)."""
    result = CheckResult(name)
    start = time.monotonic()
    try:
        yield result
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash the run
        result.fail(f"{type(exc).__name__}: {exc}", exception=repr(exc))
    finally:
        result.seconds = round(time.monotonic() - start, 3)
