"""Run every check for one endpoint, or for many at once with bounded concurrency.

One endpoint: the HTTP checks (http_checks.py) for the openai, ollama and xinference kinds; OCI Data
Science (`oci-ds`) is delegated to `llmdeploy.smoke.oci_ds`, and `--ssh` adds the checks of
`llmdeploy.smoke.ssh_checks`. A delegate that raises or returns something else than results becomes one
clear FAIL, never a crash; the OCI SDK, the one optional dependency, is imported by oci_ds only when it signs.

Many endpoints: a thread pool runs up to `concurrency` endpoints side by side (the checks of one endpoint
run in order), so the wall time stays close to the slowest endpoint's, not the sum of all.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..result import FAIL, PASS, WARN, CheckResult
from . import oci_ds, ssh_checks
from .chat_checks import run_chat_checks
from .http_checks import Emit, run_http_checks
from .targets import DEFAULT_CONCURRENCY, Target


@dataclass
class TargetReport:
    """The results of one endpoint."""

    target: Target
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def first_failure(self) -> CheckResult | None:
        return next((r for r in self.results if r.status == FAIL), None)

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {"name": t.name, "url": t.url, "kind": t.kind, "model": t.model, "passed": self.passed,
                "seconds": round(self.seconds, 3),
                "counts": {s: self.count(s) for s in (PASS, WARN, FAIL)},
                "results": [r.to_dict() for r in self.results]}


def delegated(what: str, checks: Callable[..., Iterable[CheckResult]], **kwargs: Any) -> list[CheckResult]:
    """checks(**kwargs), the results of a delegate; an exception or a wrong return value is one FAIL saying why."""
    start = time.monotonic()

    def failed(summary: str, **evidence: Any) -> list[CheckResult]:
        return [CheckResult(what, FAIL, summary, round(time.monotonic() - start, 3), evidence)]

    try:
        results = list(checks(**kwargs))
    except Exception as exc:
        return failed(f"{checks.__name__} raised {type(exc).__name__}: {exc}", exception=repr(exc))
    if not all(isinstance(r, CheckResult) for r in results):
        return failed(f"{checks.__name__} returned something other than a list of CheckResult")
    return results


def ssh_results(target: Target) -> list[CheckResult]:
    ssh = target.ssh
    assert ssh is not None
    return delegated("ssh checks", ssh_checks.run_ssh_checks, host=ssh.host, user=ssh.user, key_file=ssh.key_file,
                     port=ssh.port, host_key=ssh.host_key, timeout=target.timeout)


def oci_ds_results(target: Target) -> list[CheckResult]:
    oci = dict(target.oci)
    return delegated("oci-ds checks", oci_ds.run_oci_ds_checks, url=target.url, model=target.model, stream=True,
                     config_file=oci.get("config_file"), profile=oci.get("profile"),
                     instance_principal=bool(oci.get("instance_principal")), ca_bundle=target.ca_bundle,
                     timeout=target.timeout)


def run_target(target: Target, emit: Emit | None = None) -> TargetReport:
    """Every check for one endpoint. Never raises: an unexpected error is a FAIL result."""
    report = TargetReport(target)
    start = time.monotonic()

    def add_all(results: list[CheckResult], already_emitted: bool = False) -> None:
        report.results.extend(results)
        if emit and not already_emitted:
            for result in results:
                emit(result)

    try:
        if target.kind == "oci-ds":
            add_all(oci_ds_results(target))
        else:
            add_all(run_http_checks(target, emit), already_emitted=True)
        if target.chat_url:
            add_all(run_chat_checks(target))
        if target.ssh:
            add_all(ssh_results(target))
    except Exception as exc:
        add_all([CheckResult("smoke", FAIL, f"internal error: {type(exc).__name__}: {exc}",
                             evidence={"exception": repr(exc)})])
    report.seconds = time.monotonic() - start
    return report


def run_targets(targets: list[Target], concurrency: int = DEFAULT_CONCURRENCY,
                on_done: Callable[[TargetReport], None] | None = None,
                check: Callable[[Target], TargetReport] = run_target) -> list[TargetReport]:
    """Run up to `concurrency` endpoints at a time; reports come back in the order of `targets`."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")

    def one(target: Target) -> TargetReport:
        report = check(target)
        if on_done:
            on_done(report)
        return report

    with ThreadPoolExecutor(max_workers=min(concurrency, len(targets)) or 1, thread_name_prefix="smoke") as pool:
        return list(pool.map(one, targets))
