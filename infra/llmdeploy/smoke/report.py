"""Present smoke results: a progress bar while endpoints run, a summary table, and --json / --junit files.

Everything that leaves the process goes through a Redactor, so no API key or password is printed or
written, whatever a server echoed back. JUnit XML has one testsuite per endpoint and one testcase per check;
a failed check is a <failure> with the summary as its message and the evidence as its text, a warning is
a passing testcase whose <system-out> says WARN.
"""
from __future__ import annotations

import json
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

from ..result import FAIL, PASS, WARN, CheckResult
from .redact import Redactor
from .runner import TargetReport


def check_line(result: CheckResult, redactor: Redactor) -> str:
    return redactor.text(result.line())


class SmokeProgress:
    """N of M endpoints done, on stderr. On a terminal a bar redrawn in place; elsewhere (CI logs) one
    plain line per finished endpoint. Safe to call from worker threads."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None, redactor: Redactor | None = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.redactor = redactor or Redactor()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.tty:
            self._draw("")

    def advance(self, report: TargetReport) -> None:
        with self._lock:
            self.done += 1
            verdict = "ok" if report.passed else f"FAILED ({report.count(FAIL)} check(s))"
            what = self.redactor.text(f"{report.target.name}: {verdict} in {report.seconds:.1f}s")
            if self.tty:
                self._draw(what)
            else:
                print(f"smoke [{self.done}/{self.total}] {what}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)

    def _draw(self, last: str) -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"\rsmoke [{bar}] {self.done}/{self.total}  {last}"
        print(line[:120].ljust(120), end="", file=self.stream, flush=True)


def summary_table(reports: list[TargetReport], redactor: Redactor) -> str:
    """One row per endpoint: passes, warnings, failures, time, and the first failure."""
    width = max([len(r.target.name) for r in reports] + [6])
    rows = [f"{'target':<{width}}  {'kind':<10} {'pass':>4} {'warn':>4} {'fail':>4} {'time':>7}  result"]
    for report in reports:
        first = report.first_failure
        verdict = "PASS" if report.passed else f"FAIL  {first.name}: {first.summary}" if first else "FAIL"
        rows.append(f"{report.target.name:<{width}}  {report.target.kind:<10} {report.count(PASS):>4} "
                    f"{report.count(WARN):>4} {report.count(FAIL):>4} {report.seconds:>6.1f}s  {verdict[:140]}")
    return redactor.text("\n".join(rows))


def totals_line(reports: list[TargetReport]) -> str:
    counts = {s: sum(r.count(s) for r in reports) for s in (PASS, WARN, FAIL)}
    failed = sum(1 for r in reports if not r.passed)
    where = f" on {failed} of {len(reports)} endpoint(s)" if len(reports) > 1 and failed else ""
    return f"{counts[PASS]} passed, {counts[WARN]} warning(s), {counts[FAIL]} failed{where}"


def to_json(reports: list[TargetReport], redactor: Redactor) -> str:
    data = {"passed": all(r.passed for r in reports), "targets": [r.to_dict() for r in reports]}
    return json.dumps(redactor.data(data), indent=2, default=str)


def to_junit(reports: list[TargetReport], redactor: Redactor) -> str:
    suites = ET.Element("testsuites", name="llmdeploy smoke", tests=str(sum(len(r.results) for r in reports)),
                        failures=str(sum(r.count(FAIL) for r in reports)),
                        time=f"{sum(r.seconds for r in reports):.3f}")
    for report in reports:
        suite = ET.SubElement(suites, "testsuite", name=report.target.name, tests=str(len(report.results)),
                              failures=str(report.count(FAIL)), errors="0", skipped="0", time=f"{report.seconds:.3f}")
        props = ET.SubElement(suite, "properties")
        for key in ("url", "kind", "model"):
            ET.SubElement(props, "property", name=key, value=str(getattr(report.target, key) or ""))
        for result in report.results:
            case = ET.SubElement(suite, "testcase", classname=f"smoke.{report.target.name}", name=result.name,
                                 time=f"{result.seconds:.3f}")
            details = json.dumps({"evidence": result.evidence, "metrics": result.metrics}, indent=2, default=str)
            if result.status == FAIL:
                failure = ET.SubElement(case, "failure", message=result.summary, type="SmokeCheckFailed")
                failure.text = details
            else:
                out = ET.SubElement(case, "system-out")
                out.text = f"{result.status.upper()}: {result.summary}\n{details}"
    _redact_tree(suites, redactor)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _redact_tree(element: ET.Element, redactor: Redactor) -> None:
    for node in element.iter():
        node.attrib.update({k: redactor.text(v) for k, v in node.attrib.items()})
        if node.text:
            node.text = redactor.text(node.text)


def write_text(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")
