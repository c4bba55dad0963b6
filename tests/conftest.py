"""Shared fixtures, and each test's tier from its folder: tests/unit, tests/integration or tests/e2e.

The folder is the tier's one definition; the marker of the same name (declared in pyproject.toml) lets
`-m "not e2e"` and the like select by it. Shared constants live in tests/support/project.py."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from support.project import ROOT

TIERS = ("unit", "integration", "e2e")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.resolve().relative_to(TESTS).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in one of tests/{{{','.join(TIERS)}}}/")
        other = [m.name for m in item.iter_markers() if m.name in TIERS and m.name != tier]
        if other:
            raise pytest.UsageError(f"{item.nodeid} is marked {other[0]} but sits in tests/{tier}/: move it")
        item.add_marker(tier)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Under CI (CI=true, as .ci/run runs), a skipped test fails: every skip here is for want of a tool or an
    engine that scripts/setup.sh installs, so a skip in CI is a missing install step that a machine which happens
    to have the tool would hide."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where scripts/setup.sh installs every tool the tests need: {reason}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Hypothesis's plugin imports all of hypothesis (about 0.9 s) in its terminal summary even when no test used
    # it; that summary runs after this hook. Not imported by now means nothing for it to report.
    if "hypothesis" not in sys.modules:
        plugin = session.config.pluginmanager.get_plugin("hypothesispytest")
        if plugin is not None:
            session.config.pluginmanager.unregister(plugin)


@pytest.fixture
def root() -> Path:
    return ROOT
