"""A throwaway project folder for CLI tests: this project's Pulumi.yaml and no LLMDEPLOY_* variables."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def empty_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/project holding Pulumi.yaml only; stack files are the test's to write."""
    for name in list(os.environ):
        if name.startswith("LLMDEPLOY_"):
            monkeypatch.delenv(name)
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    return root
