"""A workshop project and its CLI run, for the handout tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmdeploy.cli import main
from support.workshop_stack import workshop_project


ATTENDEES = ("alice", "bob", "carol")  # the roster's ids: handouts go only to attendees the roster lists


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return workshop_project(tmp_path, [{"id": who, "name": who.title(), "email": f"{who}@example.org"}
                                       for who in ATTENDEES])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
