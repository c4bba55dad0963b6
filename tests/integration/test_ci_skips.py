"""Under CI a skipped test fails (tests/conftest.py): every skip in this suite is for want of a tool or an engine
that scripts/setup.sh installs, so in CI it is a missing install step, which a machine that happens to have the
tool would hide. Outside CI (a developer without the engines) it stays a skip that says what to install."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.project import ROOT

SKIPPING = 'import pytest\n\n\ndef test_needs_a_tool() -> None:\n    pytest.skip("needs frobnicator (scripts/setup.sh)")\n'


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    tier = ROOT / "tests" / "integration" / f"test_zz_ci_skip_{os.getpid()}.py"
    tier.write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tier)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        tier.unlink()


def test_a_skip_fails_under_ci_naming_what_to_install(tmp_path: Path) -> None:
    result = run(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "skipped under CI" in result.stdout and "needs frobnicator (scripts/setup.sh)" in result.stdout


def test_outside_ci_a_skip_stays_a_skip(tmp_path: Path) -> None:
    result = run(tmp_path, None)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
