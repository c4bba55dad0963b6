"""A workshop project and its CLI run, for the handout tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmdeploy.cli import main
from support.workshop_stack import people, workshop_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return workshop_project(tmp_path, people(3))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
