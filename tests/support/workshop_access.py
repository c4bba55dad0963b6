"""A workshop project for the rotate and revoke tests."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.cli import main
from support.fake_pulumi import FakePulumi, fake_pulumi


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePulumi]:
    with fake_pulumi(tmp_path, monkeypatch) as fake:
        yield fake
