"""Running `llmdeploy workshop plan` and reading its check lines, for the workshop plan tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmdeploy.cli import main
from support.workshop_stack import STACK

AD1, AD2, AD3 = "Uocm:EU-FRANKFURT-1-AD-1", "Uocm:EU-FRANKFURT-1-AD-2", "Uocm:EU-FRANKFURT-1-AD-3"


def plan(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["workshop", "plan", "--stack", STACK, "--project-dir", str(root), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def line(out: str, name: str) -> str:
    found = [ln for ln in out.splitlines() if ln[6:].startswith(name)]
    assert found, f"no check line {name!r} in:\n{out}"
    return found[0]
