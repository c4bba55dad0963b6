"""This project as the tests see it: its root, its example stacks, a minimal valid raw config, and a throwaway
project folder for CLI tests (this project's Pulumi.yaml and no LLMDEPLOY_* variables)."""
from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from llmdeploy.config import StackConfig
    from llmdeploy.render import Rendered

ROOT = Path(__file__).resolve().parents[2]
_ALL_STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
# Workshop examples hold an endpoint per attendee, not one: tests/unit/test_workshop_example.py covers them.
WORKSHOP_STACKS = [s for s in _ALL_STACKS if "llmdeploy:workshopRoster" in (ROOT / f"Pulumi.{s}.yaml").read_text()]
EXAMPLE_STACKS = [s for s in _ALL_STACKS if s not in WORKSHOP_STACKS]


@cache
def example_stack(stack: str) -> tuple[StackConfig, Rendered]:
    """An example stack's config, as `pulumi up` reads Pulumi.<stack>.yaml, and its render, made once a session:
    the snapshot, loopback, step and GPU tests each read every one. The same config renders the same bytes
    (test_render.py's test_rendering_is_deterministic); callers only read what they get."""
    from llmdeploy.render import render
    from llmdeploy.stack_yaml import load_stack_config
    cfg = load_stack_config(ROOT, stack)
    return cfg, render(cfg)


SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm test@llmdeploy"


def minimal_raw(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {"compartmentId": "ocid1.compartment.oc1..aaaatest", "sshPublicKeys": [SSH_KEY]}
    raw.update(overrides)
    return raw


def empty_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/project holding Pulumi.yaml only; stack files are the test's to write."""
    for name in list(os.environ):
        if name.startswith("LLMDEPLOY_"):
            monkeypatch.delenv(name)
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    return root
