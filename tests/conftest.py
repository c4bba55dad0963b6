"""Shared fixtures: the repository root, the example stacks, and a minimal valid raw config."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm test@llmdeploy"


def minimal_raw(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {"compartmentId": "ocid1.compartment.oc1..aaaatest", "sshPublicKeys": [SSH_KEY]}
    raw.update(overrides)
    return raw


@pytest.fixture
def root() -> Path:
    return ROOT
